"""LVT, Lite Vision Transformer (Yang et al., CVPR 2022, arXiv 2112.10809): CSA and RASA.

Follows the released code (Chenglin-Yang/LVT `classification/models/lvt.py`, `lvt_cls.py`) operation for
operation; the initialisation is the released one too.

* `CSA` (convolutional self-attention, stage 1): for each k x k window (stride s, padding k // 2) the k^2 x k^2
  attention matrix is *generated* by a linear layer from the average-pooled window content (VOLO's outlook
  attention), not computed from q.k. Window slot j's content goes through its own C x C matrix W_j (the
  released grouped 1x1 conv with k^2 groups); output slot i of a window is sum_j a_ij W_j x_j per head; the
  windows are folded back onto the map, overlaps summed; then a projection.
* `RASA` (recursive atrous self-attention, stages 2-4): the query is replaced by sum over dilations of
  SiLU(DWconv3x3_dilation(q)), with ONE depthwise kernel shared by all dilations; keys and values come from a
  map reduced by an sr x sr, stride-sr conv + LayerNorm; with recursion r > 1 the attention is applied r times
  with shared weights: y = SiLU(SA(x)), then x <- y + x, y = SiLU(SA(x)) r - 1 times. The block's LayerNorm is
  applied once, before the recursion.
* `DWConvMlp`: fc1 -> depthwise 3x3 (bias) -> GELU -> fc2. The released fc1/fc2 are 1x1 convs with bias; here
  they are the equivalent linears on tokens.
* `ConvEmbed`: LVT's OverlapPatchEmbed between stages: conv 3x3 stride 2 padding 1 (bias) + LayerNorm.
* `ClassAttentionHead` (`lvt_cls`, VOLO's post layers): a class token, class-attention blocks (only the class
  token queries; keys/values from all tokens; the MLP runs on the class token), LayerNorm, then
  head(cls) + aux_weight * max over tokens of aux_head(tokens), the released inference output.

Choices of ours:

* Token labelling and MixToken (the released training, with an NFNet teacher's dense label maps) are not
  reproduced: the head returns the summed logits in training too, and we train on them.
* Global tokens (LightViT's) are ignored by CSA and RASA (zero output rows) and by the class-attention head;
  DWConvMlp runs them through fc1 -> GELU -> fc2 without the depthwise conv.
* CSA's slot matrices W_j are stored as one k x k conv weight [C, C, k, k] (W_j = weight[:, :, j // k, j % k])
  rather than the released [k^2 C, C, 1, 1] grouped weight, so that a smaller kernel shares the centre slots.
  A smaller sr shares the centre of the sr conv's kernel. `dilations: []` is the released RASA without atrous
  rates (plain query; no depthwise weight); `recursion: 1` has no SiLU, as released.
* `ConvEmbed` with stride 1 (width change only) is a 3x3 conv + LN; with stride s > 2 its kernel is 2s - 1
  (7 for stride 4, as LVT's stem).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.blocks.transformer import (Mlp, TransformerStage, attend, check_heads, ffn_hidden, init_linears,
                                         map_to_tokens, merge_heads, tokens_to_map, transformer_knobs,
                                         with_global_rows)
from supernet.knobs import Knob, is_int, is_number
from supernet.ops import Ops, centre_kernel, set_out
from supernet.registry import register_family, register_ffn, register_head, register_transition

NORM_EPS = 1e-5  # every LayerNorm of LVT is torch's default

CSA_KNOBS = {
    **transformer_knobs("mlp", "conv"),
    # CSA generates heads * kernel^4 attention logits per window, so the supernet is built for the most heads.
    "heads": Knob(lambda v: is_int(v) and v >= 1, "a number of attention heads >= 1 (must divide the width)", True),
    "kernel": Knob(lambda v: is_int(v) and v >= 1 and v % 2 == 1, "an odd window side >= 1", True, default=3),
    "csa_stride": Knob(lambda v: is_int(v) and v >= 1, "a step between windows >= 1 (at most the kernel)",
                       default=2),
}


def _is_dilation_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(is_int(d) and d >= 1 for d in value)


RASA_KNOBS = {
    **transformer_knobs("dwconv", "conv"),
    # An empty list is a plain query (no depthwise weight), so the supernet is built for a non-empty one.
    "dilations": Knob(_is_dilation_list, "a list of dilations >= 1 for the query's atrous branches (one shared "
                      "depthwise 3x3 kernel; [] for a plain query)", True, default=[1, 3, 5]),
    "recursion": Knob(lambda v: is_int(v) and v >= 1, "a number of attention passes >= 1 (shared weights)",
                      default=2),
    "sr": Knob(lambda v: is_int(v) and v >= 1, "a key/value reduction ratio >= 1 (conv kernel = stride = sr; "
               "must divide the stage's map side)", True),
}

CLASS_HEAD_KNOBS = {
    "blocks": Knob(lambda v: is_int(v) and v >= 1, "a number of class-attention blocks >= 1", True, default=2),
    "heads": Knob(lambda v: is_int(v) and v >= 1,
                  "a number of attention heads >= 1 (head dim = final width // heads)", default=8),
    "mlp_ratio": Knob(lambda v: is_number(v) and v > 0, "a number > 0 (class-block MLP hidden width / width)", True,
                      default=4),
    "aux_weight": Knob(lambda v: is_number(v) and v >= 0,
                       "a number >= 0 (weight of the max-over-tokens auxiliary logits)", default=0.5),
}


def check_csa_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    problem = check_heads(width, knobs)
    if problem:
        return problem
    if knobs["csa_stride"] > knobs["kernel"]:
        return (f"knob csa_stride: {knobs['csa_stride']} is larger than kernel {knobs['kernel']}, so pixels "
                f"between windows would get no output (use a stride of at most the kernel)")
    return None


def check_rasa_stage(width: int, knobs: Mapping[str, Any], map_size: int) -> str | None:
    problem = check_heads(width, knobs)
    if problem:
        return problem
    sr = knobs["sr"]
    if sr > map_size:
        return f"knob sr: {sr} is larger than the {map_size}x{map_size} map of this stage"
    if map_size % sr:
        return (f"knob sr: {sr} does not divide the {map_size}x{map_size} map of this stage (the key/value "
                f"reduction would drop the last {map_size % sr} rows and columns)")
    return None


def check_class_head(width: int, knobs: Mapping[str, Any]) -> str | None:
    if width % knobs["heads"]:
        return f"knob heads: the final width {width} is not divisible by {knobs['heads']}"
    return None


def init_conv(conv: nn.Conv2d) -> None:
    """The released conv initialisation: normal(0, sqrt(2 / fan_out)), zero bias."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class CSA(nn.Module):
    """Convolutional self-attention over the image tokens: generated window attention, slot-specific values."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        kernel = knobs["kernel"]
        self.attn = ops.linear(width, knobs["heads"] * kernel ** 4)
        self.value = ops.conv(width, width, kernel)  # only its weight is used: W_j = weight[:, :, j // k, j % k]
        self.proj = ops.linear(width, width)
        init_linears(self)
        nn.init.normal_(self.value.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * width)))
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.kernel, self.stride = knobs["heads"], knobs["kernel"], knobs["csa_stride"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        self.configure(knobs)
        set_out(self.attn, self.heads * self.kernel ** 4)
        set_out(self.value, width, self.kernel)
        set_out(self.proj, width)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        image = tokens_to_map(x[:, n_global:], hw)
        b, c = image.shape[:2]
        k, s, heads = self.kernel, self.stride, self.heads
        slots = k * k
        # One window per stride step: ceil(H / s) x ceil(W / s) windows, as many as the pooled map has pixels.
        pooled = F.avg_pool2d(image, s, s, ceil_mode=True) if s > 1 else image
        n = pooled.shape[2] * pooled.shape[3]
        attn = self.attn(map_to_tokens(pooled)).reshape(b, n, heads, slots, slots).transpose(1, 2)
        attn = (attn * (c // heads) ** -0.5).softmax(dim=-1)  # [B, heads, N, out slot i, in slot j]
        windows = F.unfold(image, k, padding=k // 2, stride=s).reshape(b, c, slots, n)
        weight = centre_kernel(self.value.weight[:c, :c], k).reshape(c, c, slots).permute(2, 1, 0)  # [j, in, out]
        values = windows.permute(2, 0, 3, 1).reshape(slots, b * n, c) @ weight  # slot j through W_j
        values = values.reshape(slots, b, n, heads, c // heads).permute(1, 3, 2, 0, 4)  # [B, heads, N, j, d]
        out = (attn @ values).permute(0, 1, 4, 3, 2).reshape(b, c * slots, n)  # channel-major, as unfold
        out = F.fold(out, hw, k, padding=k // 2, stride=s)  # overlapping window outputs are summed
        return with_global_rows(self.proj(map_to_tokens(out)), n_global)


class RASA(nn.Module):
    """Recursive atrous self-attention over the image tokens, keys/values from an sr-reduced map."""

    def __init__(self, width: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.q = ops.linear(width, width, bias=False)
        self.kv = ops.linear(width, 2 * width, bias=False, out_parts=2)
        self.proj = ops.linear(width, width)
        init_linears(self)
        self.query_dw = None
        if knobs["dilations"]:
            self.query_dw = ops.dwconv(width, 3)  # one kernel for every dilation, no bias
            nn.init.kaiming_uniform_(self.query_dw.weight)
        self.sr, self.sr_norm = None, None
        if knobs["sr"] > 1:
            self.sr = ops.conv(width, width, knobs["sr"], knobs["sr"], bias=True, padding=0)
            init_conv(self.sr)
            self.sr_norm = ops.ln(width, NORM_EPS)
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.dilations = knobs["heads"], tuple(knobs["dilations"])
        self.recursion, self.sr_ratio = knobs["recursion"], knobs["sr"]

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        self.configure(knobs)
        set_out(self.q, width)
        set_out(self.kv, 2 * width)
        set_out(self.proj, width)
        if self.sr is not None:
            set_out(self.sr, width, self.sr_ratio)

    def atrous_query(self, q: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        c = q.shape[2]
        q_map, weight = tokens_to_map(q, hw), self.query_dw.weight[:c]
        q_map = sum(F.silu(F.conv2d(q_map, weight, None, 1, d, d, c)) for d in self.dilations)
        return map_to_tokens(q_map)

    def reduced(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        c, sr = x.shape[2], self.sr_ratio
        weight = centre_kernel(self.sr.weight[:c, :c], sr)
        x = F.conv2d(tokens_to_map(x, hw), weight, self.sr.bias[:c], stride=sr)
        return self.sr_norm(map_to_tokens(x))

    def attention(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(x)
        if self.dilations:
            q = self.atrous_query(q, hw)
        q = q.reshape(b, n, heads, d).transpose(1, 2)
        kv_source = self.reduced(x, hw) if self.sr_ratio > 1 else x
        k, v = self.kv(kv_source).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * d ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        image = x[:, n_global:]
        out = self.attention(image, hw)
        if self.recursion > 1:
            out = F.silu(out)
            for _ in range(self.recursion - 1):
                image = out + image
                out = F.silu(self.attention(image, hw))
        return with_global_rows(out, n_global)


@register_ffn("dwconv")
class DWConvMlp(nn.Module):
    """fc1 -> depthwise 3x3 -> GELU -> fc2 (LVT's stages 2-4 MLP); global rows skip the depthwise conv."""

    def __init__(self, width: int, hidden: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        # Released as 1x1 convs with torch's default initialisation, which is the same as a linear's.
        self.fc1 = ops.linear(width, hidden)
        self.dw = ops.dwconv(hidden, 3, bias=True)
        self.fc2 = ops.linear(hidden, width)

    def set_active(self, width: int, hidden: int, knobs: Mapping[str, Any]) -> None:
        set_out(self.fc1, hidden)
        set_out(self.fc2, width)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], n_global: int) -> torch.Tensor:
        x = self.fc1(x)
        image = map_to_tokens(self.dw(tokens_to_map(x[:, n_global:], hw)))
        x = torch.cat([x[:, :n_global], image], dim=1) if n_global else image
        return self.fc2(F.gelu(x))


@register_transition("conv")
class ConvEmbed(nn.Module):
    """Transition: overlapping conv (3x3 for stride 1 or 2, padding k // 2, bias) + LayerNorm."""

    def __init__(self, c_in: int, width: int, stride: int, ops: Ops) -> None:
        super().__init__()
        self.conv = ops.conv(c_in, width, max(3, 2 * stride - 1), stride, bias=True)
        init_conv(self.conv)
        self.norm = ops.ln(width, NORM_EPS)

    def set_active(self, width: int) -> None:
        set_out(self.conv, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return tokens_to_map(self.norm(map_to_tokens(x)), (x.shape[2], x.shape[3]))


class LVTStage(TransformerStage):
    """A pre-norm LVT stage; plain MLPs get the released truncated-normal initialisation."""

    NORM_EPS = NORM_EPS

    def __init__(self, c_in: int, width: int, depth: int, stride: int, knobs: Mapping[str, Any],
                 elastic: bool = False) -> None:
        super().__init__(c_in, width, depth, stride, knobs, elastic)
        for block in self.blocks:
            if isinstance(block.ffn, Mlp):
                init_linears(block.ffn)


@register_family("csa", CSA_KNOBS, "LVT convolutional self-attention", check_csa_stage, uses_tokens=True)
class CSAStage(LVTStage):
    MIXER = CSA


@register_family("rasa", RASA_KNOBS, "LVT recursive atrous self-attention", check_rasa_stage, uses_tokens=True)
class RASAStage(LVTStage):
    MIXER = RASA


class ClassBlock(nn.Module):
    """VOLO/CaiT class-attention block: the class token attends to all tokens, then an MLP on it alone."""

    def __init__(self, width: int, inner: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        self.norm1 = ops.ln(width, NORM_EPS)
        self.q = ops.linear(width, inner, bias=False)
        self.kv = ops.linear(width, 2 * inner, bias=False, out_parts=2)
        self.proj = ops.linear(inner, width)
        self.norm2 = ops.ln(width, NORM_EPS)
        self.mlp = Mlp(width, ffn_hidden(width, knobs["mlp_ratio"]), {}, ops)
        self.elastic = ops.elastic
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.heads, self.mlp_ratio = knobs["heads"], knobs["mlp_ratio"]

    def fit(self, width: int) -> None:
        """Elastic: the active output widths for an input of `width` channels (a head learns it only here)."""
        inner = self.heads * (width // self.heads)
        set_out(self.q, inner)
        set_out(self.kv, 2 * inner)
        set_out(self.proj, width)
        self.mlp.set_active(width, ffn_hidden(width, self.mlp_ratio), {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.elastic:
            self.fit(c)
        heads, d = self.heads, c // self.heads
        normed = self.norm1(x)
        k, v = self.kv(normed).reshape(b, n, 2, heads, d).permute(2, 0, 3, 1, 4)
        q = self.q(normed[:, :1]).reshape(b, 1, heads, d).transpose(1, 2)
        cls = x[:, :1] + self.proj(merge_heads(attend(q, k, v)))
        cls = cls + self.mlp(self.norm2(cls), (1, 1), 0)
        return torch.cat([cls, x[:, 1:]], dim=1)


@register_head("class_attention", CLASS_HEAD_KNOBS,
               "LVT: class token + class-attention blocks, head(cls) + aux token head", has_width=False,
               check=check_class_head)
class ClassAttentionHead(nn.Module):
    """LVT's classifier (`lvt_cls`): class token + class-attention blocks, LN, head(cls) + aux max-token logits.

    Width-less: works at the final stage's width. Global tokens, if any, are not used.
    """

    def __init__(self, c_in: int, width: int, num_classes: int, knobs: Mapping[str, Any], ops: Ops) -> None:
        super().__init__()
        heads = knobs["heads"]
        inner = c_in if ops.elastic else heads * (c_in // heads)  # elastic: room for any number of heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c_in))
        self.blocks = nn.ModuleList(ClassBlock(c_in, inner, knobs, ops) for _ in range(knobs["blocks"]))
        self.norm = ops.ln(c_in, NORM_EPS)
        self.head = ops.linear(c_in, num_classes)
        self.aux_head = ops.linear(c_in, num_classes)
        init_linears(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.depth, self.aux_weight = knobs["blocks"], knobs["aux_weight"]
        for block in self.blocks:
            block.configure(knobs)

    def set_active(self, width: int, knobs: Mapping[str, Any]) -> None:
        self.configure(knobs)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        seq = map_to_tokens(x)
        b, _, c = seq.shape
        seq = torch.cat([self.cls_token[:, :, :c].expand(b, -1, -1), seq], dim=1)
        for block in self.blocks[: self.depth]:
            seq = block(seq)
        seq = self.norm(seq)
        return self.head(seq[:, 0]) + self.aux_weight * self.aux_head(seq[:, 1:]).amax(dim=1)
