"""A search space as Optuna parameters: `suggest` asks a trial for an `Arch`, `to_params` inverts it.

Parameter names stay fixed per choice set (Optuna's categorical distributions cannot change between trials),
and a family's knobs are suggested only when that family is chosen. Trials are duck-typed (anything with
`suggest_categorical`), so this module needs neither torch nor Optuna.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from nas.arch import Arch, StageArch, plain_value
from nas.space import SearchSpace, StageSpace

Pick = Callable[[str, tuple[Any, ...]], Any]


def _member(space: SearchSpace, pick: Pick) -> Arch:
    """The member whose every choice `pick(name, choices)` makes."""

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

    stem = {s.key: s for s in space.stems}[pick("stem", tuple(s.key for s in space.stems))]
    stem_width = pick(f"{stem.key}.width", stem.width)
    stages = space.walk(stem, choose)
    head = {h.key: h for h in space.heads}[pick("head", tuple(h.key for h in space.heads))]
    return space.member(pick("resolution", space.resolution), stem, stem_width, stages, head,
                        pick(f"{head.key}.width", head.width), pick("global_tokens", space.global_tokens))


def suggest(space: SearchSpace, trial: Any) -> Arch:
    """Ask an Optuna trial for a member of `space`."""

    def pick(name: str, choices: tuple[Any, ...]) -> Any:
        if len(choices) == 1:
            return choices[0]
        encoded = {optuna_choice(c): c for c in choices}  # Optuna storages keep only plain values
        return encoded[trial.suggest_categorical(name, list(encoded))]

    return _member(space, pick)


def to_params(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """The Optuna parameters that make `suggest` return `arch` (for enqueueing known members)."""
    placement = space.placement(arch)
    if placement is None:
        raise ValueError(f"arch {arch.arch_id} is not a member of space {space.name}")
    by_slot = dict(zip(placement.slots, arch.stages))
    fixed = {"stem": placement.stem, f"{placement.stem}.width": arch.stem_width, "head": placement.head,
             f"{placement.head}.width": arch.head_width, "resolution": arch.resolution,
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
            params[name] = optuna_choice(value)
        return value

    _member(space, pick)
    return params


def optuna_choice(value: Any) -> Any:
    """A knob value as Optuna stores it: list-valued knobs (e.g. RASA dilations) as their JSON text."""
    return json.dumps(plain_value(value)) if isinstance(value, tuple) else value
