"""Supernet training: the sandwich rule with in-place distillation, resumable to the step, on one or more processes.

Each step trains the largest member on the labels, then the smallest and `random_subnets` random members on the
largest member's soft predictions, and takes one optimiser step on the summed gradients. The distillation loss is
KL(teacher || student) (`distill: kl`) or AlphaNet's adaptive alpha-divergence (`distill: alpha`).

Resuming: a checkpoint (written atomically) records (epoch, step) every `checkpoint_every` optimiser steps and at
the end of each epoch. Data order and the sampled members are derived from (seed, epoch, step), so a run killed
mid-epoch and started again skips the steps it had done and, on CPU, ends with the same weights as a run never
interrupted.

Precision: on CUDA the forward passes run under autocast, in bfloat16 where the GPU supports it, else in float16
with loss scaling (GradScaler); losses are computed in float32. Elsewhere everything stays float32.

Several processes: under `torchrun` (WORLD_SIZE > 1) the ranks join a process group (gloo on CPU, nccl on CUDA,
one GPU per LOCAL_RANK) and each trains on its slice of every global batch, with the same sampled members on every
rank (they come from (seed, step)). The supernet is wrapped in DistributedDataParallel with find_unused_parameters
(each member uses a different part of it); all but the last backward pass of a step run under no_sync(), so the
gradients summed over the step's members are averaged across ranks once (DDP counts a parameter used in any
no_sync pass as used). Each rank's loss is weighted by its share of the batch, so the average is the whole batch's
gradient. BatchNorm normalises with each rank's own batch statistics, so a run on N processes is close to, not
equal to, one process on the same global batches. Only rank 0 evaluates, logs and writes checkpoints; every rank
loads the checkpoint when resuming.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from nas.data import Splits, training_epoch
from nas.errors import NasError
from nas.evaluate import inherited_accuracy
from nas.latency import device_lock
from nas.runs import load_checkpoint, save_checkpoint, write_yaml
from supernet.network import HybridSupernet

if TYPE_CHECKING:
    from nas.space import SearchSpace

CHECKPOINT_KIND = "nas-supernet"
DISTILL_LOSSES = ("kl", "alpha")
RESUMABLE_CHANGES = ("epochs", "checkpoint_every")  # the other settings fix the path a resumed run must follow


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128  # the global batch, split across processes under torchrun
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    random_subnets: int = 2
    label_smoothing: float = 0.1
    seed: int = 0
    distill: str = "kl"  # one of DISTILL_LOSSES
    checkpoint_every: int = 20  # optimiser steps: ~80 s for cpu_small on 2 CPU cores (4 s a step)


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


def _at_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def train_step(net: torch.nn.Module, space: "SearchSpace", xb: torch.Tensor, yb: torch.Tensor, global_step: int,
               config: TrainConfig, optimizer: torch.optim.Optimizer, precision: Precision) -> float:
    """One optimiser step of the sandwich rule on the global batch (xb, yb), of which this rank trains on its slice;
    `net` is the supernet or its DDP wrapper. Returns the step's loss (summed over members) on the whole batch."""
    distributed = isinstance(net, DistributedDataParallel)
    model = net.module if distributed else net
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = next(model.parameters()).device
    x, y = torch.tensor_split(xb, world)[rank].to(device), torch.tensor_split(yb, world)[rank].to(device)
    share = len(x) * world / len(xb)  # DDP averages over ranks; weighting by the slice gives the batch mean
    rng = random.Random(config.seed * 1_000_003 + global_step)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(config.random_subnets)]
    optimizer.zero_grad(set_to_none=True)
    total, teacher = torch.zeros((), device=device), None
    for index, arch in enumerate(archs):
        last = index == len(archs) - 1
        with net.no_sync() if distributed and not last else contextlib.nullcontext():  # one all-reduce a step
            model.set_active(arch)
            with precision.autocast():
                logits = net(_at_resolution(x, arch.resolution)).float()
            if teacher is None:
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                teacher = logits.detach().log_softmax(dim=-1)
            else:
                loss = distillation_loss(config.distill, logits, teacher)
            precision.scaler.scale(loss * share).backward()
        total += loss.detach() * share
    precision.scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    if distributed:
        dist.all_reduce(total)
    return total.item() / world


def train_supernet(space: "SearchSpace", data: Splits, out_dir: Path, config: TrainConfig,
                   device: torch.device, log: Callable[[str], None] = print) -> Path:
    """Train (or resume training) a supernet for `space` in `out_dir`; returns the checkpoint path. Under torchrun
    every rank calls this (on `device`'s type); only rank 0 logs and writes."""
    if config.distill not in DISTILL_LOSSES:
        raise NasError(f"distill {config.distill!r}: expected one of {', '.join(DISTILL_LOSSES)}")
    if min(config.epochs, config.batch_size, config.checkpoint_every) < 1:
        raise NasError("epochs, batch size and checkpoint_every must be at least 1")
    with process_group(device) as device:
        return _train(space, data, out_dir, config, device, log)


def _train(space: "SearchSpace", data: Splits, out_dir: Path, config: TrainConfig, device: torch.device,
           log: Callable[[str], None]) -> Path:
    rank, world = rank_and_world()
    main = rank == 0
    if not main:
        log = _quiet
    checkpoint = out_dir / "supernet.pt"
    torch.manual_seed(config.seed)
    model = HybridSupernet(space).to(device)
    x, y = data.tensors("train", max(space.resolution), space.in_channels)
    left_over = len(x) % config.batch_size
    if 0 < left_over < world:  # a last batch too small to give every rank an image
        x, y = x[:-left_over], y[:-left_over]
        log(f"dropping the last {left_over} training image(s): too few for {world} processes")
    steps = math.ceil(len(x) / config.batch_size)
    optimizer, scheduler = optimizer_and_schedule(model, config.lr, config.weight_decay, config.epochs,
                                                  config.warmup_epochs, steps)
    precision = Precision(device)
    start_epoch, start_step, history, partial = 0, 0, [], {"loss": 0.0, "seconds": 0.0}
    if checkpoint.exists():
        payload = load_supernet_checkpoint(checkpoint, space)
        _check_resumable(payload, config, checkpoint)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scaler"):
            precision.scaler.load_state_dict(payload["scaler"])
        start_epoch, start_step, history = payload["epoch"], payload.get("step", 0), payload["history"]
        partial = payload.get("partial_epoch", partial)
        if start_epoch < config.epochs:
            at = f"step {start_step}/{steps} of epoch {start_epoch + 1}" if start_step else f"epoch {start_epoch}"
            log(f"resuming supernet training from {checkpoint} after {at}/{config.epochs}")
    net = wrap_for_ranks(model, device)
    largest, smallest = space.largest(), space.smallest()

    def save(epoch: int, step: int, loss: float, seconds: float) -> None:
        """The state after `step` steps of epoch `epoch` (0-based); (epoch + 1, 0) once it is complete."""
        if main:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_KIND, "version": 2, "space": space.to_dict(), "space_hash": space.space_hash,
                "epoch": epoch, "step": step, "config": asdict(config), "history": history,
                "partial_epoch": {"loss": loss, "seconds": seconds}, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": precision.scaler.state_dict()})

    if main:
        write_yaml(out_dir / "train_config.yaml", asdict(config))
    with device_lock(device, exclusive=False):  # measurements elsewhere wait for training
        for epoch in range(start_epoch, config.epochs):
            model.train()
            done = start_step if epoch == start_epoch else 0
            total_loss, earlier_seconds = (partial["loss"], partial["seconds"]) if done else (0.0, 0.0)
            began = time.perf_counter()
            bar = training_epoch(x, y, config.batch_size, config.seed, epoch,
                                 f"supernet epoch {epoch + 1}/{config.epochs}")
            if not main:
                bar.close()  # one progress bar, rank 0's; the closed bar still yields the batches
            for step, (xb, yb) in enumerate(bar):
                if step < done:  # done before the restart: the batch is drawn only to keep the data order
                    continue
                global_step = epoch * steps + step
                scheduler.step_update(global_step)
                loss = train_step(net, space, xb, yb, global_step, config, optimizer, precision)
                total_loss += loss
                bar.set_postfix(loss=f"{loss:.3f}")
                if (global_step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
                    save(epoch, step + 1, total_loss, earlier_seconds + time.perf_counter() - began)
            seconds = earlier_seconds + time.perf_counter() - began
            if main:
                model.eval()
                record = {"epoch": epoch + 1, "loss": total_loss / steps, "seconds": seconds,
                          "images_per_s": len(x) * (2 + config.random_subnets) / seconds,
                          "val_acc_largest": inherited_accuracy(model.extract(largest), largest, data),
                          "val_acc_smallest": inherited_accuracy(model.extract(smallest), smallest, data)}
                history.append(record)
                save(epoch + 1, 0, 0.0, 0.0)
                log(f"supernet epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.3f}, val acc largest "
                    f"{record['val_acc_largest']:.3f} smallest {record['val_acc_smallest']:.3f} ({seconds:.0f} s)")
        if world > 1:
            dist.barrier()  # no rank returns before rank 0 has written the last checkpoint
    return checkpoint


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


def _check_resumable(payload: dict, config: TrainConfig, path: Path) -> None:
    saved = {**asdict(TrainConfig()), **payload.get("config", {})}
    differ = [f"{name} {saved[name]} (not {value})" for name, value in asdict(config).items()
              if name not in RESUMABLE_CHANGES and saved[name] != value]
    if differ:
        raise NasError(f"{path}: was trained with {', '.join(differ)}; pass the same options to resume it, "
                       "or a new --run-dir")


def load_supernet_checkpoint(path: Path, space: "SearchSpace | None" = None) -> dict:
    """Load a supernet checkpoint; if `space` is given, it must be the space the checkpoint was trained for."""
    payload = load_checkpoint(path, CHECKPOINT_KIND)
    if space is not None and payload.get("space_hash") != space.space_hash:
        raise NasError(f"{path}: this supernet was trained for space {payload.get('space', {}).get('name')!r} "
                       f"({payload.get('space_hash')}), not {space.name!r} ({space.space_hash}); "
                       "pass the matching --space, or leave --supernet out to train a new one")
    return payload


def load_supernet(path: Path, space: "SearchSpace | None" = None) -> HybridSupernet:
    """A trained supernet from a checkpoint written by `train_supernet`: for `space`, which it must have been
    trained for, or (None) for the space recorded in the checkpoint."""
    payload = load_supernet_checkpoint(path, space)
    if space is None:
        from nas.space import space_from_dict

        space = space_from_dict(payload["space"], str(path))
    model = HybridSupernet(space)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as error:
        raise NasError(f"{path}: its weights do not fit space {space.name!r}: {str(error).splitlines()[0]}") from None
    return model.eval()
