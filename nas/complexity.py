"""Parameter and MAC counts (fvcore, with handles for the operators it skips).

fvcore counts one multiply-accumulate as one "flop", as the papers do. It has no handle for fused attention,
pooling or fold/unfold; the handles below count them (attention: both matmuls; pooling: one accumulate per input
element; fold: one per summed element; unfold only moves data). Elementwise ops (activations, gates, residual
adds) stay uncounted, as in the papers.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.memory import count_params  # noqa: F401  (the one definition; stages import it from here)

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.space import SearchSpace


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _input_elements(inputs: list, outputs: list) -> int:
    return math.prod(_shape(inputs[0]))  # every input element is accumulated once


def _moves_data(inputs: list, outputs: list) -> int:
    return 0


def _attention_macs(inputs: list, outputs: list) -> int:
    """softmax(q k^T) v: q [.., Nq, d], k [.., Nk, d], v [.., Nk, dv]."""
    q, k, v = (_shape(value) for value in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


HANDLES = {
    "aten::scaled_dot_product_attention": _attention_macs,
    "aten::avg_pool2d": _input_elements,
    "aten::max_pool2d": _input_elements,
    "aten::adaptive_avg_pool2d": _input_elements,
    "aten::col2im": _input_elements,
    "aten::im2col": _moves_data,
}


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at `input_shape` (batch included)."""
    return sum(mac_breakdown(model, input_shape).values())


def mac_breakdown(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """`count_macs` by operator (e.g. {"linear": ..., "conv": ..., "layer_norm": ...})."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        logging.getLogger("fvcore").setLevel(logging.ERROR)
        device = next(model.parameters()).device
        analysis = FlopCountAnalysis(model.eval(), torch.zeros(input_shape, device=device))
        analysis.set_op_handle(**HANDLES)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        with torch.no_grad():  # the trace would otherwise keep every activation, as training does
            return {op: int(macs) for op, macs in analysis.by_operator().items()}


def count_matmul_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of matmuls, convolutions and attention by torch's own counter (a cross-check for `count_macs`)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:  # grad mode on: the counter's module tracker refuses LightViT's expanded tokens under no_grad
        model.eval()(torch.zeros(input_shape, device=device))
    return counter.get_total_flops() // 2


DESCRIBE_BATCH = 128  # the batch `nas describe` sizes training at: the retraining recipe's


def describe_arch(arch: "Arch", space: "SearchSpace | None" = None) -> dict[str, Any]:
    """`nas describe`: an arch's id, name, parameters and MACs at its resolution, its YAML form, and (with
    `space`) whether it is a member."""
    from nas.memory import check_fits, meta_network, running_need, training_need
    from supernet.network import build

    cpu, network = torch.device("cpu"), meta_network(arch)
    running = running_need(arch, 1, network)
    check_fits(running, cpu, f"arch {arch.arch_id}: running at batch 1",
               "it is too large to build here: choose a smaller arch")
    training = training_need(arch, DESCRIBE_BATCH, cpu, network=network)
    model = build(arch)
    result: dict[str, Any] = {
        "arch_id": arch.arch_id, "name": arch.name, "params": count_params(model),
        "macs": count_macs(model, (1, arch.in_channels, arch.resolution, arch.resolution)),
        "resolution": arch.resolution, "arch": arch.to_dict(),
        "memory": {"running_bytes_batch_1": running.total_bytes,
                   f"training_bytes_batch_{DESCRIBE_BATCH}": training.total_bytes,
                   f"training_activation_bytes_batch_{DESCRIBE_BATCH}": training.activations_bytes}}
    if space is not None:
        result["member"] = space.contains(arch)
    return result


def describe_lines(arch: "Arch", result: dict[str, Any], space_file: str | None = None) -> list[str]:
    """`describe_arch`'s result for a person (`space_file`: the space the membership was checked against)."""
    from nas.memory import gib

    lines = [f"arch {arch.arch_id}{' (' + arch.name + ')' if arch.name else ''}: {result['params']:,} params, "
             f"{result['macs'] / 1e6:.2f} M MACs at {arch.resolution}x{arch.resolution}x{arch.in_channels}"]
    if arch.timm_model:
        lines.append(f"timm model {arch.timm_model} (a baseline), {arch.num_classes} classes")
    else:
        stages = ", ".join(f"{s.family}x{s.depth}@{s.width}" for s in arch.stages)
        tokens = f", {arch.global_tokens} global tokens" if arch.global_tokens else ""
        lines.append(f"stem {arch.stem_type} {arch.stem_width}/{arch.stem_stride}, stages {stages}, "
                     f"head {arch.head_type} {arch.head_width or ''}{tokens}, {arch.num_classes} classes")
    memory = result["memory"]
    lines.append(f"memory (float32, CPU): training at batch {DESCRIBE_BATCH} about "
                 f"{gib(memory[f'training_bytes_batch_{DESCRIBE_BATCH}'])}, running one image at least "
                 f"{gib(memory['running_bytes_batch_1'])}")
    if "member" in result:
        lines.append(f"member of {space_file}: {'yes' if result['member'] else 'no'}")
    return lines
