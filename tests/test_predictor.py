import csv
import itertools
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nas.errors import NasError
from nas.latency import LatencyRecord, fingerprint
from nas.latency.predictor import (FEATURES, VERSION, LatencyPredictor, arch_features, fit_predictor,
                                  halves_agreement, nnls)
from tests.conftest import ROOT, TINY_SPACE, assert_one_line_error, run_nas


def test_fit_then_search_with_the_predictor(tmp_path, tiny_supernet):
    predictor = tmp_path / "predictor.json"
    fit = run_nas("latency", "fit", "--space", TINY_SPACE, "--samples", 14, "--holdout", 0.3, "--out", predictor,
                  "--json")
    assert fit.returncode == 0, fit.stderr
    report = json.loads(fit.stdout)
    assert report["n"] == 4 and 0 <= report["within_10pct"] <= 1 and -1 <= report["spearman"] <= 1
    assert report["rmse_ms"] > 0 and report["mape"] >= 0 and 0 <= report["halves_within_10pct"] <= 1
    saved = json.loads(predictor.read_text())
    assert saved["format"] == "nas-latency-predictor" and saved["version"] == VERSION
    assert saved["fingerprint"] == report["fingerprint"] and saved["feature_names"][:len(FEATURES)] == FEATURES
    assert {"dense_3x3_convs", "depthwise_3x3_channels", "pointwise_1x1_conv_mflops"} <= set(saved["feature_names"])
    assert len(saved["scale"]) == len(saved["feature_names"]) == len(saved["weights"]["p90_ms"])
    assert min(saved["weights"]["median_ms"] + saved["weights"]["p90_ms"]) >= 0  # costs per unit
    assert predictor.with_suffix(".png").exists()
    again = run_nas("latency", "fit", "--space", TINY_SPACE, "--samples", 14, "--holdout", 0.3, "--out", predictor,
                    "--json")
    assert json.loads(again.stdout) == report  # the records come from the cache

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


def test_fit_for_onnxruntime_exports_first_and_a_rerun_takes_every_record_from_the_cache(tmp_path):
    predictor = tmp_path / "predictor.json"
    args = ("latency", "fit", "--space", TINY_SPACE, "--samples", 10, "--rounds", 4, "--runtime", "onnxruntime",
            "--out", predictor, "--json")
    fit = run_nas(*args)
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["n"] == 3 and not (tmp_path / "predictor-onnx").exists()  # exports removed
    again = run_nas(*args)
    assert json.loads(again.stdout) == json.loads(fit.stdout)  # every record from the cache, so nothing exported
    assert_one_line_error(run_nas(*args, "--rounds", 1), "argument --rounds: must be from 2 to 1,000, got 1")


def test_halves_agreement_compares_odd_and_even_rounds():
    def record(blocks):
        return LatencyRecord(median_ms=2.0, p90_ms=2.0, trimmed_mean_ms=2.0, spread=0.0, runs=1, batch=1,
                             resolution=32, dtype="float32", device="cpu", device_name="cpu", threads=1,
                             runtime="torch", runtime_version="x", fingerprint="f", block_medians_ms=blocks)

    steady, drifting = record((2.0, 2.1, 1.9, 2.0)), record((2.0, 3.0, 2.0, 3.0, 2.0))
    assert halves_agreement([steady, drifting]) == 0.5  # 2.0 vs 2.05: 2 % apart; 2.0 vs 3.0: 33 %
    assert halves_agreement([steady, record((2.0,))]) is None  # one block: no halves to compare


def _brute_force_nnls(a, b):
    """The best non-negative least-squares solution over every subset of free columns."""
    best, best_residual = np.zeros(a.shape[1]), np.linalg.norm(b)
    for size in range(1, a.shape[1] + 1):
        for columns in itertools.combinations(range(a.shape[1]), size):
            x = np.zeros(a.shape[1])
            x[list(columns)] = np.linalg.lstsq(a[:, list(columns)], b, rcond=None)[0]
            if (x >= 0).all() and np.linalg.norm(a @ x - b) < best_residual - 1e-12:
                best, best_residual = x, np.linalg.norm(a @ x - b)
    return best


def test_nnls_recovers_non_negative_coefficients_and_clips_negative_ones():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (30, 4))
    assert np.allclose(nnls(a, a @ np.array([0.5, 0.0, 2.0, 1.0])), [0.5, 0.0, 2.0, 1.0])

    b = a @ np.array([1.0, -1.0, 2.0, 0.5]) + rng.normal(0, 0.01, 30)
    x = nnls(a, b)
    assert x[1] == 0 and (x >= 0).all()  # clipped; the others are refitted without it
    assert np.allclose(x, _brute_force_nnls(a, b))
    for seed in range(20):  # random problems, where the unconstrained solutions have negative parts
        a, b = np.random.default_rng(seed).normal(size=(12, 5)), np.random.default_rng(seed + 100).normal(size=12)
        assert np.allclose(nnls(a, b), _brute_force_nnls(a, b), atol=1e-9)


def test_op_recorder_separates_convolutions_matrix_products_views_and_memory():
    from nas.latency.predictor import _OpRecorder

    dense, depthwise, linear = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Linear(8, 16)
    pointwise = nn.Conv2d(8, 2, 1)
    recorder = _OpRecorder()
    with torch.inference_mode(), recorder:
        y = torch.relu(depthwise(dense(torch.zeros(1, 4, 8, 8))))
        pointwise(y)
        linear(y.flatten(2).transpose(1, 2))
        torch.nn.functional.fold(torch.nn.functional.unfold(y, 3, padding=1), (8, 8), 3, padding=1)
    totals = recorder.totals
    assert totals["dense_3x3_conv_mflops"] == pytest.approx(2 * 8 * 8 * 8 * 4 * 9 / 1e6)  # 2 FLOPs per multiply-add
    assert totals["depthwise_3x3_conv_mflops"] == pytest.approx(2 * 8 * 8 * 8 * 1 * 9 / 1e6)
    assert totals["depthwise_3x3_channels"] == 8
    assert totals["pointwise_1x1_conv_mflops"] == pytest.approx(2 * 8 * 8 * 2 * 8 / 1e6)
    assert totals["matmul_mflops"] == pytest.approx(2 * 64 * 8 * 16 / 1e6)
    assert totals["elementwise_mb"] >= 8 * 8 * 8 * 4 / 1e6  # the relu's output at least
    assert totals["dense_3x3_convs"] == totals["depthwise_3x3_convs"] == totals["pointwise_1x1_convs"] == 1
    assert totals["ops"] >= 5  # 3 convolutions, relu, matrix product
    assert totals["activation_calls"] == 1 and totals["norm_calls"] == totals["softmax_calls"] == 0  # the relu
    assert totals["views"] >= 2  # flatten, transpose
    assert totals["transposed_mb"] == pytest.approx(8 * 64 * 4 / 1e6)  # a copy in ONNX Runtime, a view in torch
    assert totals["window_mb"] == pytest.approx((8 * 9 * 64 + 8 * 64) * 4 / 1e6)  # unfold's columns, fold's map


def test_op_recorder_counts_each_call_by_its_kind_as_well():
    from nas.latency.predictor import CALL_KINDS, _OpRecorder

    norm, tokens = nn.LayerNorm(8), torch.zeros(1, 4, 8)
    recorder = _OpRecorder()
    with torch.inference_mode(), recorder:
        attention = torch.softmax(norm(tokens) @ tokens.transpose(1, 2), dim=-1)
        torch.cat([attention, attention], dim=1).mean(dim=1) * 2 + 1
    totals = recorder.totals
    assert {kind: totals[f"{kind}_calls"] for kind in CALL_KINDS} == {
        "norm": 1, "activation": 0, "softmax": 1, "copy": 1, "reduction": 1, "arithmetic": 2}
    assert totals["ops"] == sum(totals[f"{kind}_calls"] for kind in CALL_KINDS) + 1  # and the matrix product


def test_arch_features_grow_with_the_network(tiny_space):
    small, large = arch_features(tiny_space.smallest()), arch_features(tiny_space.largest())
    assert list(small)[:len(FEATURES)] == list(large)[:len(FEATURES)] == FEATURES and small["const"] == 1.0
    assert all(value >= 0 for value in small.values())
    for name in ("ops", "views", "pointwise_1x1_conv_mflops", "matmul_mflops", "elementwise_mb", "weights_mb"):
        assert 0 < small[name] < large[name], name
    assert small["dense_3x3_convs"] > 0  # the stem
    assert small["depthwise_3x3_convs"] > 0 and small["depthwise_3x3_channels"] > 0  # GhostNet's cheap operation
    assert small["weights_mb_over_8"] == 0  # a tiny network's weights stay below every rung
    assert small["norm_calls"] > 0 and small["activation_calls"] > 0


def test_weights_beyond_each_rung():
    from nas.latency.predictor import WEIGHT_RUNGS_MB
    from nas.space import load_space

    features = arch_features(load_space(ROOT / "search_spaces" / "hybrid.yaml").largest())
    for rung in WEIGHT_RUNGS_MB:
        assert features[f"weights_mb_over_{rung}"] == pytest.approx(max(0.0, features["weights_mb"] - rung))
    assert features["weights_mb_over_8"] > 0 and features["window_mb"] > 0  # LVT's CSA unfolds and folds


def _records(medians: np.ndarray) -> list[LatencyRecord]:
    fingerprint_id = fingerprint(torch.device("cpu"), "torch", 1)["id"]
    return [LatencyRecord(median_ms=m, p90_ms=1.2 * m, trimmed_mean_ms=m, spread=0.05, runs=50, batch=1,
                          resolution=32, dtype="float32", device="cpu", device_name="test cpu", threads=1,
                          runtime="torch", runtime_version=torch.__version__, fingerprint=fingerprint_id)
            for m in medians]


def test_fit_recovers_per_unit_costs_and_saves_its_version(tmp_path):
    rng = np.random.default_rng(0)
    features = [{"const": 1.0, "ops": float(rng.integers(50, 500)), "dense_3x3_conv_mflops": rng.uniform(1, 100),
                 "matmul_mflops": rng.uniform(0, 50)} for _ in range(30)]
    costs = {"const": 0.2, "ops": 0.01, "dense_3x3_conv_mflops": 0.05, "matmul_mflops": 0.0}
    medians = np.array([sum(costs[name] * f[name] for name in costs) for f in features])
    predictor = fit_predictor(features, _records(medians * rng.uniform(0.99, 1.01, len(medians))), holdout=0.3)
    assert predictor.metrics["within_10pct"] == 1 and predictor.metrics["spearman"] > 0.99
    per_unit = np.array(predictor.weights["median_ms"]) / np.array(predictor.scale)
    assert dict(zip(predictor.feature_names, per_unit)) == pytest.approx(costs, abs=0.01)
    assert min(predictor.weights["median_ms"] + predictor.weights["p90_ms"]) >= 0
    assert np.allclose(predictor.predict_features(features, "p90_ms"), 1.2 * medians, rtol=0.03)

    path = tmp_path / "predictor.json"
    predictor.save(path)
    assert json.loads(path.read_text())["version"] == VERSION
    assert LatencyPredictor.load(path) == predictor


def test_an_older_predictor_is_refused(tmp_path):  # its features mean something else
    path = tmp_path / "old.json"
    older = {"format": "nas-latency-predictor", "version": VERSION - 1, "fingerprint": "0123456789ab"}
    path.write_text(json.dumps(older))
    with pytest.raises(NasError, match="refit it with `nas latency fit`") as refused:
        LatencyPredictor.load(path)
    assert "\n" not in str(refused.value)


def test_an_arch_running_a_convolution_the_fit_never_timed_gets_no_prediction(tiny_space):
    arch = tiny_space.smallest()
    features = arch_features(arch)
    device_id = fingerprint(torch.device("cpu"), "torch", 1)["id"]

    def fitted_on(names: list[str]) -> LatencyPredictor:
        return LatencyPredictor(device_id, {}, "torch", names, [1.0] * len(names),
                                {"median_ms": [0.01] * len(names), "p90_ms": [0.02] * len(names)}, 0.05, {})

    median_ms, p90_ms = fitted_on(list(features)).predict(arch, device_id)
    assert 0 < median_ms < p90_ms
    without_depthwise = [name for name in features if not name.startswith("depthwise_3x3")]
    assert fitted_on(without_depthwise).predict(arch, device_id) is None  # no cost to price it by: measure it


def test_a_weight_rung_too_few_fitted_sub_networks_pass_costs_nothing():
    rng = np.random.default_rng(1)
    weights_mb = np.concatenate([rng.uniform(1, 120, 40), [129.0, 130.0, 131.0]])  # 3 just past the 128 MB rung
    features = [{"const": 1.0, "weights_mb": w, "weights_mb_over_128": max(0.0, w - 128)} for w in weights_mb]
    medians = 1.0 + 0.05 * weights_mb + 2.0 * np.maximum(0.0, weights_mb - 128)  # a steep step nobody could learn
    predictor = fit_predictor(features, _records(medians), holdout=0.2)
    per_unit = dict(zip(predictor.feature_names, np.array(predictor.weights["median_ms"]) / np.array(predictor.scale)))
    assert per_unit["weights_mb_over_128"] == 0 and per_unit["weights_mb"] > 0
    huge = {"const": 1.0, "weights_mb": 212.0, "weights_mb_over_128": 84.0}  # the space's largest, say
    assert predictor.predict_features([huge])[0] < 1.0 + 0.06 * 212  # the linear trend, not a 2 ms/MB slope
