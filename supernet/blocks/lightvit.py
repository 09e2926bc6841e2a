"""LightViT (Huang et al., 2022, arXiv 2207.05557): convolution-free blocks with global aggregation tokens.

Follows the released code (hunto/image_classification_sota `lib/models/lightvit.py`) operation for operation:

* `LightViTAttention`: one qkv projection of global + image tokens; local self-attention inside ws x ws windows
  with a Swin relative-position bias; global aggregation (the global tokens' queries attend to all image tokens);
  the aggregated tokens are projected to keys/values (`kv_global`) and broadcast back (every image query attends
  to them); the image outputs of the two paths are summed; one output projection.
* `BiAttnMlp`: Linear-GELU-Linear, gated by BiAttn (a channel gate from the token mean and a per-token spatial
  gate, both computed on a LayerNorm of the FFN output).
* `ResidualMergePatch`: 2x2 space-to-depth -> LN -> Linear, plus a 2x2 max-pool -> Linear residual;
  `GlobalTokenProjection` is its path for the global tokens (LN -> Linear), which the network applies.
* `LightViTStem` (stride 8: conv, three depthwise convs, conv, LayerNorm) and `LightViTHead` (LN, per-token neck,
  mean over all tokens including the global ones, classifier).

Not in the classification code, taken from the released detection copy (hunto/LightViT `detection/lightvit.py`)
so that any input size works: maps are zero-padded at the bottom/right to a multiple of the window before the
qkv projection (padded tokens are keys and values of the window attention, as there and in Swin) and cropped
after it; odd maps are zero-padded before merging. Choices of ours: the relative-position table is stored as
[1, heads, 2ws-1, 2ws-1] so that a smaller window (or fewer heads) takes its centre crop (an elastic window
shares one table); a stride-1 `ResidualMergePatch` (width change only) is LN -> Linear without the residual;
the BiAttn gates can be switched off (knobs `channel_gate`, `spatial_gate`). Released checkpoints load with
`released_state_dict_to_ours`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks.transformer import (TransformerStage, attend, check_heads, init_linears, map_to_tokens,
                                         merge_heads, tokens_to_map, transformer_knobs)
from supernet.knobs import Knob, is_bool, is_int, is_number
from supernet.ops import Ops, set_out
from supernet.registry import register_family, register_ffn, register_head, register_stem, register_transition

KNOBS = {
    **transformer_knobs("biattn", "merge"),
    # Heads size the relative-position table, so the supernet is built for the most heads.
    "heads": Knob(lambda v: is_int(v) and v >= 1, "a number of attention heads >= 1 (must divide the width)", True),
    "window": Knob(lambda v: is_int(v) and v >= 1, "a window side >= 1 (at most the stage's map side)", True,
                   default=7),
    "act_ratio": Knob(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1] (BiAttn reduced width / width)",
                      True, default=0.25),
    "channel_gate": Knob(is_bool, "true or false (BiAttn channel gate)", default=True),
    "spatial_gate": Knob(is_bool, "true or false (BiAttn spatial gate)", default=True),
}

BLOCK_NORM_EPS = 1e-6  # the blocks' and the final LayerNorms; the others keep torch's 1e-5, as released


def check_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    problem = check_heads(width, knobs)
    if problem:
        return problem
    if knobs["window"] > map_size:
        return (f"knob window: {knobs['window']} is larger than the {map_size}x{map_size} map of this stage "
                f"(use a window of at most {map_size})")
    if knobs["ffn"] == "biattn" and reduced_width(width, knobs) < 1:
        return f"knob act_ratio: {knobs['act_ratio']} x width {width} leaves BiAttn no channels"
    return None


def reduced_width(width: int, knobs: Mapping[str, Any]) -> int:
    return int(width * knobs.get("act_ratio", 0.25))


def relative_position_index(window: int, device: torch.device | None = None) -> torch.Tensor:
    """[ws*ws, ws*ws] index into a flattened (2ws-1) x (2ws-1) offset table (Swin's layout, row-major tokens)."""
    coords = torch.arange(window, device=device)
    rows, cols = coords.repeat_interleave(window), coords.repeat(window)
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def split_heads(x: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    """[B, N, parts*C] -> `parts` tensors [B, heads, N, C/heads]."""
    b, n, c = x.shape[0], x.shape[1], x.shape[2] // parts
    return x.reshape(b, n, parts, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)


class LightViTAttention(nn.Module):
    """Local window attention + global aggregation + global broadcast (with n_global == 0: local only)."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        window, heads = knobs["window"], knobs["heads"]
        self.qkv = ops.linear(width, 3 * width, out_parts=3)
        # exists without global tokens too: the parameter count does not depend on their number
        self.kv_global = ops.linear(width, 2 * width, out_parts=2)
        self.proj = ops.linear(width, width)
        self.relative_position_bias_table = nn.Parameter(torch.empty(1, heads, 2 * window - 1, 2 * window - 1))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        init_linears(self)
        self.window = 0
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads = knobs["heads"]
        if knobs["window"] != self.window:
            self.window = knobs["window"]
            index = relative_position_index(self.window, self.relative_position_bias_table.device)
            self.register_buffer("relative_position_index", index, persistent=False)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.qkv, 3 * width)
        set_out(self.kv_global, 2 * width)
        set_out(self.proj, width)
        self.configure(knobs)

    def relative_bias(self) -> torch.Tensor:
        """[heads, ws*ws, ws*ws]: the centre (2ws-1)^2 of the table, gathered for every pair in a window."""
        table = self.relative_position_bias_table[0, : self.heads]
        trim = (table.shape[-1] - (2 * self.window - 1)) // 2
        if trim:
            table = table[:, trim:-trim, trim:-trim]
        return table.flatten(1)[:, self.relative_position_index]

    def window_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """Self-attention inside each ws x ws window of qkv [B, H, W, 3C] (H, W multiples of ws) -> [B, H, W, C]."""
        b, h, w, c3 = qkv.shape
        ws, heads, c = self.window, self.heads, c3 // 3
        rows, cols = h // ws, w // ws
        windows = qkv.reshape(b, rows, ws, cols, ws, 3, heads, c // heads).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = windows.reshape(3, b * rows * cols, heads, ws * ws, c // heads).unbind(0)
        out = attend(q, k, v, self.relative_bias())  # [B*windows, heads, ws*ws, d]
        return out.reshape(b, rows, cols, heads, ws, ws, c // heads).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        image = x[:, n_global:].reshape(b, h, w, c)
        pad_bottom, pad_right = -h % self.window, -w % self.window
        if pad_bottom or pad_right:  # zero tokens, as in the detection code: their q, k, v are the qkv biases
            image = F.pad(image, (0, 0, 0, pad_right, 0, pad_bottom))
        hp, wp = h + pad_bottom, w + pad_right
        seq = image.reshape(b, hp * wp, c)
        if n_global:
            seq = torch.cat([x[:, :n_global], seq], dim=1)
        qkv = self.qkv(seq)
        qkv_image = qkv[:, n_global:].reshape(b, hp, wp, 3 * c)
        local = self.window_attention(qkv_image)[:, :h, :w].reshape(b, h * w, c)
        if not n_global:
            return self.proj(local)
        q_image, k_image, v_image = split_heads(qkv_image[:, :h, :w].reshape(b, h * w, 3 * c), 3, self.heads)
        q_global = split_heads(qkv[:, :n_global], 3, self.heads)[0]
        aggregated = merge_heads(attend(q_global, k_image, v_image))  # global tokens <- all image tokens
        k_global, v_global = split_heads(self.kv_global(aggregated), 2, self.heads)
        image_out = local + merge_heads(attend(q_image, k_global, v_global))  # image tokens <- global tokens
        return self.proj(torch.cat([aggregated, image_out], dim=1))


class BiAttn(nn.Module):
    """Bi-dimensional gate: x * sigmoid(channel logits from the token mean) * sigmoid(per-token spatial logits)."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        reduced = reduced_width(width, knobs)
        self.norm = ops.ln(width)
        self.global_reduce = ops.linear(width, reduced)
        self.local_reduce = ops.linear(width, reduced)
        self.channel_select = ops.linear(reduced, width)
        self.spatial_select = ops.linear(2 * reduced, 1, in_parts=2)
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.channel_gate, self.spatial_gate = knobs.get("channel_gate", True), knobs.get("spatial_gate", True)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        reduced = reduced_width(width, knobs)
        set_out(self.global_reduce, reduced)
        set_out(self.local_reduce, reduced)
        set_out(self.channel_select, width)
        self.configure(knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        pooled = F.gelu(self.global_reduce(z.mean(1, keepdim=True)))  # [B, 1, r]; global tokens included
        gate = None
        if self.channel_gate:
            gate = torch.sigmoid(self.channel_select(pooled))  # [B, 1, C]
        if self.spatial_gate:
            local = F.gelu(self.local_reduce(z))
            pooled_per_token = pooled.expand(-1, z.shape[1], -1)
            spatial = torch.sigmoid(self.spatial_select(torch.cat([local, pooled_per_token], dim=-1)))  # [B, N, 1]
            gate = spatial if gate is None else gate * spatial
        return x if gate is None else x * gate


@register_ffn("biattn")
class BiAttnMlp(nn.Module):
    """LightViT's FFN: fc1 -> GELU -> fc2, then the BiAttn gate (the block adds the residual)."""

    def __init__(self, width: int, hidden: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.fc1 = ops.linear(width, hidden)
        self.fc2 = ops.linear(hidden, width)
        self.gate = BiAttn(width, knobs, ops)
        init_linears(self)

    def set_active(self, width: int, hidden: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.fc1, hidden)
        set_out(self.fc2, width)
        self.gate.set_active(width, knobs)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        return self.gate(self.fc2(F.gelu(self.fc1(x))))


@register_transition("merge")
class ResidualMergePatch(nn.Module):
    """Stride 2: LN(4C) -> Linear over each 2x2 patch, plus max-pool(2) -> Linear. Stride 1: LN -> Linear."""

    def __init__(self, c_in: int, width: int, stride: int, ops: Ops) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"downsample merge: stride {stride} is not supported (use 1 or 2)")
        self.stride = stride
        patch = 4 if stride == 2 else 1
        self.norm = ops.ln(patch * c_in, parts=patch)
        self.reduction = ops.linear(patch * c_in, width, bias=False, in_parts=patch)
        self.res_proj = ops.linear(c_in, width, bias=False) if stride == 2 else None
        init_linears(self)

    def set_active(self, width: int) -> None:
        set_out(self.reduction, width)
        if self.res_proj is not None:
            set_out(self.res_proj, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return tokens_to_map(self.reduction(self.norm(map_to_tokens(x))), (x.shape[2], x.shape[3]))
        x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # odd maps: zero row/column, as the detection code
        residual = self.res_proj(map_to_tokens(F.max_pool2d(x, 2)))
        # channel order of the released code: (even row, even col), (odd, even), (even, odd), (odd, odd)
        patches = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
        out = self.reduction(self.norm(map_to_tokens(patches))) + residual
        return tokens_to_map(out, (patches.shape[2], patches.shape[3]))


class GlobalTokenProjection(nn.Module):
    """The merge's path for the global tokens: LN(C_in) -> Linear(C_in -> width, no bias)."""

    def __init__(self, c_in: int, width: int, ops: Ops) -> None:
        super().__init__()
        self.norm = ops.ln(c_in)
        self.proj = ops.linear(c_in, width, bias=False)
        init_linears(self)

    def set_active(self, width: int) -> None:
        set_out(self.proj, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tokens))


@register_family("lightvit", KNOBS, "LightViT local window + global-token attention", check_stage, uses_tokens=True)
class LightViTStage(TransformerStage):
    MIXER = LightViTAttention
    NORM_EPS = BLOCK_NORM_EPS


def check_stem(stride: int, knobs: Mapping[str, Any]) -> str | None:
    return None if stride == 8 else f"stride: the lightvit stem has stride 8, got {stride}"


@register_stem("lightvit", {}, "LightViT's stride-8 convolutional stem", check=check_stem)
class LightViTStem(nn.Module):
    """conv3x3/2 (C/2) -> DW3x3 -> DW3x3 -> DW3x3/2 -> conv3x3/2 (C, bias), BN + GELU after each but the last,
    then a LayerNorm over channels. Stride 8 only."""

    def __init__(self, c_in: int, width: int, stride: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        if stride != 8:
            raise ValueError(f"the lightvit stem has stride 8, got stride {stride}")
        half = width // 2
        self.layers = nn.Sequential(
            ops.conv(c_in, half, 3, 2), ops.bn(half), nn.GELU(),
            ops.dwconv(half, 3), ops.bn(half), nn.GELU(),
            ops.dwconv(half, 3), ops.bn(half), nn.GELU(),
            ops.dwconv(half, 3, 2), ops.bn(half), nn.GELU(),
        )
        self.proj = ops.conv(half, width, 3, 2, bias=True)
        self.norm = ops.ln(width)

    def set_active(self, width: int) -> None:
        set_out(self.layers[0], width // 2)
        set_out(self.proj, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.layers(x))
        return tokens_to_map(self.norm(map_to_tokens(x)), (x.shape[2], x.shape[3]))


@register_head("lightvit", {}, "LightViT: LayerNorm, per-token neck, mean over all tokens, classifier")
class LightViTHead(nn.Module):
    """LN -> per-token neck Linear(C -> width) -> LN -> GELU -> mean over all tokens -> classifier."""

    def __init__(self, c_in: int, width: int, num_classes: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.norm = ops.ln(c_in, BLOCK_NORM_EPS)
        self.neck = ops.linear(c_in, width)
        self.neck_norm = ops.ln(width)
        self.classifier = ops.linear(width, num_classes)
        init_linears(self)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.neck, width)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        seq = map_to_tokens(x)
        if tokens is not None:
            seq = torch.cat([tokens, seq], dim=1)
        seq = F.gelu(self.neck_norm(self.neck(self.norm(seq))))
        return self.classifier(seq.mean(1))


_RELEASED_PREFIXES = (  # released top-level key prefix -> ours, first match wins
    ("patch_embed.stem.", "stem.layers."), ("patch_embed.", "stem."), ("global_token", "global_tokens"),
    ("norm.", "head.norm."), ("neck.0.", "head.neck."), ("neck.1.", "head.neck_norm."), ("head.", "head.classifier."),
)


def _our_key(key: str) -> str:
    stage = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key)
    if stage is None:
        for released, ours in _RELEASED_PREFIXES:
            if key.startswith(released):
                return ours + key[len(released):]
        raise KeyError(f"{key} is not a key of a released LightViT")
    index, layer, rest = int(stage[1]), int(stage[2]), stage[3]
    if index and layer == 0:  # the ResidualMergePatch: its global-token path is the network's projection
        if rest.startswith(("norm2.", "proj.")):
            return f"token_projections.{index}." + rest.replace("norm2.", "norm.")
        return f"stages.{index}.down.{rest}"
    for released, ours in (("attn.", "mixer."), ("mlp.attn.", "ffn.gate."), ("mlp.", "ffn.")):
        if rest.startswith(released):
            rest = ours + rest[len(released):]
            break
    return f"stages.{index}.blocks.{layer - (index > 0)}.{rest}"


def released_state_dict_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A released LightViT classification checkpoint (hunto/image_classification_sota) as the state dict of the
    `HybridNet` built from the same config (see search_spaces/reference/lightvit_*.yaml)."""
    converted = {}
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            continue  # rebuilt from the window size
        if key.endswith("relative_position_bias_table"):  # [(2ws-1)^2, heads] -> [1, heads, 2ws-1, 2ws-1]
            side = math.isqrt(value.shape[0])
            value = value.t().reshape(1, value.shape[1], side, side)
        converted[_our_key(key)] = value
    return converted
