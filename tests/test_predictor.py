import csv
import json

import yaml

from tests.conftest import TINY_SPACE, assert_one_line_error, run_nas


def test_fit_then_search_with_the_predictor(tmp_path, tiny_supernet):
    predictor = tmp_path / "predictor.json"
    fit = run_nas("latency", "fit", "--space", TINY_SPACE, "--samples", 14, "--holdout", 0.3, "--out", predictor,
                  "--json")
    assert fit.returncode == 0, fit.stderr
    report = json.loads(fit.stdout)
    assert report["n"] == 4 and 0 <= report["within_10pct"] <= 1 and -1 <= report["spearman"] <= 1
    assert report["rmse_ms"] > 0 and report["mape"] >= 0
    saved = json.loads(predictor.read_text())
    assert saved["format"] == "nas-latency-predictor" and saved["fingerprint"] == report["fingerprint"]
    assert len(saved["mean"]) == len(saved["scale"]) == len(saved["feature_names"]) == len(saved["weights"]["p90_ms"])
    assert predictor.with_suffix(".png").exists()

    run_dir = tmp_path / "run"
    search = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet,
                     "--predictor", predictor, "--trials", 5, "--limit-train", 512, "--run-dir", run_dir)
    assert search.returncode == 0, search.stderr
    trials = list(csv.DictReader(open(run_dir / "trials.csv")))
    assert {row["latency_source"] for row in trials} == {"predicted"}, saved["relative_error_sd"]  # all far below 1 s
    front = list(csv.DictReader(open(run_dir / "pareto.csv")))
    assert front and all(float(row["remeasured_ms"]) > 0 for row in front)
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["latency_p90_ms"] <= 1000 and best["arch_id"] in {row["arch_id"] for row in front}

    # a predictor fitted elsewhere is refused before anything is written
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({**saved, "fingerprint": "0123456789ab"}))
    refused = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet,
                      "--predictor", foreign, "--run-dir", tmp_path / "other")
    assert_one_line_error(refused, "--predictor", "fitted on", "nas latency fit")
    assert not (tmp_path / "other").exists()
    assert_one_line_error(run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--predictor",
                                  tmp_path / "nothing.json"), "not a readable latency predictor")
