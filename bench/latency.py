"""Latency figures on this machine: predictor accuracy, measurement spread and cost, ONNX Runtime vs torch.

    .venv/bin/python bench/latency.py                         # cpu_small space, torch and onnxruntime
    .venv/bin/python bench/latency.py --samples 160 --train 50 --runtimes torch
    .venv/bin/python bench/latency.py --space search_spaces/hybrid.yaml --resolution 64   # the union space, smaller
    .venv/bin/python bench/latency.py --space search_spaces/hybrid.yaml --resolution 64 --samples 250 --train 150 \
        --runtimes torch                  # the issue's figure: 100 held out
    .venv/bin/python bench/latency.py --space search_spaces/hybrid.yaml --resolution 64 --samples 130 --train 30 \
        --runtimes onnxruntime --seed 2 --exports onnx/   # other sub-networks; the exports kept for another run

For each runtime: measure `--samples` distinct sub-networks of the space (fresh measurements, interleaved in
`--rounds` rounds as `nas latency fit` does), fit the predictor on `--train` of them and report its accuracy on the
rest (RMSE, MAPE, share within 5 % and 10 %, Spearman), and the average over `--splits` random splits; the
run-to-run spread of 10 repeated measurements of one sub-network; the wall time per measurement; the same accuracy
figures for a second measurement of `--remeasure` sub-networks taken as the prediction of the first (the ceiling
that measurement noise puts on any predictor; timed apart from the rest, in a spell of its own, so its level may
move as a whole: its Spearman is the steadier figure). Then the ONNX Runtime / torch eager latency ratio of the
space's extremes and of timm baselines, measured side by side in this one run.
Uses a private latency cache so earlier runs do not leak in.
With `--resolution`, every sub-network (and baseline) is moved to that input size; sampled sub-networks that do
not fit it (a window larger than a feature map) are left out and others sampled instead.
`--save FILE` writes every measurement (arch and record) to FILE; `--load FILE` fits and scores the predictor on
such a file without measuring anything (the same split), to compare predictor versions on the same measurements.
The sub-networks are timed as `nas latency fit` times them: `--rounds` rounds (default 24), each a short block of
every one in a new order, so the machine's slow spells slow them all alike; beside the result the run prints how
well the odd and even rounds agree (the fit's steadiness figure).
ONNX Runtime exports each sub-network once, all of them before any timing, in several processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    parser.add_argument("--exports", help="folder for the ONNX exports, kept for a later run (default: a new one)")
    parser.add_argument("--save", help="write the measurements (archs and records) to this JSON file")
    parser.add_argument("--load", help="score the predictor on the measurements of a --save file; measure nothing")
    parser.add_argument("--splits", type=int, default=20,
                        help="random fitted/held-out splits the predictor's average accuracy is reported over")
    parser.add_argument("--seed", type=int, default=1,
                        help="sampling seed: another seed gives sub-networks the predictor's design never saw")
    parser.add_argument("--rounds", type=int, default=24,
                        help="rounds over the sample, one short timed block of each sub-network per round")
    args = parser.parse_args()
    os.environ["NAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="nas-bench-cache-")

    import numpy as np
    import torch

    from nas.arch import Arch
    from nas.errors import NasError
    from nas.export import EXPORT_JOBS, arch_onnx_path, export_archs
    from tqdm import tqdm

    from nas.latency import LatencyCache, LatencyRecord, measure_arch, measure_interleaved, measure_latency
    from nas.latency.predictor import accuracy_report, arch_features, fit_predictor, halves_agreement, sample_archs
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

    try:
        saved = json.loads(Path(args.load).read_text()) if args.load else {}
    except (OSError, ValueError) as error:
        parser.error(f"--load {args.load}: not a readable --save file ({type(error).__name__})")
    if saved:
        archs = [Arch.from_dict(a, args.load) for a in saved["archs"]]
        args.runtimes, args.resolution = list(saved["records"]), saved.get("resolution", args.resolution)
        space = load_space(saved.get("space", args.space))
    else:
        fitting = (moved(a) for a in sample_archs(space, 20 * args.samples, seed=args.seed))
        archs = list({a.arch_id: a for a in fitting if a is not None}.values())[: args.samples]
    features = [arch_features(a) for a in archs]
    at = f" at {args.resolution}x{args.resolution}" if args.resolution else ""
    print(f"space {space.name}{at}: {len(archs)} distinct sub-networks, {args.threads} thread(s), batch 1")
    measured = {"space": str(Path(args.space).resolve()), "resolution": args.resolution,
                "archs": [a.to_dict() for a in archs], "records": {}}

    def figures(m):
        return (f"within 5 %: {100 * m['within_5pct']:.0f} %, within 10 %: {100 * m['within_10pct']:.0f} %, "
                f"Spearman {m['spearman']:.3f}")

    def measure_all(runtime, indices, cache=None):
        """Records of archs[indices], timed interleaved, and the seconds per sub-network that took."""
        began = time.perf_counter()
        with tqdm(total=len(indices) * args.rounds, desc=f"timing ({runtime})", unit="block", disable=None) as bar:
            records = measure_interleaved([archs[i] for i in indices], cpu, runtime, args.threads, rounds=args.rounds,
                                          cache=cache, onnx_folder=exports, progress=bar.update)
        return records, (time.perf_counter() - began) / len(indices)

    # each sub-network exported once; a run on the same --exports folder exports none again
    exports = Path(args.exports or tempfile.mkdtemp(prefix="nas-bench-onnx-"))

    def report(label, records):
        # one split's share moves by several points with the split: the mean over many is the steadier figure;
        # the first split (seed 0) is the one reported in full
        splits = [fit_predictor(features, records, holdout=1 - args.train / len(archs), seed=seed)
                  for seed in range(max(1, args.splits))]
        predictor, m = splits[0], splits[0].metrics
        print(f"  predictor{label}, fitted on {args.train}, held out {m['n']}: RMSE {m['rmse_ms']:.4f} ms, "
              f"MAPE {100 * m['mape']:.1f} %, {figures(m)}")
        refit = accuracy_report(predictor.predict_features(features), np.array([r.median_ms for r in records]))
        print(f"  (in-sample over all {refit['n']}: {figures(refit)})")
        within = [100 * split.metrics["within_10pct"] for split in splits]
        spearman = statistics.mean(split.metrics["spearman"] for split in splits)
        print(f"  (over {len(splits)} random splits of {args.train} fitted / {m['n']} held out: within 10 % "
              f"{statistics.mean(within):.1f} % on average, {min(within):.0f} to {max(within):.0f} %; Spearman "
              f"{spearman:.3f} on average)")

    for runtime in args.runtimes:
        if saved:
            records = [LatencyRecord.from_dict(r) for r in saved["records"][runtime]]
        else:
            began = time.perf_counter()
            if runtime == "onnxruntime":  # every export first, on every core, before any timing
                export_archs(archs, exports)
            per_export = (time.perf_counter() - began) / len(archs)
            records, per_measure = measure_all(runtime, range(len(archs)), cache=LatencyCache())
        measured["records"][runtime] = [r.to_dict() for r in records]
        if args.save:
            Path(args.save).write_text(json.dumps(measured))
        medians = np.array([r.median_ms for r in records])
        print(f"\n[{runtime}] {records[0].device_name}, {records[0].runtime} {records[0].runtime_version}")
        print(f"  latency of the sampled sub-networks: {medians.min():.3f} to {medians.max():.3f} ms "
              f"(median {np.median(medians):.3f}; {len(records[0].block_medians_ms)} timed block(s) each)")
        report("", records)
        agreement = halves_agreement(records)
        if agreement is not None:
            print(f"  odd and even rounds within 10 % of each other (nas latency fit's steadiness figure): "
                  f"{100 * agreement:.0f} % of them")
        if saved:
            continue
        spread = [measure_arch(archs[2], cpu, runtime, args.threads, refresh=True,
                               onnx_file=arch_onnx_path(exports, archs[2])).median_ms for _ in range(10)]
        cv = statistics.pstdev(spread) / statistics.mean(spread)
        print(f"  10 repeated measurements of {archs[2].arch_id}: median {statistics.median(spread):.3f} ms, "
              f"min {min(spread):.3f}, max {max(spread):.3f}, CV {cv:.3f}")
        print(f"  time per sub-network: {per_measure:.2f} s (all rounds, model build included)")
        if runtime == "onnxruntime":
            print(f"  export to ONNX beforehand: {per_export:.2f} s per sub-network ({os.cpu_count()} cores, "
                  f"{EXPORT_JOBS} processes; wall time over all of them, files already in --exports included)")
        if args.remeasure:
            again, _ = measure_all(runtime, range(args.remeasure))
            ceiling = accuracy_report(np.array([r.median_ms for r in again]),
                                      np.array([r.median_ms for r in records[:args.remeasure]]))
            print(f"  a second measurement of {ceiling['n']} of them (interleaved among themselves) as the prediction "
                  f"(the most a predictor can show on this machine): {figures(ceiling)}")

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
