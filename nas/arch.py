"""`Arch`: the frozen, named, canonical description of one sub-network, the currency of every stage.

An Arch round-trips through YAML (`to_dict` / `Arch.from_dict`) and has a stable `arch_id`: a hash of its
canonical form (every knob named, numbers normalised, the display name left out).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import NasError, first_line
from supernet.blocks import FAMILIES, HEADS, REQUIRED, STEMS

MAX_YAML_BYTES = 1_000_000  # an arch, space, recipe or config is a few kilobytes


def canonical_number(value: Any) -> Any:
    """2.0 and 2 describe the same network: store integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_value(value: Any) -> Any:
    """A knob value in its canonical, hashable form: numbers normalised, lists as tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(canonical_value(item) for item in value)
    return canonical_number(value)


def plain_value(value: Any) -> Any:
    """The YAML form of a canonical knob value (tuples back to lists)."""
    return [plain_value(item) for item in value] if isinstance(value, tuple) else value


KnobItems = tuple[tuple[str, Any], ...]


def plain_knobs(items: KnobItems) -> dict[str, Any]:
    return {name: plain_value(value) for name, value in items}


@dataclass(frozen=True)
class StageArch:
    family: str
    depth: int
    width: int
    stride: int
    knob_items: KnobItems

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.knob_items)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "depth": self.depth, "width": self.width, "stride": self.stride,
                "knobs": plain_knobs(self.knob_items)}


@dataclass(frozen=True)
class Arch:
    """One network. `timm_model` names a timm model instead (a baseline); it then has no stages of ours."""

    resolution: int
    in_channels: int
    num_classes: int
    stem_width: int
    stem_stride: int
    stages: tuple[StageArch, ...]
    head_width: int
    name: str | None = field(default=None, compare=False)
    stem_type: str = "conv"
    stem_knob_items: KnobItems = (("act", "relu"),)
    head_type: str = "conv"
    head_knob_items: KnobItems = (("act", "relu"), ("neck", 0))
    global_tokens: int = 0
    timm_model: str | None = None

    @property
    def stem_knobs(self) -> dict[str, Any]:
        return dict(self.stem_knob_items)

    @property
    def head_knobs(self) -> dict[str, Any]:
        return dict(self.head_knob_items)

    def to_dict(self) -> dict[str, Any]:
        """Canonical, YAML-ready form (the name is kept out: it does not change the network)."""
        if self.timm_model:
            return {"timm": self.timm_model, "resolution": self.resolution, "in_channels": self.in_channels,
                    "num_classes": self.num_classes}
        data = {"resolution": self.resolution, "in_channels": self.in_channels, "num_classes": self.num_classes,
                "stem": {"type": self.stem_type, "width": self.stem_width, "stride": self.stem_stride,
                         **plain_knobs(self.stem_knob_items)},
                "stages": [stage.to_dict() for stage in self.stages],
                "head": {"type": self.head_type, "width": self.head_width, **plain_knobs(self.head_knob_items)}}
        if self.global_tokens:
            data["global_tokens"] = self.global_tokens
        return data

    @property
    def arch_id(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """The name when it has one, else the id."""
        return self.name or self.arch_id

    def with_num_classes(self, num_classes: int) -> "Arch":
        return replace(self, num_classes=num_classes)

    def with_input(self, resolution: int, in_channels: int) -> "Arch":
        return replace(self, resolution=resolution, in_channels=in_channels)

    def at_resolution(self, resolution: Any, source: str) -> "Arch":
        """This arch at another input size, validated again (a window may not fit the smaller maps)."""
        data = {**self.to_dict(), "resolution": resolution}
        if self.name is not None:
            data["name"] = self.name
        return Arch.from_dict(data, source)

    def map_sizes(self) -> list[int]:
        """The feature-map side after each stage at this resolution (ceil division, as padding does)."""
        size, sizes = math.ceil(self.resolution / self.stem_stride), []
        for stage in self.stages:
            size = math.ceil(size / stage.stride)
            sizes.append(size)
        return sizes

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> "Arch":
        """Validate a mapping into an Arch; errors name `source`, the key path and what was expected."""
        reader = Reader(source)
        if isinstance(data, dict) and "timm" in data:
            return _timm_arch_from_dict(reader, data)
        top = reader.mapping(data, "", {"resolution", "in_channels", "num_classes", "stem", "stages", "head",
                                        "name", "global_tokens"})
        stem_type, stem = reader.component(top.get("stem"), "stem", STEMS, {"width", "stride"})
        head_type, head = reader.component(top.get("head"), "head", HEADS, {"width"})
        stages_data = top.get("stages")
        if not isinstance(stages_data, list) or not stages_data:
            reader.fail("stages", "a non-empty list of stages", stages_data)
        stages = tuple(_stage_from_dict(reader, item, f"stages[{i}]") for i, item in enumerate(stages_data))
        head_width = 0
        if HEADS[head_type].has_width:
            head_width = reader.positive_int(head.get("width"), "head.width")
        name = top.get("name")
        arch = cls(resolution=reader.positive_int(top.get("resolution"), "resolution"),
                   in_channels=reader.positive_int(top.get("in_channels"), "in_channels"),
                   num_classes=reader.positive_int(top.get("num_classes"), "num_classes"),
                   stem_width=reader.positive_int(stem.get("width"), "stem.width"),
                   stem_stride=reader.positive_int(stem.get("stride"), "stem.stride"),
                   stages=stages, head_width=head_width, name=str(name) if name is not None else None,
                   stem_type=stem_type, stem_knob_items=reader.knobs(stem, "stem", STEMS[stem_type].knobs),
                   head_type=head_type, head_knob_items=reader.knobs(head, "head", HEADS[head_type].knobs),
                   global_tokens=reader.count(top.get("global_tokens", 0), "global_tokens"))
        check_fits(arch, reader)
        return arch


def check_fits(arch: Arch, reader: "Reader") -> None:
    """Reject knobs that cannot work (at the arch's resolution), naming the part and the knob."""
    for path, problem in (("stem", STEMS[arch.stem_type].check(arch.stem_stride, arch.stem_knobs)),
                          ("head", HEADS[arch.head_type].check(arch.stages[-1].width, arch.head_knobs))):
        if problem:
            raise NasError(f"{reader.source}: {path} ({getattr(arch, path + '_type')}): {problem}")
    for i, (stage, size) in enumerate(zip(arch.stages, arch.map_sizes())):
        problem = FAMILIES[stage.family].check_stage(stage.width, stage.knobs, size)
        if problem:
            raise NasError(f"{reader.source}: stages[{i}] ({stage.family}, {size}x{size} map at resolution "
                           f"{arch.resolution}): {problem}")


def _timm_arch_from_dict(reader: "Reader", data: dict) -> Arch:
    top = reader.mapping(data, "", {"timm", "resolution", "in_channels", "num_classes", "name"})
    return timm_arch(str(top["timm"]), top.get("resolution"), top.get("in_channels", 3),
                     top.get("num_classes", 1000), reader)


def timm_arch(model: str, resolution: int | None = None, in_channels: int = 3, num_classes: int = 1000,
              reader: "Reader | None" = None) -> Arch:
    """A timm model as a baseline Arch; its resolution defaults to the model's own input size."""
    import timm

    reader = reader or Reader(f"timm:{model}")
    if model not in timm.list_models():
        raise NasError(f"timm:{model}: not a timm model name (see `timm.list_models()`), e.g. timm:mobilevit_xs")
    if resolution is None:
        config = timm.get_pretrained_cfg(model)
        resolution = config.input_size[-1] if config else 224
    return Arch(reader.positive_int(resolution, "resolution"), reader.positive_int(in_channels, "in_channels"),
                reader.positive_int(num_classes, "num_classes"), 0, 1, (), 0, name=f"timm:{model}",
                timm_model=model)


def _stage_from_dict(reader: "Reader", data: Any, path: str) -> StageArch:
    stage = reader.mapping(data, path, {"family", "depth", "width", "stride", "knobs"})
    family_name = stage.get("family")
    if not isinstance(family_name, str) or family_name not in FAMILIES:
        reader.fail(f"{path}.family", f"one of {', '.join(FAMILIES)}", family_name)
    family = FAMILIES[family_name]
    depth = reader.positive_int(stage.get("depth"), f"{path}.depth")
    knobs = reader.mapping(stage.get("knobs", {}), f"{path}.knobs", set(family.knobs))
    values = reader.knobs(knobs, f"{path}.knobs", family.knobs, depth)
    return StageArch(family_name, depth, reader.positive_int(stage.get("width"), f"{path}.width"),
                     reader.positive_int(stage.get("stride"), f"{path}.stride"), values)


# Upper bounds of the whole numbers in an arch or space, by key: far above any lightweight backbone, low enough
# that a typo is refused before it reaches the allocator. Knob numbers (kernels, heads, ratios) get KNOB_LIMIT.
LIMITS = {"resolution": 4096, "in_channels": 16, "num_classes": 100_000, "width": 8192, "stride": 8, "depth": 64,
          "global_tokens": 256}
KNOB_LIMIT = 8192  # a knob may be a width (a head's neck)


def limit_of(path: str) -> int:
    """The upper bound of the number at `path` (e.g. stages[1].width): LIMITS by its last key, else KNOB_LIMIT."""
    return LIMITS.get(re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1]), KNOB_LIMIT)


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
        unknown = sorted(set(data) - allowed, key=str)
        if unknown:
            key = f"{path}.{unknown[0]}" if path else str(unknown[0])
            raise NasError(f"{self.source}: {key}: unknown key (expected one of: {', '.join(sorted(allowed))})")
        return data

    def component(self, data: Any, path: str, registry: Mapping[str, Any], sizes: set[str]
                  ) -> tuple[str, Mapping[str, Any]]:
        """A stem or head mapping: its `type` (default conv) and the rest, checked against that type's knobs."""
        if not isinstance(data, dict):
            self.fail(path, "a mapping", data)
        kind = data.get("type", "conv")
        if kind not in registry:
            self.fail(f"{path}.type", f"one of {', '.join(registry)}", kind)
        self.mapping(data, path, {"type"} | sizes | set(registry[kind].knobs))
        return kind, data

    def knobs(self, data: Mapping[str, Any], path: str, table: Mapping[str, Any], depth: int = 1) -> KnobItems:
        """Every knob of `table` from `data` (defaults filled in), checked, in canonical form."""
        values = {}
        for name, knob in table.items():
            if name not in data:
                if knob.default is REQUIRED:
                    self.fail(f"{path}.{name}", knob.expects, None)
                values[name] = canonical_value(knob.default)
                continue
            value = canonical_value(data[name])
            items = value if knob.per_block and isinstance(value, tuple) else (value,)
            if knob.per_block and isinstance(value, tuple) and len(value) != depth:
                self.fail(f"{path}.{name}", f"one value, or a list of {depth} (one per block)", plain_value(value))
            for item in items:
                if not knob.check(plain_value(item)) or not within_limit(plain_value(item), KNOB_LIMIT):
                    self.fail(f"{path}.{name}", f"{knob.expects}, finite and at most {KNOB_LIMIT}", plain_value(item))
            values[name] = value
        return tuple(sorted(values.items()))

    def count(self, value: Any, path: str) -> int:
        value = canonical_number(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit_of(path):
            self.fail(path, f"an integer >= 0 (at most {limit_of(path)})", value)
        return value

    def positive_int(self, value: Any, path: str) -> int:
        value = canonical_number(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit_of(path):
            self.fail(path, f"a positive integer (at most {limit_of(path)})", value)
        return value


def within_limit(value: Any, limit: float) -> bool:
    """Every number in `value` (a number, or a list of them) finite and at most `limit` in size; others pass."""
    if isinstance(value, (list, tuple)):
        return all(within_limit(item, limit) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return abs(value) <= limit if isinstance(value, int) else math.isfinite(value) and abs(value) <= limit


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file safely; a missing or unparsable file is a NasError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such file")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise NasError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_YAML_BYTES:,} a nas YAML file may have")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NasError(f"{path}: not UTF-8 text (binary, or another encoding); save it as UTF-8 YAML") from None
    except OSError as error:
        raise NasError(f"{path}: cannot be read ({first_line(error)})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise NasError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise NasError(f"{path}: nested too deeply to be a nas YAML file") from None


def load_arch(path: str | Path) -> Arch:
    """Load an Arch from an arch YAML, a `best.yaml` (whose `arch` key holds it) or `timm:MODEL` (a baseline)."""
    if str(path).startswith("timm:"):
        return timm_arch(str(path)[len("timm:"):])
    data = read_yaml(path)
    if isinstance(data, dict) and "arch" in data:
        data = data["arch"]
    return Arch.from_dict(data, str(path))
