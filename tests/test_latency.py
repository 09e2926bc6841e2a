import pytest
import torch

from nas.errors import NasError
from nas.latency import measure_latency, parse_budget, resolve_device
from supernet.network import build


@pytest.mark.parametrize("text, ms", [("5ms", 5.0), ("800us", 0.8), ("0.005s", 5.0), (" 1.5 ms ", 1.5)])
def test_budget_units(text, ms):
    assert parse_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["5", "5 parsecs", "ms", "-1ms", "0ms"])
def test_bad_budgets(text):
    with pytest.raises(NasError, match="--latency-budget"):
        parse_budget(text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(NasError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(NasError, match="expected cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_measurement_record(tiny_space):
    threads_before = torch.get_num_threads()
    record = measure_latency(build(tiny_space.smallest()), 1, 32, torch.device("cpu"), threads=1, runs=20)
    assert 0 < record.median_ms <= record.p90_ms
    assert record.runs == 20 and record.batch == 1 and record.threads == 1 and record.resolution == 32
    assert record.runtime == "torch" and record.device == "cpu" and record.device_name
    assert torch.get_num_threads() == threads_before


def test_fingerprint_separates_what_latency_depends_on():
    from nas.latency import fingerprint

    cpu = torch.device("cpu")
    assert fingerprint(cpu, "torch", 1)["id"] == fingerprint(cpu, "torch", 1)["id"]
    assert fingerprint(cpu, "torch", 1)["id"] != fingerprint(cpu, "torch", 2)["id"]
    assert fingerprint(cpu, "torch", 1)["id"] != fingerprint(cpu, "onnxruntime", 1)["id"]
    assert fingerprint(cpu, "torch", 1)["versions"]["torch"] == str(torch.__version__)


def test_cache_is_reused_across_instances_and_keyed_by_fingerprint(tiny_space, tmp_path):
    from nas.latency import LatencyCache, measure_arch

    path = tmp_path / "latency.jsonl"
    arch = tiny_space.smallest()
    first = measure_arch(arch, torch.device("cpu"), "torch", 1, cache=LatencyCache(path), runs=10)
    again = measure_arch(arch, torch.device("cpu"), "torch", 1, cache=LatencyCache(path), runs=10)
    assert again == first  # served from the file: a new measurement would differ
    other_threads = measure_arch(arch, torch.device("cpu"), "torch", 2, cache=LatencyCache(path), runs=10)
    assert other_threads.threads == 2 and other_threads.fingerprint != first.fingerprint
    refreshed = measure_arch(arch, torch.device("cpu"), "torch", 1, cache=LatencyCache(path), refresh=True, runs=10)
    assert refreshed != first
    assert len(LatencyCache(path)) == 2
    tagged = measure_arch(arch, torch.device("cpu"), "torch", 1, cache=LatencyCache(path), cache_tag="pass 2", runs=10)
    assert tagged != refreshed and len(LatencyCache(path)) == 3  # kept apart from the untagged record
    assert measure_arch(arch, torch.device("cpu"), "torch", 1, cache=LatencyCache(path), cache_tag="pass 2") == tagged


def test_onnxruntime_exports_a_missing_file_once_and_times_it_again(tiny_space, tmp_path):
    from nas.latency import measure_arch

    arch, onnx_file = tiny_space.smallest(), tmp_path / "model.onnx"
    first = measure_arch(arch, torch.device("cpu"), "onnxruntime", 1, onnx_file=onnx_file, runs=10)
    exported = onnx_file.stat().st_mtime_ns
    again = measure_arch(arch, torch.device("cpu"), "onnxruntime", 1, onnx_file=onnx_file, runs=10)
    assert onnx_file.stat().st_mtime_ns == exported and first.runtime == again.runtime == "onnxruntime"
    assert first.median_ms > 0 and again.median_ms > 0


def test_a_corrupt_cache_is_rebuilt_with_a_warning_never_trusted(tmp_path):
    from nas.latency import LatencyCache

    path = tmp_path / "latency.jsonl"
    path.write_text('{"key": "a", "record": {"median_ms": 1.0, "p90_ms": 1.1}}\n{"key": "b", "rec\n')
    warnings = []
    cache = LatencyCache(path, warn=warnings.append)
    assert len(cache) == 0 and cache.get("a") is None
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "line 2" in warnings[0]
    assert not path.exists() and (tmp_path / "latency.jsonl.corrupt").exists()
    cache.put("c", {"median_ms": 2.0, "p90_ms": 2.5})
    assert LatencyCache(path).get("c") == {"median_ms": 2.0, "p90_ms": 2.5}


def test_measurements_wait_while_another_process_trains(tiny_space):
    """Training holds the device's shared lock; a measurement (exclusive) starts only after it is released."""
    import subprocess
    import sys
    import time

    hold = 2.0
    trainer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom nas.latency import device_lock\n"
         f"with device_lock('cpu', exclusive=False):\n    print('locked', flush=True)\n    time.sleep({hold})\n"],
        stdout=subprocess.PIPE, text=True)
    assert trainer.stdout.readline().strip() == "locked"
    began = time.perf_counter()
    measure_latency(build(tiny_space.smallest()), 1, 32, torch.device("cpu"), runs=5, repeats=1)
    waited = time.perf_counter() - began
    trainer.wait()
    assert waited >= hold - 0.5, waited


def test_unknown_runtime():
    from nas.latency import check_runtime

    with pytest.raises(NasError, match="--runtime 'tensorrt': expected one of torch, torch-compile, onnxruntime"):
        check_runtime("tensorrt")
