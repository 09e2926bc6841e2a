"""Run folders and the files in them: atomic writes, checkpoints that are validated on load, file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError

RUNS_ROOT = Path("runs")
# The meaning nas gives to stored weights: raised when the same tensors come to mean something else (2: GhostNet
# channels grouped per primary channel, fused projections sliced part by part), so older checkpoints are refused
WEIGHT_LAYOUT = 2


def safe_name(name: str) -> str:
    """`name` (taken from a file: a space's name, an arch file's stem) fit to be one folder name: runs of other
    characters than letters, digits, '.', '_' and '-' become '-', and it cannot be '.', '..' or hidden."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "unnamed"


def check_run_dir(run_dir: Path, ours: tuple[str, ...], given: bool, option: str = "--run-dir") -> None:
    """Refuse `run_dir` before anything is written unless it is a folder nas may write in: one that does not exist
    yet (`given` by the user: under an existing folder, which nas does not create), an empty one, or one holding a
    run of this kind (any of the files `ours`)."""
    if "\0" in str(run_dir):
        raise NasError(f"{option}: a path with a NUL character; pass a folder name")
    if run_dir.is_symlink() and not run_dir.exists():
        raise NasError(f"{option} {run_dir}: a symbolic link to nowhere (dangling, or a loop); pass a folder")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise NasError(f"{option} {run_dir}: is a file, not a folder; pass a new folder")
        if any(run_dir.iterdir()) and not any((run_dir / name).exists() for name in ours):
            raise NasError(f"{option} {run_dir}: holds files nas did not write there; pass a new or empty folder")
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise NasError(f"{option} {run_dir}: not writable; pass a folder you can write to")
    elif given:
        check_parent(run_dir, option)


def check_parent(path: Path, option: str) -> None:
    """Refuse `path` unless its parent is an existing folder this process can write in (nas creates no parents
    of a path the user names)."""
    parent = path.absolute().parent
    if not parent.is_dir():
        raise NasError(f"{option} {path}: its folder {parent} does not exist; create it first, or pass another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NasError(f"{option} {path}: {parent} is not writable; pass a path you can write to")


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file the user names unless nas can write it: not a folder, in an existing writable one."""
    if "\0" in str(path):
        raise NasError(f"{option}: a path with a NUL character; pass a file name")
    if path.is_symlink() and not path.exists():
        raise NasError(f"{option} {path}: a symbolic link to nowhere (dangling, or a loop); pass a file name")
    if path.is_dir():
        raise NasError(f"{option} {path}: is a folder; pass a file name in it")
    if path.exists() and not path.is_file():
        raise NasError(f"{option} {path}: not a regular file; pass a file name")
    check_parent(path, option)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file and rename it over `path`, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_yaml(path: Path, data: Any) -> None:
    atomic_write(path, yaml.safe_dump(data, sort_keys=False).encode())


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch  # here, not above: the rest of this module serves without torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**payload, "weight_layout": WEIGHT_LAYOUT}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, kind: str, hint: str = "") -> dict[str, Any]:
    """Load a checkpoint of `kind` ('nas-supernet' or 'nas-model') safely; any other file is a NasError, which
    ends with `hint` (what to pass instead) when the file is missing or of another kind."""
    import torch

    path = Path(path)
    fix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise NasError(f"{path}: no such checkpoint file{fix}")
    try:
        with warnings.catch_warnings():  # torch warns of odd pickle protocols: the one line below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            IndexError) as error:
        raise NasError(f"{path}: not a readable checkpoint (corrupt, truncated, or not a file nas wrote; "
                       f"{type(error).__name__}); pass a checkpoint written by nas") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise NasError(f"{path}: expected a {kind} checkpoint written by nas, found {found or 'something else'}{fix}")
    if payload.get("weight_layout", 1) != WEIGHT_LAYOUT:
        raise NasError(f"{path}: written by a nas whose weights mean something else (layout "
                       f"{payload.get('weight_layout', 1)}, this nas reads {WEIGHT_LAYOUT}); train it again in a new "
                       "run folder")
    return payload


def differing_settings(saved: dict[str, Any], current: dict[str, Any], free: tuple[str, ...] = ()) -> list[str]:
    """The names of the settings in `current`, but not in `free`, that `saved` records otherwise (a missing one as
    None), in `current`'s order: what keeps a run from being resumed."""
    return [name for name, value in current.items() if name not in free and saved.get(name) != value]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
