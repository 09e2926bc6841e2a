"""GhostNet bottlenecks (Han et al., 2020), the CNN part of LOLViT, with elastic width, expansion, kernel and SE.

Matches timm's `ghostnet` (and huawei-noah's release) layer for layer. GhostModule (ratio s): a 1x1 "primary"
conv makes ceil(out/s) channels, a cheap depthwise 3x3 makes s-1 channels from each of them, and the first `out`
of the concatenation are kept. The concatenation groups each primary channel with its cheap ones (GhostNet puts
all primary channels first: the same network up to a channel permutation), so that a narrower module's channels
are the first ones of a wider module's, as weight sharing needs. A stage is `depth` bottlenecks; the first one
takes the stride and width change and has a projection shortcut when either changes (identity otherwise).
Expansion, kernel and SE may be given per block (a list), which GhostNet-1.0x needs; the supernet always holds the
projection and skips it when the active widths make the shortcut an identity.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.layers import drop_path
from torch import nn

from supernet.knobs import Knob, block_knobs, is_int, is_number
from supernet.ops import Ops, ceil_div, make_divisible, set_out
from supernet.registry import register_drop_path_block, register_family

KNOBS = {
    "expansion": Knob(lambda v: is_number(v) and v >= 1, "a number >= 1 (hidden width / input width)", True,
                      per_block=True),
    "kernel": Knob(lambda v: is_int(v) and v in (3, 5, 7), "a depthwise kernel size: 3, 5 or 7", True,
                   per_block=True),
    "se": Knob(lambda v: is_number(v) and 0 <= v < 1, "a squeeze-excite ratio in [0, 1); 0 turns SE off", True,
               per_block=True),
    "ratio": Knob(lambda v: is_int(v) and 2 <= v <= 4, "a ghost ratio: 2, 3 or 4 (output / primary channels)",
                  default=2, separate_weights=True),
}


def hidden_width(c_in: int, expansion: float) -> int:
    return make_divisible(c_in * expansion, 4)


def se_width(c_mid: int, ratio: float) -> int:
    return make_divisible(c_mid * ratio, 4)


class GhostModule(nn.Module):
    def __init__(self, c_in: int, c_out: int, relu: bool, ops: Ops, ratio: int = 2) -> None:
        super().__init__()
        primary = ceil_div(c_out, ratio)
        self.out_channels, self.ratio = c_out, ratio
        self.primary = ops.conv(c_in, primary)
        self.primary_bn = ops.bn(primary)
        self.cheap = ops.conv(primary, primary * (ratio - 1), 3, groups=primary)
        self.cheap_bn = ops.bn(primary * (ratio - 1))
        self.relu = relu

    def set_active(self, c_out: int) -> None:
        self.out_channels = c_out
        set_out(self.primary, ceil_div(c_out, self.ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_bn(self.primary(x))
        x1 = F.relu(x1) if self.relu else x1
        x2 = self.cheap_bn(self.cheap(x1))
        x2 = F.relu(x2) if self.relu else x2
        # primary channel i followed by its ratio - 1 cheap ones: a narrower output is then a prefix of a wider
        # one (GhostNet's [primary, cheap] order, a permutation of this, would shuffle shared weights' roles)
        grouped = torch.cat([x1.unsqueeze(2), x2.unflatten(1, (x1.shape[1], self.ratio - 1))], dim=2)
        return grouped.flatten(1, 2)[:, : self.out_channels]


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


@register_drop_path_block
class GhostBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, knobs: Mapping[str, Any], stride: int, projection: bool,
                 ops: Ops) -> None:
        super().__init__()
        expansion, kernel, se, ratio = knobs["expansion"], knobs["kernel"], knobs["se"], knobs["ratio"]
        c_mid = hidden_width(c_in, expansion)
        self.stride, self.use_se, self.use_projection = stride, se > 0, projection
        self.drop_path = 0.0  # stochastic depth of the residual branch while training (set by set_drop_path)
        self.ghost1 = GhostModule(c_in, c_mid, True, ops, ratio)
        if stride > 1:
            self.dw = ops.dwconv(c_mid, kernel, stride)
            self.dw_bn = ops.bn(c_mid)
        self.se = SqueezeExcite(c_mid, se_width(c_mid, se), ops) if self.use_se else None
        self.ghost2 = GhostModule(c_mid, c_out, False, ops, ratio)
        if projection:
            self.shortcut = nn.Sequential(ops.dwconv(c_in, kernel, stride), ops.bn(c_in),
                                          ops.conv(c_in, c_out), ops.bn(c_out))
        else:
            self.shortcut = nn.Identity()

    def set_active(self, c_in: int, c_out: int, knobs: Mapping[str, Any]) -> None:
        expansion, kernel, se = knobs["expansion"], knobs["kernel"], knobs["se"]
        c_mid = hidden_width(c_in, expansion)
        self.ghost1.set_active(c_mid)
        if self.stride > 1:
            set_out(self.dw, c_mid, kernel)
        self.use_se = se > 0
        if self.use_se:
            self.se.set_active(c_mid, se_width(c_mid, se))
        self.ghost2.set_active(c_out)
        if isinstance(self.shortcut, nn.Sequential):
            self.use_projection = self.stride > 1 or c_in != c_out
            set_out(self.shortcut[0], c_in, kernel)
            set_out(self.shortcut[2], c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.stride > 1:
            y = self.dw_bn(self.dw(y))
        if self.use_se:
            y = self.se(y)
        shortcut = self.shortcut(x) if self.use_projection else x
        return drop_path(self.ghost2(y), self.drop_path, self.training) + shortcut


@register_family("ghost", KNOBS, "GhostNet bottlenecks (LOLViT's CNN part)")
class GhostStage(nn.Module):
    """`depth` Ghost bottlenecks; the first takes the stage's stride and width change."""

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.depth = depth
        # the supernet's first block always holds a projection: other active widths may need one
        first_projects = elastic or stride > 1 or c_in != width
        self.blocks = nn.ModuleList(
            GhostBottleneck(c_in if i == 0 else width, width, block_knobs(knobs, KNOBS, i), stride if i == 0 else 1,
                            i == 0 and first_projects, ops)
            for i in range(depth))

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        self.depth = depth
        for i, block in enumerate(self.blocks[:depth]):
            block.set_active(c_in if i == 0 else width, width, block_knobs(knobs, KNOBS, i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x
