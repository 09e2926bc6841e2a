"""The search's outputs: trials.csv, pareto.csv and pareto.png, the re-measured front (front/), with --rescore-top
the re-scored shortlist (shortlist/, rescored.csv), best.yaml and report.md. Nothing here runs a network: the
careful second measurements and the re-scoring come from the evaluator."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna

from nas.arch import Arch
from nas.errors import NasError
from nas.report import plot_pareto, write_report
from nas.runs import atomic_write, file_hash, write_yaml
from nas.search.study import SearchSettings, is_feasible, reference_archs, reference_members
from nas.space import SearchSpace

if TYPE_CHECKING:
    from nas.latency import LatencyRecord

# remeasure(arch, expected median ms, expected p90 ms) -> (careful record, MACs): `Evaluator.remeasure`
Remeasure = Callable[[Arch, float, float], "tuple[LatencyRecord, int]"]
Rescore = Callable[[Arch], float]  # validation accuracy after short training from scratch: `Evaluator.rescore`
RESCORED = "rescored.json"  # the shortlist's scores, so that a resumed search re-scores only what it has not


def _row(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> dict[str, Any]:
    stages = trial.user_attrs["arch"]["stages"]
    placement = space.placement(Arch.from_dict(trial.user_attrs["arch"]))
    return {"trial": trial.number, "arch_id": trial.user_attrs["arch_id"], "val_acc": round(trial.values[0], 4),
            "latency_ms": round(trial.values[1], 4), "latency_p90_ms": round(trial.user_attrs["latency_p90_ms"], 4),
            "feasible": is_feasible(trial), "latency_source": trial.user_attrs["latency_source"],
            "params": trial.user_attrs["params"], "families": "-".join(s["family"] for s in stages),
            "slots": "-".join(map(str, placement.slots)),  # every trial is a member; a skipped slot is left out
            "depths": "-".join(str(s["depth"]) for s in stages), "widths": "-".join(str(s["width"]) for s in stages),
            "reference": trial.user_attrs.get("reference", ""), "warm_start": trial.user_attrs.get("warm_start", ""),
            "seconds": round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
            if trial.datetime_complete and trial.datetime_start else None}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _remeasured(trial: optuna.trial.FrozenTrial, space: SearchSpace, remeasure: Remeasure, budget_ms: float
                ) -> dict[str, Any]:
    """A trial's row with its careful second measurement (the `_` keys are for best.yaml, not the CSV files)."""
    arch = Arch.from_dict(trial.user_attrs["arch"])
    record, macs = remeasure(arch, trial.values[1], trial.user_attrs["latency_p90_ms"])
    return {**_row(trial, space), "remeasured_ms": round(record.median_ms, 4),
            "remeasured_p90_ms": round(record.p90_ms, 4), "remeasured_feasible": record.p90_ms <= budget_ms,
            "macs": macs, "_arch": arch, "_record": record, "_trial": trial}


def rescored_shortlist(complete: list[optuna.trial.FrozenTrial], front: list[dict[str, Any]],
                       settings: SearchSettings, space: SearchSpace, remeasure: Remeasure, rescore: Rescore,
                       run_dir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The `rescore_top` most accurate feasible trials (one per member) that stay within the budget when re-measured,
    trained from scratch for `rescore_steps` batches, most accurate by that score first (ties: by the supernet's)."""
    candidates: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in sorted((t for t in complete if is_feasible(t)), key=lambda t: (-t.values[0], t.values[1])):
        candidates.setdefault(trial.user_attrs["arch_id"], trial)
    saved_path, key = run_dir / RESCORED, {"steps": settings.rescore_steps, "seed": settings.seed}
    try:
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
    except ValueError:  # written atomically, so only a hand edit breaks it: score again
        saved = {}
    scores = saved.get("scores", {}) if isinstance(saved, dict) and saved.get("key") == key else {}
    on_front = {row["arch_id"]: row for row in front}
    rows: list[dict[str, Any]] = []
    for arch_id, trial in candidates.items():
        if len(rows) == settings.rescore_top:
            break
        row = on_front.get(arch_id) or _remeasured(trial, space, remeasure, settings.budget_ms)
        if not row["remeasured_feasible"]:  # the next most accurate takes its place
            log(f"re-scoring: {arch_id} left out, its re-measured p90 {row['remeasured_p90_ms']:.3f} ms exceeds "
                "the budget")
            continue
        if arch_id not in scores:
            began = time.perf_counter()
            scores[arch_id] = rescore(row["_arch"])
            atomic_write(saved_path, json.dumps({"key": key, "scores": scores}, indent=1).encode())
            log(f"re-scoring {len(rows) + 1}/{settings.rescore_top}: {arch_id} supernet {row['val_acc']:.3f}, "
                f"after {settings.rescore_steps} batches from scratch {scores[arch_id]:.3f} "
                f"({time.perf_counter() - began:.1f} s)")
        rows.append({**row, "rescored_acc": round(scores[arch_id], 4)})
    return sorted(rows, key=lambda row: (-row["rescored_acc"], -row["val_acc"], row["remeasured_ms"]))


def write_outputs(study: optuna.Study, settings: SearchSettings, space: SearchSpace, supernet_path: Path,
                  device_name: str, run_dir: Path, remeasure: Remeasure, rescore: Rescore, seconds: float,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write trials.csv, pareto.csv and pareto.png; re-measure the front and write best.yaml from it.

    Every Pareto point is measured again carefully; the winner is the most accurate point whose re-measured
    p90 meets the budget, and best.yaml carries that measurement. With `settings.rescore_top`, the winner is
    instead the best of `rescored_shortlist`, which is written to shortlist/ and rescored.csv.
    """
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = [_row(t, space) for t in complete]
    _write_csv(run_dir / "trials.csv", rows)
    front = [_remeasured(trial, space, remeasure, settings.budget_ms)  # constrained: feasible trials only
             for trial in sorted(study.best_trials, key=lambda t: t.values[1])]
    _write_csv(run_dir / "pareto.csv", [{k: v for k, v in row.items() if not k.startswith("_")} for row in front])
    where = f"on {device_name} ({settings.runtime})"
    plot_pareto(rows, front, settings.budget_ms, run_dir / "pareto.png",
                f"{space.name}: {len(rows)} trials, budget {settings.budget_ms:g} ms {where}")
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
    _write_candidates(run_dir / "front", ranked, summary_of)  # for `nas retrain --top K`
    shortlist = (rescored_shortlist(complete, front, settings, space, remeasure, rescore, run_dir, log)
                 if settings.rescore_top else [])
    _write_candidates(run_dir / "shortlist", shortlist, summary_of)  # `nas retrain --top K` prefers it
    if shortlist:
        _write_csv(run_dir / "rescored.csv", [{k: v for k, v in row.items() if not k.startswith("_")}
                                              for row in shortlist])
        summary = {**summary_of(shortlist[0]), "val_accuracy_rescored": shortlist[0]["rescored_acc"],
                   "rescore": {"top": settings.rescore_top, "steps": settings.rescore_steps}}
    else:
        (run_dir / "rescored.csv").unlink(missing_ok=True)  # a resumed search's, re-scored no more
        summary = summary_of(ranked[0])
    write_yaml(run_dir / "best.yaml", summary)
    write_report(run_dir, f"{space.name} under {settings.budget_ms:g} ms {where}", summary, rows, front,
                 [list(stage.families) for stage in space.stages], seconds,
                 sorted(set(reference_archs()) - set(reference_members(space))), shortlist)
    return summary


def _write_candidates(folder: Path, ranked: list[dict[str, Any]], summary_of: Callable[[dict], dict]) -> None:
    """One retrainable file per candidate, best first (<place>-<arch id>.yaml), replacing a resumed search's."""
    shutil.rmtree(folder, ignore_errors=True)
    for place, row in enumerate(ranked, 1):
        write_yaml(folder / f"{place:02d}-{row['_arch'].arch_id}.yaml", summary_of(row))
