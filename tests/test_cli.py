import csv
import json

import pytest
import torch
import yaml

from tests.conftest import ROOT, TINY_SPACE, assert_one_line_error, run_nas


def test_search_then_retrain_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    search = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--device", "cpu", "--trials", 6,
                     "--epochs", 1, "--limit-train", 512, "--run-dir", run_dir, "--json")
    assert search.returncode == 0, search.stderr
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["budget_ms"] == 1000.0 and 0 < best["latency_ms"] <= best["latency_p90_ms"] <= 1000.0
    assert set(best["arch"]) >= {"stages", "resolution", "stem", "head"} and len(best["arch_id"]) == 12
    assert best["provenance"]["space_hash"] and best["provenance"]["supernet_hash"]
    front = list(csv.DictReader(open(run_dir / "pareto.csv")))
    assert front and all(row["feasible"] == "True" for row in front)
    assert len(list(csv.DictReader(open(run_dir / "trials.csv")))) == 6
    assert (run_dir / "pareto.png").stat().st_size > 1000
    assert json.loads(search.stdout)["arch_id"] == best["arch_id"]

    retrain_dir = tmp_path / "retrain"
    retrain = run_nas("retrain", run_dir / "best.yaml", "--epochs", 4, "--batch-size", 64, "--limit-train", 1500,
                      "--run-dir",
                      retrain_dir)
    assert retrain.returncode == 0, retrain.stderr
    metrics = json.loads((retrain_dir / "metrics.json").read_text())
    assert metrics["arch_id"] == best["arch_id"] and metrics["budget_ms"] == 1000.0
    assert metrics["test_top1"] > 0.5 and metrics["latency_ms"] > 0 and metrics["within_budget"] is True
    assert "test top-1" in retrain.stdout and "within the 1000 ms budget" in retrain.stdout
    assert str(run_dir / "best.yaml") in retrain.stdout
    # exported and verified, measured with both runtimes, documented
    assert metrics["onnx"]["ok"] and metrics["onnx"]["max_abs_diff"] <= 1e-4 and (retrain_dir / "model.onnx").is_file()
    assert set(metrics["latency"]) == {"torch", "onnxruntime"} and metrics["weights"] in ("ema", "raw")
    assert metrics["recipe"]["mixup"] > 0 and metrics["recipe"]["randaugment_ops"] > 0  # the full recipe
    card = (retrain_dir / "MODEL_CARD.md").read_text()
    assert best["arch_id"] in card and "onnxruntime" in card and "test top-1" in card
    assert (retrain_dir / "training.png").stat().st_size > 1000
    assert yaml.safe_load((retrain_dir / "recipe.yaml").read_text())["epochs"] == 4

    # the K most accurate points of the front, each retrained like the winner
    front_files = sorted((run_dir / "front").glob("*.yaml"))
    assert front_files and yaml.safe_load(front_files[0].read_text())["arch_id"] == best["arch_id"]
    top = run_nas("retrain", run_dir, "--top", 2, "--epochs", 1, "--limit-train", 256, "--json")
    assert top.returncode == 0, top.stderr
    retrained = json.loads(top.stdout)["retrained"]
    assert len(retrained) == min(2, len(front_files)) and retrained[0]["arch_id"] == best["arch_id"]
    assert json.loads((run_dir / "retrain-top" / "top.json").read_text()) == retrained
    assert (run_dir / "retrain-top" / front_files[0].stem / "model.onnx").is_file()

    from nas.retrain import load_model

    model = load_model(retrain_dir / "model.pt")
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)

    # more trials in the same folder resume the study and reuse the supernet
    supernet_before = (run_dir / "supernet" / "supernet.pt").stat().st_mtime_ns
    again = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--device", "cpu", "--trials", 8,
                    "--epochs", 1, "--limit-train", 512, "--run-dir", run_dir)
    assert again.returncode == 0, again.stderr
    assert "6/8 trials done" in again.stderr
    assert len(list(csv.DictReader(open(run_dir / "trials.csv")))) == 8
    assert (run_dir / "supernet" / "supernet.pt").stat().st_mtime_ns == supernet_before

    # the study can be browsed with optuna-dashboard, bound to loopback
    _check_dashboard(run_dir)

    # the saved settings repeat the search elsewhere, and --resume continues it
    resumed = run_nas("search", "--resume", run_dir, "--trials", 9)
    assert resumed.returncode == 0, resumed.stderr
    assert "8/9 trials done" in resumed.stderr
    report = (run_dir / "report.md").read_text()
    assert "## Best feasible member of each block family" in report and best["arch_id"] in report

    # the same folder with another budget is refused, not overwritten
    other = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "2s", "--trials", 8, "--epochs", 1,
                    "--limit-train", 512, "--run-dir", run_dir)
    assert_one_line_error(other, "holds a different search", "budget_ms")


def _check_dashboard(run_dir):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", str(run_dir), "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, body = time.time() + 60, None
        while body is None and time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read().decode()
            except OSError:
                time.sleep(0.3)
        assert body is not None and '"search"' in body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_dashboard_beyond_loopback_warns_that_it_has_no_authentication(tmp_path):
    import socket
    import subprocess
    import sys

    (tmp_path / "config.yaml").write_text("space: tiny\n")  # a search folder whose study is still empty
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", str(tmp_path), "--host", "0.0.0.0", "--port",
                               str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first.startswith("warning: --host 0.0.0.0 serves the dashboard beyond this machine") and \
        "no authentication" in first
    assert_one_line_error(run_nas("dashboard", tmp_path, "--port", 70000), "argument --port: must be from 1 to 65,535")


def test_infeasible_budget_names_the_smallest_latency_and_writes_nothing(tmp_path):
    result = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1us", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, "infeasible", "smallest sub-network", "ms")
    assert not (tmp_path / "run").exists()


def test_malformed_space_is_one_line_naming_file_and_key(tmp_path):
    data = yaml.safe_load(TINY_SPACE.read_text())
    data["stages"][1]["families"]["ghost"]["kernal"] = [3]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run_nas("search", "--space", bad, "--latency-budget", "5ms", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, str(bad), "stages[1].families.ghost.kernal", "unknown key")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    result = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "5ms", "--device", "cuda",
                     "--run-dir", tmp_path / "run")
    assert_one_line_error(result, "--device cuda", "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_bad_inputs_are_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    assert_one_line_error(run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", corrupt,
                                  "--run-dir", tmp_path / "run"), "not a readable checkpoint")
    assert_one_line_error(run_nas("search", "--space", TINY_SPACE, "--latency-budget", "5"), "--latency-budget",
                          "with a unit")
    assert_one_line_error(run_nas("search", "--space", TINY_SPACE, "--latency-budget", "5ms", "--data",
                                  tmp_path / "missing"), "no such file or folder")
    assert_one_line_error(run_nas("describe", tmp_path / "none.yaml"), "no such file")


def test_describe_and_measure_json(tmp_path):
    arch_file = tmp_path / "arch.yaml"
    from nas.space import load_space

    arch = load_space(TINY_SPACE).smallest()
    arch_file.write_text(yaml.safe_dump(arch.to_dict()))
    result = run_nas("describe", arch_file, "--space", TINY_SPACE, "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["arch_id"] == arch.arch_id and described["member"] is True
    assert described["params"] > 1000 and described["macs"] > described["params"]

    measured = run_nas("measure", arch_file, "--device", "cpu", "--runs", 10, "--json")
    assert measured.returncode == 0, measured.stderr
    record = json.loads(measured.stdout)
    assert 0 < record["median_ms"] <= record["p90_ms"] and record["threads"] == 1 and record["batch"] == 1
    assert len(record["block_medians_ms"]) > 1

    onnx = run_nas("measure", arch_file, "--runtime", "onnxruntime", "--runs", 10, "--json")
    assert onnx.returncode == 0, onnx.stderr
    onnx_record = json.loads(onnx.stdout)
    assert onnx_record["runtime"] == "onnxruntime" and onnx_record["runtime_version"]
    assert onnx_record["fingerprint"] != record["fingerprint"] and 0 < onnx_record["median_ms"]
    assert_one_line_error(run_nas("measure", arch_file, "--runtime", "tvm"), "--runtime 'tvm'")


def test_every_command_has_help_with_an_example():
    for command in ([], ["search"], ["retrain"], ["describe"], ["measure"], ["supernet"], ["supernet", "train"]):
        result = run_nas(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "example" in result.stdout, command


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q"
    assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text()
