"""The memory check: sizes taken on the meta device agree with the real network, grow with the batch, stay below
what a training step really takes, and refuse what cannot fit before anything is written."""

import json
import subprocess
import sys

import pytest
import torch

from nas.arch import load_arch
from nas.cli import main
from nas.complexity import count_params
from nas.errors import NasError
from nas.memory import (GIB, available_bytes, check_fits, check_training, gib, meta_network, meta_supernet,
                        running_need, training_need)
from nas.weight_sharing import SpaceSupernet
from supernet.network import build
from tests.conftest import ROOT

CPU = torch.device("cpu")
REFERENCE = sorted((ROOT / "search_spaces" / "reference").glob("*.yaml"))


@pytest.mark.parametrize("path", REFERENCE, ids=[p.stem for p in REFERENCE])
def test_the_meta_network_has_the_real_parameter_count(path):
    arch = load_arch(path)
    assert count_params(meta_network(arch)) == count_params(build(arch))


def test_the_meta_supernet_has_the_real_parameter_count(tiny_space):
    assert count_params(meta_supernet(tiny_space)) == count_params(SpaceSupernet(tiny_space))


def test_activations_grow_with_the_batch_and_weights_do_not(tiny_space):
    arch = tiny_space.largest()
    two, four = training_need(arch, 2, CPU), training_need(arch, 4, CPU)
    assert four.weights_bytes == two.weights_bytes == two.params * 16
    # a few saved tensors (normalisation statistics) do not grow with the batch
    assert 1.5 * two.activations_bytes < four.activations_bytes <= 2 * two.activations_bytes
    assert training_need(arch, 2, CPU, ema=True).weights_bytes == two.params * 20
    # running keeps far less than training saves for the backward pass
    assert 0 < running_need(arch, 4).activations_bytes < four.activations_bytes


def test_the_estimate_comes_near_a_real_training_step_from_below():
    """The refusal relies on the estimate being a lower bound, and is useful only near the truth: bench/memory.py
    measures one training step's peak memory in a fresh process."""
    done = subprocess.run([sys.executable, "bench/memory.py", "--one", "train",
                           "search_spaces/reference/lvt_gap.yaml", "8"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    row = json.loads(done.stdout.splitlines()[-1])
    assert 0.6 * row["measured"] < row["estimate"] < 1.1 * row["measured"], row


def test_a_refusal_says_what_is_needed_and_what_is_free(tiny_space):
    arch = tiny_space.largest().at_resolution(4096, "test")
    with pytest.raises(NasError) as refused:
        check_training(arch, 65_536, CPU, "arch.yaml")
    message = str(refused.value)
    assert message.startswith("arch.yaml: training at batch 65536 needs about ")
    assert f"has {gib(available_bytes(CPU))[:2]}" in message and "--batch-size" in message
    assert "\n" not in message


def test_what_fits_passes(tiny_space):
    check_fits(training_need(tiny_space.largest(), 8, CPU), CPU, "x", "y")  # no error


def test_available_memory_is_plausible():
    assert 64 * 2**20 < available_bytes(CPU) < 2**50


def test_sizes_read_as_a_person_would():
    assert [gib(n) for n in (18 * 2**10, 512 * 2**20, int(7.12 * GIB), 18_500 * GIB)] == [
        "18 KiB", "512 MiB", "7.12 GiB", "18,500 GiB"]


def test_describe_reports_the_memory_to_train_and_run(capsys):
    path = ROOT / "search_spaces" / "reference" / "lvt.yaml"
    assert main(["describe", str(path), "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    need = training_need(load_arch(path), 128, CPU)
    assert memory["training_bytes_batch_128"] == need.total_bytes
    assert memory["training_activation_bytes_batch_128"] == need.activations_bytes
    assert 0 < memory["running_bytes_batch_1"] < need.total_bytes / 100
