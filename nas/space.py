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

Knobs with a default may be left out. Stem and head types and knobs take one value per space.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import Arch, KnobItems, Reader, StageArch, canonical_value, plain_knobs, plain_value, read_yaml
from nas.errors import NasError
from supernet.blocks import FAMILIES, HEADS, REQUIRED, STEMS


@dataclass(frozen=True)
class StageSpace:
    stride: int
    depth: tuple[int, ...]
    width: tuple[int, ...]
    families: dict[str, dict[str, tuple[Any, ...]]]  # family -> knob -> choices


class SearchSpace:
    def __init__(self, name: str, resolution: tuple[int, ...], in_channels: int, num_classes: int,
                 stem_width: tuple[int, ...], stem_stride: int, stages: list[StageSpace],
                 head_width: tuple[int, ...], source: str = "space", stem_type: str = "conv",
                 stem_knob_items: KnobItems = (("act", "relu"),), head_type: str = "conv",
                 head_knob_items: KnobItems = (("act", "relu"), ("neck", 0)),
                 global_tokens: tuple[int, ...] = (0,)) -> None:
        self.name, self.resolution, self.in_channels, self.num_classes = name, resolution, in_channels, num_classes
        self.stem_width, self.stem_stride, self.stages, self.head_width = stem_width, stem_stride, stages, head_width
        self.stem_type, self.stem_knob_items = stem_type, stem_knob_items
        self.head_type, self.head_knob_items = head_type, head_knob_items
        self.global_tokens, self.source = global_tokens, source

    # ---- identity -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resolution": list(self.resolution), "in_channels": self.in_channels,
                "num_classes": self.num_classes,
                "stem": {"type": self.stem_type, "width": list(self.stem_width), "stride": self.stem_stride,
                         **plain_knobs(self.stem_knob_items)},
                "global_tokens": list(self.global_tokens),
                "stages": [{"stride": s.stride, "depth": list(s.depth), "width": list(s.width),
                            "families": {f: {k: [plain_value(c) for c in v] for k, v in knobs.items()}
                                         for f, knobs in s.families.items()}}
                           for s in self.stages],
                "head": {"type": self.head_type, "width": list(self.head_width), **plain_knobs(self.head_knob_items)}}

    @property
    def space_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_num_classes(self, num_classes: int) -> "SearchSpace":
        space = copy.copy(self)
        space.num_classes = num_classes
        return space

    @property
    def cardinality(self) -> int:
        """Number of distinct architectures (stage depths and family knobs counted per stage)."""
        total = len(self.resolution) * len(self.stem_width) * len(self.head_width) * len(self.global_tokens)
        for stage in self.stages:
            per_family = sum(math.prod(len(v) for v in knobs.values()) for knobs in stage.families.values())
            total *= len(stage.depth) * len(stage.width) * per_family
        return total

    # ---- members --------------------------------------------------------------------------------------------
    def _arch(self, resolution: int, stem_width: int, stages: list[StageArch], head_width: int,
              global_tokens: int, name: str | None = None) -> Arch:
        return Arch(resolution, self.in_channels, self.num_classes, stem_width, self.stem_stride, tuple(stages),
                    head_width, name, self.stem_type, self.stem_knob_items, self.head_type, self.head_knob_items,
                    global_tokens)

    def _extreme(self, pick: Any, name: str, family: str | None = None) -> Arch:
        """The member that takes `pick` (min or max) of every size; weight-free knobs take their first choice.

        With `family`, every stage that offers that family uses it.
        """
        stages = []
        for stage in self.stages:
            options = []
            for family_name, knobs in stage.families.items():
                if family in stage.families and family_name != family:
                    continue
                spec = FAMILIES[family_name]
                values = {k: pick(v) if spec.knobs[k].sizes_weights else v[0] for k, v in knobs.items()}
                options.append(StageArch(family_name, pick(stage.depth), pick(stage.width), stage.stride,
                                         tuple(sorted(values.items()))))
            stages.append(pick(options, key=_stage_params))
        return self._arch(pick(self.resolution), pick(self.stem_width), stages, pick(self.head_width),
                          pick(self.global_tokens), name)

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
        stages = []
        for stage in self.stages:
            family = rng.choice(list(stage.families))
            knobs = {k: rng.choice(v) for k, v in stage.families[family].items()}
            stages.append(StageArch(family, rng.choice(stage.depth), rng.choice(stage.width), stage.stride,
                                    tuple(sorted(knobs.items()))))
        return self._arch(rng.choice(self.resolution), rng.choice(self.stem_width), stages,
                          rng.choice(self.head_width), rng.choice(self.global_tokens))

    def contains(self, arch: Arch) -> bool:
        if (arch.timm_model or arch.resolution not in self.resolution or arch.stem_width not in self.stem_width
                or arch.head_width not in self.head_width or arch.in_channels != self.in_channels
                or arch.stem_stride != self.stem_stride or len(arch.stages) != len(self.stages)
                or (arch.stem_type, arch.stem_knob_items) != (self.stem_type, self.stem_knob_items)
                or (arch.head_type, arch.head_knob_items) != (self.head_type, self.head_knob_items)
                or arch.global_tokens not in self.global_tokens):
            return False
        for stage_arch, stage in zip(arch.stages, self.stages):
            knobs = stage.families.get(stage_arch.family)
            if (knobs is None or stage_arch.depth not in stage.depth or stage_arch.width not in stage.width
                    or stage_arch.stride != stage.stride
                    or any(value not in knobs[k] for k, value in stage_arch.knob_items)):
                return False
        return True

    # ---- Optuna ---------------------------------------------------------------------------------------------
    def suggest(self, trial: Any) -> Arch:
        """Ask an Optuna trial for an Arch; a family's knobs are suggested only when that family is chosen."""

        def pick(name: str, choices: tuple[Any, ...]) -> Any:
            if len(choices) == 1:
                return choices[0]
            encoded = {_optuna_choice(c): c for c in choices}  # Optuna storages keep only plain values
            return encoded[trial.suggest_categorical(name, list(encoded))]

        stages = []
        for i, stage in enumerate(self.stages):
            family = pick(f"s{i}.family", tuple(stage.families))
            knobs = {k: pick(f"s{i}.{family}.{k}", v) for k, v in stage.families[family].items()}
            stages.append(StageArch(family, pick(f"s{i}.depth", stage.depth), pick(f"s{i}.width", stage.width),
                                    stage.stride, tuple(sorted(knobs.items()))))
        return self._arch(pick("resolution", self.resolution), pick("stem.width", self.stem_width), stages,
                          pick("head.width", self.head_width), pick("global_tokens", self.global_tokens))

    def to_params(self, arch: Arch) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `arch` (for enqueueing known members)."""
        params: dict[str, Any] = {"resolution": arch.resolution, "stem.width": arch.stem_width,
                                  "head.width": arch.head_width, "global_tokens": arch.global_tokens}
        for i, stage in enumerate(arch.stages):
            params.update({f"s{i}.family": stage.family, f"s{i}.depth": stage.depth, f"s{i}.width": stage.width})
            params.update({f"s{i}.{stage.family}.{k}": _optuna_choice(v) for k, v in stage.knob_items})
        return params


def _optuna_choice(value: Any) -> Any:
    """A knob value as Optuna stores it: list-valued knobs (e.g. RASA dilations) as their JSON text."""
    return json.dumps(plain_value(value)) if isinstance(value, tuple) else value


def _stage_params(stage: StageArch) -> int:
    """Parameter count of one stage built alone (to rank families by size)."""
    module = FAMILIES[stage.family].stage(stage.width, stage.width, stage.depth, stage.stride, stage.knobs)
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
        if not knob.searchable and len(knobs[knob_name]) > 1:
            raise NasError(f"{reader.source}: {path}.{knob_name}: one value per space (the supernet cannot share "
                           f"weights across its values), got {len(knobs[knob_name])}")
    return knobs


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    reader = Reader(source)
    top = reader.mapping(data, "", {"name", "resolution", "in_channels", "num_classes", "stem", "stages", "head",
                                    "global_tokens"})
    stem_type, stem = reader.component(top.get("stem"), "stem", STEMS, {"width", "stride"})
    head_type, head = reader.component(top.get("head"), "head", HEADS, {"width"})
    stages_data = top.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        reader.fail("stages", "a non-empty list of stages", stages_data)
    stages = []
    for i, item in enumerate(stages_data):
        path = f"stages[{i}]"
        stage = reader.mapping(item, path, {"stride", "depth", "width", "families"})
        families_data = reader.mapping(stage.get("families"), f"{path}.families", set(FAMILIES))
        if not families_data:
            reader.fail(f"{path}.families", f"at least one of {', '.join(FAMILIES)}", families_data)
        families = {name: _family_knobs(reader, knobs, f"{path}.families.{name}", name)
                    for name, knobs in families_data.items()}
        stages.append(StageSpace(reader.positive_int(stage.get("stride"), f"{path}.stride"),
                                 _positive_ints(reader, stage.get("depth"), f"{path}.depth"),
                                 _positive_ints(reader, stage.get("width"), f"{path}.width"), families))
    head_widths = (0,)
    if HEADS[head_type].has_width:
        head_widths = _positive_ints(reader, head.get("width"), "head.width")
    tokens = _choices(reader, top.get("global_tokens", 0), "global_tokens",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "integers >= 0")
    space = SearchSpace(str(top.get("name") or Path(source).stem),
                        _positive_ints(reader, top.get("resolution"), "resolution"),
                        reader.positive_int(top.get("in_channels", 3), "in_channels"),
                        reader.positive_int(top.get("num_classes", 1000), "num_classes"),
                        _positive_ints(reader, stem.get("width"), "stem.width"),
                        reader.positive_int(stem.get("stride", 2), "stem.stride"), stages, head_widths, source,
                        stem_type, reader.knobs(stem, "stem", STEMS[stem_type].knobs), head_type,
                        reader.knobs(head, "head", HEADS[head_type].knobs), tokens)
    _check_every_choice_fits(space, reader)
    return space


def _check_every_choice_fits(space: SearchSpace, reader: Reader) -> None:
    """Every width x knob choice of every stage must work at every resolution; so must the stem and head."""
    problem = STEMS[space.stem_type].check(space.stem_stride, dict(space.stem_knob_items))
    problem = problem or next(filter(None, (HEADS[space.head_type].check(width, dict(space.head_knob_items))
                                            for width in space.stages[-1].width)), None)
    if problem:
        raise NasError(f"{reader.source}: stem or head: {problem}")
    for resolution in space.resolution:
        size = math.ceil(resolution / space.stem_stride)
        for i, stage in enumerate(space.stages):
            size = math.ceil(size / stage.stride)
            for family_name, knobs in stage.families.items():
                for width in stage.width:
                    for combo in _knob_combinations(knobs):
                        problem = FAMILIES[family_name].check_stage(width, combo, size)
                        if problem:
                            raise NasError(f"{reader.source}: stages[{i}]: {family_name}: {problem}; make every "
                                           "width choice work with every knob choice at every resolution")


def _knob_combinations(knobs: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for name, values in knobs.items():
        combos = [{**combo, name: value} for combo in combos for value in values]
    return combos


def load_space(path: str | Path) -> SearchSpace:
    return space_from_dict(read_yaml(path), str(path))
