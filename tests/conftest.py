import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_SPACE = TESTS / "tiny_space.yaml"
HYBRID_CPU_SPACE = ROOT / "search_spaces" / "hybrid_cpu.yaml"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Latency cache and device locks in a folder of this test session (subprocesses inherit it)."""
    os.environ["NAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nas-cache"))
    yield Path(os.environ["NAS_CACHE_DIR"])


@pytest.fixture(scope="session")
def tiny_space():
    from nas.space import load_space

    return load_space(TINY_SPACE)


@pytest.fixture(scope="session")
def hybrid_cpu_space():
    from nas.space import load_space

    return load_space(HYBRID_CPU_SPACE)


@pytest.fixture(scope="session")
def small_data():
    """The embedded data, its training split cut to 512 images."""
    from nas.data import load_data

    return load_data(limit_train=512)


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory, tiny_space, small_data):
    """A tiny supernet trained for one epoch, shared by the tests that search with `--supernet`."""
    from nas.supernet_training import TrainConfig, train_supernet

    return train_supernet(tiny_space.with_num_classes(small_data.num_classes), small_data,
                          tmp_path_factory.mktemp("supernet"), TrainConfig(epochs=1), torch.device("cpu"),
                          log=lambda _: None)


def run_nas(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `nas` command line in a fresh process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def randomise_norms(model) -> None:
    """Non-trivial BN statistics and affine weights, so eval-mode equality means something."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
