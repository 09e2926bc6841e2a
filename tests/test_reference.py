"""The reference architectures: published sizes, complete MAC counts, every input size, ONNX, timm baselines."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas.arch import load_arch
from nas.complexity import count_macs, count_matmul_macs, count_params, mac_breakdown
from supernet.network import build
from tests.conftest import ROOT, run_nas

REFERENCE = ROOT / "search_spaces" / "reference"
NOT_MATMUL = {"batch_norm", "layer_norm", "group_norm", "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "col2im",
              "im2col"}

# file: (params, relative tolerance or None for "at most", MACs at the arch's resolution, absolute tolerance)
TARGETS = {
    "lightvit_t": (9.378e6, 0.005, 0.781e9, 0.03 * 0.781e9),
    "lightvit_s": (19.200e6, 0.005, 1.839e9, 0.03 * 1.839e9),
    "lightvit_b": (35.196e6, 0.005, 4.129e9, 0.03 * 4.129e9),
    "lvt": (5.522e6, 0.005, 0.897e9, 0.03 * 0.897e9),
    "lvt_gap": (3.687e6, 0.005, 0.869e9, 0.03 * 0.869e9),
    "ghostnet_100": (5.183e6, 0.005, 0.148e9, 0.03 * 0.148e9),
    "saevit_0p8g": (None, None, 0.80e9, 0.05e9),
    "saevit_1p3g": (None, None, 1.30e9, 0.07e9),
    "lolvit_xs": (2.32e6, None, None, None),  # at most MobileViT-XS's parameters
}


def test_every_reference_file_has_a_target():
    assert {p.stem for p in REFERENCE.glob("*.yaml")} == set(TARGETS)


@pytest.mark.parametrize("stem", sorted(TARGETS))
def test_reference_matches_the_published_size(stem):
    params, params_tolerance, macs, macs_tolerance = TARGETS[stem]
    arch = load_arch(REFERENCE / f"{stem}.yaml")
    model = build(arch)
    counted = count_params(model)
    if params_tolerance is not None:
        assert abs(counted - params) <= params_tolerance * params, counted
    elif params is not None:
        assert counted <= params, counted
    if macs is not None:
        counted_macs = count_macs(model, (1, 3, arch.resolution, arch.resolution))
        assert abs(counted_macs - macs) <= macs_tolerance, counted_macs


@pytest.mark.parametrize("source", sorted(str(p) for p in REFERENCE.glob("*.yaml")) + ["timm:mobilevit_xxs"])
def test_mac_count_agrees_with_torchs_flop_counter(source):
    """fvcore's matmul and conv MACs (norms and pooling aside) equal torch.utils.flop_counter's, at 96x96."""
    arch = load_arch(source).with_input(96, 3)
    model = build(arch)
    dense = sum(macs for op, macs in mac_breakdown(model, (1, 3, 96, 96)).items() if op not in NOT_MATMUL)
    reference = count_matmul_macs(model, (1, 3, 96, 96))
    if "scaled_dot_product_attention" in mac_breakdown(model, (1, 3, 96, 96)):
        assert dense > reference  # torch's counter misses the fused CPU attention kernel; our handle counts it
    else:
        assert dense == pytest.approx(reference, rel=1e-3)


def test_fused_attention_counts_like_explicit_matmuls():
    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            q = self.proj(x).reshape(1, 2, 16, 4)
            return F.scaled_dot_product_attention(q, q, q)

    class Explicit(Fused):
        def forward(self, x):
            q = self.proj(x).reshape(1, 2, 16, 4)
            return (q @ q.transpose(-1, -2)).softmax(-1) @ q

    assert count_macs(Fused(), (1, 16, 8)) == count_macs(Explicit(), (1, 16, 8)) == 16 * 8 * 8 + 2 * 2 * 16 * 16 * 4


@pytest.mark.parametrize("stem", ["lightvit_t", "lvt"])
def test_released_models_run_at_sizes_their_code_cannot(stem):
    """LightViT's released classifier crashes at 192 and 256 (we pad); LVT runs anywhere. Forward + backward."""
    model = build(load_arch(REFERENCE / f"{stem}.yaml"))
    for size in (192, 256):
        out = model(torch.randn(1, 3, size, size))
        out.sum().backward()
        assert out.shape == (1, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(TARGETS))
def test_reference_runs_at_every_size_and_exports(stem, tmp_path):
    """Every reference arch: forward + backward at 96..320, ONNX Runtime within 1e-4 of torch at two sizes.

    Slow (about 10 minutes in all); each family's blocks are covered at these sizes with tiny widths in its own
    test file, and `bench/reference.py --checks` prints these figures.
    """
    from nas.export import export_onnx, onnx_session, verify_onnx

    arch = load_arch(REFERENCE / f"{stem}.yaml")
    model = build(arch)
    for size in range(96, 321, 32):
        model(torch.randn(1, 3, size, size)).sum().backward()
    for size in (arch.resolution, 160):
        path = export_onnx(model.eval(), 3, size, tmp_path / f"{size}.onnx")
        assert verify_onnx(model, onnx_session(path), torch.randn(1, 3, size, size)) < 1e-4


def test_timm_baseline_is_accepted_where_an_arch_file_is():
    arch = load_arch("timm:mobilevit_xxs")
    assert arch.resolution == 256 and arch.name == "timm:mobilevit_xxs"
    assert load_arch("timm:mobilevit_xxs").arch_id == arch.arch_id
    result = run_nas("describe", "timm:mobilevit_xxs", "--json")
    assert result.returncode == 0, result.stderr
    assert '"params": 1272024' in result.stdout


def test_describe_reports_reference_sizes_and_membership():
    import json

    for space, member in (("cpu_small", False), ("hybrid", True)):
        result = run_nas("describe", REFERENCE / "ghostnet_100.yaml", "--json", "--space",
                         ROOT / "search_spaces" / f"{space}.yaml")
        assert result.returncode == 0, result.stderr
        described = json.loads(result.stdout)
        assert described["params"] == 5182508 and described["name"] == "GhostNet-1.0x"
        assert described["member"] is member


@torch.no_grad()
def test_references_extract_exactly_from_the_union_supernet():
    """One 249M-parameter supernet for hybrid.yaml; each reference comes out with its own size and function."""
    from nas.space import load_space
    from nas.weight_sharing import SpaceSupernet

    torch.manual_seed(0)
    supernet = SpaceSupernet(load_space(ROOT / "search_spaces" / "hybrid.yaml")).eval()
    for path in sorted(REFERENCE.glob("*.yaml")):
        arch = load_arch(path)
        net = supernet.extract(arch).eval()
        assert count_params(net) == count_params(build(arch)), path.stem
        x = torch.randn(1, 3, arch.resolution, arch.resolution)
        supernet.set_active(arch)
        assert torch.allclose(net(x), supernet(x), atol=1e-5, rtol=0), path.stem


def test_unknown_timm_model_is_one_line_error():
    from tests.conftest import assert_one_line_error

    assert_one_line_error(run_nas("describe", "timm:resnet_9000"), "timm:resnet_9000: not a timm model name")


def test_reference_files_are_frozen():
    # Reference YAMLs are what users compare against: their ids change only on purpose.
    ids = {p.stem: load_arch(p).arch_id for p in Path(REFERENCE).glob("*.yaml")}
    assert ids["ghostnet_100"] == "c6abb6429dc7"
    assert ids["lightvit_t"] == "986ac0ded45b"


def test_describe_at_another_resolution_validates_it_again():
    from tests.conftest import assert_one_line_error

    lvt = run_nas("describe", REFERENCE / "lvt.yaml", "--resolution", "256", "--json")
    assert lvt.returncode == 0, lvt.stderr
    assert '"resolution": 256' in lvt.stdout
    assert_one_line_error(run_nas("describe", REFERENCE / "lightvit_t.yaml", "--resolution", "96"),
                          "at --resolution 96", "knob window: 7 is larger than the 6x6 map")
    assert_one_line_error(run_nas("describe", REFERENCE / "ghostnet_100.yaml", "--resolution", "0"),
                          "argument --resolution: must be from 8 to 4,096, got 0")
