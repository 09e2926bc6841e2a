"""Search figures on the embedded data: samplers compared at equal trial counts, and Ray throughput.

    .venv/bin/python bench/search.py                          # cpu_small, 3 seeds x 30 trials, budget 5ms
    .venv/bin/python bench/search.py --seeds 5 --trials 60 --skip-ray

One supernet is trained first and shared by every search. For each sampler (NSGA-II, TPE, random) and seed it
reports the hypervolume of the feasible (accuracy, latency) front, with the reference point (accuracy 0,
latency = budget), and the best feasible accuracy. Then trials per minute with the Ray backend and 1 and 2
workers, each with an empty latency cache so both measure everything.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def hypervolume(rows: list[dict], budget_ms: float) -> float:
    """Area dominated by the feasible points in (latency up to the budget) x (accuracy above 0)."""
    points = sorted((float(r["latency_ms"]), float(r["val_acc"])) for r in rows if r["feasible"] == "True")
    area, best = 0.0, 0.0
    for latency, accuracy in points:
        if accuracy > best:
            area += (budget_ms - latency) * (accuracy - best)
            best = accuracy
    return area


def search(args: list[str], cache: Path) -> dict:
    """Run `nas search` in this process with its own latency cache; returns its best.yaml."""
    import yaml

    from nas.cli import main

    os.environ["NAS_CACHE_DIR"] = str(cache)
    if main(args):
        raise SystemExit(f"search failed: {args}")
    return yaml.safe_load((Path(args[args.index("--run-dir") + 1]) / "best.yaml").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    parser.add_argument("--budget", default="5ms")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-samplers", action="store_true")
    parser.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from nas.cli import main as nas_main

    work = Path(tempfile.mkdtemp(prefix="nas-bench-search-"))
    cache = work / "cache"
    os.environ["NAS_CACHE_DIR"] = str(cache)
    supernet_dir = work / "supernet"
    if nas_main(["supernet", "train", "--space", args.space, "--run-dir", str(supernet_dir), "--epochs",
                 str(args.epochs)]):
        raise SystemExit("supernet training failed")
    common = ["search", "--space", args.space, "--latency-budget", args.budget, "--supernet",
              str(supernet_dir / "supernet.pt"), "--trials", str(args.trials)]
    results: dict[str, list[tuple[float, float]]] = {}
    for sampler in () if args.skip_samplers else ("nsga2", "tpe", "random"):
        for seed in range(args.seeds):
            run_dir = work / f"{sampler}-{seed}"
            summary = search(common + ["--sampler", sampler, "--seed", str(seed), "--run-dir", str(run_dir)], cache)
            rows = list(csv.DictReader(open(run_dir / "trials.csv")))
            best = max((float(r["val_acc"]) for r in rows if r["feasible"] == "True"), default=0.0)
            results.setdefault(sampler, []).append((hypervolume(rows, summary["budget_ms"]), best))
    if results:
        print(f"\nsamplers on {Path(args.space).name}, budget {args.budget}, {args.trials} trials, {args.seeds} "
              "seeds (mean ± sd over seeds; hypervolume in accuracy x ms)")
    for sampler, values in results.items():
        volumes, bests = [v for v, _ in values], [b for _, b in values]
        print(f"  {sampler:7s} hypervolume {statistics.mean(volumes):.4f} ± {statistics.pstdev(volumes):.4f}   "
              f"best feasible accuracy {statistics.mean(bests):.4f} ± {statistics.pstdev(bests):.4f}")

    if not args.skip_ray:
        print("\nRay backend throughput (same search, empty latency cache each):")
        for workers in args.ray_workers:
            run_dir = work / f"ray-{workers}"
            summary = search(common + ["--backend", "ray", "--workers", str(workers), "--run-dir", str(run_dir)],
                             work / f"cache-ray-{workers}")
            seconds = summary["provenance"]["search_seconds"]
            print(f"  {workers} worker(s): {args.trials} trials in {seconds:.0f} s = "
                  f"{60 * args.trials / seconds:.1f} trials/min (Ray start and the front's re-measurement included)")


if __name__ == "__main__":
    main()
