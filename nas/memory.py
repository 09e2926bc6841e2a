"""Will it fit? The memory a network needs to train or to run, against what the device has free.

The network is built on torch's meta device, where parameters and activations have shapes but no storage, so
an arch of any size is sized in a fraction of a second without allocating it. Training needs, per parameter,
its float32 weight, gradient and AdamW's two moments (16 bytes; 4 more with an EMA, 4 more for a teacher's),
plus the activations the forward pass saves for the backward one at the batch (half of them under CUDA's
autocast). Running (inference) needs the weights and at least the largest operator's inputs and outputs.
Neither counts allocator slack, workspaces or loader buffers: `bench/memory.py` measures training at 0.71-1.08x
of the real peak and running at 0.37-0.79x, so a refusal is all but certain, and a pass is not a promise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.space import SearchSpace

GIB = 2**30
TRAINING_BYTES_PER_PARAM = 16  # float32 weight and gradient, AdamW's two moments
ONNX_LIMIT_BYTES = 2 * GIB  # protobuf's limit on one ONNX file, which holds the weights
OVERFLOW = 2**63  # bytes: what a tensor too large for torch to size stands for


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a network needs: for its parameters (with their training state) and for its activations."""

    params: int  # parameter count
    weights_bytes: int  # parameters, with gradients and optimizer state when training
    activations_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.activations_bytes

    def describe(self) -> str:
        return (f"about {gib(self.total_bytes)} ({gib(self.weights_bytes)} for {self.params:,} parameters, "
                f"{gib(self.activations_bytes)} for activations)")


def gib(size: int) -> str:
    """`size` bytes for a person: '18 KiB', '512 MiB', '7.12 GiB', '18,500 GiB'."""
    if size < 2**20:
        return f"{size / 2**10:.3g} KiB"
    if size < GIB:
        return f"{size / 2**20:.3g} MiB"
    return f"{size / GIB:.3g} GiB" if size < 1000 * GIB else f"{size / GIB:,.0f} GiB"


def meta_network(arch: "Arch") -> nn.Module:
    """`arch`'s network with no storage behind its weights."""
    from supernet.network import build

    with torch.device("meta"):
        return build(arch)


def meta_supernet(space: "SearchSpace") -> nn.Module:
    """`space`'s supernet with no storage behind its weights, its largest member active."""
    from nas.weight_sharing import SpaceSupernet

    with torch.device("meta"):
        supernet = SpaceSupernet(space)
    supernet.set_active(space.largest())
    return supernet


def _input(arch: "Arch", batch: int) -> torch.Tensor:
    return torch.empty(batch, arch.in_channels, arch.resolution, arch.resolution, device="meta")


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def saved_activation_bytes(network: nn.Module, arch: "Arch", batch: int) -> int:
    """Bytes of the tensors a training forward pass of meta `network` at `batch` keeps for its backward pass."""
    saved: dict[int, torch.Tensor] = {}  # by identity; holding them keeps identities unique

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor
        return tensor

    network.train()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        if not _sized(lambda: network(_input(arch, batch))):
            return OVERFLOW
    weights = _state_ids(network)
    return sum(_bytes(tensor) for key, tensor in saved.items() if key not in weights)


def _state_ids(network: nn.Module) -> set[int]:
    """The identities of `network`'s parameters and buffers: weights, not activations."""
    return {id(tensor) for tensor in (*network.parameters(), *network.buffers())}


class _LargestOperator(TorchDispatchMode):
    """Records the largest bytes any one operator reads and writes."""

    def __init__(self, weights: set[int]) -> None:
        super().__init__()
        self.weights, self.largest = weights, 0

    def __torch_dispatch__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None):
        out = func(*args, **(kwargs or {}))
        touched = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        self.largest = max(self.largest, sum(_bytes(t) for t in touched if id(t) not in self.weights))
        return out


def running_activation_bytes(network: nn.Module, arch: "Arch", batch: int) -> int:
    """A lower bound on the peak activation bytes of an inference forward pass of meta `network` at `batch`."""
    largest = _LargestOperator(_state_ids(network))
    network.eval()
    with torch.no_grad(), largest:
        if not _sized(lambda: network(_input(arch, batch))):
            return OVERFLOW
    return largest.largest


def _sized(forward: Callable[[], Any]) -> bool:
    """Run a meta forward pass; False where one of its tensors would hold more than 2**63 bytes (torch refuses
    to size it), which no device holds."""
    try:
        forward()
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        return False
    return True


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def training_need(arch: "Arch", batch: int, device: torch.device, ema: bool = False,
                  network: nn.Module | None = None, teacher_params: int = 0) -> MemoryNeed:
    """What training `network` (default: `arch`'s, built on the meta device) at `batch` images per process needs
    on `device`."""
    network = network if network is not None else meta_network(arch)
    params = count_params(network)
    activations = saved_activation_bytes(network, arch, batch)
    if device.type == "cuda":
        activations //= 2  # autocast keeps most of them in 16 bits
    per_param = TRAINING_BYTES_PER_PARAM + (4 if ema else 0)
    return MemoryNeed(params, params * per_param + teacher_params * 4, activations)


def running_need(arch: "Arch", batch: int, network: nn.Module | None = None) -> MemoryNeed:
    """What running `network` (default: `arch`'s, built on the meta device) at `batch` images needs."""
    network = network if network is not None else meta_network(arch)
    params = count_params(network)
    return MemoryNeed(params, params * 4, running_activation_bytes(network, arch, batch))


def _cgroup_free() -> int | None:
    """Bytes this process's memory cgroup (a container's limit) still allows, where one is set."""
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        try:
            limit = (Path("/sys/fs/cgroup") / limit_file).read_text().strip()
            usage = int((Path("/sys/fs/cgroup") / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's page-rounded 2**63, mean no limit
            return max(0, int(limit) - usage)
    return None


def available_bytes(device: torch.device) -> int:
    """Bytes free for one process on `device`: the GPU's free memory; for the CPU, the machine's available memory
    (within a container's limit), shared among torchrun's processes on this machine."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free = psutil.virtual_memory().available
    cgroup = _cgroup_free()
    if cgroup is not None:
        free = min(free, cgroup)
    return free // int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "this machine"


def check_fits(need: MemoryNeed, device: torch.device, what: str, fix: str) -> None:
    """A NasError when `need` exceeds what `device` has free: `what` needs how much, and the `fix`."""
    free = available_bytes(device)
    if need.total_bytes > free:
        raise NasError(f"{what} needs {need.describe()}, but {device_label(device)} has {gib(free)} of memory free; "
                       f"{fix}")


def check_onnx_size(params: int, what: str) -> None:
    """ONNX files hold the weights, and protobuf caps a file at 2 GiB."""
    if params * 4 >= ONNX_LIMIT_BYTES:
        raise NasError(f"{what} has {params:,} parameters ({gib(params * 4)} of float32 weights), but an ONNX file "
                       "holds at most 2 GiB; choose a smaller arch")


def per_process(batch: int) -> int:
    """The images each of torchrun's processes takes of a global `batch`."""
    return math.ceil(batch / int(os.environ.get("WORLD_SIZE", 1)))


def check_training(arch: "Arch", batch: int, device: torch.device, what: str, ema: bool = False,
                   held_params: int = 0, fix: str = "use a smaller --batch-size, more processes (torchrun), a device "
                                                    "with more memory, or a smaller arch") -> None:
    """Refuse training `arch` at global `batch` on `device` when it cannot fit beside `held_params` more float32
    weights (a supernet or teacher on the same device)."""
    need = training_need(arch, per_process(batch), device, ema, teacher_params=held_params)
    check_fits(need, device, f"{what}: training at batch {batch}", fix)


def check_supernet_training(space: "SearchSpace", batch: int, device: torch.device, what: str,
                            fix: str = "use a smaller --batch-size, more processes (torchrun), a device with more "
                                       "memory, or a smaller space", supernet: nn.Module | None = None) -> None:
    """Refuse training `space`'s supernet (`supernet`: its `meta_supernet`, when already built) at global `batch`
    on `device` when it cannot fit."""
    network = supernet if supernet is not None else meta_supernet(space)
    need = training_need(space.largest(), per_process(batch), device, network=network)
    check_fits(need, device, f"{what}: training the supernet of {space.name} at batch {batch}", fix)


def check_running(arch: "Arch", batch: int, device: torch.device, what: str, held_params: int = 0,
                  fix: str = "use a smaller --batch, a device with more memory, or a smaller arch") -> None:
    """Refuse running `arch` at `batch` on `device` beside `held_params` more float32 weights when it cannot fit."""
    need = running_need(arch, batch)
    need = MemoryNeed(need.params, need.weights_bytes + held_params * 4, need.activations_bytes)
    check_fits(need, device, f"{what}: running at batch {batch}", fix)
