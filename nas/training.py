"""What the supernet trainer (`nas.supernet_training`) and the standalone one (`nas.retrain`) share: precision,
the process group and DDP, the optimiser and schedule, the distillation losses, the epoch loop and the resume check.

Precision: on CUDA the forward passes run under autocast, in bfloat16 where the GPU supports it, else in float16
with loss scaling (GradScaler); losses are computed in float32. Elsewhere everything stays float32.

Several processes: under `torchrun` (WORLD_SIZE > 1) the ranks join a process group (gloo on CPU, nccl on CUDA,
one GPU per LOCAL_RANK) and each reads and trains on its part of every global batch (`nas.data.EpochBatches`).
Each rank's loss is weighted by its share of the batch, so DDP's average over ranks is the whole batch's gradient.
Only rank 0 shows the progress bar; where it has no terminal (a log file, a batch job) it logs a progress line
every minute instead.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from nas.arch import read_yaml
from nas.data import Batches
from nas.errors import NasError
from nas.runs import differing_settings

if TYPE_CHECKING:
    from timm.scheduler.scheduler import Scheduler


def optimizer_and_schedule(model: torch.nn.Module, lr: float, weight_decay: float, epochs: int, warmup_epochs: int,
                           steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Scheduler]:
    """timm AdamW (no weight decay on norms and biases) and a per-step cosine schedule with linear warm-up. The
    warm-up takes at most half the steps: one as long as the schedule would end it at the peak rate, undecayed (a
    one-epoch training on a large set)."""
    import timm.optim
    import timm.scheduler

    steps = epochs * steps_per_epoch
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay)
    scheduler = timm.scheduler.CosineLRScheduler(
        optimizer, t_initial=steps, lr_min=lr * 0.01, warmup_t=min(warmup_epochs * steps_per_epoch, steps // 2),
        warmup_lr_init=lr * 0.01, t_in_epochs=False)
    return optimizer, scheduler


def alpha_divergence(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, alpha: float,
                     clip: float = 5.0) -> torch.Tensor:
    """Per-sample alpha-divergence D_alpha(p || q) of the teacher's p from the student's q (AlphaNet, Wang et al.
    2021, eq. 2):

        D_alpha(p || q) = sum_i q_i ((p_i / q_i)^alpha - 1) / (alpha (alpha - 1)),

    which tends to KL(q || p) as alpha -> 0 and to KL(p || q) as alpha -> 1 (those limits are used there).

    The value returned is exact; its gradient is the paper's clipped estimate -sum_i q_i rho_i grad log q_i with
    rho = w / alpha + 1 / (alpha (alpha - 1)) and w = (p / q)^alpha clipped to at most `clip` (log w clipped at
    alpha = 0, not clipped at alpha = 1, as in the paper's code): the true gradient when nothing is clipped, and
    bounded where the ratio explodes. Only the student gets gradients.
    """
    log_q = student_logits.log_softmax(dim=-1)
    q = log_q.detach().exp()
    log_ratio = teacher_log_probs.detach() - log_q.detach()
    if alpha == 0:
        value = -(q * log_ratio).sum(-1)
        rho = log_ratio.clamp(max=math.log(clip)) - 1
    elif alpha == 1:
        value = (teacher_log_probs.detach().exp() * log_ratio).sum(-1)
        rho = log_ratio.exp()
    else:
        value = (q * torch.expm1(alpha * log_ratio)).sum(-1) / (alpha * (alpha - 1))
        rho = (alpha * log_ratio).exp().clamp(max=clip) / alpha + 1 / (alpha * (alpha - 1))
    surrogate = -(q * rho * log_q).sum(-1)
    return value + (surrogate - surrogate.detach())


def adaptive_alpha_divergence(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, alpha_min: float = -1.0,
                              alpha_max: float = 1.0, clip: float = 5.0) -> torch.Tensor:
    """AlphaNet's distillation loss, the batch mean of max(D_alpha_min, D_alpha_max)(p || q) per sample: alpha_max
    penalises a student that under-estimates the teacher's likely classes, alpha_min one that over-estimates
    unlikely ones, and each sample is trained on whichever is worse."""
    low = alpha_divergence(student_logits, teacher_log_probs, alpha_min, clip)
    high = alpha_divergence(student_logits, teacher_log_probs, alpha_max, clip)
    return torch.where(low > high, low, high).mean()


def distillation_loss(kind: str, student_logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """The distillation loss of a student against the teacher's log-probabilities: KL(teacher || student), or
    AlphaNet's adaptive alpha-divergence for `kind` "alpha"."""
    if kind == "alpha":
        return adaptive_alpha_divergence(student_logits, teacher_log_probs)
    return F.kl_div(student_logits.log_softmax(dim=-1), teacher_log_probs, reduction="batchmean", log_target=True)


def augmentation_problems(randaugment_ops: int, randaugment_magnitude: int, mixup: float, cutmix: float,
                          mix_prob: float) -> list[tuple[bool, str]]:
    """The range checks, as (failed, message) pairs, of the augmentation settings that `nas retrain`'s recipe and
    the supernet's share (same names, same meaning)."""
    return [(not 0 <= randaugment_ops <= 16, "randaugment_ops must be 0 to 16"),
            (not 0 <= randaugment_magnitude <= 30, "randaugment_magnitude must be 0 to 30"),
            (not (0 <= mixup <= 10 and 0 <= cutmix <= 10), "mixup and cutmix must be 0 to 10"),
            (not 0 <= mix_prob <= 1, "mix_prob must be in [0, 1]")]


def batch_mixer(mixup: float, cutmix: float, mix_prob: float, label_smoothing: float,
                num_classes: int) -> Callable | None:
    """timm's Mixup for a recipe's mixup and CutMix (None when both are off), label smoothing included."""
    from timm.data import Mixup

    if not (mixup or cutmix):
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mix_prob, label_smoothing=label_smoothing,
                 num_classes=num_classes)


def mixed(mixer: Callable | None, x: torch.Tensor, target: torch.Tensor,
          share: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(x, target, share) after timm's `Mixup` (None: unchanged): soft targets, label smoothing included. Pairs are
    mixed, so an odd part (the last of an epoch, or one rank's) loses one image and `share` shrinks with it."""
    if mixer is None:
        return x, target, share
    if len(x) % 2:
        x, target, share = x[:-1], target[:-1], share * (len(x) - 1) / len(x)
    x, target = mixer(x, target)
    return x, target, share


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy against class indices (smoothed by `label_smoothing`) or against mixed soft targets (already
    smoothed: timm's soft-target loss)."""
    from timm.loss import SoftTargetCrossEntropy

    if target.dim() == 2:
        return SoftTargetCrossEntropy()(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


class Precision:
    """Mixed precision on CUDA (bfloat16 autocast where supported, else float16 with a GradScaler); float32 with no
    autocast and a disabled (pass-through) scaler on other devices."""

    def __init__(self, device: torch.device) -> None:
        self.device_type = device.type
        self.dtype = None
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them ((0, 1) without torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group while inside (when WORLD_SIZE > 1); yields the device this rank trains on."""
    if rank_and_world()[1] == 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def wrap_for_ranks(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` in DistributedDataParallel when in a process group of several ranks, else `model` itself."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    # 1x1 convolution weights get gradients whose strides differ on their size-1 dimensions only: harmless
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def batch_loss(net: torch.nn.Module, weighted: torch.Tensor) -> float:
    """The whole batch's loss from this rank's share-weighted loss (`nas.data.Batches.epoch`), summed over the
    ranks."""
    if not isinstance(net, DistributedDataParallel):
        return weighted.item()
    dist.all_reduce(weighted)
    return weighted.item() / dist.get_world_size()


PROGRESS_LOG_SECONDS = 60.0  # between progress lines where there is no progress bar


def run_epoch(batches: Batches, epoch: int, desc: str, scheduler: Scheduler,
              train_batch: Callable[[torch.Tensor, torch.Tensor, float, int], float], done: int = 0,
              loss: float = 0.0, after_step: Callable[[int, float], None] | None = None,
              log: Callable[[str], None] | None = None) -> float:
    """One epoch of optimiser steps on this rank's part of epoch `epoch`'s batches, under a progress bar (rank 0's
    only): `train_batch(x, y, share, global step)` returns each step's loss (`Batches.epoch` says what share is).
    Returns `loss` (the sum carried over from before a restart) plus the losses of the steps run. The first `done`
    steps were done before a restart and are not drawn again. `after_step(steps done in the epoch, summed loss)`
    follows every step (the supernet's mid-epoch checkpoints). Without a terminal, rank 0 sends `log` a line of
    progress every PROGRESS_LOG_SECONDS instead of the bar: an ImageNet epoch takes hours."""
    from tqdm import tqdm

    steps = len(batches)
    main = rank_and_world()[0] == 0
    bar = tqdm(batches.epoch(epoch, done), total=steps, initial=done, leave=False, desc=desc,
               disable=None if main else True)
    log_progress = log if main and bar.disable else None
    began = last_line = time.monotonic()
    for step, (x, y, share) in enumerate(bar, done):
        global_step = epoch * steps + step
        scheduler.step_update(global_step)
        step_loss = train_batch(x, y, share, global_step)
        loss += step_loss
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if after_step is not None:
            after_step(step + 1, loss)
        now = time.monotonic()
        if log_progress is not None and now - last_line >= PROGRESS_LOG_SECONDS and step + 1 < steps:
            last_line, per_step = now, (now - began) / (step + 1 - done)
            log_progress(f"{desc}: step {step + 1}/{steps}, loss {step_loss:.3f}, {1 / per_step:.2f} steps/s, "
                         f"about {(steps - step - 1) * per_step / 60:.0f} min left in the epoch")
    return loss


def check_resumable(saved: dict[str, Any], current: dict[str, Any], free: tuple[str, ...], path: Path) -> None:
    """Refuse to resume the checkpoint at `path`, trained with the settings `saved`, under other `current` settings
    than those in `free`: the resumed run repeats the interrupted one's batches and draws only under the same."""
    differ = differing_settings(saved, current, free)
    if differ:
        listed = ", ".join(f"{name} {saved.get(name)} (not {current[name]})" for name in differ)
        raise NasError(f"{path}: was trained with {listed}; pass the same options to resume it, or a new --run-dir")


def read_settings(path: str | Path, settings: type) -> dict[str, Any]:
    """The settings a recipe YAML at `path` gives, each a field of the dataclass `settings` and of its field's
    type (whole numbers stand for floats); the caller checks the ranges."""
    from dataclasses import fields

    document = read_yaml(path)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise NasError(f"{path}: a recipe is a mapping of settings, e.g. 'epochs: 30'")
    types = {f.name: type(getattr(settings(), f.name)) for f in fields(settings)}
    given = {}
    for key, value in document.items():
        if key not in types:
            raise NasError(f"{path}: unknown recipe setting {key!r}; known: {', '.join(types)}")
        kind = types[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise NasError(f"{path}: {key} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}")
        given[key] = value
    return given
