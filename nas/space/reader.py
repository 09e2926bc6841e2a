"""The search-space YAML reader: validates a space file into a `SearchSpace`, naming the key path of any error.

Every combination of knob choices a slot offers must build at every resolution the slot sees; knob choices
that do not fit a width (heads that do not divide it) are offered only with the widths they fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nas.arch import Reader, canonical_value, limit_of, read_yaml, within_limit
from nas.errors import NasError
from nas.space.model import PartSpace, SearchSpace, StageSpace
from supernet.blocks import FAMILIES, HEADS, REQUIRED, STEMS

# A map side divisible by 1..16 and wider than any window: a stage check that fails on it is about the width.
WIDTH_ONLY_MAP = 720720


def _choices(reader: Reader, value: Any, path: str, check: Any, expects: str) -> tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        reader.fail(path, f"a non-empty list of {expects}", value)
    out = []
    limit = limit_of(path)
    for item in values:
        item = canonical_value(item)
        plain = list(item) if isinstance(item, tuple) else item
        if not check(plain) or not within_limit(plain, limit):
            reader.fail(path, f"{expects}, finite and at most {limit} (or a list of them)", item)
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
