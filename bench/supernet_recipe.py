"""Supernet training recipes, one against another: how well each trains the members the sandwich does not fix.

    .venv/bin/python bench/supernet_recipe.py          # hybrid_cpu, 8 epochs: with and without the smallest
    .venv/bin/python bench/supernet_recipe.py --epochs 8 --variants '{"random_subnets": 2}' \
        '{"sandwich": "families"}' '{"random_subnets": 4}' '{"random_subnets": 6}'
    .venv/bin/python bench/supernet_recipe.py --epochs 16 --variants '{}'

For each variant (TrainConfig fields over the defaults, as a `nas supernet train --recipe` file would give them),
trains a supernet for --space on the embedded data (CPU, 2 threads) for --epochs, then evaluates with the
supernet's weights (BN recalibrated, validation split): the largest and smallest members (the sandwich trains
the largest on every step, and the smallest too unless `no-smallest`), and --members random members (the same
ones for every variant), whose median is what a search mostly sees. Prints one row per variant: training
seconds, those accuracies, and the random members' median by dominant family.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "hybrid_cpu.yaml"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--members", type=int, default=24, help="random members evaluated (seed 1)")
    parser.add_argument("--variants", nargs="+", default=['{"sandwich": "random"}', '{}'],
                        help="JSON objects of TrainConfig fields")
    parser.add_argument("--work", help="folder for the supernets (default: a new temporary one)")
    args = parser.parse_args()

    import torch

    from nas.data import load_data
    from nas.evaluate import inherited_accuracy
    from nas.latency import resolve_device
    from nas.rank import dominant_family
    from nas.space import load_space
    from nas.supernet_training import TrainConfig, load_supernet, train_supernet_run

    torch.set_num_threads(2)
    work = Path(args.work or tempfile.mkdtemp(prefix="nas-bench-recipe-"))
    data = load_data()
    space = load_space(args.space).with_num_classes(data.num_classes)
    rng = random.Random(1)
    members = [space.sample(rng) for _ in range(args.members)]
    rows = []
    for index, variant in enumerate(args.variants):
        overrides = json.loads(variant)
        config = TrainConfig(**{"epochs": args.epochs, **overrides}).check()
        began = time.perf_counter()
        result = train_supernet_run(args.space, config, resolve_device("cpu"), None, None, work / f"variant{index}",
                                    lambda message: print(f"  {message}", flush=True))
        seconds = time.perf_counter() - began
        supernet = load_supernet(Path(result["checkpoint"]), space)
        largest, smallest = space.largest(), space.smallest()
        random_accuracy = [inherited_accuracy(supernet.extract(arch), arch, data) for arch in members]
        by_family: dict[str, list[float]] = {}
        for arch, value in zip(members, random_accuracy):
            by_family.setdefault(dominant_family(arch), []).append(value)
        rows.append({"variant": overrides or "defaults", "seconds": seconds,
                     "largest": inherited_accuracy(supernet.extract(largest), largest, data),
                     "smallest": inherited_accuracy(supernet.extract(smallest), smallest, data),
                     "median": statistics.median(random_accuracy), "min": min(random_accuracy),
                     "max": max(random_accuracy),
                     "families": {f: statistics.median(v) for f, v in sorted(by_family.items())}})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{Path(args.space).name}, {args.epochs} epochs, {args.members} random members (seed 1), validation "
          "accuracy with the supernet's weights")
    print(f"{'variant':40} {'train s':>7} {'largest':>7} {'smallest':>8} {'random median':>13} {'min':>5} {'max':>5}")
    for row in rows:
        print(f"{json.dumps(row['variant']):40} {row['seconds']:7.0f} {row['largest']:7.3f} {row['smallest']:8.3f} "
              f"{row['median']:13.3f} {row['min']:5.3f} {row['max']:5.3f}")
        print(f"{'':40} by family: " + ", ".join(f"{f} {v:.3f}" for f, v in row["families"].items()))


if __name__ == "__main__":
    main()
