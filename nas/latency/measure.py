"""The measurement protocol: one model, one device, one runtime, timed the same way every time.

Warm-up, then blocks of timed runs a little apart; the steadiest block (lowest p90, then lowest median)
is reported (a shared machine slows down in bursts that lift every run of a block alike, or spike within
one), with its median, p90, trimmed mean and spread. While every block is too spread out, more are taken. CPU: denormals
flushed (freshly initialised weights otherwise dominate the timing) and the thread count fixed and recorded.
CUDA: CUDA events around each run. Every measurement holds the device's exclusive lock, so measurements never
overlap each other or training (which holds the shared lock) on the same device, across processes too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from nas.errors import NasError
from nas.latency.cache import LatencyCache, cache_dir, cache_key, device_lock, fingerprint

if TYPE_CHECKING:
    from nas.arch import Arch

RUNTIMES = ("torch", "torch-compile", "onnxruntime")
_UNITS_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1000.0}

# For the measurements a user reads (budget check, winner, retrained model): blocks spread over about 2 s.
CAREFUL = {"repeats": 8, "pause_s": 0.25}


def parse_budget(text: str) -> float:
    """'5ms', '800us', '0.005s' -> milliseconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s)\s*", str(text))
    if not match:
        raise NasError(f"--latency-budget {text!r}: expected a number with a unit, e.g. 5ms, 800us or 0.005s")
    value = float(match.group(1)) * _UNITS_MS[match.group(2)]
    if not 0 < value <= 60_000:
        raise NasError(f"--latency-budget {text!r}: must be above zero and at most a minute (60s)")
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


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise NasError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    return runtime


@dataclass(frozen=True)
class LatencyRecord:
    median_ms: float
    p90_ms: float
    trimmed_mean_ms: float  # mean without the fastest and slowest 10 %
    spread: float  # (p90 - p10) / median
    runs: int
    batch: int
    resolution: int
    dtype: str
    device: str
    device_name: str
    threads: int
    runtime: str
    runtime_version: str
    fingerprint: str
    versions: dict = field(default_factory=dict)
    block_medians_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "block_medians_ms": list(self.block_medians_ms)}

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyRecord":
        return cls(**{**data, "block_medians_ms": tuple(data.get("block_medians_ms", ()))})

    def summary(self) -> str:
        """One line for a person: median, p90 and what they were measured on."""
        return (f"{self.median_ms:.3f} ms median, {self.p90_ms:.3f} ms p90 ({self.runs} runs, batch {self.batch}, "
                f"{self.device_name}, {self.threads} thread(s), {self.runtime} {self.runtime_version})")


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _runner(model: nn.Module, x: torch.Tensor, runtime: str, device: torch.device, threads: int,
            workdir: Path, onnx_file: Path | None = None) -> tuple[Callable[[], object], str]:
    """A zero-argument callable that runs one inference, and the runtime's version. ONNX Runtime runs
    `onnx_file` (the model exported for this input shape; exported there first when missing), else a fresh export."""
    if runtime == "onnxruntime":
        import onnxruntime

        from nas.export import export_onnx, onnx_session

        path = Path(onnx_file) if onnx_file is not None else workdir / "model.onnx"
        if not path.exists():
            export_onnx(model, x.shape[1], x.shape[-1], path, batch=x.shape[0])
        session = onnx_session(path, threads, str(device))
        feed = {session.get_inputs()[0].name: x.cpu().numpy()}
        return (lambda: session.run(None, feed)), onnxruntime.__version__
    model = model.to(device).eval()
    if runtime == "torch-compile":
        model = torch.compile(model)

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run, str(torch.__version__)


def measure_latency(model: nn.Module, in_channels: int, resolution: int, device: torch.device,
                    threads: int = 1, batch: int = 1, runtime: str = "torch", warmup: int = 10, runs: int = 50,
                    repeats: int = 3, pause_s: float = 0.05, max_spread: float = 0.3,
                    extra_repeats: int = 3, onnx_file: Path | None = None) -> LatencyRecord:
    """Time one inference of `model` on a random input batch; see the module docstring for the protocol.
    With ONNX Runtime, `onnx_file` is `model` exported for this batch and size (exported there first when missing)."""
    check_runtime(runtime)
    x = torch.randn(batch, in_channels, resolution, resolution, device=device)
    saved_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="nas-latency-") as workdir, device_lock(device, exclusive=True):
        if device.type == "cpu":
            torch.set_num_threads(threads)
            torch.set_flush_denormal(True)
        try:
            run, version = _runner(model, x, runtime, device, threads, Path(workdir), onnx_file)
            synchronise = device.type == "cuda" and runtime != "onnxruntime"
            blocks: list[list[float]] = []
            while len(blocks) < repeats or (min(_spread(b) for b in blocks) > max_spread
                                            and len(blocks) < repeats + extra_repeats):
                if blocks:
                    time.sleep(pause_s)
                blocks.append(_time_block(run, warmup, runs, synchronise, device))
        finally:
            torch.set_num_threads(saved_threads)
    best = min(blocks, key=lambda b: (_percentile(sorted(b), 0.9), statistics.median(b)))
    return _record(best, blocks, batch, resolution, device, threads, runtime, version)


def _record(times: list[float], blocks: list[list[float]], batch: int, resolution: int, device: torch.device,
            threads: int, runtime: str, version: str) -> LatencyRecord:
    """The record summarising `times` (the runs reported), with the median of every block timed."""
    ordered = sorted(times)
    cut = len(ordered) // 10
    info = fingerprint(device, runtime, threads)
    return LatencyRecord(
        median_ms=statistics.median(ordered), p90_ms=_percentile(ordered, 0.9),
        trimmed_mean_ms=statistics.fmean(ordered[cut:len(ordered) - cut]), spread=_spread(ordered), runs=len(ordered),
        batch=batch, resolution=resolution, dtype="float32", device=str(device), device_name=info["device_name"],
        threads=threads if device.type == "cpu" else 0, runtime=runtime, runtime_version=version,
        fingerprint=info["id"], versions=info["versions"],
        block_medians_ms=tuple(round(statistics.median(b), 4) for b in blocks))


def _spread(times: list[float]) -> float:
    ordered = sorted(times)
    return (_percentile(ordered, 0.9) - _percentile(ordered, 0.1)) / statistics.median(ordered)


def _time_block(run: Callable[[], object], warmup: int, runs: int, synchronise: bool,
                device: torch.device, settle_s: float = 0.05) -> list[float]:
    warm_until = time.perf_counter() + settle_s  # oneDNN and the allocator settle after a few calls
    done = 0
    while done < warmup or time.perf_counter() < warm_until:
        run()
        done += 1
    times = []
    if synchronise:
        torch.cuda.synchronize(device)
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(runs):
            begin = time.perf_counter()
            run()
            times.append((time.perf_counter() - begin) * 1000.0)
    return times


def measurement_key(arch: "Arch", device: torch.device, runtime: str = "torch", threads: int = 1, batch: int = 1,
                    cache_tag: str = "") -> str:
    """The latency cache's key of `measure_arch`'s record for these arguments."""
    key = cache_key(arch.arch_id, fingerprint(device, runtime, threads)["id"], runtime, batch, arch.resolution)
    return key + (f"|{cache_tag}" if cache_tag else "")


def measure_arch_file(path: str, device: torch.device, runtime: str = "torch", threads: int = 1, batch: int = 1,
                      runs: int = 50) -> tuple["Arch", LatencyRecord]:
    """`nas measure`: the arch in `path` (an arch YAML, best.yaml or timm:MODEL), checked to fit `device` at
    `batch` (and in one ONNX file for ONNX Runtime), measured carefully and afresh."""
    from nas.arch import load_arch
    from nas.memory import check_onnx_size, check_running, meta_network, count_params

    check_runtime(runtime)
    arch = load_arch(path)
    check_running(arch, batch, device, path)
    if runtime == "onnxruntime":
        check_onnx_size(count_params(meta_network(arch)), path)
    return arch, measure_arch(arch, device, runtime, threads, batch, cache=LatencyCache(), refresh=True, runs=runs,
                              **CAREFUL)


def measure_arch(arch: "Arch", device: torch.device, runtime: str = "torch", threads: int = 1, batch: int = 1,
                 cache: LatencyCache | None = None, model: nn.Module | None = None, refresh: bool = False,
                 expected_ms: float | None = None, expected_p90_ms: float | None = None,
                 onnx_file: Path | None = None, **protocol: float) -> LatencyRecord:
    """Latency of `arch` (built fresh unless `model` is given), from `cache` when it holds this measurement.

    `refresh` measures again even on a cache hit (and stores the new record): for the figures a user reads.
    `expected_ms` (and `expected_p90_ms`) are an earlier measurement of the same arch: a new median (or p90)
    more than 25 % above it is taken to be a slow or spiky spell of a shared machine (they last seconds), and
    the measurement is repeated after a pause, up to 3 times; the steadiest record (lowest p90) is kept.
    `onnx_file` is `model` exported for ONNX Runtime (so the file timed is the one shipped); it is exported there
    first when missing, so that measuring an arch again does not export it again.
    """
    from supernet.network import build

    key = measurement_key(arch, device, runtime, threads, batch)
    if cache is not None and not refresh:
        hit = cache.get(key)
        if hit is not None:
            return LatencyRecord.from_dict(hit)
    model = model if model is not None else build(arch)
    record = measure_latency(model, arch.in_channels, arch.resolution, device, threads, batch, runtime,
                             onnx_file=onnx_file, **protocol)
    def disturbed(r: LatencyRecord) -> bool:
        return bool((expected_ms and r.median_ms > 1.25 * expected_ms)
                    or (expected_p90_ms and r.p90_ms > 1.25 * expected_p90_ms))

    for _ in range(3):
        if not disturbed(record):
            break
        time.sleep(2.0)
        again = measure_latency(model, arch.in_channels, arch.resolution, device, threads, batch, runtime,
                                onnx_file=onnx_file, **protocol)
        record = min(record, again, key=lambda r: (r.p90_ms, r.median_ms))
    if cache is not None:
        cache.put(key, record.to_dict())
    return record


def measure_interleaved(archs: list["Arch"], device: torch.device, runtime: str = "torch", threads: int = 1,
                        batch: int = 1, rounds: int = 24, cache: LatencyCache | None = None,
                        onnx_folder: Path | None = None, warmup: int = 2, runs: int = 5,
                        progress: Callable[[int], None] = lambda n: None) -> list[LatencyRecord]:
    """Latencies of many archs timed together, for comparing them (fitting a predictor): `rounds` rounds, each a
    short block of `runs` runs of every arch in a new random order; each arch's record pools its blocks, steadied.

    A shared machine's speed drifts in spells of seconds to minutes. Timed one after another, archs land in
    different spells and their latencies move apart by more than a predictor's error. Interleaved, every arch's
    blocks are spread over the whole measurement and see the same spells, which then shift all latencies alike;
    and a spell of a few seconds, which slows only the blocks timed during it, is divided out (`_steadied`).
    Finished rounds are checkpointed in the cache folder, so a killed measurement resumes; when it completes each
    record goes to `cache` (kept apart from single measurements), and a repeat is answered from there.
    With ONNX Runtime, `onnx_folder` holds the exports (`nas.export.arch_onnx_path`; missing ones are exported).
    """
    from nas.export import arch_onnx_path
    from supernet.network import build

    check_runtime(runtime)
    tag = f"interleaved steadied {rounds}x{runs}"
    keys = [measurement_key(arch, device, runtime, threads, batch, tag) for arch in archs]
    if cache is not None and all(cache.get(key) is not None for key in keys):
        return [LatencyRecord.from_dict(cache.get(key)) for key in keys]
    identity = json.dumps([keys, warmup], sort_keys=True).encode()
    checkpoint = cache_dir() / "interleaved" / f"{hashlib.sha256(identity).hexdigest()[:16]}.json"
    blocks: list[list[list[float]]] = [[] for _ in archs]
    if checkpoint.is_file():
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(checkpoint.read_text())
            if isinstance(saved, list) and len(saved) == len(archs) and len({len(b) for b in saved}) == 1:
                blocks = saved  # whole rounds only: it is written after each
    synchronise = device.type == "cuda" and runtime != "onnxruntime"
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
    try:
        with tempfile.TemporaryDirectory(prefix="nas-latency-") as workdir:
            runners, version = [], ""
            for arch in archs:
                x = torch.randn(batch, arch.in_channels, arch.resolution, arch.resolution, device=device)
                onnx_file = arch_onnx_path(onnx_folder or workdir, arch)
                run, version = _runner(build(arch), x, runtime, device, threads, Path(workdir), onnx_file)
                runners.append(run)
            with device_lock(device, exclusive=True):
                for run in runners:  # first calls are slow (allocation, kernel selection): run each past them
                    _time_block(run, 10, 0, synchronise, device)
            done = min(len(b) for b in blocks)
            progress(done * len(archs))
            for round_index in range(done, rounds):
                with device_lock(device, exclusive=True):
                    for i in _round_order(round_index, len(archs)):
                        blocks[i].append(_time_block(runners[i], warmup, runs, synchronise, device, settle_s=0.0))
                        progress(1)
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                partial = checkpoint.with_suffix(".tmp")
                partial.write_text(json.dumps(blocks))
                partial.replace(checkpoint)
    finally:
        torch.set_num_threads(saved_threads)
    steadied = _steadied(blocks, [_round_order(round_index, len(archs)) for round_index in range(rounds)])
    records = [_record([t for block in arch_blocks for t in block], arch_blocks, batch, arch.resolution, device,
                       threads, runtime, version) for arch, arch_blocks in zip(archs, steadied)]
    if cache is not None:
        for key, record in zip(keys, records):
            cache.put(key, record.to_dict())
    checkpoint.unlink(missing_ok=True)
    return records


def _round_order(round_index: int, count: int) -> list[int]:
    """The order in which `measure_interleaved` times its `count` archs in round `round_index`: a new random one
    every round, the same on a resumed run."""
    order = list(range(count))
    random.Random(round_index).shuffle(order)
    return order


def _steadied(blocks: list[list[list[float]]], orders: list[list[int]],
              neighbours: int = 6) -> list[list[list[float]]]:
    """`blocks[arch][round]`'s timings, each block divided by the machine's pace when it was timed: the median, over
    the `neighbours` blocks timed just before it and those just after it in its round (`orders[round]`), of each
    one's median relative to its own arch's usual (its median over all rounds). A slow spell of a few seconds lifts
    those neighbours alike and is divided out; on this project's shared 2-core machines that took the share of
    sub-networks whose odd and even rounds agree within 10 % from 82 to 99 % (torch) and 94 to 98 % (ONNX
    Runtime). With a single arch there are no neighbours and nothing changes."""
    usual = [statistics.median(statistics.median(block) for block in arch_blocks) for arch_blocks in blocks]
    steadied: list[list[list[float]]] = [[] for _ in blocks]
    for round_index, order in enumerate(orders):
        pace = [statistics.median(blocks[i][round_index]) / usual[i] for i in order]
        for position, i in enumerate(order):
            around = pace[max(0, position - neighbours):position] + pace[position + 1:position + 1 + neighbours]
            factor = statistics.median(around) if around else 1.0
            steadied[i].append([t / factor for t in blocks[i][round_index]])
    return steadied
