"""A latency predictor fitted on the target device, to screen candidates without timing each one.

Latency is modelled as a sum of costs of what one batch-1 forward executes, recorded aten op by aten op: a cost
per op call (the dispatch overhead that dominates small networks in eager torch), a smaller one per view, and for
convolutions an extra cost per call (oneDNN's per-call setup, about 0.1 ms on a CPU) and a cost per FLOP for each
kind (dense, pointwise, depthwise or grouped) and kernel size apart, plus a cost per channel of depthwise and
grouped ones: each (kind, kernel size) runs its own kernel, and their efficiencies differ by several times (on
this project's CPUs a 5x5 depthwise convolution costs per channel, whatever its FLOPs). Then a cost per FLOP of
matrix products, a cost per byte written by every other op, apart for sliding-window copies (unfold/fold, which
ONNX Runtime runs far slower per byte than other copies), a cost per byte of transposed views (free in eager
torch, a copy in an ONNX graph), a cost per byte of weights (memory traffic: at batch 1 the weights are streamed
from memory on every forward) and an extra one per byte of weights beyond each of a ladder of sizes (weights that
outgrow a cache level stream from a slower one; the fit finds which rungs matter on this device, and leaves
out those too few fitted sub-networks pass), and a constant.
A new block family therefore needs no predictor code; a convolution of a kind and kernel size that no fitted
sub-network ran has no cost to price it by, and such an arch gets no prediction (it is measured). The costs are
fitted by non-negative least squares on relative errors, so each is a plausible cost per unit and predictions
extrapolate sanely; median and p90 are fitted separately.

A predictor is only valid for the device fingerprint it was fitted on, and refuses any other.
"""

from __future__ import annotations

import json
import random
from statistics import median
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from nas.errors import NasError
from nas.latency.cache import fingerprint

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.latency.measure import LatencyRecord
    from nas.space import SearchSpace

FORMAT = "nas-latency-predictor"
VERSION = 6
STEADY = 0.9  # halves' agreement below which a device is too unsteady for a predictor to be checked on it
WEIGHT_RUNGS_MB = (8, 16, 32, 64, 128)  # cache-sized steps: weights beyond each cost extra where a cache ends
# a rung passed by fewer fitted sub-networks costs nothing: a slope learnt from a sliver beyond it would extrapolate
# wildly (fitted without the space's largest sub-network, 3 passing 128 MB by under 2 MB predicted it 58 % high)
MIN_RUNG_SUPPORT = 10
# calls beyond `ops`' flat cost per call: a runtime fuses some kinds into their neighbours (activations, norms)
# and runs others as kernels of their own, so one call costs differently by kind. Aten op names, as some exist in
# only some torch versions
CALL_KINDS = {
    "norm": {"_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
             "native_layer_norm", "native_group_norm"},
    "activation": {"relu", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "clamp", "clamp_min",
                   "hardtanh"},
    "softmax": {"_softmax"},
    "copy": {"clone", "copy_", "cat", "constant_pad_nd", "index", "roll", "arange", "zeros", "new_zeros", "empty",
             "_to_copy"},  # copies, joins, pads, gathers and new tensors
    "reduction": {"mean", "sum", "amax", "avg_pool2d", "max_pool2d_with_indices", "_adaptive_avg_pool2d"},
    "arithmetic": {"add", "sub", "mul", "div"},
}
_CALL_KIND = {op: kind for kind, ops in CALL_KINDS.items() for op in ops}
# every arch has these; convolutions add theirs per kind and kernel size (`arch_features`)
FEATURES = ["const", "ops", *(f"{kind}_calls" for kind in CALL_KINDS), "views", "matmul_mflops", "elementwise_mb",
            "window_mb", "transposed_mb", "weights_mb", *(f"weights_mb_over_{rung}" for rung in WEIGHT_RUNGS_MB)]
_CONVOLUTIONS = {torch.ops.aten.convolution, torch.ops.aten._convolution}
_WINDOWS = {torch.ops.aten.im2col, torch.ops.aten.col2im}  # F.unfold, F.fold
_TRANSPOSES = {torch.ops.aten.transpose, torch.ops.aten.permute}


class _OpRecorder(TorchDispatchMode):
    """Adds up, over every aten op a forward executes, the counts behind `arch_features`.

    Composite ops (conv2d, linear, matmul, ...) are decomposed into the ops they run, as eager torch does, so
    each FLOP is counted once, on the op that computes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.totals: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with self:
            out = func.decompose(*args, **kwargs)  # NotImplemented unless `func` is a composite
        if out is not NotImplemented:
            return out
        out = func(*args, **kwargs)
        self._record(func, args, kwargs, out)
        return out

    def _record(self, func, args, kwargs, out) -> None:
        returned = func._schema.returns[0].alias_info if func._schema.returns else None
        packet = func._overloadpacket
        if func is torch.ops.aten._unsafe_view.default or (returned is not None and not returned.is_write):
            self.totals["views"] += 1  # a new view of the same data: metadata only
            if packet in _TRANSPOSES:
                self.totals["transposed_mb"] += out.numel() * out.element_size() / 1e6
            return
        self.totals["ops"] += 1
        if (call_kind := _CALL_KIND.get(packet.__name__)) is not None:
            self.totals[f"{call_kind}_calls"] += 1
        if packet in _CONVOLUTIONS:
            named = dict(zip((a.name for a in func._schema.arguments), args), **kwargs)
            groups, kernel = named.get("groups", 1), "x".join(map(str, named["weight"].shape[2:]))
            if groups != 1:
                kind = "depthwise" if groups == named["weight"].shape[0] else "grouped"
                self.totals[f"{kind}_{kernel}_channels"] += groups
            else:
                kind = "pointwise" if named["weight"].shape[2:].numel() == 1 else "dense"
            self.totals[f"{kind}_{kernel}_convs"] += 1
            self.totals[f"{kind}_{kernel}_conv_mflops"] += flop_registry[packet](*args, **kwargs, out_val=out) / 1e6
        elif packet in flop_registry:  # mm, addmm, bmm, baddbmm, attention
            self.totals["matmul_mflops"] += flop_registry[packet](*args, **kwargs, out_val=out) / 1e6
        else:
            written = sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            self.totals["window_mb" if packet in _WINDOWS else "elementwise_mb"] += written / 1e6


def arch_features(arch: "Arch", model: torch.nn.Module | None = None) -> dict[str, float]:
    """Op counts (all, and by CALL_KINDS), FLOPs (in millions) and bytes (in MB) of one batch-1 forward of `arch`:
    FEATURES, then the convolutions it runs (`{kind}_{kernel}_convs`, e.g. `depthwise_5x5_convs`, `..._conv_mflops`,
    `..._channels`). `model` is a network of `arch` already built (its weights do not matter); else one is built."""
    from supernet.network import build

    model = (model if model is not None else build(arch)).eval()
    device = next(model.parameters()).device
    image, recorder = torch.zeros(1, arch.in_channels, arch.resolution, arch.resolution, device=device), _OpRecorder()
    with torch.inference_mode(), recorder:
        model(image)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    totals = {**recorder.totals, "const": 1.0, "weights_mb": weights_mb,
              **{f"weights_mb_over_{rung}": max(0.0, weights_mb - rung) for rung in WEIGHT_RUNGS_MB}}
    convolutions = sorted(name for name in totals if name not in FEATURES)
    return {name: float(totals.get(name, 0.0)) for name in FEATURES + convolutions}


@dataclass
class LatencyPredictor:
    fingerprint: str
    identity: dict[str, Any]
    runtime: str
    feature_names: list[str]
    scale: list[float]  # features are divided by it (never centred: each weight stays a cost per unit)
    weights: dict[str, list[float]]  # target ("median_ms", "p90_ms") -> non-negative weights over scaled features
    relative_error_sd: float  # of held-out relative errors: the prediction's uncertainty
    metrics: dict[str, float]

    def _matrix(self, features: list[dict[str, float]]) -> np.ndarray:
        raw = np.array([[f.get(name, 0.0) for name in self.feature_names] for f in features])
        return raw / np.array(self.scale)

    def predict_features(self, features: list[dict[str, float]], target: str = "median_ms") -> np.ndarray:
        return self._matrix(features) @ np.array(self.weights[target])

    def predict(self, arch: "Arch", fingerprint_id: str, model: torch.nn.Module | None = None
                ) -> tuple[float, float] | None:
        """Predicted (median, p90) latency in ms of `arch` on the device with `fingerprint_id`; None when `arch`
        runs a convolution of a kind and kernel size that the fit never timed, which has no cost to price it by.
        `model` is the network of `arch` when the caller has built it already."""
        if fingerprint_id != self.fingerprint:
            raise NasError(f"this latency predictor was fitted on device fingerprint {self.fingerprint} "
                           f"({self.identity.get('device_name')}, {self.runtime}, {self.identity.get('threads')} "
                           f"thread(s)), not {fingerprint_id}; fit one here with `nas latency fit`")
        features = [arch_features(arch, model)]
        if not set(features[0]) <= set(self.feature_names):
            return None
        return float(self.predict_features(features)[0]), float(self.predict_features(features, "p90_ms")[0])

    def save(self, path: Path) -> None:
        from nas.runs import write_json

        write_json(path, {"format": FORMAT, "version": VERSION, **self.__dict__})

    @classmethod
    def load(cls, path: Path) -> "LatencyPredictor":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise NasError(f"{path}: not a readable latency predictor ({type(error).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise NasError(f"{path}: not a latency predictor written by `nas latency fit`")
        if data.get("version") != VERSION:
            raise NasError(f"{path}: a latency predictor of format version {data.get('version')}, this nas reads "
                           f"version {VERSION}; refit it with `nas latency fit`")
        data.pop("format"), data.pop("version")
        try:
            return cls(**data)
        except TypeError:
            raise NasError(f"{path}: a latency predictor with missing or unknown fields; refit it with "
                           "`nas latency fit`") from None


def load_predictor_for(path: Path, device: torch.device, runtime: str, threads: int) -> LatencyPredictor:
    """The predictor at `path`, refused unless it was fitted for this device, runtime and thread count."""
    predictor = LatencyPredictor.load(path)
    here = fingerprint(device, runtime, threads)
    if predictor.fingerprint != here["id"]:
        raise NasError(f"--predictor {path}: fitted on {predictor.identity.get('device_name')} with "
                       f"{predictor.runtime}, {predictor.identity.get('threads')} thread(s) (fingerprint "
                       f"{predictor.fingerprint}), not this device/runtime ({here['id']}); fit one here with "
                       f"`nas latency fit --runtime {runtime} --threads {threads}`")
    return predictor


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The x >= 0 minimising |a x - b| (Lawson and Hanson's active-set method)."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    tolerance = 10 * np.finfo(float).eps * max(a.shape) * np.abs(a).sum(axis=0).max()
    for _ in range(3 * n):
        gradient = a.T @ (b - a @ x)
        free = ~passive & (gradient > tolerance)
        if not free.any():
            break
        passive[np.argmax(np.where(free, gradient, -np.inf))] = True
        while True:  # solve on the passive set; while that makes a coefficient <= 0, step back to drop it
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            blocked = np.flatnonzero(passive & (z <= 0))
            if not len(blocked):
                break
            steps = x[blocked] / np.maximum(x[blocked] - z[blocked], np.finfo(float).tiny)
            x += steps.min() * (z - x)
            x[blocked[np.argmin(steps)]] = 0.0
            passive &= x > 0
            x[~passive] = 0.0
        x = z
    return x


def _relative_fit(x: np.ndarray, y: np.ndarray, names: list[str]) -> np.ndarray:
    """Non-negative weights minimising the squared relative errors (every row and target divided by the target);
    0 for a weight rung that fewer than MIN_RUNG_SUPPORT rows pass."""
    fitted = np.array([not name.startswith("weights_mb_over_") or np.count_nonzero(x[:, j]) >= MIN_RUNG_SUPPORT
                       for j, name in enumerate(names)])
    weights = np.zeros(len(names))
    weights[fitted] = nnls(x[:, fitted] / y[:, None], np.ones(len(y)))
    return weights


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
                  seed: int = 0) -> LatencyPredictor:
    """Fit on (1 - holdout) of the samples, report accuracy on the rest, then refit on all of them."""
    if len(records) < 10:
        raise NasError("a latency predictor needs at least 10 measured sub-networks (--samples)")
    fingerprints = {r.fingerprint for r in records}
    if len(fingerprints) != 1:
        raise NasError("the measurements come from several devices or runtimes; fit one predictor per fingerprint")
    names = list(dict.fromkeys(name for f in features for name in f))
    raw = np.array([[f.get(name, 0.0) for name in names] for f in features])
    scale = np.abs(raw).max(axis=0)  # columns of similar size, for the solver's tolerances only
    scale[scale == 0] = 1.0
    x = raw / scale
    targets = {"median_ms": np.array([r.median_ms for r in records]), "p90_ms": np.array([r.p90_ms for r in records])}
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = np.array(order[: max(1, round(len(order) * holdout))])
    train = np.array(order[len(held):])
    held_out_predictions = x[held] @ _relative_fit(x[train], targets["median_ms"][train], names)
    metrics = accuracy_report(held_out_predictions, targets["median_ms"][held])
    relative = (held_out_predictions - targets["median_ms"][held]) / targets["median_ms"][held]
    weights = {target: _relative_fit(x, y, names).tolist() for target, y in targets.items()}
    first = records[0]

    identity = fingerprint(torch.device(first.device), first.runtime, first.threads or 1)["identity"]
    return LatencyPredictor(first.fingerprint, identity, first.runtime, names, scale.tolist(),
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


def halves_agreement(records: list["LatencyRecord"]) -> float | None:
    """The share of sub-networks whose median latency over odd-numbered blocks lies within ±10 % of that over
    even-numbered ones (blocks: `measure_interleaved`'s rounds): how steady this device's timings are, and so about
    the most a predictor can show on it. None when the records hold fewer than two blocks each."""
    if min(len(r.block_medians_ms) for r in records) < 2:
        return None
    steady = [abs(median(r.block_medians_ms[0::2]) / median(r.block_medians_ms[1::2]) - 1) <= 0.10 for r in records]
    return sum(steady) / len(steady)
