"""Search figures on the embedded data: samplers compared at equal trial counts, and Ray throughput.

    .venv/bin/python bench/search.py                          # hybrid_cpu, 3 seeds x 60 trials, budget 5ms
    .venv/bin/python bench/search.py --supernet S.pt --recipe R.yaml --retrain-epochs 15 --skip-ray
    .venv/bin/python bench/search.py --supernet S.pt --adapt-steps 30 --skip-ray   # candidates scored after 30 steps
    .venv/bin/python bench/search.py --space search_spaces/cpu_small.yaml --trials 30 --retrain-epochs 0

One supernet is trained first (with --recipe, a `nas supernet train --recipe` file) and shared by every search,
unless --supernet gives one. For each sampler (NSGA-II, TPE, random) and seed it reports:
- the hypervolume of the feasible (accuracy, latency) front, reference point (accuracy 0, latency = budget);
- the best feasible accuracy among the trials the sampler drew, the warm start's enqueued members (the smallest,
  largest and single-family members, and the papers' archs) left out and reported apart, so that no sampler is
  credited with them;
- the trials it took to reach random's best at the full trial count (the median over random's seeds): the
  trial number (enqueued ones counted, as they cost the same) at which a drawn member first matched it.
Then, for seed 0, each sampler's winner (best.yaml) is retrained with the same recipe (--retrain-epochs; 0 skips)
and its test accuracy printed beside its supernet accuracy. Last, trials per minute with the Ray backend and 1 and
2 workers, each with an empty latency cache so both measure everything.
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


def train(space_path: str, run_dir: Path, epochs: int, recipe: str | None) -> Path:
    """What `nas supernet train --space SPACE --run-dir RUN --epochs N [--recipe R]` does, with that command's
    defaults (the embedded data, seed 0, cpu); returns the checkpoint."""
    from nas.errors import NasError
    from nas.latency import resolve_device
    from nas.supernet_training import train_config, train_supernet_run

    config = train_config(recipe, epochs=epochs)
    try:
        result = train_supernet_run(space_path, config, resolve_device("cpu"), None, None, run_dir, log)
    except NasError as error:
        raise SystemExit(f"supernet training failed: {error}")
    last = result["history"][-1]
    print(f"supernet checkpoint: {result['checkpoint']}\nlargest member val accuracy {last['val_acc_largest']:.3f}, "
          f"smallest {last['val_acc_smallest']:.3f}")
    return Path(result["checkpoint"])


def drawn(row: dict) -> bool:
    """A trial the sampler drew (not one of the warm start's enqueued members)."""
    return not row.get("warm_start") and not row.get("reference")


def best_feasible(rows: list[dict]) -> float:
    return max((float(r["val_acc"]) for r in rows if r["feasible"] == "True"), default=0.0)


def trials_to_reach(rows: list[dict], target: float) -> int | None:
    """The trial count (1-based, enqueued trials counted) at which a drawn feasible member first reached `target`."""
    for count, row in enumerate(rows, 1):
        if drawn(row) and row["feasible"] == "True" and float(row["val_acc"]) >= target:
            return count
    return None


def report_samplers(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    target = statistics.median(best_feasible([r for r in run["rows"] if drawn(r)]) for run in runs["random"])
    enqueued = [r for r in runs["random"][0]["rows"] if not drawn(r)]
    print(f"\nsamplers on {Path(args.space).name}, budget {args.budget}, {args.trials} trials, {args.seeds} seeds "
          f"(mean ± sd over seeds; hypervolume in accuracy x ms; the first {len(enqueued)} trials are the warm "
          f"start's enqueued members, the same for every sampler, left out of 'best drawn')")
    print(f"  the enqueued members' best feasible accuracy: {best_feasible(enqueued):.4f} "
          f"({', '.join(r['warm_start'] or r['reference'] for r in enqueued)})")
    print(f"  target: random's best drawn feasible accuracy after {args.trials} trials, median of seeds: {target:.4f}")
    for sampler, values in runs.items():
        volumes = [v["hypervolume"] for v in values]
        bests = [best_feasible([r for r in v["rows"] if drawn(r)]) for v in values]
        reached = [trials_to_reach(v["rows"], target) for v in values]
        shown = ", ".join("never" if n is None else str(n) for n in reached)
        median = statistics.median(n if n is not None else float("inf") for n in reached)
        print(f"  {sampler:7s} hypervolume {statistics.mean(volumes):.4f} ± {statistics.pstdev(volumes):.4f}   "
              f"best drawn feasible accuracy {statistics.mean(bests):.4f} ± {statistics.pstdev(bests):.4f}   "
              f"trials to reach the target: {shown} (median {median:g})")


def retrain_winners(runs: dict[str, list[dict]], epochs: int) -> None:
    """Retrain each sampler's seed-0 winner with the same recipe; print test beside supernet accuracy."""
    from nas.retrain_runs import RetrainOptions, retrain_file

    print(f"\neach sampler's seed-0 winner, retrained for {epochs} epochs (the same recipe for all):")
    for sampler, values in runs.items():
        best_yaml = values[0]["run_dir"] / "best.yaml"
        result = retrain_file(best_yaml, RetrainOptions(epochs=epochs), values[0]["run_dir"] / "retrain", log)
        summary = values[0]["summary"]
        print(f"  {sampler:7s} {summary['arch_id']}: supernet val {summary['val_accuracy_supernet']:.4f}, retrained "
              f"test top-1 {result.metrics['test_top1']:.4f}, latency {result.metrics['latency_ms']:.3f} ms",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "hybrid_cpu.yaml"))
    parser.add_argument("--budget", default="5ms")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="supernet epochs when training one")
    parser.add_argument("--recipe", help="a supernet recipe YAML when training one")
    parser.add_argument("--supernet", help="a supernet checkpoint for --space (default: train one)")
    parser.add_argument("--adapt-steps", type=int, default=0, help="each candidate's own training steps before "
                        "it is scored (`nas search --adapt-steps`)")
    parser.add_argument("--retrain-epochs", type=int, default=15, help="retrain each sampler's seed-0 winner (0: no)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-samplers", action="store_true")
    parser.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nas-bench-search-"))
    cache = work / "cache"
    os.environ["NAS_CACHE_DIR"] = str(cache)
    supernet = Path(args.supernet) if args.supernet else train(args.space, work / "supernet", args.epochs, args.recipe)
    common = {"space": args.space, "latency_budget": args.budget, "supernet": str(supernet), "trials": args.trials,
              "adapt_steps": args.adapt_steps}
    runs: dict[str, list[dict]] = {}
    for sampler in () if args.skip_samplers else ("random", "nsga2", "tpe"):
        for seed in range(args.seeds):
            run_dir = work / f"{sampler}-{seed}"
            summary = search({**common, "sampler": sampler, "seed": seed}, run_dir, cache)
            rows = sorted(csv.DictReader(open(run_dir / "trials.csv")), key=lambda r: int(r["trial"]))
            runs.setdefault(sampler, []).append({"rows": rows, "summary": summary, "run_dir": run_dir,
                                                 "hypervolume": hypervolume(rows, summary["budget_ms"])})
    if runs:
        report_samplers(runs, args)
    if runs and args.retrain_epochs:
        retrain_winners(runs, args.retrain_epochs)

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
