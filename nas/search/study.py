"""What every search backend shares: settings, the Optuna study, evaluating a candidate, and the outputs.

Two objectives (validation accuracy up, median latency down) and constraints (p90 latency within the budget,
optionally parameter and MAC limits). The study lives in an Optuna journal file in the run folder (or an RDB at
`--storage URL`), so running the same search again resumes it with no completed trial lost.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from nas.arch import Arch, load_arch
from nas.complexity import count_macs, count_params
from nas.data import Splits
from nas.errors import NasError
from nas.evaluate import inherited_accuracy
from nas.latency import CAREFUL, LatencyCache, LatencyRecord, device_lock, fingerprint, measure_arch
from nas.latency.predictor import LatencyPredictor
from nas.report import plot_pareto, write_report
from nas.runs import file_hash, write_yaml
from nas.space import SearchSpace
from supernet.network import HybridSupernet, build

SAMPLERS = ("nsga2", "tpe", "random")
BACKENDS = ("optuna", "ray")
STUDY_NAME = "search"


@dataclass
class SearchSettings:
    """Everything that defines a search; saved as config.yaml in the run folder and checked on resume."""

    space: str
    latency_budget: str
    budget_ms: float
    device: str = "cpu"
    runtime: str = "torch"
    threads: int = 1
    trials: int = 40
    sampler: str = "nsga2"
    seed: int = 0
    data: str | None = None
    supernet: str | None = None
    epochs: int = 6
    limit_train: int | None = None
    predictor: str | None = None
    max_params: int | None = None
    max_macs: int | None = None
    backend: str = "optuna"
    workers: int = 1
    address: str | None = None
    storage: str | None = None

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original (trials may grow; how it runs may change)."""
        free = ("trials", "space", "backend", "workers", "address", "storage", "predictor")
        return {k: v for k, v in asdict(self).items() if k not in free}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is marked experimental
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    return optuna.samplers.RandomSampler(seed=seed)


def open_storage(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage:
    """The run folder's journal file, or the RDB at `url` (a malformed or unreachable URL is one NasError)."""
    if url is None:
        backend = optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal"))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as error:  # sqlalchemy raises many types for bad URLs, missing drivers, refused connections
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NasError(f"--storage {url!r}: Optuna cannot open it ({first[:150]}); expected a database URL such "
                       "as postgresql://user:password@host/db or sqlite:////absolute/path.db") from None


def open_study(settings: SearchSettings, space: SearchSpace, storage: optuna.storages.BaseStorage,
               log: Callable[[str], None]) -> tuple[optuna.Study, int]:
    """Create the study or resume it. A new study is warm-started with the space's smallest and largest members
    and the smallest single-family member of each block family (so every family has a result to compare).

    Trials left RUNNING by a killed search are marked FAIL; returns the study and its completed-trial count.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = STUDY_NAME in optuna.get_all_study_names(storage)
    done = 0
    if existing:
        previous = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        for trial in previous.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        done = len(previous.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    # a resumed study gets a sampler seeded past the trials already drawn, so it does not repeat them
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=["maximize", "minimize"],
                                sampler=make_sampler(settings.sampler, settings.seed + done, settings.trials),
                                load_if_exists=True)
    if not existing:
        warm_start = [space.smallest(), space.largest()] + [space.single_family(f) for f in space.families()]
        for member in warm_start:
            study.enqueue_trial(space.to_params(member), skip_if_exists=True)
        for name, member in reference_members(space).items():
            study.enqueue_trial(space.to_params(member), user_attrs={"reference": name}, skip_if_exists=True)
    elif done:
        log(f"resuming the search: {done}/{settings.trials} trials done")
    return study, done


def reference_archs() -> dict[str, Arch]:
    """The papers' architectures shipped in search_spaces/reference/, by file name (none if not shipped)."""
    folder = Path(__file__).resolve().parents[2] / "search_spaces" / "reference"
    return {path.stem: load_arch(path) for path in sorted(folder.glob("*.yaml"))}


def reference_members(space: SearchSpace) -> dict[str, Arch]:
    """The reference architectures (with the space's classes) that a trial of `space` can be, by name. GhostNet's
    per-block knob lists make it a member that a trial (one value per stage) cannot express."""
    def one_trial(arch: Arch) -> bool:
        try:
            return space.suggest(optuna.trial.FixedTrial(space.to_params(arch))) == arch
        except ValueError:  # a knob given per block: no choice of the trial's distribution
            return False

    members = {name: arch.with_num_classes(space.num_classes) for name, arch in reference_archs().items()}
    return {name: arch for name, arch in members.items() if space.contains(arch) and one_trial(arch)}


class Evaluator:
    """Scores one candidate: supernet accuracy, then latency (predicted when safely far from the budget)."""

    def __init__(self, settings: SearchSettings, space: SearchSpace, data: Splits, supernet: HybridSupernet,
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
            accuracy = inherited_accuracy(net, arch, self.data)
        source = "measured"
        prediction = self.predictor.predict(arch, self.device_id) if self.predictor is not None else None
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


def record_result(trial: optuna.Trial, result: dict[str, Any], settings: SearchSettings) -> tuple[float, float]:
    """Store a result's attributes and constraints on its Optuna trial; returns the objective values."""
    for key in ("arch", "arch_id", "latency_p90_ms", "latency_source", "params", "node"):
        if key in result:
            trial.set_user_attr(key, result[key])
    trial.set_constraint("latency", result["latency_p90_ms"] - settings.budget_ms)
    if settings.max_params is not None:
        trial.set_constraint("params", result["params"] - settings.max_params)
    if settings.max_macs is not None:
        trial.set_user_attr("macs", result["macs"])
        trial.set_constraint("macs", result["macs"] - settings.max_macs)
    return result["accuracy"], result["latency_ms"]


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.constraints) and all(value <= 0 for value in trial.constraints.values())


def best_feasible_accuracy(study: optuna.Study) -> float | None:
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if is_feasible(t)]
    return max(values) if values else None


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    stages = trial.user_attrs["arch"]["stages"]
    return {"trial": trial.number, "arch_id": trial.user_attrs["arch_id"], "val_acc": round(trial.values[0], 4),
            "latency_ms": round(trial.values[1], 4), "latency_p90_ms": round(trial.user_attrs["latency_p90_ms"], 4),
            "feasible": is_feasible(trial), "latency_source": trial.user_attrs["latency_source"],
            "params": trial.user_attrs["params"], "families": "-".join(s["family"] for s in stages),
            "depths": "-".join(str(s["depth"]) for s in stages), "widths": "-".join(str(s["width"]) for s in stages),
            "reference": trial.user_attrs.get("reference", ""),
            "seconds": round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
            if trial.datetime_complete and trial.datetime_start else None}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(study: optuna.Study, settings: SearchSettings, space: SearchSpace, supernet_path: Path,
                  device: torch.device, run_dir: Path, cache: LatencyCache, seconds: float) -> dict[str, Any]:
    """Write trials.csv, pareto.csv and pareto.png; re-measure the front and write best.yaml from it.

    Every Pareto point is measured again carefully; the winner is the most accurate point whose re-measured
    p90 meets the budget, and best.yaml carries that measurement.
    """
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = [_row(t) for t in complete]
    _write_csv(run_dir / "trials.csv", rows)
    front = []
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):  # constrained: feasible trials only
        arch = Arch.from_dict(trial.user_attrs["arch"])
        net = build(arch)
        record = measure_arch(arch, device, settings.runtime, settings.threads, cache=cache, model=net, refresh=True,
                              expected_ms=trial.values[1], expected_p90_ms=trial.user_attrs["latency_p90_ms"],
                              **CAREFUL)
        front.append({**_row(trial), "remeasured_ms": round(record.median_ms, 4),
                      "remeasured_p90_ms": round(record.p90_ms, 4),
                      "remeasured_feasible": record.p90_ms <= settings.budget_ms,
                      "macs": count_macs(net, (1, arch.in_channels, arch.resolution, arch.resolution)),
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
    supernet_hash = file_hash(supernet_path)

    def summary_of(row: dict[str, Any]) -> dict[str, Any]:
        """A front point as a retrainable file: arch, its re-measured latency, and where it came from."""
        arch, record, trial = row["_arch"], row["_record"], row["_trial"]
        return {
            "arch_id": arch.arch_id,
            "arch": arch.to_dict(),
            "latency_ms": round(record.median_ms, 4),
            "latency_p90_ms": round(record.p90_ms, 4),
            "budget_ms": settings.budget_ms,
            "val_accuracy_supernet": round(trial.values[0], 4),
            "params": trial.user_attrs["params"],
            "macs": row["macs"],
            "device": {"name": record.device_name, "device": record.device, "threads": record.threads,
                       "runtime": record.runtime, "runtime_version": record.runtime_version,
                       "fingerprint": record.fingerprint, "versions": record.versions},
            "latency_in_search": {"median_ms": round(trial.values[1], 4),
                                  "p90_ms": round(trial.user_attrs["latency_p90_ms"], 4),
                                  "source": trial.user_attrs["latency_source"]},
            "provenance": {"space": settings.space, "space_hash": space.space_hash, "supernet": str(supernet_path),
                           "supernet_hash": supernet_hash, "trial": trial.number,
                           "trials": len(rows), "search_seconds": round(seconds, 1),
                           "data": settings.data or "fashion-mnist", "backend": settings.backend},
        }

    ranked = sorted(confirmed, key=lambda row: (-row["val_acc"], row["remeasured_ms"]))
    shutil.rmtree(run_dir / "front", ignore_errors=True)  # a resumed search's front replaces the last one's
    for place, row in enumerate(ranked, 1):  # for `nas retrain --top K`
        write_yaml(run_dir / "front" / f"{place:02d}-{row['_arch'].arch_id}.yaml", summary_of(row))
    summary = summary_of(ranked[0])
    write_yaml(run_dir / "best.yaml", summary)
    write_report(run_dir, f"{space.name} under {settings.budget_ms:g} ms on {device} ({settings.runtime})", summary,
                 rows, front, [list(stage.families) for stage in space.stages], seconds,
                 sorted(set(reference_archs()) - set(reference_members(space))))
    return summary
