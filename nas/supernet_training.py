"""Supernet training: the sandwich rule with in-place distillation, resumable to the step, on one or more processes.

Each step trains the largest member on the labels, then (with the `random` or `families` sandwich) the smallest,
(with `families`) the largest member of one family in turn, and `random_subnets` random members on the largest
member's soft predictions, and takes one optimiser step on the summed gradients. The default, `no-smallest`, leaves
the smallest out: trained on every step, it outscored every member a search drew (bench/search.py). The
distillation loss is KL(teacher || student) (`distill: kl`) or AlphaNet's adaptive alpha-divergence (`distill: alpha`);
with `distill: none` every member learns from the labels.

Resuming: a checkpoint (written atomically) records (epoch, step) every `checkpoint_every` optimiser steps and at
the end of each epoch. Data order and the sampled members are derived from (seed, epoch, step), so a run killed
mid-epoch and started again skips the steps it had done and, on CPU, ends with the same weights as a run never
interrupted.

Precision and processes are `nas.training`'s. Under torchrun every rank samples the same members (they come from
(seed, step)). The supernet is wrapped in DistributedDataParallel with find_unused_parameters (each member uses a
different part of it); all but the last backward pass of a step run under no_sync(), so the gradients summed over
the step's members are averaged across ranks once (DDP counts a parameter used in any no_sync pass as used).
BatchNorm normalises with each rank's own batch statistics, so a run on N processes is close to, not equal to, one
process on the same global batches. Only rank 0 evaluates, logs and writes checkpoints; every rank loads the
checkpoint when resuming.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from nas.data import SPLIT_FILE, Augment, Splits, load_data
from nas.arch import Arch
from nas.errors import NasError, first_line
from nas.evaluate import inherited_accuracy
from nas.latency import device_lock
from nas.memory import check_supernet_training
from nas.runs import RUNS_ROOT, check_run_dir, load_checkpoint, safe_name, save_checkpoint, write_yaml
from nas.space import SearchSpace, load_space, space_from_dict
from nas.training import (Precision, augmentation_problems, batch_loss, batch_mixer, check_resumable,
                          classification_loss, distillation_loss, mixed, optimizer_and_schedule, process_group,
                          rank_and_world, read_settings, run_epoch, wrap_for_ranks)
from nas.weight_sharing import SpaceSupernet


CHECKPOINT_KIND = "nas-supernet"
DISTILL_LOSSES = ("kl", "alpha", "none")
SANDWICHES = ("random", "families", "no-smallest", "ends", "fair")
RESUMABLE_CHANGES = ("epochs", "checkpoint_every")  # the other settings fix the path a resumed run must follow


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128  # the global batch, split across processes under torchrun
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    random_subnets: int = 4  # bench/supernet_recipe.py: random members gain most from more draws
    label_smoothing: float = 0.1
    seed: int = 0
    distill: str = "kl"  # one of DISTILL_LOSSES; none ranked no better (README, "Training the supernet")
    sandwich: str = "no-smallest"  # one of SANDWICHES (see sandwich_members); bench/search.py: the smallest, trained
    # on every step, outscored every drawn member and won every search
    checkpoint_every: int = 20  # optimiser steps between checkpoints (and one at the end of each epoch)
    # augmentation and mixing, as `nas retrain`'s recipe names them (off: README, "Training the supernet")
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0

    def check(self) -> "TrainConfig":
        """`self`, or a NasError naming the first setting out of range (as the option or recipe key that sets it)."""
        if self.distill not in DISTILL_LOSSES:
            raise NasError(f"distill {self.distill!r}: expected one of {', '.join(DISTILL_LOSSES)}")
        if self.sandwich not in SANDWICHES:
            raise NasError(f"sandwich {self.sandwich!r}: expected one of {', '.join(SANDWICHES)}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise NasError(f"--{name.replace('_', '-')} must be at least 1")
        numbers = (self.lr, self.weight_decay, self.label_smoothing, self.mixup, self.cutmix, self.mix_prob)
        problems = [(not all(math.isfinite(value) for value in numbers), "every number must be finite"),
                    (not 1 <= self.epochs <= 10_000, "epochs must be 1 to 10,000"),
                    (not 2 <= self.batch_size <= 65_536, "batch_size must be 2 to 65,536"),
                    (not 0 < self.lr <= 10, "lr must be above 0 and at most 10"),
                    (not 0 <= self.weight_decay <= 10, "weight_decay must be 0 to 10"),
                    (not 0 <= self.warmup_epochs <= 10_000, "warmup_epochs must be 0 to 10,000"),
                    (not 0 <= self.random_subnets <= 64, "random_subnets must be 0 to 64"),
                    (not 0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
                    (not 0 <= self.seed < 2**32, "seed must be 0 to 2**32 - 1"),
                    (not 1 <= self.checkpoint_every <= 10**9, "checkpoint_every must be 1 to 10**9"),
                    *augmentation_problems(self.randaugment_ops, self.randaugment_magnitude, self.mixup,
                                           self.cutmix, self.mix_prob)]
        for failed, message in problems:
            if failed:
                raise NasError(f"supernet recipe: {message}")
        return self


def train_config(recipe: str | Path | None = None, **options: Any) -> TrainConfig:
    """`nas supernet train`'s settings: TrainConfig's defaults, then a recipe YAML's (any TrainConfig field), then
    the `options` given (None: not given), checked."""
    settings = read_settings(recipe, TrainConfig) if recipe else {}
    settings.update({name: value for name, value in options.items() if value is not None})
    return TrainConfig(**settings).check()


def step_resolution(space: SearchSpace, seed: int, global_step: int) -> int:
    """The input resolution of every member at `global_step`: one of the space's, drawn from (seed, step), so the
    same on every rank and again after a restart (Once-for-All's random resolution per batch)."""
    return random.Random(f"resolution {seed} {global_step}").choice(space.resolution)


def at_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=resolution < x.shape[-1])


def sandwich_members(space: SearchSpace, config: TrainConfig, global_step: int) -> list[Arch]:
    """The members one step trains, the teacher first: the largest and the smallest (`no-smallest`: the largest
    only, so that no member the search scores but the teacher is trained on every step, and none is scored higher
    for it; `ends`: the same, the largest taking each stem x head pair of the space in turn); with the `families`
    sandwich, the largest member of one family in turn (each family's weights at their full size every few steps,
    not only when random draws reach them); then `random_subnets` random members (`fair`: the teacher of `ends`, and
    random members dealt by `SearchSpace.fair_sample`, each slot's families equally often). From (seed, step)
    alone."""
    rng = random.Random(config.seed * 1_000_003 + global_step)
    if config.sandwich == "fair":
        return [space.largest_with_ends(global_step)] + space.fair_sample(rng, config.random_subnets)
    if config.sandwich == "ends":
        archs = [space.largest_with_ends(global_step)]
    else:
        archs = [space.largest()] if config.sandwich == "no-smallest" else [space.largest(), space.smallest()]
    if config.sandwich == "families":
        families = space.families()
        archs.append(space.largest_of(families[global_step % len(families)]))
    return archs + [space.sample(rng) for _ in range(config.random_subnets)]


def train_step(net: torch.nn.Module, space: SearchSpace, x: torch.Tensor, y: torch.Tensor, share: float,
               global_step: int, config: TrainConfig, optimizer: torch.optim.Optimizer, precision: Precision,
               mixer: Callable | None = None) -> float:
    """One optimiser step of the sandwich rule on this rank's part (x, y) of the global batch, `share` its weight
    (`nas.data.Batches.epoch`); every member sees the step's resolution (`step_resolution`) and the same mixed
    batch (`mixer`, from `nas.training.batch_mixer`). `net` is the supernet or its DDP wrapper. Returns the step's
    loss (summed over members) on the whole batch."""
    distributed = isinstance(net, DistributedDataParallel)
    model = net.module if distributed else net
    device = next(model.parameters()).device
    x = at_resolution(x.to(device, non_blocking=True), step_resolution(space, config.seed, global_step))
    y = y.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    if mixer is not None:  # timm's Mixup draws from numpy's generator: seeded by the step, to resume exactly
        np.random.seed((config.seed * 1_000_003 + global_step) % 2**32)
    x, y, share = mixed(mixer, x, y, share)
    archs = sandwich_members(space, config, global_step)
    optimizer.zero_grad(set_to_none=True)
    total, teacher = torch.zeros((), device=x.device), None
    for index, arch in enumerate(archs):
        last = index == len(archs) - 1
        with net.no_sync() if distributed and not last else contextlib.nullcontext():  # one all-reduce a step
            model.set_active(arch)
            with precision.autocast():
                logits = net(x).float()
            if teacher is None:  # the first member, and every member under distill: none
                loss = classification_loss(logits, y, config.label_smoothing)
                if config.distill != "none":
                    teacher = logits.detach().log_softmax(dim=-1)
            else:
                loss = distillation_loss(config.distill, logits, teacher)
            precision.scaler.scale(loss * share).backward()
        total += loss.detach() * share
    precision.scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return batch_loss(net, total)


def train_supernet(space: SearchSpace, data: Splits, out_dir: Path, config: TrainConfig,
                   device: torch.device, log: Callable[[str], None] = print) -> Path:
    """Train (or resume training) a supernet for `space` in `out_dir`; returns the checkpoint path. Under torchrun
    every rank calls this (on `device`'s type); only rank 0 logs and writes."""
    config.check()
    with process_group(device) as device:
        return _train(space, data, out_dir, config, device, log)


def train_supernet_run(space_file: str | Path, config: TrainConfig, device: torch.device, data: str | None = None,
                       limit_train: int | None = None, run_dir: Path | None = None,
                       log: Callable[[str], None] = print, workers: int | None = None) -> dict[str, Any] | None:
    """`nas supernet train`: train (or resume) a supernet for the space at `space_file` on `data` (default: the
    embedded set; `workers` loader processes) in `run_dir` (default: runs/supernet-SPACE). Returns the checkpoint's
    path and the training history, or None on the ranks other than 0 under torchrun."""
    config.check()  # before the data is read
    space = load_space(space_file)
    given, run_dir = run_dir is not None, run_dir or RUNS_ROOT / f"supernet-{safe_name(space.name)}"
    check_run_dir(run_dir, ("supernet.pt", "train_config.yaml", SPLIT_FILE), given)
    splits = load_data(data, seed=config.seed, limit_train=limit_train, workers=workers, run_dir=run_dir)
    space = space.with_num_classes(splits.num_classes)
    check_supernet_training(space, config.batch_size, device, str(space_file))
    path = train_supernet(space, splits, run_dir, config, device, log)
    if rank_and_world()[0] != 0:
        return None
    return {"checkpoint": str(path), "history": load_supernet_checkpoint(path, space)["history"]}


def _train(space: SearchSpace, data: Splits, out_dir: Path, config: TrainConfig, device: torch.device,
           log: Callable[[str], None]) -> Path:
    rank, world = rank_and_world()
    main = rank == 0
    if not main:
        log = _quiet
    checkpoint = out_dir / "supernet.pt"
    torch.manual_seed(config.seed)
    model = SpaceSupernet(space).to(device)
    if device.type == "cuda":  # not cudnn.benchmark: the members' sliced widths make ever new shapes to tune for
        model = model.to(memory_format=torch.channels_last)
    augment = Augment(config.randaugment_ops, config.randaugment_magnitude)
    batches = data.loader("train", max(space.resolution), space.in_channels, config.batch_size, train=True,
                          seed=config.seed, augment=augment, rank=rank, world=world,
                          pin_memory=device.type == "cuda")
    mixer = batch_mixer(config.mixup, config.cutmix, config.mix_prob, config.label_smoothing, space.num_classes)
    if batches.sampler.dropped:
        log(f"dropping the last {batches.sampler.dropped} training image(s): too few for {world} processes")
    steps = len(batches)
    optimizer, scheduler = optimizer_and_schedule(model, config.lr, config.weight_decay, config.epochs,
                                                  config.warmup_epochs, steps)
    precision = Precision(device)
    start_epoch, start_step, history, partial = 0, 0, [], {"loss": 0.0, "seconds": 0.0}
    if checkpoint.exists():
        payload = load_supernet_checkpoint(checkpoint, space)
        # settings added since the checkpoint was written take their defaults
        check_resumable({**asdict(TrainConfig()), **payload.get("config", {})}, asdict(config), RESUMABLE_CHANGES,
                        checkpoint)
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

    def train_batch(x: torch.Tensor, y: torch.Tensor, share: float, global_step: int) -> float:
        resolutions[step_resolution(space, config.seed, global_step)] += 1
        return train_step(net, space, x, y, share, global_step, config, optimizer, precision, mixer)

    if main:
        write_yaml(out_dir / "train_config.yaml", asdict(config))
        data.save_split(out_dir)
    skipped = 0
    with device_lock(device, exclusive=False):  # measurements elsewhere wait for training
        for epoch in range(start_epoch, config.epochs):
            model.train()
            done = start_step if epoch == start_epoch else 0
            carried_loss, earlier_seconds = (partial["loss"], partial["seconds"]) if done else (0.0, 0.0)
            began = time.perf_counter()
            resolutions = Counter()

            def save_mid_epoch(done_steps: int, loss: float) -> None:
                if (epoch * steps + done_steps) % config.checkpoint_every == 0 and done_steps < steps:
                    save(epoch, done_steps, loss, earlier_seconds + time.perf_counter() - began)

            total_loss = run_epoch(batches, epoch, f"supernet epoch {epoch + 1}/{config.epochs}", scheduler,
                                   train_batch, done, carried_loss, save_mid_epoch, log)
            skipped = data.note_skipped(log, skipped)
            seconds = earlier_seconds + time.perf_counter() - began
            if main:
                model.eval()
                record = {"epoch": epoch + 1, "loss": total_loss / steps, "seconds": seconds,
                          "images_per_s": batches.images * len(sandwich_members(space, config, 0)) / seconds,
                          "steps_per_resolution": dict(sorted(resolutions.items())), "skipped_images": skipped,
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


def load_supernet_checkpoint(path: Path, space: SearchSpace | None = None) -> dict:
    """Load a supernet checkpoint; if `space` is given, it must be the space the checkpoint was trained for."""
    payload = load_checkpoint(path, CHECKPOINT_KIND)
    if space is not None and payload.get("space_hash") != space.space_hash:
        saved = payload.get("space") if isinstance(payload.get("space"), dict) else {}
        raise NasError(f"{path}: this supernet was trained for space {saved.get('name')!r} "
                       f"({payload.get('space_hash')}), not {space.name!r} ({space.space_hash}); "
                       "pass the matching --space, or leave --supernet out to train a new one")
    return payload


def load_supernet(path: Path, space: SearchSpace | None = None) -> SpaceSupernet:
    """A trained supernet from a checkpoint written by `train_supernet`: for `space`, which it must have been
    trained for, or (None) for the space recorded in the checkpoint."""
    payload = load_supernet_checkpoint(path, space)
    if space is None:
        space = space_from_dict(payload["space"], str(path))
    model = SpaceSupernet(space)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise NasError(f"{path}: its weights do not fit space {space.name!r}: {first_line(error)}") from None
    return model.eval()
