"""Elastic primitives: each owns the largest weight and slices it for the active sub-network.

An elastic op subclasses the plain torch module it generalises and keeps the same parameter names, so a
static module built at the active sizes can take its weights with `copy_sliced_state` (channel dimensions
take the first n entries, kernel dimensions take the centre). Input channels are read from the input tensor;
only what cannot be read from the input (output width, kernel size) is set through `active_*` attributes,
which `set_active` on the owning block always sets in full.

A dimension made of equal parts (a fused q/k/v projection's outputs, a concatenation's inputs) is sliced part by
part (`out_parts`, `in_parts`): the first n/parts entries of each part. Taking its first n entries instead would
give a narrower member's k the rows that are q in a wider one, so members of different widths would train the
same weights for different roles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round `value` to the nearest multiple of `divisor`, never dropping more than 10 % (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def centre_kernel(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre kernel x kernel of a conv weight: how a smaller kernel shares a larger one's weights."""
    start = (weight.shape[-1] - kernel) // 2
    return weight[:, :, start:start + kernel, start:start + kernel]


def slice_parts(tensor: torch.Tensor, dim: int, size: int, parts: int = 1) -> torch.Tensor:
    """The first `size` entries of `tensor` along `dim`, or, for a dimension made of `parts` equal parts, the first
    size / parts entries of each part."""
    if parts == 1:
        return tensor.narrow(dim, 0, size)
    return tensor.unflatten(dim, (parts, -1)).narrow(dim + 1, 0, size // parts).flatten(dim, dim + 1)


class ElasticConv2d(nn.Conv2d):
    """Conv2d whose output channels and (odd, centred) kernel can shrink; depthwise (with a channel multiplier)
    when groups == in_channels. `in_parts` > 1: its input is a concatenation of that many equal parts."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False, padding: int | None = None, in_parts: int = 1) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.depthwise = groups == in_channels and groups > 1
        self.multiplier = out_channels // in_channels  # depthwise: outputs per input channel
        self.active_out = out_channels
        self.active_kernel = kernel_size
        self.in_parts = in_parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in = x.shape[1]
        if self.depthwise:
            weight, groups, c_out = self.weight[:c_in * self.multiplier], c_in, c_in * self.multiplier
        else:
            weight = slice_parts(self.weight[: self.active_out], 1, c_in, self.in_parts)
            groups, c_out = 1, self.active_out
        k = self.active_kernel
        start = (self.kernel_size[0] - k) // 2  # a smaller kernel is the centre crop, with less padding
        weight = centre_kernel(weight, k)
        bias = self.bias[:c_out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding[0] - start, 1, groups)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the first C channels of its buffers, C read from the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if self.momentum is None:  # cumulative average, used by BN recalibration
            momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training or not self.track_running_stats, momentum, self.eps)


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension whose affine weights are sliced to the input's width (made of `parts`
    equal parts when it normalises a concatenation)."""

    def __init__(self, channels: int, eps: float = 1e-5, parts: int = 1) -> None:
        super().__init__(channels, eps)
        self.out_parts = parts  # of its weight's one dimension, named as copy_sliced_state reads dimension 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        if c == self.normalized_shape[0]:
            return super().forward(x)
        return F.layer_norm(x, (c,), slice_parts(self.weight, 0, c, self.out_parts),
                            slice_parts(self.bias, 0, c, self.out_parts), self.eps)


class ElasticLinear(nn.Linear):
    """Linear whose input features are read from the input and whose outputs can shrink; `out_parts` > 1 for a
    fused projection (q, k, v side by side), `in_parts` > 1 for an input that is a concatenation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, in_parts: int = 1,
                 out_parts: int = 1) -> None:
        super().__init__(in_features, out_features, bias)
        self.active_out = out_features
        self.in_parts, self.out_parts = in_parts, out_parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = slice_parts(slice_parts(self.weight, 0, self.active_out, self.out_parts), 1, x.shape[-1],
                             self.in_parts)
        bias = slice_parts(self.bias, 0, self.active_out, self.out_parts) if self.bias is not None else None
        return F.linear(x, weight, bias)


class Ops:
    """The constructors a block builds itself from: plain torch modules, or their elastic versions."""

    def __init__(self, elastic: bool) -> None:
        self.elastic = elastic

    def conv(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             bias: bool = False, padding: int | None = None, in_parts: int = 1) -> nn.Conv2d:
        """A conv with `kernel // 2` padding unless `padding` says otherwise (e.g. 0 for a patchify conv);
        `in_parts` > 1 where its input concatenates that many equal parts."""
        if self.elastic:
            return ElasticConv2d(c_in, c_out, kernel, stride, groups, bias, padding, in_parts)
        padding = kernel // 2 if padding is None else padding
        return nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=bias)

    def dwconv(self, channels: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
        return self.conv(channels, channels, kernel, stride, groups=channels, bias=bias)

    def bn(self, channels: int) -> nn.BatchNorm2d:
        return ElasticBatchNorm2d(channels) if self.elastic else nn.BatchNorm2d(channels)

    def ln(self, channels: int, eps: float = 1e-5, parts: int = 1) -> nn.LayerNorm:
        """LayerNorm over the last (channel) dimension of a token tensor [B, T, C]; `parts` > 1 where that is a
        concatenation of equal parts."""
        return ElasticLayerNorm(channels, eps, parts) if self.elastic else nn.LayerNorm(channels, eps)

    def linear(self, c_in: int, c_out: int, bias: bool = True, in_parts: int = 1, out_parts: int = 1) -> nn.Linear:
        """A linear layer; `out_parts` > 1 for a fused projection, `in_parts` > 1 for a concatenated input."""
        if self.elastic:
            return ElasticLinear(c_in, c_out, bias, in_parts, out_parts)
        return nn.Linear(c_in, c_out, bias)


def set_out(conv: nn.Module, channels: int, kernel: int | None = None) -> None:
    """Set the active output width (and kernel) of an elastic conv or linear."""
    conv.active_out = channels
    if kernel is not None:
        conv.active_kernel = kernel


def _slice_to(source: torch.Tensor, shape: torch.Size, parts: tuple[int, int]) -> torch.Tensor:
    """The part of `source` a static tensor of `shape` takes: channel dimensions (made of parts[0] and
    parts[1] equal parts) sliced as the elastic op does, conv kernels centred."""
    for dim, size in enumerate(shape):
        if source.dim() == 4 and dim >= 2:  # conv kernel: take the centre
            source = source.narrow(dim, (source.shape[dim] - size) // 2, size)
        else:
            source = slice_parts(source, dim, size, parts[dim] if dim < 2 else 1)
    return source


@torch.no_grad()
def copy_sliced_state(target: nn.Module, source: nn.Module) -> None:
    """Fill every parameter and buffer of `target` with the matching slice of `source`'s (same names)."""
    source_state = source.state_dict()
    parts = {f"{prefix}.{name}" if prefix else name: (getattr(module, "out_parts", 1), getattr(module, "in_parts", 1))
             for prefix, module in source.named_modules() for name in ("weight", "bias")}
    for name, tensor in target.state_dict().items():
        if name not in source_state:
            raise KeyError(f"{name} has no counterpart in the source module")
        src = source_state[name]
        tensor.copy_(_slice_to(src, tensor.shape, parts.get(name, (1, 1))) if tensor.dim() else src)


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
