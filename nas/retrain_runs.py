"""Retraining what a search found: best.yaml (or a front file, any arch YAML, timm:MODEL), or the K most accurate
points of a search's re-measured front, with best.yaml's record (device, threads, runtime, data, supernet, budget)
as the defaults that `RetrainOptions` may override; and the lines that report the results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from nas.arch import Arch, load_arch, read_yaml
from nas.data import SPLIT_FILE, load_data
from nas.errors import NasError
from nas.latency import check_runtime, resolve_device
from nas.memory import check_onnx_size, check_training, meta_network, count_params
from nas.retrain import default_recipe, load_recipe, retrain, supernet_for
from nas.runs import RUNS_ROOT, check_run_dir, safe_name, write_json
from nas.training import rank_and_world

if TYPE_CHECKING:
    from nas.weight_sharing import SpaceSupernet


@dataclass
class RetrainOptions:
    """The settings given on the command line; None takes best.yaml's record, or the recipe's default."""

    device: str | None = None
    threads: int | None = None
    runtime: str | None = None
    data: str | None = None
    limit_train: int | None = None
    seed: int = 0
    recipe: str | None = None  # a recipe YAML, overridden in turn by the fields below
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    init: str | None = None
    distill: float | None = None
    supernet: str | None = None  # the checkpoint for init supernet and distill
    data_workers: int | None = None  # loader processes for image files (None: nas.data.default_workers)
    compile: bool = False  # train through torch.compile


@dataclass
class Retrained:
    """One retrained arch file: its metrics (as `nas.retrain.retrain` returns them), where it was trained and
    measured, and the search's record of it (best.yaml's contents; empty for an arch not from a search)."""

    arch_file: str
    run_dir: Path
    device: torch.device
    threads: int
    metrics: dict[str, Any]
    record: dict[str, Any]

    @property
    def searched(self) -> bool:
        return bool(self.record)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "run_dir": str(self.run_dir), "arch_file": self.arch_file}


def retrain_file(arch_file: str | Path, options: RetrainOptions, run_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> Retrained | None:
    """Retrain one arch file (best.yaml, a front file, an arch YAML or timm:MODEL) in `run_dir` (default: retrain/
    beside best.yaml, or runs/retrain-NAME-ID); None on the ranks other than 0 under torchrun."""
    if Path(arch_file).is_dir():
        raise NasError(f"{arch_file}: is a folder; pass its best.yaml, or add --top K to retrain its front")
    document = {} if str(arch_file).startswith("timm:") else read_yaml(arch_file)
    return _retrain(arch_file, document, options, run_dir, run_dir is not None, log)


def _retrain(arch_file: str | Path, document: Any, options: RetrainOptions, run_dir: Path | None, given: bool,
             log: Callable[[str], None]) -> Retrained | None:
    """Retrain one arch in `run_dir` (`given` by the user, or a default nas makes; None: the default)."""
    arch = load_arch(arch_file)
    searched = isinstance(document, dict) and "arch" in document
    record = document if searched else {}
    _check_record(record, arch_file)
    recorded = record.get("device", {})
    provenance = record.get("provenance", {})
    threads = options.threads or recorded.get("threads") or 1
    device = _device(record, options)
    runtime = check_runtime(recorded.get("runtime", "torch") if options.runtime is None else options.runtime)
    if run_dir is None:
        run_dir = (Path(arch_file).parent / "retrain" if searched
                   else RUNS_ROOT / safe_name(f"retrain-{Path(str(arch_file).replace(':', '-')).stem}-{arch.arch_id}"))
    check_run_dir(run_dir, ("checkpoint.pt", "metrics.json", "model.pt", SPLIT_FILE), given)
    data = load_data(options.data or provenance.get("data"), seed=options.seed, limit_train=options.limit_train,
                     workers=options.data_workers, run_dir=run_dir)
    if not searched:  # a reference or baseline arch: fit its classifier to the data's classes
        arch = arch.with_num_classes(data.num_classes)
    if data.num_classes != arch.num_classes:
        raise NasError(f"{arch_file}: the arch has {arch.num_classes} classes but {data.source} has "
                       f"{data.num_classes}; pass the data it was searched on with --data")
    recipe = default_recipe(data.size("train"), **_recipe_overrides(options))
    supernet = None
    if recipe.init == "supernet" or recipe.distill:
        supernet_path = options.supernet or provenance.get("supernet")
        if not supernet_path:
            raise NasError(f"{arch_file}: --init supernet and --distill need the supernet; pass --supernet CKPT")
        supernet = supernet_for(arch, Path(supernet_path))
    _check_memory(arch, arch_file, recipe.batch_size, device, recipe.ema_decay > 0, supernet,
                  supernet is not None and recipe.distill > 0)
    supernet = supernet.to(device) if supernet is not None else None
    # the search's latency of the arch tells a disturbed re-measurement only when measured the same way
    same_setup = searched and runtime == recorded.get("runtime") and threads == recorded.get("threads")
    expected = (record.get("latency_ms"), record.get("latency_p90_ms")) if same_setup else (None, None)
    metrics = retrain(arch, data, run_dir, recipe, device, threads, runtime, record.get("budget_ms"), *expected,
                      supernet=supernet, source=str(arch_file), log=log, compile_model=options.compile)
    if metrics is None:
        return None
    return Retrained(str(arch_file), run_dir, device, threads, metrics, record)


def _recipe_overrides(options: RetrainOptions) -> dict[str, Any]:
    """The recipe file's settings, overridden by the options given."""
    overrides = load_recipe(options.recipe) if options.recipe else {}
    overrides.update({k: v for k, v in {"epochs": options.epochs, "batch_size": options.batch_size,
                                        "lr": options.lr, "init": options.init, "distill": options.distill,
                                        "seed": options.seed}.items() if v is not None})
    return overrides


def _device(record: dict[str, Any], options: RetrainOptions) -> torch.device:
    """--device, else the search's."""
    return resolve_device(record.get("device", {}).get("device", "cpu") if options.device is None else options.device)


def _check_memory(arch: Arch, arch_file: str | Path, batch: int, device: torch.device, ema: bool,
                  supernet: "SpaceSupernet | None" = None, distill: bool = False) -> None:
    """Refuse, before any folder is made, an arch that cannot be trained on `device` at `batch` (beside the
    supernet and its largest member as teacher, when they are used), or whose weights one ONNX file cannot hold."""
    held = count_params(supernet) if supernet is not None else 0
    if distill:
        held += count_params(meta_network(supernet.space.largest()))
    check_training(arch, batch, device, str(arch_file), ema, held)
    check_onnx_size(count_params(meta_network(arch)), str(arch_file))


def _check_record(record: dict[str, Any], path: str | Path) -> None:
    """Refuse a best.yaml (or front file) whose record a retraining reads is of the wrong shape or type."""
    for key in ("device", "provenance"):
        if not isinstance(record.get(key, {}), dict):
            raise NasError(f"{path}: {key} must be a mapping, got {record[key]!r}; pass a best.yaml nas wrote")
    device, provenance = record.get("device", {}), record.get("provenance", {})
    texts = {"device.device": device.get("device"), "device.runtime": device.get("runtime"),
             "provenance.data": provenance.get("data"), "provenance.supernet": provenance.get("supernet")}
    for key, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise NasError(f"{path}: {key} must be text, got {value!r}")
    threads = device.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise NasError(f"{path}: device.threads must be a whole number from 1 to 1,024, got {threads!r}")
    for key in ("budget_ms", "latency_ms", "latency_p90_ms"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value < float("inf")):
            raise NasError(f"{path}: {key} must be a positive finite number of milliseconds, got {value!r}")


def retrained_lines(result: Retrained) -> list[str]:
    """The human-readable report of one retrained arch file."""
    m, run_dir, budget = result.metrics, result.run_dir, result.record.get("budget_ms")
    verdict = ""
    if budget is not None:
        verdict = f" - within the {budget:g} ms budget" if m["within_budget"] else f" - OVER the {budget:g} ms budget"
    return [
        f"{'winner' if result.searched else 'arch'} {m['arch_id']}: test top-1 {100 * m['test_top1']:.1f} % "
        f"(top-5 {100 * m['test_top5']:.1f} %), {m['params']:,} params",
        f"latency {m['latency_ms']:.3f} ms median, {m['latency_p90_ms']:.3f} ms p90 on {result.device} "
        f"({m['runtime']}, {result.threads} thread(s), batch 1){verdict}; onnxruntime "
        f"{m['latency']['onnxruntime']['median_ms']:.3f} ms median",
        f"{'best.yaml' if result.searched else 'arch'}: {result.arch_file}",
        f"model: {run_dir / 'model.pt'}   onnx: {run_dir / 'model.onnx'} "
        f"(max diff from torch {m['onnx']['max_abs_diff']:.1g})",
        f"metrics: {run_dir / 'metrics.json'}   curves: {run_dir / 'training.png'}   card: {run_dir / 'MODEL_CARD.md'}"]


@dataclass
class RetrainedTop:
    """The front points retrained by `retrain_top`, most accurate first, in `run_dir`/<place>-<arch id>/."""

    run_dir: Path
    results: list[Retrained]

    def to_dict(self) -> dict[str, Any]:
        return {"retrained": [r.to_dict() for r in self.results], "run_dir": str(self.run_dir)}


def retrain_top(search: str | Path, top: int, options: RetrainOptions, run_dir: Path | None = None,
                log: Callable[[str], None] = print) -> RetrainedTop | None:
    """Retrain the `top` most accurate points of a search's re-measured front, or of its re-scored shortlist where
    it has one (`search` is its run folder or best.yaml), one after another, each resumable, into `run_dir`
    (default: retrain-top/ in the search's folder), and write top.json there; None on the ranks other than 0
    under torchrun."""
    if top < 1:
        raise NasError("--top must be at least 1")
    search_dir = Path(search) if Path(search).is_dir() else Path(search).parent
    shortlist = sorted((search_dir / "shortlist").glob("*.yaml"))  # ordered by the re-scoring (--rescore-top)
    front = shortlist or sorted((search_dir / "front").glob("*.yaml"))
    if not front:
        raise NasError(f"{search_dir}: no front/ folder of a finished search; pass a search's run folder or its "
                       "best.yaml (searches write front/ when they finish)")
    if top > len(front):
        log(f"the {'shortlist' if shortlist else 'front'} holds {len(front)} feasible point(s); retraining all of "
            "them")
    out = run_dir or search_dir / "retrain-top"
    check_run_dir(out, ("top.json", *(path.stem for path in front)), run_dir is not None)
    documents = [(path, read_yaml(path)) for path in front[:top]]  # every file read before any training
    batch = default_recipe(1, **_recipe_overrides(options)).batch_size
    for path, document in documents:
        record = document if isinstance(document, dict) else {}
        _check_record(record, path)
        _check_memory(load_arch(path), path, batch, _device(record, options), ema=False)
    results = []
    for place, (path, document) in enumerate(documents, 1):
        log(f"--- {place}/{len(documents)}: {path.name}")
        results.append(_retrain(path, document, options, out / path.stem, False, log))
    if rank_and_world()[0] != 0:  # under torchrun, rank 0 writes and reports
        return None
    write_json(out / "top.json", [r.to_dict() for r in results])
    return RetrainedTop(out, results)


def top_lines(top: RetrainedTop) -> list[str]:
    """The human-readable table of the retrained front points."""
    lines = [f"{'place':>5}  {'arch id':12}  {'supernet':>8}  {'test top-1':>10}  {'ms median':>9}  {'p90':>7}  "
             f"{'params':>9}"]
    for place, result in enumerate(top.results, 1):
        m = result.metrics
        lines.append(f"{place:5}  {m['arch_id']:12}  {result.record['val_accuracy_supernet']:8.3f}  "
                     f"{100 * m['test_top1']:9.1f}%  {m['latency_ms']:9.3f}  {m['latency_p90_ms']:7.3f}  "
                     f"{m['params']:9,}")
    lines.append(f"results: {top.run_dir / 'top.json'}; each model in {top.run_dir}/<place>-<arch id>/")
    return lines
