"""The in-process backend: one Optuna study, trials one after another in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna

from nas.search.progress import SearchProgress
from nas.search.encoding import suggest
from nas.search.evaluator import Evaluator
from nas.search.study import SearchSettings, record_result


def run_optuna(study: optuna.Study, storage: optuna.storages.BaseStorage, evaluator: Evaluator,
               settings: SearchSettings, done: int, run_dir: Path, progress: SearchProgress,
               log: Callable[[str], None]) -> None:
    """Run the remaining trials in this process (the study's own storage holds every result)."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        return record_result(trial, evaluator.evaluate(suggest(evaluator.space, trial)), settings)

    study.optimize(objective, n_trials=settings.trials - done,
                   callbacks=[lambda study, trial: progress.trial_done()])
