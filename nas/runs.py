"""Run folders and the files in them: atomic writes, checkpoints that are validated on load, file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError

RUNS_ROOT = Path("runs")
# The meaning nas gives to stored weights: raised when the same tensors come to mean something else (2: GhostNet
# channels grouped per primary channel, fused projections sliced part by part), so older checkpoints are refused
WEIGHT_LAYOUT = 2


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
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as error:
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
