"""`SearchSpace`: a validated search-space YAML, which samples, enumerates and suggests `Arch`es.

Space file layout (every choice is a list, or one value for a fixed choice):

    name: cpu_small
    resolution: [32]
    in_channels: 1              # images are converted to this many channels
    num_classes: 10             # replaced by the data's class count at search time
    stem: {width: [16], stride: 2}
    stages:
      - stride: 2
        depth: [1, 2]
        width: [24, 32]
        families:               # block family -> its knobs' choices
          ghost: {expansion: [2, 3], kernel: [3, 5], se: [0, 0.25]}
          fwa: {heads: [1, 2], mlp_ratio: [1, 2], kv_rule: [grid], kv_size: [2, 4],
                aggregator: [avg], normaliser: [softmax, relu]}
    head: {width: [64, 128]}
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import Arch, Reader, StageArch, canonical_number, read_yaml
from nas.errors import NasError
from supernet.blocks import FAMILIES


@dataclass(frozen=True)
class StageSpace:
    stride: int
    depth: tuple[int, ...]
    width: tuple[int, ...]
    families: dict[str, dict[str, tuple[Any, ...]]]  # family -> knob -> choices


class SearchSpace:
    def __init__(self, name: str, resolution: tuple[int, ...], in_channels: int, num_classes: int,
                 stem_width: tuple[int, ...], stem_stride: int, stages: list[StageSpace],
                 head_width: tuple[int, ...], source: str = "space") -> None:
        self.name, self.resolution, self.in_channels, self.num_classes = name, resolution, in_channels, num_classes
        self.stem_width, self.stem_stride, self.stages, self.head_width = stem_width, stem_stride, stages, head_width
        self.source = source

    # ---- identity -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resolution": list(self.resolution), "in_channels": self.in_channels,
                "num_classes": self.num_classes, "stem": {"width": list(self.stem_width), "stride": self.stem_stride},
                "stages": [{"stride": s.stride, "depth": list(s.depth), "width": list(s.width),
                            "families": {f: {k: list(v) for k, v in knobs.items()} for f, knobs in s.families.items()}}
                           for s in self.stages],
                "head": {"width": list(self.head_width)}}

    @property
    def space_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_num_classes(self, num_classes: int) -> "SearchSpace":
        return SearchSpace(self.name, self.resolution, self.in_channels, num_classes, self.stem_width,
                           self.stem_stride, self.stages, self.head_width, self.source)

    @property
    def cardinality(self) -> int:
        """Number of distinct architectures (stage depths and family knobs counted per stage)."""
        total = len(self.resolution) * len(self.stem_width) * len(self.head_width)
        for stage in self.stages:
            per_family = sum(math.prod(len(v) for v in knobs.values()) for knobs in stage.families.values())
            total *= len(stage.depth) * len(stage.width) * per_family
        return total

    # ---- members --------------------------------------------------------------------------------------------
    def _arch(self, resolution: int, stem_width: int, stages: list[StageArch], head_width: int,
              name: str | None = None) -> Arch:
        return Arch(resolution, self.in_channels, self.num_classes, stem_width, self.stem_stride, tuple(stages),
                    head_width, name)

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
        return self._arch(pick(self.resolution), pick(self.stem_width), stages, pick(self.head_width), name)

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
                          rng.choice(self.head_width))

    def contains(self, arch: Arch) -> bool:
        if (arch.resolution not in self.resolution or arch.stem_width not in self.stem_width
                or arch.head_width not in self.head_width or arch.in_channels != self.in_channels
                or arch.stem_stride != self.stem_stride or len(arch.stages) != len(self.stages)):
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
            return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))

        stages = []
        for i, stage in enumerate(self.stages):
            family = pick(f"s{i}.family", tuple(stage.families))
            knobs = {k: pick(f"s{i}.{family}.{k}", v) for k, v in stage.families[family].items()}
            stages.append(StageArch(family, pick(f"s{i}.depth", stage.depth), pick(f"s{i}.width", stage.width),
                                    stage.stride, tuple(sorted(knobs.items()))))
        return self._arch(pick("resolution", self.resolution), pick("stem.width", self.stem_width), stages,
                          pick("head.width", self.head_width))

    def to_params(self, arch: Arch) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `arch` (for enqueueing known members)."""
        params: dict[str, Any] = {"resolution": arch.resolution, "stem.width": arch.stem_width,
                                  "head.width": arch.head_width}
        for i, stage in enumerate(arch.stages):
            params.update({f"s{i}.family": stage.family, f"s{i}.depth": stage.depth, f"s{i}.width": stage.width})
            params.update({f"s{i}.{stage.family}.{k}": v for k, v in stage.knob_items})
        return params


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
        item = canonical_number(item)
        if not check(item):
            reader.fail(path, f"{expects} (or a list of them)", item)
        if item not in out:
            out.append(item)
    return tuple(out)


def _positive_ints(reader: Reader, value: Any, path: str) -> tuple[int, ...]:
    return _choices(reader, value, path, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                    "positive integers")


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    reader = Reader(source)
    top = reader.mapping(data, "", {"name", "resolution", "in_channels", "num_classes", "stem", "stages", "head"})
    stem = reader.mapping(top.get("stem"), "stem", {"width", "stride"})
    head = reader.mapping(top.get("head"), "head", {"width"})
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
        widths = _positive_ints(reader, stage.get("width"), f"{path}.width")
        families = {}
        for family_name, knobs_data in families_data.items():
            family = FAMILIES[family_name]
            knobs_path = f"{path}.families.{family_name}"
            knobs_data = reader.mapping(knobs_data if knobs_data is not None else {}, knobs_path, set(family.knobs))
            knobs = {}
            for knob_name, knob in family.knobs.items():
                if knob_name not in knobs_data:
                    reader.fail(f"{knobs_path}.{knob_name}", knob.expects, None)
                knobs[knob_name] = _choices(reader, knobs_data[knob_name], f"{knobs_path}.{knob_name}", knob.check,
                                            knob.expects)
            for width in widths:
                for combo in _knob_combinations(knobs):
                    problem = family.check_stage(width, combo)
                    if problem:
                        raise NasError(f"{source}: {path}: {family_name}: {problem}; "
                                       "make every width choice work with every knob choice")
            families[family_name] = knobs
        stages.append(StageSpace(reader.positive_int(stage.get("stride"), f"{path}.stride"),
                                 _positive_ints(reader, stage.get("depth"), f"{path}.depth"), widths, families))
    name = top.get("name") or Path(source).stem
    return SearchSpace(str(name), _positive_ints(reader, top.get("resolution"), "resolution"),
                       reader.positive_int(top.get("in_channels", 3), "in_channels"),
                       reader.positive_int(top.get("num_classes", 1000), "num_classes"),
                       _positive_ints(reader, stem.get("width"), "stem.width"),
                       reader.positive_int(stem.get("stride", 2), "stem.stride"), stages,
                       _positive_ints(reader, head.get("width"), "head.width"), source)


def _knob_combinations(knobs: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for name, values in knobs.items():
        combos = [{**combo, name: value} for combo in combos for value in values]
    return combos


def load_space(path: str | Path) -> SearchSpace:
    return space_from_dict(read_yaml(path), str(path))
