"""`Arch`: the frozen, named, canonical description of one sub-network, the currency of every stage.

An Arch round-trips through YAML (`to_dict` / `Arch.from_dict`) and has a stable `arch_id`: a hash of its
canonical form (every knob named, numbers normalised, the display name left out).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import NasError
from supernet.blocks import FAMILIES


def canonical_number(value: Any) -> Any:
    """2.0 and 2 describe the same network: store integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class StageArch:
    family: str
    depth: int
    width: int
    stride: int
    knob_items: tuple[tuple[str, Any], ...]

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.knob_items)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "depth": self.depth, "width": self.width, "stride": self.stride,
                "knobs": self.knobs}


@dataclass(frozen=True)
class Arch:
    resolution: int
    in_channels: int
    num_classes: int
    stem_width: int
    stem_stride: int
    stages: tuple[StageArch, ...]
    head_width: int
    name: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Canonical, YAML-ready form (the name is kept out: it does not change the network)."""
        return {"resolution": self.resolution, "in_channels": self.in_channels, "num_classes": self.num_classes,
                "stem": {"width": self.stem_width, "stride": self.stem_stride},
                "stages": [stage.to_dict() for stage in self.stages],
                "head": {"width": self.head_width}}

    @property
    def arch_id(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def with_num_classes(self, num_classes: int) -> "Arch":
        return Arch(self.resolution, self.in_channels, num_classes, self.stem_width, self.stem_stride,
                    self.stages, self.head_width, self.name)

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> "Arch":
        """Validate a mapping into an Arch; errors name `source`, the key path and what was expected."""
        reader = Reader(source)
        top = reader.mapping(data, "", {"resolution", "in_channels", "num_classes", "stem", "stages", "head",
                                        "name"})
        stem = reader.mapping(top.get("stem"), "stem", {"width", "stride"})
        head = reader.mapping(top.get("head"), "head", {"width"})
        stages_data = top.get("stages")
        if not isinstance(stages_data, list) or not stages_data:
            reader.fail("stages", "a non-empty list of stages", stages_data)
        stages = tuple(_stage_from_dict(reader, item, f"stages[{i}]") for i, item in enumerate(stages_data))
        name = top.get("name")
        return cls(resolution=reader.positive_int(top.get("resolution"), "resolution"),
                   in_channels=reader.positive_int(top.get("in_channels"), "in_channels"),
                   num_classes=reader.positive_int(top.get("num_classes"), "num_classes"),
                   stem_width=reader.positive_int(stem.get("width"), "stem.width"),
                   stem_stride=reader.positive_int(stem.get("stride"), "stem.stride"),
                   stages=stages, head_width=reader.positive_int(head.get("width"), "head.width"),
                   name=str(name) if name is not None else None)


def _stage_from_dict(reader: "Reader", data: Any, path: str) -> StageArch:
    stage = reader.mapping(data, path, {"family", "depth", "width", "stride", "knobs"})
    family_name = stage.get("family")
    if family_name not in FAMILIES:
        reader.fail(f"{path}.family", f"one of {', '.join(FAMILIES)}", family_name)
    family = FAMILIES[family_name]
    knobs = reader.mapping(stage.get("knobs"), f"{path}.knobs", set(family.knobs))
    values = {}
    for knob_name, knob in family.knobs.items():
        if knob_name not in knobs:
            reader.fail(f"{path}.knobs.{knob_name}", knob.expects, None)
        value = canonical_number(knobs[knob_name])
        if not knob.check(value):
            reader.fail(f"{path}.knobs.{knob_name}", knob.expects, value)
        values[knob_name] = value
    width = reader.positive_int(stage.get("width"), f"{path}.width")
    problem = family.check_stage(width, values)
    if problem:
        raise NasError(f"{reader.source}: {path}: {problem}")
    return StageArch(family_name, reader.positive_int(stage.get("depth"), f"{path}.depth"), width,
                     reader.positive_int(stage.get("stride"), f"{path}.stride"), tuple(sorted(values.items())))


class Reader:
    """Validation helpers whose errors all read `SOURCE: KEY.PATH: expected X, got Y`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str, got: Any) -> None:
        where = f"{self.source}: {path}" if path else self.source
        got_text = "nothing" if got is None else repr(got)
        raise NasError(f"{where}: expected {expected}, got {got_text}")

    def mapping(self, data: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(data, dict):
            self.fail(path, "a mapping", data)
        unknown = sorted(set(data) - allowed)
        if unknown:
            key = f"{path}.{unknown[0]}" if path else str(unknown[0])
            raise NasError(f"{self.source}: {key}: unknown key (expected one of: {', '.join(sorted(allowed))})")
        return data

    def positive_int(self, value: Any, path: str) -> int:
        value = canonical_number(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(path, "a positive integer", value)
        return value


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file safely; a missing or unparsable file is a NasError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise NasError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None


def load_arch(path: str | Path) -> Arch:
    """Load an Arch from an arch YAML, or from a `best.yaml` (whose `arch` key holds it)."""
    data = read_yaml(path)
    if isinstance(data, dict) and "arch" in data:
        data = data["arch"]
    return Arch.from_dict(data, str(path))
