"""How well a supernet ranks its sub-networks (CPU; the embedded data unless --data): Kendall tau, Spearman rho,
the noise floor, inherited / standalone accuracy by family, wall time.

    .venv/bin/python bench/rank.py                          # hybrid_cpu: train a supernet (6 epochs), rank 20
    .venv/bin/python bench/rank.py --epochs 25 --rank-epochs 12                      # the issue's setting, hours
    .venv/bin/python bench/rank.py --supernet runs/supernet-hybrid_cpu/supernet.pt --subnets 24 --rank-epochs 5
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir R --adapt-steps 30       # scored after 30 own steps
    .venv/bin/python bench/rank.py --supernet T.pt --run-dir R2 --standalone-from R   # another supernet, minutes
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir R3 --standalone-from R --control-steps 30
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir R4 --standalone retrain   # nas retrain's recipe, 75 min
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir R0 --standalone retrain \\
        --standalone-from bench/targets/hybrid_cpu-retrain-seed0     # the committed retrain target, minutes
    .venv/bin/python bench/rank.py --space search_spaces/cpu_small.yaml --subnets 10 --seeds 1   # quick
    .venv/bin/python bench/rank.py --pool R4 R5    # R4, R5: one supernet ranked on --seed 0 and --seed 1 samples
    .venv/bin/python bench/rank.py --supernet S.pt --run-dir R6 --standalone retrain --control-steps 60 \\
        --members-from runs/search/shortlist     # a search's re-scored shortlist: whose pick retrains better?
    .venv/bin/python bench/rank.py --supernet F.pt --data fashion_mnist_full.npz --rank-epochs 1 --run-dir R7
        # on the whole Fashion-MNIST (scripts/make_embedded_data.py --all): 54k training, 16k scoring images

Trains a supernet (unless --supernet is given), then ranks it as `nas supernet rank` does: sub-networks stratified
over MACs and block families, each evaluated with the supernet's weights and trained standalone (--standalone
plain for --rank-epochs epochs, or as `nas retrain` trains a winner) with --seeds seeds (their mean is the
standalone accuracy). Prints the rank correlations with their bootstrap 95 % intervals, the noise floor (Kendall
tau between the first two seeds' standalone accuracies: how far standalone training on this data agrees with
itself, which bounds the tau any supernet can reach against it), each family's median inherited / standalone
ratio and the wall time of each stage. --run-dir resumes (or reuses) a ranking folder. --control-steps N adds the
baseline a supernet must beat: the same sub-networks trained from scratch for N batches each and scored the same
way, their Kendall tau against the same standalone accuracies (saved as control-N.json in the ranking folder), and
that of scoring each member by the mean of its supernet and control ranks.
--pool reads ranking folders of one supernet on different samples (--seed) and prints the same statistics over
all their members, the control's too where every folder has it: 20 members leave an interval about 0.3 wide
either side, and a setting can pass on one sample of 20 and fail on the next.
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


def train(space_path: str, run_dir: Path, epochs: int, seed: int, limit_train: int | None, data: str | None) -> Path:
    """What `nas supernet train --space SPACE --run-dir RUN --epochs N --seed S [--data D] [--limit-train N]`
    does, with that command's defaults (batch 128, kl distillation, a checkpoint every 20 steps, cpu); returns the
    checkpoint."""
    from nas.latency import resolve_device
    from nas.supernet_training import TrainConfig, train_supernet_run

    config = TrainConfig(epochs=epochs, batch_size=128, seed=seed, distill="kl", checkpoint_every=20)
    result = train_supernet_run(space_path, config, resolve_device("cpu"), data, limit_train, run_dir, log)
    last = result["history"][-1]
    print(f"supernet checkpoint: {result['checkpoint']}\nlargest member val accuracy {last['val_acc_largest']:.3f}, "
          f"smallest {last['val_acc_smallest']:.3f}")
    return Path(result["checkpoint"])


def rank(space_path: str, supernet_path: Path, rank_dir: Path, subnets: int, epochs: int | None, seed: int,
         limit_train: int | None, seeds: int, adapt_steps: int, standalone_from: Path | None, standalone: str,
         members: list | None = None, data: str | None = None) -> dict:
    """What `nas supernet rank --space SPACE --supernet S --subnets N --standalone KIND [--epochs E] --seeds K
    --adapt-steps A --run-dir RUN --seed S [--data D] [--limit-train N] [--standalone-from R]` does on the cpu (on the
    `members` given, if any), its table printed; returns rank.json's content (with run_dir)."""
    from nas.latency import resolve_device
    from nas.rank import rank_lines, rank_supernet_file

    result = rank_supernet_file(space_path, supernet_path, subnets, epochs, resolve_device("cpu"), data, seed,
                                limit_train, rank_dir, log, seeds=seeds, adapt_steps=adapt_steps,
                                standalone_from=standalone_from, standalone=standalone, members=members)
    print("\n".join(rank_lines(result)))
    return result


def scratch_control(space_path: str, rank_dir: Path, result: dict, steps: int, seed: int,
                    limit_train: int | None, data: str | None = None) -> dict:
    """The baseline a supernet must beat: each ranked sub-network built from scratch (seed `seed`), trained alone
    for `steps` batches and scored on the ranking's splits (`nas.evaluate.scratch_accuracy`, as `nas search
    --rescore-top` scores its shortlist). Returns Kendall tau against the standalone accuracies (with its bootstrap
    CI) and the seconds it took."""
    import torch

    from nas.arch import Arch
    from nas.data import load_space_and_data
    from nas.evaluate import scratch_accuracy
    from nas.rank import HELD_OUT, bootstrap_ci, kendall_tau_b
    from nas.runs import atomic_write

    began = time.perf_counter()
    _, splits = load_space_and_data(space_path, data, seed, limit_train, run_dir=rank_dir)
    plan = {s["arch_id"]: Arch.from_dict(s["arch"]) for s in json.loads((rank_dir / "rank_plan.json").read_text())[
        "subnets"]}
    saved_file = rank_dir / f"control-{steps}.json"
    saved = json.loads(saved_file.read_text()) if saved_file.is_file() else {}
    by_member = saved.get("scores", {}) if saved.get("seed") == seed else {}
    scores, standalone = [], []
    for row in result["subnets"]:
        arch = plan[row["arch_id"]]
        if arch.arch_id not in by_member:
            by_member[arch.arch_id] = scratch_accuracy(arch, splits, steps, seed, torch.device("cpu"), HELD_OUT)
        scores.append(by_member[arch.arch_id])
        standalone.append(row["standalone"])
    atomic_write(saved_file, json.dumps({"steps": steps, "seed": seed, "scores": by_member}, indent=1).encode())
    return {"value": kendall_tau_b(scores, standalone), "ci95": bootstrap_ci(kendall_tau_b, scores, standalone),
            "seconds": time.perf_counter() - began, "steps": steps, "scores": by_member}


def mean_rank_tau(inherited: list[float], control: list[float], standalone: list[float]) -> dict:
    """Kendall tau (with its bootstrap CI) of scoring each member by the mean of its rank on the supernet and its
    rank in the scratch control: the two err differently, so together they can order members better than either."""
    from nas.rank import average_ranks, rank_statistics

    return rank_statistics(list(average_ranks(inherited) + average_ranks(control)), standalone)["kendall_tau"]


def members_in(folder: Path) -> list:
    """The archs of the YAML files in `folder` (arch files, or a search's best.yaml-like front or shortlist files),
    in name order."""
    from nas.arch import load_arch
    from nas.errors import NasError

    archs = [load_arch(path) for path in sorted(folder.glob("*.yaml"))]
    if len(archs) < 3:
        raise NasError(f"--members-from {folder}: {len(archs)} arch file(s); a ranking needs at least 3")
    return archs


def search_picks(folder: Path) -> dict[str, str]:
    """The winners a search chose among the files in `folder` when it is the search's shortlist/ or front/: the
    member its supernet scored best (on the validation images, which the ranking's "supernet picks" line does not
    use alone) and, when it re-scored, the member its best.yaml names. Empty for other folders."""
    from nas.arch import read_yaml

    files = [read_yaml(path) for path in sorted(folder.glob("*.yaml"))]
    if not all(isinstance(f, dict) and "val_accuracy_supernet" in f for f in files):
        return {}
    picks = {"search (supernet)": max(files, key=lambda f: f["val_accuracy_supernet"])["arch_id"]}
    best_file = folder.parent / "best.yaml"
    best = read_yaml(best_file) if best_file.is_file() else None
    if isinstance(best, dict) and "val_accuracy_rescored" in best:
        picks["search (re-scored)"] = best["arch_id"]
    return picks


def print_picks(rows: list[dict], control: dict | None, searched: dict[str, str]) -> None:
    """What each scorer would pick among the members (its most accurate), and that pick's standalone accuracy
    against the best one's: the cost of trusting it, when it picks a search's winner from a shortlist. `searched`
    adds the picks the search itself made (`search_picks`)."""
    best = max(r["standalone"] for r in rows)
    by_id = {r["arch_id"]: r for r in rows}
    picks = [("supernet", max(rows, key=lambda r: r["inherited"]))]
    if control is not None:
        picks.append((f"control ({control['steps']} steps)",
                      max(rows, key=lambda r: control["scores"][r["arch_id"]])))
    picks += [(name, by_id[arch_id]) for name, arch_id in searched.items() if arch_id in by_id]
    for name, row in picks:
        print(f"  {name + ' picks':28}: {row['arch_id']} ({row['family']}), standalone {row['standalone']:.4f}, "
              f"{100 * (best - row['standalone']):.2f} points below the best member's {best:.4f}")


def pooled(folders: list[Path]) -> None:
    """Print the ranking statistics over the members of several ranking folders (`nas.rank.pool_rankings`), and
    the scratch control's wherever every folder holds one with the same steps."""
    from nas.errors import NasError
    from nas.rank import describe_statistic, pool_rankings, rank_statistics

    results = []
    for folder in folders:
        if not (folder / "rank.json").is_file():
            raise SystemExit(f"--pool {folder}: no rank.json there; pass finished ranking folders")
        results.append(json.loads((folder / "rank.json").read_text()))
    try:
        result = pool_rankings(results)
    except NasError as error:
        raise SystemExit(f"--pool: {error}")
    settings = results[0]["settings"]
    adapted = settings.get("adapt_steps", 0)
    print(f"pooled ranking: {len(result['subnets'])} sub-networks from {len(folders)} samples (seeds "
          f"{', '.join(map(str, result['sample_seeds']))}; {result['drawn_twice']} drawn twice, counted once), "
          f"supernet {settings['supernet']}, scored {f'after {adapted} steps' if adapted else 'as extracted'}")
    print(f"  Kendall tau-b     : {describe_statistic(result['kendall_tau'])}")
    print(f"  Spearman rho      : {describe_statistic(result['spearman_rho'])}")
    if result["noise_floors"]:
        print("  noise floor       : standalone seed vs seed, Kendall tau-b, each sample's own: " +
              "; ".join(describe_statistic(floor) for floor in result["noise_floors"]))
    steps_everywhere = set.intersection(*({f.stem.removeprefix("control-") for f in folder.glob("control-*.json")}
                                          for folder in folders))
    for steps in sorted(steps_everywhere, key=lambda text: (len(text), text)):
        scores = {}
        for folder in folders:
            scores = {**json.loads((folder / f"control-{steps}.json").read_text())["scores"], **scores}
        if all(row["arch_id"] in scores for row in result["subnets"]):
            control = [scores[row["arch_id"]] for row in result["subnets"]]
            standalone = [row["standalone"] for row in result["subnets"]]
            tau = rank_statistics(control, standalone)["kendall_tau"]
            both = mean_rank_tau([row["inherited"] for row in result["subnets"]], control, standalone)
            print(f"  control           : from scratch, {steps} steps each, Kendall tau-b {describe_statistic(tau)}")
            print(f"  supernet + control: the mean of the two ranks, Kendall tau-b {describe_statistic(both)}")
    print(f"  inherited / standalone accuracy: median {result['median_ratio']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "hybrid_cpu.yaml"))
    parser.add_argument("--supernet", help="a trained supernet checkpoint (default: train one)")
    parser.add_argument("--epochs", type=int, default=6, help="supernet training epochs when training")
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--standalone", choices=("plain", "retrain"), default="plain",
                        help="standalone recipe: plain, or what `nas retrain` gives a winner (default: plain)")
    parser.add_argument("--rank-epochs", type=int,
                        help="standalone epochs per sub-network (default: 3 with plain, the recipe's with retrain)")
    parser.add_argument("--seeds", type=int, default=2, help="standalone trainings per sub-network, averaged")
    parser.add_argument("--adapt-steps", type=int, default=0,
                        help="train each sub-network alone this many batches before scoring it, as the search can")
    parser.add_argument("--standalone-from", metavar="RUN",
                        help="reuse the standalone accuracies of an earlier ranking folder (same plan and training)")
    parser.add_argument("--control-steps", type=int, default=0,
                        help="also rank by training each sub-network from scratch for this many batches: the "
                             "baseline the supernet must beat (default: 0, none)")
    parser.add_argument("--members-from", metavar="FOLDER",
                        help="rank these members instead of a stratified sample: the arch files in FOLDER, such as "
                             "a search's shortlist/ (after --rescore-top K) or front/; prints which member the "
                             "supernet and the control would pick, and what each pick gets standalone")
    parser.add_argument("--data", help="the images (an image folder or .npz, as `nas supernet train --data`; "
                        "default: the embedded set), such as the full Fashion-MNIST from "
                        "scripts/make_embedded_data.py --all")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", help="the ranking folder (default: a new temporary one); resumed if it exists")
    parser.add_argument("--pool", nargs="+", metavar="RUN",
                        help="only print the statistics over the members of these finished ranking folders (one "
                             "supernet, different --seed samples)")
    args = parser.parse_args()
    if args.pool:
        return pooled([Path(folder) for folder in args.pool])

    from nas.errors import NasError

    work = Path(tempfile.mkdtemp(prefix="nas-bench-rank-"))
    os.environ["NAS_CACHE_DIR"] = str(work / "cache")
    began = time.perf_counter()
    supernet = Path(args.supernet) if args.supernet else None
    if supernet is None:
        try:
            supernet = train(args.space, work / "supernet", args.epochs, args.seed, args.limit_train, args.data)
        except NasError as error:
            raise SystemExit(f"supernet training failed: {error}")
    trained = time.perf_counter()
    rank_dir = Path(args.run_dir) if args.run_dir else work / "rank"
    try:
        result = rank(args.space, supernet, rank_dir, args.subnets, args.rank_epochs, args.seed, args.limit_train,
                      args.seeds, args.adapt_steps, Path(args.standalone_from) if args.standalone_from else None,
                      args.standalone, members_in(Path(args.members_from)) if args.members_from else None, args.data)
    except NasError as error:
        raise SystemExit(f"ranking failed: {error}")
    ranked = time.perf_counter()

    from nas.rank import describe_statistic, kendall_tau_b

    rows = result["subnets"]
    drawn = f"from {args.members_from}" if args.members_from else "stratified over MACs and families"
    print(f"\nsupernet ranking on {Path(args.space).name}: {len(rows)} sub-networks {drawn}, standalone the mean "
          f"of {args.seeds} seed(s) of {result['settings']['epochs']} epoch(s), {args.standalone} recipe")
    print(f"  Kendall tau-b     : {describe_statistic(result['kendall_tau'])}")
    print(f"  Spearman rho      : {describe_statistic(result['spearman_rho'])}")
    if "seed_to_seed_tau" in result:
        print(f"  noise floor       : standalone seed vs seed, Kendall tau-b "
              f"{describe_statistic(result['seed_to_seed_tau'])}")
    control = None
    if args.control_steps:
        control = scratch_control(args.space, rank_dir, result, args.control_steps, args.seed, args.limit_train,
                                  args.data)
        print(f"  control           : from scratch, {args.control_steps} steps each, Kendall tau-b "
              f"{describe_statistic(control)} ({control['seconds']:.0f} s)")
        both = mean_rank_tau([r["inherited"] for r in rows], [control["scores"][r["arch_id"]] for r in rows],
                             [r["standalone"] for r in rows])
        print(f"  supernet + control: the mean of the two ranks, Kendall tau-b {describe_statistic(both)}")
    if args.members_from:
        print_picks(rows, control, search_picks(Path(args.members_from)))
    print(f"  inherited / standalone accuracy: median {result['median_ratio']:.3f}, "
          f"range {min(r['ratio'] for r in rows):.3f} to {max(r['ratio'] for r in rows):.3f}")
    macs = [r["macs"] for r in rows]
    for name in ("inherited", "standalone"):  # which side follows capacity
        tau = kendall_tau_b([r[name] for r in rows], macs)
        print(f"  {name:10} vs MACs: Kendall tau-b {'undefined' if tau is None else f'{tau:.3f}'}")
    print(f"  {'family':10} {'subnets':>7} {'median ratio':>12} {'tau within':>10}")
    for family, row in result["families"].items():
        tau = "-" if row["kendall_tau"] is None else f"{row['kendall_tau']:.2f}"
        print(f"  {family:10} {row['subnets']:7} {row['median_ratio']:12.3f} {tau:>10}")
    if args.supernet is None:
        print(f"  supernet training : {trained - began:7.1f} s ({args.epochs} epochs)")
    print(f"  ranking           : {ranked - trained:7.1f} s "
          f"({sum(r['seconds'] for r in rows) / len(rows):.1f} s per sub-network)")
    print(f"  wall time         : {ranked - began:7.1f} s")
    print(f"  results           : {rank_dir / 'rank.json'}, {rank_dir / 'rank.png'} (a panel per family)")


if __name__ == "__main__":
    main()
