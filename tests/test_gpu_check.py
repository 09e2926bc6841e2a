"""bench/gpu_check.py's tiny CPU mode: the GPU check runs every stage, so it cannot rot between GPU sessions."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_the_gpu_check_runs_every_stage_in_its_tiny_cpu_mode(tmp_path):
    out = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--device", "cpu",
                             "--work", str(tmp_path / "work"), "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    failed = {name: summary[name] for name in ("data", "supernet", "search", "retrain", "latency", "memory")
              if not summary[name]["ok"]}
    assert not failed, failed
    assert summary["data"]["images"] == 60 and summary["supernet"]["precision"] == "float32"
    steps = summary["supernet"]["steps_per_resolution"]  # 4 steps, each at one of the space's two resolutions
    assert set(steps) <= {"32", "40"} and sum(steps.values()) == 4
    assert summary["search"]["latency_ms"] > 0 and 0 <= summary["retrain"]["test_top1"] <= 1
    assert summary["retrain"]["onnx_max_abs_diff"] < 1e-3
    assert all(row["batch1_ms"] > 0 and row["batch2_ms"] > 0 for row in summary["latency"]["archs"].values())
    assert summary["supernet"]["estimated_gb"] > 0
    assert all(row["estimate_gb"] > 0 for row in summary["memory"]["archs"].values())
