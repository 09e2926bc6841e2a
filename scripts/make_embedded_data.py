"""Build the embedded Fashion-MNIST subset shipped inside the `nas` package.

Source: Debian's `dataset-fashion-mnist` package (MIT licence, (c) 2017 Zalando SE). The script downloads the
.deb with apt, unpacks it into a temporary folder, parses the idx files and writes a seeded, stratified subset
(uint8 images, int64 labels, class names) to nas/embedded/fashion_mnist_small.npz.

    python scripts/make_embedded_data.py --train-per-class 500 --test-per-class 100
    python scripts/make_embedded_data.py --all --out ~/data/fashion_mnist_full.npz   # 60k + 10k, for benches

`--all` writes the whole set (60,000 train, 10,000 test) to --out instead, for the benches' `--data` (a larger
set than the embedded one, on which supernet rankings and retraining are less noisy). The embedded subset stays
the default everywhere.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
OUT = Path(__file__).resolve().parent.parent / "nas" / "embedded" / "fashion_mnist_small.npz"


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return rng.permutation(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, help="folder holding the idx .gz files (default: fetch the .deb)")
    parser.add_argument("--all", action="store_true", help="every image, not a subset (needs --out)")
    parser.add_argument("--out", type=Path, help="the .npz to write (default: the embedded subset's file)")
    args = parser.parse_args()
    if args.all and args.out is None:
        parser.error("--all needs --out: the embedded subset stays small")
    out = args.out or OUT
    if out.suffix != ".npz" or out.exists() and args.out is not None:
        parser.error(f"--out {out}: expected a new .npz file")

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, check=True)
            deb = next(Path(tmp).glob("dataset-fashion-mnist_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "root")], check=True)
            source = Path(tmp) / "root" / "usr" / "share" / "datasets" / "fashion-mnist"
        x_train = read_idx(source / "train-images-idx3-ubyte.gz")
        y_train = read_idx(source / "train-labels-idx1-ubyte.gz")
        x_test = read_idx(source / "t10k-images-idx3-ubyte.gz")
        y_test = read_idx(source / "t10k-labels-idx1-ubyte.gz")

    rng = np.random.default_rng(args.seed)
    if args.all:
        train, test = rng.permutation(len(y_train)), rng.permutation(len(y_test))
    else:
        train = stratified(y_train, args.train_per_class, rng)
        test = stratified(y_test, args.test_per_class, rng)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x_train=x_train[train], y_train=y_train[train].astype(np.int64),
                        x_test=x_test[test], y_test=y_test[test].astype(np.int64),
                        class_names=np.array(CLASS_NAMES))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(train)} train, {len(test)} test images")


if __name__ == "__main__":
    main()
