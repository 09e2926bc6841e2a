"""LOLViT (Li et al., 2025): Fast Window Attention inside a global-local fusion block, reconstructed.

No public code exists, so every uncertain choice of the reconstruction is a knob:

* FWA (a token mixer): queries at full resolution; keys and values from a small map made by aggregating
  windows of the input. `kv_rule` picks the window: `grid` keeps a kv_size x kv_size grid of K/V tokens
  whatever the input size (window ceil(H/kv_size)), `sqrt` uses ceil(sqrt(H)) windows (about sqrt(N) K/V
  tokens), `ratio` fixed kv_size x kv_size windows (the hand-set reduction the paper argues against).
  `aggregator`: avg or max pooling, or `dwconv` (a learnable depthwise 3x3 before average pooling; a
  kernel = stride = window conv would need weights per input size). `normaliser`: softmax, `relu`
  (ReLU(S) / N_kv) or `relu_rowsum` (ReLU(S) / row sum).
* The block, after MobileViT's local -> global -> fusion pattern: a local branch (depthwise 3x3 or a
  GhostModule), 1x1 to the transformer dim D = dim_ratio x width, `depth` pre-norm [FWA + FFN] layers and a
  LayerNorm, 1x1 back to the width, then `fusion`: concat with the input and a 3x3 (MobileViT) or 1x1 conv,
  or `add` (input + global branch).

A stage is an optional strided transition (depthwise 3x3 + 1x1, for a stride or width change) and one such
block whose transformer depth is the stage depth.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks.ghost import GhostModule
from supernet.blocks.transformer import FFN_KINDS, TransformerBlock, map_to_tokens, tokens_to_map, with_global_rows
from supernet.knobs import Knob, is_int, is_number, one_of
from supernet.ops import Ops, make_divisible, set_out
from supernet.registry import register_family

KNOBS = {
    "heads": Knob(lambda v: is_int(v) and v >= 1, "a number of attention heads >= 1 (must divide the dim)"),
    "mlp_ratio": Knob(lambda v: is_number(v) and v > 0, "a number > 0 (FFN hidden width / dim)", True),
    "kv_rule": Knob(one_of("grid", "sqrt", "ratio"), "grid, sqrt or ratio"),
    "kv_size": Knob(lambda v: is_int(v) and v >= 1, "an integer >= 1 (K/V grid side, or window side)", default=4),
    "aggregator": Knob(one_of("avg", "max", "dwconv"), "avg, max or dwconv", weights_order=("avg", "max", "dwconv")),
    "normaliser": Knob(one_of("softmax", "relu", "relu_rowsum"), "softmax, relu or relu_rowsum"),
    "dim_ratio": Knob(lambda v: is_number(v) and v > 0, "a number > 0 (transformer dim / width)", True, default=1),
    "local": Knob(one_of("dw", "ghost"), "dw or ghost (the local branch)", default="dw", separate_weights=True),
    "fusion": Knob(one_of("concat3", "concat1", "add"), "concat3, concat1 or add", default="concat3",
                   weights_order=("add", "concat1", "concat3")),
    "ffn": Knob(one_of(*FFN_KINDS), " or ".join(FFN_KINDS), default="mlp", separate_weights=True),
}


def transformer_dim(width: int, dim_ratio: float) -> int:
    return make_divisible(width * dim_ratio, 8)


def check_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    dim = transformer_dim(width, knobs["dim_ratio"])
    if dim % knobs["heads"]:
        return f"knob heads: the transformer dim {dim} (width {width} x dim_ratio) is not divisible by {knobs['heads']}"
    if knobs["kv_rule"] == "ratio" and map_size and knobs["kv_size"] > map_size:
        return f"knob kv_size: window {knobs['kv_size']} is larger than the {map_size}x{map_size} map"
    return None


def kv_window(rule: str, kv_size: int, height: int, width: int) -> tuple[int, int]:
    """The aggregation window for an H x W map (a Python int: exported graphs are specialised to the size)."""
    if rule == "grid":
        return math.ceil(height / kv_size), math.ceil(width / kv_size)
    if rule == "sqrt":
        return math.ceil(math.sqrt(height)), math.ceil(math.sqrt(width))
    return min(kv_size, height), min(kv_size, width)


class FastWindowAttention(nn.Module):
    """Token mixer: full-resolution queries against window-aggregated keys and values (no global tokens)."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.q = ops.linear(width, width, bias=False)
        self.kv = ops.linear(width, 2 * width, bias=False, out_parts=2)
        self.proj = ops.linear(width, width)
        self.local_agg = ops.dwconv(width, 3) if knobs["aggregator"] == "dwconv" else None
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.kv_rule, self.kv_size = knobs["heads"], knobs["kv_rule"], knobs["kv_size"]
        self.aggregator, self.normaliser = knobs["aggregator"], knobs["normaliser"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.q, width)
        set_out(self.kv, 2 * width)
        set_out(self.proj, width)
        self.configure(knobs)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, h, w]: one token per window."""
        if self.aggregator == "dwconv":
            x = self.local_agg(x)
        window = kv_window(self.kv_rule, self.kv_size, x.shape[2], x.shape[3])
        if window == (1, 1):
            return x
        pool = F.max_pool2d if self.aggregator == "max" else F.avg_pool2d
        return pool(x, window, window, ceil_mode=True)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        image = x[:, n_global:]
        b, n, c = image.shape
        heads, d = self.heads, c // self.heads
        q = self.q(image).reshape(b, n, heads, d).transpose(1, 2)  # B h N d
        kv = self.kv(map_to_tokens(self.aggregate(tokens_to_map(image, hw))))
        k, v = kv.reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # each B h M d
        scores = (q * d ** -0.5) @ k.transpose(-2, -1)
        if self.normaliser == "softmax":
            attn = scores.softmax(dim=-1)
        elif self.normaliser == "relu":
            attn = F.relu(scores) / k.shape[2]
        else:
            attn = F.relu(scores)
            attn = attn / (attn.sum(dim=-1, keepdim=True) + 1e-6)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return with_global_rows(out, n_global)


class ConvBNAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, ops: Ops, stride: int = 1, groups: int = 1,
                 act: bool = True, in_parts: int = 1) -> None:
        super().__init__()
        self.conv = ops.conv(c_in, c_out, kernel, stride, groups, in_parts=in_parts)
        self.bn = ops.bn(c_out)
        self.act = act

    def set_active(self, c_out: int, kernel: int | None = None) -> None:
        set_out(self.conv, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.silu(x) if self.act else x


class FusionBlock(nn.Module):
    """Local branch -> 1x1 to dim -> `layers` x [FWA + FFN] -> LN -> 1x1 back -> fusion with the input."""

    def __init__(self, width: int, layers: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        dim = transformer_dim(width, knobs["dim_ratio"])
        self.local_kind, self.fusion, self.layers = knobs["local"], knobs["fusion"], layers
        if self.local_kind == "ghost":
            self.local = GhostModule(width, width, True, ops)
        else:
            self.local = ConvBNAct(width, width, 3, ops, groups=width)
        self.to_dim = ops.conv(width, dim)
        block_knobs = {**knobs, "cpe": False}
        self.transformer = nn.ModuleList(TransformerBlock(dim, block_knobs, ops, FastWindowAttention, 1e-5)
                                         for _ in range(layers))
        self.norm = ops.ln(dim)
        self.from_dim = ConvBNAct(dim, width, 1, ops)
        if self.fusion != "add":  # concat1's 1x1 kernel is the centre of concat3's in the supernet
            self.fuse = ConvBNAct(2 * width, width, 3 if self.fusion == "concat3" else 1, ops, in_parts=2)

    def set_active(self, width: int, layers: int, knobs: Mapping[str, Any]) -> None:
        dim = transformer_dim(width, knobs["dim_ratio"])
        self.layers, self.fusion = layers, knobs["fusion"]
        self.local.set_active(width)
        set_out(self.to_dim, dim)
        for block in self.transformer[:layers]:
            block.set_active(dim, {**knobs, "cpe": False})
        self.from_dim.set_active(width)
        if self.fusion != "add":
            self.fuse.set_active(width, 3 if self.fusion == "concat3" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.to_dim(self.local(x))
        hw = (g.shape[2], g.shape[3])
        tokens = map_to_tokens(g)
        for block in self.transformer[: self.layers]:
            tokens = block(tokens, hw, 0)
        g = self.from_dim(tokens_to_map(self.norm(tokens), hw))
        if self.fusion == "add":
            return x + g
        return self.fuse(torch.cat([x, g], dim=1))


@register_family("fwa", KNOBS, "LOLViT global-local block with Fast Window Attention", check_stage)
class FWAStage(nn.Module):
    """A depthwise-separable transition when the stride or width changes, then one fusion block."""

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.down = None
        if stride > 1 or c_in != width or elastic:
            self.down = nn.Sequential(ConvBNAct(c_in, c_in, 3, ops, stride, groups=c_in, act=False),
                                      ConvBNAct(c_in, width, 1, ops))
        self.block = FusionBlock(width, depth, knobs, ops)
        self.stride, self.use_down = stride, self.down is not None

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        self.use_down = self.down is not None and (self.stride > 1 or c_in != width)
        if self.down is not None:
            self.down[1].set_active(width)
        self.block.set_active(width, depth, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_down:
            x = self.down(x)
        return self.block(x)
