"""Retrain a searched (or any) architecture standalone; then test accuracy, ONNX export, latency and a model card.

The recipe (`Recipe`; timm's pieces where timm has them): AdamW with a warm-up + cosine schedule, label
smoothing, mixup/CutMix (timm `Mixup`), the loader's augmentation (`nas.data`: random crops or shifts, flips,
RandAugment, random erasing), drop path, an EMA of the weights (timm `ModelEmaV3`), gradient clipping, AMP and
channels_last on CUDA, optionally torch.compile. `default_recipe` scales it to
the size of the data; a recipe YAML (`load_recipe`) overrides any field. The weights may start from the supernet
(`init: supernet`), and the network may also learn from the supernet's largest member (`distill` > 0).

A checkpoint is written every epoch; running the same command again resumes from it. Data order and every random
draw of an epoch (augmentation, mixing, drop path) come from (seed, epoch), so a resumed CPU run ends where an
uninterrupted one does. Under torchrun each process reads and trains on its part of every batch (DDP); rank 0
evaluates, writes and measures.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from nas.arch import Arch
from nas.complexity import count_macs, count_params
from nas.data import Augment, Splits
from nas.errors import NasError
from nas.evaluate import EVAL_BATCH, accuracy
from nas.latency import CAREFUL, LatencyCache, device_lock, measure_arch
from nas.models import CHECKPOINT_KIND, CHECKPOINT_VERSION, read_checkpoint
from nas.report import plot_training
from nas.runs import load_checkpoint, save_checkpoint, write_json, write_yaml
from nas.supernet_training import load_supernet
from nas.training import (Precision, augmentation_problems, batch_loss, batch_mixer, check_resumable,
                          classification_loss, distillation_loss, mixed, optimizer_and_schedule, process_group,
                          rank_and_world, read_settings, run_epoch, wrap_for_ranks)
from supernet.network import build

if TYPE_CHECKING:
    from nas.weight_sharing import SpaceSupernet

INITS = ("scratch", "supernet")


@dataclass
class Recipe:
    """Training settings. The field defaults are a plain schedule (shifts, flips and label smoothing only), the
    one `nas supernet rank` trains with; `default_recipe` turns on the regularisers for a given data set."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(a, a) of mixup; 0 turns it off
    cutmix: float = 0.0  # Beta(a, a) of CutMix; 0 turns it off
    mix_prob: float = 1.0  # share of batches mixed (mixup or CutMix at even odds) when either is on
    randaugment_ops: int = 0  # RandAugment operations per image; 0 turns it off
    randaugment_magnitude: int = 9  # 0-30
    random_erasing: float = 0.0  # probability of erasing a random rectangle of an image (timm RandomErasing)
    drop_path: float = 0.0  # stochastic depth of the deepest block (rising linearly from 0)
    ema_decay: float = 0.0  # decay of the weights' exponential moving average; 0 turns it off
    clip_grad: float = 5.0  # gradient norm clip; 0 turns it off
    init: str = "scratch"  # scratch, or supernet: start from the weights the supernet holds for the arch
    distill: float = 0.0  # weight of distillation from the supernet's largest member (0-1); 0 turns it off
    seed: int = 0

    def check(self) -> "Recipe":
        """`self`, or a NasError naming the first setting out of range."""
        numbers = [getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), float)]
        if not all(math.isfinite(value) for value in numbers):
            raise NasError("recipe: every number must be finite (no nan or inf)")
        problems = [
            (not 1 <= self.epochs <= 10_000, "epochs must be 1 to 10,000"),
            (not 2 <= self.batch_size <= 65_536, "batch_size must be 2 to 65,536"),
            (not 0 < self.lr <= 10, "lr must be above 0 and at most 10"),
            (not 0 <= self.weight_decay <= 10, "weight_decay must be 0 to 10"),
            (not 0 <= self.warmup_epochs <= 10_000, "warmup_epochs must be 0 to 10,000"),
            (not 0 <= self.seed < 2**32, "seed must be 0 to 2**32 - 1"),
            (not 0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            *augmentation_problems(self.randaugment_ops, self.randaugment_magnitude, self.mixup, self.cutmix,
                                   self.mix_prob),
            (not 0 <= self.random_erasing <= 1, "random_erasing must be in [0, 1]"),
            (not 0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (not 0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (not 0 <= self.clip_grad <= 1e6, "clip_grad must be 0 to 1e6"),
            (self.init not in INITS, f"init must be one of {', '.join(INITS)}"),
            (not 0 <= self.distill <= 1, "distill must be in [0, 1]")]
        for failed, message in problems:
            if failed:
                raise NasError(f"recipe: {message}")
        return self


def default_recipe(train_images: int, **overrides: Any) -> Recipe:
    """The recipe for a training set of `train_images` images, with `overrides` (any Recipe field) applied.

    Small sets (under 20k images, such as the embedded one) get 15 epochs and light regularisation (mixup on a
    third of the batches, one RandAugment op at magnitude 5, drop path 0.05); medium ones (under 200k) 30 epochs,
    half the batches mixed, two ops at 7, random erasing 0.25, drop path 0.1; larger ones 100 epochs, every batch
    mixed, two ops at 9, random erasing 0.25, drop path 0.1, 5 warm-up epochs. The EMA averages over about a
    tenth of all steps.
    """
    small, large = train_images < 20_000, train_images >= 200_000
    base: dict[str, Any] = {
        "epochs": 15 if small else 100 if large else 30, "warmup_epochs": 5 if large else 1,
        "mixup": 0.2 if small else 0.8, "cutmix": 1.0, "mix_prob": 0.3 if small else 1.0 if large else 0.5,
        "randaugment_ops": 1 if small else 2, "randaugment_magnitude": 5 if small else 9 if large else 7,
        "drop_path": 0.05 if small else 0.1, "random_erasing": 0.0 if small else 0.25}
    settings = {**base, **overrides}
    if "ema_decay" not in overrides:
        steps = settings["epochs"] * math.ceil(train_images / max(1, settings.get("batch_size", Recipe.batch_size)))
        settings["ema_decay"] = round(min(0.9999, max(0.9, 1 - 10 / max(1, steps))), 5)  # bad values: check() says
    return Recipe(**settings).check()


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The settings of a recipe YAML (any Recipe fields) as overrides for `default_recipe`."""
    return read_settings(path, Recipe)


@dataclass
class Trained:
    """A trained network: the weights kept (`weights`: "ema" when the EMA validated at least as well, else
    "raw") and the per-epoch history (training loss, validation top-1 of both, learning rate, seconds)."""

    model: nn.Module
    history: list[dict[str, Any]]
    weights: str


def load_model(path: str | Path) -> nn.Module:
    """A retrained checkpoint as a plain `nn.Module` in eval mode (`nas.models` also loads it as a timm model)."""
    return read_checkpoint(path)[0]


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every generator an epoch draws from: torch (drop path), numpy (mixup) and Python."""
    value = seed * 100_003 + epoch
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def supernet_for(arch: Arch, path: Path) -> "SpaceSupernet":
    """The supernet checkpoint at `path`, checked to hold `arch` (for `init: supernet` and `distill`)."""
    supernet = load_supernet(path)
    space = supernet.space
    if arch.timm_model or not space.contains(arch) or space.num_classes != arch.num_classes:
        raise NasError(f"{path}: arch {arch.arch_id} is not a member of this supernet's space {space.name!r} "
                       f"({space.num_classes} classes); pass the supernet it was searched with, or --init scratch "
                       "and no distillation")
    return supernet


def _check_resumable(payload: dict[str, Any], arch: Arch, recipe: Recipe, path: Path) -> None:
    if payload.get("arch_id") != arch.arch_id:
        raise NasError(f"{path}: holds a checkpoint of arch {payload.get('arch_id')}, not {arch.arch_id}; "
                       "use another --run-dir")
    # a checkpoint of another version may hold what this one's training would not reproduce
    check_resumable({**payload.get("recipe", {}), "checkpoint version": payload.get("version")},
                    {**asdict(recipe), "checkpoint version": CHECKPOINT_VERSION}, ("epochs",), path)


def train_standalone(arch: Arch, data: Splits, recipe: Recipe, device: torch.device, checkpoint: Path,
                     log: Callable[[str], None] = print, supernet: "SpaceSupernet | None" = None,
                     compile_model: bool = False) -> Trained:
    """Train `arch` for `recipe.epochs`, checkpointing every epoch and resuming from `checkpoint`. `supernet` is
    needed for `init: supernet` and `distill`; `compile_model` trains through torch.compile. Under torchrun, call
    it inside `process_group`; rank 0 logs, evaluates and writes."""
    from timm.utils import ModelEmaV3

    recipe.check()
    if (recipe.init == "supernet" or recipe.distill) and supernet is None:
        raise NasError("recipe: init supernet and distill need the supernet: pass --supernet CKPT")
    rank, world = rank_and_world()
    main = rank == 0
    torch.manual_seed(recipe.seed)
    model = build(arch, recipe.drop_path).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    augment = Augment(recipe.randaugment_ops, recipe.randaugment_magnitude, recipe.random_erasing)
    batches = data.loader("train", arch.resolution, arch.in_channels, recipe.batch_size, train=True, seed=recipe.seed,
                          augment=augment, rank=rank, world=world, pin_memory=device.type == "cuda")
    if batches.sampler.dropped:
        log(f"dropping the last {batches.sampler.dropped} training image(s): too few for {world} processes")
    val = data.loader("val", arch.resolution, arch.in_channels, EVAL_BATCH) if main else None
    steps = len(batches)
    optimizer, scheduler = optimizer_and_schedule(model, recipe.lr, recipe.weight_decay, recipe.epochs,
                                                  recipe.warmup_epochs, steps)
    precision = Precision(device)
    payload = load_checkpoint(checkpoint, CHECKPOINT_KIND) if checkpoint.exists() else None
    if payload is not None:
        _check_resumable(payload, arch, recipe, checkpoint)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        precision.scaler.load_state_dict(payload["scaler"])
    elif recipe.init == "supernet":
        model.load_state_dict(supernet.extract(arch).state_dict())
    ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay else None
    if ema is not None and payload is not None:
        ema.module.load_state_dict(payload["ema"])
    start_epoch, history = (payload["epoch"], payload["history"]) if payload is not None else (0, [])
    if payload is not None and start_epoch < recipe.epochs:
        log(f"resuming retraining from {checkpoint} after epoch {start_epoch}/{recipe.epochs}")
    teacher = None
    if recipe.distill:
        teacher = supernet.extract(supernet.space.largest()).to(device).eval().requires_grad_(False)
    mixer = batch_mixer(recipe.mixup, recipe.cutmix, recipe.mix_prob, recipe.label_smoothing, arch.num_classes)
    net = wrap_for_ranks(torch.compile(model) if compile_model else model, device)

    def train_batch(x: torch.Tensor, y: torch.Tensor, share: float, global_step: int) -> float:
        loss = _train_step(net, model, teacher, x, y, share, recipe, mixer, optimizer, precision)
        if ema is not None:
            ema.update(model, step=global_step)
        return loss

    skipped = 0

    with device_lock(device, exclusive=False):  # measurements elsewhere wait for training
        for epoch in range(start_epoch, recipe.epochs):
            seed_epoch(recipe.seed, epoch)
            model.train()
            began = time.perf_counter()
            total = run_epoch(batches, epoch, f"retrain epoch {epoch + 1}/{recipe.epochs}", scheduler,
                              train_batch, log=log)
            skipped = data.note_skipped(log, skipped)
            if not main:
                continue
            record = {"epoch": epoch + 1, "train_loss": total / steps, "val_acc": accuracy(model, val)[1],
                      "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - began}
            if ema is not None:
                record["val_acc_ema"] = accuracy(ema.module, val)[1]
            history.append(record)
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "arch": arch.to_dict(),
                "arch_id": arch.arch_id, "epoch": epoch + 1, "recipe": asdict(recipe), "history": history,
                "model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scaler": precision.scaler.state_dict()})
            ema_note = f", EMA {record['val_acc_ema']:.3f}" if ema is not None else ""
            log(f"retrain epoch {epoch + 1}/{recipe.epochs}: loss {record['train_loss']:.3f}, "
                f"val top-1 {record['val_acc']:.3f}{ema_note} ({record['seconds']:.0f} s)")
        if world > 1:
            torch.distributed.barrier()  # no rank leaves the process group before rank 0 has written
    if ema is not None and main and history[-1]["val_acc_ema"] >= history[-1]["val_acc"]:
        return Trained(ema.module.eval(), history, "ema")
    return Trained(model.eval(), history, "raw")


def _train_step(net: nn.Module, model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                share: float, recipe: Recipe, mixer: Callable | None, optimizer: torch.optim.Optimizer,
                precision: Precision) -> float:
    """One optimiser step on this rank's part (x, y) of the global batch, `share` its weight; returns the global
    batch's loss. `net` runs `model` (compiled, DDP-wrapped or itself). Each rank mixes pairs within its part."""
    device = next(model.parameters()).device
    x, target = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    x, target, share = mixed(mixer, x, target, share)
    with precision.autocast():
        logits = net(x).float()
    loss = classification_loss(logits, target, recipe.label_smoothing)
    if teacher is not None:
        with torch.no_grad(), precision.autocast():
            teacher_log_probs = teacher(x).float().log_softmax(dim=-1)
        loss = (1 - recipe.distill) * loss + recipe.distill * distillation_loss("kl", logits, teacher_log_probs)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss * share).backward()
    if recipe.clip_grad:
        precision.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return batch_loss(net, loss.detach() * share)


def retrain(arch: Arch, data: Splits, run_dir: Path, recipe: Recipe, device: torch.device, threads: int,
            runtime: str = "torch", budget_ms: float | None = None, expected_ms: float | None = None,
            expected_p90_ms: float | None = None, supernet: "SpaceSupernet | None" = None,
            source: str = "", log: Callable[[str], None] = print, compile_model: bool = False
            ) -> dict[str, Any] | None:
    """Train `arch` in `run_dir` (resuming its checkpoint), then test it, export and verify ONNX, measure latency
    with torch and ONNX Runtime (and `runtime`), and write model.pt, model.onnx, metrics.json, recipe.yaml,
    training.png and MODEL_CARD.md. Returns the metrics (None on the ranks other than 0 under torchrun).

    `expected_ms` and `expected_p90_ms` are the search's measurement of the arch (best.yaml) with `runtime`, used
    to recognise a disturbed re-measurement; `budget_ms` is checked against the re-measured p90.
    """
    from nas.export import export_and_verify
    from nas.report import write_model_card

    checkpoint = run_dir / "checkpoint.pt"
    if rank_and_world()[0] == 0:
        if checkpoint.exists():  # another run's checkpoint is refused before anything is written beside it
            _check_resumable(load_checkpoint(checkpoint, CHECKPOINT_KIND), arch, recipe, checkpoint)
        run_dir.mkdir(parents=True, exist_ok=True)
        data.save_split(run_dir)
    with process_group(device) as rank_device:
        trained = train_standalone(arch, data, recipe, rank_device, checkpoint, log, supernet, compile_model)
    if rank_and_world()[0] != 0:
        return None
    model, history = trained.model, trained.history
    test = accuracy(model, data.loader("test", arch.resolution, arch.in_channels, EVAL_BATCH), topk=(1, 5))
    onnx = export_and_verify(model, arch, data, run_dir / "model.onnx")
    log(f"ONNX export verified: {onnx['onnx']} (max |torch - onnxruntime| {onnx['max_abs_diff']:.2g} on "
        f"{onnx['images']} test images)")
    latency, cache = {}, LatencyCache()
    for name in dict.fromkeys([runtime, "torch", "onnxruntime"]):  # ONNX Runtime times the file just verified
        expected = {"expected_ms": expected_ms, "expected_p90_ms": expected_p90_ms} if name == runtime else {}
        latency[name] = measure_arch(arch, device, name, threads, cache=cache, model=model, refresh=True,
                                     onnx_file=Path(onnx["onnx"]), **expected, **CAREFUL).to_dict()
    chosen = latency[runtime]
    metrics = {
        "arch_id": arch.arch_id, "source": source, "test_top1": round(test[1], 4), "test_top5": round(test[5], 4),
        "val_top1": round(history[-1]["val_acc_ema" if trained.weights == "ema" else "val_acc"], 4),
        "weights": trained.weights, "runtime": runtime, "latency_ms": round(chosen["median_ms"], 4),
        "latency_p90_ms": round(chosen["p90_ms"], 4), "budget_ms": budget_ms,
        "within_budget": None if budget_ms is None else chosen["p90_ms"] <= budget_ms,
        "params": count_params(model),
        "macs": count_macs(model, (1, arch.in_channels, arch.resolution, arch.resolution)),
        "epochs": recipe.epochs, "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "data": data.source, "images": {split: data.size(split) for split in ("train", "val", "test")},
        "skipped_images": data.skipped,
        "onnx": onnx, "latency": latency, "recipe": asdict(recipe),
    }
    save_checkpoint(run_dir / "model.pt", {"format": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION,
                                           "arch": arch.to_dict(), "arch_id": arch.arch_id, "epoch": recipe.epochs,
                                           "recipe": asdict(recipe), "history": history, "weights": trained.weights,
                                           "crop_pct": data.crop_pct,
                                           "model": copy.deepcopy(model).cpu().state_dict()})
    write_json(run_dir / "metrics.json", metrics)
    write_yaml(run_dir / "recipe.yaml", asdict(recipe))
    plot_training(history, run_dir / "training.png", f"retrain {arch.arch_id}")
    write_model_card(run_dir / "MODEL_CARD.md", arch, metrics)
    return metrics
