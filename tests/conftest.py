import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_SPACE = TESTS / "tiny_space.yaml"


@pytest.fixture(scope="session")
def tiny_space():
    from nas.space import load_space

    return load_space(TINY_SPACE)


@pytest.fixture(scope="session")
def small_data():
    """The embedded data, its training split cut to 512 images."""
    from nas.data import load_data

    return load_data(limit_train=512)


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
