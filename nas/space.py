"""`SearchSpace`: a validated search-space YAML, which samples, enumerates and suggests `Arch`es.

Space file layout (every choice is a list, or one value for a fixed choice):

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
from pathlib import Path
from typing import Any, Callable

from nas.arch import Arch, KnobItems, Reader, StageArch, canonical_value, plain_knobs, plain_value, read_yaml
from nas.errors import NasError
from supernet.blocks import FAMILIES, HEADS, REQUIRED, STEMS

# A map side divisible by 1..16 and wider than any window: a stage check that fails on it is about the width.
WIDTH_ONLY_MAP = 720720


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

    def _walk(self, stem: PartSpace, choose: Chooser) -> list[StageArch]:
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

    def contains(self, arch: Arch) -> bool:
        return self.slot_plan(arch) is not None

    def stem_of(self, arch: Arch) -> PartSpace | None:
        return next((s for s in self.stems if (s.type, s.stride, s.knob_items) ==
                     (arch.stem_type, arch.stem_stride, arch.stem_knob_items) and arch.stem_width in s.width), None)

    def head_of(self, arch: Arch) -> PartSpace | None:
        return next((h for h in self.heads if (h.type, h.knob_items) == (arch.head_type, arch.head_knob_items)
                     and arch.head_width in h.width), None)

    # ---- members --------------------------------------------------------------------------------------------
    def _arch(self, resolution: int, stem: PartSpace, stem_width: int, stages: list[StageArch], head: PartSpace,
              head_width: int, global_tokens: int, name: str | None = None) -> Arch:
        return Arch(resolution, self.in_channels, self.num_classes, stem_width, stem.stride, tuple(stages),
                    head_width, name, stem.type, stem.knob_items, head.type, head.knob_items, global_tokens)

    def _extreme(self, pick: Any, name: str, family: str | None = None) -> Arch:
        """The member that takes `pick` (min or max) of every size; weight-free knobs take their first choice.

        `max` takes the finest stem (the most stages) and places every slot; `min` the coarsest stem, and leaves
        out every slot it may. Per stage, the family with the most (fewest) parameters; with `family`, every
        stage that offers that family uses it.
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

        stem = (min if largest else max)(self.stems, key=lambda s: s.stride)
        head = pick(self.heads, key=lambda h: _head_params(h.type, h.knob_items, pick(h.width)))
        return self._arch(pick(self.resolution), stem, pick(stem.width), self._walk(stem, choose), head,
                          pick(head.width), pick(self.global_tokens), name)

    def smallest(self) -> Arch:
        """Every size at its minimum; per stage the family with the fewest parameters."""
        return self._extreme(min, "smallest")

    def largest(self) -> Arch:
        """Every size at its maximum; per stage the family with the most parameters."""
        return self._extreme(max, "largest")

    def families(self) -> list[str]:
        """Every block family the space offers, in order of first appearance."""
        return list(dict.fromkeys(f for stage in self.stages for f in stage.families))

    def single_family(self, family: str) -> Arch:
        """The smallest member that uses `family` in every stage offering it."""
        return self._extreme(min, f"smallest {family}", family)

    def sample(self, rng: random.Random) -> Arch:
        def choose(j: int, slot: StageSpace, level: int, may_skip: bool) -> StageArch | None:
            depth = rng.choice(slot.depth if may_skip else slot.depths)
            if not depth:
                return None
            family = rng.choice(list(slot.families))
            width = rng.choice(slot.widths_for(family))
            knobs = {k: rng.choice(v) for k, v in slot.options[(family, width)].items()}
            return StageArch(family, depth, width, slot.level // level, tuple(sorted(knobs.items())))

        stem = rng.choice(self.stems)
        stem_width = rng.choice(stem.width)
        stages = self._walk(stem, choose)
        head = rng.choice(self.heads)
        return self._arch(rng.choice(self.resolution), stem, stem_width, stages, head, rng.choice(head.width),
                          rng.choice(self.global_tokens))

    # ---- Optuna ---------------------------------------------------------------------------------------------
    def _parameters(self, pick: Callable[[str, tuple[Any, ...]], Any]) -> Arch:
        """The member whose every choice `pick(name, choices)` makes; parameter names stay fixed per choice set
        (Optuna's categorical distributions cannot change between trials)."""

        def choose(j: int, slot: StageSpace, level: int, may_skip: bool) -> StageArch | None:
            if may_skip and not pick(f"s{j}.present", (True, False)):
                return None
            family = pick(f"s{j}.family", tuple(slot.families))
            depth = pick(f"s{j}.depth", slot.depths)
            widths = slot.widths_for(family)
            width = pick(f"s{j}.width" if widths == slot.width else f"s{j}.{family}.width", widths)
            knobs = {}
            for k, choices in slot.options[(family, width)].items():
                fitted = choices != slot.families[family][k]
                knobs[k] = pick(f"s{j}.{family}.{k}" + (f".w{width}" if fitted else ""), choices)
            return StageArch(family, depth, width, slot.level // level, tuple(sorted(knobs.items())))

        stem = {s.key: s for s in self.stems}[pick("stem", tuple(s.key for s in self.stems))]
        stem_width = pick(f"{stem.key}.width", stem.width)
        stages = self._walk(stem, choose)
        head = {h.key: h for h in self.heads}[pick("head", tuple(h.key for h in self.heads))]
        return self._arch(pick("resolution", self.resolution), stem, stem_width, stages, head,
                          pick(f"{head.key}.width", head.width), pick("global_tokens", self.global_tokens))

    def suggest(self, trial: Any) -> Arch:
        """Ask an Optuna trial for an Arch; a family's knobs are suggested only when that family is chosen."""

        def pick(name: str, choices: tuple[Any, ...]) -> Any:
            if len(choices) == 1:
                return choices[0]
            encoded = {_optuna_choice(c): c for c in choices}  # Optuna storages keep only plain values
            return encoded[trial.suggest_categorical(name, list(encoded))]

        return self._parameters(pick)

    def to_params(self, arch: Arch) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `arch` (for enqueueing known members)."""
        plan = self.slot_plan(arch)
        if plan is None:
            raise ValueError(f"arch {arch.arch_id} is not a member of space {self.name}")
        by_slot = dict(zip(plan, arch.stages))
        stem, head = self.stem_of(arch), self.head_of(arch)
        fixed = {"stem": stem.key, f"{stem.key}.width": arch.stem_width, "head": head.key,
                 f"{head.key}.width": arch.head_width, "resolution": arch.resolution,
                 "global_tokens": arch.global_tokens}
        params: dict[str, Any] = {}

        def value_of(name: str) -> Any:
            if name in fixed:
                return fixed[name]
            slot, _, what = name.partition(".")
            stage = by_slot.get(int(slot[1:]))
            parts = what.split(".")
            if what == "present":
                return stage is not None
            if parts[-1] in ("family", "depth", "width") and len(parts) <= 2:
                return getattr(stage, parts[-1])
            return stage.knobs[parts[1]]

        def pick(name: str, choices: tuple[Any, ...]) -> Any:
            value = value_of(name)
            if len(choices) > 1:
                params[name] = _optuna_choice(value)
            return value

        self._parameters(pick)
        return params


def _optuna_choice(value: Any) -> Any:
    """A knob value as Optuna stores it: list-valued knobs (e.g. RASA dilations) as their JSON text."""
    return json.dumps(plain_value(value)) if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=4096)
def _stage_params(stage: StageArch) -> int:
    """Parameter count of one stage built alone (to rank families by size)."""
    module = FAMILIES[stage.family].stage(stage.width, stage.width, stage.depth, stage.stride, stage.knobs)
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=256)
def _head_params(kind: str, knob_items: KnobItems, width: int) -> int:
    """Parameter count of a head (on a 64-wide input, 10 classes) to rank head choices by size."""
    from supernet.ops import Ops

    module = HEADS[kind].module(64, width, 10, dict(knob_items), Ops(False))
    return sum(p.numel() for p in module.parameters())


def _choices(reader: Reader, value: Any, path: str, check: Any, expects: str) -> tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        reader.fail(path, f"a non-empty list of {expects}", value)
    out = []
    for item in values:
        item = canonical_value(item)
        if not check(list(item) if isinstance(item, tuple) else item):
            reader.fail(path, f"{expects} (or a list of them)", item)
        if item not in out:
            out.append(item)
    return tuple(out)


def _positive_ints(reader: Reader, value: Any, path: str) -> tuple[int, ...]:
    return _choices(reader, value, path, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                    "positive integers")


def _family_knobs(reader: Reader, data: Any, path: str, family_name: str) -> dict[str, tuple[Any, ...]]:
    family = FAMILIES[family_name]
    data = reader.mapping(data if data is not None else {}, path, set(family.knobs))
    knobs = {}
    for knob_name, knob in family.knobs.items():
        if knob_name not in data:
            if knob.default is REQUIRED:
                reader.fail(f"{path}.{knob_name}", knob.expects, None)
            knobs[knob_name] = (canonical_value(knob.default),)
            continue
        knobs[knob_name] = _choices(reader, data[knob_name], f"{path}.{knob_name}", knob.check, knob.expects)
    return knobs


def _parts(reader: Reader, data: Any, path: str, registry: dict[str, Any], is_stem: bool) -> tuple[PartSpace, ...]:
    """The stem (or head) choices: one mapping, or a list of them."""
    items = data if isinstance(data, list) and data else [data]
    parts = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else path
        kind, part = reader.component(item, where, registry, {"width", "stride"} if is_stem else {"width"})
        widths = (0,)
        if is_stem or registry[kind].has_width:
            widths = _positive_ints(reader, part.get("width"), f"{where}.width")
        stride = reader.positive_int(part.get("stride", 2), f"{where}.stride") if is_stem else 1
        knob_items = reader.knobs(part, where, registry[kind].knobs)
        problem = registry[kind].check(stride, dict(knob_items)) if is_stem else None
        if problem:
            raise NasError(f"{reader.source}: {where} ({kind}): {problem}")
        parts.append(PartSpace(f"{path}{i}", kind, widths, knob_items, stride))
    if len({(p.type, p.knob_items, p.stride) for p in parts}) != len(parts):
        raise NasError(f"{reader.source}: {path}: two choices with the same type and knobs; merge their widths")
    return tuple(parts)


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    reader = Reader(source)
    top = reader.mapping(data, "", {"name", "resolution", "in_channels", "num_classes", "stem", "stages", "head",
                                    "global_tokens"})
    stems = _parts(reader, top.get("stem"), "stem", STEMS, True)
    heads = _parts(reader, top.get("head"), "head", HEADS, False)
    stages_data = top.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        reader.fail("stages", "a non-empty list of stages", stages_data)
    stages, level = [], min(stem.stride for stem in stems)
    for i, item in enumerate(stages_data):
        path = f"stages[{i}]"
        stage = reader.mapping(item, path, {"stride", "depth", "width", "families"})
        families_data = reader.mapping(stage.get("families"), f"{path}.families", set(FAMILIES))
        if not families_data:
            reader.fail(f"{path}.families", f"at least one of {', '.join(FAMILIES)}", families_data)
        families = {name: _family_knobs(reader, knobs, f"{path}.families.{name}", name)
                    for name, knobs in families_data.items()}
        depth = _choices(reader, stage.get("depth"), f"{path}.depth",
                         lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "integers >= 0")
        if not any(depth):
            reader.fail(f"{path}.depth", "at least one depth > 0", list(depth))
        stride = reader.positive_int(stage.get("stride"), f"{path}.stride")
        level *= stride
        stages.append(StageSpace(stride, depth, _positive_ints(reader, stage.get("width"), f"{path}.width"),
                                 families, level))
    tokens = _choices(reader, top.get("global_tokens", 0), "global_tokens",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "integers >= 0")
    resolutions = _positive_ints(reader, top.get("resolution"), "resolution")
    for i, stage in enumerate(stages):
        stage.options.update(_stage_options(reader, stage, f"stages[{i}]", resolutions, stems))
    space = SearchSpace(str(top.get("name") or Path(source).stem), resolutions,
                        reader.positive_int(top.get("in_channels", 3), "in_channels"),
                        reader.positive_int(top.get("num_classes", 1000), "num_classes"), stems, stages, heads,
                        tokens, source)
    _check_heads(space, reader)
    return space


def _stage_options(reader: Reader, stage: StageSpace, path: str, resolutions: tuple[int, ...],
                   stems: tuple[PartSpace, ...]) -> dict[tuple[str, int], dict[str, tuple[Any, ...]]]:
    """Per (family, width), the knob choices that fit the width; every combination of them must work at every
    resolution the slot sees."""
    sizes = [math.ceil(r / stage.level) for r in resolutions] if any(s.stride <= stage.level for s in stems) else []
    options = {}
    for family_name, knobs in stage.families.items():
        family = FAMILIES[family_name]
        for width in stage.width:
            combos = [c for c in _knob_combinations(knobs) if family.check_stage(width, c, WIDTH_ONLY_MAP) is None]
            if not combos:
                continue
            fitting = {k: tuple(v for v in choices if any(c[k] == v for c in combos)) for k, choices in knobs.items()}
            if len(combos) != math.prod(len(v) for v in fitting.values()):
                raise NasError(f"{reader.source}: {path}: {family_name} at width {width}: the knob choices that fit "
                               "this width do not combine freely; split the stage or narrow the choices")
            for size in sizes:
                for combo in combos:
                    problem = family.check_stage(width, combo, size)
                    if problem:
                        raise NasError(f"{reader.source}: {path}: {family_name}: {problem}; make every width "
                                       "choice work with every knob choice at every resolution")
            options[(family_name, width)] = fitting
        if not any(f == family_name for f, _ in options):
            problem = family.check_stage(stage.width[0], _knob_combinations(knobs)[0], WIDTH_ONLY_MAP)
            raise NasError(f"{reader.source}: {path}: {family_name}: no width choice fits its knobs ({problem})")
    return options


def _check_heads(space: SearchSpace, reader: Reader) -> None:
    """Every head must take every width a last stage can have."""
    last_level = space.stages[-1].level
    widths = sorted({w for stage in space.stages if stage.level == last_level for w in stage.width})
    for head in space.heads:
        for width in widths:
            problem = HEADS[head.type].check(width, dict(head.knob_items))
            if problem:
                raise NasError(f"{reader.source}: head ({head.type}): {problem}")


def _knob_combinations(knobs: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for name, values in knobs.items():
        combos = [{**combo, name: value} for combo in combos for value in values]
    return combos


def load_space(path: str | Path) -> SearchSpace:
    return space_from_dict(read_yaml(path), str(path))
