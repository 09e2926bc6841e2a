import random

import pytest
import torch
import torch.nn.functional as F

from nas.arch import Arch
from nas.complexity import count_params
from nas.errors import NasError
from nas.export import export_onnx, onnx_session, verify_onnx
from nas.space import load_space
from nas.weight_sharing import SpaceSupernet
from supernet.blocks import REQUIRED
from supernet.blocks.saevit import (CIFFN, KNOBS, SAA, PatchEmbed, SAAStage, channel_shuffle, check_stage,
                                    group_sizes)
from supernet.blocks.transformer import MHSA
from supernet.network import build
from supernet.ops import Ops, copy_sliced_state
from tests.conftest import randomise_norms

SIZES = range(96, 321, 32)

# Every knob value whose code path differs, split over two tiny networks. On a 96 input the maps are 24/12/6/3:
# "odd" leaves every rate but one not dividing its map (partial last windows, cropped recovery).
DEFAULT = {"rates": (4, 2, 2, 1), "knobs": {}}
ODD = {"rates": (5, 2, 4, 2), "knobs": {"sampler": "avg", "recovery": "2r", "ciffn": "gated", "ciffn_groups": 2,
                                         "ciffn_shuffle": False, "conv_blocks": 2, "conv_kernel": 5}}
GRID = {"rates": (8, 4, 2, 1), "knobs": {"rule": "grid", "grid": 3, "ciffn_kernels": [5, 1, 3], "ciffn_groups": 3}}


def knobs(**overrides):
    values = {name: knob.default for name, knob in KNOBS.items() if knob.default is not REQUIRED}
    values.update(heads=2, mlp_ratio=4)
    values.update(overrides)
    return values


def tiny_arch(variant, resolution=96, widths=(8, 16, 24, 32)):
    stages = [{"family": "saa", "depth": 1 + (i == 2), "width": w, "stride": 1 if i == 0 else 2,
               "knobs": {"heads": max(1, w // 8), "mlp_ratio": 2, "rate": r, **variant["knobs"]}}
              for i, (w, r) in enumerate(zip(widths, variant["rates"]))]
    return Arch.from_dict({"name": "tiny-saevit", "resolution": resolution, "in_channels": 3, "num_classes": 5,
                           "stem": {"type": "patch", "width": widths[0], "stride": 4, "kernel": 4, "norm": "bn"},
                           "stages": stages, "head": {"type": "gap"}})


def test_rate_one_is_plain_mhsa_on_the_same_weights():
    torch.manual_seed(0)
    mhsa = MHSA(32, knobs(heads=4), Ops(False))
    saa = SAA(32, knobs(heads=4, rate=1), Ops(False))
    saa.load_state_dict(mhsa.state_dict())  # strict: rate 1 has no sampler, recovery or norm
    x = torch.randn(2, 7 * 7, 32)
    assert torch.allclose(saa(x, (7, 7), 0), mhsa(x, (7, 7), 0), atol=1e-6)


def test_pick_sampler_is_strided_slicing_and_edgevits_pooling():
    saa = SAA(8, knobs(rate=3, sampler="pick"), Ops(False))
    x = torch.randn(2, 8, 10, 11)
    assert torch.equal(saa.sample(x, 3), x[:, :, ::3, ::3])
    assert torch.equal(saa.sample(x[:, :, :9, :9], 3), F.avg_pool2d(x[:, :, :9, :9], 1, 3))  # EdgeViT's "sampler"


def test_avg_sampler_averages_each_window_and_only_the_real_pixels_of_a_partial_one():
    saa = SAA(8, knobs(rate=4, sampler="avg"), Ops(False))
    x = torch.randn(1, 8, 6, 6)
    delegates = saa.sample(x, 4)
    assert delegates.shape == (1, 8, 2, 2)
    assert torch.allclose(delegates[:, :, 0, 0], x[:, :, :4, :4].mean((2, 3)))
    assert torch.allclose(delegates[:, :, 1, 1], x[:, :, 4:, 4:].mean((2, 3)))


@pytest.mark.parametrize("recovery", ["r", "2r"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 3)])
def test_saa_recovers_the_full_map_and_zeros_the_global_rows(recovery, hw):
    saa = SAA(16, knobs(rate=4, recovery=recovery), Ops(False))
    assert saa.recovery_conv.weight.shape == (16, 1, 4 if recovery == "r" else 8, 4 if recovery == "r" else 8)
    x = torch.randn(2, 3 + hw[0] * hw[1], 16, requires_grad=True)
    out = saa(x, hw, 3)
    assert out.shape == x.shape
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_grid_rule_keeps_the_delegate_grid_up_to_the_rate_cap():
    saa = SAA(16, knobs(rule="grid", grid=7, rate=8), Ops(False))
    assert [saa.sampling_rate(s, s) for s in (56, 28, 14, 7, 3, 80, 100)] == [8, 4, 2, 1, 1, 8, 8]
    assert saa.recovery_conv.weight.shape[-1] == 8


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0)
    assert channel_shuffle(x, 2).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert channel_shuffle(x, 4).tolist() == x.reshape(4, 2).t().flatten().tolist()  # ShuffleNet's reshape
    assert sorted(channel_shuffle(torch.arange(10.0), 4).tolist()) == list(range(10))  # uneven groups: a permutation
    assert group_sizes(10, 4) == [3, 3, 2, 2]


def test_channel_shuffle_of_uneven_groups_takes_them_in_turn():
    # groups of 3, 3, 2, 2 starting at 0, 3, 6, 8
    assert channel_shuffle(torch.arange(10.0), 4).tolist() == [0, 3, 6, 8, 1, 4, 7, 9, 2, 5]


def test_channel_shuffle_traces_for_export_and_still_runs_eagerly():
    class Shuffle(torch.nn.Module):
        def forward(self, x):
            return channel_shuffle(x, 3)

    x = torch.randn(2, 13)
    exported = torch.export.export(Shuffle(), (x,))  # an order cached while tracing broke this (a fake constant)
    assert torch.equal(exported.module()(x), Shuffle()(x))
    x.requires_grad_(True)
    Shuffle()(x).pow(2).sum().backward()
    assert torch.allclose(x.grad, 2 * x)


@pytest.mark.parametrize("variant, groups, kernels, params", [
    # fc1 16->64 (+bias), depthwise 16 channels each at kernels 3/5/7 (no bias, identity has none), fc2 64->16
    ("multikernel", 4, [1, 3, 5, 7], 16 * 64 + 64 + 16 * (9 + 25 + 49) + 64 * 16 + 16),
    ("multikernel", 2, [3, 5, 7], 16 * 64 + 64 + 32 * (9 + 25) + 64 * 16 + 16),
    ("gated", 4, [1, 3, 5, 7], 16 * 64 + 64 + 32 * 16 + 16),  # fc2 reads the gated half
])
def test_ciffn_variants_shapes_and_parameter_counts(variant, groups, kernels, params):
    ffn = CIFFN(16, 64, {"ciffn": variant, "ciffn_groups": groups, "ciffn_kernels": kernels}, Ops(False))
    assert count_params(ffn) == params
    x = torch.randn(2, 2 + 5 * 6, 16)
    assert ffn(x, (5, 6), 2).shape == x.shape


def test_ciffn_global_rows_skip_the_spatial_part():
    torch.manual_seed(0)
    ffn = CIFFN(16, 64, {}, Ops(False))  # another family's knobs: every CIFFN knob at its default
    tokens, image = torch.randn(1, 2, 16), torch.randn(1, 16, 16)
    with_global = ffn(torch.cat([tokens, image], dim=1), (4, 4), 2)
    assert torch.allclose(with_global[:, 2:], ffn(image, (4, 4), 0), atol=1e-6)
    alone = ffn.fc2(F.gelu(channel_shuffle(ffn.fc1(tokens), 4)))
    assert torch.allclose(with_global[:, :2], alone, atol=1e-6)


def test_patch_embed_pads_to_whole_patches_and_stride_one_changes_width_only():
    embed = PatchEmbed(8, 16, 2, Ops(False))
    assert embed.conv.kernel_size == (2, 2) and embed.conv.padding == (0, 0)
    assert embed(torch.randn(1, 8, 7, 6)).shape == (1, 16, 4, 3)
    assert PatchEmbed(8, 16, 1, Ops(False))(torch.randn(1, 8, 7, 6)).shape == (1, 16, 7, 6)


def test_stage_runs_dwsconv_blocks_after_the_transition():
    stage = SAAStage(8, 16, 2, 2, knobs(conv_blocks=2, conv_kernel=5))
    assert isinstance(stage.down, PatchEmbed)
    assert [block.dw.kernel_size for block in stage.conv_blocks] == [(5, 5), (5, 5)]
    assert SAAStage(16, 16, 1, 1, knobs(conv_blocks=0)).down is None
    x, tokens = stage(torch.randn(2, 8, 9, 9), torch.randn(2, 3, 16))
    assert x.shape == (2, 16, 5, 5) and tokens.shape == (2, 3, 16)


@pytest.mark.parametrize("overrides, map_size, message", [
    ({"heads": 3}, 14, "knob heads: width 32 is not divisible by heads 3"),
    ({"rate": 8}, 7, "knob rate: 8 is larger than the 7x7 map"),
    ({"ciffn_groups": 5}, 14, "knob ciffn_kernels: 4 kernels for ciffn_groups 5"),
    ({"ciffn": "gated", "ciffn_groups": 5, "mlp_ratio": 0.25}, 14, "knob ciffn_groups: 5 groups for a CIFFN of 8"),
])
def test_knob_validation_names_the_knob(overrides, map_size, message):
    assert check_stage(32, knobs(**overrides), map_size).startswith(message)


def test_valid_knobs_pass_and_an_arch_names_the_stage():
    assert check_stage(32, knobs(rate=7), 7) is None
    assert check_stage(32, knobs(rule="grid", rate=8), 3) is None  # the grid rule never asks for more than the map
    with pytest.raises(NasError, match=r"stages\[2\].*knob rate: 4 is larger than the 2x2 map"):
        tiny_arch(ODD, resolution=32)


@pytest.mark.parametrize("variant", [DEFAULT, ODD, GRID], ids=["default", "odd", "grid"])
def test_every_input_size_from_96_to_320_runs_forward_and_backward(variant):
    torch.manual_seed(0)
    model = build(tiny_arch(variant))
    for size in SIZES:
        model.zero_grad()
        logits = model(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 5)
        logits.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), size


@pytest.mark.parametrize("variant, size", [(DEFAULT, 128), (ODD, 96), (GRID, 160)], ids=["default", "odd", "grid"])
def test_onnxruntime_matches_torch(variant, size, tmp_path):
    torch.manual_seed(0)
    model = build(tiny_arch(variant)).eval()
    randomise_norms(model)
    path = export_onnx(model, 3, size, tmp_path / "saevit.onnx")
    assert verify_onnx(model, onnx_session(path), torch.randn(1, 3, size, size)) < 1e-4


def test_an_elastic_stage_shares_its_weights_with_the_smaller_static_stage():
    large = knobs(heads=4, mlp_ratio=4, rate=4, conv_blocks=2, conv_kernel=5, ciffn_groups=4)
    small = knobs(heads=2, mlp_ratio=2, rate=2, recovery="2r", sampler="avg", conv_blocks=1, conv_kernel=3,
                  ciffn_groups=2, ciffn_kernels=[3, 1])
    torch.manual_seed(0)
    supernet = SAAStage(8, 32, 2, 2, large, elastic=True)
    randomise_norms(supernet)
    supernet.set_active(8, 16, 1, small)
    static = SAAStage(8, 16, 1, 2, small)
    copy_sliced_state(static, supernet)
    x = torch.randn(2, 8, 11, 11)
    with torch.no_grad():
        assert torch.allclose(supernet.eval()(x)[0], static.eval()(x)[0], atol=1e-5)


SPACE = """
name: saa-tiny
resolution: [64]
in_channels: 3
num_classes: 10
stem: {type: patch, width: [8, 16], stride: 4, kernel: 4, norm: bn}
stages:
  - stride: 2
    depth: [1, 2]
    width: [16, 32]
    families:
      saa: {heads: [1, 2], mlp_ratio: [2, 4], rate: [1, 2, 4], rule: [fixed, grid], grid: [2, 4],
            sampler: [pick, avg], recovery: [r, 2r], ciffn: [multikernel, gated], ciffn_groups: [2, 4],
            ciffn_kernels: [[1, 3, 5, 7], [7, 5, 3, 1]], ciffn_shuffle: [true, false], conv_blocks: [0, 1, 2],
            conv_kernel: [3, 5]}
head: {type: gap}
"""


def test_supernet_members_equal_their_extracted_networks(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    space = load_space(tmp_path / "space.yaml")
    torch.manual_seed(0)
    supernet = SpaceSupernet(space).eval()
    randomise_norms(supernet)
    for arch in [space.smallest(), space.largest(), *(space.sample(random.Random(seed)) for seed in range(8))]:
        supernet.set_active(arch)
        x = torch.randn(2, 3, 96, 96)
        with torch.no_grad():
            assert torch.allclose(supernet(x), supernet.extract(arch).eval()(x), atol=1e-5), arch
