"""Retrain a searched (or any) architecture standalone, then report test accuracy and measured latency.

AdamW with a warm-up + cosine schedule (timm), label smoothing, random shifts and flips. A checkpoint is
written every epoch; running the same command again resumes from it. Data order and augmentation come from
(seed, epoch), so a resumed CPU run ends where an uninterrupted one does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Arch
from nas.complexity import count_macs, count_params
from nas.data import Splits, training_epoch
from nas.errors import NasError
from nas.evaluate import accuracy
from nas.latency import CAREFUL, LatencyCache, device_lock, measure_arch
from nas.report import plot_training
from nas.runs import load_checkpoint, save_checkpoint, write_json
from supernet.network import build
from supernet.training import optimizer_and_schedule

CHECKPOINT_KIND = "nas-model"


@dataclass
class Recipe:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    seed: int = 0


def load_model(path: str | Path) -> nn.Module:
    """A retrained checkpoint as a plain `nn.Module` in eval mode."""
    payload = load_checkpoint(Path(path), CHECKPOINT_KIND)
    model = build(Arch.from_dict(payload["arch"], str(path)))
    model.load_state_dict(payload["model"])
    return model.eval()


def train_standalone(arch: Arch, data: Splits, recipe: Recipe, device: torch.device, checkpoint: Path,
                     log: Callable[[str], None] = print) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train `arch` from scratch for `recipe.epochs`, checkpointing every epoch and resuming from `checkpoint`;
    returns the model and the per-epoch history (training loss, validation top-1, seconds)."""
    torch.manual_seed(recipe.seed)
    model = build(arch).to(device)
    x, y = data.tensors("train", arch.resolution, arch.in_channels)
    x_val, y_val = data.tensors("val", arch.resolution, arch.in_channels)
    steps = math.ceil(len(x) / recipe.batch_size)
    optimizer, scheduler = optimizer_and_schedule(model, recipe.lr, recipe.weight_decay, recipe.epochs,
                                                  recipe.warmup_epochs, steps)
    start_epoch, history = 0, []
    if checkpoint.exists():
        payload = load_checkpoint(checkpoint, CHECKPOINT_KIND)
        if payload.get("arch_id") != arch.arch_id:
            raise NasError(f"{checkpoint}: holds a checkpoint of arch {payload.get('arch_id')}, not {arch.arch_id}; "
                           "use another --run-dir")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        start_epoch, history = payload["epoch"], payload["history"]
        if start_epoch < recipe.epochs:
            log(f"resuming retraining from {checkpoint} after epoch {start_epoch}/{recipe.epochs}")
    with device_lock(device, exclusive=False):  # measurements elsewhere wait for training
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            began, total = time.perf_counter(), 0.0
            bar = training_epoch(x, y, recipe.batch_size, recipe.seed, epoch,
                                 f"retrain epoch {epoch + 1}/{recipe.epochs}")
            for step, (xb, yb) in enumerate(bar):
                scheduler.step_update(epoch * steps + step)
                loss = F.cross_entropy(model(xb.to(device)), yb.to(device), label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total += loss.item()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            record = {"epoch": epoch + 1, "train_loss": total / steps, "val_acc": accuracy(model, x_val, y_val)[1],
                      "seconds": time.perf_counter() - began}
            history.append(record)
            save_checkpoint(checkpoint, {"format": CHECKPOINT_KIND, "version": 1, "arch": arch.to_dict(),
                                         "arch_id": arch.arch_id, "epoch": epoch + 1, "recipe": asdict(recipe),
                                         "history": history, "model": model.state_dict(),
                                         "optimizer": optimizer.state_dict()})
            log(f"retrain epoch {epoch + 1}/{recipe.epochs}: loss {record['train_loss']:.3f}, "
                f"val top-1 {record['val_acc']:.3f} ({record['seconds']:.0f} s)")
    return model, history


def retrain(arch: Arch, data: Splits, run_dir: Path, recipe: Recipe, device: torch.device, threads: int,
            runtime: str = "torch", budget_ms: float | None = None, expected_ms: float | None = None,
            expected_p90_ms: float | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `arch` from scratch in `run_dir` (resuming its checkpoint), evaluate, measure; write metrics.json.

    `expected_ms` and `expected_p90_ms` are the search's measurement of the arch (best.yaml), used to
    recognise a disturbed re-measurement.
    """
    model, history = train_standalone(arch, data, recipe, device, run_dir / "checkpoint.pt", log)

    x_test, y_test = data.tensors("test", arch.resolution, arch.in_channels)
    test = accuracy(model, x_test, y_test, topk=(1, 5))
    latency = measure_arch(arch, device, runtime, threads, cache=LatencyCache(), model=model, refresh=True,
                           expected_ms=expected_ms, expected_p90_ms=expected_p90_ms, **CAREFUL)
    metrics = {
        "arch_id": arch.arch_id, "test_top1": round(test[1], 4), "test_top5": round(test[5], 4),
        "val_top1": round(history[-1]["val_acc"], 4), "latency_ms": round(latency.median_ms, 4),
        "latency_p90_ms": round(latency.p90_ms, 4), "budget_ms": budget_ms,
        "within_budget": None if budget_ms is None else latency.median_ms <= budget_ms,
        "params": count_params(model),
        "macs": count_macs(model, (1, arch.in_channels, arch.resolution, arch.resolution)),
        "epochs": recipe.epochs, "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "data": data.source, "latency": latency.to_dict(), "recipe": asdict(recipe),
    }
    save_checkpoint(run_dir / "model.pt", {"format": CHECKPOINT_KIND, "version": 1, "arch": arch.to_dict(),
                                           "arch_id": arch.arch_id, "epoch": recipe.epochs, "recipe": asdict(recipe),
                                           "history": history, "model": model.state_dict()})
    write_json(run_dir / "metrics.json", metrics)
    plot_training(history, run_dir / "training.png", f"retrain {arch.arch_id}")
    return metrics
