import contextlib
import io
import json
import random

import pytest
import torch

from nas.errors import NasError
from nas.export import export_archs, export_onnx, onnx_session, run_onnx, verify_onnx
from nas.runs import save_checkpoint
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

    return next(iter(load_data(limit_train=64).loader("test", 32, 1, 1)))[0]


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


# ---- nas export: a retrained checkpoint to a verified .onnx file, and the timm entry point ----------------------
def _save_model_checkpoint(path, arch, model):
    """A checkpoint in the payload format `nas retrain` writes (model.pt)."""
    save_checkpoint(path, {"format": "nas-model", "version": 1, "arch": arch.to_dict(), "arch_id": arch.arch_id,
                           "model": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_space):
    arch = tiny_space.smallest()
    torch.manual_seed(0)
    model = build(arch)
    randomise_norms(model)
    return _save_model_checkpoint(tmp_path_factory.mktemp("retrain") / "model.pt", arch, model)


def _nas(*args):
    """The CLI in this process: (exit code, stdout, stderr lines)."""
    from nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue().strip().splitlines()


def _assert_one_line_error(outcome, *fragments):
    code, stdout, lines = outcome
    assert code == 2 and stdout == "" and len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_nas_export_writes_a_verified_onnx_file(checkpoint, tmp_path):
    import onnxruntime

    out = tmp_path / "deploy" / "net.onnx"
    code, _, err = _nas("export", checkpoint, "--format", "onnx", "--out", out, "--json")
    assert code == 2 and "does not exist; create it first" in err[0] and not out.parent.exists()  # makes no folders
    out.parent.mkdir()
    code, stdout, _ = _nas("export", checkpoint, "--format", "onnx", "--out", out, "--json")
    assert code == 0
    result = json.loads(stdout)
    assert result["onnx"] == str(out) and result["ok"] is True and result["images"] == 64
    assert 0 <= result["max_abs_diff"] <= 1e-4 and result["atol"] == 1e-4 and result["data"] == "fashion-mnist"
    assert sorted(p.name for p in out.parent.iterdir()) == ["net.onnx"]  # nothing staged left behind
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == [(1, 1, 32, 32)]

    code, stdout, _ = _nas("export", checkpoint)  # default: model.onnx beside the checkpoint, text output
    assert code == 0 and (checkpoint.parent / "model.onnx").is_file()
    assert f"onnx: {checkpoint.parent / 'model.onnx'}" in stdout and stdout.rstrip().endswith("ok")


def test_nas_export_refuses_what_is_not_a_retrained_model(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    supernet = tmp_path / "supernet.pt"
    save_checkpoint(supernet, {"format": "nas-supernet", "version": 1, "model": {}})
    _assert_one_line_error(_nas("export", supernet, "--out", out), "supernet.pt", "nas-supernet", "retrained model")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    _assert_one_line_error(_nas("export", foreign, "--out", out), "foreign.pt", "retrained model")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 8)
    _assert_one_line_error(_nas("export", corrupt, "--out", out), "corrupt.pt", "not a readable checkpoint")
    _assert_one_line_error(_nas("export", tmp_path / "missing.pt", "--out", out), "missing.pt", "no such")
    _assert_one_line_error(_nas("export", checkpoint, "--format", "tflite", "--out", out), "--format tflite", "onnx")
    _assert_one_line_error(_nas("export", checkpoint, "--out", checkpoint), "the checkpoint itself")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "foreign.pt", "supernet.pt"]


def test_an_export_that_disagrees_with_torch_is_not_kept(checkpoint, tmp_path, monkeypatch):
    import nas.export

    run_onnx = nas.export.run_onnx
    monkeypatch.setattr(nas.export, "run_onnx", lambda session, x: run_onnx(session, x) + 0.5)
    out = tmp_path / "model.onnx"
    _assert_one_line_error(_nas("export", checkpoint, "--out", out), "model.onnx", "0.5", "tolerance 0.0001")
    assert list(tmp_path.iterdir()) == []


def test_export_and_verify_handles_a_timm_baseline(tmp_path):
    from nas.arch import timm_arch
    from nas.data import load_data
    from nas.export import export_and_verify
    from nas.models import read_checkpoint

    arch = timm_arch("test_resnet", resolution=32, in_channels=1, num_classes=10)
    torch.manual_seed(0)
    path = _save_model_checkpoint(tmp_path / "model.pt", arch, build(arch))
    model, loaded = read_checkpoint(path)
    assert loaded == arch and not model.training
    result = export_and_verify(model, loaded, load_data(limit_train=64), tmp_path / "model.onnx", images=8)
    assert result["ok"] and result["images"] == 8 and result["max_abs_diff"] <= 1e-4


def test_export_help_has_an_example(capsys):
    from nas.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    assert "example:\n  nas export " in capsys.readouterr().out


def test_timm_create_model_loads_a_retrained_checkpoint(checkpoint, image):
    import timm
    from timm.data import resolve_model_data_config

    import nas.models  # noqa: F401  (registers nas_model)
    from nas.retrain import load_model

    model = timm.create_model("nas_model", checkpoint=checkpoint)
    assert model.training  # as timm returns every model
    with torch.no_grad():
        assert torch.equal(model.eval()(image), load_model(checkpoint)(image))
    config = resolve_model_data_config(model)
    assert config["input_size"] == (1, 32, 32) and config["mean"] == (0.5,) and config["std"] == (0.5,)
    assert model.pretrained_cfg["num_classes"] == 10 and model.default_cfg == model.pretrained_cfg
    assert timm.create_model("nas_model", checkpoint=checkpoint, num_classes=10, in_chans=1) is not None
    with pytest.raises(NasError, match="checkpoint=PATH"):
        timm.create_model("nas_model", checkpoint_path=checkpoint)
    with pytest.raises(NasError, match="num_classes=5"):
        timm.create_model("nas_model", checkpoint=checkpoint, num_classes=5)


def test_export_archs_exports_each_once_in_several_processes(tiny_space, tmp_path):
    archs = [tiny_space.smallest(), tiny_space.largest()]
    export_archs(archs, tmp_path, jobs=2)
    files = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    assert set(files) == {f"{arch.arch_id}.onnx" for arch in archs}
    for arch in archs:
        session = onnx_session(tmp_path / f"{arch.arch_id}.onnx")
        assert run_onnx(session, torch.zeros(1, arch.in_channels, arch.resolution, arch.resolution)).shape == (
            1, arch.num_classes)
    export_archs(archs, tmp_path, jobs=2)  # files already there are kept
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == files
