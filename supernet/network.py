"""The weight-sharing supernet and the static sub-networks it yields.

A network is a stem, one stage per arch stage and a head, each chosen from the registries in
`supernet.blocks`. With `global_tokens` > 0 the network also carries LightViT's global tokens: a learned
[1, NT, stem width] parameter prepended after the stem, projected (LayerNorm + linear, LightViT's merge) whenever
the width changes between stages, seen by the token-using families and by the head.

`HybridSupernet(space)` holds, per stage slot, one elastic stage module per block family (and stride, and
value of a structure-changing knob), each at the largest size the space allows; it reads the space's structure
once, when built, and keeps none of it but the knob choices per slot. Where a member sits (its stem and head
choices, the slot of each stage) is the space's business: `set_active_at(arch, placement)` configures the active
path for a placement the space computed (`nas.space.SearchSpace.placement`); `extract_at(arch, placement)`
returns a `HybridNet`: the same modules built at the arch's sizes (plain torch layers, no slicing) with weights
copied from the supernet.
`build(arch)` makes a freshly initialised `HybridNet` for training from scratch (or a timm model for a
`timm:` baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from supernet.blocks import DROP_PATH_BLOCKS, FAMILIES, HEADS, STEMS
from supernet.blocks.lightvit import GlobalTokenProjection
from supernet.ops import Ops, copy_sliced_state

if TYPE_CHECKING:
    from nas.arch import Arch, StageArch
    from nas.space import Placement, SearchSpace


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


def build(arch: "Arch", drop_path_rate: float = 0.0) -> nn.Module:
    """A freshly initialised standalone network for `arch`, with stochastic depth up to `drop_path_rate` (timm
    models whose constructor takes no `drop_path_rate`, such as GhostNet, train without)."""
    if arch.timm_model:
        import timm

        options = {"num_classes": arch.num_classes, "in_chans": arch.in_channels}
        if drop_path_rate:
            try:
                return timm.create_model(arch.timm_model, pretrained=False, drop_path_rate=drop_path_rate, **options)
            except TypeError:
                pass
        return timm.create_model(arch.timm_model, pretrained=False, **options)
    return set_drop_path(HybridNet(arch), drop_path_rate)


def set_drop_path(model: nn.Module, rate: float) -> nn.Module:
    """Give the residual blocks of `model` drop-path rates rising linearly with depth to `rate` (timm's rule).

    The residual blocks are those of the classes registered with `register_drop_path_block`, in module order."""
    blocks = [m for m in model.modules() if isinstance(m, tuple(DROP_PATH_BLOCKS))]
    for index, block in enumerate(blocks):
        block.drop_path = rate * index / max(1, len(blocks) - 1)
    return model


def _variant_key(family: str, stride: int, separate: dict[str, Any]) -> str:
    """The name of one stage copy in a supernet slot: family, stride, and the values of its separate-weight knobs
    (those with more than one choice in the slot)."""
    return "_".join([family, f"s{stride}", *(f"{k}-{v}".replace(".", "p") for k, v in sorted(separate.items()))])


class HybridSupernet(nn.Module):
    """Every member of a search space in one network; choose the active member with `set_active_at`.

    Per stem and head choice one elastic module. Per stage slot, one elastic stage per (family, stride the slot
    can run at, value of each separate-weight knob): widths, depth, heads, MLP ratios and kernels slice its
    weights; weight-free knobs (K/V rule, recursion, dilations, resolution) use the same weights. The global
    tokens are one [1, most tokens, widest stem] parameter, sliced.
    """

    def __init__(self, space: "SearchSpace") -> None:
        super().__init__()
        # per slot, each family's knob choices: which knobs get separate weights (`_variant`)
        self.slot_families = [slot.families for slot in space.stages]
        ops = Ops(True)
        self.stems = nn.ModuleDict({stem.key: STEMS[stem.type].module(space.in_channels, max(stem.width),
                                                                      stem.stride, dict(stem.knob_items), ops)
                                    for stem in space.stems})
        c_in = max(max(stem.width) for stem in space.stems)
        self.global_tokens = None
        if max(space.global_tokens):
            self.global_tokens = nn.Parameter(torch.zeros(1, max(space.global_tokens), c_in))
            nn.init.trunc_normal_(self.global_tokens, std=0.02)
        self.stages, self.token_projections = nn.ModuleList(), nn.ModuleList()
        for j, slot in enumerate(space.stages):
            width, variants = max(slot.width), nn.ModuleDict()
            for stride in space.slot_strides(j):
                for name, knob_choices in slot.families.items():
                    family = FAMILIES[name]
                    largest = {k: family.knobs[k].largest(list(v)) for k, v in knob_choices.items()}
                    for separate in _separate_combinations(name, knob_choices):
                        variants[_variant_key(name, stride, separate)] = family.stage(
                            c_in, width, max(slot.depths), stride, {**largest, **separate}, elastic=True)
            self.stages.append(variants)
            self.token_projections.append(GlobalTokenProjection(c_in, width, ops) if self.global_tokens is not None
                                          else nn.Identity())
            c_in = max(c_in, width)  # a later slot may take its input from any earlier one
        self.heads = nn.ModuleDict({head.key: HEADS[head.type].module(c_in, max(head.width), space.num_classes,
                                                                      dict(head.knob_items), ops)
                                    for head in space.heads})
        self.active: "Arch" | None = None
        self._path: list[tuple[int, str, bool]] = []  # (slot, variant, projects tokens) per active stage
        self._ends: tuple[str, str] = ("", "")  # the active stem and head keys

    def _variant(self, slot: int, stage: "StageArch") -> str:
        choices = self.slot_families[slot][stage.family]
        separate = {k: v for k, v in stage.knob_items
                    if FAMILIES[stage.family].knobs[k].separate_weights and len(choices[k]) > 1}
        return _variant_key(stage.family, stage.stride, separate)

    def set_active_at(self, arch: "Arch", placement: "Placement") -> None:
        """Make `arch` the active member; `placement` says which stem, slots and head it uses."""
        self.stems[placement.stem].set_active(arch.stem_width)
        c_in, self._path = arch.stem_width, []
        for j, stage in zip(placement.slots, arch.stages):
            variant = self._variant(j, stage)
            self.stages[j][variant].set_active(c_in, stage.width, stage.depth, stage.knobs)
            projects = bool(arch.global_tokens) and c_in != stage.width
            if projects:
                self.token_projections[j].set_active(stage.width)
            self._path.append((j, variant, projects))
            c_in = stage.width
        self.heads[placement.head].set_active(arch.head_width, arch.head_knobs)
        self.active, self._ends = arch, (placement.stem, placement.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.active
        if arch is None:
            raise RuntimeError("call set_active_at(arch, placement) before running the supernet")
        stem, head = self._ends
        x = self.stems[stem](x)
        tokens = None
        if arch.global_tokens:
            tokens = self.global_tokens[:, :arch.global_tokens, :arch.stem_width].expand(x.shape[0], -1, -1)
        for (j, variant, projects), stage in zip(self._path, arch.stages):
            if projects:
                tokens = self.token_projections[j](tokens)
            if FAMILIES[stage.family].uses_tokens:
                x, tokens = self.stages[j][variant](x, tokens)
            else:
                x = self.stages[j][variant](x)
        return self.heads[head](x, tokens)

    def extract_at(self, arch: "Arch", placement: "Placement") -> HybridNet:
        """A standalone network for `arch` (at `placement`) on the supernet's device, carrying its weights (and BN
        statistics)."""
        self.set_active_at(arch, placement)
        net = build(arch).to(next(self.parameters()).device)
        copy_sliced_state(net.stem, self.stems[placement.stem])
        if net.global_tokens is not None:
            with torch.no_grad():
                net.global_tokens.copy_(self.global_tokens[:, :arch.global_tokens, :arch.stem_width])
        for i, (j, variant, projects) in enumerate(self._path):
            copy_sliced_state(net.stages[i], self.stages[j][variant])
            if projects:
                copy_sliced_state(net.token_projections[i], self.token_projections[j])
        copy_sliced_state(net.head, self.heads[placement.head])
        return net.train(self.training)


def _separate_combinations(family: str, knob_choices: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every combination of the values offered for the family's separate-weight knobs that have several."""
    combos: list[dict[str, Any]] = [{}]
    for k, values in knob_choices.items():
        if FAMILIES[family].knobs[k].separate_weights and len(values) > 1:
            combos = [{**combo, k: value} for combo in combos for value in values]
    return combos
