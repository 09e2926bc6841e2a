"""Parameter and MAC counts (fvcore, with handles for the operators it skips)."""

from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pool_macs(inputs: list, outputs: list) -> int:
    from fvcore.nn.jit_handles import get_shape

    return math.prod(get_shape(inputs[0]))  # every input element is read once


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at `input_shape` (batch included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        logging.getLogger("fvcore").setLevel(logging.ERROR)
        device = next(model.parameters()).device
        analysis = FlopCountAnalysis(model.eval(), torch.zeros(input_shape, device=device))
        analysis.set_op_handle(**{"aten::avg_pool2d": _pool_macs, "aten::max_pool2d": _pool_macs})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return int(analysis.total())
