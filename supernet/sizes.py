"""Parameter counts of single parts, built alone on the meta device (shapes without storage, so that a part of
any size is counted without allocating it): how the search space ranks families and heads by size."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from supernet.blocks import FAMILIES, HEADS
from supernet.ops import Ops


def stage_params(family: str, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any]) -> int:
    """Parameters of one static stage of `family`."""
    with torch.device("meta"):
        module = FAMILIES[family].stage(c_in, width, depth, stride, knobs)
    return sum(p.numel() for p in module.parameters())


def head_params(kind: str, c_in: int, width: int, num_classes: int, knobs: Mapping[str, Any]) -> int:
    """Parameters of one static head of type `kind`."""
    with torch.device("meta"):
        module = HEADS[kind].module(c_in, width, num_classes, dict(knobs), Ops(False))
    return sum(p.numel() for p in module.parameters())
