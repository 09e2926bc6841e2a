"""How well a supernet ranks its sub-networks on the embedded data (CPU): Kendall tau, Spearman rho, wall time.

    .venv/bin/python bench/rank.py                          # cpu_small: train a supernet (6 epochs), rank 10
    .venv/bin/python bench/rank.py --space search_spaces/hybrid_cpu.yaml --epochs 25 --rank-epochs 12   # ~55 min
    .venv/bin/python bench/rank.py --supernet runs/supernet-small/supernet.pt --subnets 16 --rank-epochs 5
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir /tmp/r --rank-epochs 12 --second-seed  # + noise ceiling

Trains a supernet (unless --supernet is given), then ranks it as `nas supernet rank` does: sub-networks stratified
over MACs, each evaluated with the supernet's weights and trained standalone for --rank-epochs epochs. Prints the rank
correlations with their bootstrap 95 % intervals and the wall time of each stage. Takes tens of minutes with the
defaults. --run-dir resumes (or reuses) a ranking folder. --second-seed trains every sub-network once more with
another seed and prints Kendall tau between the two standalone runs: how far standalone accuracy on this data
agrees with itself, which bounds the tau any supernet can reach against it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(space_path: str, run_dir: Path, epochs: int, seed: int, limit_train: int | None) -> Path:
    """What `nas supernet train --space SPACE --run-dir RUN --epochs N --seed S [--limit-train N]` does, with that
    command's defaults (batch 128, kl distillation, a checkpoint every 20 steps, cpu); returns the checkpoint."""
    from nas.latency import resolve_device
    from nas.supernet_training import TrainConfig, train_supernet_run

    config = TrainConfig(epochs=epochs, batch_size=128, seed=seed, distill="kl", checkpoint_every=20)
    result = train_supernet_run(space_path, config, resolve_device("cpu"), None, limit_train, run_dir, log)
    last = result["history"][-1]
    print(f"supernet checkpoint: {result['checkpoint']}\nlargest member val accuracy {last['val_acc_largest']:.3f}, "
          f"smallest {last['val_acc_smallest']:.3f}")
    return Path(result["checkpoint"])


def rank(space_path: str, supernet_path: Path, rank_dir: Path, subnets: int, epochs: int, seed: int,
         limit_train: int | None) -> dict:
    """What `nas supernet rank --space SPACE --supernet S --subnets N --epochs E --run-dir RUN --seed S
    [--limit-train N]` does on the cpu, its table printed; returns rank.json's content (with run_dir)."""
    from nas.latency import resolve_device
    from nas.rank import rank_lines, rank_supernet_file

    result = rank_supernet_file(space_path, supernet_path, subnets, epochs, resolve_device("cpu"), None, seed,
                                limit_train, rank_dir, log)
    print("\n".join(rank_lines(result)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    parser.add_argument("--supernet", help="a trained supernet checkpoint (default: train one)")
    parser.add_argument("--epochs", type=int, default=6, help="supernet training epochs when training")
    parser.add_argument("--subnets", type=int, default=10)
    parser.add_argument("--rank-epochs", type=int, default=3, help="standalone epochs per sub-network")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", help="the ranking folder (default: a new temporary one); resumed if it exists")
    parser.add_argument("--second-seed", action="store_true",
                        help="also train each sub-network with seed + 1: the standalone accuracy's own rank agreement")
    args = parser.parse_args()

    from nas.errors import NasError

    work = Path(tempfile.mkdtemp(prefix="nas-bench-rank-"))
    os.environ["NAS_CACHE_DIR"] = str(work / "cache")
    began = time.perf_counter()
    supernet = Path(args.supernet) if args.supernet else None
    if supernet is None:
        try:
            supernet = train(args.space, work / "supernet", args.epochs, args.seed, args.limit_train)
        except NasError as error:
            raise SystemExit(f"supernet training failed: {error}")
    trained = time.perf_counter()
    rank_dir = Path(args.run_dir) if args.run_dir else work / "rank"
    try:
        rank(args.space, supernet, rank_dir, args.subnets, args.rank_epochs, args.seed, args.limit_train)
    except NasError as error:
        raise SystemExit(f"ranking failed: {error}")
    ranked = time.perf_counter()
    result = json.loads((rank_dir / "rank.json").read_text())

    from nas.rank import describe_statistic, kendall_tau_b

    print(f"\nsupernet ranking on {Path(args.space).name}: {args.subnets} sub-networks stratified over MACs, "
          f"{args.rank_epochs} standalone epoch(s) each")
    print(f"  Kendall tau-b     : {describe_statistic(result['kendall_tau'])}")
    print(f"  Spearman rho      : {describe_statistic(result['spearman_rho'])}")
    macs = [r["macs"] for r in result["subnets"]]
    for name in ("inherited", "standalone"):  # which side follows capacity
        tau = kendall_tau_b([r[name] for r in result["subnets"]], macs)
        print(f"  {name:10} vs MACs: Kendall tau-b {'undefined' if tau is None else f'{tau:.3f}'}")
    if args.supernet is None:
        print(f"  supernet training : {trained - began:7.1f} s ({args.epochs} epochs)")
    print(f"  ranking           : {ranked - trained:7.1f} s "
          f"({sum(r['seconds'] for r in result['subnets']) / len(result['subnets']):.1f} s per sub-network)")
    print(f"  wall time         : {ranked - began:7.1f} s")
    print(f"  results           : {rank_dir / 'rank.json'}, {rank_dir / 'rank.png'}")
    if args.second_seed:
        second_seed(result, rank_dir, args)


def second_seed(result: dict, rank_dir: Path, args: argparse.Namespace) -> None:
    """Train the ranked sub-networks again with seed + 1; print Kendall tau between the two standalone runs, and
    between the inherited accuracies and the mean of the two runs (a steadier standalone figure)."""
    import torch

    from nas.arch import Arch
    from nas.data import load_data
    from nas.evaluate import split_accuracy
    from nas.rank import HELD_OUT, describe_statistic, rank_statistics
    from nas.retrain import Recipe, train_standalone

    data = load_data(limit_train=args.limit_train, seed=args.seed)
    plan = {s["arch_id"]: s["arch"] for s in json.loads((rank_dir / "rank_plan.json").read_text())["subnets"]}
    rows, again = result["subnets"], []
    began = time.perf_counter()
    for row in rows:
        arch = Arch.from_dict(plan[row["arch_id"]], str(rank_dir))
        trained = train_standalone(arch, data, Recipe(epochs=args.rank_epochs, seed=args.seed + 1),
                                   torch.device("cpu"), rank_dir / "second-seed" / f"{arch.arch_id}.pt",
                                   log=lambda _: None)
        again.append(split_accuracy(trained.model, arch, data, HELD_OUT))
        print(f"  {arch.arch_id}: standalone {row['standalone']:.3f} (seed {args.seed}), {again[-1]:.3f} "
              f"(seed {args.seed + 1})", flush=True)
    first = [r["standalone"] for r in rows]
    itself = rank_statistics(first, again, args.seed)
    mean = rank_statistics([r["inherited"] for r in rows], [(a + b) / 2 for a, b in zip(first, again)], args.seed)
    print(f"  standalone seed {args.seed} vs seed {args.seed + 1}, Kendall tau-b: "
          f"{describe_statistic(itself['kendall_tau'])}")
    print(f"  inherited vs the mean of both seeds, Kendall tau-b: {describe_statistic(mean['kendall_tau'])}, "
          f"Spearman rho: {describe_statistic(mean['spearman_rho'])}")
    print(f"  second seed       : {time.perf_counter() - began:7.1f} s")


if __name__ == "__main__":
    main()
