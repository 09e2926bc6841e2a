"""Pre-norm transformer stages: the frame the attention families (LightViT, LVT, SAEViT, MHSA) share.

A stage is a transition (stride or width change) on the NCHW map, then `depth` blocks on tokens:

    [x = x + CPE(x)]                    depthwise 3x3 position conv, on image tokens (SAEViT, EdgeViT)
    x = x + mixer(LN(x), hw, n_global)
    x = x + ffn(LN(x), hw, n_global)

Tokens are [B, n_global + H*W, C]: LightViT's global tokens first, then the image tokens in row-major order.
A family is a `TransformerStage` subclass that names its token mixer, its default FFN and transition, and its
LayerNorm eps. Mixers and FFNs take `(width, knobs, ops)` (FFNs also their hidden width) and
`forward(x, hw, n_global)`; a mixer that has no use for global tokens returns zeros for them. FFNs and
transitions are looked up in `supernet.registry` by the `ffn` and `downsample` knobs: each registers itself in the
family file that defines it, so this frame imports no family.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.layers import drop_path
from torch import nn

from supernet.knobs import Knob, is_bool, is_int, is_number, one_of
from supernet.ops import Ops, set_out
from supernet.registry import FFNS, TRANSITIONS, register_drop_path_block, register_ffn

# The values the ffn and downsample knobs accept, in the order their messages list them (the classes register
# later, as their family files are imported, so the knob checks cannot read the registries).
FFN_KINDS = ("mlp", "dwconv", "biattn", "ciffn")
TRANSITION_KINDS = ("conv", "patch", "merge")


def transformer_knobs(ffn: str, downsample: str, cpe: bool = False) -> dict[str, Knob]:
    """The knobs every transformer family has, with that family's paper defaults."""
    return {
        "heads": Knob(lambda v: is_int(v) and v >= 1, "a number of attention heads >= 1 (must divide the width)"),
        "mlp_ratio": Knob(lambda v: is_number(v) and v > 0, "a number > 0 (FFN hidden width / width)", True),
        "ffn": Knob(one_of(*FFN_KINDS), " or ".join(FFN_KINDS), default=ffn, separate_weights=True),
        "downsample": Knob(one_of(*TRANSITION_KINDS), " or ".join(TRANSITION_KINDS) + " (the stage's transition)",
                           default=downsample, separate_weights=True),
        "cpe": Knob(is_bool, "true or false (depthwise 3x3 position conv before each block)", default=cpe,
                    weights_order=(False, True)),
    }


def check_heads(width: int, knobs: Mapping[str, Any]) -> str | None:
    if width % knobs["heads"]:
        return f"knob heads: width {width} is not divisible by heads {knobs['heads']}"
    return None


def ffn_hidden(width: int, ratio: float) -> int:
    return int(round(width * ratio))


def tokens_to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Image tokens [B, H*W, C] -> map [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Map [B, C, H, W] -> image tokens [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads*d]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def split_qkv(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """A fused projection [B, T, 3C] -> q, k, v stacked as [3, B, heads, T, C / heads]."""
    b, t, c3 = qkv.shape
    return qkv.reshape(b, t, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v, with explicit matmuls (so fvcore counts them)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v


def with_global_rows(out: torch.Tensor, n_global: int) -> torch.Tensor:
    """Zero rows for the global tokens in front of the image tokens' output (a mixer that ignores them)."""
    if not n_global:
        return out
    return torch.cat([out.new_zeros(out.shape[0], n_global, out.shape[2]), out], dim=1)


def init_linears(module: nn.Module) -> None:
    """The ViT initialisation LightViT and LVT release: truncated-normal(0.02) linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_ffn("mlp")
class Mlp(nn.Module):
    """Linear -> GELU -> Linear (ViT's MLP; LVT's first stage)."""

    def __init__(self, width: int, hidden: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.fc1 = ops.linear(width, hidden)
        self.fc2 = ops.linear(hidden, width)

    def set_active(self, width: int, hidden: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.fc1, hidden)
        set_out(self.fc2, width)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MHSA(nn.Module):
    """Plain multi-head self-attention over all tokens (global ones included), the baseline mixer."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.qkv = ops.linear(width, 3 * width, out_parts=3)
        self.proj = ops.linear(width, width)
        self.heads = knobs["heads"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.qkv, 3 * width)
        set_out(self.proj, width)
        self.heads = knobs["heads"]

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        return self.proj(merge_heads(attend(*split_qkv(self.qkv(x), self.heads))))


@register_drop_path_block
class TransformerBlock(nn.Module):
    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops, mixer: type[nn.Module],
                 eps: float) -> None:
        super().__init__()
        self.cpe = ops.dwconv(width, 3, bias=True) if knobs["cpe"] else None
        self.use_cpe = knobs["cpe"]
        self.drop_path = 0.0  # stochastic depth of both residual branches while training (set by set_drop_path)
        self.norm1 = ops.ln(width, eps)
        self.mixer = mixer(width, knobs, ops)
        self.norm2 = ops.ln(width, eps)
        self.ffn = FFNS[knobs["ffn"]](width, ffn_hidden(width, knobs["mlp_ratio"]), knobs, ops)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        self.use_cpe = knobs["cpe"]
        self.mixer.set_active(width, knobs)
        self.ffn.set_active(width, ffn_hidden(width, knobs["mlp_ratio"]), knobs)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        if self.use_cpe:
            image = x[:, n_global:]
            image = image + map_to_tokens(self.cpe(tokens_to_map(image, hw)))
            x = torch.cat([x[:, :n_global], image], dim=1) if n_global else image
        x = x + drop_path(self.mixer(self.norm1(x), hw, n_global), self.drop_path, self.training)
        return x + drop_path(self.ffn(self.norm2(x), hw, n_global), self.drop_path, self.training)


class TransformerStage(nn.Module):
    """Transition (when the stride or width changes), then `depth` pre-norm transformer blocks."""

    MIXER: type[nn.Module] = MHSA
    NORM_EPS = 1e-5

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.depth = depth
        self.down = None
        if stride > 1 or c_in != width or elastic:  # the supernet's active widths may differ even if the largest don't
            self.down = TRANSITIONS[knobs["downsample"]](c_in, width, stride, ops)
        self.stride, self.use_down = stride, self.down is not None
        self.blocks = nn.ModuleList(TransformerBlock(width, knobs, ops, self.MIXER, self.NORM_EPS)
                                    for _ in range(depth))

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        self.depth = depth
        self.use_down = self.down is not None and (self.stride > 1 or c_in != width)
        if self.down is not None:
            self.down.set_active(width)
        for block in self.blocks[:depth]:
            block.set_active(width, knobs)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's work on the NCHW map before the tokens: its transition, when active."""
        return self.down(x) if self.use_down else x

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.enter(x)
        hw = (x.shape[2], x.shape[3])
        seq = map_to_tokens(x)
        n_global = 0 if tokens is None else tokens.shape[1]
        if n_global:
            seq = torch.cat([tokens, seq], dim=1)
        for block in self.blocks[: self.depth]:
            seq = block(seq, hw, n_global)
        return tokens_to_map(seq[:, n_global:], hw), (seq[:, :n_global] if n_global else None)

