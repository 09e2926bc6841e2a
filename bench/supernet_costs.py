"""Supernet costs on this machine: the active path vs the extracted sub-network vs the same arch built directly,
and sandwich-rule training throughput.

    .venv/bin/python bench/supernet_costs.py                            # hybrid_cpu space, 20 sub-networks
    .venv/bin/python bench/supernet_costs.py --space search_spaces/hybrid.yaml --archs 6 --no-train

For each sampled sub-network (plus the space's smallest and largest), three models are timed side by side in
this one run with the standard protocol (torch eager, batch 1, 1 thread): the supernet with that member active
(sliced weights), the extracted static sub-network, and a freshly built network of the same arch. Ratios are
per sub-network, summarised by their geometric mean and range. Then one epoch of sandwich training (largest,
smallest and 2 random members per step, in-place distillation) on the embedded data gives images/s.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "hybrid_cpu.yaml"))
    parser.add_argument("--archs", type=int, default=20, help="random sub-networks (besides smallest and largest)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2048, help="images in the throughput epoch")
    parser.add_argument("--no-train", action="store_true", help="skip the training-throughput epoch")
    args = parser.parse_args()
    os.environ["NAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="nas-bench-cache-")

    import torch

    from nas.latency import measure_latency
    from nas.space import load_space
    from nas.weight_sharing import SpaceSupernet
    from supernet.network import build

    cpu = torch.device("cpu")
    space = load_space(args.space)
    torch.manual_seed(0)
    supernet = SpaceSupernet(space).eval()
    rng = random.Random(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(args.archs)]
    print(f"space {space.name}: supernet {sum(p.numel() for p in supernet.parameters()) / 1e6:.2f}M parameters; "
          f"{len(archs)} sub-networks, torch eager, batch 1, {args.threads} thread(s)")
    print(f"{'arch':>14} {'active ms':>10} {'extracted':>10} {'built':>8} {'active/extr':>12} {'extr/built':>11}")
    active_ratios, built_ratios = [], []
    for arch in archs:
        extracted = supernet.extract(arch).eval()
        supernet.set_active(arch)
        times = {}
        for name, model in (("active", supernet), ("extracted", extracted), ("built", build(arch).eval())):
            times[name] = measure_latency(model, arch.in_channels, arch.resolution, cpu, args.threads).median_ms
        active_ratios.append(times["active"] / times["extracted"])
        built_ratios.append(times["extracted"] / times["built"])
        print(f"{arch.label:>14} {times['active']:10.3f} {times['extracted']:10.3f} {times['built']:8.3f} "
              f"{active_ratios[-1]:12.3f} {built_ratios[-1]:11.3f}")
    print(f"supernet active path / extracted: geometric mean {geometric_mean(active_ratios):.3f} "
          f"(range {min(active_ratios):.3f}-{max(active_ratios):.3f})")
    print(f"extracted / built directly:       geometric mean {geometric_mean(built_ratios):.3f} "
          f"(range {min(built_ratios):.3f}-{max(built_ratios):.3f}; target within +-3 %)")
    if args.no_train:
        return

    from nas.data import load_data
    from nas.supernet_training import TrainConfig, load_supernet_checkpoint, train_supernet

    data = load_data(limit_train=args.train_images)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="nas-bench-supernet-") as folder:
        path = train_supernet(space.with_num_classes(data.num_classes), data, Path(folder), TrainConfig(epochs=1),
                              cpu, log=lambda _: None)
        record = load_supernet_checkpoint(path)["history"][-1]
    print(f"sandwich training ({torch.get_num_threads()} threads, batch {TrainConfig.batch_size}, "
          f"{2 + TrainConfig.random_subnets} members per step): {record['images_per_s']:.0f} images/s "
          f"({args.train_images} images in {record['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
