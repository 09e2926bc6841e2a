"""Image data: the embedded Fashion-MNIST subset, an `.npz` file, or an ImageFolder directory.

Images are kept as uint8 at their stored size and brought to a model's resolution and channel count on demand
(`Splits.tensors`). A validation split is held out from train (stratified, seeded) for search-time evaluation;
the test split is used only to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import NasError
from nas.space import SearchSpace, load_space

EMBEDDED = "fashion-mnist"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MEAN, STD = 0.5, 0.5  # inputs are scaled to [-1, 1]; exported models expect the same


@dataclass
class Splits:
    """uint8 images in NCHW at their stored size, int64 labels, per split."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    source: str
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def size(self, split: str) -> int:
        return len(self.labels[split])

    def tensors(self, split: str, resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images normalised to [-1, 1] at `resolution` with `channels` channels, and labels."""
        key = (split, resolution, channels)
        if key not in self._cache:
            x = torch.from_numpy(self.images[split]).float().div_(255.0)
            if x.shape[1] != channels:
                x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1)
                if x.shape[1] != channels:
                    raise NasError(f"cannot turn {self.images[split].shape[1]}-channel images into {channels}")
            if x.shape[-2:] != (resolution, resolution):
                x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                  antialias=True)
            self._cache[key] = ((x - MEAN) / STD).contiguous(), torch.from_numpy(self.labels[split])
        return self._cache[key]


def load_data(spec: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0,
              limit_train: int | None = None) -> Splits:
    """Load `spec` (None or 'fashion-mnist' for the embedded subset, an .npz file, or an image folder)."""
    if spec is None or str(spec) == EMBEDDED:
        with resources.files("nas").joinpath("embedded/fashion_mnist_small.npz").open("rb") as f:
            images, labels, names = _from_npz(np.load(f), "embedded Fashion-MNIST")
        source = EMBEDDED
    else:
        path = Path(spec)
        if path.is_dir():
            images, labels, names = _from_folder(path)
        elif path.is_file() and path.suffix == ".npz":
            try:
                archive = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise NasError(f"--data {path}: not a readable .npz file ({error})") from None
            images, labels, names = _from_npz(archive, str(path))
        elif path.exists():
            raise NasError(f"--data {path}: expected an .npz file or an image folder with one subfolder per class")
        else:
            raise NasError(f"--data {path}: no such file or folder; pass an .npz file or an image folder "
                           f"(one subfolder per class), or leave --data out for the embedded Fashion-MNIST")
        source = str(path)
    if "val" not in images:
        train, val = _stratified_split(labels["train"], val_fraction, seed)
        images["val"], labels["val"] = images["train"][val], labels["train"][val]
        images["train"], labels["train"] = images["train"][train], labels["train"][train]
    if limit_train:
        images["train"], labels["train"] = images["train"][:limit_train], labels["train"][:limit_train]
    return Splits(images, labels, names, source)


def load_space_and_data(space_file: str | Path, spec: str | Path | None = None, seed: int = 0,
                        limit_train: int | None = None) -> tuple[SearchSpace, Splits]:
    """The space at `space_file`, its classifier fitted to the data's classes, and the data (`load_data`)."""
    space = load_space(space_file)
    data = load_data(spec, seed=seed, limit_train=limit_train)
    return space.with_num_classes(data.num_classes), data


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise NasError(f"{where}: images must be uint8 (0-255), got {x.dtype}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        channels_first = x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3)
        return x if channels_first else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise NasError(f"{where}: images must be NHW, NHWC or NCHW, got shape {x.shape}")


def _from_npz(archive: np.lib.npyio.NpzFile, where: str) -> tuple[dict, dict, list[str]]:
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
    if missing:
        raise NasError(f"{where}: missing arrays {', '.join(sorted(missing))} "
                       "(expected x_train, y_train, x_test, y_test; optional x_val, y_val, class_names)")
    splits = ["train", "test"] + (["val"] if {"x_val", "y_val"} <= set(archive.files) else [])
    images = {s: _to_nchw(archive[f"x_{s}"], f"{where}: x_{s}") for s in splits}
    labels = {s: archive[f"y_{s}"].astype(np.int64).reshape(-1) for s in splits}
    for s in splits:
        if len(images[s]) != len(labels[s]) or len(labels[s]) == 0:
            raise NasError(f"{where}: x_{s} and y_{s} must be non-empty and of equal length")
    num_classes = int(max(labels[s].max() for s in splits)) + 1
    if "class_names" in archive.files:
        names = [str(n) for n in archive["class_names"]]
    else:
        names = [str(i) for i in range(num_classes)]
    return images, labels, names


def _from_folder(root: Path) -> tuple[dict, dict, list[str]]:
    """`root/train/<class>/*` and `root/test/<class>/*` (optional `val/`), or `root/<class>/*` (20 % held out)."""
    from PIL import Image

    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"all": root}
    class_names = sorted(p.name for p in split_dirs.get("train", root).iterdir() if p.is_dir())
    if not class_names:
        raise NasError(f"--data {root}: no class subfolders found; expected {root}/<class>/<image> "
                       f"or {root}/train/<class>/<image> with {root}/test/<class>/<image>")
    images, labels = {}, {}
    for split, folder in split_dirs.items():
        pictures, targets, size = [], [], None
        for index, name in enumerate(class_names):
            for file in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with Image.open(file) as picture:
                    picture = picture.convert("RGB")
                    size = size or picture.size
                    pictures.append(np.asarray(picture.resize(size, Image.BILINEAR)))
                targets.append(index)
        if not pictures:
            raise NasError(f"--data {folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        images[split] = _to_nchw(np.stack(pictures), str(folder))
        labels[split] = np.array(targets, dtype=np.int64)
    if "all" in images:
        train, test = _stratified_split(labels["all"], 0.2, seed=0)
        images = {"train": images["all"][train], "test": images["all"][test]}
        labels = {"train": labels["all"][train], "test": labels["all"][test]}
    if "test" not in images:
        raise NasError(f"--data {root}: has train/ but no test/ folder")
    return images, labels, class_names


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        held.extend(rng.choice(members, max(1, round(len(members) * fraction)), replace=False))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in order, or shuffled (and augmented: random 2-pixel shifts, flips) with `generator`."""
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        xb = x[index]
        if augment:
            xb = _shift_and_flip(xb, generator)
        yield xb, y[index]


def training_epoch(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, epoch: int,
                   desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented mini-batches (a tqdm bar), ordered by (seed, epoch) so a resumed run
    repeats it."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return tqdm(batches(x, y, batch_size, generator, augment=True), total=math.ceil(len(x) / batch_size),
                leave=False, desc=desc, disable=None)


def _shift_and_flip(x: torch.Tensor, generator: torch.Generator | None, pad: int = 2) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-MEAN / STD)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    shifted = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    flip = torch.rand(n, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(-1)
    return shifted
