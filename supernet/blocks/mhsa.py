"""Plain multi-head self-attention (the `mhsa` family): the transformer frame with its default mixer, a baseline.

Its own file, not part of transformer.py, because every attention family imports that frame: registering here,
after them, keeps mhsa last in FAMILIES.
"""

from __future__ import annotations

from typing import Any, Mapping

from supernet.blocks.transformer import MHSA, TransformerStage, check_heads, transformer_knobs
from supernet.registry import register_family

KNOBS = transformer_knobs("mlp", "conv")


def check_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    return check_heads(width, knobs)


@register_family("mhsa", KNOBS, "plain multi-head self-attention", check_stage, uses_tokens=True)
class MHSAStage(TransformerStage):
    MIXER = MHSA
