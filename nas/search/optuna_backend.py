"""The in-process backend: one Optuna study, trials one after another in this process."""

from __future__ import annotations

import time

import optuna
from tqdm import tqdm

from nas.search.study import Evaluator, SearchSettings, best_feasible_accuracy, record_result


def run_optuna(study: optuna.Study, evaluator: Evaluator, settings: SearchSettings, done: int) -> None:
    """Run the remaining trials, with a progress bar showing the best feasible accuracy and trials per minute."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        return record_result(trial, evaluator.evaluate(evaluator.space.suggest(trial)), settings)

    began = time.perf_counter()
    with tqdm(total=settings.trials, initial=done, desc="search", unit="trial", disable=None) as bar:
        def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = best_feasible_accuracy(study)
            per_minute = (bar.n + 1 - done) / max(time.perf_counter() - began, 1e-9) * 60
            bar.set_postfix(best_feasible_acc=f"{best:.3f}" if best is not None else "-",
                            trials_per_min=f"{per_minute:.1f}")
            bar.update(1)

        study.optimize(objective, n_trials=settings.trials - done, callbacks=[progress])
