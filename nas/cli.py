"""The `nas` command line: search, retrain, export, describe, measure, supernet train."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from nas.errors import NasError

MAIN_EXAMPLES = """examples:
  nas search --space search_spaces/cpu_small.yaml --latency-budget 5ms --device cpu --run-dir runs/quickstart
  nas retrain runs/quickstart/best.yaml
  nas export runs/quickstart/retrain/model.pt --format onnx
  nas describe runs/quickstart/best.yaml --json
  nas measure runs/quickstart/best.yaml --device cpu --json
  nas supernet train --space search_spaces/cpu_small.yaml --run-dir runs/supernet-small

Run `nas COMMAND --help` for each command's options."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _device_and_threads(args: argparse.Namespace):
    from nas.latency import resolve_device

    if getattr(args, "threads", 1) < 1:
        raise NasError(f"--threads {args.threads}: must be at least 1")
    return resolve_device(args.device)


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))


# ---- search ---------------------------------------------------------------------------------------------------
def _search_settings(args: argparse.Namespace):
    """Settings from --resume RUN's config.yaml or --config FILE, overridden by options given on this command."""
    from dataclasses import fields

    from nas.arch import read_yaml
    from nas.latency import parse_budget
    from nas.search import SearchSettings

    names = {f.name for f in fields(SearchSettings)} - {"budget_ms"}
    base: dict = {}
    if args.resume:
        config = Path(args.resume) / "config.yaml"
        if not config.is_file():
            raise NasError(f"--resume {args.resume}: no config.yaml there; pass the folder of a nas search")
        base = read_yaml(config) or {}
    elif args.config:
        base = read_yaml(args.config)
        if not isinstance(base, dict):
            raise NasError(f"--config {args.config}: expected the config.yaml of a nas search")
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    merged = {k: v for k, v in {**base, **given}.items() if k in names}
    missing = [f"--{k.replace('_', '-')}" for k in ("space", "latency_budget") if k not in merged]
    if missing:
        raise NasError(f"{' and '.join(missing)} required (or --config FILE, or --resume RUN)")
    return SearchSettings(**merged, budget_ms=parse_budget(merged["latency_budget"]))


def cmd_search(args: argparse.Namespace) -> int:
    from nas.data import load_data
    from nas.latency import LatencyCache, check_runtime, resolve_device
    from nas.runs import RUNS_ROOT, write_yaml
    from nas.search import BACKENDS, SAMPLERS, check_budget_feasible, open_storage, run_search
    from nas.space import load_space
    from supernet.training import TrainConfig, load_supernet, train_supernet

    settings = _search_settings(args)
    device = resolve_device(settings.device)
    check_runtime(settings.runtime)
    if settings.trials < 1 or settings.epochs < 1 or settings.threads < 1 or settings.workers < 1:
        raise NasError("--trials, --epochs, --threads and --workers must be at least 1")
    if settings.sampler not in SAMPLERS:
        raise NasError(f"--sampler {settings.sampler}: expected one of {', '.join(SAMPLERS)}")
    if settings.backend not in BACKENDS:
        raise NasError(f"--backend {settings.backend}: expected one of {', '.join(BACKENDS)}")
    space = load_space(settings.space)
    data = load_data(settings.data, seed=settings.seed, limit_train=settings.limit_train)
    space = space.with_num_classes(data.num_classes)
    if args.resume:
        run_dir = Path(args.resume)
    elif args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        run_dir = RUNS_ROOT / (f"search-{space.name}-{settings.latency_budget}-{str(device).replace(':', '')}-"
                               f"{settings.runtime}")
    _check_resumable(run_dir, settings, space.space_hash)
    supernet = load_supernet(Path(settings.supernet), space).to(device) if settings.supernet else None
    predictor = (_predictor_for(settings.predictor, device, settings.runtime, settings.threads)
                 if settings.predictor else None)
    if settings.storage:
        open_storage(run_dir, settings.storage)  # a bad URL fails here, before anything is written

    cache = LatencyCache()
    feasible = check_budget_feasible(space, settings.budget_ms, device, settings.threads, settings.runtime, cache)
    log(f"budget {settings.budget_ms:g} ms on {feasible.device_name} ({settings.runtime}, {settings.threads} "
        f"thread(s)); the smallest member of {space.name} measures {feasible.median_ms:.3f} ms "
        f"(p90 {feasible.p90_ms:.3f} ms)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", {**settings.to_dict(), "space_hash": space.space_hash})

    if supernet is None:
        supernet_path = train_supernet(space, data, run_dir / "supernet",
                                       TrainConfig(epochs=settings.epochs, seed=settings.seed), device, log)
        supernet = load_supernet(supernet_path, space).to(device)
    else:
        supernet_path = Path(settings.supernet)
    summary = run_search(settings, space, data, supernet, supernet_path, device, run_dir, cache, predictor, log)
    _emit({**summary, "run_dir": str(run_dir), "best_yaml": str(run_dir / "best.yaml")}, args.json, [
        f"best sub-network {summary['arch_id']}: supernet val accuracy {summary['val_accuracy_supernet']:.3f}, "
        f"latency {summary['latency_ms']:.3f} ms (p90 {summary['latency_p90_ms']:.3f} ms) "
        f"within the {settings.budget_ms:g} ms budget on {device} ({settings.runtime})",
        f"best.yaml:  {run_dir / 'best.yaml'}",
        f"report: {run_dir / 'report.md'}; Pareto front: {run_dir / 'pareto.csv'} and {run_dir / 'pareto.png'}",
        f"next: nas retrain {run_dir / 'best.yaml'}"])
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from nas.arch import read_yaml
    from nas.search import open_storage

    run_dir = Path(args.run)
    config = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if not isinstance(config, dict):
        raise NasError(f"{run_dir}: not a nas search folder (no config.yaml); pass runs/<run>")
    storage = open_storage(run_dir, config.get("storage"))
    log(f"Optuna dashboard for {run_dir}: http://{args.host}:{args.port}/dashboard/ (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


def _predictor_for(path: str, device, runtime: str, threads: int):
    """The predictor at `path`, refused unless it was fitted for this device, runtime and thread count."""
    from nas.latency import fingerprint
    from nas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.load(Path(path))
    here = fingerprint(device, runtime, threads)
    if predictor.fingerprint != here["id"]:
        raise NasError(f"--predictor {path}: fitted on {predictor.identity.get('device_name')} with "
                       f"{predictor.runtime}, {predictor.identity.get('threads')} thread(s) (fingerprint "
                       f"{predictor.fingerprint}), not this device/runtime ({here['id']}); fit one here with "
                       f"`nas latency fit --runtime {runtime} --threads {threads}`")
    return predictor


def _check_resumable(run_dir: Path, settings: Any, space_hash: str) -> None:
    """A run folder is resumed only by the same search; anything else there is refused, never overwritten."""
    from nas.arch import read_yaml

    config = run_dir / "config.yaml"
    if config.is_file():
        saved = read_yaml(config) or {}
        ours = {**settings.identity(), "space_hash": space_hash}
        differs = sorted(k for k, v in ours.items() if saved.get(k) != v)
        if differs:
            raise NasError(f"{run_dir} holds a different search ({', '.join(differs)} differ); "
                           "pass a new --run-dir, or the original options to resume it")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise NasError(f"{run_dir} exists and is not a nas search folder; pass a new --run-dir")


# ---- supernet train -------------------------------------------------------------------------------------------
def cmd_supernet_train(args: argparse.Namespace) -> int:
    from nas.data import load_data
    from nas.runs import RUNS_ROOT
    from nas.space import load_space
    from supernet.training import TrainConfig, load_supernet_checkpoint, rank_and_world, train_supernet

    device = _device_and_threads(args)
    for option in ("epochs", "batch_size", "checkpoint_every"):
        if getattr(args, option) < 1:
            raise NasError(f"--{option.replace('_', '-')} must be at least 1")
    space = load_space(args.space)
    data = load_data(args.data, seed=args.seed, limit_train=args.limit_train)
    space = space.with_num_classes(data.num_classes)
    run_dir = Path(args.run_dir) if args.run_dir else RUNS_ROOT / f"supernet-{space.name}"
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, distill=args.distill,
                         checkpoint_every=args.checkpoint_every)
    path = train_supernet(space, data, run_dir, config, device, log)
    if rank_and_world()[0] != 0:  # under torchrun, rank 0 reports
        return 0
    history = load_supernet_checkpoint(path, space)["history"]
    _emit({"checkpoint": str(path), "history": history}, args.json,
          [f"supernet checkpoint: {path}", f"largest member val accuracy {history[-1]['val_acc_largest']:.3f}, "
           f"smallest {history[-1]['val_acc_smallest']:.3f}",
           f"next: nas search --space {args.space} --supernet {path} --latency-budget 4ms --device {device}"])
    return 0


# ---- supernet rank --------------------------------------------------------------------------------------------
def cmd_supernet_rank(args: argparse.Namespace) -> int:
    from nas.data import load_data
    from nas.rank import describe_statistic, rank_supernet
    from nas.space import load_space
    from supernet.training import load_supernet

    if args.subnets < 3 or args.epochs < 1:
        raise NasError("--subnets must be at least 3 and --epochs at least 1")
    device = _device_and_threads(args)
    supernet_path = Path(args.supernet)
    if not supernet_path.is_file():
        raise NasError(f"--supernet {supernet_path}: no such checkpoint file; pass one from `nas supernet train`")
    space = load_space(args.space)
    data = load_data(args.data, seed=args.seed, limit_train=args.limit_train)
    space = space.with_num_classes(data.num_classes)
    supernet = load_supernet(supernet_path, space).to(device)
    run_dir = Path(args.run_dir) if args.run_dir else supernet_path.parent / "rank"
    result = rank_supernet(space, supernet, supernet_path, data, run_dir, args.subnets, args.epochs, args.seed,
                           device, log)
    lines = [f"{'arch id':12}  {'M MACs':>7}  {'params':>9}  {'inherited':>9}  {'standalone':>10}"]
    lines += [f"{r['arch_id']:12}  {r['macs'] / 1e6:7.2f}  {r['params']:9,}  {r['inherited']:9.3f}  "
              f"{r['standalone']:10.3f}" for r in result["subnets"]]
    lines += [f"Kendall tau-b {describe_statistic(result['kendall_tau'])}",
              f"Spearman rho  {describe_statistic(result['spearman_rho'])}",
              f"({args.epochs} standalone epoch(s) each; {result['bootstrap_resamples']} bootstrap resamples)",
              f"results: {run_dir / 'rank.json'}   plot: {run_dir / 'rank.png'}"]
    _emit({**result, "run_dir": str(run_dir)}, args.json, lines)
    return 0


# ---- retrain --------------------------------------------------------------------------------------------------
def cmd_retrain(args: argparse.Namespace) -> int:
    from nas.arch import read_yaml

    if args.top is not None:
        return _retrain_top(args)
    arch_file = args.arch
    if Path(arch_file).is_dir():
        raise NasError(f"{arch_file}: is a folder; pass its best.yaml, or add --top K to retrain its front")
    document = {} if str(arch_file).startswith("timm:") else read_yaml(arch_file)
    run_dir = Path(args.run_dir) if args.run_dir else None
    metrics, lines = _retrain_one(args, arch_file, document, run_dir)
    _emit(metrics, args.json, lines)
    return 0


def _retrain_one(args: argparse.Namespace, arch_file: str | Path, document: Any,
                 run_dir: Path | None) -> tuple[dict[str, Any], list[str]]:
    """Retrain one arch file (best.yaml, a front file, an arch YAML or timm:MODEL); returns metrics and report."""
    from nas.arch import load_arch
    from nas.data import load_data
    from nas.latency import check_runtime
    from nas.retrain import default_recipe, load_recipe, retrain, supernet_for
    from nas.runs import RUNS_ROOT

    arch = load_arch(arch_file)
    searched = isinstance(document, dict) and "arch" in document
    recorded = document.get("device", {}) if searched else {}
    provenance = document.get("provenance", {}) if searched else {}
    device_name = args.device or recorded.get("device", "cpu")
    threads = args.threads or recorded.get("threads") or 1
    runtime = args.runtime or recorded.get("runtime", "torch")
    device = _device_and_threads(argparse.Namespace(device=device_name, threads=threads))
    check_runtime(runtime)
    data = load_data(args.data or provenance.get("data"), seed=args.seed, limit_train=args.limit_train)
    if not searched:  # a reference or baseline arch: fit its classifier to the data's classes
        arch = arch.with_num_classes(data.num_classes)
    if data.num_classes != arch.num_classes:
        raise NasError(f"{arch_file}: the arch has {arch.num_classes} classes but {data.source} has "
                       f"{data.num_classes}; pass the data it was searched on with --data")
    overrides = load_recipe(args.recipe) if args.recipe else {}
    overrides.update({k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                        "init": args.init, "distill": args.distill, "seed": args.seed}.items()
                      if v is not None})
    recipe = default_recipe(data.size("train"), **overrides)
    supernet = None
    if recipe.init == "supernet" or recipe.distill:
        supernet_path = args.supernet or provenance.get("supernet")
        if not supernet_path:
            raise NasError(f"{arch_file}: --init supernet and --distill need the supernet; pass --supernet CKPT")
        supernet = supernet_for(arch, Path(supernet_path)).to(device)
    if run_dir is None:
        run_dir = (Path(arch_file).parent / "retrain" if searched
                   else RUNS_ROOT / f"retrain-{Path(str(arch_file).replace(':', '-')).stem}-{arch.arch_id}")
    budget = document.get("budget_ms") if searched else None
    same_setup = searched and runtime == recorded.get("runtime") and threads == recorded.get("threads")
    expected = (document.get("latency_ms"), document.get("latency_p90_ms")) if same_setup else (None, None)
    metrics = retrain(arch, data, run_dir, recipe, device, threads, runtime, budget, *expected, supernet=supernet,
                      source=str(arch_file), log=log)
    if metrics is None:  # a torchrun rank other than 0: rank 0 reports
        raise SystemExit(0)
    verdict = ""
    if budget is not None:
        verdict = (f" - within the {budget:g} ms budget" if metrics["within_budget"]
                   else f" - OVER the {budget:g} ms budget")
    onnx_ms = metrics["latency"]["onnxruntime"]["median_ms"]
    lines = [
        f"{'winner' if searched else 'arch'} {arch.arch_id}: test top-1 {100 * metrics['test_top1']:.1f} % "
        f"(top-5 {100 * metrics['test_top5']:.1f} %), {metrics['params']:,} params",
        f"latency {metrics['latency_ms']:.3f} ms median, {metrics['latency_p90_ms']:.3f} ms p90 on {device} "
        f"({runtime}, {threads} thread(s), batch 1){verdict}; onnxruntime {onnx_ms:.3f} ms median",
        f"{'best.yaml' if searched else 'arch'}: {arch_file}",
        f"model: {run_dir / 'model.pt'}   onnx: {run_dir / 'model.onnx'} "
        f"(max diff from torch {metrics['onnx']['max_abs_diff']:.1g})",
        f"metrics: {run_dir / 'metrics.json'}   curves: {run_dir / 'training.png'}   card: {run_dir / 'MODEL_CARD.md'}"]
    return {**metrics, "run_dir": str(run_dir), "arch_file": str(arch_file)}, lines


def _retrain_top(args: argparse.Namespace) -> int:
    """Retrain the K most accurate points of a search's re-measured front, one after another (each resumable)."""
    from nas.arch import read_yaml
    from nas.runs import write_json

    if args.top < 1:
        raise NasError("--top must be at least 1")
    search_dir = Path(args.arch) if Path(args.arch).is_dir() else Path(args.arch).parent
    front = sorted((search_dir / "front").glob("*.yaml"))
    if not front:
        raise NasError(f"{search_dir}: no front/ folder of a finished search; pass a search's run folder or its "
                       "best.yaml (searches write front/ when they finish)")
    if args.top > len(front):
        log(f"the front holds {len(front)} feasible point(s); retraining all of them")
    out = Path(args.run_dir) if args.run_dir else search_dir / "retrain-top"
    results, documents = [], [read_yaml(path) for path in front[: args.top]]
    for place, (path, document) in enumerate(zip(front, documents), 1):
        log(f"--- {place}/{len(documents)}: {path.name}")
        metrics, _ = _retrain_one(args, path, document, out / path.stem)
        results.append(metrics)
    write_json(out / "top.json", results)
    lines = [f"{'place':>5}  {'arch id':12}  {'supernet':>8}  {'test top-1':>10}  {'ms median':>9}  {'p90':>7}  "
             f"{'params':>9}"]
    for place, (document, m) in enumerate(zip(documents, results), 1):
        supernet_acc = document["val_accuracy_supernet"]
        lines.append(f"{place:5}  {m['arch_id']:12}  {supernet_acc:8.3f}  {100 * m['test_top1']:9.1f}%  "
                     f"{m['latency_ms']:9.3f}  {m['latency_p90_ms']:7.3f}  {m['params']:9,}")
    lines.append(f"results: {out / 'top.json'}; each model in {out}/<place>-<arch id>/")
    _emit({"retrained": results, "run_dir": str(out)}, args.json, lines)
    return 0


# ---- export ---------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from nas.data import load_data
    from nas.export import export_and_verify
    from nas.models import read_checkpoint

    if args.format != "onnx":
        raise NasError(f"--format {args.format}: unknown format; the only one is onnx")
    if not args.atol >= 0:
        raise NasError(f"--atol {args.atol}: must be zero or more")
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.with_name("model.onnx")
    if out.resolve() == checkpoint.resolve():
        raise NasError(f"--out {out}: that is the checkpoint itself; pass another file, e.g. model.onnx")
    model, arch = read_checkpoint(checkpoint)
    data = load_data(args.data)
    result = export_and_verify(model, arch, data, out, args.atol)
    _emit({**result, "checkpoint": str(checkpoint), "arch_id": arch.arch_id, "data": data.source}, args.json, [
        f"onnx: {out} (arch {arch.arch_id}, input 1x{arch.in_channels}x{arch.resolution}x{arch.resolution} "
        f"scaled to [-1, 1])",
        f"verified on {result['images']} test images of {data.source}: onnxruntime vs torch max abs difference "
        f"{result['max_abs_diff']:.3g} <= atol {args.atol:g}: ok"])
    return 0


# ---- describe / measure ---------------------------------------------------------------------------------------
def cmd_describe(args: argparse.Namespace) -> int:
    from nas.arch import load_arch
    from nas.complexity import count_macs, count_params
    from nas.space import load_space
    from supernet.network import build

    arch = load_arch(args.arch)
    if args.resolution is not None:
        arch = arch.at_resolution(args.resolution, f"{args.arch} at --resolution {args.resolution}")
    model = build(arch)
    result: dict[str, Any] = {
        "arch_id": arch.arch_id, "name": arch.name, "params": count_params(model),
        "macs": count_macs(model, (1, arch.in_channels, arch.resolution, arch.resolution)),
        "resolution": arch.resolution, "arch": arch.to_dict()}
    if args.space:
        result["member"] = load_space(args.space).contains(arch)
    lines = [f"arch {arch.arch_id}{' (' + arch.name + ')' if arch.name else ''}: {result['params']:,} params, "
             f"{result['macs'] / 1e6:.2f} M MACs at {arch.resolution}x{arch.resolution}x{arch.in_channels}"]
    if arch.timm_model:
        lines.append(f"timm model {arch.timm_model} (a baseline), {arch.num_classes} classes")
    else:
        stages = ", ".join(f"{s.family}x{s.depth}@{s.width}" for s in arch.stages)
        tokens = f", {arch.global_tokens} global tokens" if arch.global_tokens else ""
        lines.append(f"stem {arch.stem_type} {arch.stem_width}/{arch.stem_stride}, stages {stages}, "
                     f"head {arch.head_type} {arch.head_width or ''}{tokens}, {arch.num_classes} classes")
    if "member" in result:
        lines.append(f"member of {args.space}: {'yes' if result['member'] else 'no'}")
    _emit(result, args.json, lines)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from nas.arch import load_arch
    from nas.latency import CAREFUL, LatencyCache, check_runtime, measure_arch

    check_runtime(args.runtime)
    if args.batch < 1 or args.runs < 5:
        raise NasError("--batch must be at least 1 and --runs at least 5")
    device = _device_and_threads(args)
    arch = load_arch(args.arch)
    record = measure_arch(arch, device, args.runtime, args.threads, args.batch, cache=LatencyCache(), refresh=True,
                          runs=args.runs, **CAREFUL)
    _emit({"arch_id": arch.arch_id, **record.to_dict()}, args.json, [
        f"arch {arch.arch_id}: {record.median_ms:.3f} ms median, {record.p90_ms:.3f} ms p90 "
        f"({record.runs} runs, batch {record.batch}, {record.device_name}, {record.threads} thread(s), "
        f"{record.runtime} {record.runtime_version})"])
    return 0


# ---- latency fit ----------------------------------------------------------------------------------------------
def cmd_latency_fit(args: argparse.Namespace) -> int:
    import shutil

    from tqdm import tqdm

    from nas.export import export_archs
    from nas.latency import LatencyCache, check_runtime, fingerprint, measure_interleaved
    from nas.latency.predictor import STEADY, arch_features, fit_predictor, halves_agreement, sample_archs
    from nas.report import plot_predictor
    from nas.runs import RUNS_ROOT
    from nas.space import load_space

    device = _device_and_threads(args)
    check_runtime(args.runtime)
    if args.samples < 10 or not 0 < args.holdout < 1 or args.rounds < 2:
        raise NasError("--samples must be at least 10, --holdout between 0 and 1 and --rounds at least 2")
    space = load_space(args.space)
    device_id = fingerprint(device, args.runtime, args.threads)["id"]
    default_out = RUNS_ROOT / f"latency-{space.name}-{args.runtime}-{device_id}" / "predictor.json"
    out = Path(args.out) if args.out else default_out
    archs = sample_archs(space, args.samples, args.seed)
    # kept until the fit is done, so that a killed fit does not export again
    exports = out.with_name(f"{out.stem}-onnx") if args.runtime == "onnxruntime" else None
    if exports is not None:  # every export first, on every core, before any timing
        with tqdm(total=len(archs), desc="exporting to ONNX", unit="sub-network", disable=None) as bar:
            export_archs(archs, exports, progress=bar.update)
    with tqdm(total=len(archs) * args.rounds, desc=f"measuring on {device} ({args.runtime})", unit="block",
              disable=None) as bar:
        records = measure_interleaved(archs, device, args.runtime, args.threads, rounds=args.rounds,
                                      cache=LatencyCache(), onnx_folder=exports, progress=bar.update)
    if exports is not None:
        shutil.rmtree(exports, ignore_errors=True)
    features = [arch_features(arch) for arch in archs]
    predictor = fit_predictor(features, records, args.holdout, args.seed)
    agreement = halves_agreement(records)
    predictor.metrics["halves_within_10pct"] = agreement
    steadiness = [f"measurements: odd and even rounds within 10 % of each other for {100 * agreement:.0f} % of the "
                  f"sub-networks" + ("" if agreement >= STEADY else "; this device's timings are unsteady (other "
                                     "work on it?) and no predictor can be more accurate than they are: fit "
                                     "again when it is quiet, or with more --rounds")]
    predictor.save(out)
    plot_predictor(features, records, predictor, out.with_suffix(".png"))
    m = predictor.metrics
    _emit({"predictor": str(out), "fingerprint": predictor.fingerprint, **m}, args.json, [
        f"latency predictor for {space.name} on {records[0].device_name} ({args.runtime}, {args.threads} thread(s)): "
        f"{out}",
        f"held-out ({m['n']} sub-networks): RMSE {m['rmse_ms']:.3f} ms, MAPE {100 * m['mape']:.1f} %, "
        f"{100 * m['within_5pct']:.0f} % within 5 %, {100 * m['within_10pct']:.0f} % within 10 %, "
        f"Spearman {m['spearman']:.3f}", *steadiness,
        f"use it: nas search --space {args.space} --predictor {out} --runtime {args.runtime} ..."])
    return 0


# ---- parser ---------------------------------------------------------------------------------------------------
def _command(sub: Any, name: str, handler: Callable, summary: str, example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def _group(sub: Any, name: str, summary: str, example: str, dest: str) -> Any:
    """A command with subcommands (`nas latency fit`), its help ending in an example like every command's."""
    parser = sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.add_subparsers(dest=dest, required=True, metavar="SUBCOMMAND")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="an .npz file or an image folder (default: the embedded Fashion-MNIST subset)")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data order, sampling and initialisation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas", description="Hardware-aware architecture search for lightweight hybrid CNN/ViT backbones.",
        epilog=MAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = _command(sub, "search", cmd_search, "search a space for the most accurate sub-network under a latency "
                      "budget measured on the device",
                      "nas search --space search_spaces/cpu_small.yaml --latency-budget 5ms --device cpu\n"
                      "  nas search --space search_spaces/cpu_small.yaml --latency-budget 4ms --backend ray "
                      "--workers 2\n"
                      "  nas search --resume runs/quickstart")
    search.add_argument("--space", help="search-space YAML")
    search.add_argument("--latency-budget", help="e.g. 5ms, 800us, 0.005s (checked on the p90)")
    search.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    search.add_argument("--runtime", help="what latency is measured with: torch (default), torch-compile or "
                        "onnxruntime")
    search.add_argument("--threads", type=int, help="CPU threads when timing (default: 1)")
    search.add_argument("--trials", type=int, help="trials in total, resumed ones included (default: 40)")
    search.add_argument("--sampler", help="nsga2 (default), tpe or random")
    search.add_argument("--max-params", type=int, help="also constrain the parameter count")
    search.add_argument("--max-macs", type=int, help="also constrain the MACs at the arch's resolution")
    search.add_argument("--predictor", help="a latency predictor from `nas latency fit` to screen candidates "
                        "(those near the budget, and the Pareto front, are still measured)")
    search.add_argument("--supernet", help="a trained supernet checkpoint (default: train one in the run folder)")
    search.add_argument("--epochs", type=int, help="supernet training epochs when training (default: 6)")
    search.add_argument("--backend", help="optuna (default: trials in this process) or ray (Ray Tune workers)")
    search.add_argument("--workers", type=int, help="concurrent trials with --backend ray (default: 1)")
    search.add_argument("--address", help="with --backend ray: join this Ray cluster (auto or HOST:PORT) instead "
                        "of starting one on this machine")
    search.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user:pw@host/db (default: a "
                        "journal file in the run folder)")
    search.add_argument("--run-dir", help="output folder; run again with the same one to resume "
                        "(default: runs/search-SPACE-BUDGET-DEVICE-RUNTIME)")
    search.add_argument("--resume", metavar="RUN", help="continue the search in RUN with its saved settings")
    search.add_argument("--config", help="take the settings from a run's config.yaml (options given here win)")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    search.add_argument("--data", help="an .npz file or an image folder (default: the embedded Fashion-MNIST subset)")
    search.add_argument("--limit-train", type=int, help="use only the first N training images (smoke tests)")
    search.add_argument("--seed", type=int, help="seed for data order, sampling and initialisation (default: 0)")

    dashboard = _command(sub, "dashboard", cmd_dashboard, "serve optuna-dashboard for a search (on 127.0.0.1)",
                         "nas dashboard runs/quickstart --port 8080")
    dashboard.add_argument("run", help="a search's run folder")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to bind (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")

    retrain = _command(sub, "retrain", cmd_retrain, "train a searched (or any) architecture standalone with a full "
                       "recipe, then report test accuracy, export and verify ONNX, measure latency (torch and ONNX "
                       "Runtime) and write a model card; re-run to resume; under torchrun, on several processes",
                       "nas retrain runs/quickstart/best.yaml --epochs 30 --init supernet --distill 0.5")
    retrain.add_argument("arch", help="best.yaml from a search, an arch YAML or timm:MODEL (a baseline; its "
                                      "classifier is fitted to the data's classes); with --top, a search's folder "
                                      "or best.yaml")
    retrain.add_argument("--top", type=int, metavar="K", help="retrain the K most accurate points of the search's "
                         "re-measured Pareto front (into RUN/retrain-top/)")
    retrain.add_argument("--run-dir", help="output folder (default: retrain/ beside best.yaml); re-run to resume")
    retrain.add_argument("--recipe", help="a recipe YAML (any of the settings in a run's recipe.yaml); options "
                         "given here win; defaults scale with the data's size")
    retrain.add_argument("--epochs", type=int, help="training epochs (default: 15 for under 20k training images)")
    retrain.add_argument("--batch-size", type=int, help="batch size (default: 128)")
    retrain.add_argument("--lr", type=float, help="peak learning rate (default: 0.003)")
    retrain.add_argument("--init", choices=("scratch", "supernet"), help="start from random weights (default) or "
                         "from the weights the supernet holds for the arch")
    retrain.add_argument("--distill", type=float, metavar="WEIGHT", help="also learn from the supernet's largest "
                         "member, with this weight (0-1) on the distillation loss (default: 0, off)")
    retrain.add_argument("--supernet", help="supernet checkpoint for --init supernet and --distill (default: the "
                         "one best.yaml names)")
    retrain.add_argument("--device", help="cpu, cuda or cuda:N (default: the search's device)")
    retrain.add_argument("--threads", type=int, help="CPU threads when timing (default: the search's)")
    retrain.add_argument("--runtime", help="torch, torch-compile or onnxruntime: the runtime checked against the "
                         "budget (default: the search's); torch and onnxruntime are always measured")
    retrain.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _data_options(retrain)

    export = _command(sub, "export", cmd_export, "export a retrained model to ONNX and check it against torch on "
                      "test images (the file is kept only if they agree)",
                      "nas export runs/quickstart/retrain/model.pt --format onnx --out runs/quickstart/model.onnx")
    export.add_argument("checkpoint", help="model.pt (or checkpoint.pt) from `nas retrain`")
    export.add_argument("--format", default="onnx", help="export format; onnx (the default) is the only one")
    export.add_argument("--out", help="output file (default: model.onnx beside the checkpoint)")
    export.add_argument("--atol", type=float, default=1e-4,
                        help="largest absolute logit difference accepted between onnxruntime and torch "
                             "(default: 1e-4)")
    export.add_argument("--data", help="an .npz file or an image folder whose test images the export is checked "
                                       "on (default: the embedded Fashion-MNIST subset)")
    export.add_argument("--json", action="store_true", help="print the result as JSON")

    describe = _command(sub, "describe", cmd_describe, "print an architecture's id, parameters and MACs",
                        "nas describe runs/quickstart/best.yaml --space search_spaces/cpu_small.yaml --json")
    describe.add_argument("arch", help="best.yaml, an arch YAML (e.g. search_spaces/reference/lightvit_t.yaml) "
                                       "or timm:MODEL (a timm baseline, e.g. timm:mobilevit_xs)")
    describe.add_argument("--resolution", type=int, help="count MACs at this input size instead of the arch's")
    describe.add_argument("--space", help="also report whether the arch is a member of this space")
    describe.add_argument("--json", action="store_true", help="print as JSON")

    measure = _command(sub, "measure", cmd_measure, "measure an architecture's latency on a device",
                       "nas measure runs/quickstart/best.yaml --device cpu --threads 1 --json")
    measure.add_argument("arch", help="best.yaml, an arch YAML or timm:MODEL")
    measure.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    measure.add_argument("--runtime", default="torch", help="torch (default), torch-compile or onnxruntime")
    measure.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    measure.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    measure.add_argument("--runs", type=int, default=50, help="timed runs after warm-up (default: 50)")
    measure.add_argument("--json", action="store_true", help="print as JSON")

    latency_sub = _group(sub, "latency", "latency predictor commands",
                         "nas latency fit --space search_spaces/cpu_small.yaml --device cpu", "latency_command")
    fit = _command(latency_sub, "fit", cmd_latency_fit, "measure sampled sub-networks on this device and fit a "
                   "latency predictor; reports its accuracy on held-out ones",
                   "nas latency fit --space search_spaces/cpu_small.yaml --device cpu --runtime onnxruntime "
                   "--samples 150")
    fit.add_argument("--space", required=True, help="search-space YAML")
    fit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    fit.add_argument("--runtime", default="torch", help="torch (default), torch-compile or onnxruntime")
    fit.add_argument("--threads", type=int, default=1, help="CPU threads when timing (default: 1)")
    fit.add_argument("--samples", type=int, default=150, help="sub-networks to measure (default: 150)")
    fit.add_argument("--holdout", type=float, default=0.3, help="share held out to report accuracy (default: 0.3)")
    fit.add_argument("--rounds", type=int, default=24,
                     help="rounds over the sample, one short timed block of every sub-network each, in a new order "
                          "each round: the machine's slow spells then slow every sub-network alike (default: 24)")
    fit.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    fit.add_argument("--out", help="predictor file (default: runs/latency-SPACE-RUNTIME-FINGERPRINT/predictor.json)")
    fit.add_argument("--json", action="store_true", help="print the accuracy figures as JSON")

    supernet_sub = _group(sub, "supernet", "supernet commands",
                          "nas supernet train --space search_spaces/cpu_small.yaml", "supernet_command")
    train = _command(supernet_sub, "train", cmd_supernet_train, "train a weight-sharing supernet (sandwich rule, "
                     "in-place distillation); re-run to resume, to the step; under torchrun, on several processes "
                     "(torchrun --nproc_per_node=N -m nas supernet train ...)",
                     "nas supernet train --space search_spaces/cpu_small.yaml --run-dir runs/supernet-small --epochs 6")
    train.add_argument("--space", required=True, help="search-space YAML")
    train.add_argument("--run-dir", help="output folder (default: runs/supernet-SPACE)")
    train.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    train.add_argument("--batch-size", type=int, default=128,
                       help="images per step, split across the processes under torchrun (default: 128)")
    train.add_argument("--distill", choices=("kl", "alpha"), default="kl",
                       help="distillation loss of the smaller members: kl, or alpha for AlphaNet's adaptive "
                            "alpha-divergence (default: kl)")
    train.add_argument("--checkpoint-every", type=int, default=20,
                       help="optimiser steps between checkpoints, besides one each epoch (default: 20)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    train.add_argument("--json", action="store_true", help="print the result as JSON")
    _data_options(train)
    rank = _command(supernet_sub, "rank", cmd_supernet_rank, "measure how well a trained supernet ranks its "
                    "sub-networks: inherited against standalone-trained accuracy (Kendall tau, Spearman rho); "
                    "re-run to resume",
                    "nas supernet rank --space search_spaces/cpu_small.yaml --supernet runs/supernet-small/supernet.pt "
                    "--subnets 10 --epochs 3")
    rank.add_argument("--space", required=True, help="search-space YAML the supernet was trained for")
    rank.add_argument("--supernet", required=True, help="supernet checkpoint from `nas supernet train`")
    rank.add_argument("--subnets", type=int, default=10, help="sub-networks, stratified over MACs (default: 10)")
    rank.add_argument("--epochs", type=int, default=3, help="standalone training epochs per sub-network (default: 3)")
    rank.add_argument("--run-dir", help="output folder (default: rank/ beside the supernet checkpoint)")
    rank.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    rank.add_argument("--json", action="store_true", help="print the result as JSON")
    _data_options(rank)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except NasError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
