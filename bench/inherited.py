"""Where a trained supernet's inherited weights hold up: the smallest member changed one choice at a time.

    .venv/bin/python bench/inherited.py --space search_spaces/hybrid_cpu.yaml --supernet runs/x/supernet.pt
    .venv/bin/python bench/inherited.py --space search_spaces/cpu_small.yaml --supernet S.pt --random 12

Prints the validation accuracy (BN recalibrated) that the space's largest and smallest members and each
family's smallest single-family member get with the supernet's weights, then `--random` random members, then
the smallest member with one search parameter moved to each of its other choices (the members that change
yields). A choice that costs much
accuracy is one the sandwich training leaves under-trained, which is what spoils the supernet's ranking.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True)
    parser.add_argument("--supernet", required=True, help="a checkpoint from `nas supernet train` for --space")
    parser.add_argument("--max", type=int, default=40, help="at most this many one-choice changes")
    parser.add_argument("--random", type=int, default=0, help="also this many random members (seed 1)")
    args = parser.parse_args()

    import optuna

    from nas.data import load_data
    from nas.evaluate import inherited_accuracy
    from nas.search.encoding import suggest, to_params
    from nas.space import load_space
    from nas.supernet_training import load_supernet

    data = load_data()
    space = load_space(args.space).with_num_classes(data.num_classes)
    supernet = load_supernet(Path(args.supernet), space)

    def accuracy(arch) -> float:
        return inherited_accuracy(supernet.extract(arch), arch, data)

    smallest = space.smallest()
    members = {"largest": space.largest(), "smallest": smallest}
    members.update({f"smallest {family}-only": space.single_family(family) for family in space.families()})
    rng = random.Random(1)
    members.update({f"random {i}": space.sample(rng) for i in range(args.random)})
    for name, arch in members.items():
        print(f"{name:34} {accuracy(arch):.3f}")
    print(f"\nthe smallest member ({accuracy(smallest):.3f}) with one choice changed:")
    base, seen, changes = to_params(space, smallest), {smallest}, 0

    class Recorder:  # a trial that answers as the smallest member and notes every parameter offered on the way
        distributions: dict = {}

        def suggest_categorical(self, name, choices):
            self.distributions[name] = choices
            return base[name]

    suggest(space, Recorder())
    distributions = Recorder.distributions
    for name, choices in distributions.items():
        for choice in choices:
            if changes >= args.max or choice == base.get(name):
                continue
            try:
                arch = suggest(space, optuna.trial.FixedTrial({**base, name: choice}))
            except ValueError:  # the change opens parameters the smallest member does not set
                continue
            if arch in seen:
                continue
            seen.add(arch)
            changes += 1
            print(f"  {name} = {choice!s:12} {accuracy(arch):.3f}")


if __name__ == "__main__":
    main()
