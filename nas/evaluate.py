"""Accuracy of a network: BN recalibration on training images, then top-k accuracy on a split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.data import Splits, batches

if TYPE_CHECKING:
    from nas.arch import Arch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 128, max_images: int = 1024) -> None:
    """Recompute BatchNorm running statistics from `x` (weight sharing leaves them stale), then set eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    device = next(model.parameters()).device
    for start in range(0, min(len(x), max_images), batch_size):
        model(x[start:start + batch_size].to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             topk: tuple[int, ...] = (1,)) -> dict[int, float]:
    """Top-k accuracy (fractions) of `model` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    hits = {k: 0 for k in topk}
    for xb, yb in batches(x, y, batch_size):
        logits = model(xb.to(device))
        ranked = logits.topk(max(topk), dim=1).indices.cpu()
        for k in topk:
            hits[k] += (ranked[:, :k] == yb[:, None]).any(dim=1).sum().item()
    return {k: hits[k] / len(y) for k in topk}


def split_accuracy(model: nn.Module, arch: "Arch", data: Splits, splits: tuple[str, ...] = ("val",)) -> float:
    """Top-1 of `model` over the images of `splits` together (empty splits left out)."""
    hits = images = 0
    for split in splits:
        if data.size(split):
            x, y = data.tensors(split, arch.resolution, arch.in_channels)
            hits += accuracy(model, x, y)[1] * len(y)
            images += len(y)
    return hits / images


def inherited_accuracy(net: nn.Module, arch: "Arch", data: Splits, splits: tuple[str, ...] = ("val",)) -> float:
    """Top-1 of a sub-network extracted from the supernet on `splits`: BN recalibrated on training images first,
    since the supernet's running statistics mix every member's."""
    recalibrate_bn(net, data.tensors("train", arch.resolution, arch.in_channels)[0])
    return split_accuracy(net, arch, data, splits)
