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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hypervolume(rows: list[dict], budget_ms: float) -> float:
    """Area dominated by the feasible points in (latency up to the budget) x (accuracy above 0)."""
    points = sorted((float(r["latency_ms"]), float(r["val_acc"])) for r in rows if r["feasible"] == "True")
    area, best = 0.0, 0.0
    for latency, accuracy in points:
        if accuracy > best:
            area += (budget_ms - latency) * (accuracy - best)
            best = accuracy
    return area


def search(options: dict, run_dir: Path, cache: Path) -> dict:
    """Run a search (`options` named as `nas search`'s) in this process in `run_dir`, with its own latency cache;
    prints what `nas search` prints and returns its best.yaml."""
    from nas.errors import NasError
    from nas.search.run import search as run_search
    from nas.search.run import search_lines
    from nas.search.study import search_settings

    os.environ["NAS_CACHE_DIR"] = str(cache)
    try:
        result = run_search(search_settings(options), run_dir, log)
    except NasError as error:
        raise SystemExit(f"search failed: {options} in {run_dir}: {error}")
    print("\n".join(search_lines(result)))
    return result


def train(space_path: str, run_dir: Path, epochs: int) -> Path:
    """What `nas supernet train --space SPACE --run-dir RUN --epochs N` does, with that command's defaults (the
    embedded data, seed 0, batch 128, kl distillation, a checkpoint every 20 steps, cpu); returns the checkpoint."""
    from nas.errors import NasError
    from nas.latency import resolve_device
    from nas.supernet_training import TrainConfig, train_supernet_run

    config = TrainConfig(epochs=epochs, batch_size=128, seed=0, distill="kl", checkpoint_every=20)
    try:
        result = train_supernet_run(space_path, config, resolve_device("cpu"), None, None, run_dir, log)
    except NasError as error:
        raise SystemExit(f"supernet training failed: {error}")
    last = result["history"][-1]
    print(f"supernet checkpoint: {result['checkpoint']}\nlargest member val accuracy {last['val_acc_largest']:.3f}, "
          f"smallest {last['val_acc_smallest']:.3f}")
    return Path(result["checkpoint"])


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

    work = Path(tempfile.mkdtemp(prefix="nas-bench-search-"))
    cache = work / "cache"
    os.environ["NAS_CACHE_DIR"] = str(cache)
    supernet = train(args.space, work / "supernet", args.epochs)
    common = {"space": args.space, "latency_budget": args.budget, "supernet": str(supernet), "trials": args.trials}
    results: dict[str, list[tuple[float, float]]] = {}
    for sampler in () if args.skip_samplers else ("nsga2", "tpe", "random"):
        for seed in range(args.seeds):
            run_dir = work / f"{sampler}-{seed}"
            summary = search({**common, "sampler": sampler, "seed": seed}, run_dir, cache)
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
            summary = search({**common, "backend": "ray", "workers": workers}, run_dir, work / f"cache-ray-{workers}")
            seconds = summary["provenance"]["search_seconds"]
            print(f"  {workers} worker(s): {args.trials} trials in {seconds:.0f} s = "
                  f"{60 * args.trials / seconds:.1f} trials/min (Ray start and the front's re-measurement included)")


if __name__ == "__main__":
    main()
