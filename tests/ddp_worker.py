"""Run by tests/test_ddp.py, as one process or under torchrun: three sandwich steps on fixed global batches, then
each rank writes its weights to OUT/rank<R>.pt.

BatchNorm is kept in eval mode (running statistics), so how the batch is split across ranks cannot change a
forward pass; what is left to differ from one process is how the ranks' gradients are combined. Plain SGD keeps a
rounding-level difference in the gradients a rounding-level difference in the weights (AdamW's first step would
turn any nonzero gradient into +-lr).
"""

import sys
from pathlib import Path

import torch

from nas.runs import save_checkpoint
from nas.space import load_space
from nas.supernet_training import TrainConfig, train_step
from nas.training import Precision, process_group, rank_and_world, wrap_for_ranks
from nas.weight_sharing import SpaceSupernet


def main(space_file: str, out: Path, distill: str) -> None:
    space = load_space(space_file)
    config = TrainConfig(distill=distill, random_subnets=2)
    with process_group(torch.device("cpu")) as device:
        torch.manual_seed(0)
        model = SpaceSupernet(space).eval()
        net = wrap_for_ranks(model, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(0)
        for step in range(3):
            xb = torch.randn(13, space.in_channels, 32, 32, generator=generator)  # 13: slices of 7 and 6 images
            yb = torch.randint(0, space.num_classes, (13,), generator=generator)
            rank, world = rank_and_world()
            x, y = xb.tensor_split(world)[rank], yb.tensor_split(world)[rank]  # what EpochBatches gives this rank
            train_step(net, space, x, y, len(y) * world / len(yb), step, config, optimizer, Precision(device))
        save_checkpoint(out / f"rank{rank_and_world()[0]}.pt", {"format": "nas-supernet", "model": model.state_dict()})


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
