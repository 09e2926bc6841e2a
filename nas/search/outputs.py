"""The search's outputs: trials.csv, pareto.csv and pareto.png, the re-measured front (front/), best.yaml and
report.md. Nothing here runs a network: the front's careful second measurement comes from the evaluator."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna

from nas.arch import Arch
from nas.errors import NasError
from nas.report import plot_pareto, write_report
from nas.runs import file_hash, write_yaml
from nas.search.study import SearchSettings, is_feasible, reference_archs, reference_members
from nas.space import SearchSpace

if TYPE_CHECKING:
    from nas.latency import LatencyRecord

# remeasure(arch, expected median ms, expected p90 ms) -> (careful record, MACs): `Evaluator.remeasure`
Remeasure = Callable[[Arch, float, float], "tuple[LatencyRecord, int]"]


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


def write_outputs(study: optuna.Study, settings: SearchSettings, space: SearchSpace, supernet_path: Path,
                  device_name: str, run_dir: Path, remeasure: Remeasure, seconds: float) -> dict[str, Any]:
    """Write trials.csv, pareto.csv and pareto.png; re-measure the front and write best.yaml from it.

    Every Pareto point is measured again carefully; the winner is the most accurate point whose re-measured
    p90 meets the budget, and best.yaml carries that measurement.
    """
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = [_row(t, space) for t in complete]
    _write_csv(run_dir / "trials.csv", rows)
    front = []
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):  # constrained: feasible trials only
        arch = Arch.from_dict(trial.user_attrs["arch"])
        record, macs = remeasure(arch, trial.values[1], trial.user_attrs["latency_p90_ms"])
        front.append({**_row(trial, space), "remeasured_ms": round(record.median_ms, 4),
                      "remeasured_p90_ms": round(record.p90_ms, 4),
                      "remeasured_feasible": record.p90_ms <= settings.budget_ms, "macs": macs,
                      "_arch": arch, "_record": record, "_trial": trial})
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
    shutil.rmtree(run_dir / "front", ignore_errors=True)  # a resumed search's front replaces the last one's
    for place, row in enumerate(ranked, 1):  # for `nas retrain --top K`
        write_yaml(run_dir / "front" / f"{place:02d}-{row['_arch'].arch_id}.yaml", summary_of(row))
    summary = summary_of(ranked[0])
    write_yaml(run_dir / "best.yaml", summary)
    write_report(run_dir, f"{space.name} under {settings.budget_ms:g} ms {where}", summary, rows, front,
                 [list(stage.families) for stage in space.stages], seconds,
                 sorted(set(reference_archs()) - set(reference_members(space))))
    return summary
