"""LOLViT's Fast Window Attention (Li et al., 2025), reconstructed: no public code exists.

Queries stay at full resolution; keys and values come from a small map made by aggregating windows of the
input. The uncertain choices of the reconstruction are knobs: how the window is chosen (`kv_rule`: `grid`
keeps a kv_size x kv_size grid of K/V tokens whatever the input size, `ratio` uses fixed kv_size x kv_size
windows), the aggregator (avg or max pooling) and the score normaliser (softmax, or ReLU divided by the number
of K/V tokens). A block is global-local: depthwise-conv local mixing, FWA, then a 1x1-conv MLP, each residual.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks import Knob, is_int, is_number
from supernet.ops import Ops, make_divisible, set_out

KNOBS = {
    "heads": Knob(lambda v: is_int(v) and v >= 1, "a number of attention heads >= 1 (must divide the width)"),
    "mlp_ratio": Knob(lambda v: is_number(v) and v > 0, "a number > 0 (MLP hidden width / width)", True),
    "kv_rule": Knob(lambda v: v in ("grid", "ratio"), "grid or ratio"),
    "kv_size": Knob(lambda v: is_int(v) and v >= 1, "an integer >= 1 (K/V grid side, or window side)"),
    "aggregator": Knob(lambda v: v in ("avg", "max"), "avg or max"),
    "normaliser": Knob(lambda v: v in ("softmax", "relu"), "softmax or relu"),
}


def check_stage(width: int, knobs: Mapping[str, Any]) -> str | None:
    """Why this width and knobs cannot make an FWA stage, or None."""
    if width % knobs["heads"]:
        return f"width {width} is not divisible by heads {knobs['heads']}"
    return None


def mlp_width(width: int, ratio: float) -> int:
    return make_divisible(width * ratio, 4)


class FastWindowAttention(nn.Module):
    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.q = ops.conv(width, width)
        self.k = ops.conv(width, width)
        self.v = ops.conv(width, width)
        self.proj = ops.conv(width, width, bias=True)
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.kv_rule, self.kv_size = knobs["heads"], knobs["kv_rule"], knobs["kv_size"]
        self.aggregator, self.normaliser = knobs["aggregator"], knobs["normaliser"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        for conv in (self.q, self.k, self.v, self.proj):
            set_out(conv, width)
        self.configure(knobs)

    def window(self, height: int, width: int) -> tuple[int, int]:
        if self.kv_rule == "grid":
            return math.ceil(height / self.kv_size), math.ceil(width / self.kv_size)
        return min(self.kv_size, height), min(self.kv_size, width)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        window = self.window(x.shape[2], x.shape[3])
        if window == (1, 1):
            return x
        pool = F.avg_pool2d if self.aggregator == "avg" else F.max_pool2d
        return pool(x, window, window, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(x).reshape(b, heads, d, h * w).transpose(-1, -2)  # B heads N d
        kv_map = self.aggregate(x)
        k = self.k(kv_map).reshape(b, heads, d, -1)  # B heads d M
        v = self.v(kv_map).reshape(b, heads, d, -1).transpose(-1, -2)  # B heads M d
        scores = (q @ k) * d ** -0.5
        if self.normaliser == "softmax":
            attn = scores.softmax(dim=-1)
        else:
            attn = F.relu(scores) / k.shape[-1]
        out = (attn @ v).transpose(-1, -2).reshape(b, c, h, w)
        return self.proj(out)


class FWABlock(nn.Module):
    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        hidden = mlp_width(width, knobs["mlp_ratio"])
        self.local = ops.dwconv(width, 3)
        self.local_bn = ops.bn(width)
        self.attn_norm = ops.bn(width)
        self.attn = FastWindowAttention(width, knobs, ops)
        self.mlp_norm = ops.bn(width)
        self.fc1 = ops.conv(width, hidden, bias=True)
        self.fc2 = ops.conv(hidden, width, bias=True)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        self.attn.set_active(width, knobs)
        set_out(self.fc1, mlp_width(width, knobs["mlp_ratio"]))
        set_out(self.fc2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.local_bn(self.local(x))
        x = x + self.attn(self.attn_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class FWAStage(nn.Module):
    """A strided depthwise-separable transition to the stage width, then `depth` FWA blocks."""

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.depth = depth
        self.down = ops.dwconv(c_in, 3, stride)
        self.down_bn = ops.bn(c_in)
        self.expand = ops.conv(c_in, width)
        self.expand_bn = ops.bn(width)
        self.blocks = nn.ModuleList(FWABlock(width, knobs, ops) for _ in range(depth))

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        self.depth = depth
        set_out(self.expand, width)
        for block in self.blocks[:depth]:
            block.set_active(width, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.expand_bn(self.expand(self.down_bn(self.down(x)))))
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x
