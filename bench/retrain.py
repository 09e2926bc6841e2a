"""The quick-start winner against single-family members and timm baselines, retrained with one recipe.

    .venv/bin/python bench/retrain.py                         # runs the quick-start search first (hybrid_cpu, 5 ms)
    .venv/bin/python bench/retrain.py --run runs/quickstart --epochs 15

From a finished search: the winner (best.yaml), and for each block family the best feasible member that uses only
that family (the search's per-family results, as in report.md); plus timm `mobilevit_xxs` and `ghostnet_050` at
the same input size and channels. Each is retrained as `nas retrain` does (the same recipe, equal epochs) on the
embedded data, then tested and measured on this CPU (torch eager and ONNX Runtime, batch 1, the search's
threads). Prints one table: test accuracy, latency, params, whether the p90 meets the search's budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

BASELINES = ("mobilevit_xxs", "ghostnet_050")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def family_members(run: Path, best: dict) -> dict[str, dict]:
    """Per family, the arch of the search's best feasible single-family trial (None where none was sampled)."""
    import optuna

    from nas.report import family_bests
    from nas.space import load_space

    space = load_space(best["provenance"]["space"])
    rows = [{**row, "feasible": row["feasible"] == "True", "val_acc": float(row["val_acc"]),
             "latency_ms": float(row["latency_ms"]), "trial": int(row["trial"])}
            for row in csv.DictReader(open(run / "trials.csv"))]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run / "study.journal")))
    study = optuna.load_study(study_name="search", storage=storage)
    return {family: study.trials[row["trial"]].user_attrs["arch"]
            for family, row in family_bests(rows, [list(s.families) for s in space.stages]).items() if row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished search's folder (default: run the quick-start search)")
    parser.add_argument("--space", default="search_spaces/hybrid_cpu.yaml", help="space of the quick-start search")
    parser.add_argument("--budget", default="5ms", help="budget of the quick-start search")
    parser.add_argument("--epochs", type=int, default=15, help="retraining epochs, the same for every model")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke runs)")
    args = parser.parse_args()

    from nas.errors import NasError
    from nas.retrain_runs import RetrainOptions, retrain_file, retrained_lines
    from nas.search.run import search, search_lines
    from nas.search.study import search_settings

    work = Path(tempfile.mkdtemp(prefix="nas-bench-retrain-"))
    os.environ.setdefault("NAS_CACHE_DIR", str(work / "cache"))
    run = Path(args.run) if args.run else work / "search"
    if not args.run:  # `nas search --space SPACE --latency-budget BUDGET --device cpu --run-dir RUN`
        try:
            found = search(search_settings({"space": args.space, "latency_budget": args.budget, "device": "cpu"}),
                           run, log)
        except NasError as error:
            raise SystemExit(f"the quick-start search failed: {error}")
        print("\n".join(search_lines(found)))
    best = yaml.safe_load((run / "best.yaml").read_text())
    arch = best["arch"]
    candidates = {"winner": run / "best.yaml"}
    for family, member in family_members(run, best).items():
        path = work / "archs" / f"{family}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(member))
        candidates[f"best-{family}-only"] = path
    for name in BASELINES:  # at the searched input size and channels, classifier fitted to the data
        path = work / "archs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"timm": name, "resolution": arch["resolution"],
                                        "in_channels": arch["in_channels"], "num_classes": 10}))
        candidates[f"timm-{name}"] = path
    threads = str(best["device"]["threads"])
    (work / "retrain").mkdir()  # each model's run folder is made inside it
    results = {}
    for label, path in candidates.items():
        print(f"\n=== {label}: retraining {args.epochs} epochs", file=sys.stderr)
        out = work / "retrain" / label
        # `nas retrain PATH --epochs N --device cpu --threads T --runtime torch --run-dir OUT [--limit-train N]`
        options = RetrainOptions(device="cpu", threads=int(threads), runtime="torch", limit_train=args.limit_train,
                                 epochs=args.epochs)
        try:
            print("\n".join(retrained_lines(retrain_file(str(path), options, out, log))))
        except NasError as error:
            raise SystemExit(f"retraining {label} failed: {error}")
        results[label] = json.loads((out / "metrics.json").read_text())

    budget = best["budget_ms"]
    print(f"\n{args.epochs} epochs each, one recipe, embedded Fashion-MNIST subset at {arch['resolution']}x"
          f"{arch['resolution']}x{arch['in_channels']}; latency batch 1, {threads} thread(s), {best['device']['name']};"
          f" search budget {budget:g} ms (p90, torch)")
    print(f"{'model':28} {'arch id':12} {'params':>9} {'M MACs':>7} {'top-1 %':>7} {'top-5 %':>7} "
          f"{'torch ms':>8} {'p90':>7} {'ORT ms':>7} {'fits':>5}")
    for label, m in results.items():
        torch_ms, ort_ms = m["latency"]["torch"], m["latency"]["onnxruntime"]
        print(f"{label:28} {m['arch_id']:12} {m['params']:9,} {m['macs'] / 1e6:7.2f} {100 * m['test_top1']:7.2f} "
              f"{100 * m['test_top5']:7.2f} {torch_ms['median_ms']:8.3f} {torch_ms['p90_ms']:7.3f} "
              f"{ort_ms['median_ms']:7.3f} {'yes' if torch_ms['p90_ms'] <= budget else 'no':>5}")
    print(f"\nmodels, metrics and model cards: {work / 'retrain'}")


if __name__ == "__main__":
    main()
