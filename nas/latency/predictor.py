"""A latency predictor fitted on the target device, to screen candidates without timing each one.

Latency is modelled as additive over the network's parts: for each stage and block family, a cost per
floating-point operation and a cost per block (the per-call overhead that dominates small networks), plus the
stem, the head and a constant. Features come from `torch.utils.flop_counter` per module, so a new block family
needs no predictor code. Two ridge regressions (median and p90) are fitted on standardised features.

A predictor is only valid for the device fingerprint it was fitted on, and refuses any other.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.latency.measure import LatencyRecord
    from nas.space import SearchSpace

FORMAT = "nas-latency-predictor"


def arch_features(arch: "Arch") -> dict[str, float]:
    """Per-part FLOPs (in millions) and block counts of `arch` at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    from supernet.network import build

    model = build(arch).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, arch.in_channels, arch.resolution, arch.resolution))
    per_module = counter.get_flop_counts()

    def mflops(name: str) -> float:
        counts = per_module.get(f"HybridNet.{name}", {})
        return sum(counts.values()) / 1e6

    features = {"const": 1.0, "stem.mflops": mflops("stem"), "head.mflops": mflops("head")}
    for i, stage in enumerate(arch.stages):
        features[f"s{i}.{stage.family}.mflops"] = mflops(f"stages.{i}")
        features[f"s{i}.{stage.family}.blocks"] = float(stage.depth)
    return features


@dataclass
class LatencyPredictor:
    fingerprint: str
    identity: dict[str, Any]
    runtime: str
    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    weights: dict[str, list[float]]  # target ("median_ms", "p90_ms") -> weights over standardised features
    relative_error_sd: float  # of held-out relative errors: the prediction's uncertainty
    metrics: dict[str, float]

    def _matrix(self, features: list[dict[str, float]]) -> np.ndarray:
        raw = np.array([[f.get(name, 0.0) for name in self.feature_names] for f in features])
        return (raw - np.array(self.mean)) / np.array(self.scale)

    def predict_features(self, features: list[dict[str, float]], target: str = "median_ms") -> np.ndarray:
        return self._matrix(features) @ np.array(self.weights[target])

    def predict(self, arch: "Arch", fingerprint_id: str) -> tuple[float, float]:
        """Predicted (median, p90) latency in ms of `arch` on the device with `fingerprint_id`."""
        if fingerprint_id != self.fingerprint:
            raise NasError(f"this latency predictor was fitted on device fingerprint {self.fingerprint} "
                           f"({self.identity.get('device_name')}, {self.runtime}, {self.identity.get('threads')} "
                           f"thread(s)), not {fingerprint_id}; fit one here with `nas latency fit`")
        features = [arch_features(arch)]
        return float(self.predict_features(features)[0]), float(self.predict_features(features, "p90_ms")[0])

    def save(self, path: Path) -> None:
        from nas.runs import write_json

        write_json(path, {"format": FORMAT, "version": 1, **self.__dict__})

    @classmethod
    def load(cls, path: Path) -> "LatencyPredictor":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise NasError(f"{path}: not a readable latency predictor ({type(error).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise NasError(f"{path}: not a latency predictor written by `nas latency fit`")
        data.pop("format"), data.pop("version", None)
        return cls(**data)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    penalty = alpha * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # the constant is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def accuracy_report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    relative = (predicted - measured) / measured
    return {"rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "mape": float(np.mean(np.abs(relative))), "within_5pct": float(np.mean(np.abs(relative) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(relative) <= 0.10)), "spearman": spearman(predicted, measured),
            "n": int(len(measured))}


def fit_predictor(features: list[dict[str, float]], records: list["LatencyRecord"], holdout: float = 0.3,
                  seed: int = 0, alpha: float = 1e-2) -> LatencyPredictor:
    """Fit on (1 - holdout) of the samples, report accuracy on the rest, then refit on all of them."""
    if len(records) < 10:
        raise NasError("a latency predictor needs at least 10 measured sub-networks (--samples)")
    fingerprints = {r.fingerprint for r in records}
    if len(fingerprints) != 1:
        raise NasError("the measurements come from several devices or runtimes; fit one predictor per fingerprint")
    names = sorted({name for f in features for name in f}, key=lambda n: (n != "const", n))
    raw = np.array([[f.get(name, 0.0) for name in names] for f in features])
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    mean[0], scale[0] = 0.0, 1.0  # keep the constant column as ones
    scale[scale == 0] = 1.0
    x = (raw - mean) / scale
    targets = {"median_ms": np.array([r.median_ms for r in records]), "p90_ms": np.array([r.p90_ms for r in records])}
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = np.array(order[: max(1, math.floor(len(order) * holdout))])
    train = np.array(order[len(held):])
    held_out_predictions = x[held] @ _ridge(x[train], targets["median_ms"][train], alpha)
    metrics = accuracy_report(held_out_predictions, targets["median_ms"][held])
    relative = (held_out_predictions - targets["median_ms"][held]) / targets["median_ms"][held]
    weights = {name: _ridge(x, y, alpha).tolist() for name, y in targets.items()}
    first = records[0]
    from nas.latency.cache import fingerprint as _fingerprint  # identity of the device, for the refusal message

    identity = _fingerprint(torch.device(first.device), first.runtime, first.threads or 1)["identity"]
    return LatencyPredictor(first.fingerprint, identity, first.runtime, names, mean.tolist(), scale.tolist(),
                            weights, float(np.std(relative)), metrics)


def sample_archs(space: "SearchSpace", count: int, seed: int = 0) -> list["Arch"]:
    """`count` distinct members: the smallest, the largest and random ones."""
    rng = random.Random(seed)
    archs = {a.arch_id: a for a in (space.smallest(), space.largest())}
    attempts = 0
    while len(archs) < count and attempts < 100 * count:
        arch = space.sample(rng)
        archs.setdefault(arch.arch_id, arch)
        attempts += 1
    return list(archs.values())[:count]


def measure_many(archs: list["Arch"], measure: Callable[["Arch"], "LatencyRecord"],
                 progress: Callable[[int], None] = lambda n: None) -> tuple[list[dict[str, float]], list]:
    features, records = [], []
    for arch in archs:
        records.append(measure(arch))
        features.append(arch_features(arch))
        progress(1)
    return features, records
