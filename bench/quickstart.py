"""Time the README quick start (search + retrain on the embedded data, CPU) and print its figures.

    .venv/bin/python bench/quickstart.py            # the README's settings, in a fresh run folder
    .venv/bin/python bench/quickstart.py --budget 4ms --trials 60
    .venv/bin/python bench/quickstart.py --keep /tmp/qs     # keep the run folder, for bench/retrain.py --run /tmp/qs

Prints the wall time of each stage, the winner's test accuracy, and its measured latency against the budget.
Uses an empty latency cache, as a new machine would.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas", *args], cwd=ROOT, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/hybrid_cpu.yaml")
    parser.add_argument("--budget", default="5ms")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="copy the finished run folder here (a new folder)")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        raise SystemExit(f"--keep {args.keep}: exists; name a new folder")
    with tempfile.TemporaryDirectory(prefix="nas-quickstart-") as tmp:
        os.environ["NAS_CACHE_DIR"] = str(Path(tmp) / "cache")  # an empty latency cache, as on a new machine
        run_dir = Path(tmp) / "run"
        search_s = run(["search", "--space", args.space, "--latency-budget", args.budget, "--device", "cpu",
                        "--trials", str(args.trials), "--run-dir", str(run_dir)])
        retrain_s = run(["retrain", str(run_dir / "best.yaml")])
        best = yaml.safe_load((run_dir / "best.yaml").read_text())
        metrics = json.loads((run_dir / "retrain" / "metrics.json").read_text())
        history = __import__("torch").load(run_dir / "supernet" / "supernet.pt", weights_only=True)["history"]
        rows = list(csv.DictReader(open(run_dir / "trials.csv")))
        drawn_by = next(r["warm_start"] or r["reference"] for r in rows if r["arch_id"] == best["arch_id"]) or "sampler"
        if args.keep is not None:
            shutil.copytree(run_dir, args.keep)
    print(f"\nquick start on {best['device']['name']} ({best['device']['threads']} timing thread)")
    print(f"  supernet training : {sum(h['seconds'] for h in history):6.1f} s ({len(history)} epochs, "
          f"{history[-1]['images_per_s']:.0f} images/s in sandwich steps)")
    print(f"  search (total)    : {search_s:6.1f} s ({best['provenance']['trials']} trials, "
          f"{best['provenance']['search_seconds']:.1f} s in the study)")
    print(f"  retrain           : {retrain_s:6.1f} s ({metrics['epochs']} epochs)")
    print(f"  wall time         : {search_s + retrain_s:6.1f} s")
    print(f"winner {best['arch_id']}: {metrics['params']:,} params, {metrics['macs'] / 1e6:.2f} M MACs, families "
          f"{'-'.join(stage['family'] for stage in best['arch']['stages'])} (trial from: {drawn_by})")
    print(f"  supernet val acc  : {best['val_accuracy_supernet']:.3f}")
    print(f"  test top-1        : {metrics['test_top1']:.3f} (top-5 {metrics['test_top5']:.3f})")
    print(f"  latency           : search {best['latency_ms']:.3f} ms median / {best['latency_p90_ms']:.3f} ms p90; "
          f"after retrain {metrics['latency_ms']:.3f} / {metrics['latency_p90_ms']:.3f} ms; "
          f"budget {best['budget_ms']} ms; "
          f"within: {metrics['within_budget']}")


if __name__ == "__main__":
    main()
