"""Latency figures on this machine: predictor accuracy, measurement spread and cost, ONNX Runtime vs torch.

    .venv/bin/python bench/latency.py                         # cpu_small space, torch and onnxruntime
    .venv/bin/python bench/latency.py --samples 160 --train 50 --runtimes torch
    .venv/bin/python bench/latency.py --space search_spaces/hybrid.yaml --resolution 64   # the union space, smaller

For each runtime: measure `--samples` distinct sub-networks of the space (fresh measurements, default protocol),
fit the predictor on `--train` of them and report its accuracy on the rest (RMSE, MAPE, share within 5 % and
10 %, Spearman); the run-to-run spread of 10 repeated measurements of one sub-network; the wall time per
measurement; the same accuracy figures for a second measurement of `--remeasure` sub-networks taken as the
prediction of the first (the ceiling that measurement noise puts on any predictor). Then the ONNX Runtime /
torch eager latency ratio of the space's extremes and of timm baselines, measured side by side in this one run.
Uses a private latency cache so earlier runs do not leak in.
With `--resolution`, every sub-network (and baseline) is moved to that input size; sampled sub-networks that do
not fit it (a window larger than a feature map) are left out and others sampled instead.
`--save FILE` writes every measurement (arch and record) to FILE; `--load FILE` fits and scores the predictor on
such a file without measuring anything (the same split), to compare predictor versions on the same measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--train", type=int, default=50, help="sub-networks the predictor is fitted on")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baselines", nargs="*", default=["mobilevit_xxs", "ghostnet_050"])
    parser.add_argument("--resolution", type=int, help="input size to move every sub-network to (default: its own)")
    parser.add_argument("--remeasure", type=int, default=20,
                        help="sub-networks measured a second time: how well one measurement predicts another here")
    parser.add_argument("--save", help="write the measurements (archs and records) to this JSON file")
    parser.add_argument("--load", help="score the predictor on the measurements of a --save file; measure nothing")
    args = parser.parse_args()
    os.environ["NAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="nas-bench-cache-")

    import numpy as np
    import torch

    from nas.errors import NasError
    from nas.arch import Arch
    from nas.latency import LatencyCache, LatencyRecord, measure_arch, measure_latency
    from nas.latency.predictor import accuracy_report, arch_features, fit_predictor, sample_archs
    from nas.space import load_space
    from supernet.network import build

    cpu = torch.device("cpu")
    space = load_space(args.space)

    def moved(arch):
        """`arch` at --resolution, or None where it does not fit that size."""
        if args.resolution is None:
            return arch
        try:
            return arch.at_resolution(args.resolution, f"--resolution {args.resolution}")
        except NasError:
            return None

    saved = json.loads(Path(args.load).read_text()) if args.load else {}
    if saved:
        archs = [Arch.from_dict(a, args.load) for a in saved["archs"]]
        args.runtimes = list(saved["records"])
    else:
        fitting = (moved(a) for a in sample_archs(space, 20 * args.samples, seed=1))
        archs = list({a.arch_id: a for a in fitting if a is not None}.values())[: args.samples]
    features = [arch_features(a) for a in archs]
    at = f" at {args.resolution}x{args.resolution}" if args.resolution else ""
    print(f"space {space.name}{at}: {len(archs)} distinct sub-networks, {args.threads} thread(s), batch 1")
    measured = {"archs": [a.to_dict() for a in archs], "records": {}}
    for runtime in args.runtimes:
        if saved:
            records = [LatencyRecord.from_dict(r) for r in saved["records"][runtime]]
        else:
            cache = LatencyCache()
            began = time.perf_counter()
            records = [measure_arch(a, cpu, runtime, args.threads, cache=cache) for a in archs]
            per_measure = (time.perf_counter() - began) / len(archs)
        measured["records"][runtime] = [r.to_dict() for r in records]
        if args.save:
            Path(args.save).write_text(json.dumps(measured))
        holdout = 1 - args.train / len(archs)
        predictor = fit_predictor(features, records, holdout=holdout, seed=0)
        m = predictor.metrics
        medians = np.array([r.median_ms for r in records])
        print(f"\n[{runtime}] {records[0].device_name}, {records[0].runtime} {records[0].runtime_version}")
        print(f"  latency of the sampled sub-networks: {medians.min():.3f} to {medians.max():.3f} ms "
              f"(median {np.median(medians):.3f})")
        print(f"  predictor, fitted on {args.train}, held out {m['n']}: RMSE {m['rmse_ms']:.4f} ms, "
              f"MAPE {100 * m['mape']:.1f} %, within 5 %: {100 * m['within_5pct']:.0f} %, within 10 %: "
              f"{100 * m['within_10pct']:.0f} %, Spearman {m['spearman']:.3f}")
        refit = accuracy_report(predictor.predict_features(features), medians)
        print(f"  (in-sample over all {refit['n']}: within 10 %: {100 * refit['within_10pct']:.0f} %, "
              f"Spearman {refit['spearman']:.3f})")
        if saved:
            continue
        spread = [measure_arch(archs[2], cpu, runtime, args.threads, refresh=True).median_ms for _ in range(10)]
        cv = statistics.pstdev(spread) / statistics.mean(spread)
        print(f"  10 repeated measurements of {archs[2].arch_id}: median {statistics.median(spread):.3f} ms, "
              f"min {min(spread):.3f}, max {max(spread):.3f}, CV {cv:.3f}")
        print(f"  time per measurement: {per_measure:.2f} s (export included for onnxruntime)")
        if args.remeasure:
            again = [measure_arch(a, cpu, runtime, args.threads, refresh=True).median_ms
                     for a in archs[:args.remeasure]]
            ceiling = accuracy_report(np.array(again), medians[:args.remeasure])
            print(f"  a second measurement of {ceiling['n']} of them as the prediction (the most a predictor can "
                  f"show on this machine): within 5 %: {100 * ceiling['within_5pct']:.0f} %, within 10 %: "
                  f"{100 * ceiling['within_10pct']:.0f} %, Spearman {ceiling['spearman']:.3f}")

    if {"torch", "onnxruntime"} <= set(args.runtimes) and not saved:
        print("\nONNX Runtime / torch eager (median latency, batch 1, measured side by side):")
        models = []
        for name, extreme in (("smallest", space.smallest()), ("largest", space.largest())):
            arch = moved(extreme)
            if arch is None:
                print(f"  ({name} {space.name} does not fit {args.resolution}x{args.resolution}: left out)")
            else:
                models.append((f"{name} {space.name}", build(arch), arch.in_channels, arch.resolution))
        if args.baselines:
            import timm

            size = args.resolution or 224
            for name in args.baselines:
                models.append((f"timm {name} @{size}", timm.create_model(name, pretrained=False, num_classes=10), 3,
                               size))
        for name, model, channels, resolution in models:
            eager = measure_latency(model, channels, resolution, cpu, args.threads, runtime="torch", repeats=5)
            onnx = measure_latency(model, channels, resolution, cpu, args.threads, runtime="onnxruntime", repeats=5)
            print(f"  {name:32s} torch {eager.median_ms:8.3f} ms   onnxruntime {onnx.median_ms:8.3f} ms   "
                  f"ratio {onnx.median_ms / eager.median_ms:.3f}")


if __name__ == "__main__":
    main()
