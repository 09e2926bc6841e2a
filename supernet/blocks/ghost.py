"""GhostNet bottlenecks (Han et al., 2020), the CNN part of LOLViT, with elastic width, expansion, kernel and SE.

GhostModule: a 1x1 "primary" conv makes ceil(out/2) channels, a cheap depthwise 3x3 makes as many again from
them, and the first `out` of the concatenation are kept. A stage is `depth` bottlenecks; the first one changes
width and stride and always has a projection shortcut (so the shortcut never depends on the active widths).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks import Knob, is_int, is_number
from supernet.ops import Ops, ceil_div, make_divisible, set_out

KNOBS = {
    "expansion": Knob(lambda v: is_number(v) and v >= 1, "a number >= 1 (hidden width / input width)", True),
    "kernel": Knob(lambda v: is_int(v) and v in (3, 5, 7), "a depthwise kernel size: 3, 5 or 7", True),
    "se": Knob(lambda v: is_number(v) and 0 <= v < 1, "a squeeze-excite ratio in [0, 1); 0 turns SE off", True),
}


def hidden_width(c_in: int, expansion: float) -> int:
    return make_divisible(c_in * expansion, 4)


def se_width(c_mid: int, ratio: float) -> int:
    return make_divisible(c_mid * ratio, 4)


class GhostModule(nn.Module):
    def __init__(self, c_in: int, c_out: int, relu: bool, ops: Ops) -> None:
        super().__init__()
        primary = ceil_div(c_out, 2)
        self.out_channels = c_out
        self.primary = ops.conv(c_in, primary)
        self.primary_bn = ops.bn(primary)
        self.cheap = ops.dwconv(primary, 3)
        self.cheap_bn = ops.bn(primary)
        self.relu = relu

    def set_active(self, c_out: int) -> None:
        self.out_channels = c_out
        set_out(self.primary, ceil_div(c_out, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_bn(self.primary(x))
        x1 = F.relu(x1) if self.relu else x1
        x2 = self.cheap_bn(self.cheap(x1))
        x2 = F.relu(x2) if self.relu else x2
        return torch.cat([x1, x2], dim=1)[:, : self.out_channels]


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, ops: Ops) -> None:
        super().__init__()
        self.reduce = ops.conv(channels, reduced, bias=True)
        self.expand = ops.conv(reduced, channels, bias=True)

    def set_active(self, channels: int, reduced: int) -> None:
        set_out(self.reduce, reduced)
        set_out(self.expand, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(gate)


class GhostBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, expansion: float, kernel: int, se: float, stride: int,
                 projection: bool, ops: Ops) -> None:
        super().__init__()
        c_mid = hidden_width(c_in, expansion)
        self.stride, self.use_se = stride, se > 0
        self.ghost1 = GhostModule(c_in, c_mid, True, ops)
        if stride > 1:
            self.dw = ops.dwconv(c_mid, kernel, stride)
            self.dw_bn = ops.bn(c_mid)
        self.se = SqueezeExcite(c_mid, se_width(c_mid, se), ops) if self.use_se else None
        self.ghost2 = GhostModule(c_mid, c_out, False, ops)
        if projection:
            self.shortcut = nn.Sequential(ops.dwconv(c_in, kernel, stride), ops.bn(c_in),
                                          ops.conv(c_in, c_out), ops.bn(c_out))
        else:
            self.shortcut = nn.Identity()

    def set_active(self, c_in: int, c_out: int, expansion: float, kernel: int, se: float) -> None:
        c_mid = hidden_width(c_in, expansion)
        self.ghost1.set_active(c_mid)
        if self.stride > 1:
            set_out(self.dw, c_mid, kernel)
        self.use_se = se > 0
        if self.use_se:
            self.se.set_active(c_mid, se_width(c_mid, se))
        self.ghost2.set_active(c_out)
        if isinstance(self.shortcut, nn.Sequential):
            set_out(self.shortcut[0], c_in, kernel)
            set_out(self.shortcut[2], c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.stride > 1:
            y = self.dw_bn(self.dw(y))
        if self.use_se:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)


class GhostStage(nn.Module):
    """`depth` Ghost bottlenecks; the first takes the stage's stride and width change."""

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.depth = depth
        self.blocks = nn.ModuleList(
            GhostBottleneck(c_in if i == 0 else width, width, knobs["expansion"], knobs["kernel"], knobs["se"],
                            stride if i == 0 else 1, i == 0, ops)
            for i in range(depth))

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        self.depth = depth
        for i, block in enumerate(self.blocks[:depth]):
            block.set_active(c_in if i == 0 else width, width, knobs["expansion"], knobs["kernel"], knobs["se"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x
