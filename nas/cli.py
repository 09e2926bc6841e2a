"""The `nas` command line: search, retrain, export, describe, measure, supernet train."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from nas.errors import NasError, error_line
from nas.options import (ADAPT_HELP, ADAPT_STEPS, BATCH, DATA_WORKERS, EPOCHS, IMAGES, PORT, RESCORE_STEPS,
                         RESCORE_TOP, RESOLUTION, SEED, THREADS, WORKERS, OneLineParser, integer, number)

MAIN_EXAMPLES = """examples:
  nas search --space search_spaces/hybrid_cpu.yaml --latency-budget 5ms --device cpu --run-dir runs/quickstart
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
    return resolve_device(args.device)  # --threads is bounded by its type


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    print(json.dumps(result, indent=2) if as_json else "\n".join(lines))


def cmd_search(args: argparse.Namespace) -> int:
    from nas.search.run import search, search_lines
    from nas.search.study import search_settings

    run_dir = args.resume or args.run_dir
    result = search(search_settings(vars(args), args.resume, args.config), Path(run_dir) if run_dir else None, log)
    _emit(result, args.json, search_lines(result))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from nas.search.dashboard import serve_dashboard

    serve_dashboard(Path(args.run), args.host, args.port, log)
    return 0


def cmd_supernet_train(args: argparse.Namespace) -> int:
    from nas.supernet_training import train_config, train_supernet_run

    device = _device_and_threads(args)
    config = train_config(args.recipe, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                          distill=args.distill, checkpoint_every=args.checkpoint_every)
    result = train_supernet_run(args.space, config, device, args.data, args.limit_train,
                                Path(args.run_dir) if args.run_dir else None, log, args.data_workers)
    if result is not None:  # None on torchrun's ranks other than 0: rank 0 reports
        last = result["history"][-1]
        _emit(result, args.json, [f"supernet checkpoint: {result['checkpoint']}", f"largest member val accuracy "
                                  f"{last['val_acc_largest']:.3f}, smallest {last['val_acc_smallest']:.3f}",
                                  f"next: nas search --space {args.space} --supernet {result['checkpoint']} "
                                  f"--latency-budget 4ms --device {device}"])
    return 0


def cmd_supernet_rank(args: argparse.Namespace) -> int:
    from nas.rank import rank_lines, rank_supernet_file

    result = rank_supernet_file(args.space, Path(args.supernet), args.subnets, args.epochs, _device_and_threads(args),
                                args.data, args.seed, args.limit_train, Path(args.run_dir) if args.run_dir else None,
                                log, args.data_workers, args.seeds, args.adapt_steps,
                                Path(args.standalone_from) if args.standalone_from else None, args.standalone)
    _emit(result, args.json, rank_lines(result))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from nas.retrain_runs import RetrainOptions, retrain_file, retrain_top, retrained_lines, top_lines

    options = RetrainOptions(**{f.name: getattr(args, f.name) for f in fields(RetrainOptions)})
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.top is not None:
        top = retrain_top(args.arch, args.top, options, run_dir, log)
        if top is not None:  # None on torchrun's ranks other than 0: rank 0 reports
            _emit(top.to_dict(), args.json, top_lines(top))
        return 0
    result = retrain_file(args.arch, options, run_dir, log)
    if result is not None:
        _emit(result.to_dict(), args.json, retrained_lines(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nas.export import export_checkpoint, export_lines

    if args.format != "onnx":
        raise NasError(f"--format {args.format}: unknown format; the only one is onnx")
    result = export_checkpoint(Path(args.checkpoint), Path(args.out) if args.out else None, args.atol, args.data)
    _emit(result, args.json, export_lines(result))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from nas.arch import load_arch
    from nas.complexity import describe_arch, describe_lines
    from nas.space import load_space

    arch = load_arch(args.arch)
    if args.resolution is not None:
        arch = arch.at_resolution(args.resolution, f"{args.arch} at --resolution {args.resolution}")
    result = describe_arch(arch, load_space(args.space) if args.space else None)
    _emit(result, args.json, describe_lines(arch, result, args.space))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from nas.latency import measure_arch_file

    arch, record = measure_arch_file(args.arch, _device_and_threads(args), args.runtime, args.threads, args.batch,
                                     args.runs)
    _emit({"arch_id": arch.arch_id, **record.to_dict()}, args.json, [f"arch {arch.arch_id}: {record.summary()}"])
    return 0


def cmd_latency_fit(args: argparse.Namespace) -> int:
    from nas.latency.fit import fit_latency, fit_lines
    from nas.space import load_space

    device = _device_and_threads(args)
    result = fit_latency(load_space(args.space), device, args.runtime, args.threads, args.samples, args.holdout,
                         args.rounds, args.seed, Path(args.out) if args.out else None)
    _emit(result, args.json, fit_lines(result, args.space, args.runtime, args.threads))
    return 0


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


def _data_options(parser: argparse.ArgumentParser, seed: int | None = 0) -> None:
    """--data, --limit-train and --seed (default `seed`; None where a saved config may supply it)."""
    parser.add_argument("--data", help="an .npz file or an image folder (default: the embedded Fashion-MNIST subset)")
    parser.add_argument("--limit-train", type=IMAGES, help="use only N training images (smoke tests)")
    parser.add_argument("--seed", type=SEED, default=seed, help="seed for data order, sampling and initialisation "
                        "(default: 0)")
    parser.add_argument("--data-workers", type=DATA_WORKERS, metavar="N", help="loader processes decoding image files "
                        "(default: the free cores, at most 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nas", description="Hardware-aware architecture search for lightweight hybrid CNN/ViT backbones.",
        epilog=MAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = _command(sub, "search", cmd_search, "search a space for the most accurate sub-network under a latency "
                      "budget measured on the device",
                      "nas search --space search_spaces/hybrid_cpu.yaml --latency-budget 5ms --device cpu\n"
                      "  nas search --space search_spaces/cpu_small.yaml --latency-budget 4ms --backend ray "
                      "--workers 2\n"
                      "  nas search --resume runs/quickstart\n"
                      "  nas search --resume runs/quickstart --rescore-top 8   # re-rank its 8 best by short training")
    search.add_argument("--space", help="search-space YAML")
    search.add_argument("--latency-budget", help="e.g. 5ms, 800us, 0.005s (checked on the p90)")
    search.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    search.add_argument("--runtime", help="what latency is measured with: torch (default), torch-compile or "
                        "onnxruntime")
    search.add_argument("--threads", type=THREADS, help="CPU threads when timing (default: 1)")
    search.add_argument("--trials", type=integer(1, 100_000), help="trials in all, resumed included (default: 40)")
    search.add_argument("--sampler", help="nsga2 (default), tpe or random")
    search.add_argument("--max-params", type=integer(1, 10**12), help="also constrain the parameter count")
    search.add_argument("--max-macs", type=integer(1, 10**15), help="also constrain the MACs at the arch's resolution")
    search.add_argument("--predictor", help="a latency predictor from `nas latency fit` to screen candidates "
                        "(those near the budget, and the Pareto front, are still measured)")
    search.add_argument("--supernet", help="a trained supernet checkpoint (default: train one in the run folder)")
    search.add_argument("--epochs", type=EPOCHS, help="supernet training epochs when training (default: 6)")
    search.add_argument("--adapt-steps", type=ADAPT_STEPS, help=ADAPT_HELP)
    search.add_argument("--rescore-top", type=RESCORE_TOP, metavar="K", help="after the trials, train the K most "
                        "accurate feasible ones from scratch for --rescore-steps batches each and pick the winner "
                        "by that score, which ranked members closer to full training than the supernet on hybrid_cpu "
                        "(default: 0, off)")
    search.add_argument("--rescore-steps", type=RESCORE_STEPS, metavar="N", help="training batches of each "
                        "re-scored member (default: 60)")
    search.add_argument("--backend", help="optuna (default: trials in this process) or ray (Ray Tune workers)")
    search.add_argument("--workers", type=WORKERS, help="concurrent trials with --backend ray (default: 1)")
    search.add_argument("--address", help="with --backend ray: join this Ray cluster (auto or HOST:PORT) instead "
                        "of starting one on this machine")
    search.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user:pw@host/db (default: a "
                        "journal file in the run folder)")
    search.add_argument("--run-dir", help="output folder; run again with the same one to resume "
                        "(default: runs/search-SPACE-BUDGET-DEVICE-RUNTIME)")
    search.add_argument("--resume", metavar="RUN", help="continue the search in RUN with its saved settings")
    search.add_argument("--config", help="take the settings from a run's config.yaml (options given here win)")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    _data_options(search, seed=None)

    dashboard = _command(sub, "dashboard", cmd_dashboard, "serve optuna-dashboard for a search (on 127.0.0.1)",
                         "nas dashboard runs/quickstart --port 8080")
    dashboard.add_argument("run", help="a search's run folder")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to bind (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=PORT, default=8080, help="port (default: 8080)")

    retrain = _command(sub, "retrain", cmd_retrain, "train a searched (or any) architecture standalone with a full "
                       "recipe, then report test accuracy, export and verify ONNX, measure latency (torch and ONNX "
                       "Runtime) and write a model card; re-run to resume; under torchrun, on several processes",
                       "nas retrain runs/quickstart/best.yaml --epochs 30 --init supernet --distill 0.5")
    retrain.add_argument("arch", help="best.yaml from a search, an arch YAML or timm:MODEL (a baseline; its "
                                      "classifier is fitted to the data's classes); with --top, a search's folder "
                                      "or best.yaml")
    retrain.add_argument("--top", type=integer(1, 1000), metavar="K", help="retrain the K most accurate points "
                         "of the search's re-measured Pareto front, or of its re-scored shortlist after "
                         "--rescore-top (into RUN/retrain-top/)")
    retrain.add_argument("--run-dir", help="output folder (default: retrain/ beside best.yaml); re-run to resume")
    retrain.add_argument("--recipe", help="a recipe YAML (any of the settings in a run's recipe.yaml); options "
                         "given here win; defaults scale with the data's size")
    retrain.add_argument("--epochs", type=EPOCHS, help="training epochs (default: 15 for under 20k training images)")
    retrain.add_argument("--batch-size", type=BATCH, help="batch size (default: 128)")
    retrain.add_argument("--lr", type=number(0, 10, low_open=True), help="peak learning rate (default: 0.003)")
    retrain.add_argument("--init", choices=("scratch", "supernet"), help="start from random weights (default) or "
                         "from the weights the supernet holds for the arch")
    retrain.add_argument("--distill", type=number(0, 1), metavar="WEIGHT", help="also learn from the supernet's "
                         "largest member, with this weight (0-1) on the distillation loss (default: 0, off)")
    retrain.add_argument("--supernet", help="supernet checkpoint for --init supernet and --distill (default: the "
                         "one best.yaml names)")
    retrain.add_argument("--device", help="cpu, cuda or cuda:N (default: the search's device)")
    retrain.add_argument("--threads", type=THREADS, help="CPU threads when timing (default: the search's)")
    retrain.add_argument("--runtime", help="torch, torch-compile or onnxruntime: the runtime checked against the "
                         "budget (default: the search's); torch and onnxruntime are always measured")
    retrain.add_argument("--compile", action="store_true", help="train through torch.compile (faster on a GPU)")
    retrain.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _data_options(retrain)

    export = _command(sub, "export", cmd_export, "export a retrained model to ONNX and check it against torch on "
                      "test images (the file is kept only if they agree)",
                      "nas export runs/quickstart/retrain/model.pt --format onnx --out runs/quickstart/model.onnx")
    export.add_argument("checkpoint", help="model.pt (or checkpoint.pt) from `nas retrain`")
    export.add_argument("--format", default="onnx", help="export format; onnx (the default) is the only one")
    export.add_argument("--out", help="output file (default: model.onnx beside the checkpoint)")
    export.add_argument("--atol", type=number(0, 1000), default=1e-4,
                        help="largest absolute logit difference accepted between onnxruntime and torch (default: 1e-4)")
    export.add_argument("--data", help="an .npz file or an image folder whose test images the export is checked "
                                       "on (default: the embedded Fashion-MNIST subset)")
    export.add_argument("--json", action="store_true", help="print the result as JSON")

    describe = _command(sub, "describe", cmd_describe, "print an architecture's id, parameters and MACs",
                        "nas describe runs/quickstart/best.yaml --space search_spaces/hybrid_cpu.yaml --json")
    describe.add_argument("arch", help="best.yaml, an arch YAML (e.g. search_spaces/reference/lightvit_t.yaml) "
                                       "or timm:MODEL (a timm baseline, e.g. timm:mobilevit_xs)")
    describe.add_argument("--resolution", type=RESOLUTION, help="count MACs at this input size instead of the arch's")
    describe.add_argument("--space", help="also report whether the arch is a member of this space")
    describe.add_argument("--json", action="store_true", help="print as JSON")

    measure = _command(sub, "measure", cmd_measure, "measure an architecture's latency on a device",
                       "nas measure runs/quickstart/best.yaml --device cpu --threads 1 --json")
    measure.add_argument("arch", help="best.yaml, an arch YAML or timm:MODEL")
    measure.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    measure.add_argument("--runtime", default="torch", help="torch (default), torch-compile or onnxruntime")
    measure.add_argument("--threads", type=THREADS, default=1, help="CPU threads (default: 1)")
    measure.add_argument("--batch", type=integer(1, 4096), default=1, help="batch size (default: 1)")
    measure.add_argument("--runs", type=integer(5, 100_000), default=50, help="timed runs after warm-up (default: 50)")
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
    fit.add_argument("--threads", type=THREADS, default=1, help="CPU threads when timing (default: 1)")
    fit.add_argument("--samples", type=integer(10, 100_000), default=150, help="sub-networks to measure (default: 150)")
    fit.add_argument("--holdout", type=number(0.05, 0.9), default=0.3, help="share held out to score it (default: 0.3)")
    fit.add_argument("--rounds", type=integer(2, 1000), default=24,
                     help="rounds over the sample, one short timed block of every sub-network each, in a new order "
                          "each round: the machine's slow spells then slow every sub-network alike (default: 24)")
    fit.add_argument("--seed", type=SEED, default=0, help="sampling seed (default: 0)")
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
    train.add_argument("--recipe", help="a recipe YAML of training settings (lr, weight_decay, warmup_epochs, "
                       "random_subnets, sandwich, label_smoothing, ...); the options here override it")
    train.add_argument("--epochs", type=EPOCHS, help="training epochs (default: 6)")
    train.add_argument("--batch-size", type=BATCH,
                       help="images per step, split across the processes under torchrun (default: 128)")
    train.add_argument("--distill", choices=("kl", "alpha", "none"),
                       help="distillation loss of the smaller members: kl, alpha for AlphaNet's adaptive "
                            "alpha-divergence, or none (they learn from the labels too) (default: kl)")
    train.add_argument("--checkpoint-every", type=integer(1, 10**9),
                       help="optimiser steps between checkpoints, besides one each epoch (default: 20)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    train.add_argument("--json", action="store_true", help="print the result as JSON")
    _data_options(train, seed=None)
    rank = _command(supernet_sub, "rank", cmd_supernet_rank, "measure how well a trained supernet ranks its "
                    "sub-networks: inherited against standalone-trained accuracy (Kendall tau, Spearman rho); "
                    "re-run to resume",
                    "nas supernet rank --space search_spaces/cpu_small.yaml --supernet runs/supernet-small/supernet.pt "
                    "--subnets 10 --epochs 3")
    rank.add_argument("--space", required=True, help="search-space YAML the supernet was trained for")
    rank.add_argument("--supernet", required=True, help="supernet checkpoint from `nas supernet train`")
    rank.add_argument("--subnets", type=integer(3, 10_000), default=10, help="sub-networks, by MACs (default: 10)")
    rank.add_argument("--standalone", choices=("plain", "retrain"), default="plain",
                      help="how each sub-network is trained standalone: plain (shifts, flips, label smoothing) or "
                      "retrain (what `nas retrain` gives a winner on this data: its epochs and regularisers) "
                      "(default: plain)")
    rank.add_argument("--epochs", type=EPOCHS, help="standalone epochs per sub-network (default: 3 with --standalone "
                      "plain, the retrain recipe's with retrain)")
    rank.add_argument("--seeds", type=integer(1, 5), default=2, help="standalone trainings per sub-network, averaged; "
                      "the first two's agreement is the noise floor (default: 2)")
    rank.add_argument("--adapt-steps", type=ADAPT_STEPS, default=0, help=ADAPT_HELP)
    rank.add_argument("--standalone-from", metavar="RUN", help="reuse the standalone accuracies of an earlier "
                      "ranking folder with the same space, data, --subnets, --epochs, --seeds and --seed")
    rank.add_argument("--run-dir", help="output folder (default: rank/ beside the supernet checkpoint)")
    rank.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    rank.add_argument("--json", action="store_true", help="print the result as JSON")
    _data_options(rank)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0), or a bad option already reported in one line (2)
        return int(done.code or 0)
    try:
        return args.handler(args)
    except (NasError, OSError, RecursionError) as error:  # also a path the file system refuses, or deep input
        print(f"nas: error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
