"""The registries of the model library: block families, stems, heads, FFN kinds, transitions, drop-path blocks.

Each part registers itself in the module that defines it, when that module is imported (as timm's
`register_model` does): a stage class with `@register_family(...)`, a stem or head module with
`@register_stem(...)` / `@register_head(...)`, an FFN or a transition with `@register_ffn(kind)` /
`@register_transition(kind)`, a residual block that takes stochastic depth with `@register_drop_path_block`.
`supernet.blocks` imports every part module: import the registries from there to find them filled. A registry
keeps registration order (error messages list names in it, spaces sample in it); registering a name twice raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from torch import nn

from supernet.knobs import Knob, StageCheck

ModuleClass = TypeVar("ModuleClass", bound=type[nn.Module])
ComponentCheck = Callable[[int, dict[str, Any]], "str | None"]


def no_problem(size: int, knobs: dict[str, Any]) -> str | None:
    """The check of a stem or head that works with any knobs."""
    return None


class Family:
    """A block family as the space and the network see it.

    `check_stage(width, knobs, map_size)` says why a stage of that width and knobs cannot work on a
    map_size x map_size feature map (after the stage's stride), or returns None. `uses_tokens` families take
    and return LightViT-style global tokens: `forward(x, tokens) -> (x, tokens)`; the others `forward(x)`.
    """

    def __init__(self, name: str, stage: type[nn.Module], knobs: dict[str, Knob], summary: str,
                 check_stage: StageCheck | None = None, uses_tokens: bool = False) -> None:
        self.name, self.stage, self.knobs, self.summary = name, stage, knobs, summary
        self.check_stage = check_stage or (lambda width, knobs, map_size: None)
        self.uses_tokens = uses_tokens


@dataclass(frozen=True)
class Component:
    """A stem or head type: its module class, its knobs, and whether it has a width of its own.

    `check(size, knobs)` says why the knobs cannot work, or returns None; `size` is the stem's stride, or the
    width the head receives.
    """

    name: str
    module: type[nn.Module]
    knobs: dict[str, Knob] = field(default_factory=dict)
    summary: str = ""
    has_width: bool = True
    check: ComponentCheck = no_problem


FAMILIES: dict[str, Family] = {}
STEMS: dict[str, Component] = {}
HEADS: dict[str, Component] = {}
FFNS: dict[str, type[nn.Module]] = {}  # the `ffn` knob's value -> the FFN class a transformer block builds
TRANSITIONS: dict[str, type[nn.Module]] = {}  # the `downsample` knob's value -> a transformer stage's transition
DROP_PATH_BLOCKS: list[type[nn.Module]] = []  # residual blocks with a `drop_path` rate, set by set_drop_path


def _add(registry: dict[str, Any], what: str, name: str, item: Any) -> None:
    if name in registry:
        raise ValueError(f"{what} {name!r} is registered twice")
    registry[name] = item


def register_family(name: str, knobs: dict[str, Knob], summary: str, check_stage: StageCheck | None = None,
                    uses_tokens: bool = False) -> Callable[[ModuleClass], ModuleClass]:
    """Register the decorated stage class as block family `name` (see `Family`)."""
    def register(stage: ModuleClass) -> ModuleClass:
        _add(FAMILIES, "block family", name, Family(name, stage, knobs, summary, check_stage, uses_tokens))
        return stage
    return register


def register_stem(name: str, knobs: dict[str, Knob], summary: str, has_width: bool = True,
                  check: ComponentCheck = no_problem) -> Callable[[ModuleClass], ModuleClass]:
    """Register the decorated module class as stem type `name` (see `Component`)."""
    def register(module: ModuleClass) -> ModuleClass:
        _add(STEMS, "stem", name, Component(name, module, knobs, summary, has_width, check))
        return module
    return register


def register_head(name: str, knobs: dict[str, Knob], summary: str, has_width: bool = True,
                  check: ComponentCheck = no_problem) -> Callable[[ModuleClass], ModuleClass]:
    """Register the decorated module class as head type `name` (see `Component`)."""
    def register(module: ModuleClass) -> ModuleClass:
        _add(HEADS, "head", name, Component(name, module, knobs, summary, has_width, check))
        return module
    return register


def register_ffn(kind: str) -> Callable[[ModuleClass], ModuleClass]:
    """Register the decorated class as the FFN a transformer block builds for `ffn: kind`."""
    def register(module: ModuleClass) -> ModuleClass:
        _add(FFNS, "FFN kind", kind, module)
        return module
    return register


def register_transition(kind: str) -> Callable[[ModuleClass], ModuleClass]:
    """Register the decorated class as the transition a transformer stage builds for `downsample: kind`."""
    def register(module: ModuleClass) -> ModuleClass:
        _add(TRANSITIONS, "transition", kind, module)
        return module
    return register


def register_drop_path_block(block: ModuleClass) -> ModuleClass:
    """Register the decorated residual block class: its `drop_path` rate is set by `network.set_drop_path`."""
    if block in DROP_PATH_BLOCKS:
        raise ValueError(f"drop-path block {block.__name__} is registered twice")
    DROP_PATH_BLOCKS.append(block)
    return block
