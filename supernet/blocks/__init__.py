"""Block families, stems and heads: the parts an `Arch` names, each with a table of its knobs.

A family builds one stage of the network, elastic (supernet) or static (sub-network). Its `KNOBS` table names
the family's own knobs, what values each accepts, its default (knobs with a default may be left out of arch
and space files) and whether it sizes weights (then the supernet is built for its largest value). Stems and
heads are registered the same way, as `Component`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

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
    check: Callable[[int, dict[str, Any]], "str | None"] = lambda size, knobs: None


def _families() -> dict[str, Family]:
    from supernet.blocks import fwa, ghost, lightvit, lvt, saevit, transformer

    return {
        "ghost": Family("ghost", ghost.GhostStage, ghost.KNOBS, "GhostNet bottlenecks (LOLViT's CNN part)"),
        "fwa": Family("fwa", fwa.FWAStage, fwa.KNOBS, "LOLViT global-local block with Fast Window Attention",
                      fwa.check_stage),
        "lightvit": Family("lightvit", lightvit.LightViTStage, lightvit.KNOBS,
                           "LightViT local window + global-token attention", lightvit.check_stage, True),
        "csa": Family("csa", lvt.CSAStage, lvt.CSA_KNOBS, "LVT convolutional self-attention", lvt.check_csa_stage,
                      True),
        "rasa": Family("rasa", lvt.RASAStage, lvt.RASA_KNOBS, "LVT recursive atrous self-attention",
                       lvt.check_rasa_stage, True),
        "saa": Family("saa", saevit.SAAStage, saevit.KNOBS, "SAEViT sparsely aggregated attention",
                      saevit.check_stage, True),
        "mhsa": Family("mhsa", transformer.MHSAStage, transformer.MHSA_KNOBS, "plain multi-head self-attention",
                       transformer.check_mhsa_stage, True),
    }


def _stems() -> dict[str, Component]:
    from supernet import macro
    from supernet.blocks import lightvit

    return {
        "conv": Component("conv", macro.ConvStem, macro.CONV_STEM_KNOBS, "conv 3x3 (strided) + BN + activation"),
        "patch": Component("patch", macro.PatchStem, macro.PATCH_STEM_KNOBS,
                           "one strided conv + LayerNorm or BN (LVT's 7x7/4, SAEViT's 4x4/4)"),
        "lightvit": Component("lightvit", lightvit.LightViTStem, {}, "LightViT's stride-8 convolutional stem",
                              check=lambda stride, knobs: None if stride == 8 else
                              f"stride: the lightvit stem has stride 8, got {stride}"),
    }


def _heads() -> dict[str, Component]:
    from supernet import macro
    from supernet.blocks import lightvit, lvt

    return {
        "conv": Component("conv", macro.ConvHead, macro.CONV_HEAD_KNOBS,
                          "1x1 conv + BN + act, global average pool, [linear + act], classifier"),
        "gap": Component("gap", macro.GapHead, {}, "LayerNorm on tokens, global average pool, classifier",
                         has_width=False),
        "lightvit": Component("lightvit", lightvit.LightViTHead, {},
                              "LightViT: LayerNorm, per-token neck, mean over all tokens, classifier"),
        "class_attention": Component("class_attention", lvt.ClassAttentionHead, lvt.CLASS_HEAD_KNOBS,
                                     "LVT: class token + class-attention blocks, head(cls) + aux token head",
                                     has_width=False, check=lambda width, knobs: None if width % knobs["heads"] == 0
                                     else f"knob heads: the final width {width} is not divisible by {knobs['heads']}"),
    }


FAMILIES: dict[str, Family] = _families()
STEMS: dict[str, Component] = _stems()
HEADS: dict[str, Component] = _heads()
