"""The supernet of a search space: `SpaceSupernet(space)` is a `HybridSupernet` that knows where each member sits.

The model library's `HybridSupernet` takes every member's placement (its stem and head choices and the slot of
each stage) as given (`set_active_at`, `extract_at`); the space computes it (`SearchSpace.placement`). This
subclass joins the two, so that the stages say `supernet.set_active(arch)` and `supernet.extract(arch)`.
"""

from __future__ import annotations

from nas.arch import Arch
from nas.space import Placement, SearchSpace
from supernet.network import HybridNet, HybridSupernet


class SpaceSupernet(HybridSupernet):
    """Every member of `space` in one network (the same modules and state_dict keys as `HybridSupernet`)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.space = space

    def placement(self, arch: Arch) -> Placement:
        placement = self.space.placement(arch)
        if placement is None:
            raise ValueError(f"arch {arch.arch_id} is not a member of space {self.space.name}")
        return placement

    def set_active(self, arch: Arch) -> None:
        self.set_active_at(arch, self.placement(arch))

    def extract(self, arch: Arch) -> HybridNet:
        return self.extract_at(arch, self.placement(arch))
