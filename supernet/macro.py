"""Stems and heads: the network's ends, chosen per arch by `stem.type` and `head.type` (the names they register).

Each takes its knobs as a mapping and builds itself through `Ops`, like the block families, so the supernet
can make it elastic. Heads take the final map and LightViT-style global tokens (None when the arch has none).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.knobs import Knob, is_int, one_of
from supernet.ops import Ops, set_out
from supernet.registry import register_head, register_stem

ACTIVATIONS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "hswish": F.hardswish}


def activation_knob(default: str) -> Knob:
    return Knob(one_of(*ACTIVATIONS), " or ".join(ACTIVATIONS), default=default)


CONV_STEM_KNOBS = {"act": activation_knob("relu")}
PATCH_STEM_KNOBS = {
    "kernel": Knob(lambda v: is_int(v) and v >= 1, "a conv kernel size >= 1 (= stride: non-overlapping patches)"),
    "norm": Knob(one_of("ln", "bn"), "ln or bn", default="ln"),
}
CONV_HEAD_KNOBS = {
    "act": activation_knob("relu"),
    "neck": Knob(lambda v: is_int(v) and v >= 0, "an integer >= 0 (width of a linear layer after pooling; 0: none)",
                 True, default=0),
}


@register_stem("conv", CONV_STEM_KNOBS, "conv 3x3 (strided) + BN + activation")
class ConvStem(nn.Module):
    """conv 3x3 (strided) -> BN -> activation (GhostNet, MobileViT)."""

    def __init__(self, c_in: int, width: int, stride: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.conv = ops.conv(c_in, width, 3, stride)
        self.bn = ops.bn(width)
        self.act = ACTIVATIONS[knobs["act"]]

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


@register_stem("patch", PATCH_STEM_KNOBS, "one strided conv + LayerNorm or BN (LVT's 7x7/4, SAEViT's 4x4/4)")
class PatchStem(nn.Module):
    """One strided conv (with bias) then a norm: LVT's overlapping 7x7/4 + LN, SAEViT's 4x4/4 patches + BN."""

    def __init__(self, c_in: int, width: int, stride: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        kernel = knobs["kernel"]
        self.pad_to = stride if kernel <= stride else 1  # non-overlapping patches need a size divisible by stride
        self.conv = ops.conv(c_in, width, kernel, stride, bias=True, padding=kernel // 2 if kernel > stride else 0)
        self.norm_kind = knobs["norm"]
        self.norm = ops.ln(width) if self.norm_kind == "ln" else ops.bn(width)

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(pad_to_multiple(x, self.pad_to))
        if self.norm_kind == "bn":
            return self.norm(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of an NCHW map so both sides are multiples of `multiple`."""
    pad_h, pad_w = -x.shape[2] % multiple, -x.shape[3] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


@register_head("conv", CONV_HEAD_KNOBS, "1x1 conv + BN + act, global average pool, [linear + act], classifier")
class ConvHead(nn.Module):
    """1x1 conv -> BN -> act, global average pool, [linear -> act], classifier (GhostNet, MobileViT)."""

    def __init__(self, c_in: int, width: int, num_classes: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.conv = ops.conv(c_in, width)
        self.bn = ops.bn(width)
        self.act = ACTIVATIONS[knobs["act"]]
        neck = knobs["neck"]
        self.neck = ops.linear(width, neck) if neck else None
        self.classifier = ops.linear(neck or width, num_classes)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.conv, width)
        if self.neck is not None:
            set_out(self.neck, knobs["neck"])

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x))).mean((2, 3))
        if self.neck is not None:
            x = self.act(self.neck(x))
        return self.classifier(x)


@register_head("gap", {}, "LayerNorm on tokens, global average pool, classifier", has_width=False)
class GapHead(nn.Module):
    """LayerNorm on every token, global average pool, classifier (LVT's plain backbone head)."""

    def __init__(self, c_in: int, width: int, num_classes: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.norm = ops.ln(c_in)
        self.classifier = ops.linear(c_in, num_classes)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        pass

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.norm(x.flatten(2).transpose(1, 2)).mean(1))
