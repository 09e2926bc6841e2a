"""Accuracy of a network: BN recalibration on a fixed subset of training images, then top-k accuracy on a split;
optionally after a few steps of the member's own training (`adapt`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from torch import nn

from nas.data import Splits

if TYPE_CHECKING:
    from nas.arch import Arch

EVAL_BATCH = 500
ADAPT_BATCH, ADAPT_LR = 128, 1e-3


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute BatchNorm running statistics from `batches` (weight sharing leaves them stale), then set eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    device = next(model.parameters()).device
    for x, _ in batches:
        model(x.to(device, non_blocking=True))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             topk: tuple[int, ...] = (1,)) -> dict[int, float]:
    """Top-k accuracy (fractions) of `model` in eval mode over `batches`."""
    model.eval()
    device = next(model.parameters()).device
    hits, images = {k: 0 for k in topk}, 0
    for xb, yb in batches:
        logits = model(xb.to(device, non_blocking=True))
        ranked = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices.cpu()
        for k in topk:
            hits[k] += (ranked[:, :k] == yb[:, None]).any(dim=1).sum().item()
        images += len(yb)
    return {k: hits[k] / images for k in topk}


def split_accuracy(model: nn.Module, arch: "Arch", data: Splits, splits: tuple[str, ...] = ("val",)) -> float:
    """Top-1 of `model` over the images of `splits` together (empty splits left out)."""
    hits = images = 0
    for split in splits:
        if data.size(split):
            batches = data.loader(split, arch.resolution, arch.in_channels, EVAL_BATCH)
            hits += accuracy(model, batches)[1] * data.size(split)
            images += data.size(split)
    return hits / images


def inherited_accuracy(net: nn.Module, arch: "Arch", data: Splits, splits: tuple[str, ...] = ("val",)) -> float:
    """Top-1 of a sub-network extracted from the supernet on `splits`: BN recalibrated on training images first,
    since the supernet's running statistics mix every member's."""
    recalibrate_bn(net, data.recalibration(arch.resolution, arch.in_channels))
    return split_accuracy(net, arch, data, splits)


def adapt_batches(arch: "Arch", data: Splits, steps: int, seed: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The `steps` batches `adapt` trains on: a seeded permutation of the training images (repeated when short),
    the same for every member, so that the loader is built once and reused."""
    order = np.random.default_rng(seed).permutation(data.size("train"))
    picked = [int(order[i % len(order)]) for i in range(steps * ADAPT_BATCH)]
    return data.loader("train", arch.resolution, arch.in_channels, ADAPT_BATCH, indices=picked)


def adapt(net: nn.Module, arch: "Arch", data: Splits, steps: int, seed: int = 0) -> None:
    """Train an extracted member alone for `steps` batches of training images (AdamW, label smoothing 0.1) before
    it is scored. The shared weights co-adapt to every member the supernet trains; a few steps of the member's own
    training remove much of that bias (bench/rank.py --adapt-steps). The batches are the same for every member."""
    import timm.optim
    import torch.nn.functional as F

    if steps == 0:
        return
    optimizer = timm.optim.create_optimizer_v2(net, "adamw", lr=ADAPT_LR, weight_decay=0.05)
    device = next(net.parameters()).device
    net.train()
    for x, y in adapt_batches(arch, data, steps, seed):
        loss = F.cross_entropy(net(x.to(device, non_blocking=True)), y.to(device), label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def scratch_accuracy(arch: "Arch", data: Splits, steps: int, seed: int, device: torch.device,
                     splits: tuple[str, ...] = ("val",)) -> float:
    """Accuracy of `arch` built from scratch (seed `seed`) and trained alone for `steps` batches (`adapt`'s): the
    short-training score that ranks members without a supernet's shared-weight bias (bench/rank.py
    --control-steps), which `nas search --rescore-top` gives its shortlist."""
    from supernet.network import build

    torch.manual_seed(seed)
    net = build(arch).to(device)
    adapt(net, arch, data, steps, seed)
    return inherited_accuracy(net, arch, data, splits)
