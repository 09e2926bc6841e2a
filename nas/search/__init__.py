"""The search: an Optuna study over a space, run in this process or across Ray workers.

- `study`: settings, the Optuna study and each trial's record (no torch);
- `encoding`: the space as Optuna parameters;
- `evaluator`: scoring a candidate on the supernet and the device (the only torch-aware part);
- `backend`, `optuna_backend`, `ray_backend`: who runs the trials, and the progress they show;
- `outputs`: trials.csv, the Pareto front, best.yaml and report.md;
- `run`: the whole search, as `nas search` runs it.
"""
