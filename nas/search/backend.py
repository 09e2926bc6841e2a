"""What a search backend is: a function that runs a study's remaining trials, and the progress they all show.

A backend (`nas.search.optuna_backend.run_optuna`, `nas.search.ray_backend.run_ray`) takes the study, its
storage, the evaluator, the settings, the number of trials already complete, the run folder, a
`SearchProgress` to tell of each finished trial, and a log. A new backend is one module with such a function
and one line in `backend()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import optuna

from nas.search.progress import SearchProgress
from nas.search.study import BACKENDS, SearchSettings

if TYPE_CHECKING:
    from nas.search.evaluator import Evaluator


class Backend(Protocol):
    def __call__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, evaluator: "Evaluator",
                 settings: SearchSettings, done: int, run_dir: Path, progress: SearchProgress,
                 log: Callable[[str], None]) -> None: ...


def backend(name: str) -> Backend:
    """The backend called `name` (one of BACKENDS), imported only when used: Ray is a heavy import."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}")
    if name == "ray":
        from nas.search.ray_backend import run_ray

        return run_ray
    from nas.search.optuna_backend import run_optuna

    return run_optuna
