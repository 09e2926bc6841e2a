"""How well a supernet ranks its sub-networks on the embedded data (CPU): Kendall tau, Spearman rho, wall time.

    .venv/bin/python bench/rank.py                          # cpu_small: train a supernet (6 epochs), rank 10
    .venv/bin/python bench/rank.py --supernet runs/supernet-small/supernet.pt --subnets 16 --rank-epochs 5

Trains a supernet (unless --supernet is given), then runs `nas supernet rank`: sub-networks stratified over
MACs, each evaluated with the supernet's weights and trained standalone for --rank-epochs epochs. Prints the rank
correlations with their bootstrap 95 % intervals and the wall time of each stage. Takes tens of minutes with the
defaults.
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
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "cpu_small.yaml"))
    parser.add_argument("--supernet", help="a trained supernet checkpoint (default: train one)")
    parser.add_argument("--epochs", type=int, default=6, help="supernet training epochs when training")
    parser.add_argument("--subnets", type=int, default=10)
    parser.add_argument("--rank-epochs", type=int, default=3, help="standalone epochs per sub-network")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nas.cli import main as nas_main

    work = Path(tempfile.mkdtemp(prefix="nas-bench-rank-"))
    os.environ["NAS_CACHE_DIR"] = str(work / "cache")
    data = ["--seed", str(args.seed)] + (["--limit-train", str(args.limit_train)] if args.limit_train else [])
    began = time.perf_counter()
    supernet = args.supernet
    if supernet is None:
        supernet = str(work / "supernet" / "supernet.pt")
        if nas_main(["supernet", "train", "--space", args.space, "--run-dir", str(work / "supernet"), "--epochs",
                     str(args.epochs), *data]):
            raise SystemExit("supernet training failed")
    trained = time.perf_counter()
    if nas_main(["supernet", "rank", "--space", args.space, "--supernet", supernet, "--subnets", str(args.subnets),
                 "--epochs", str(args.rank_epochs), "--run-dir", str(work / "rank"), *data]):
        raise SystemExit("ranking failed")
    ranked = time.perf_counter()
    result = json.loads((work / "rank" / "rank.json").read_text())

    from nas.rank import describe_statistic

    print(f"\nsupernet ranking on {Path(args.space).name}: {args.subnets} sub-networks stratified over MACs, "
          f"{args.rank_epochs} standalone epoch(s) each")
    print(f"  Kendall tau-b     : {describe_statistic(result['kendall_tau'])}")
    print(f"  Spearman rho      : {describe_statistic(result['spearman_rho'])}")
    if args.supernet is None:
        print(f"  supernet training : {trained - began:7.1f} s ({args.epochs} epochs)")
    print(f"  ranking           : {ranked - trained:7.1f} s "
          f"({sum(r['seconds'] for r in result['subnets']) / len(result['subnets']):.1f} s per sub-network)")
    print(f"  wall time         : {ranked - began:7.1f} s")
    print(f"  results           : {work / 'rank' / 'rank.json'}, {work / 'rank' / 'rank.png'}")


if __name__ == "__main__":
    main()
