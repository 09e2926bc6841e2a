"""SAEViT (Zhang et al., 2025), reconstructed: no public code exists, only the abstract.

What the abstract says: Sparsely Aggregated Attention (SAA) samples a sparse set of tokens "based on image
redundancy", attends among them and recovers the full map with a deconvolution; a Channel-Interactive FFN
(CIFFN) decomposes and redistributes features across channels; depthwise-separable conv blocks (DWSConv) are
embedded in a hierarchical pyramid. Everything below that is not in that sentence is a reconstruction, and each
uncertain choice is a knob:

* SAA follows EdgeViT's global sparse attention (the closest published mechanism): pick one delegate per r x r
  window, multi-head self-attention among the delegates (qkv with bias), a depthwise transposed conv (kernel r,
  stride r) back to the full map, LayerNorm, projection. `rule` makes the rate fixed (`rate`) or adaptive to the
  map (`grid`: r = map // grid, so about grid x grid delegates at any input size; r is capped at `rate`, which
  sizes the recovery kernel, so a small `rate` makes the grid larger on large maps); `sampler` picks the
  top-left pixel (EdgeViT: AvgPool2d(1, r) is a pick) or averages the window; `recovery` uses kernel r
  (non-overlapping, EdgeViT) or 2r (overlapping). Maps that r does not divide are covered by a partial last
  window and the recovered map is cropped back.
* CIFFN: fc1 -> decompose (`multikernel`: channel groups through depthwise convs of different kernels, 1 being
  the identity; `gated`: one half gates the other, x1 * sigmoid(x2)) -> channel shuffle -> GELU -> fc2.
* A stage: patch-embedding transition (conv kernel = stride + BN), `conv_blocks` DWSConv blocks
  (DW k -> BN -> GELU -> PW 1x1 -> BN, residual), then pre-norm transformer blocks with a depthwise 3x3
  position conv (CPE), SAA and CIFFN.
Defaults are the prototype of the spec (seed-architectures.md, section 4.4); its stages use rates 4/2/2/1.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks.transformer import (TransformerStage, attend, check_heads, ffn_hidden, map_to_tokens,
                                         merge_heads, split_qkv, tokens_to_map, transformer_knobs, with_global_rows)
from supernet.knobs import Knob, is_bool, is_int, one_of
from supernet.ops import Ops, centre_kernel, set_out
from supernet.registry import register_family, register_ffn, register_transition

CIFFN_KERNELS = (1, 3, 5, 7)  # the kernels a CIFFN group may use; 1 is the identity
RECOVERY_NORM_EPS = 1e-5  # EdgeViT's LayerNorm after the transposed conv keeps torch's default eps


def _is_kernel_set(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(is_int(k) and k in CIFFN_KERNELS
                                                                         for k in value)


KNOBS = {
    **transformer_knobs("ciffn", "patch", cpe=True),
    "rate": Knob(lambda v: is_int(v) and v >= 1, "a sampling rate >= 1 (one delegate per rate x rate window; "
                 "with rule grid, the cap on the rate)", True, default=2),
    "rule": Knob(one_of("fixed", "grid"), "fixed or grid (grid: rate = map // grid, a fixed delegate grid)",
                 default="fixed"),
    "grid": Knob(lambda v: is_int(v) and v >= 1, "an integer >= 1 (the delegate grid side for rule grid)",
                 default=7),
    "sampler": Knob(one_of("pick", "avg"), "pick or avg (top-left pixel of each window, or its mean)",
                    default="pick"),
    "recovery": Knob(one_of("r", "2r"), "r or 2r (the transposed conv's kernel, for stride r)", default="r"),
    "ciffn": Knob(one_of("multikernel", "gated"), "multikernel or gated (CIFFN's decomposition)",
                  default="multikernel"),
    "ciffn_groups": Knob(lambda v: is_int(v) and v >= 1, "an integer >= 1 (CIFFN channel groups)", True, default=4),
    "ciffn_kernels": Knob(_is_kernel_set, "a list of depthwise kernels from 1, 3, 5, 7 (1 = identity); "
                          "CIFFN group i uses the i-th", default=list(CIFFN_KERNELS)),
    "ciffn_shuffle": Knob(is_bool, "true or false (channel shuffle after the decomposition)", default=True),
    "conv_blocks": Knob(lambda v: is_int(v) and v >= 0, "an integer >= 0 (DWSConv blocks before the transformer "
                        "blocks)", True, default=1),
    "conv_kernel": Knob(one_of(3, 5), "3 or 5 (the DWSConv depthwise kernel)", True, default=3),
}


def grid_rate(map_size: int, grid: int) -> int:
    """Rule grid: the rate that leaves about grid x grid delegates on a map_size x map_size map."""
    return max(1, map_size // grid)


def check_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    """Why an SAA stage of this width and knobs cannot work on a map_size x map_size map, or None."""
    problem = check_heads(width, knobs)
    if problem:
        return problem
    if knobs["rule"] == "fixed" and knobs["rate"] > map_size:  # rule grid never asks for more than the map
        return f"knob rate: {knobs['rate']} is larger than the {map_size}x{map_size} map"
    if knobs["ffn"] == "ciffn":
        return check_ciffn(ffn_hidden(width, knobs["mlp_ratio"]), knobs)
    return None


def check_ciffn(hidden: int, knobs: Mapping[str, Any]) -> str | None:
    """Why CIFFN cannot work at this hidden width, or None."""
    groups, kernels = knobs.get("ciffn_groups", 4), knobs.get("ciffn_kernels", CIFFN_KERNELS)
    if knobs.get("ciffn", "multikernel") == "multikernel" and len(kernels) < groups:
        return f"knob ciffn_kernels: {len(kernels)} kernels for ciffn_groups {groups} (one kernel per group)"
    if mixed_width(hidden, knobs.get("ciffn", "multikernel")) < groups:
        return f"knob ciffn_groups: {groups} groups for a CIFFN of {hidden} hidden channels"
    return None


def recovery_kernel(rate: int, recovery: str) -> int:
    return rate if recovery == "r" else 2 * rate


class SAA(nn.Module):
    """Sparsely aggregated attention on the image tokens: sample delegates, attend, recover with a deconv.

    The recovery conv is a depthwise transposed conv; its weight lives in a factory depthwise conv (same
    [C, 1, k, k] shape) so that it is sliced like every other weight, and it is applied with
    F.conv_transpose2d. It is sized for the largest rate (an elastic SAA also for the 2r kernel); a smaller
    rate or kernel uses the centre of the kernel. At rate 1 there is no sampling and no recovery (plain MHSA).
    """

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.qkv = ops.linear(width, 3 * width, out_parts=3)
        self.proj = ops.linear(width, width)
        self.recovery_conv, self.norm = None, None
        if knobs["rate"] > 1:
            kernel = recovery_kernel(knobs["rate"], "2r" if ops.elastic else knobs["recovery"])
            self.recovery_conv = ops.dwconv(width, kernel, bias=True)
            self.norm = ops.ln(width, RECOVERY_NORM_EPS)
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.rate, self.rule, self.grid = knobs["heads"], knobs["rate"], knobs["rule"], knobs["grid"]
        self.sampler, self.recovery = knobs["sampler"], knobs["recovery"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.qkv, 3 * width)
        set_out(self.proj, width)
        self.configure(knobs)

    def sampling_rate(self, height: int, width: int) -> int:
        if self.rule == "grid":  # capped: the recovery kernel is sized for `rate`
            return min(self.rate, grid_rate(min(height, width), self.grid))
        return self.rate

    def sample(self, x: torch.Tensor, rate: int) -> torch.Tensor:
        """One delegate per rate x rate window (the last window may be partial): [B, C, ceil(H/r), ceil(W/r)]."""
        if self.sampler == "pick":
            return x[:, :, ::rate, ::rate]
        return F.avg_pool2d(x, rate, rate, ceil_mode=True)  # a partial window averages its real pixels

    def recover(self, x: torch.Tensor, rate: int, height: int, width: int) -> torch.Tensor:
        """Depthwise transposed conv (stride r) from the delegate map to the full map, cropped to H x W."""
        c, kernel = x.shape[1], recovery_kernel(rate, self.recovery)
        weight = centre_kernel(self.recovery_conv.weight[:c], kernel)
        x = F.conv_transpose2d(x, weight, self.recovery_conv.bias[:c], stride=rate, groups=c)
        start = (kernel - rate) // 2  # kernel 2r: as padding r/2 would, so output pixel i sits over delegate i // r
        return x[:, :, start:start + height, start:start + width]

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return merge_heads(attend(*split_qkv(self.qkv(x), self.heads)))

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        image = x[:, n_global:]
        rate = self.sampling_rate(*hw)
        if rate == 1:
            out = self.attend(image)
        else:
            delegates = self.sample(tokens_to_map(image, hw), rate)
            grid = (delegates.shape[2], delegates.shape[3])
            out = tokens_to_map(self.attend(map_to_tokens(delegates)), grid)
            out = self.norm(map_to_tokens(self.recover(out, rate, *hw)))
        return with_global_rows(self.proj(out), n_global)  # SAA has no use for global tokens


def mixed_width(hidden: int, variant: str) -> int:
    """CIFFN's width after the decomposition (fc2's input): the gated variant halves it."""
    return hidden // 2 if variant == "gated" else hidden


def group_sizes(channels: int, groups: int) -> list[int]:
    """Split `channels` into `groups` near-equal parts (the first ones take the remainder)."""
    return [channels // groups + (i < channels % groups) for i in range(groups)]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channel groups of x [..., C]: ShuffleNet's shuffle, taking uneven groups in turn."""
    # Row i of the grid holds the i-th channel of every group; only the last row has gaps, and they are its
    # last entries (the larger groups come first), so the first C entries in row-major order are the order.
    # Built with tensor ops, it costs eager torch little and traces (no Python list per forward, no cache).
    channels = x.shape[-1]
    size, larger = channels // groups, channels % groups  # not divmod: a traced shape (torch.jit) is a tensor
    group = torch.arange(groups, device=x.device)
    starts = group * size + group.clamp(max=larger)
    order = (torch.arange(size + 1, device=x.device)[:, None] + starts).flatten()[:channels]
    return x[..., order]


@register_ffn("ciffn")
class CIFFN(nn.Module):
    """Channel-interactive FFN: fc1 -> decompose -> channel shuffle -> GELU -> fc2 (on tokens).

    `multikernel` splits the hidden channels into ciffn_groups groups and runs group i through a depthwise conv
    of kernel ciffn_kernels[i] (1 = identity) on the image tokens; global tokens skip it. `gated` multiplies the
    first half of the hidden channels by the sigmoid of the second (so fc1 makes 2 * (hidden // 2) channels and
    fc2 reads hidden // 2). Usable in any family: its knobs are read with defaults. An elastic CIFFN gives every
    group a depthwise conv over all hidden channels with the largest kernel, so any group count, kernel set and
    variant can share it.
    """

    def __init__(self, width: int, hidden: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.configure(knobs)
        self.fc1 = ops.linear(width, self.fc1_width(hidden))
        if ops.elastic:
            self.convs = nn.ModuleList(ops.dwconv(hidden, max(CIFFN_KERNELS)) for _ in range(self.groups))
        elif self.variant == "multikernel":
            self.convs = nn.ModuleList(nn.Identity() if k == 1 else ops.dwconv(size, k)
                                       for size, k in zip(group_sizes(hidden, self.groups), self.kernels))
        else:
            self.convs = nn.ModuleList()
        self.fc2 = ops.linear(mixed_width(hidden, self.variant), width)
        if ops.elastic:
            self.set_active(width, hidden, knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.variant = knobs.get("ciffn", "multikernel")
        self.groups = knobs.get("ciffn_groups", 4)
        self.kernels = tuple(knobs.get("ciffn_kernels", CIFFN_KERNELS))[: self.groups]
        self.shuffle = knobs.get("ciffn_shuffle", True)

    def fc1_width(self, hidden: int) -> int:
        return 2 * (hidden // 2) if self.variant == "gated" else hidden

    def set_active(self, width: int, hidden: int, knobs: Mapping[str, Any]) -> None:
        self.configure(knobs)
        set_out(self.fc1, self.fc1_width(hidden))
        set_out(self.fc2, width)
        if self.variant == "multikernel":
            for conv, size, k in zip(self.convs, group_sizes(hidden, self.groups), self.kernels):
                set_out(conv, size, k)

    def decompose(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        if self.variant == "gated":
            half = x.shape[-1] // 2
            return x[..., :half] * torch.sigmoid(x[..., half:])
        parts = torch.split(tokens_to_map(x[:, n_global:], hw), group_sizes(x.shape[-1], self.groups), dim=1)
        image = map_to_tokens(torch.cat([part if k == 1 else conv(part)
                                         for part, conv, k in zip(parts, self.convs, self.kernels)], dim=1))
        return torch.cat([x[:, :n_global], image], dim=1) if n_global else image

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        x = self.decompose(self.fc1(x), hw, n_global)
        if self.shuffle:
            x = channel_shuffle(x, self.groups)
        return self.fc2(F.gelu(x))


@register_transition("patch")
class PatchEmbed(nn.Module):
    """Transition: conv with kernel = stride = s (non-overlapping patches) + BN; stride 1: 1x1 conv + BN.

    The map is zero-padded at the bottom and right to a multiple of s, so the output side is ceil(side / s).
    """

    def __init__(self, c_in: int, width: int, stride: int, ops: Ops) -> None:
        super().__init__()
        self.stride = stride
        self.conv = ops.conv(c_in, width, stride, stride, padding=0)
        self.bn = ops.bn(width)

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = -x.shape[2] % self.stride, -x.shape[3] % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.bn(self.conv(x))


class DWSConv(nn.Module):
    """Depthwise-separable conv block: DW k -> BN -> GELU -> PW 1x1 -> BN, residual."""

    def __init__(self, width: int, kernel: int, ops: Ops) -> None:
        super().__init__()
        self.dw = ops.dwconv(width, kernel)
        self.bn1 = ops.bn(width)
        self.pw = ops.conv(width, width)
        self.bn2 = ops.bn(width)

    def set_active(self, width: int, kernel: int) -> None:
        set_out(self.dw, width, kernel)
        set_out(self.pw, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.pw(F.gelu(self.bn1(self.dw(x)))))


@register_family("saa", KNOBS, "SAEViT sparsely aggregated attention", check_stage, uses_tokens=True)
class SAAStage(TransformerStage):
    """Transition, `conv_blocks` DWSConv blocks, then `depth` pre-norm blocks: CPE, SAA, CIFFN."""

    MIXER = SAA
    NORM_EPS = 1e-6  # EdgeViT's block LayerNorms

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__(c_in, width, depth, stride, knobs, elastic)
        ops = Ops(elastic)
        self.conv_blocks = nn.ModuleList(DWSConv(width, knobs["conv_kernel"], ops)
                                         for _ in range(knobs["conv_blocks"]))
        self.n_conv_blocks = knobs["conv_blocks"]

    def set_active(self, c_in: int, width: int, depth: int, knobs: Mapping[str, Any]) -> None:
        super().set_active(c_in, width, depth, knobs)
        self.n_conv_blocks = knobs["conv_blocks"]
        for block in self.conv_blocks[: self.n_conv_blocks]:
            block.set_active(width, knobs["conv_kernel"])

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        x = super().enter(x)
        for block in self.conv_blocks[: self.n_conv_blocks]:
            x = block(x)
        return x
