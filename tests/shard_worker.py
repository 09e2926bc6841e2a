"""Run by tests/test_data.py under torchrun: each rank reads two epochs of an .npz's training split through its
own loader (global batches of 12) and writes the labels of every batch it read to OUT/rank<R>.json."""

import json
import sys
from pathlib import Path

from nas.data import load_data
from nas.training import rank_and_world


def main(npz: str, out: Path) -> None:
    rank, world = rank_and_world()
    data = load_data(npz)
    batches = data.loader("train", 8, 1, 12, train=True, seed=0, rank=rank, world=world)
    seen = [[y.tolist() for _, y, _ in batches.epoch(epoch)] for epoch in range(2)]
    (out / f"rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
