"""`SearchSpace`: the space model, which samples and enumerates `Arch`es and places them in a supernet's slots.

The YAML reader is `nas.space.reader`; the Optuna encoding of a space (suggest, to_params) is
`nas.search.encoding`. Space file layout (every choice is a list, or one value for a fixed choice):

    name: cpu_small
    resolution: [32]
    in_channels: 1              # images are converted to this many channels
    num_classes: 10             # replaced by the data's class count at search time
    stem: {width: [16], stride: 2}          # also `type:` (conv, patch, lightvit) and that type's knobs
    global_tokens: [0]          # LightViT's global tokens (optional)
    stages:
      - stride: 2
        depth: [1, 2]
        width: [24, 32]
        families:               # block family -> its knobs' choices
          ghost: {expansion: [2, 3], kernel: [3, 5], se: [0, 0.25]}
          fwa: {heads: [1, 2], mlp_ratio: [1, 2], kv_rule: [grid], kv_size: [2, 4],
                aggregator: [avg], normaliser: [softmax, relu]}
    head: {width: [64, 128]}                # also `type:` (conv, gap, lightvit, class_attention) and knobs

Knobs with a default may be left out.

A union of macro structures (hybrid.yaml) uses three more things:
- `stem:` and `head:` may be lists: each entry is one choice (its own type, knobs and widths; its own weights).
- Stages are *slots*. A slot's `level` is its output stride: the finest stem's stride times the slot strides
  so far. A stem of stride s leaves out every slot finer than s; a slot at the stem's level then runs at
  stride 1. A slot whose `depth` offers 0 may be left out while the map is already at its level, or when
  the next slot is at the same level (so no level is ever skipped).
- Knob choices that do not fit a width (heads that do not divide it) are offered only with the widths they
  fit; the choices left must still combine freely.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from nas.arch import Arch, KnobItems, StageArch, plain_knobs, plain_value
from supernet.blocks import FAMILIES
from supernet.sizes import head_params, stage_params


@dataclass(frozen=True)
class PartSpace:
    """One stem or head choice: its type and knobs (fixed), its width choices, and (stems) its stride."""

    key: str
    type: str
    width: tuple[int, ...]
    knob_items: KnobItems
    stride: int = 1

    def to_dict(self, with_stride: bool) -> dict[str, Any]:
        data = {"type": self.type, "width": list(self.width), **plain_knobs(self.knob_items)}
        return {**data, "stride": self.stride} if with_stride else data


@dataclass(frozen=True)
class StageSpace:
    """A stage slot. `options[(family, width)]` holds each knob's choices that fit that width."""

    stride: int
    depth: tuple[int, ...]
    width: tuple[int, ...]
    families: dict[str, dict[str, tuple[Any, ...]]]  # family -> knob -> choices
    level: int = 0
    options: dict[tuple[str, int], dict[str, tuple[Any, ...]]] = field(default_factory=dict, compare=False)

    @property
    def optional(self) -> bool:
        return 0 in self.depth

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(d for d in self.depth if d)

    def widths_for(self, family: str) -> tuple[int, ...]:
        return tuple(w for w in self.width if (family, w) in self.options)

    def accepts(self, stage: StageArch) -> bool:
        knobs = self.options.get((stage.family, stage.width))
        if knobs is None or stage.depth not in self.depths or set(knobs) != set(stage.knobs):
            return False
        table = FAMILIES[stage.family].knobs
        for name, value in stage.knob_items:
            values = value if table[name].per_block and isinstance(value, tuple) else (value,)
            if any(v not in knobs[name] for v in values):
                return False
        return True


@dataclass(frozen=True)
class Placement:
    """Where a member sits in the space's supernet: the key of its stem choice, the slot each of its stages
    fills, and the key of its head choice. The supernet takes it as given (`HybridSupernet.set_active_at`)."""

    stem: str
    slots: tuple[int, ...]
    head: str


# choose(slot index, slot, current level, may skip) -> the stage placed in that slot, or None to leave it out
Chooser = Callable[[int, StageSpace, int, bool], "StageArch | None"]


class SearchSpace:
    def __init__(self, name: str, resolution: tuple[int, ...], in_channels: int, num_classes: int,
                 stems: tuple[PartSpace, ...], stages: list[StageSpace], heads: tuple[PartSpace, ...],
                 global_tokens: tuple[int, ...] = (0,), source: str = "space") -> None:
        self.name, self.resolution, self.in_channels, self.num_classes = name, resolution, in_channels, num_classes
        self.stems, self.stages, self.heads = stems, stages, heads
        self.global_tokens, self.source = global_tokens, source

    # ---- identity -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resolution": list(self.resolution), "in_channels": self.in_channels,
                "num_classes": self.num_classes, "stem": [s.to_dict(True) for s in self.stems],
                "global_tokens": list(self.global_tokens),
                "stages": [{"stride": s.stride, "depth": list(s.depth), "width": list(s.width),
                            "families": {f: {k: [plain_value(c) for c in v] for k, v in knobs.items()}
                                         for f, knobs in s.families.items()}}
                           for s in self.stages],
                "head": [h.to_dict(False) for h in self.heads]}

    @property
    def space_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_num_classes(self, num_classes: int) -> "SearchSpace":
        space = copy.copy(self)
        space.num_classes = num_classes
        return space

    @property
    def cardinality(self) -> int:
        """Number of distinct architectures (per-stage knob values; per-block lists not counted)."""

        @functools.cache
        def count(j: int, level: int, placed: bool) -> int:
            if j == len(self.stages):
                return 1
            slot = self.stages[j]
            if slot.level < level:
                return count(j + 1, level, placed)
            members = sum(math.prod(len(v) for v in knobs.values()) for knobs in slot.options.values())
            total = members * len(slot.depths) * count(j + 1, slot.level, True)
            return total + (count(j + 1, level, placed) if self._may_skip(j, level, placed) else 0)

        parts = sum(len(stem.width) * count(0, stem.stride, False) for stem in self.stems)
        return (parts * len(self.resolution) * len(self.global_tokens) * sum(len(h.width) for h in self.heads))

    # ---- the walk over slots every member follows -----------------------------------------------------------
    def _may_skip(self, j: int, level: int, placed: bool) -> bool:
        slot, last = self.stages[j], j == len(self.stages) - 1
        next_same_level = not last and self.stages[j + 1].level == slot.level
        return slot.optional and (level == slot.level or next_same_level) and (placed or not last)

    def walk(self, stem: PartSpace, choose: Chooser) -> list[StageArch]:
        level, stages = stem.stride, []
        for j, slot in enumerate(self.stages):
            if slot.level < level:
                continue
            stage = choose(j, slot, level, self._may_skip(j, level, bool(stages)))
            if stage is not None:
                stages.append(stage)
                level = slot.level
        return stages

    def slot_strides(self, j: int) -> tuple[int, ...]:
        """The strides slot `j` can run at: its level over each level the map can have when it arrives."""
        return tuple(sorted({self.stages[j].level // level for level in self._entry_levels[j]}))

    @functools.cached_property
    def _entry_levels(self) -> list[set[int]]:
        entries: list[set[int]] = [set() for _ in self.stages]
        states = {(stem.stride, False) for stem in self.stems}  # (current level, a stage placed yet)
        for j, slot in enumerate(self.stages):
            following = set()
            for level, placed in states:
                if slot.level < level:
                    following.add((level, placed))
                    continue
                entries[j].add(level)
                following.add((slot.level, True))
                if self._may_skip(j, level, placed):
                    following.add((level, placed))
            states = following
        return entries

    def slot_plan(self, arch: Arch) -> tuple[int, ...] | None:
        """The slot each stage of `arch` fills, or None when `arch` is not a member."""

        def match(j: int, i: int, level: int) -> tuple[int, ...] | None:
            if j == len(self.stages):
                return () if i == len(arch.stages) else None
            slot = self.stages[j]
            if slot.level < level:
                return match(j + 1, i, level)
            if i < len(arch.stages) and level * arch.stages[i].stride == slot.level and slot.accepts(arch.stages[i]):
                rest = match(j + 1, i + 1, slot.level)
                if rest is not None:
                    return (j, *rest)
            return match(j + 1, i, level) if self._may_skip(j, level, i > 0) else None

        if (arch.timm_model or arch.resolution not in self.resolution or arch.in_channels != self.in_channels
                or arch.global_tokens not in self.global_tokens
                or self.stem_of(arch) is None or self.head_of(arch) is None):
            return None
        return match(0, 0, arch.stem_stride)

    def placement(self, arch: Arch) -> Placement | None:
        """Where `arch` sits in the supernet of this space, or None when it is not a member."""
        plan = self.slot_plan(arch)
        if plan is None:
            return None
        return Placement(self.stem_of(arch).key, plan, self.head_of(arch).key)

    def contains(self, arch: Arch) -> bool:
        return self.slot_plan(arch) is not None

    def stem_of(self, arch: Arch) -> PartSpace | None:
        return next((s for s in self.stems if (s.type, s.stride, s.knob_items) ==
                     (arch.stem_type, arch.stem_stride, arch.stem_knob_items) and arch.stem_width in s.width), None)

    def head_of(self, arch: Arch) -> PartSpace | None:
        return next((h for h in self.heads if (h.type, h.knob_items) == (arch.head_type, arch.head_knob_items)
                     and arch.head_width in h.width), None)

    # ---- members --------------------------------------------------------------------------------------------
    def member(self, resolution: int, stem: PartSpace, stem_width: int, stages: list[StageArch], head: PartSpace,
              head_width: int, global_tokens: int, name: str | None = None) -> Arch:
        return Arch(resolution, self.in_channels, self.num_classes, stem_width, stem.stride, tuple(stages),
                    head_width, name, stem.type, stem.knob_items, head.type, head.knob_items, global_tokens)

    def _extreme(self, pick: Any, name: str, family: str | None = None,
                 ends: tuple[PartSpace, PartSpace] | None = None) -> Arch:
        """The member that takes `pick` (min or max) of every size; weight-free knobs take their first choice.

        `max` takes the finest stem (the most stages) and places every slot; `min` the coarsest stem, and leaves
        out every slot it may. Per stage, the family with the most (fewest) parameters; with `family`, every
        stage that offers that family uses it. With `ends`, that (stem, head) pair instead.
        """
        largest = pick is max

        def choose(j: int, slot: StageSpace, level: int, may_skip: bool) -> StageArch | None:
            if may_skip and not largest:
                return None
            options = []
            for family_name in slot.families:
                if family in slot.families and family_name != family:
                    continue
                width = pick(slot.widths_for(family_name))
                table = FAMILIES[family_name].knobs
                values = {k: pick(v) if table[k].sizes_weights else v[0]
                          for k, v in slot.options[(family_name, width)].items()}
                options.append(StageArch(family_name, pick(slot.depths), width, slot.level // level,
                                         tuple(sorted(values.items()))))
            return pick(options, key=_stage_params)

        stem, head = ends or ((min if largest else max)(self.stems, key=lambda s: s.stride),
                              pick(self.heads, key=lambda h: _head_params(h.type, h.knob_items, pick(h.width))))
        return self.member(pick(self.resolution), stem, pick(stem.width), self.walk(stem, choose), head,
                          pick(head.width), pick(self.global_tokens), name)

    def smallest(self) -> Arch:
        """Every size at its minimum; per stage the family with the fewest parameters."""
        return self._extreme(min, "smallest")

    def largest(self) -> Arch:
        """Every size at its maximum; per stage the family with the most parameters."""
        return self._extreme(max, "largest")

    def largest_of(self, family: str) -> Arch:
        """The largest member that uses `family` in every stage offering it."""
        return self._extreme(max, f"largest {family}", family)

    def largest_with_ends(self, index: int) -> Arch:
        """The largest member with the `index`-th (cycling) of every (stem choice, head choice) pair."""
        pairs = [(stem, head) for stem in self.stems for head in self.heads]
        stem, head = pairs[index % len(pairs)]
        return self._extreme(max, f"largest {stem.key} {head.key}", ends=(stem, head))

    def families(self) -> list[str]:
        """Every block family the space offers, in order of first appearance."""
        return list(dict.fromkeys(f for stage in self.stages for f in stage.families))

    def single_family(self, family: str) -> Arch:
        """The smallest member that uses `family` in every stage offering it."""
        return self._extreme(min, f"smallest {family}", family)

    def sample(self, rng: random.Random) -> Arch:
        """A member with every choice drawn uniformly from `rng`."""
        return self._drawn(rng, lambda decision, choices: rng.randrange(choices))

    def fair_sample(self, rng: random.Random, count: int) -> list[Arch]:
        """`count` members drawn as `sample` draws them, except that the stem, the head and each slot's depth and
        family are dealt like cards: among the members that make a decision, each of its choices comes up equally
        often (within one), in random order. FairNAS's strict fairness: with `count` at least the most families a
        slot offers, every family's weights are trained on every step, not only on average."""
        decks: dict[tuple[str, int], list[int]] = {}

        def deal(decision: tuple[str, int], choices: int) -> int:
            if not decks.get(decision):
                decks[decision] = rng.sample(range(choices), choices)
            return decks[decision].pop()

        return [self._drawn(rng, deal) for _ in range(count)]

    def _drawn(self, rng: random.Random, pick: Callable[[tuple[str, int], int], int]) -> Arch:
        """A member whose stem, head and slots' depths and families are `pick(decision, number of choices)`'s
        index, every other choice drawn uniformly from `rng`."""
        def choose(j: int, slot: StageSpace, level: int, may_skip: bool) -> StageArch | None:
            depths = slot.depth if may_skip else slot.depths
            depth = depths[pick(("depth or none" if may_skip else "depth", j), len(depths))]
            if not depth:
                return None
            family = list(slot.families)[pick(("family", j), len(slot.families))]
            width = rng.choice(slot.widths_for(family))
            knobs = {k: rng.choice(v) for k, v in slot.options[(family, width)].items()}
            return StageArch(family, depth, width, slot.level // level, tuple(sorted(knobs.items())))

        stem = self.stems[pick(("stem", 0), len(self.stems))]
        stem_width = rng.choice(stem.width)
        stages = self.walk(stem, choose)
        head = self.heads[pick(("head", 0), len(self.heads))]
        return self.member(rng.choice(self.resolution), stem, stem_width, stages, head, rng.choice(head.width),
                          rng.choice(self.global_tokens))


@functools.lru_cache(maxsize=4096)
def _stage_params(stage: StageArch) -> int:
    """Parameter count of one stage built alone (to rank families by size)."""
    return stage_params(stage.family, stage.width, stage.width, stage.depth, stage.stride, stage.knobs)


@functools.lru_cache(maxsize=256)
def _head_params(kind: str, knob_items: KnobItems, width: int) -> int:
    """Parameter count of a head (on a 64-wide input, 10 classes) to rank head choices by size."""
    return head_params(kind, 64, width, 10, dict(knob_items))
