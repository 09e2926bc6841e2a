"""LVT blocks: CSA against a per-window loop, RASA's recursion and dilations, global rows, the class-attention
head, elastic slicing, validation, the released parameter and MAC counts, any input size, ONNX export."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas.arch import Arch, load_arch
from nas.complexity import count_macs, count_params
from nas.errors import NasError
from nas.export import export_onnx, onnx_session, verify_onnx
from supernet.blocks import lvt
from supernet.blocks.transformer import map_to_tokens, tokens_to_map
from supernet.network import build
from supernet.ops import Ops, copy_sliced_state

STATIC = Ops(False)
REFERENCE = Path(__file__).resolve().parents[1] / "search_spaces" / "reference"
# Counted on the released code (Chenglin-Yang/LVT lvt_cls and lvt, rasa_cfg of configs/lvt_imagenet.py) with our
# counter; plain fvcore, which skips col2im, gives 0.897G and 0.869G.
RELEASED = {"lvt": (5_521_844, 897_904_384), "lvt_gap": (3_686_604, 870_759_424)}
RELEASED_ONE_PASS_MACS = 793_390_912  # lvt_cls with r_num = 1 (same parameters)


def csa_knobs(**overrides):
    return {**{name: knob.default for name, knob in lvt.CSA_KNOBS.items()}, "heads": 1, "mlp_ratio": 2,
            **overrides}


def rasa_knobs(**overrides):
    return {**{name: knob.default for name, knob in lvt.RASA_KNOBS.items()}, "heads": 2, "mlp_ratio": 2, "sr": 2,
            **overrides}


def head_knobs(**overrides):
    return {**{name: knob.default for name, knob in lvt.CLASS_HEAD_KNOBS.items()}, **overrides}


def randomise(module, seed=0):
    """Weights large enough that attention is far from uniform and every path matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return module.eval()


def csa_window_loop(module, x, hw):
    """CSA written out window by window: generated k^2 x k^2 attention, slot j through W_j, outputs summed."""
    h, w = hw
    image = x[0].T.reshape(-1, h, w)  # [C, H, W]
    c, k, s, heads = image.shape[0], module.kernel, module.stride, module.heads
    d, pad = c // heads, k // 2
    out = torch.zeros_like(image)
    for wy in range(math.ceil(h / s)):
        for wx in range(math.ceil(w / s)):
            pooled = image[:, wy * s:wy * s + s, wx * s:wx * s + s].mean((1, 2))
            attn = module.attn(pooled).reshape(heads, k * k, k * k)
            pixels = [(wy * s - pad + j // k, wx * s - pad + j % k) for j in range(k * k)]
            inside = [0 <= py < h and 0 <= px < w for py, px in pixels]
            values = [module.value.weight[:, :, j // k, j % k] @ image[:, py, px] if inside[j] else torch.zeros(c)
                      for j, (py, px) in enumerate(pixels)]
            for head in range(heads):
                a = (attn[head] * d ** -0.5).softmax(-1)
                for i, (py, px) in enumerate(pixels):
                    if inside[i]:
                        out[head * d:(head + 1) * d, py, px] += sum(a[i, j] * values[j][head * d:(head + 1) * d]
                                                                    for j in range(k * k))
    return module.proj(out.reshape(c, -1).T)[None]


@pytest.mark.parametrize("hw, kernel, stride, heads", [((5, 6), 3, 2, 1), ((4, 4), 3, 1, 1), ((7, 5), 5, 3, 1),
                                                       ((6, 6), 3, 2, 2)])
@torch.no_grad()
def test_csa_equals_a_per_window_loop(hw, kernel, stride, heads):
    module = randomise(lvt.CSA(4, csa_knobs(kernel=kernel, csa_stride=stride, heads=heads), STATIC))
    x = torch.randn(1, hw[0] * hw[1], 4)
    assert torch.allclose(module(x, hw, 0), csa_window_loop(module, x, hw), atol=1e-5)


@pytest.mark.parametrize("mixer, knobs", [(lvt.CSA, csa_knobs(heads=2)), (lvt.RASA, rasa_knobs())])
@torch.no_grad()
def test_mixers_ignore_global_tokens(mixer, knobs):
    module = randomise(mixer(8, knobs, STATIC))
    image, tokens = torch.randn(2, 16, 8), torch.randn(2, 3, 8)
    out = module(torch.cat([tokens, image], 1), (4, 4), 3)
    assert out[:, :3].eq(0).all()
    assert torch.allclose(out[:, 3:], module(image, (4, 4), 0), atol=1e-6)


@torch.no_grad()
def test_dwconv_mlp_skips_the_depthwise_conv_for_global_rows():
    mlp = randomise(lvt.DWConvMlp(8, 16, {}, STATIC))
    image, tokens = torch.randn(2, 12, 8), torch.randn(2, 3, 8)
    out = mlp(torch.cat([tokens, image], 1), (3, 4), 3)
    assert torch.allclose(out[:, :3], mlp.fc2(F.gelu(mlp.fc1(tokens))), atol=1e-6)
    as_convs = F.conv2d(F.gelu(mlp.dw(F.conv2d(tokens_to_map(image, (3, 4)), mlp.fc1.weight[..., None, None],
                                               mlp.fc1.bias))), mlp.fc2.weight[..., None, None], mlp.fc2.bias)
    assert torch.allclose(out[:, 3:], map_to_tokens(as_convs), atol=1e-5)


@torch.no_grad()
def test_recursion_reuses_the_weights_and_applies_silu_as_released():
    one, two = lvt.RASA(8, rasa_knobs(recursion=1), STATIC), lvt.RASA(8, rasa_knobs(recursion=2), STATIC)
    assert [p.shape for p in one.parameters()] == [p.shape for p in two.parameters()]
    randomise(one), two.load_state_dict(one.state_dict())
    x = torch.randn(2, 16, 8)
    first = one(x, (4, 4), 0)
    assert torch.allclose(first, one.attention(x, (4, 4)))  # r = 1: no SiLU
    second = two(x, (4, 4), 0)
    assert not torch.allclose(first, second)
    assert torch.allclose(second, F.silu(one.attention(F.silu(first) + x, (4, 4))), atol=1e-6)


@torch.no_grad()
def test_dilations_share_one_depthwise_kernel():
    counts = {dilations: sum(p.numel() for p in lvt.RASA(8, rasa_knobs(dilations=list(dilations)), STATIC)
                             .parameters()) for dilations in [(1,), (1, 3, 5), (1, 2, 3, 5, 7)]}
    assert len(set(counts.values())) == 1
    plain = sum(p.numel() for p in lvt.RASA(8, rasa_knobs(dilations=[]), STATIC).parameters())
    assert counts[(1,)] - plain == 8 * 9  # one 3x3 depthwise kernel, no bias
    module = randomise(lvt.RASA(8, rasa_knobs(dilations=[1, 3]), STATIC))
    q = torch.randn(1, 36, 8)
    q_map = tokens_to_map(q, (6, 6))
    expected = sum(F.silu(F.conv2d(q_map, module.query_dw.weight, padding=d, dilation=d, groups=8)) for d in (1, 3))
    assert torch.allclose(module.atrous_query(q, (6, 6)), map_to_tokens(expected), atol=1e-6)


@torch.no_grad()
def test_conv_embed_strides_and_width_change():
    down = lvt.ConvEmbed(8, 16, 2, STATIC)
    assert down.conv.kernel_size == (3, 3) and down.conv.padding == (1, 1) and down.conv.bias is not None
    assert down(torch.randn(1, 8, 7, 6)).shape == (1, 16, 4, 3)
    assert lvt.ConvEmbed(8, 16, 1, STATIC)(torch.randn(1, 8, 7, 6)).shape == (1, 16, 7, 6)


@torch.no_grad()
def test_class_attention_head_logits():
    head = randomise(lvt.ClassAttentionHead(8, 0, 5, head_knobs(blocks=1, heads=2, aux_weight=0.25), STATIC))
    x = torch.randn(2, 8, 3, 3)
    seq = torch.cat([head.cls_token.expand(2, -1, -1), map_to_tokens(x)], 1)
    block = head.blocks[0]
    normed = block.norm1(seq)
    q = block.q(normed[:, :1]).reshape(2, 1, 2, 4).transpose(1, 2)
    k, v = block.kv(normed).reshape(2, 10, 2, 2, 4).permute(2, 0, 3, 1, 4)
    cls = seq[:, :1] + block.proj(((q @ k.transpose(-2, -1)) / 2).softmax(-1).matmul(v).transpose(1, 2)
                                  .reshape(2, 1, 8))
    cls = cls + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(cls))))
    seq = head.norm(torch.cat([cls, seq[:, 1:]], 1))  # the image tokens pass through unchanged
    expected = head.head(seq[:, 0]) + 0.25 * head.aux_head(seq[:, 1:]).max(1).values
    assert torch.allclose(head(x, None), expected, atol=1e-5)
    assert torch.allclose(head(x, torch.randn(2, 4, 8)), expected, atol=1e-5)  # global tokens are not used


def test_checks_name_the_knob():
    assert lvt.check_csa_stage(64, csa_knobs(heads=2), 56) is None
    assert "knob heads" in lvt.check_csa_stage(64, csa_knobs(heads=3), 56)
    assert "knob csa_stride: 4 is larger than kernel 3" in lvt.check_csa_stage(64, csa_knobs(csa_stride=4), 56)
    assert lvt.check_rasa_stage(64, rasa_knobs(sr=4), 28) is None
    assert "knob heads" in lvt.check_rasa_stage(64, rasa_knobs(heads=3), 28)
    assert "knob sr: 8 is larger than the 7x7 map" in lvt.check_rasa_stage(64, rasa_knobs(sr=8), 7)
    assert "knob sr: 4 does not divide the 14x14 map" in lvt.check_rasa_stage(64, rasa_knobs(sr=4), 14)
    assert not lvt.RASA_KNOBS["dilations"].check(3) and lvt.RASA_KNOBS["dilations"].check([])
    assert not lvt.CSA_KNOBS["kernel"].check(4)


@pytest.mark.parametrize("stage_class, largest, active", [
    (lvt.CSAStage, csa_knobs(heads=4, kernel=5, mlp_ratio=4), csa_knobs(heads=2, kernel=3, csa_stride=1)),
    (lvt.RASAStage, rasa_knobs(heads=4, sr=4, mlp_ratio=4), rasa_knobs(heads=2, sr=2, dilations=[1, 2], recursion=3)),
    (lvt.RASAStage, rasa_knobs(heads=4, sr=4), rasa_knobs(heads=2, sr=1, dilations=[])),
])
@torch.no_grad()
def test_elastic_stage_matches_the_static_stage_it_yields(stage_class, largest, active):
    supernet_stage = randomise(stage_class(16, 32, 2, 2, largest, elastic=True))
    supernet_stage.set_active(16, 24, 1, active)
    static = stage_class(16, 24, 1, 2, active)
    copy_sliced_state(static, supernet_stage)
    x, tokens = torch.randn(2, 16, 8, 8), torch.randn(2, 2, 24)
    for got, expected in zip(supernet_stage(x, tokens), static.eval()(x, tokens)):
        assert torch.allclose(got, expected, atol=1e-5)


@torch.no_grad()
def test_elastic_class_attention_head_matches_the_static_head():
    supernet_head = randomise(lvt.ClassAttentionHead(32, 0, 5, head_knobs(blocks=2, heads=4, mlp_ratio=4),
                                                     Ops(True)))
    active = head_knobs(blocks=1, heads=3, mlp_ratio=2)
    supernet_head.set_active(0, active)
    static = lvt.ClassAttentionHead(24, 0, 5, active, STATIC)
    copy_sliced_state(static, supernet_head)
    x = torch.randn(2, 24, 3, 3)
    assert torch.allclose(supernet_head(x, None), static.eval()(x, None), atol=1e-5)


def tiny_arch(resolution=224, head=None, sr=(4, 2, 1)):
    """The LVT layout at tiny widths."""
    stages = [{"family": "csa", "depth": 1, "width": 16, "stride": 1, "knobs": {"heads": 2, "mlp_ratio": 2}}]
    stages += [{"family": "rasa", "depth": 1, "width": width, "stride": 2,
                "knobs": {"heads": 2, "mlp_ratio": 2, "sr": ratio}} for width, ratio in zip((16, 24, 32), sr)]
    return {"resolution": resolution, "in_channels": 3, "num_classes": 10,
            "stem": {"type": "patch", "width": 16, "stride": 4, "kernel": 7}, "stages": stages,
            "head": head or {"type": "class_attention", "heads": 2}}


def test_any_input_size_from_96_to_320_runs_forward_and_backward():
    torch.manual_seed(0)
    model = build(Arch.from_dict(tiny_arch()))
    for size in (96, 100, 160, 320):
        model.zero_grad()
        out = model(torch.randn(1, 3, size, size))
        assert out.shape == (1, 10)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters()), size


@pytest.mark.parametrize("size, head", [(96, None), (160, {"type": "gap"})])
def test_onnx_export_matches_onnxruntime(tmp_path, size, head):
    torch.manual_seed(0)
    model = build(Arch.from_dict(tiny_arch(head=head))).eval()
    path = export_onnx(model, 3, size, tmp_path / "lvt.onnx")
    assert verify_onnx(model, onnx_session(path), torch.randn(1, 3, size, size)) < 1e-4


def test_arch_yaml_round_trip_keeps_the_dilation_list():
    arch = load_arch(REFERENCE / "lvt.yaml")
    assert arch.stages[1].knobs["dilations"] == (1, 3, 5)
    assert arch.stages[1].to_dict()["knobs"]["dilations"] == [1, 3, 5]
    assert Arch.from_dict(arch.to_dict()).arch_id == arch.arch_id


def test_sr_that_does_not_divide_the_map_is_refused_at_validation():
    Arch.from_dict(tiny_arch(resolution=224))
    with pytest.raises(NasError, match="knob sr: 4 does not divide the 30x30 map"):
        Arch.from_dict(tiny_arch(resolution=240))


@pytest.mark.parametrize("name", ["lvt", "lvt_gap"])
def test_reference_archs_have_the_released_counts(name):
    model = build(load_arch(REFERENCE / f"{name}.yaml"))
    params, macs = RELEASED[name]
    assert count_params(model) == params
    assert abs(count_macs(model, (1, 3, 224, 224)) / macs - 1) < 0.001


def test_recursion_adds_macs_but_no_parameters():
    data = load_arch(REFERENCE / "lvt.yaml").to_dict()
    for stage in data["stages"][1:]:
        stage["knobs"]["recursion"] = 1
    model = build(Arch.from_dict(data))
    assert count_params(model) == RELEASED["lvt"][0]
    assert abs(count_macs(model, (1, 3, 224, 224)) / RELEASED_ONE_PASS_MACS - 1) < 0.001
