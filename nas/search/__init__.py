"""The search: an Optuna study over a space, run in this process or across Ray workers.

`run_search` opens (or resumes) the study, runs the remaining trials with the chosen backend, then writes
trials.csv, pareto.csv, pareto.png, report.md and best.yaml.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from nas.data import Splits
from nas.latency import LatencyCache
from nas.latency.predictor import LatencyPredictor
from nas.search.study import (BACKENDS, SAMPLERS, Evaluator, SearchSettings, check_budget_feasible, open_storage,
                              open_study, write_outputs)
from nas.space import SearchSpace
from supernet.network import HybridSupernet

__all__ = ["BACKENDS", "SAMPLERS", "SearchSettings", "check_budget_feasible", "open_storage", "run_search"]


def run_search(settings: SearchSettings, space: SearchSpace, data: Splits, supernet: HybridSupernet,
               supernet_path: Path, device: torch.device, run_dir: Path, cache: LatencyCache,
               predictor: LatencyPredictor | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the search in `run_dir` and write its outputs; returns best.yaml's content.

    With a `predictor`, a candidate's latency is predicted unless the prediction lies within 15 % (plus twice
    the predictor's relative error) of the budget: then it is measured. The Pareto front is re-measured anyway.
    """
    storage = open_storage(run_dir, settings.storage)
    study, done = open_study(settings, space, storage, log)
    evaluator = Evaluator(settings, space, data, supernet, device, cache, predictor)
    began = time.perf_counter()
    if done < settings.trials:
        if settings.backend == "ray":
            from nas.search.ray_backend import run_ray

            run_ray(study, storage, evaluator, settings, done, run_dir, log)
        else:
            from nas.search.optuna_backend import run_optuna

            run_optuna(study, evaluator, settings, done)
    return write_outputs(study, settings, space, supernet_path, device, run_dir, cache, time.perf_counter() - began)
