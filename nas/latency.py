"""Latency measured on the target device: warm-up, repeated timed runs, median and p90.

CPU: denormals flushed (freshly initialised weights otherwise dominate the timing) and the thread count fixed
and recorded. CUDA: CUDA events around each run, with synchronisation.
"""

from __future__ import annotations

import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from nas.errors import NasError

_UNITS_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1000.0}


def parse_budget(text: str) -> float:
    """'5ms', '800us', '0.005s' -> milliseconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s)\s*", str(text))
    if not match:
        raise NasError(f"--latency-budget {text!r}: expected a number with a unit, e.g. 5ms, 800us or 0.005s")
    value = float(match.group(1)) * _UNITS_MS[match.group(2)]
    if value <= 0:
        raise NasError(f"--latency-budget {text!r}: must be greater than zero")
    return value


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N', checked against this machine."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise NasError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NasError(f"--device {name}: CUDA is not available on this machine "
                           "(torch.cuda.is_available() is False); use --device cpu, or install a CUDA build of torch")
        if (device.index or 0) >= torch.cuda.device_count():
            raise NasError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class LatencyRecord:
    median_ms: float
    p90_ms: float
    spread: float  # (p90 - p10) / median
    runs: int
    batch: int
    resolution: int
    device: str
    device_name: str
    threads: int
    runtime: str
    torch_version: str
    block_medians_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "block_medians_ms": list(self.block_medians_ms)}


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# For the measurements a user reads (budget check, winner, retrained model): blocks spread over about 2 s.
CAREFUL = {"repeats": 8, "pause_s": 0.25}


def measure_latency(model: nn.Module, in_channels: int, resolution: int, device: torch.device,
                    threads: int = 1, batch: int = 1, warmup: int = 10, runs: int = 50, repeats: int = 3,
                    pause_s: float = 0.05) -> LatencyRecord:
    """Time `model` on one input batch (moved to `device`, eval mode).

    A shared machine slows down in bursts that last up to seconds and lift every run of a block alike, so the
    runs are taken in `repeats` blocks a little apart and the block with the lowest median is reported: the
    latency of the device undisturbed. All block medians are kept in the record to show the noise.
    """
    blocks = []
    for i in range(repeats):
        if i:
            time.sleep(pause_s)
        blocks.append(_measure_once(model, in_channels, resolution, device, threads, batch, warmup, runs))
    best = min(blocks, key=lambda r: r.median_ms)
    return replace(best, block_medians_ms=tuple(round(b.median_ms, 4) for b in blocks))


@torch.inference_mode()
def _measure_once(model: nn.Module, in_channels: int, resolution: int, device: torch.device, threads: int,
                  batch: int, warmup: int, runs: int) -> LatencyRecord:
    model = model.to(device).eval()
    x = torch.randn(batch, in_channels, resolution, resolution, device=device)
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
    try:
        warm_until = time.perf_counter() + 0.05  # oneDNN and the allocator settle after a few calls
        for i in range(max(warmup, 1_000_000)):
            model(x)
            if i + 1 >= warmup and time.perf_counter() > warm_until:
                break
        times = []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            for _ in range(runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(runs):
                begin = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - begin) * 1000.0)
    finally:
        torch.set_num_threads(saved_threads)
    times.sort()
    median = statistics.median(times)
    return LatencyRecord(median, _percentile(times, 0.9), (_percentile(times, 0.9) - _percentile(times, 0.1)) / median,
                         runs, batch, resolution, str(device), device_name(device),
                         threads if device.type == "cpu" else 0, "torch", str(torch.__version__))
