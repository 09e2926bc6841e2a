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


def test_interleaved_measurement_times_every_arch_once_a_round_resumes_when_killed_and_is_cached(
        tiny_space, tmp_path, monkeypatch):
    import random

    from nas.latency import LatencyCache, cache_dir, measure_arch, measure_interleaved
    from nas.latency import measure as measure_module

    archs = [tiny_space.smallest(), tiny_space.largest(), tiny_space.sample(random.Random(3))]
    timed = []  # which arch each timed block ran, in order (the real _time_block still does the timing)
    real_time_block = measure_module._time_block

    def spy(run, warmup, runs, *args, **kwargs):
        if runs:
            timed.append(runners_seen.setdefault(run, len(runners_seen)))
        return real_time_block(run, warmup, runs, *args, **kwargs)

    runners_seen = {}
    monkeypatch.setattr(measure_module, "_time_block", spy)

    def kill_in_round_3(done):
        if len(timed) == 2 * len(archs) + 1:
            raise KeyboardInterrupt

    cache = LatencyCache(tmp_path / "latency.jsonl")
    with pytest.raises(KeyboardInterrupt):
        measure_interleaved(archs, torch.device("cpu"), rounds=4, cache=cache, progress=kill_in_round_3)
    rounds = [timed[i:i + len(archs)] for i in range(0, 2 * len(archs), len(archs))]
    assert all(sorted(r) == [0, 1, 2] for r in rounds) and rounds[0] != rounds[1]  # each once a round, new order
    assert len(list((cache_dir() / "interleaved").glob("*.json"))) == 1  # the two finished rounds

    timed.clear(), runners_seen.clear()
    records = measure_interleaved(archs, torch.device("cpu"), rounds=4, cache=cache)
    assert len(timed) == 2 * len(archs)  # resumed: only rounds 3 and 4 were timed
    assert not list((cache_dir() / "interleaved").glob("*.json"))  # done: the checkpoint is gone
    for arch, record in zip(archs, records):
        assert len(record.block_medians_ms) == 4 and record.runs == 4 * 5 and record.resolution == arch.resolution
        assert 0 < record.median_ms <= record.p90_ms
    assert [r.median_ms for r in records][0] < records[1].median_ms  # the smallest is faster than the largest

    timed.clear()
    assert measure_interleaved(archs, torch.device("cpu"), rounds=4, cache=LatencyCache(cache.path)) == records
    assert not timed  # every record from the cache
    single = measure_arch(archs[0], torch.device("cpu"), "torch", 1, cache=cache, runs=10)
    assert single.runs == 10  # kept apart from the interleaved record


def test_a_slow_spell_of_a_few_seconds_is_divided_out_of_an_interleaved_measurement():
    from nas.latency.measure import _round_order, _steadied

    latencies = [1.0 + i for i in range(30)]  # ms, arch i
    orders = [_round_order(r, len(latencies)) for r in range(6)]
    blocks = [[[] for _ in orders] for _ in latencies]
    for round_index, order in enumerate(orders):
        for position, i in enumerate(order):
            pace = 1.6 if round_index in (1, 2) and 10 <= position < 22 else 1.0  # a spell slows 12 blocks
            blocks[i][round_index] = [latencies[i] * pace * (1 + 0.01 * run) for run in range(5)]
    steadied = _steadied(blocks, orders)
    for round_index in (1, 2):
        inside, near_edge = orders[round_index][16], orders[round_index][12]  # mid-spell; the spell's third block
        assert steadied[inside][round_index] == pytest.approx(blocks[inside][0])
        assert steadied[near_edge][round_index] == pytest.approx(blocks[near_edge][0])  # most neighbours were slow
    assert steadied[orders[0][3]][0] == pytest.approx(blocks[orders[0][3]][0])  # a steady round is left alone
    assert _steadied([blocks[0]], [[0]] * 6) == [blocks[0]]  # a single arch: no neighbours to learn the pace from


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


def test_measurements_wait_while_another_process_trains_and_say_so(tiny_space, monkeypatch, capsys):
    """Training holds the device's shared lock; a measurement (exclusive) starts only after it is released, and a
    long wait is announced."""
    import subprocess
    import sys
    import time

    monkeypatch.setattr("nas.latency.cache.LOCK_WAIT_NOTICE_SECONDS", 0.5)
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
    assert "nas: waiting for cpu: another nas process trains, evaluates or measures on it" in capsys.readouterr().err


def test_unknown_runtime():
    from nas.latency import check_runtime

    with pytest.raises(NasError, match="--runtime 'tensorrt': expected one of torch, torch-compile, onnxruntime"):
        check_runtime("tensorrt")
