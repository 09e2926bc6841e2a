"""Device fingerprints, the persistent latency cache, and the per-device lock.

The cache is one JSON-lines file in the cache folder (`$NAS_CACHE_DIR`, default `~/.cache/nas`), shared by every
run and command. A record is keyed by arch id, device fingerprint, runtime, batch, resolution and dtype. A file
that does not parse is never trusted: it is moved aside and the cache starts empty, with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


def cache_dir() -> Path:
    path = Path(os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "nas")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def _runtime_versions() -> dict[str, str]:
    versions = {"torch": str(torch.__version__), "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def fingerprint(device: torch.device, runtime: str, threads: int) -> dict[str, Any]:
    """What a latency depends on besides the model: hardware, thread count, runtime and library versions."""
    if device.type == "cuda":
        index = device.index or 0
        props = torch.cuda.get_device_properties(index)
        hardware = {"device_name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30), "cuda": str(torch.version.cuda)}
        threads = 0
    else:
        hardware = {"device_name": _cpu_name(), "logical_cpus": os.cpu_count(), "machine": platform.machine()}
    versions = _runtime_versions()
    identity = {**hardware, "device_type": device.type, "threads": threads, "runtime": runtime, **versions}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return {"id": digest, "device_name": hardware["device_name"], "versions": versions, "identity": identity}


def cache_key(arch_id: str, fingerprint_id: str, runtime: str, batch: int, resolution: int,
              dtype: str = "float32") -> str:
    return f"{arch_id}|{fingerprint_id}|{runtime}|b{batch}|r{resolution}|{dtype}"


LOCK_WAIT_NOTICE_SECONDS = 10.0


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool, waiting: str | None = None) -> Iterator[int]:
    """flock `path`; print `waiting` (if given) when that takes over LOCK_WAIT_NOTICE_SECONDS (the short waits of a
    search's own trials stay quiet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    notice = threading.Timer(LOCK_WAIT_NOTICE_SECONDS, print, [f"nas: {waiting}"], {"file": sys.stderr, "flush": True})
    notice.daemon = True
    if waiting:
        notice.start()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            notice.cancel()
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def device_lock(device: torch.device | str, exclusive: bool) -> contextlib.AbstractContextManager:
    """Measurements take it exclusively, training and evaluation shared: they never overlap on one device.

    A process must not ask for the exclusive lock while it holds the shared one (flock would wait on itself).
    A process that has to wait says so: otherwise a measurement behind a day-long training looks hung.
    """
    name = str(device).replace(":", "")
    path = cache_dir() / "locks" / f"device-{name}.lock"
    return _locked(path, exclusive, f"waiting for {device}: another nas process trains, evaluates or measures on it "
                                    f"(lock {path})")


class LatencyCache:
    """Latency records by key, persisted as JSON lines; safe for several processes appending at once."""

    def __init__(self, path: Path | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.path = path or cache_dir() / "latency.jsonl"
        self._warn = warn or (lambda message: print(f"nas: warning: {message}", file=sys.stderr))
        self._records: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with _locked(self.path.with_name(self.path.name + ".lock"), exclusive=False):
            text = self.path.read_text(errors="replace")
        records = {}
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
                records[entry["key"]] = dict(entry["record"])
                float(entry["record"]["median_ms"]), float(entry["record"]["p90_ms"])
            except (ValueError, KeyError, TypeError):
                aside = self.path.with_name(self.path.name + ".corrupt")
                os.replace(self.path, aside)
                self._warn(f"latency cache {self.path} is corrupt (line {number}); moved to {aside.name} and "
                           "rebuilt: latencies will be measured again")
                return
        self._records = records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def put(self, key: str, record: dict) -> None:
        self._records[key] = record
        line = json.dumps({"key": key, "record": record}) + "\n"
        with _locked(self.path.with_name(self.path.name + ".lock"), exclusive=True):
            with open(self.path, "a") as f:
                f.write(line)

    def __len__(self) -> int:
        return len(self._records)
