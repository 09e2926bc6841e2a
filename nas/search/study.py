"""The search's study, without torch: its settings, the Optuna study and sampler, and each trial's record.

Two objectives (validation accuracy up, median latency down) and constraints (p90 latency within the budget,
optionally parameter and MAC limits). The study lives in an Optuna journal file in the run folder (or an RDB at
`--storage URL`), so running the same search again resumes it with no completed trial lost. A run folder is
resumed only by the same search (`check_run_folder`).
"""

from __future__ import annotations

import warnings
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import optuna

from nas.arch import Arch, load_arch, read_yaml
from nas.errors import NasError, first_line
from nas.latency.measure import parse_budget
from nas.options import RANGES, check_range
from nas.runs import differing_settings
from nas.search.encoding import suggest, to_params
from nas.space import SearchSpace

SAMPLERS = ("nsga2", "tpe", "random")
BACKENDS = ("optuna", "ray")
STUDY_NAME = "search"
OPTIONAL = ("data_workers", "limit_train", "max_params", "max_macs")  # None: not set


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
    data_workers: int | None = None  # loader processes for image files (None: nas.data.default_workers)
    address: str | None = None
    storage: str | None = None
    adapt_steps: int = 0  # training steps of each candidate alone before it is scored (nas.evaluate.adapt)
    rescore_top: int = 0  # the most accurate feasible trials re-scored by short training from scratch (0: none)
    rescore_steps: int = 60  # their training batches (nas.evaluate.scratch_accuracy)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original (trials may grow; how it runs may change)."""
        free = ("trials", "space", "backend", "workers", "data_workers", "address", "storage", "predictor",
                "rescore_top", "rescore_steps")  # re-scoring follows the trials: a resumed search may change it
        return {k: v for k, v in asdict(self).items() if k not in free}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, where: str = "settings") -> "SearchSettings":
        """`self`, or a NasError naming the first setting of the wrong type or out of range (settings may come
        from a config.yaml, `where`, past the command line's checks)."""
        for name in ("space", "latency_budget", "device", "runtime", "sampler", "backend"):
            if not isinstance(getattr(self, name), str):
                raise NasError(f"{where}: {name} must be text, got {getattr(self, name)!r}")
        for name in ("data", "supernet", "predictor", "address", "storage"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise NasError(f"{where}: {name} must be text, got {getattr(self, name)!r}")
        for name in RANGES:
            if getattr(self, name) is not None or name not in OPTIONAL:
                check_range(name, getattr(self, name), where)
        if self.sampler not in SAMPLERS:
            raise NasError(f"--sampler {self.sampler}: expected one of {', '.join(SAMPLERS)}")
        if self.backend not in BACKENDS:
            raise NasError(f"--backend {self.backend}: expected one of {', '.join(BACKENDS)}")
        return self


def search_settings(given: dict[str, Any], resume: str | None = None, config: str | None = None) -> SearchSettings:
    """Settings from --resume RUN's config.yaml or --config FILE, overridden by the options `given` (None: not
    given)."""
    names = {f.name for f in fields(SearchSettings)} - {"budget_ms"}
    base: dict = {}
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise NasError(f"--resume {resume}: no config.yaml there; pass the folder of a nas search")
        base = read_yaml(saved) or {}
        if not isinstance(base, dict):
            raise NasError(f"{saved}: not the config.yaml of a nas search (not a mapping)")
    elif config:
        base = read_yaml(config)
        if not isinstance(base, dict):
            raise NasError(f"--config {config}: expected the config.yaml of a nas search")
    given = {k: v for k, v in given.items() if k in names and v is not None}
    merged = {k: v for k, v in {**base, **given}.items() if k in names}
    missing = [f"--{k.replace('_', '-')}" for k in ("space", "latency_budget") if k not in merged]
    if missing:
        raise NasError(f"{' and '.join(missing)} required (or --config FILE, or --resume RUN)")
    where = str(Path(resume) / "config.yaml") if resume else config or "options"
    return SearchSettings(**merged, budget_ms=parse_budget(merged["latency_budget"])).check(where)


def check_run_folder(run_dir: Path, settings: SearchSettings, space_hash: str) -> None:
    """A run folder is resumed only by the same search (`nas.runs.check_run_dir` refuses one of anything else). A
    setting its config.yaml lacks was added since it was written, so that run used the setting's default."""
    config = run_dir / "config.yaml"
    if config.is_file():
        defaults = {f.name: f.default for f in fields(SearchSettings) if f.default is not MISSING}
        saved = {**defaults, **(read_yaml(config) or {})}
        differs = sorted(differing_settings(saved, {**settings.identity(), "space_hash": space_hash}))
        if differs:
            raise NasError(f"{run_dir} holds a different search ({', '.join(differs)} differ); "
                           "pass a new --run-dir, or the original options to resume it")


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
        first = first_line(error)
        raise NasError(f"--storage {url!r}: Optuna cannot open it ({first[:150]}); expected a database URL such "
                       "as postgresql://user:password@host/db or sqlite:////absolute/path.db") from None


def open_run_storage(run_dir: Path) -> optuna.storages.BaseStorage:
    """The study storage of the search in `run_dir` (its journal, or the RDB its config.yaml names)."""
    config = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if not isinstance(config, dict):
        raise NasError(f"{run_dir}: not a nas search folder (no config.yaml); pass runs/<run>")
    return open_storage(run_dir, config.get("storage"))


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
        for member in warm_start:  # marked, so that a sampler is not credited with them
            study.enqueue_trial(to_params(space, member), user_attrs={"warm_start": member.name}, skip_if_exists=True)
        for name, member in reference_members(space).items():
            study.enqueue_trial(to_params(space, member), user_attrs={"reference": name}, skip_if_exists=True)
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
            return suggest(space, optuna.trial.FixedTrial(to_params(space, arch))) == arch
        except ValueError:  # a knob given per block: no choice of the trial's distribution
            return False

    members = {name: arch.with_num_classes(space.num_classes) for name, arch in reference_archs().items()}
    return {name: arch for name, arch in members.items() if space.contains(arch) and one_trial(arch)}


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
