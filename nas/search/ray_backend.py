"""The Ray Tune backend: trials run concurrently in Ray workers, on this machine or on a Ray cluster.

The Optuna study and its sampler stay in this (driver) process. Ray's own `OptunaSearch` forwards only the
objective values, so `ConstrainedOptunaSearch` also hands each trial's constraints and attributes to Optuna;
without that the sampler would never learn which candidates break the budget. Workers get the supernet
weights through Ray's object store, evaluate with the same `Evaluator` as the in-process backend, and take the
device lock for every measurement (the exclusive latency slot of each machine). A trial whose worker dies is
retried. On this machine every Ray service, the dashboard included, listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from nas.errors import NasError, first_line
from nas.search.progress import SearchProgress
from nas.search.encoding import suggest
from nas.search.evaluator import Evaluator
from nas.search.study import STUDY_NAME, SearchSettings, make_sampler, record_result

_WORKER: dict[str, Evaluator] = {}  # one evaluator per worker process, built on its first trial


def start_ray(address: str | None, log: Callable[[str], None], **init_options: Any) -> bool:
    """Connect to the cluster at `address`, or start a local Ray instance on loopback.

    Returns whether this call connected (then the caller disconnects with `ray.shutdown()` when done, which also
    stops a local instance it started); False if this process was already connected.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # read when ray is imported: keeps the node address, and so every port, on 127.0.0.1 on one machine
        if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
            raise NasError("ray was imported before nas could keep a local Ray instance on 127.0.0.1; start Ray "
                           "through nas (or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing it)")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            context = ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            options = {"address": "local", "include_dashboard": True, "dashboard_host": "127.0.0.1",
                       "log_to_driver": False, "configure_logging": False, **init_options}
            context = ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = first_line(error)
        raise NasError(f"--address {address or 'local'}: cannot start or reach Ray ({first[:150]}); "
                       "for a cluster, run `ray start --head` first and pass its address") from None
    url = getattr(context, "dashboard_url", None)
    log(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running on this cluster")
    return True


def _evaluator(setup: dict[str, Any]) -> Evaluator:
    key = setup["key"]
    if key not in _WORKER:
        from nas.data import load_data
        from nas.latency import LatencyCache
        from nas.latency.predictor import LatencyPredictor
        from nas.space import space_from_dict
        from nas.weight_sharing import SpaceSupernet

        settings = SearchSettings(**setup["settings"])
        if setup["cache_dir"]:
            os.environ["NAS_CACHE_DIR"] = setup["cache_dir"]
        torch.set_num_threads(max(1, setup["cpus_per_trial"]))
        space = space_from_dict(setup["space"], settings.space)
        # each trial evaluates in its own process, on the CPUs Ray gave it: no loader processes of its own
        data = load_data(settings.data, seed=settings.seed, limit_train=settings.limit_train, workers=0)
        supernet = SpaceSupernet(space)
        supernet.load_state_dict(setup["supernet_state"])
        device = torch.device(settings.device)
        predictor = LatencyPredictor(**setup["predictor"]) if setup["predictor"] else None
        _WORKER.clear()
        _WORKER[key] = Evaluator(settings, space, data, supernet.to(device).eval(), device, LatencyCache(), predictor)
    return _WORKER[key]


def _trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    from ray import tune

    import ray

    evaluator = _evaluator(setup)
    result = evaluator.evaluate(suggest(evaluator.space, optuna.trial.FixedTrial(config)))
    tune.report({**result, "arch": json.dumps(result["arch"]),  # a string: Tune flattens nested results
                 "node": ray.get_runtime_context().get_node_id()})


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class ConstrainedOptunaSearch(OptunaSearch):
        """OptunaSearch that also records constraints and attributes on the Optuna trial before telling it."""

        def __init__(self, settings: SearchSettings, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.settings = settings

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if result and "arch_id" in result and ot_trial is not None and trial_id not in self._completed_trials:
                record_result(ot_trial, {**result, "arch": json.loads(result["arch"])}, self.settings)
            super().on_trial_complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the Optuna study's own storage is what a resumed search continues from."""

    return ConstrainedOptunaSearch


def run_ray(study: optuna.Study, storage: optuna.storages.BaseStorage, evaluator: Evaluator,
            settings: SearchSettings, done: int, run_dir: Path, progress: SearchProgress,
            log: Callable[[str], None]) -> None:
    """Run the remaining trials as Ray Tune trials, `settings.workers` at a time."""
    started = start_ray(settings.address, log)  # first: it sets what ray reads when imported
    import ray
    from ray import tune

    try:
        cpus = 1 if evaluator.device.type == "cpu" else 0
        # trials run in their own working folders: hand them absolute paths
        data = settings.data if settings.data in (None, "fashion-mnist") else str(Path(settings.data).resolve())
        setup = {"key": f"{run_dir.resolve()}:{time.time()}", "settings": {**settings.to_dict(), "data": data},
                 "cache_dir": os.environ.get("NAS_CACHE_DIR"),
                 "space": evaluator.space.to_dict(),
                 "supernet_state": {k: v.cpu() for k, v in evaluator.supernet.state_dict().items()},
                 "predictor": evaluator.predictor.__dict__ if evaluator.predictor else None,
                 "cpus_per_trial": cpus or 1}
        resources = {"cpu": cpus} if cpus else {"cpu": 1, "gpu": 1.0 / max(1, settings.workers)}
        trainable = tune.with_resources(tune.with_parameters(_trial, setup=setup), resources)

        def define_by_run(trial: optuna.Trial) -> None:
            suggest(evaluator.space, trial)

        searcher = _searcher_class()(
            settings, space=define_by_run, metric=["accuracy", "latency_ms"],
            mode=["max", "min"], sampler=make_sampler(settings.sampler, settings.seed + done, settings.trials),
            storage=storage, study_name=STUDY_NAME)

        class Progress(tune.Callback):
            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.trial_done()

        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=settings.trials - done,
                                        max_concurrent_trials=settings.workers),
            run_config=tune.RunConfig(name="ray", storage_path=str((run_dir / "ray").resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=3),
                                      callbacks=[Progress()]))
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables; stdout is for --json
            tuner.fit()
    finally:
        if started:
            ray.shutdown()
