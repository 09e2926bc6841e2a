"""Plots a person would rather look at than read (the search's Pareto front, training curves), the search report
and a retrained model's card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from nas.arch import Arch


def _finish(fig: plt.Figure, ax: plt.Axes, path: Path, title: str) -> None:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    references = [r for r in rows if r.get("reference")]
    if references:
        ax.scatter([r["latency_ms"] for r in references], [r["val_acc"] for r in references], s=110, marker="*",
                   c="#55a868", edgecolors="black", linewidths=0.5, zorder=3, label="reference architectures")
        for r in references:
            ax.annotate(r["reference"], (r["latency_ms"], r["val_acc"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    ax.axvline(budget_ms, ls="--", c="#c44e52", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("measured latency, median (ms)")
    ax.set_ylabel("validation accuracy (supernet weights)")
    _finish(fig, ax, path, title)


def plot_training(history: list[dict], path: Path, title: str) -> None:
    """Training loss and validation accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
    left.plot(epochs, [h["train_loss"] for h in history], "-o", ms=3)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(epochs, [h["val_acc"] for h in history], "-o", ms=3, c="#55a868", label="weights")
    if all("val_acc_ema" in h for h in history):
        right.plot(epochs, [h["val_acc_ema"] for h in history], "-o", ms=3, c="#c44e52", label="EMA of the weights")
        right.legend()
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


def plot_history(rows: list[dict], path: Path, title: str) -> None:
    """Validation accuracy of every trial in order, and the best feasible accuracy so far."""
    ordered = sorted(rows, key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.scatter([r["trial"] for r in ordered], [r["val_acc"] for r in ordered], s=10,
               c=["#4c72b0" if r["feasible"] else "#bbbbbb" for r in ordered], label="trial (grey: over budget)")
    best, line = None, []
    for r in ordered:
        if r["feasible"] and (best is None or r["val_acc"] > best):
            best = r["val_acc"]
        line.append(best)
    ax.step([r["trial"] for r in ordered], line, where="post", c="#dd8452", label="best feasible so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (supernet)")
    _finish(fig, ax, path, title)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for _, key in columns) + " |")
    return lines


def uses_only(row: dict, family: str, stage_families: list[list[str]]) -> bool:
    """Whether a trial uses `family` in every slot it fills that offers it, and in one at least (its `slots` say
    which slots its stages fill: a skipped slot would otherwise shift every later stage)."""
    used = dict(zip(map(int, row["slots"].split("-")), row["families"].split("-")))
    offering = [name for slot, name in used.items() if family in stage_families[slot]]
    return bool(offering) and all(name == family for name in offering)


def family_bests(rows: list[dict], stage_families: list[list[str]]) -> dict[str, dict | None]:
    """Per block family (per slot, `stage_families`: what each offers), the most accurate feasible trial that uses
    only it wherever it is offered."""
    bests: dict[str, dict | None] = {}
    for family in dict.fromkeys(f for offered in stage_families for f in offered):
        members = [r for r in rows if r["feasible"] and uses_only(r, family, stage_families)]
        bests[family] = max(members, key=lambda r: (r["val_acc"], -r["latency_ms"])) if members else None
    return bests


def write_report(run_dir: Path, title: str, summary: dict, rows: list[dict], front: list[dict],
                 stage_families: list[list[str]], seconds: float, outside_references: list[str],
                 shortlist: list[dict] | None = None) -> Path:
    """report.md: the front, the re-scored shortlist (if any), the winner against the reference architectures,
    each family's best, the search history and timings. `outside_references` names the reference architectures
    that are not in the space."""
    plot_history(rows, run_dir / "history.png", title)
    columns = [("trial", "trial"), ("arch id", "arch_id"), ("val acc", "val_acc"), ("latency ms", "latency_ms"),
               ("p90 ms", "latency_p90_ms"), ("params", "params"), ("families", "families"), ("depths", "depths"),
               ("widths", "widths")]
    winner = next(r for r in rows if r["arch_id"] == summary["arch_id"])
    lines = [f"# Search report: {title}", "", "![Pareto front](pareto.png)", "", "## Winner", "",
             f"`{summary['arch_id']}` (trial {summary['provenance']['trial']}): supernet validation accuracy "
             f"{summary['val_accuracy_supernet']:.3f}"
             + (f" ({summary['val_accuracy_rescored']:.3f} re-scored: see below)" if "rescore" in summary else "")
             + f", re-measured latency {summary['latency_ms']:.3f} ms median / "
             f"{summary['latency_p90_ms']:.3f} ms p90 against the {summary['budget_ms']:g} ms budget on "
             f"{summary['device']['name']} ({summary['device']['runtime']}, {summary['device']['threads']} "
             f"thread(s)); {summary['params']:,} parameters, {summary['macs'] / 1e6:.2f} M MACs; stages "
             f"{winner['families']}. Retrain it with `nas retrain {run_dir / 'best.yaml'}`.", "",
             "## Pareto front (feasible, re-measured)", ""]
    lines += _table(front, columns[:5] + [("re-measured ms", "remeasured_ms"), ("re-measured p90", "remeasured_p90_ms")]
                    + columns[5:] + [("MACs", "macs")])
    if shortlist:
        rescore = summary["rescore"]
        lines += ["", "## Re-scored shortlist", "",
                  f"The {rescore['top']} most accurate feasible trials, each trained from scratch for "
                  f"{rescore['steps']} batches and scored on the validation images; the winner is the best of them "
                  "by that score. On hybrid_cpu that score ranked 40 sampled members closer to full training than "
                  "any supernet did (README, bench/rank.py --control-steps). Best first.", ""]
        lines += _table(shortlist, columns[:2] + [("supernet val acc", "val_acc"), ("re-scored acc", "rescored_acc"),
                                                  ("re-measured p90", "remeasured_p90_ms")] + columns[5:])
    lines += ["", "## Winner vs reference architectures", "",
              "The papers' architectures that are members of this space were evaluated as trials of the search "
              "(supernet accuracy, measured latency); they are the stars in pareto.png.", ""]
    references = [{"model": f"reference {r['reference']}", **r} for r in rows if r.get("reference")]
    lines += _table([{"model": "winner", **winner}] + references, [("model", "model")] + columns[1:])
    if outside_references:
        lines += ["", "Not compared here, as no trial of this space can be them (another resolution, channel count "
                  f"or size, or knobs set per block): {', '.join(outside_references)}."]
    lines += ["", "## Best feasible member of each block family", "",
              "The most accurate trial within the budget that uses one family wherever the space offers it, "
              "to show what mixing families bought.", ""]
    bests = family_bests(rows, stage_families)
    lines += _table([{"family": f, **(r or {"arch_id": "none sampled"})} for f, r in bests.items()],
                    [("family", "family")] + columns)
    measured = sum(r["latency_source"] == "measured" for r in rows)
    lines += ["", "## Search history", "", "![history](history.png)", "", "## Timings", "",
              f"- {len(rows)} completed trials ({sum(r['feasible'] for r in rows)} within the budget); this "
              f"session ran for {seconds:.0f} s ({60 * len(rows) / max(seconds, 1e-9):.1f} trials/min over all "
              "trials if none were resumed)",
              f"- latency measured for {measured} trials, predicted for {len(rows) - measured}",
              f"- mean time per trial: {sum(r['seconds'] or 0 for r in rows) / max(len(rows), 1):.2f} s", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_model_card(path: Path, arch: "Arch", metrics: dict) -> Path:
    """MODEL_CARD.md for a retrained model: what it is, how it was trained, how well and how fast it runs."""
    if arch.timm_model:
        structure = [f"- timm baseline `{arch.timm_model}` (classifier fitted to {arch.num_classes} classes)"]
    else:
        structure = [f"- stem `{arch.stem_type}` ({arch.stem_width} channels), head `{arch.head_type}`"
                     + (f", {arch.global_tokens} global tokens" if arch.global_tokens else "")]
        structure += [f"- stage {i + 1}: {s.family}, depth {s.depth}, width {s.width}, stride {s.stride}"
                      for i, s in enumerate(arch.stages)]
    recipe = metrics["recipe"]
    latency = [f"| {name} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['device_name']} | {r['threads']} | "
               f"{r['runtime_version']} |" for name, r in metrics["latency"].items()]
    budget = ""
    if metrics["budget_ms"] is not None:
        verdict = "within" if metrics["within_budget"] else "OVER"
        budget = f"Measured p90 with {metrics['runtime']}: {verdict} the search's {metrics['budget_ms']:g} ms budget."
    onnx = metrics["onnx"]
    lines = [
        f"# Model card: `{arch.arch_id}`", "",
        f"Image classifier found by `nas` ({metrics['source'] or 'an arch file'}), retrained standalone.", "",
        "## Architecture", "",
        f"- input: {arch.in_channels} x {arch.resolution} x {arch.resolution}, scaled to [-1, 1] "
        "((pixel / 255 - 0.5) / 0.5)",
        f"- {metrics['params']:,} parameters, {metrics['macs'] / 1e6:.2f} M multiply-accumulates", *structure, "",
        "## Training", "",
        f"- data: {metrics['data']} ({metrics['images']['train']} training, {metrics['images']['val']} validation, "
        f"{metrics['images']['test']} test images)",
        f"- {recipe['epochs']} epochs, batch {recipe['batch_size']}, AdamW lr {recipe['lr']:g} (cosine, "
        f"{recipe['warmup_epochs']} warm-up), weight decay {recipe['weight_decay']:g}, label smoothing "
        f"{recipe['label_smoothing']:g}, mixup {recipe['mixup']:g} / CutMix {recipe['cutmix']:g} on "
        f"{recipe['mix_prob']:.0%} of batches, RandAugment {recipe['randaugment_ops']} op(s) at "
        f"{recipe['randaugment_magnitude']}, drop path {recipe['drop_path']:g}, EMA {recipe['ema_decay']:g}, "
        f"init {recipe['init']}, distillation {recipe['distill']:g}, seed {recipe['seed']}",
        f"- kept weights: {metrics['weights']} (the better on validation); "
        f"{metrics['train_seconds']:.0f} s of training",
        "", "## Results", "",
        f"- test top-1 {100 * metrics['test_top1']:.2f} %, top-5 {100 * metrics['test_top5']:.2f} % "
        f"(validation top-1 {100 * metrics['val_top1']:.2f} %)", "",
        "| runtime | median ms | p90 ms | device | threads | version |", "|---|---|---|---|---|---|", *latency,
        "", "Batch 1. " + budget, "",
        "## Files", "",
        "- `model.pt`: weights and arch (`nas.retrain.load_model(path)` gives an `nn.Module`)",
        f"- `model.onnx`: opset 18, input `input` [1, {arch.in_channels}, {arch.resolution}, {arch.resolution}], "
        f"output `logits`; matches torch within {onnx['max_abs_diff']:.2g} (max abs) on {onnx['images']} test images",
        "- `metrics.json`, `training.png`, `recipe.yaml` (repeat the training with `--recipe`)", "",
        "## Limits", "",
        "Accuracy is measured on this data's test split only, and latency on the device above at batch 1; "
        "other data, devices, runtimes or batch sizes need their own measurement.", ""]
    path.write_text("\n".join(lines))
    return path
