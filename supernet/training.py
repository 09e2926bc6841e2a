"""Supernet training: the sandwich rule with in-place distillation, checkpointed every epoch.

Each step trains the largest member on the labels, then the smallest and `random_subnets` random members on
the largest member's soft predictions (KL divergence), and takes one optimiser step on the summed gradients.
Data order and sampled members are derived from (seed, epoch, step), so a resumed run follows the same path.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from nas.data import Splits, training_epoch
from nas.errors import NasError
from nas.evaluate import inherited_accuracy
from nas.latency import device_lock
from nas.runs import load_checkpoint, save_checkpoint, write_yaml
from supernet.network import HybridSupernet

if TYPE_CHECKING:
    from nas.space import SearchSpace

CHECKPOINT_KIND = "nas-supernet"


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    random_subnets: int = 2
    label_smoothing: float = 0.1
    seed: int = 0


def optimizer_and_schedule(model: torch.nn.Module, lr: float, weight_decay: float, epochs: int, warmup_epochs: int,
                           steps_per_epoch: int) -> tuple[torch.optim.Optimizer, object]:
    """timm AdamW (no weight decay on norms and biases) and a per-step cosine schedule with linear warm-up."""
    import timm.optim
    import timm.scheduler

    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay)
    scheduler = timm.scheduler.CosineLRScheduler(
        optimizer, t_initial=epochs * steps_per_epoch, lr_min=lr * 0.01, warmup_t=warmup_epochs * steps_per_epoch,
        warmup_lr_init=lr * 0.01, t_in_epochs=False)
    return optimizer, scheduler


def _at_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def train_supernet(space: "SearchSpace", data: Splits, out_dir: Path, config: TrainConfig,
                   device: torch.device, log: Callable[[str], None] = print) -> Path:
    """Train (or resume training) a supernet for `space` in `out_dir`; returns the checkpoint path."""
    checkpoint = out_dir / "supernet.pt"
    torch.manual_seed(config.seed)
    model = HybridSupernet(space).to(device)
    x, y = data.tensors("train", max(space.resolution), space.in_channels)
    steps = math.ceil(len(x) / config.batch_size)
    optimizer, scheduler = optimizer_and_schedule(model, config.lr, config.weight_decay, config.epochs,
                                                  config.warmup_epochs, steps)
    start_epoch, history = 0, []
    if checkpoint.exists():
        payload = load_supernet_checkpoint(checkpoint, space)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        start_epoch, history = payload["epoch"], payload["history"]
        if start_epoch < config.epochs:
            log(f"resuming supernet training from {checkpoint} after epoch {start_epoch}/{config.epochs}")
    largest, smallest = space.largest(), space.smallest()
    write_yaml(out_dir / "train_config.yaml", asdict(config))
    with device_lock(device, exclusive=False):  # measurements elsewhere wait for training
        for epoch in range(start_epoch, config.epochs):
            model.train()
            began, total_loss = time.perf_counter(), 0.0
            bar = training_epoch(x, y, config.batch_size, config.seed, epoch,
                                 f"supernet epoch {epoch + 1}/{config.epochs}")
            for step, (xb, yb) in enumerate(bar):
                global_step = epoch * steps + step
                scheduler.step_update(global_step)
                rng = random.Random(config.seed * 1_000_003 + global_step)
                xb, yb = xb.to(device), yb.to(device)
                optimizer.zero_grad(set_to_none=True)
                model.set_active(largest)
                logits = model(_at_resolution(xb, largest.resolution))
                loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                loss.backward()
                teacher = logits.detach().softmax(dim=-1)
                for arch in [smallest] + [space.sample(rng) for _ in range(config.random_subnets)]:
                    model.set_active(arch)
                    student = model(_at_resolution(xb, arch.resolution)).log_softmax(dim=-1)
                    distill = F.kl_div(student, teacher, reduction="batchmean")
                    distill.backward()
                    loss = loss + distill.detach()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total_loss += loss.item()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            seconds = time.perf_counter() - began
            model.eval()
            record = {"epoch": epoch + 1, "loss": total_loss / steps, "seconds": seconds,
                      "images_per_s": len(x) * (2 + config.random_subnets) / seconds,
                      "val_acc_largest": inherited_accuracy(model.extract(largest), largest, data),
                      "val_acc_smallest": inherited_accuracy(model.extract(smallest), smallest, data)}
            history.append(record)
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_KIND, "version": 1, "space": space.to_dict(), "space_hash": space.space_hash,
                "epoch": epoch + 1, "config": asdict(config), "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict()})
            log(f"supernet epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.3f}, val acc largest "
                f"{record['val_acc_largest']:.3f} smallest {record['val_acc_smallest']:.3f} ({seconds:.0f} s)")
    return checkpoint


def load_supernet_checkpoint(path: Path, space: "SearchSpace | None" = None) -> dict:
    """Load a supernet checkpoint; if `space` is given, it must be the space the checkpoint was trained for."""
    payload = load_checkpoint(path, CHECKPOINT_KIND)
    if space is not None and payload.get("space_hash") != space.space_hash:
        raise NasError(f"{path}: this supernet was trained for space {payload.get('space', {}).get('name')!r} "
                       f"({payload.get('space_hash')}), not {space.name!r} ({space.space_hash}); "
                       "pass the matching --space, or leave --supernet out to train a new one")
    return payload


def load_supernet(path: Path, space: "SearchSpace") -> HybridSupernet:
    """A trained supernet for `space` from a checkpoint written by `train_supernet`."""
    payload = load_supernet_checkpoint(path, space)
    model = HybridSupernet(space)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as error:
        raise NasError(f"{path}: its weights do not fit space {space.name!r}: {str(error).splitlines()[0]}") from None
    return model.eval()
