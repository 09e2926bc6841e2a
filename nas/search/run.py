"""The whole search as `nas search` runs it: check everything, train (or load) the supernet, run the study's
remaining trials with the chosen backend, then write the outputs.

Everything that can be checked is checked before the run folder is written to: the settings, the device and
runtime, the space, the data, a resumed folder's identity, the supernet, the predictor, the storage URL and the
budget's feasibility (the space's smallest member is measured).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from nas.data import SPLIT_FILE, Splits, load_data
from nas.evaluate import ADAPT_BATCH, EVAL_BATCH
from nas.latency import LatencyCache, check_runtime, resolve_device
from nas.latency.predictor import LatencyPredictor, load_predictor_for
from nas.memory import check_running, check_supernet_training, check_training, count_params, meta_supernet
from nas.runs import RUNS_ROOT, check_run_dir, safe_name, write_yaml
from nas.search.backend import backend
from nas.search.evaluator import Evaluator, check_budget_feasible, check_limits_feasible
from nas.search.outputs import write_outputs
from nas.search.progress import SearchProgress
from nas.search.study import SearchSettings, check_run_folder, open_storage, open_study
from nas.space import SearchSpace, load_space
from nas.supernet_training import TrainConfig, load_supernet, train_supernet
from nas.weight_sharing import SpaceSupernet


def default_run_dir(settings: SearchSettings, space: SearchSpace, device: torch.device) -> Path:
    device_name = str(device).replace(":", "")
    return RUNS_ROOT / safe_name(f"search-{space.name}-{settings.latency_budget}-{device_name}-{settings.runtime}")


def search(settings: SearchSettings, run_dir: Path | None = None, log: Callable[[str], None] = print
           ) -> dict[str, Any]:
    """Run (or resume) the search `settings` describe in `run_dir` (default: `default_run_dir`); returns
    best.yaml's content with `run_dir` and `best_yaml` added."""
    settings.check()
    device = resolve_device(settings.device)
    check_runtime(settings.runtime)
    space = load_space(settings.space)
    given, run_dir = run_dir is not None, run_dir or default_run_dir(settings, space, device)
    check_run_dir(run_dir, ("config.yaml", SPLIT_FILE), given)
    data = load_data(settings.data, seed=settings.seed, limit_train=settings.limit_train,
                     workers=settings.data_workers, run_dir=run_dir)
    space = space.with_num_classes(data.num_classes)
    check_run_folder(run_dir, settings, space.space_hash)
    supernet = load_supernet(Path(settings.supernet), space).to(device) if settings.supernet else None
    predictor = (load_predictor_for(Path(settings.predictor), device, settings.runtime, settings.threads)
                 if settings.predictor else None)
    if settings.storage:
        open_storage(run_dir, settings.storage)  # a bad URL fails here, before anything is written

    to_train = meta_supernet(space) if supernet is None else None
    if to_train is not None:
        check_supernet_training(space, TrainConfig.batch_size, device, settings.space,
                                "train it apart with `nas supernet train --batch-size N` and pass it with --supernet",
                                to_train)
    supernet_params = count_params(supernet if supernet is not None else to_train)
    check_running(space.largest(), EVAL_BATCH, device, f"{settings.space}'s largest member", supernet_params,
                  "use a device with more memory, or a smaller space")
    if settings.adapt_steps or settings.rescore_top:  # candidates then train a little beside the supernet
        option = "--adapt-steps" if settings.adapt_steps else "--rescore-top"
        check_training(space.largest(), ADAPT_BATCH, device, f"{option}: {settings.space}'s largest member",
                       False, supernet_params, f"use {option} 0, a device with more memory, or a smaller space")
    cache = LatencyCache()
    check_limits_feasible(space, settings.max_params, settings.max_macs)
    feasible = check_budget_feasible(space, settings.budget_ms, device, settings.threads, settings.runtime, cache)
    log(f"budget {settings.budget_ms:g} ms on {feasible.device_name} ({settings.runtime}, {settings.threads} "
        f"thread(s)); the smallest member of {space.name} measures {feasible.median_ms:.3f} ms "
        f"(p90 {feasible.p90_ms:.3f} ms)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", {**settings.to_dict(), "space_hash": space.space_hash})
    data.save_split(run_dir)

    if supernet is None:
        supernet_path = train_supernet(space, data, run_dir / "supernet",
                                       TrainConfig(epochs=settings.epochs, seed=settings.seed), device, log)
        supernet = load_supernet(supernet_path, space).to(device)
    else:
        supernet_path = Path(settings.supernet)
    summary = run_search(settings, space, data, supernet, supernet_path, device, run_dir, cache, predictor, log)
    return {**summary, "run_dir": str(run_dir), "best_yaml": str(run_dir / "best.yaml")}


def run_search(settings: SearchSettings, space: SearchSpace, data: Splits, supernet: SpaceSupernet,
               supernet_path: Path, device: torch.device, run_dir: Path, cache: LatencyCache,
               predictor: LatencyPredictor | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study in `run_dir` and write its outputs; returns best.yaml's content.

    With a `predictor`, a candidate's latency is predicted unless the prediction lies within 15 % (plus twice
    the predictor's relative error) of the budget: then it is measured. The Pareto front is re-measured anyway.
    """
    storage = open_storage(run_dir, settings.storage)
    study, done = open_study(settings, space, storage, log)
    evaluator = Evaluator(settings, space, data, supernet, device, cache, predictor)
    began = time.perf_counter()
    if done < settings.trials:
        workers = f" ({settings.backend}, {settings.workers} workers)" if settings.backend == "ray" else ""
        progress = SearchProgress(study, settings, done, f"search{workers}", log)
        try:
            backend(settings.backend)(study, storage, evaluator, settings, done, run_dir, progress, log)
        finally:
            progress.close()
    return write_outputs(study, settings, space, supernet_path, str(device), run_dir, evaluator.remeasure,
                         evaluator.rescore, time.perf_counter() - began, log)


def search_lines(result: dict[str, Any]) -> list[str]:
    """`search`'s result for a person: the winner, where its files are, and what to run next."""
    run_dir, device = Path(result["run_dir"]), result["device"]
    rescored = (f" ({result['val_accuracy_rescored']:.3f} after {result['rescore']['steps']} batches from scratch, "
                f"the best of the {result['rescore']['top']} re-scored)" if "rescore" in result else "")
    return [f"best sub-network {result['arch_id']}: supernet val accuracy {result['val_accuracy_supernet']:.3f}"
            f"{rescored}, "
            f"latency {result['latency_ms']:.3f} ms (p90 {result['latency_p90_ms']:.3f} ms) within the "
            f"{result['budget_ms']:g} ms budget on {device['device']} ({device['runtime']})",
            f"best.yaml:  {run_dir / 'best.yaml'}",
            f"report: {run_dir / 'report.md'}; Pareto front: {run_dir / 'pareto.csv'} and {run_dir / 'pareto.png'}",
            f"next: nas retrain {run_dir / 'best.yaml'}"]
