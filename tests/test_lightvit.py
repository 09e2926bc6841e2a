"""LightViT blocks: the attention against explicit full-attention references, padding, global tokens, BiAttn,
the merge, elastic slicing, any input size, ONNX export."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from nas.arch import Arch, load_arch
from nas.complexity import count_macs, count_params
from nas.errors import NasError
from nas.export import export_onnx, onnx_session, verify_onnx
from supernet.blocks import lightvit
from supernet.blocks.transformer import map_to_tokens, tokens_to_map
from supernet.network import build
from supernet.ops import Ops, copy_sliced_state

STATIC = Ops(False)
REFERENCE = Path(__file__).resolve().parents[1] / "search_spaces" / "reference"
# The released models (hunto/image_classification_sota lightvit_tiny/small/base): parameters, and fvcore MACs at
# 224 counted on the released code (ours adds the max-pools, which our counter counts: +0.01 %).
RELEASED = {"t": (9_377_698, 0.781e9), "s": (19_200_248, 1.839e9), "b": (35_195_653, 4.129e9)}


def knobs(**overrides):
    defaults = {name: knob.default for name, knob in lightvit.KNOBS.items() if name not in ("heads", "mlp_ratio")}
    return {**defaults, "heads": 2, "mlp_ratio": 2, **overrides}


def randomise(module, seed=0):
    """Weights large enough that attention is far from uniform and every path matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def mixer(width=16, **knob_values):
    module = lightvit.LightViTAttention(width, knobs(**knob_values), STATIC)
    randomise(module)
    return module.eval()


def full_attention_reference(module, x, hw, window):
    """Image tokens only: proj(softmax(q k^T / sqrt(d) + bias) v) over ALL tokens of the map, the bias read from
    the table by explicit (dy, dx) offsets and -inf between tokens of different windows."""
    h, w = hw
    b, n, c = x.shape
    heads = module.heads
    q, k, v = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(b, n, 3, heads, c // heads).permute(
        2, 0, 3, 1, 4)
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    dy, dx = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
    same_window = (rows[:, None] // window == rows[None, :] // window) & (cols[:, None] // window
                                                                          == cols[None, :] // window)
    table = module.relative_position_bias_table[0]  # [heads, 2ws-1, 2ws-1], offsets -(ws-1)..ws-1
    offset_bias = table[:, (dy + window - 1).clamp(0, 2 * window - 2), (dx + window - 1).clamp(0, 2 * window - 2)]
    bias = torch.where(same_window, offset_bias, float("-inf"))
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5 + bias).softmax(-1)
    return module.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("hw, window", [((7, 7), 7), ((14, 14), 7), ((8, 12), 4), ((6, 6), 3)])
@torch.no_grad()
def test_window_attention_is_full_attention_masked_to_windows(hw, window):
    module = mixer(window=window)
    x = torch.randn(2, hw[0] * hw[1], 16)
    expected = full_attention_reference(module, x, hw, window)
    assert torch.allclose(module(x, hw, 0), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_padding_acts_like_zero_tokens_at_the_bottom_right():
    module = mixer(window=4)
    x = torch.randn(2, 5 * 6, 16)
    padded = F.pad(x.reshape(2, 5, 6, 16), (0, 0, 0, 2, 0, 3)).reshape(2, 64, 16)  # 5x6 -> 8x8
    expected = module(padded, (8, 8), 0).reshape(2, 8, 8, 16)[:, :5, :6].reshape(2, 30, 16)
    assert torch.allclose(module(x, (5, 6), 0), expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_global_tokens_aggregate_the_image_and_broadcast_back():
    module, n_global, hw = mixer(), 3, (7, 7)
    x = torch.randn(2, n_global + 49, 16)
    out = module(x, hw, n_global)
    assert out.shape == x.shape
    # Global queries attend to image tokens only: another global token's input does not reach a global row.
    nudged = x.clone()
    nudged[:, 1] += 1.0
    out_nudged = module(nudged, hw, n_global)
    assert torch.allclose(out_nudged[:, 0], out[:, 0], atol=1e-6) and torch.allclose(out_nudged[:, 2], out[:, 2],
                                                                                      atol=1e-6)
    # ... but every image token hears it through the broadcast, and without global tokens it is local only.
    assert (out_nudged[:, n_global:] - out[:, n_global:]).abs().amax(-1).min() > 1e-4
    assert not torch.allclose(module(x[:, n_global:], hw, 0), out[:, n_global:], atol=1e-3)
    # The global rows: proj(softmax(q_g k_img^T / sqrt(d)) v_img), written out.
    b, c, heads = 2, 16, module.heads
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0][:, :, :n_global], qkv[1][:, :, n_global:], qkv[2][:, :, n_global:]
    aggregated = ((q @ k.transpose(-2, -1)) / (c // heads) ** 0.5).softmax(-1) @ v
    assert torch.allclose(out[:, :n_global], module.proj(aggregated.transpose(1, 2).reshape(b, n_global, c)),
                          atol=1e-5)


def test_parameters_do_not_depend_on_the_number_of_global_tokens():
    stage = lightvit.LightViTStage(16, 32, 2, 2, knobs())
    randomise(stage)
    x = torch.randn(2, 16, 8, 8)
    out0, none = stage(x)
    out4, tokens = stage(x, torch.randn(2, 4, 32))
    assert none is None and tokens.shape == (2, 4, 32) and out0.shape == out4.shape == (2, 32, 4, 4)
    assert not torch.allclose(out0, out4, atol=1e-3)  # the tokens change the image output
    names = {name for name, _ in stage.named_parameters()}
    assert any("kv_global" in name for name in names)
    assert count_params(stage) == count_params(lightvit.LightViTStage(16, 32, 2, 2, knobs()))


@pytest.mark.parametrize("channel_gate, spatial_gate", [(True, True), (True, False), (False, True), (False, False)])
@torch.no_grad()
def test_biattn_gates(channel_gate, spatial_gate):
    ffn = lightvit.BiAttnMlp(16, 32, knobs(channel_gate=channel_gate, spatial_gate=spatial_gate), STATIC)
    randomise(ffn)
    x = torch.randn(2, 10, 16)
    y = ffn.fc2(F.gelu(ffn.fc1(x)))
    gate = ffn.gate
    z = F.layer_norm(y, (16,), gate.norm.weight, gate.norm.bias, 1e-5)
    pooled = F.gelu(gate.global_reduce(z.mean(1, keepdim=True)))
    channel = torch.sigmoid(gate.channel_select(pooled)) if channel_gate else 1
    spatial = torch.sigmoid(gate.spatial_select(torch.cat([F.gelu(gate.local_reduce(z)), pooled.expand(-1, 10, -1)],
                                                          -1))) if spatial_gate else 1
    assert gate.global_reduce.out_features == 4  # act_ratio 0.25
    assert torch.allclose(ffn(x, (3, 3), 1), y * channel * spatial, atol=1e-6)


@torch.no_grad()
def test_residual_merge_patch_on_an_odd_map():
    merge = lightvit.ResidualMergePatch(4, 6, 2, STATIC)
    randomise(merge)
    x = torch.randn(1, 4, 3, 5)
    out = merge(x)
    assert out.shape == (1, 6, 2, 3)
    padded = F.pad(x, (0, 1, 0, 1))
    for i in range(2):
        for j in range(3):
            patch = padded[0, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2]  # [C, 2 (row), 2 (col)]
            concat = patch.permute(2, 1, 0).reshape(-1)  # (row 0, col 0), (1, 0), (0, 1), (1, 1)
            expected = merge.reduction(merge.norm(concat)) + merge.res_proj(patch.amax((1, 2)))
            assert torch.allclose(out[0, :, i, j], expected, atol=1e-5)


def test_stride_one_merge_changes_the_width_only():
    merge = lightvit.ResidualMergePatch(8, 12, 1, STATIC)
    assert merge(torch.randn(2, 8, 5, 5)).shape == (2, 12, 5, 5)
    with pytest.raises(ValueError, match="stride 4"):
        lightvit.ResidualMergePatch(8, 12, 4, STATIC)


def test_check_stage_names_the_knob():
    assert lightvit.check_stage(64, knobs(heads=2), 7) is None
    assert "knob heads" in lightvit.check_stage(64, knobs(heads=3), 7)
    assert "knob window" in lightvit.check_stage(64, knobs(window=14), 7)
    assert "knob act_ratio" in lightvit.check_stage(2, knobs(heads=1, act_ratio=0.25), 7)


@torch.no_grad()
def test_elastic_stage_matches_the_static_stage_it_yields():
    largest = knobs(heads=4, window=7, mlp_ratio=4, act_ratio=0.5)
    supernet_stage = lightvit.LightViTStage(16, 32, 2, 2, largest, elastic=True)
    randomise(supernet_stage)
    active = knobs(heads=2, window=3, mlp_ratio=2, act_ratio=0.25)
    supernet_stage.set_active(16, 24, 1, active)
    static = lightvit.LightViTStage(16, 24, 1, 2, active)
    copy_sliced_state(static, supernet_stage)
    x, tokens = torch.randn(2, 16, 10, 10), torch.randn(2, 3, 24)
    for got, expected in zip(supernet_stage.eval()(x, tokens), static.eval()(x, tokens)):
        assert torch.allclose(got, expected, atol=1e-5)


def tiny_arch(global_tokens=2, resolution=224, window=7):
    """A three-stage LightViT at tiny widths (at 224 the maps are 28/14/7)."""
    stage_knobs = {"heads": 2, "mlp_ratio": 2, "window": window}
    stages = [{"family": "lightvit", "depth": 1, "width": width, "stride": stride, "knobs": stage_knobs}
              for width, stride in ((16, 1), (32, 2), (32, 2))]
    return {"resolution": resolution, "in_channels": 3, "num_classes": 10, "global_tokens": global_tokens,
            "stem": {"type": "lightvit", "width": 16, "stride": 8}, "stages": stages,
            "head": {"type": "lightvit", "width": 48}}


def tiny_lightvit(global_tokens=2):
    return build(Arch.from_dict(tiny_arch(global_tokens)))


def test_any_input_size_from_96_to_320_runs_forward_and_backward():
    torch.manual_seed(0)
    model = tiny_lightvit()
    for size in range(96, 321, 32):
        model.zero_grad()
        out = model(torch.randn(1, 3, size, size))
        assert out.shape == (1, 10)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters()), size


@torch.no_grad()
def test_head_averages_over_image_and_global_tokens():
    head = lightvit.LightViTHead(8, 12, 5, {}, STATIC)
    randomise(head)
    x, tokens = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 8)
    seq = torch.cat([tokens, map_to_tokens(x)], 1)
    neck = F.gelu(head.neck_norm(head.neck(F.layer_norm(seq, (8,), head.norm.weight, head.norm.bias, 1e-6))))
    assert torch.allclose(head(x, tokens), head.classifier(neck.mean(1)), atol=1e-6)
    assert tokens_to_map(map_to_tokens(x), (3, 3)).equal(x)


@pytest.mark.parametrize("size", [96, 160])
def test_onnx_export_matches_onnxruntime(tmp_path, size):
    torch.manual_seed(0)
    model = tiny_lightvit().eval()
    path = export_onnx(model, 3, size, tmp_path / "lightvit.onnx")
    assert verify_onnx(model, onnx_session(path), torch.randn(1, 3, size, size)) < 1e-4


@pytest.mark.parametrize("variant", ["t", "s", "b"])
def test_reference_archs_have_the_released_parameter_count(variant):
    arch = load_arch(REFERENCE / f"lightvit_{variant}.yaml")
    assert arch.name == f"LightViT-{variant.upper()}"
    with torch.device("meta"):
        net = build(arch)
    assert count_params(net) == RELEASED[variant][0]


def test_lightvit_t_has_the_released_macs():
    macs = count_macs(build(load_arch(REFERENCE / "lightvit_t.yaml")), (1, 3, 224, 224))
    assert abs(macs / RELEASED["t"][1] - 1) < 0.001


def test_global_tokens_add_only_their_own_parameters():
    assert count_params(tiny_lightvit(8)) - count_params(tiny_lightvit(2)) == 6 * 16


def test_a_window_larger_than_the_map_is_refused_at_validation():
    Arch.from_dict(tiny_arch(resolution=224, window=7))
    with pytest.raises(NasError, match="knob window: 7 is larger than the 6x6 map"):
        Arch.from_dict(tiny_arch(resolution=96, window=7))
