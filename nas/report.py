"""Plots a person would rather look at than read: the search's Pareto front and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_pareto(rows: list[dict], front: list[dict], budget_ms: float, path: Path, title: str) -> None:
    """Every trial (feasible or not), the feasible front, and the budget line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    feasible = [r for r in rows if r["feasible"]]
    infeasible = [r for r in rows if not r["feasible"]]
    ax.scatter([r["latency_ms"] for r in infeasible], [r["val_acc"] for r in infeasible], s=14, c="#bbbbbb",
               label="over budget (p90)")
    ax.scatter([r["latency_ms"] for r in feasible], [r["val_acc"] for r in feasible], s=14, c="#4c72b0",
               label="within budget")
    ordered = sorted(front, key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in ordered], [r["val_acc"] for r in ordered], "-o", c="#dd8452", ms=5,
            label="Pareto front")
    ax.axvline(budget_ms, ls="--", c="#c44e52", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("measured latency, median (ms)")
    ax.set_ylabel("validation accuracy (supernet weights)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(history: list[dict], path: Path, title: str) -> None:
    """Training loss and validation accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
    left.plot(epochs, [h["train_loss"] for h in history], "-o", ms=3)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(epochs, [h["val_acc"] for h in history], "-o", ms=3, c="#55a868")
    right.set_xlabel("epoch")
    right.set_ylabel("validation top-1")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_predictor(features: list, records: list, predictor, path: Path) -> None:
    """Predicted against measured median latency for every measured sub-network."""
    measured = [r.median_ms for r in records]
    predicted = predictor.predict_features(features)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(measured, predicted, s=12)
    low, high = min(measured + list(predicted)), max(measured + list(predicted))
    ax.plot([low, high], [low, high], "--", c="#888888")
    ax.plot([low, high], [low * 1.1, high * 1.1], ":", c="#c44e52", label="±10 %")
    ax.plot([low, high], [low * 0.9, high * 0.9], ":", c="#c44e52")
    ax.set_xlabel("measured median latency (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(f"{predictor.runtime}: held-out Spearman {predictor.metrics['spearman']:.3f}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
