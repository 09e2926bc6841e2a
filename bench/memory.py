"""How close `nas.memory`'s estimates come to the memory training and inference really take, on the CPU.

    .venv/bin/python bench/memory.py                    # the reference archs at 224, batch 8; the CPU spaces
    .venv/bin/python bench/memory.py --batch 16 --archs search_spaces/reference/lvt.yaml

For each arch, in a fresh process each (so that peak RSS is this case's alone):
- train: one AdamW step at --batch (weights, gradients, both moments and the saved activations all live), then
  a second; the peak RSS above the process's RSS before the network was built;
- run: a no-grad forward pass at --eval-batch, its peak RSS above the RSS with the network built.
And, for each space, one sandwich step of its supernet (largest member active) at --supernet-batch.

Prints the estimate (`training_need`, `running_need`), the measured peak and their ratio. The estimates are
meant as lower bounds that refusals can rely on: a ratio (estimate / measured) at or below 1 is what is wanted,
and near 1 is what makes them useful.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "search_spaces" / "reference").glob("*.yaml"))
SPACES = ["search_spaces/cpu_small.yaml", "search_spaces/hybrid_cpu.yaml"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def one_case(kind: str, path: str, batch: int) -> dict:
    """Run one case in this process; returns the estimate and the measured peak above the baseline."""
    import torch

    from nas.arch import load_arch
    from nas.memory import meta_supernet, running_need, training_need
    from nas.space import load_space
    from nas.training import optimizer_and_schedule
    from supernet.network import build

    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    if kind == "supernet":
        from nas.weight_sharing import SpaceSupernet

        space = load_space(path)
        arch = space.largest()
        estimate = training_need(arch, batch, cpu, network=meta_supernet(space))
        baseline = rss_bytes()
        model = SpaceSupernet(space)
        model.set_active(arch)
    else:
        arch = load_arch(path)
        estimate = (training_need if kind == "train" else running_need)(arch, batch, *(() if kind == "run" else (cpu,)))
        baseline = rss_bytes()
        model = build(arch)
    x = torch.randn(batch, arch.in_channels, arch.resolution, arch.resolution)
    y = torch.randint(0, arch.num_classes, (batch,))
    if kind == "run":
        baseline = rss_bytes() - model_bytes(model)  # the estimate counts the weights too
        with torch.no_grad():
            model.eval()(x)
    else:
        optimizer, _ = optimizer_and_schedule(model, 1e-3, 0.05, 1, 0, 1)
        model.train()
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return {"kind": kind, "arch": path, "batch": batch, "estimate": estimate.total_bytes,
            "measured": peak_bytes() - baseline}


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=REFERENCE)
    parser.add_argument("--spaces", nargs="+", default=SPACES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--supernet-batch", type=int, default=128)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "PATH", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one[0], args.one[1], int(args.one[2]))))
        return
    cases = [(kind, arch, args.batch if kind == "train" else args.eval_batch)
             for arch in args.archs for kind in ("train", "run")]
    cases += [("supernet", space, args.supernet_batch) for space in args.spaces]
    print(f"{'case':8} {'arch or space':42} {'batch':>5} {'estimate MiB':>12} {'measured MiB':>12} {'ratio':>6}")
    ratios = []
    for kind, path, batch in cases:
        done = subprocess.run([sys.executable, __file__, "--one", kind, path, str(batch)], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        ratio = row["estimate"] / row["measured"]
        ratios.append(ratio)
        print(f"{kind:8} {path:42} {batch:5} {row['estimate'] / 2**20:12.0f} {row['measured'] / 2**20:12.0f} "
              f"{ratio:6.2f}", flush=True)
    print(f"estimate / measured: min {min(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
