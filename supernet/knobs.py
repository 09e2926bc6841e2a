"""The knob schema: how a part (block family, stem, head) declares the knobs an arch may set on it.

A part's `KNOBS` table names its own knobs, what values each accepts, its default (knobs with a default may be
left out of arch and space files) and whether it sizes weights (then the supernet is built for its largest value).
This module imports nothing of ours, so every part can use it without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

REQUIRED = object()  # marks a knob without a default


@dataclass(frozen=True)
class Knob:
    """One knob: a check on its values, the words for what it expects, whether it sizes weights, its default.

    `per_block` knobs may also take a list with one value per block of the stage. A knob with
    `separate_weights` changes the stage's structure (e.g. the FFN kind): the supernet holds one copy of the
    stage per value offered. A categorical knob whose values need more or fewer weights lists them lightest
    first in `weights_order`: the supernet is built for the heaviest value offered and the lighter ones use part
    of it.
    """

    check: Callable[[Any], bool]
    expects: str
    sizes_weights: bool = False
    default: Any = REQUIRED
    per_block: bool = False
    separate_weights: bool = False
    weights_order: tuple[Any, ...] = ()

    def largest(self, choices: list[Any]) -> Any:
        """The value the supernet is built for: the choice that needs the most weights."""
        if self.weights_order:
            return max(choices, key=self.weights_order.index)
        return max(choices) if self.sizes_weights else choices[0]


def block_knobs(knobs: Mapping[str, Any], table: Mapping[str, Knob], index: int) -> dict[str, Any]:
    """The knobs of block `index` of a stage: per-block values (tuples) resolved to that block's value."""
    return {name: value[index] if isinstance(value, tuple) and table[name].per_block else value
            for name, value in knobs.items()}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: not isinstance(v, bool) and v in values


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


StageCheck = Callable[[int, dict[str, Any], int], "str | None"]
