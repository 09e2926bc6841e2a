"""The progress every search backend shows: a bar on a terminal, and log lines for runs watched through a log."""

from __future__ import annotations

import time
from typing import Callable

import optuna

from nas.search.study import SearchSettings, best_feasible_accuracy

LOG_EVERY = 10  # a log line every this many trials


class SearchProgress:
    """A progress bar (on a terminal) and a log line every LOG_EVERY trials: trials done, the best feasible
    accuracy so far and trials per minute. Every backend calls `trial_done` once per finished trial."""

    def __init__(self, study: optuna.Study, settings: SearchSettings, done: int, desc: str,
                 log: Callable[[str], None]) -> None:
        from tqdm import tqdm

        self.study, self.done, self.total, self.log = study, done, settings.trials, log
        self.bar = tqdm(total=settings.trials, initial=done, desc=desc, unit="trial", disable=None)
        self.began = time.perf_counter()

    def trial_done(self) -> None:
        best = best_feasible_accuracy(self.study)
        finished = self.bar.n + 1
        per_minute = (finished - self.done) / max(time.perf_counter() - self.began, 1e-9) * 60
        best_text = f"{best:.3f}" if best is not None else "-"
        self.bar.set_postfix(best_feasible_acc=best_text, trials_per_min=f"{per_minute:.1f}")
        self.bar.update(1)
        if finished % LOG_EVERY == 0 or finished == self.total:
            self.log(f"search: {finished}/{self.total} trials, best feasible accuracy {best_text}, "
                     f"{per_minute:.1f} trials/min")

    def close(self) -> None:
        self.bar.close()
