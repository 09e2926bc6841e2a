"""Image data as datasets read through torch `DataLoader`s: the embedded Fashion-MNIST subset, an `.npz` file, or
an image folder (`root/<class>/*`, or `root/{train,val,test}/<class>/*`).

Image folders are decoded lazily, one file at a time, by the loader's worker processes: memory does not grow with
the number of images. Training images go through timm's transform (RandomResizedCrop, flip, optional RandAugment
and random erasing), evaluation images through resize and centre crop (timm's eval transform). The small `.npz`
sets stay in memory as uint8 and are converted a batch at a time, with cheap 2-pixel shifts and flips (and
optional RandAugment) for training.

Every training batch comes from `EpochBatches`: a seeded permutation per (seed, epoch), cut into global batches,
each split across the torchrun ranks so that together they cover the epoch exactly once, each rank reading only
its own part. Each image also draws a seed for its augmentation from the same permutation, so a resumed or
multi-process run sees the images one process would.

A validation split is held out from train (stratified, seeded); from a folder without `test/`, a test split too.
Each run folder records which images it uses (`SPLIT_FILE`: where they came from, a fingerprint of their content,
the number of training images and, for a folder, what was held out), so that a resumed run uses the same split and
refuses other images: another file or folder, a folder that changed, another --limit-train. An unreadable image is
skipped (the next file stands in) and counted (`Splits.skipped`); a folder that is empty or mostly unreadable is
refused before any work starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.errors import NasError, first_line
from nas.runs import atomic_write
from nas.space import SearchSpace, load_space

EMBEDDED = "fashion-mnist"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MEAN, STD = 0.5, 0.5  # inputs are scaled to [-1, 1]; exported models expect the same
CROP_PCT = 0.875  # evaluation: resize to resolution / CROP_PCT, then the centre crop (timm's default)
SPLIT_FILE = "data_split.json"
MAX_UNREADABLE_IN_A_ROW = 16  # a loader gives up (an error) after so many files in a row fail
PROBE_IMAGES = 32  # images of each split opened before any work starts: a folder mostly unreadable is refused
RECALIBRATION_IMAGES = 1024  # the fixed training subset BatchNorm statistics are recomputed on


@dataclass(frozen=True)
class Augment:
    """Training augmentation beyond the defaults (random crop or shift, flip): RandAugment and random erasing."""

    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0


@dataclass
class Splits:
    """Per split, int64 labels and either uint8 NCHW images in memory (`images`) or image files (`files`)."""

    labels: dict[str, np.ndarray]
    class_names: list[str]
    source: str
    images: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    workers: int = 0  # loader worker processes for image files (in-memory sets are converted in this process)
    fingerprint: str = ""  # sha256 of the images and labels as read (of a folder: its files' names and sizes)
    held_out: dict[str, Any] | None = None  # a folder's held-out files, as `save_split` writes them
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> why, as met while loading
    _evaluation: dict[tuple, "Batches"] = field(default_factory=dict, repr=False)  # kept: their workers persist

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def crop_pct(self) -> float:
        """The share of an image's shorter side that evaluation keeps (timm's crop_pct): the whole image of an
        in-memory set, the centre `CROP_PCT` of image files."""
        return CROP_PCT if self.files else 1.0

    @property
    def origin(self) -> str:
        """Where the images came from, whatever path named them: the embedded set's name, or a resolved path."""
        return self.source if self.source == EMBEDDED else str(Path(self.source).resolve())

    def size(self, split: str) -> int:
        return len(self.labels.get(split, ()))

    def dataset(self, split: str, resolution: int, channels: int, train: bool = False,
                augment: Augment = Augment()) -> Dataset:
        """The split as a dataset of `channels`-channel images at `resolution`, normalised to [-1, 1], keyed by
        (index, augmentation seed or None) as `EpochBatches` yields them."""
        if split in self.images:
            if self.images[split].shape[1] not in (1, channels) and channels != 1:
                raise NasError(f"{self.source}: cannot turn {self.images[split].shape[1]}-channel images into "
                               f"{channels}")
            return ArrayImages(self.images[split], self.labels[split], resolution, channels, train, augment)
        return ImageFiles(self.files[split], self.labels[split], resolution, channels, train, augment)

    def loader(self, split: str, resolution: int, channels: int, batch_size: int, train: bool = False,
               seed: int = 0, augment: Augment = Augment(), indices: Sequence[int] | None = None,
               rank: int = 0, world: int = 1, pin_memory: bool = False) -> "Batches":
        """Batches of `split` (of `indices` only, if given): shuffled and augmented per (seed, epoch) when
        `train`, else in order (and kept, so that a search's many evaluations reuse their loader and its worker
        processes); this rank's part of each global batch of `batch_size`."""
        key = (split, resolution, channels, batch_size, None if indices is None else tuple(indices), pin_memory)
        if not train and world == 1 and key in self._evaluation:
            return self._evaluation[key]
        sampler = EpochBatches(range(self.size(split)) if indices is None else indices, batch_size, train, seed,
                               rank, world)
        dataset = self.dataset(split, resolution, channels, train, augment)
        workers = self.workers if split in self.files else 0
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                            collate_fn=dataset.collate, persistent_workers=workers > 0,
                            prefetch_factor=4 if workers else None)
        batches = Batches(loader, sampler, self.skipped)
        if not train and world == 1:
            self._evaluation[key] = batches
        return batches

    def recalibration(self, resolution: int, channels: int, batch_size: int = 128) -> "Batches":
        """The fixed subset of training images (evaluation transform) that BatchNorm statistics are recomputed
        on: the first `RECALIBRATION_IMAGES` of a seeded permutation, the same for every sub-network."""
        return self.loader("train", resolution, channels, batch_size, indices=self._recalibration_subset)

    @functools.cached_property
    def _recalibration_subset(self) -> list[int]:
        """Drawn once: a search recalibrates every trial, and the permutation spans the whole training split."""
        return np.random.default_rng(0).permutation(self.size("train"))[:RECALIBRATION_IMAGES].tolist()

    def save_split(self, run_dir: Path) -> None:
        """Record in `run_dir`, once, which images it uses (`load_data` checks a resumed run against it)."""
        path = run_dir / SPLIT_FILE
        if not path.exists():
            atomic_write(path, json.dumps({"source": self.origin, "fingerprint": self.fingerprint,
                                           "train_images": self.size("train"), **(self.held_out or {})}).encode())

    def note_skipped(self, log: Callable[[str], None], already: int) -> int:
        """Log the images skipped since `already` were; returns how many are skipped in all."""
        if len(self.skipped) > already:
            named = list(self.skipped.items())[already:already + 5]
            more = len(self.skipped) - already - len(named)
            log(f"skipped {len(self.skipped) - already} unreadable image(s): "
                + "; ".join(f"{path} ({why})" for path, why in named) + (f"; and {more} more" if more else ""))
        return len(self.skipped)


class Batches:
    """A split's `DataLoader` and its sampler: `epoch(e)` yields (images, labels, share) of epoch e from step
    `start` on, where share is this rank's part of the global batch times the number of ranks (a loss weighted by
    it makes DDP's average over ranks the global batch's mean). Iterating it yields (images, labels) once over."""

    def __init__(self, loader: DataLoader, sampler: "EpochBatches", skipped: dict[str, str]) -> None:
        self.loader, self.sampler, self.skipped = loader, sampler, skipped

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def images(self) -> int:
        return len(self.sampler.indices)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        self.sampler.set_epoch(epoch, start)
        for step, (x, y, unreadable) in enumerate(self.loader, start):
            self.skipped.update(unreadable)
            yield x, y, self.sampler.share(step, len(y))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.epoch(0):
            yield x, y


class EpochBatches(Sampler):
    """This rank's part of each global batch of one epoch, as lists of (index, augmentation seed or None).

    Shuffled, the order and the seeds come from (seed, epoch); the global batches are those one process would
    draw, and `torch.tensor_split` gives rank r its r-th part, so the ranks cover the epoch exactly once. A last
    global batch too small to give every rank an image is dropped (`dropped` says how many images)."""

    def __init__(self, indices: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        self.indices, self.batch_size, self.shuffle, self.seed = list(indices), batch_size, shuffle, seed
        self.rank, self.world, self.epoch, self.start = rank, world, 0, 0
        left_over = len(self.indices) % batch_size
        self.dropped = left_over if 0 < left_over < world else 0

    def __len__(self) -> int:
        return -(-(len(self.indices) - self.dropped) // self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw epoch `epoch`'s batches, from step `start` on (the steps before were done before a restart)."""
        self.epoch, self.start = epoch, start

    def share(self, step: int, images: int) -> float:
        """`images` of this rank at `step` as a share of the global batch, times the number of ranks."""
        whole = min(self.batch_size, len(self.indices) - self.dropped - step * self.batch_size)
        return images * self.world / whole

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        count = len(self.indices) - self.dropped
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(len(self.indices), generator=generator)[:count].tolist()
            seeds = torch.randint(0, 2**31, (count,), generator=generator).tolist()
        else:
            order, seeds = list(range(count)), [None] * count
        for start in range(self.start * self.batch_size, count, self.batch_size):
            part = range(start, min(start + self.batch_size, count))
            mine = np.array_split(np.arange(part.start, part.stop), self.world)[self.rank]
            yield [(self.indices[order[i]], seeds[i]) for i in mine]


class ArrayImages(Dataset):
    """uint8 NCHW images in memory, brought to the model's size a batch at a time (`__getitems__`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, resolution: int, channels: int, train: bool,
                 augment: Augment) -> None:
        self.images, self.labels, self.resolution, self.channels = images, labels, resolution, channels
        self.train, self.augment = train, augment
        self.randaugment = self.erasing = None
        if train and (augment.randaugment_ops or augment.random_erasing):
            from torchvision.transforms import v2

            if augment.randaugment_ops:
                self.randaugment = v2.RandAugment(augment.randaugment_ops, augment.randaugment_magnitude)
            if augment.random_erasing:
                self.erasing = v2.RandomErasing(augment.random_erasing)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys: list[tuple[int, int | None]]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        index = [i for i, _ in keys]
        pictures = torch.from_numpy(self.images[index])
        if self.randaugment is not None:
            pictures = torch.stack([_seeded(seed, self.randaugment, p) for p, (_, seed) in zip(pictures, keys)])
        x = pictures.float().div_(255.0)
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        x = (x - MEAN) / STD
        if self.train:
            x = shift_and_flip(x, [seed for _, seed in keys])
        if self.erasing is not None:  # after normalising, as timm erases: with zeros, the data's mean
            x = torch.stack([_seeded(seed, self.erasing, image) for image, (_, seed) in zip(x, keys)])
        return x.contiguous(), torch.from_numpy(self.labels[index]), {}

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor, dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        return batch


class ImageFiles(Dataset):
    """Image files decoded one at a time (Pillow) through timm's train or eval transform."""

    def __init__(self, files: list[Path], labels: np.ndarray, resolution: int, channels: int, train: bool,
                 augment: Augment) -> None:
        from timm.data import create_transform

        self.files, self.labels, self.channels = files, labels, channels
        options: dict[str, Any] = {"mean": (MEAN,) * 3, "std": (STD,) * 3, "interpolation": "bilinear"}
        if train:
            options.update(re_prob=augment.random_erasing, auto_augment=(
                f"rand-m{augment.randaugment_magnitude}-n{augment.randaugment_ops}-mstd0.5"
                if augment.randaugment_ops else None))
        else:
            options["crop_pct"] = CROP_PCT
        self.transform = create_transform(resolution, is_training=train, **options)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int, dict[str, str]]:
        """The image at `key`'s index; an unreadable one is noted and the next readable file stands in for it
        (batches keep their size, so the ranks under torchrun stay in step)."""
        index, seed = key
        unreadable = {}
        for attempt in range(MAX_UNREADABLE_IN_A_ROW):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                picture = open_image(path)
            except NasError as error:
                unreadable[str(path)] = str(error)
                continue
            x = _seeded(seed, self.transform, picture)
            label = int(self.labels[(index + attempt) % len(self.files)])
            return (x.mean(0, keepdim=True) if self.channels == 1 else x), label, unreadable
        raise NasError(f"{MAX_UNREADABLE_IN_A_ROW} unreadable images in a row, e.g. {path}: {unreadable[str(path)]}")

    @staticmethod
    def collate(samples: list[tuple[torch.Tensor, int, dict[str, str]]]
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
        unreadable = {path: why for _, _, noted in samples for path, why in noted.items()}
        return (torch.stack([x for x, _, _ in samples]), torch.tensor([y for _, y, _ in samples]), unreadable)


def open_image(path: Path) -> Any:
    """The image at `path` as RGB (a Pillow image), or a NasError saying why it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return picture.convert("RGB")
    except UnidentifiedImageError:
        raise NasError("not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise NasError(first_line(error) or type(error).__name__) from None


def _seeded(seed: int | None, transform: Callable, picture: Any) -> Any:
    """`transform(picture)` with torch's and Python's generators seeded by `seed` (when given), leaving both as
    they were: an image's augmentation then depends on its seed alone."""
    if seed is None:
        return transform(picture)
    # the CPU generator alone: torch.manual_seed also seeds every device's, at a millisecond a call
    saved, state = torch.default_generator.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        return transform(picture)
    finally:
        torch.default_generator.set_state(saved)
        random.setstate(state)


def shift_and_flip(x: torch.Tensor, seeds: list[int | None], pad: int = 2) -> torch.Tensor:
    """Each image shifted by up to `pad` pixels each way and flipped at even odds, as its seed says."""
    _, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-MEAN / STD)
    side = 2 * pad + 1
    out = []
    for image, seed in zip(padded, seeds):
        seed = seed or 0
        dy, dx, flip = seed % side, seed // side % side, seed // side**2 % 2
        shifted = image[:, dy:dy + h, dx:dx + w]
        out.append(shifted.flip(-1) if flip else shifted)
    return torch.stack(out)


def default_workers() -> int:
    """Loader workers per process: the cores this process may use, shared among torchrun's local ranks, less
    one for the training loop itself (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1))


def load_data(spec: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0,
              limit_train: int | None = None, workers: int | None = None, run_dir: Path | None = None) -> Splits:
    """Load `spec` (None or 'fashion-mnist' for the embedded subset, an .npz file, or an image folder) with
    `workers` loader processes for image files (default `default_workers`). When `run_dir` records the images it
    began with (`SPLIT_FILE`: a resumed run), other images are refused and a folder's held-out split is taken from
    the record."""
    if workers is not None and not 0 <= workers <= 64:
        raise NasError(f"--workers {workers}: must be 0-64")
    record = run_dir / SPLIT_FILE if run_dir is not None else None
    recorded = _read_record(record) if record is not None and record.is_file() else None
    if spec is None or str(spec) == EMBEDDED:
        with resources.files("nas").joinpath("embedded/fashion_mnist_small.npz").open("rb") as f:
            data = _from_npz(np.load(f), "embedded Fashion-MNIST", EMBEDDED)
    else:
        path = Path(spec)
        if path.is_dir():
            data = _from_folder(path, val_fraction, seed, recorded)
        elif path.is_file() and path.suffix == ".npz":
            try:
                archive = np.load(path, allow_pickle=False)
                if not isinstance(archive, np.lib.npyio.NpzFile):
                    raise ValueError("a single array (.npy), not an archive of named arrays")
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise NasError(f"--data {path}: not a readable .npz file ({first_line(error)})") from None
            data = _from_npz(archive, str(path), str(path))
        elif path.exists():
            raise NasError(f"--data {path}: expected an .npz file or an image folder with one subfolder per class")
        else:
            raise NasError(f"--data {path}: no such file or folder; pass an .npz file or an image folder "
                           f"(one subfolder per class), or leave --data out for the embedded Fashion-MNIST")
    _check_same_images(recorded, data)
    if "val" not in data.labels:  # an .npz without x_val
        train, val = _stratified_split(data.labels["train"], val_fraction, seed)
        data.images["val"], data.labels["val"] = data.images["train"][val], data.labels["train"][val]
        data.images["train"], data.labels["train"] = data.images["train"][train], data.labels["train"][train]
    if limit_train:  # the first N images; from a folder (listed class by class) N drawn at random, seeded
        keep = np.arange(min(limit_train, data.size("train")))
        if data.files:
            keep = np.sort(np.random.default_rng(seed).permutation(data.size("train"))[:limit_train])
        data.labels["train"] = data.labels["train"][keep]
        if data.files:
            data.files["train"] = [data.files["train"][i] for i in keep]
        else:
            data.images["train"] = data.images["train"][keep]
    if recorded is not None and recorded.get("train_images", data.size("train")) != data.size("train"):
        raise NasError(f"--limit-train: this run began with {recorded['train_images']:,} training images, not "
                       f"{data.size('train'):,}; pass the same --limit-train to resume it, or start a new --run-dir")
    data.workers = default_workers() if workers is None else workers
    return data


def load_space_and_data(space_file: str | Path, spec: str | Path | None = None, seed: int = 0,
                        limit_train: int | None = None, workers: int | None = None,
                        run_dir: Path | None = None) -> tuple[SearchSpace, Splits]:
    """The space at `space_file`, its classifier fitted to the data's classes, and the data (`load_data`)."""
    space = load_space(space_file)
    data = load_data(spec, seed=seed, limit_train=limit_train, workers=workers, run_dir=run_dir)
    return space.with_num_classes(data.num_classes), data


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise NasError(f"{where}: images must be uint8 (0-255), got {x.dtype}")
    if x.ndim in (3, 4) and not (0 < x.shape[-1] <= 4096 and 0 < x.shape[-2] <= 4096):
        raise NasError(f"{where}: images of shape {x.shape}: each side must be 1 to 4,096 pixels")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        channels_first = x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3)
        return x if channels_first else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise NasError(f"{where}: images must be NHW, NHWC or NCHW, got shape {x.shape}")


def _from_npz(archive: np.lib.npyio.NpzFile, where: str, source: str) -> Splits:
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
    if missing:
        raise NasError(f"{where}: missing arrays {', '.join(sorted(missing))} "
                       "(expected x_train, y_train, x_test, y_test; optional x_val, y_val, class_names)")
    splits = ["train", "test"] + (["val"] if {"x_val", "y_val"} <= set(archive.files) else [])
    arrays = {name: _array(archive, name, where) for name in archive.files if name[:2] in ("x_", "y_")}
    images = {s: _to_nchw(arrays[f"x_{s}"], f"{where}: x_{s}") for s in splits}
    labels = {}
    for s in splits:
        y = arrays[f"y_{s}"]
        if y.dtype.kind not in "iu" or y.size != len(y.reshape(-1)) or y.ndim > 2:
            raise NasError(f"{where}: y_{s} must hold whole-number class labels, got {y.dtype} of shape {y.shape}")
        labels[s] = y.astype(np.int64).reshape(-1)
        if len(images[s]) != len(labels[s]) or len(labels[s]) == 0:
            raise NasError(f"{where}: x_{s} and y_{s} must be non-empty and of equal length")
        if labels[s].min() < 0:
            raise NasError(f"{where}: y_{s} holds a negative label ({labels[s].min()}); labels are 0, 1, 2, ...")
    names = None
    if "class_names" in archive.files:
        names = [str(n) for n in _array(archive, "class_names", where).reshape(-1)]
    num_classes = len(names) if names else int(max(labels[s].max() for s in splits)) + 1
    for s in splits:
        if labels[s].max() >= num_classes:
            raise NasError(f"{where}: y_{s} holds label {labels[s].max()}, but class_names names {num_classes} classes")
    if len(np.unique(labels["train"])) < 2 or num_classes > 100_000:
        raise NasError(f"{where}: the training labels must name from 2 to 100,000 classes, got "
                       f"{len(np.unique(labels['train']))} in train of {num_classes}")
    digest = hashlib.sha256(json.dumps(names).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
        digest.update(array.data)
    return Splits(labels, names or [str(i) for i in range(num_classes)], source, images=images,
                  fingerprint=digest.hexdigest())


def _array(archive: np.lib.npyio.NpzFile, name: str, where: str) -> np.ndarray:
    """One array of an .npz file; object arrays (pickles) and unreadable members are one NasError."""
    try:
        array = archive[name]
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile) as error:
        raise NasError(f"{where}: array {name} cannot be read safely ({first_line(error) or type(error).__name__})"
                       ) from None
    if not isinstance(array, np.ndarray):
        raise NasError(f"{where}: member {name} is not an array")
    return array


def _list_folder(folder: Path, class_names: list[str]) -> tuple[list[Path], list[int], list[tuple[str, int]]]:
    """The image files under `folder/<class>/` (sorted), their labels, and (relative name, size) of each."""
    files, labels, listing = [], [], []
    for index, name in enumerate(class_names):
        if not (folder / name).is_dir():
            continue
        entries = sorted((e for e in os.scandir(folder / name)
                          if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES), key=lambda e: e.name)
        for entry in entries:
            files.append(Path(entry.path))
            labels.append(index)
            listing.append((f"{name}/{entry.name}", entry.stat().st_size))
    return files, labels, listing


def _from_folder(root: Path, val_fraction: float, seed: int, recorded: dict[str, Any] | None) -> Splits:
    """`root/train/<class>/*` and `root/test/<class>/*` (optional `val/`), or `root/<class>/*` (20 % held out
    for test); validation held out of train when there is no `val/`. `recorded`: a run's `SPLIT_FILE`, whose
    held-out files are taken (when the folder is the one it records)."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"all": root}
    class_names = sorted(p.name for p in split_dirs.get("train", root).iterdir() if p.is_dir())
    if not class_names:
        raise NasError(f"--data {root}: no class subfolders found; expected {root}/<class>/<image> "
                       f"or {root}/train/<class>/<image> with {root}/test/<class>/<image>")
    if len(class_names) < 2:
        raise NasError(f"--data {root}: one class subfolder ({class_names[0]}); a classifier needs at least two")
    files, labels, fingerprint = {}, {}, hashlib.sha256()
    for split, folder in split_dirs.items():
        found, targets, listing = _list_folder(folder, class_names)
        if not found:
            raise NasError(f"--data {folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        files[split], labels[split] = found, np.array(targets, dtype=np.int64)
        fingerprint.update(json.dumps([split, listing]).encode())
    if "all" not in files and "test" not in files:
        raise NasError(f"--data {root}: has train/ but no test/ folder")
    first = "all" if "all" in files else "train"
    splits = Splits(labels, class_names, str(root), files=files, fingerprint=fingerprint.hexdigest())
    _check_same_images(recorded, splits)
    if "all" in files or "val" not in files:
        held_out = {"seed": seed, "val_fraction": val_fraction}
        if recorded is not None and isinstance(recorded.get("val"), list):
            held_out = {key: recorded[key] for key in ("seed", "val_fraction", "val", "test") if key in recorded}
        else:
            names = [str(f.relative_to(split_dirs[first])) for f in files[first]]
            rest = np.arange(len(names))
            if "all" in files:
                rest, test = _stratified_split(labels["all"], 0.2, seed=0)
                held_out["test"] = [names[i] for i in test]
            _, val = _stratified_split(labels[first][rest], val_fraction, seed)
            held_out["val"] = [names[i] for i in rest[val]]
        splits.files, splits.labels = _apply_split(files, labels, split_dirs[first], first, held_out)
        splits.held_out = held_out
    _probe(splits)
    return splits


def _read_record(path: Path) -> dict[str, Any]:
    """A run's record of its images (`SPLIT_FILE`)."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise NasError(f"{path}: not a readable split file ({first_line(error)}); use a new --run-dir") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("fingerprint"), str):
        raise NasError(f"{path}: not a split file written by nas; use a new --run-dir")
    return recorded


def _check_same_images(recorded: dict[str, Any] | None, data: Splits) -> None:
    """Refuse to resume a run on other images than those it `recorded` (its `SPLIT_FILE`)."""
    if recorded is None or recorded["fingerprint"] == data.fingerprint:
        return
    if recorded.get("source") == data.origin:
        raise NasError(f"--data {data.source}: the images changed since this run began (files added, removed or "
                       "rewritten); restore them, or start a new --run-dir")
    raise NasError(f"--data {data.source}: this run began with other images ({recorded.get('source')}); pass "
                   "those to resume it, or start a new --run-dir")


def _apply_split(files: dict[str, list[Path]], labels: dict[str, np.ndarray], folder: Path, first: str,
                 held_out: dict[str, Any]) -> tuple[dict[str, list[Path]], dict[str, np.ndarray]]:
    """Train, val and test as `held_out` names them, out of the split `first` (train, or all of a flat folder)."""
    position = {str(f.relative_to(folder)): i for i, f in enumerate(files[first])}
    chosen = {split: np.array([position[name] for name in held_out.get(split, [])], dtype=np.int64)
              for split in ("val", "test")}
    taken = np.zeros(len(files[first]), dtype=bool)
    for index in chosen.values():
        taken[index] = True
    chosen["train"] = np.flatnonzero(~taken)
    result_files, result_labels = dict(files), dict(labels)
    result_files.pop("all", None)
    result_labels.pop("all", None)
    for split, index in chosen.items():
        if split == "test" and "all" not in files:
            continue
        result_files[split] = [files[first][i] for i in index]
        result_labels[split] = labels[first][index]
    return result_files, result_labels


def _probe(data: Splits) -> None:
    """Open up to `PROBE_IMAGES` seeded-random images of each split: refuse a folder mostly unreadable."""
    rng = random.Random(0)
    for split, files in data.files.items():
        sample = rng.sample(files, min(PROBE_IMAGES, len(files)))
        failures = {}
        for path in sample:
            try:
                open_image(path)
            except NasError as error:
                failures[str(path)] = str(error)
        if len(failures) * 2 > len(sample):
            path, why = next(iter(failures.items()))
            raise NasError(f"--data {data.source}: {len(failures)} of {len(sample)} {split} images tried are "
                           f"unreadable (e.g. {path}: {why}); check the folder")


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        held.extend(rng.choice(members, max(1, round(len(members) * fraction)), replace=False))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
