"""Block families: each family builds one stage of the network, elastic (supernet) or static (sub-network).

A family module defines a `Stage` class and a `KNOBS` table. The table names the family's own knobs, what
values each accepts, and whether it changes parameter shapes (then the supernet is built for its largest value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class Knob:
    """One family knob: a check on its values, the words for what it expects, and whether it sizes weights."""

    check: Callable[[Any], bool]
    expects: str
    sizes_weights: bool = False

    def largest(self, choices: list[Any]) -> Any:
        """The value the supernet is built for: the largest choice of a weight-sizing knob."""
        return max(choices) if self.sizes_weights else choices[0]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Family:
    """A block family as the space and the network see it."""

    def __init__(self, name: str, stage: type[nn.Module], knobs: dict[str, Knob], summary: str,
                 check_stage: Callable[[int, dict[str, Any]], str | None] | None = None) -> None:
        self.name, self.stage, self.knobs, self.summary = name, stage, knobs, summary
        self.check_stage = check_stage or (lambda width, knobs: None)


def _registry() -> dict[str, Family]:
    from supernet.blocks import fwa, ghost

    return {
        "ghost": Family("ghost", ghost.GhostStage, ghost.KNOBS, "GhostNet bottlenecks (LOLViT's CNN part)"),
        "fwa": Family("fwa", fwa.FWAStage, fwa.KNOBS, "LOLViT Fast Window Attention blocks",
                      fwa.check_stage),
    }


FAMILIES: dict[str, Family] = _registry()
