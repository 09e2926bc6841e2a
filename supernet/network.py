"""The weight-sharing supernet and the static sub-networks it yields.

A network is a stem, one stage per arch stage and a head, each chosen from the registries in
`supernet.blocks`. With `global_tokens` > 0 the network also carries LightViT's global tokens: a learned
[1, NT, stem width] parameter prepended after the stem, projected (LayerNorm + linear, LightViT's merge) whenever
the width changes between stages, seen by the token-using families and by the head.

`HybridSupernet(space)` holds, per stage, one elastic stage module per block family, each at the largest size
the space allows. `set_active(arch)` configures the active path; `extract(arch)` returns a `HybridNet`: the
same modules built at the arch's sizes (plain torch layers, no slicing) with weights copied from the supernet.
`build(arch)` makes a freshly initialised `HybridNet` for training from scratch (or a timm model for a
`timm:` baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.errors import NasError
from supernet.blocks import FAMILIES, HEADS, STEMS
from supernet.blocks.lightvit import GlobalTokenProjection
from supernet.ops import Ops, copy_sliced_state

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.space import SearchSpace


class HybridNet(nn.Module):
    """A static sub-network: stem, [global tokens], one stage per arch stage, head."""

    def __init__(self, arch: "Arch") -> None:
        super().__init__()
        ops = Ops(False)
        self.stem = STEMS[arch.stem_type].module(arch.in_channels, arch.stem_width, arch.stem_stride,
                                                 arch.stem_knobs, ops)
        self.global_tokens = None
        if arch.global_tokens:
            self.global_tokens = nn.Parameter(torch.zeros(1, arch.global_tokens, arch.stem_width))
            nn.init.trunc_normal_(self.global_tokens, std=0.02)
        self.stages, self.token_projections = nn.ModuleList(), nn.ModuleList()
        self.uses_tokens = [FAMILIES[s.family].uses_tokens for s in arch.stages]
        c_in = arch.stem_width
        for stage in arch.stages:
            self.stages.append(FAMILIES[stage.family].stage(c_in, stage.width, stage.depth, stage.stride,
                                                            stage.knobs))
            projects = arch.global_tokens and c_in != stage.width
            self.token_projections.append(GlobalTokenProjection(c_in, stage.width, ops) if projects
                                          else nn.Identity())
            c_in = stage.width
        self.head = HEADS[arch.head_type].module(c_in, arch.head_width, arch.num_classes, arch.head_knobs, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        tokens = None if self.global_tokens is None else self.global_tokens.expand(x.shape[0], -1, -1)
        for uses_tokens, stage, projection in zip(self.uses_tokens, self.stages, self.token_projections):
            tokens = None if tokens is None else projection(tokens)
            if uses_tokens:
                x, tokens = stage(x, tokens)
            else:
                x = stage(x)
        return self.head(x, tokens)


def build(arch: "Arch") -> nn.Module:
    """A freshly initialised standalone network for `arch`."""
    if arch.timm_model:
        import timm

        return timm.create_model(arch.timm_model, pretrained=False, num_classes=arch.num_classes,
                                 in_chans=arch.in_channels)
    return HybridNet(arch)


class HybridSupernet(nn.Module):
    """Every member of a search space in one network; choose the active member with `set_active`."""

    def __init__(self, space: "SearchSpace") -> None:
        super().__init__()
        if max(space.global_tokens):
            raise NasError(f"{space.source}: global_tokens: the supernet does not carry global tokens yet; use [0]")
        self.space = space
        c_in = max(space.stem_width)
        ops = Ops(True)
        self.stem = STEMS[space.stem_type].module(space.in_channels, c_in, space.stem_stride,
                                                  dict(space.stem_knob_items), ops)
        self.stages = nn.ModuleList()
        for stage, width in zip(space.stages, (max(s.width) for s in space.stages)):
            families = nn.ModuleDict()
            for name, knob_choices in stage.families.items():
                family = FAMILIES[name]
                knobs = {k: family.knobs[k].largest(list(v)) for k, v in knob_choices.items()}
                families[name] = family.stage(c_in, width, max(stage.depth), stage.stride, knobs, elastic=True)
            self.stages.append(families)
            c_in = width
        self.head = HEADS[space.head_type].module(c_in, max(space.head_width), space.num_classes,
                                                  dict(space.head_knob_items), ops)
        self.active: "Arch" | None = None

    def set_active(self, arch: "Arch") -> None:
        if not self.space.contains(arch):
            raise ValueError(f"arch {arch.arch_id} is not a member of space {self.space.name}")
        self.stem.set_active(arch.stem_width)
        c_in = arch.stem_width
        for families, stage in zip(self.stages, arch.stages):
            families[stage.family].set_active(c_in, stage.width, stage.depth, stage.knobs)
            c_in = stage.width
        self.head.set_active(arch.head_width, arch.head_knobs)
        self.active = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise RuntimeError("call set_active(arch) before running the supernet")
        x = self.stem(x)
        for families, stage in zip(self.stages, self.active.stages):
            if FAMILIES[stage.family].uses_tokens:
                x, _ = families[stage.family](x, None)
            else:
                x = families[stage.family](x)
        return self.head(x, None)

    def extract(self, arch: "Arch") -> HybridNet:
        """A standalone network for `arch` on the supernet's device, carrying its weights (and BN statistics)."""
        self.set_active(arch)
        net = build(arch).to(next(self.parameters()).device)
        copy_sliced_state(net.stem, self.stem)
        for stage_module, families, stage in zip(net.stages, self.stages, arch.stages):
            copy_sliced_state(stage_module, families[stage.family])
        copy_sliced_state(net.head, self.head)
        return net.train(self.training)
