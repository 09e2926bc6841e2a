"""The weight-sharing supernet and the static sub-networks it yields.

`HybridSupernet(space)` holds, per stage, one elastic stage module per block family, each at the largest size
the space allows. `set_active(arch)` configures the active path; `extract(arch)` returns a `HybridNet`: the
same modules built at the arch's sizes (plain torch layers, no slicing) with weights copied from the supernet.
`build(arch)` makes a freshly initialised `HybridNet` for training from scratch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks import FAMILIES
from supernet.ops import Ops, copy_sliced_state, set_out

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.space import SearchSpace


class Stem(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int, elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.conv = ops.conv(c_in, width, 3, stride)
        self.bn = ops.bn(width)

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Head(nn.Module):
    """1x1 conv to the head width, global average pool, linear classifier."""

    def __init__(self, c_in: int, width: int, num_classes: int, elastic: bool = False) -> None:
        super().__init__()
        ops = Ops(elastic)
        self.conv = ops.conv(c_in, width)
        self.bn = ops.bn(width)
        self.classifier = ops.linear(width, num_classes)

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.classifier(x.mean((2, 3)))


class HybridNet(nn.Module):
    """A static sub-network: stem, one stage per arch stage, head."""

    def __init__(self, stem: Stem, stages: list[nn.Module], head: Head) -> None:
        super().__init__()
        self.stem, self.stages, self.head = stem, nn.Sequential(*stages), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def build(arch: "Arch") -> HybridNet:
    """A freshly initialised standalone network for `arch`."""
    stages, c_in = [], arch.stem_width
    for stage in arch.stages:
        stages.append(FAMILIES[stage.family].stage(c_in, stage.width, stage.depth, stage.stride, stage.knobs))
        c_in = stage.width
    return HybridNet(Stem(arch.in_channels, arch.stem_width, arch.stem_stride), stages,
                     Head(c_in, arch.head_width, arch.num_classes))


class HybridSupernet(nn.Module):
    """Every member of a search space in one network; choose the active member with `set_active`."""

    def __init__(self, space: "SearchSpace") -> None:
        super().__init__()
        self.space = space
        largest_width = [max(s.width) for s in space.stages]
        c_in = max(space.stem_width)
        self.stem = Stem(space.in_channels, c_in, space.stem_stride, elastic=True)
        self.stages = nn.ModuleList()
        for stage, width in zip(space.stages, largest_width):
            families = nn.ModuleDict()
            for name, knob_choices in stage.families.items():
                family = FAMILIES[name]
                knobs = {k: family.knobs[k].largest(list(v)) for k, v in knob_choices.items()}
                families[name] = family.stage(c_in, width, max(stage.depth), stage.stride, knobs, elastic=True)
            self.stages.append(families)
            c_in = width
        self.head = Head(c_in, max(space.head_width), space.num_classes, elastic=True)
        self.active: "Arch" | None = None

    def set_active(self, arch: "Arch") -> None:
        if not self.space.contains(arch):
            raise ValueError(f"arch {arch.arch_id} is not a member of space {self.space.name}")
        self.stem.set_active(arch.stem_width)
        c_in = arch.stem_width
        for families, stage in zip(self.stages, arch.stages):
            families[stage.family].set_active(c_in, stage.width, stage.depth, stage.knobs)
            c_in = stage.width
        self.head.set_active(arch.head_width)
        self.active = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise RuntimeError("call set_active(arch) before running the supernet")
        x = self.stem(x)
        for families, stage in zip(self.stages, self.active.stages):
            x = families[stage.family](x)
        return self.head(x)

    def extract(self, arch: "Arch") -> HybridNet:
        """A standalone network for `arch` on the supernet's device, carrying its weights (and BN statistics)."""
        self.set_active(arch)
        net = build(arch).to(next(self.parameters()).device)
        copy_sliced_state(net.stem, self.stem)
        for stage_module, families, stage in zip(net.stages, self.stages, arch.stages):
            copy_sliced_state(stage_module, families[stage.family])
        copy_sliced_state(net.head, self.head)
        return net.train(self.training)
