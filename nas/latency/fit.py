"""`nas latency fit`: measure sampled sub-networks of a space on this device, fit a latency predictor, and
report its accuracy on held-out ones.

With ONNX Runtime every sub-network is exported first, on every core, before any timing (exports are kept
beside the predictor until the fit is done, so a killed fit does not export again). The timing is interleaved
(`measure_interleaved`): rounds over the whole sample, so the machine's slow spells slow every sub-network alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError
from nas.export import export_archs
from nas.latency.cache import LatencyCache, fingerprint
from nas.latency.measure import check_runtime, measure_interleaved
from nas.memory import check_onnx_size, check_running, meta_network, count_params
from nas.latency.predictor import STEADY, arch_features, fit_predictor, halves_agreement, sample_archs
from nas.report import plot_predictor
from nas.runs import RUNS_ROOT, check_output_file, safe_name
from nas.space import SearchSpace


def default_predictor_path(space: SearchSpace, device: torch.device, runtime: str, threads: int) -> Path:
    device_id = fingerprint(device, runtime, threads)["id"]
    return RUNS_ROOT / safe_name(f"latency-{space.name}-{runtime}-{device_id}") / "predictor.json"


def fit_latency(space: SearchSpace, device: torch.device, runtime: str = "torch", threads: int = 1,
                samples: int = 150, holdout: float = 0.3, rounds: int = 24, seed: int = 0,
                out: Path | None = None) -> dict[str, Any]:
    """Measure `samples` sub-networks of `space`, fit and save the predictor (with a plot beside it); returns
    its file, fingerprint, device name, held-out accuracy figures and how steady the measurements were
    (`halves_within_10pct`, `steady`)."""
    from tqdm import tqdm

    check_runtime(runtime)
    if samples < 10 or not 0 < holdout < 1 or rounds < 2:
        raise NasError("--samples must be at least 10, --holdout between 0 and 1 and --rounds at least 2")
    if out is not None:
        check_output_file(out, "--out")
    out = out or default_predictor_path(space, device, runtime, threads)
    largest = f"space {space.name}'s largest member"
    check_running(space.largest(), 1, device, largest, fix="use a device with more memory, or a smaller space")
    if runtime == "onnxruntime":
        check_onnx_size(count_params(meta_network(space.largest())), largest)
    archs = sample_archs(space, samples, seed)
    exports = out.with_name(f"{out.stem}-onnx") if runtime == "onnxruntime" else None
    if exports is not None:
        with tqdm(total=len(archs), desc="exporting to ONNX", unit="sub-network", disable=None) as bar:
            export_archs(archs, exports, progress=bar.update)
    with tqdm(total=len(archs) * rounds, desc=f"measuring on {device} ({runtime})", unit="block",
              disable=None) as bar:
        records = measure_interleaved(archs, device, runtime, threads, rounds=rounds, cache=LatencyCache(),
                                      onnx_folder=exports, progress=bar.update)
    if exports is not None:
        shutil.rmtree(exports, ignore_errors=True)
    features = [arch_features(arch) for arch in archs]
    predictor = fit_predictor(features, records, holdout, seed)
    agreement = halves_agreement(records)
    predictor.metrics["halves_within_10pct"] = agreement
    predictor.save(out)
    plot_predictor(features, records, predictor, out.with_suffix(".png"))
    return {"predictor": str(out), "fingerprint": predictor.fingerprint, "space": space.name,
            "device_name": records[0].device_name,
            **predictor.metrics, "steady": agreement >= STEADY}


def fit_lines(result: dict[str, Any], space_file: str, runtime: str, threads: int) -> list[str]:
    """`fit_latency`'s result for a person, with how to use the predictor and a word on unsteady timings."""
    steadiness = (f"measurements: odd and even rounds within 10 % of each other for "
                  f"{100 * result['halves_within_10pct']:.0f} % of the sub-networks")
    if not result["steady"]:
        steadiness += ("; this device's timings are unsteady (other work on it?) and no predictor can be more "
                       "accurate than they are: fit again when it is quiet, or with more --rounds")
    return [f"latency predictor for {result['space']} on {result['device_name']} ({runtime}, {threads} thread(s)): "
            f"{result['predictor']}",
            f"held-out ({result['n']} sub-networks): RMSE {result['rmse_ms']:.3f} ms, MAPE "
            f"{100 * result['mape']:.1f} %, {100 * result['within_5pct']:.0f} % within 5 %, "
            f"{100 * result['within_10pct']:.0f} % within 10 %, Spearman {result['spearman']:.3f}", steadiness,
            f"use it: nas search --space {space_file} --predictor {result['predictor']} --runtime {runtime} ..."]
