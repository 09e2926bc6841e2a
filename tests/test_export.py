import random

import pytest
import torch

from nas.errors import NasError
from nas.export import export_onnx, onnx_session, run_onnx, verify_onnx
from supernet.network import build
from tests.conftest import randomise_norms

# Samples of the tiny space that, between them, take every value of the FWA knobs whose export could differ:
# kv_rule (grid/ratio), aggregator (avg/max, i.e. AveragePool/MaxPool with ceil_mode) and normaliser.
SAMPLE_SEEDS = (0, 1, 5, 6)
FWA_VALUES = {"kv_rule": {"grid", "ratio"}, "aggregator": {"avg", "max"}, "normaliser": {"softmax", "relu"}}


def _archs(space):
    return {"smallest": space.smallest(), "largest": space.largest(),
            **{f"sample{seed}": space.sample(random.Random(seed)) for seed in SAMPLE_SEEDS}}


@pytest.fixture(scope="module")
def image():
    from nas.data import load_data

    return load_data(limit_train=64).tensors("test", 32, 1)[0][:1]


def test_the_exported_archs_cover_both_families_and_every_fwa_variant(tiny_space):
    stages = [stage for arch in _archs(tiny_space).values() for stage in arch.stages]
    assert {stage.family for stage in stages} == {"ghost", "fwa"}
    assert any(stage.family == "ghost" and stage.knobs["se"] > 0 for stage in stages)
    for knob, values in FWA_VALUES.items():
        assert {stage.knobs[knob] for stage in stages if stage.family == "fwa"} == values, knob


@pytest.mark.parametrize("which", ["smallest", "largest", *(f"sample{seed}" for seed in SAMPLE_SEEDS)])
def test_onnxruntime_matches_torch(tiny_space, image, tmp_path, capfd, which):
    arch = _archs(tiny_space)[which]
    torch.manual_seed(0)
    model = build(arch)
    randomise_norms(model)
    path = export_onnx(model, arch.in_channels, arch.resolution, tmp_path / "out" / "model.onnx")
    assert path == tmp_path / "out" / "model.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .onnx.data, no .tmp
    assert capfd.readouterr().out == ""  # a CLI printing JSON on stdout stays clean
    assert model.training  # the caller's mode is left alone
    session = onnx_session(path, threads=1)
    assert verify_onnx(model, session, image) <= 1e-4, arch.to_dict()
    assert run_onnx(session, image).shape == (1, arch.num_classes)


def test_export_failure_is_one_line_nas_error(tmp_path):
    class Unexportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow cannot be captured in a static graph
                return x
            return -x

    path = tmp_path / "bad.onnx"
    with pytest.raises(NasError, match="ONNX export failed for bad.onnx: ") as caught:
        export_onnx(Unexportable(), 1, 8, path)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    assert "Failed to export" not in str(caught.value)  # the cause, not the exporter's generic preamble
    assert list(tmp_path.iterdir()) == []  # no .tmp left behind


def test_a_corrupt_onnx_file_is_refused(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x00\xffnot an onnx model" * 16)
    with pytest.raises(NasError, match="corrupt.onnx") as caught:
        onnx_session(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_onnx_file_is_refused(tmp_path):
    path = tmp_path / "missing.onnx"
    with pytest.raises(NasError) as caught:
        onnx_session(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_cuda_without_a_cuda_provider_is_refused(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA execution provider")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(NasError, match="no CUDA execution provider"):
            onnx_session(tmp_path / "model.onnx", device=device)
