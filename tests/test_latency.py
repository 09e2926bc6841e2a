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
