"""The torch-aware side of a search: scoring one candidate on the supernet and the device.

`Evaluator.evaluate` extracts the candidate from the supernet once and hands that network to every
measurement: BN recalibration and validation accuracy, then latency (predicted from the same network's op
counts when safely far from the budget, else measured). `Evaluator.remeasure` measures a Pareto point again,
carefully, for the outputs; `Evaluator.rescore` scores a shortlisted one by short training from scratch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nas.arch import Arch
from nas.complexity import count_macs, count_params
from nas.data import Splits
from nas.errors import NasError
from nas.evaluate import adapt, inherited_accuracy, scratch_accuracy
from nas.latency import CAREFUL, LatencyCache, LatencyRecord, device_lock, fingerprint, measure_arch
from nas.latency.predictor import LatencyPredictor
from nas.space import SearchSpace

if TYPE_CHECKING:
    from nas.search.study import SearchSettings
    from nas.weight_sharing import SpaceSupernet


def check_budget_feasible(space: SearchSpace, budget_ms: float, device: torch.device, threads: int, runtime: str,
                          cache: LatencyCache) -> LatencyRecord:
    """Measure the space's smallest member; a budget below its p90 latency is a NasError naming that latency."""
    record = measure_arch(space.smallest(), device, runtime, threads, cache=cache, refresh=True, **CAREFUL)
    if record.p90_ms > budget_ms:
        raise NasError(f"--latency-budget {budget_ms:g} ms is infeasible: the smallest sub-network of "
                       f"{space.name} measures {record.median_ms:.3f} ms (p90 {record.p90_ms:.3f} ms) on "
                       f"{record.device_name} with {runtime}; use a budget of at least {record.p90_ms:.2f} ms")
    return record


def check_limits_feasible(space: SearchSpace, max_params: int | None, max_macs: int | None) -> None:
    """A --max-params or --max-macs below the space's smallest member's is a NasError naming that member's size."""
    from supernet.network import build

    smallest = space.smallest()
    model = build(smallest)
    params = count_params(model)
    macs = count_macs(model, (1, smallest.in_channels, smallest.resolution, smallest.resolution))
    for option, limit, size in (("--max-params", max_params, params), ("--max-macs", max_macs, macs)):
        if limit is not None and size > limit:
            raise NasError(f"{option} {limit:,} is infeasible: the smallest sub-network of {space.name} has "
                           f"{size:,}; allow at least that")


class Evaluator:
    """Scores one candidate: supernet accuracy, then latency (predicted when safely far from the budget)."""

    def __init__(self, settings: "SearchSettings", space: SearchSpace, data: Splits, supernet: "SpaceSupernet",
                 device: torch.device, cache: LatencyCache, predictor: LatencyPredictor | None) -> None:
        self.settings, self.space, self.data, self.supernet = settings, space, data, supernet
        self.device, self.cache, self.predictor = device, cache, predictor
        self.device_id = fingerprint(device, settings.runtime, settings.threads)["id"]
        self.margin = 0.15 + 2 * predictor.relative_error_sd if predictor else 0.0

    def evaluate(self, arch: Arch) -> dict[str, Any]:
        """The result of one trial, as plain values (it crosses process boundaries with Ray)."""
        settings, budget = self.settings, self.settings.budget_ms
        net = self.supernet.extract(arch)
        with device_lock(self.device, exclusive=False):
            adapt(net, arch, self.data, settings.adapt_steps, settings.seed)
            accuracy = inherited_accuracy(net, arch, self.data)
        source = "measured"
        prediction = self.predictor.predict(arch, self.device_id, net) if self.predictor is not None else None
        if prediction is not None:
            median_ms, p90_ms = prediction
            # the prediction's error is relative to the prediction: trust it only when even that error
            # cannot carry it across the budget
            clear = p90_ms * (1 + self.margin) < budget or p90_ms * (1 - self.margin) > budget
            source = "predicted" if clear else "measured"
        if source == "measured":
            record = measure_arch(arch, self.device, settings.runtime, settings.threads, cache=self.cache, model=net)
            median_ms, p90_ms = record.median_ms, record.p90_ms
        result = {"accuracy": accuracy, "latency_ms": median_ms, "latency_p90_ms": p90_ms, "latency_source": source,
                  "params": count_params(net), "arch": arch.to_dict(), "arch_id": arch.arch_id}
        if settings.max_macs is not None:
            result["macs"] = count_macs(net, (1, arch.in_channels, arch.resolution, arch.resolution))
        return result

    def remeasure(self, arch: Arch, expected_ms: float, expected_p90_ms: float) -> tuple[LatencyRecord, int]:
        """A careful second measurement of a Pareto point (recognising a disturbed one by the trial's figures),
        and its MACs."""
        net = self.supernet.extract(arch)
        record = measure_arch(arch, self.device, self.settings.runtime, self.settings.threads, cache=self.cache,
                              model=net, refresh=True, expected_ms=expected_ms, expected_p90_ms=expected_p90_ms,
                              **CAREFUL)
        return record, count_macs(net, (1, arch.in_channels, arch.resolution, arch.resolution))

    def rescore(self, arch: Arch) -> float:
        """Validation accuracy of `arch` trained from scratch for --rescore-steps batches, without the supernet."""
        with device_lock(self.device, exclusive=False):
            return scratch_accuracy(arch, self.data, self.settings.rescore_steps, self.settings.seed, self.device)
