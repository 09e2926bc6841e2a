"""Data at scale: peak memory, time to the first step, and throughput of the loaders, against the folder's size.

    .venv/bin/python bench/data.py                          # 1k, 4k and 16k images, hybrid.yaml at 224, 2 workers
    .venv/bin/python bench/data.py --sizes 1000 16000 --steps 3 --work /tmp/nas-data   # reuse generated folders

Generates image folders of N 256x256 JPEGs (`root/<class>/*.jpg`) from the embedded Fashion-MNIST images,
upscaled to RGB (generated once per --work folder). Then, for each N, in a fresh process each:

- supernet: what `nas supernet train --space search_spaces/hybrid.yaml --data FOLDER` runs (load the data, a
  loader at the space's largest resolution, 256, with --workers processes, each step at one of its resolutions),
  for --steps steps at --batch-size;
- retrain: what `nas retrain search_spaces/reference/lolvit_xs.yaml --data FOLDER` runs (the retraining recipe's
  loader, with RandAugment and random erasing, at the arch's 256), for --steps steps.

Prints, per N and stage: peak RSS of the process, seconds from the start of data loading to the first batch in
hand and to the end of the first step, the loader alone in images/s (no model), and training images/s over the
steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_folder(root: Path, count: int, size: int = 256) -> Path:
    """`count` JPEGs at `size` in root/<class>/, cycling through the embedded images (written once)."""
    import numpy as np
    from PIL import Image

    from nas.data import load_data

    done = root / ".complete"
    if done.is_file():
        return root
    data = load_data()
    images = np.concatenate([data.images[s] for s in ("train", "val", "test")])[:, 0]
    labels = np.concatenate([data.labels[s] for s in ("train", "val", "test")])
    for i in range(count):
        j = i % len(images)
        folder = root / data.class_names[labels[j]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(images[j]).resize((size, size), Image.BILINEAR).convert("RGB")
        picture.save(folder / f"{i:06d}.jpg", quality=90)
    done.write_text("")
    return root


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def child(stage: str, folder: str, steps: int, batch_size: int, workers: int) -> dict:
    """One stage's figures, measured in this (fresh) process."""
    import torch

    from nas.arch import load_arch
    from nas.data import Augment, load_data
    from nas.retrain import _train_step, default_recipe
    from nas.space import load_space
    from nas.supernet_training import TrainConfig, train_step
    from nas.training import Precision, optimizer_and_schedule
    from nas.weight_sharing import SpaceSupernet
    from supernet.network import build

    torch.manual_seed(0)
    began = time.perf_counter()
    data = load_data(folder, workers=workers)
    precision = Precision(torch.device("cpu"))
    if stage == "supernet":
        space = load_space(ROOT / "search_spaces" / "hybrid.yaml").with_num_classes(data.num_classes)
        batches = data.loader("train", max(space.resolution), space.in_channels, batch_size, train=True)
        model, config = SpaceSupernet(space), TrainConfig(batch_size=batch_size)
        optimizer, _ = optimizer_and_schedule(model, config.lr, config.weight_decay, 1, 0, steps)

        def step(x: torch.Tensor, y: torch.Tensor, share: float, index: int) -> None:
            train_step(model, space, x, y, share, index, config, optimizer, precision)
        resolution = max(space.resolution)
    else:
        arch = load_arch(ROOT / "search_spaces" / "reference" / "lolvit_xs.yaml").with_num_classes(data.num_classes)
        recipe = default_recipe(data.size("train"), batch_size=batch_size, mixup=0.0, cutmix=0.0)
        augment = Augment(recipe.randaugment_ops, recipe.randaugment_magnitude, recipe.random_erasing)
        batches = data.loader("train", arch.resolution, arch.in_channels, batch_size, train=True, augment=augment)
        model = build(arch, recipe.drop_path)
        optimizer, _ = optimizer_and_schedule(model, recipe.lr, recipe.weight_decay, 1, 0, steps)

        def step(x: torch.Tensor, y: torch.Tensor, share: float, index: int) -> None:
            _train_step(model, model, None, x, y, share, recipe, None, optimizer, precision)
        resolution = arch.resolution
    model.train()
    first_batch = first_step = None
    for index, (x, y, share) in enumerate(batches.epoch(0)):
        first_batch = first_batch or time.perf_counter() - began
        step(x, y, share, index)
        if first_step is None:
            first_step, stepped = time.perf_counter() - began, time.perf_counter()
        if index + 1 == steps:
            break
    train_rate = (steps - 1) * batch_size / (time.perf_counter() - stepped) if steps > 1 else None
    loader_began, images = time.perf_counter(), 0
    for x, _, _ in batches.epoch(1):  # the loader alone, workers already started
        images += len(x)
        if images >= 20 * batch_size:
            break
    return {"stage": stage, "images": data.size("train") + data.size("val") + data.size("test"),
            "train_images": data.size("train"), "resolution": resolution, "peak_rss_gb": round(peak_rss_gb(), 2),
            "first_batch_s": round(first_batch, 1), "first_step_s": round(first_step, 1),
            "loader_images_per_s": round(images / (time.perf_counter() - loader_began), 1),
            "train_images_per_s": None if train_rate is None else round(train_rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=["supernet", "retrain"], choices=["supernet", "retrain"])
    parser.add_argument("--work", help="folder for the generated images (default: a new temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.steps, args.batch_size, args.workers)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="nas-bench-data-"))
    rows = []
    for count in args.sizes:
        began = time.perf_counter()
        folder = make_folder(work / f"images-{count}", count)
        print(f"{count} images in {folder} ({time.perf_counter() - began:.0f} s to generate)", file=sys.stderr)
        for stage in args.stages:
            result = subprocess.run([sys.executable, __file__, "--child", stage, str(folder), "--steps",
                                     str(args.steps), "--batch-size", str(args.batch_size), "--workers",
                                     str(args.workers)], capture_output=True, text=True, check=False,
                                    env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
            if result.returncode:
                raise SystemExit(f"{stage} at {count} images failed:\n{result.stderr[-2000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n{'stage':9} {'images':>7} {'res':>4} {'peak RSS GB':>11} {'first batch s':>13} {'first step s':>12} "
          f"{'loader img/s':>12} {'train img/s':>11}")
    for r in rows:
        print(f"{r['stage']:9} {r['images']:7} {r['resolution']:4} {r['peak_rss_gb']:11.2f} {r['first_batch_s']:13.1f} "
              f"{r['first_step_s']:12.1f} {r['loader_images_per_s']:12.1f} {r['train_images_per_s'] or 0:11.1f}")
    for stage in args.stages:
        mine = [r for r in rows if r["stage"] == stage]
        if len(mine) > 1:
            ratio = mine[-1]["peak_rss_gb"] / mine[0]["peak_rss_gb"]
            print(f"{stage}: peak RSS at {mine[-1]['images']} images is {ratio:.2f}x that at {mine[0]['images']}; "
                  f"slowest time to the first batch {max(r['first_batch_s'] for r in mine):.1f} s")


if __name__ == "__main__":
    main()
