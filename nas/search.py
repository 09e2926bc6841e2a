"""The search: an Optuna study over the space, accuracy from the supernet, latency measured on the device.

Two objectives (validation accuracy up, median latency down) and one constraint (p90 latency within the
budget). The study lives in a journal file in the run folder, so re-running the same command resumes it.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from tqdm import tqdm

from nas.arch import Arch
from nas.complexity import count_macs, count_params
from nas.data import Splits
from nas.errors import NasError
from nas.evaluate import inherited_accuracy
from nas.latency import CAREFUL, LatencyCache, LatencyRecord, device_lock, fingerprint, measure_arch
from nas.latency.predictor import LatencyPredictor
from nas.report import plot_pareto
from nas.runs import file_hash, write_yaml
from nas.space import SearchSpace
from supernet.network import HybridSupernet, build

SAMPLERS = ("nsga2", "tpe", "random")


@dataclass
class SearchSettings:
    """What defines a search; saved as config.yaml in the run folder and checked on resume."""

    space: str
    latency_budget: str
    budget_ms: float
    device: str
    threads: int
    trials: int
    sampler: str
    seed: int
    data: str | None
    supernet: str | None
    epochs: int
    limit_train: int | None = None
    runtime: str = "torch"
    predictor: str | None = None

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original (trials may grow)."""
        return {k: v for k, v in asdict(self).items() if k not in ("trials", "space")}


def check_budget_feasible(space: SearchSpace, budget_ms: float, device: torch.device, threads: int, runtime: str,
                          cache: LatencyCache) -> LatencyRecord:
    """Measure the space's smallest member; a budget below its p90 latency is a NasError naming that latency."""
    record = measure_arch(space.smallest(), device, runtime, threads, cache=cache, refresh=True, **CAREFUL)
    if record.p90_ms > budget_ms:
        raise NasError(f"--latency-budget {budget_ms:g} ms is infeasible: the smallest sub-network of "
                       f"{space.name} measures {record.median_ms:.3f} ms (p90 {record.p90_ms:.3f} ms) on "
                       f"{record.device_name} with {runtime}; use a budget of at least {record.p90_ms:.2f} ms")
    return record


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(16, trials // 3)), seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    return optuna.samplers.RandomSampler(seed=seed)


def run_search(settings: SearchSettings, space: SearchSpace, data: Splits, supernet: HybridSupernet,
               supernet_path: Path, device: torch.device, run_dir: Path, cache: LatencyCache,
               predictor: LatencyPredictor | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study in `run_dir`; write trials.csv, pareto.csv, pareto.png and best.yaml.

    With a `predictor`, a candidate's latency is predicted unless the prediction lies within 15 % (plus twice
    the predictor's relative error) of the budget: then it is measured. The Pareto front is re-measured anyway.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    existing = optuna.get_all_study_names(storage)
    done = 0
    if existing:
        study_probe = optuna.load_study(study_name="search", storage=storage)
        for trial in study_probe.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # killed mid-trial
        done = len(study_probe.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    study = optuna.create_study(study_name="search", storage=storage, directions=["maximize", "minimize"],
                                sampler=make_sampler(settings.sampler, settings.seed + done, settings.trials),
                                load_if_exists=True)
    if not existing:
        for member in (space.smallest(), space.largest()):
            study.enqueue_trial(space.to_params(member), skip_if_exists=True)
    elif done:
        log(f"resuming the search in {run_dir}: {done}/{settings.trials} trials done")

    budget = settings.budget_ms
    device_id = fingerprint(device, settings.runtime, settings.threads)["id"]
    margin = 0.15 + 2 * predictor.relative_error_sd if predictor else 0.0

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = space.suggest(trial)
        net = supernet.extract(arch)
        with device_lock(device, exclusive=False):
            accuracy = inherited_accuracy(net, arch, data)
        if predictor is not None:
            median_ms, p90_ms = predictor.predict(arch, device_id)
        if predictor is not None and abs(p90_ms - budget) > margin * budget:
            source = "predicted"
        else:
            record = measure_arch(arch, device, settings.runtime, settings.threads, cache=cache, model=net)
            median_ms, p90_ms, source = record.median_ms, record.p90_ms, "measured"
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("latency_p90_ms", p90_ms)
        trial.set_user_attr("latency_source", source)
        trial.set_user_attr("params", count_params(net))
        trial.set_constraint("latency", p90_ms - budget)
        return accuracy, median_ms

    remaining = settings.trials - done
    began = time.perf_counter()
    if remaining > 0:
        with tqdm(total=settings.trials, initial=done, desc="search", unit="trial", disable=None) as bar:
            def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
                feasible = [t.values[0] for t in _feasible(study)]
                bar.set_postfix(best_feasible_acc=f"{max(feasible):.3f}" if feasible else "-")
                bar.update(1)

            study.optimize(objective, n_trials=remaining, callbacks=[progress])
    return _write_outputs(study, settings, space, supernet_path, device, run_dir, cache, time.perf_counter() - began)


def _feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.constraints.get("latency", 1.0) <= 0]


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    stages = trial.user_attrs["arch"]["stages"]
    return {"trial": trial.number, "arch_id": trial.user_attrs["arch_id"], "val_acc": round(trial.values[0], 4),
            "latency_ms": round(trial.values[1], 4), "latency_p90_ms": round(trial.user_attrs["latency_p90_ms"], 4),
            "feasible": trial.constraints["latency"] <= 0, "latency_source": trial.user_attrs["latency_source"],
            "params": trial.user_attrs["params"],
            "families": "-".join(s["family"] for s in stages), "depths": "-".join(str(s["depth"]) for s in stages),
            "widths": "-".join(str(s["width"]) for s in stages)}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_outputs(study: optuna.Study, settings: SearchSettings, space: SearchSpace, supernet_path: Path,
                   device: torch.device, run_dir: Path, cache: LatencyCache, seconds: float) -> dict[str, Any]:
    """Write trials.csv, pareto.csv and pareto.png; re-measure the front and write best.yaml from it.

    Every Pareto point is measured again carefully; the winner is the most accurate point whose re-measured
    p90 meets the budget, and best.yaml carries that measurement.
    """
    rows = [_row(t) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    _write_csv(run_dir / "trials.csv", rows)
    front = []
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):  # constrained: feasible trials only
        arch = Arch.from_dict(trial.user_attrs["arch"])
        record = measure_arch(arch, device, settings.runtime, settings.threads, cache=cache, refresh=True, **CAREFUL)
        front.append({**_row(trial), "remeasured_ms": round(record.median_ms, 4),
                      "remeasured_p90_ms": round(record.p90_ms, 4),
                      "remeasured_feasible": record.p90_ms <= settings.budget_ms,
                      "macs": count_macs(build(arch), (1, arch.in_channels, arch.resolution, arch.resolution)),
                      "_arch": arch, "_record": record, "_trial": trial})
    _write_csv(run_dir / "pareto.csv", [{k: v for k, v in row.items() if not k.startswith("_")} for row in front])
    plot_pareto(rows, front, settings.budget_ms, run_dir / "pareto.png",
                f"{space.name}: {len(rows)} trials, budget {settings.budget_ms:g} ms on {device} ({settings.runtime})")
    confirmed = [row for row in front if row["remeasured_feasible"]]
    if not confirmed:
        fastest = min((r["latency_p90_ms"] for r in rows), default=float("nan"))
        raise NasError(f"no sub-network met the {settings.budget_ms:g} ms budget on re-measurement after {len(rows)} "
                       f"trials (fastest p90 seen {fastest:.3f} ms); raise --latency-budget or run more --trials "
                       f"(see {run_dir}/trials.csv)")
    best = max(confirmed, key=lambda row: (row["val_acc"], -row["remeasured_ms"]))
    arch, record, trial = best["_arch"], best["_record"], best["_trial"]
    summary = {
        "arch_id": arch.arch_id,
        "arch": arch.to_dict(),
        "latency_ms": round(record.median_ms, 4),
        "latency_p90_ms": round(record.p90_ms, 4),
        "budget_ms": settings.budget_ms,
        "val_accuracy_supernet": round(trial.values[0], 4),
        "params": trial.user_attrs["params"],
        "macs": best["macs"],
        "device": {"name": record.device_name, "device": record.device, "threads": record.threads,
                   "runtime": record.runtime, "runtime_version": record.runtime_version,
                   "fingerprint": record.fingerprint, "versions": record.versions},
        "latency_in_search": {"median_ms": round(trial.values[1], 4),
                              "p90_ms": round(trial.user_attrs["latency_p90_ms"], 4)},
        "provenance": {"space": settings.space, "space_hash": space.space_hash, "supernet": str(supernet_path),
                       "supernet_hash": file_hash(supernet_path), "trial": trial.number,
                       "trials": len(rows), "search_seconds": round(seconds, 1),
                       "data": settings.data or "fashion-mnist"},
    }
    write_yaml(run_dir / "best.yaml", summary)
    return summary
