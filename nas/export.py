"""ONNX export of a network, and onnxruntime sessions to run and check it.

`export_onnx` writes one self-contained .onnx file (weights embedded) with the torch dynamo exporter;
`export_archs` exports many sub-networks at once, in several processes (the exporter takes seconds a network);
`onnx_session` opens it with explicit threads and providers; `run_onnx` runs it on a torch tensor;
`verify_onnx` gives the largest absolute difference between torch and onnxruntime on an input;
`export_and_verify` exports a model and checks it on real test images before it keeps the file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from nas.errors import NasError, first_line
from nas.runs import check_output_file

if TYPE_CHECKING:
    import onnxruntime

    from nas.arch import Arch
    from nas.data import Splits

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 18
VERIFY_IMAGES = 64  # test images an export is checked on
EXPORT_JOBS = min(4, os.cpu_count() or 1)  # processes exporting at once: one per core, memory allows 4


def _on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """`model` itself when it already lives on the CPU, else a CPU copy (the caller's model stays where it is)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device.type == "cpu" for t in tensors):
        return model
    return copy.deepcopy(model).cpu()


def export_onnx(model: torch.nn.Module, in_channels: int, resolution: int, path: Path, batch: int = 1) -> Path:
    """Export `model` in eval mode to a single .onnx file at `path` for a static (batch, C, H, W) input.

    The input is named "input" and the output "logits". Raises NasError if the export fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    cpu_model = _on_cpu(model)
    was_training = cpu_model.training
    cpu_model.eval()
    x = torch.zeros(batch, in_channels, resolution, resolution)
    try:
        # The exporter reports progress with print() and warns through warnings/logging; a CLI that prints JSON
        # on stdout must not see any of it.
        with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
              warnings.catch_warnings()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(cpu_model, (x,), dynamo=True, opset_version=OPSET, external_data=False,
                                        verbose=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
            if program is None:
                raise RuntimeError("the exporter returned no ONNX program")
            program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except Exception as error:
        tmp.unlink(missing_ok=True)
        raise NasError(f"ONNX export failed for {path.name}: {first_line(error)}") from error
    finally:
        cpu_model.train(was_training)
    return path


def _export_arch(job: tuple[dict[str, Any], str]) -> None:
    from nas.arch import Arch
    from supernet.network import build

    torch.set_num_threads(1)  # one core per export process
    arch_dict, path = job
    arch = Arch.from_dict(arch_dict, path)
    export_onnx(build(arch), arch.in_channels, arch.resolution, Path(path))


def arch_onnx_path(folder: Path, arch: Arch) -> Path:
    """Where `export_archs` puts `arch`'s export in `folder`."""
    return Path(folder) / f"{arch.arch_id}.onnx"


def export_archs(archs: list[Arch], folder: Path, jobs: int = EXPORT_JOBS,
                 progress: Callable[[int], None] = lambda n: None) -> None:
    """Export each of `archs` (built fresh: weights do not change timings) to folder/ARCH_ID.onnx, `jobs` at once
    in as many processes; a file already there is kept. Export takes seconds a network, far longer than timing
    one, and needs no quiet machine: timing many sub-networks with ONNX Runtime exports them all first."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    todo = [(arch.to_dict(), str(arch_onnx_path(folder, arch))) for arch in archs
            if not arch_onnx_path(folder, arch).exists()]
    jobs = min(jobs, len(todo))
    if jobs <= 1:
        for job in todo:
            _export_arch(job)
            progress(1)
        return
    # spawn: a forked child would inherit the parent's torch threads and state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(_export_arch, todo):
            progress(1)


def _providers(device: str) -> list:
    import onnxruntime

    if device == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise NasError(f"--device {device}: unknown device; use cpu, cuda or cuda:N")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise NasError("--runtime onnxruntime --device cuda: this onnxruntime has no CUDA execution provider; "
                       "install onnxruntime-gpu or use --device cpu")
    return [("CUDAExecutionProvider", {"device_id": int(match.group(1) or 0)}), "CPUExecutionProvider"]


def onnx_session(path: Path, threads: int = 1, device: str = "cpu") -> onnxruntime.InferenceSession:
    """An onnxruntime session for the .onnx file at `path` on `device` ("cpu", "cuda" or "cuda:N")."""
    import onnxruntime

    providers = _providers(device)
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no such ONNX file; export the model first")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # One inter-op thread and sequential execution: latency should measure the operators, not the scheduler.
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:
        raise NasError(f"{path}: not a readable ONNX model ({first_line(error)}); export it again") from error


def run_onnx(session: onnxruntime.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    """The session's (first) output for input `x`, as a CPU float tensor."""
    expected = session.get_inputs()[0]
    # A static-shape model fed another shape fails deep inside onnxruntime; say so plainly instead.
    if all(isinstance(d, int) for d in expected.shape) and list(x.shape) != list(expected.shape):
        raise NasError(f"the ONNX model takes input shape {list(expected.shape)}, got {list(x.shape)}")
    array = x.detach().to("cpu", torch.float32).contiguous().numpy()
    outputs = session.run([session.get_outputs()[0].name], {expected.name: array})
    return torch.from_numpy(outputs[0])


def verify_onnx(model: torch.nn.Module, session: onnxruntime.InferenceSession, x: torch.Tensor) -> float:
    """The largest absolute difference between `model(x)` (eval mode, on the CPU) and the session's output."""
    cpu_model = _on_cpu(model)
    was_training = cpu_model.training
    x = x.detach().to("cpu", torch.float32)
    try:
        with torch.no_grad():
            expected = cpu_model.eval()(x)
    finally:
        cpu_model.train(was_training)
    actual = run_onnx(session, x)
    if actual.shape != expected.shape:
        raise NasError(f"the ONNX model's output shape {list(actual.shape)} differs from torch's "
                       f"{list(expected.shape)}")
    return float((actual - expected).abs().max())


def export_and_verify(model: torch.nn.Module, arch: Arch, data: Splits, path: Path, atol: float = 1e-4,
                      images: int = VERIFY_IMAGES) -> dict[str, Any]:
    """Export `model` (of `arch`) to `path` for batch 1 and check onnxruntime, one image at a time, against torch
    on the first `images` test images of `data`.

    The file appears at `path` only once it is verified: if the largest absolute difference exceeds `atol`, or
    the export fails, nothing is left there and NasError says why. Returns the onnx path, max_abs_diff, images
    compared, atol and ok.
    """
    path = Path(path)
    if data.size("test") == 0:
        raise NasError(f"{data.source}: no test images to verify the ONNX export on; pass --data with a test split")
    x, _ = next(iter(data.loader("test", arch.resolution, arch.in_channels, images,
                                 indices=range(min(images, data.size("test"))))))
    cpu_model = _on_cpu(model)
    staged = path.with_name(f"{path.stem}.unverified{path.suffix}")
    export_onnx(cpu_model, arch.in_channels, arch.resolution, staged)
    try:
        was_training = cpu_model.training
        try:
            with torch.no_grad():
                expected = cpu_model.eval()(x)  # one batch: eval-mode outputs do not depend on the batch
        finally:
            cpu_model.train(was_training)
        session = onnx_session(staged, threads=1)
        actual = torch.cat([run_onnx(session, image[None]) for image in x])
        if actual.shape != expected.shape:
            raise NasError(f"{path.name}: the ONNX model's output shape {list(actual.shape[1:])} differs from "
                           f"torch's {list(expected.shape[1:])}; the file was not kept")
        diff = float((actual - expected).abs().max())
        if not diff <= atol:  # also refuses NaN
            raise NasError(f"{path.name}: onnxruntime differs from torch by up to {diff:.3g} on {len(x)} test "
                           f"images, above the tolerance {atol:g}; the file was not kept")
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return {"onnx": str(path), "max_abs_diff": diff, "images": len(x), "atol": atol, "ok": True}


def export_checkpoint(checkpoint: Path, out: Path | None = None, atol: float = 1e-4,
                      data_spec: str | None = None) -> dict[str, Any]:
    """`nas export`: the retrained model at `checkpoint` to `out` (default: model.onnx beside it), verified
    against torch on the test images of `data_spec` (`export_and_verify`); returns the check's figures."""
    from nas.data import load_data
    from nas.memory import check_onnx_size, count_params
    from nas.models import read_checkpoint

    if not atol >= 0:
        raise NasError(f"--atol {atol}: must be zero or more")
    out = out or checkpoint.with_name("model.onnx")
    check_output_file(out, "--out")
    if checkpoint.is_symlink() and not checkpoint.exists():
        raise NasError(f"{checkpoint}: a symbolic link to nowhere (dangling, or a loop); pass model.pt")
    if out.resolve() == checkpoint.resolve():
        raise NasError(f"--out {out}: that is the checkpoint itself; pass another file, e.g. model.onnx")
    model, arch = read_checkpoint(checkpoint)
    check_onnx_size(count_params(model), str(checkpoint))
    data = load_data(data_spec, workers=0)  # a few test images: no loader processes
    result = export_and_verify(model, arch, data, out, atol)
    return {**result, "checkpoint": str(checkpoint), "arch_id": arch.arch_id, "data": data.source,
            "input": [1, arch.in_channels, arch.resolution, arch.resolution]}


def export_lines(result: dict[str, Any]) -> list[str]:
    """`export_checkpoint`'s result for a person."""
    return [f"onnx: {result['onnx']} (arch {result['arch_id']}, input {'x'.join(map(str, result['input']))} scaled "
            "to [-1, 1])", f"verified on {result['images']} test images of {result['data']}: onnxruntime vs torch "
            f"max abs difference {result['max_abs_diff']:.3g} <= atol {result['atol']:g}: ok"]
