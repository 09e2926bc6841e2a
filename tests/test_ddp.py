"""Training on several processes under torchrun (gloo on CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from nas.data import SPLIT_FILE
from nas.runs import load_checkpoint
from nas.supernet_training import load_supernet
from tests.conftest import ROOT, TESTS, TINY_SPACE

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on a small machine; torchrun sets it anyway
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_processes_train_like_one_on_the_same_global_batches(tmp_path):
    # With BatchNorm in eval mode (see tests/ddp_worker.py) the split across ranks cannot matter, so the two ranks
    # must end equal to each other exactly, and to one process on the whole batches up to rounding: this checks that
    # DDP averages the gradients summed over the sandwich's members (no_sync on all but the last backward, members
    # using different parameters), weighted by each rank's share of an uneven batch.
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(TESTS / "ddp_worker.py"), str(TINY_SPACE), str(one), "alpha"])
    _run([*TORCHRUN, str(TESTS / "ddp_worker.py"), str(TINY_SPACE), str(two), "alpha"])
    alone = load_checkpoint(one / "rank0.pt", "nas-supernet")["model"]
    rank0 = load_checkpoint(two / "rank0.pt", "nas-supernet")["model"]
    rank1 = load_checkpoint(two / "rank1.pt", "nas-supernet")["model"]
    initial = _initial_weights()
    assert alone.keys() == rank0.keys() == rank1.keys()
    for name in alone:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], alone[name], atol=1e-5), name
    assert any(not torch.equal(alone[name], initial[name]) for name in alone)  # it trained


def _initial_weights() -> dict:
    from nas.space import load_space
    from nas.weight_sharing import SpaceSupernet

    torch.manual_seed(0)
    return SpaceSupernet(load_space(TINY_SPACE)).state_dict()


def test_torchrun_trains_a_supernet_on_two_processes(tmp_path):
    # Training mode: BatchNorm normalises each rank's slice with its own statistics, so this run is not compared
    # with one process (the test above checks the gradient averaging); it must finish, report once, and leave one
    # loadable checkpoint holding the end of the epoch.
    run_dir = tmp_path / "run"
    result = _run([*TORCHRUN, "-m", "nas", "supernet", "train", "--space", str(TINY_SPACE), "--epochs", "1",
                   "--limit-train", "96", "--batch-size", "32", "--distill", "alpha", "--run-dir", str(run_dir)])
    assert result.stdout.count("supernet checkpoint:") == 1
    assert result.stderr.count("supernet epoch 1/1: loss") == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [SPLIT_FILE, "supernet.pt", "train_config.yaml"]
    payload = load_checkpoint(run_dir / "supernet.pt", "nas-supernet")
    assert (payload["epoch"], payload["step"], payload["config"]["distill"]) == (1, 0, "alpha")
    assert torch.isfinite(torch.tensor(payload["history"][0]["loss"]))
    from nas.space import load_space

    load_supernet(run_dir / "supernet.pt", load_space(TINY_SPACE))


def test_torchrun_retrains_on_two_processes(tmp_path):
    # the retrain recipe (mixup on the whole batch, each rank its slice, EMA) under DDP: it finishes, rank 0
    # alone reports, exports and writes, and the model loads
    import yaml

    from nas.space import load_space

    arch_file = tmp_path / "arch.yaml"
    arch_file.write_text(yaml.safe_dump(load_space(TINY_SPACE).smallest().to_dict()))
    run_dir = tmp_path / "run"
    result = _run([*TORCHRUN, "-m", "nas", "retrain", str(arch_file), "--epochs", "1", "--limit-train", "128",
                   "--batch-size", "32", "--run-dir", str(run_dir)], timeout=300)
    assert result.stdout.count("test top-1") == 1 and result.stderr.count("retrain epoch 1/1: loss") == 1
    from nas.retrain import load_model

    assert load_model(run_dir / "model.pt")(torch.zeros(1, 1, 32, 32)).shape == (1, 10)
    assert (run_dir / "model.onnx").is_file() and (run_dir / "MODEL_CARD.md").is_file()
