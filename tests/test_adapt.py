"""Scoring a member after a few steps of its own training (`nas search/supernet rank --adapt-steps`)."""

import csv

import torch
import torch.nn.functional as F
import yaml

from nas.evaluate import adapt, adapt_batches, inherited_accuracy, recalibrate_bn
from nas.weight_sharing import SpaceSupernet
from tests.conftest import TINY_SPACE, run_nas


def _member(tiny_space, small_data, tiny_supernet):
    from nas.supernet_training import load_supernet

    space = tiny_space.with_num_classes(small_data.num_classes)
    supernet = load_supernet(tiny_supernet, space)
    return supernet, space.largest()


def _loss(net, arch, data, steps):
    """Mean loss on the batches `adapt` trains on, in eval mode with recalibrated BatchNorm statistics."""
    recalibrate_bn(net, data.recalibration(arch.resolution, arch.in_channels))
    with torch.no_grad():
        losses = [F.cross_entropy(net(x), y).item() for x, y in adapt_batches(arch, data, steps)]
    return sum(losses) / len(losses)


def test_adapt_trains_the_extracted_member_only_and_repeatably(tiny_space, small_data, tiny_supernet):
    supernet, arch = _member(tiny_space, small_data, tiny_supernet)
    assert isinstance(supernet, SpaceSupernet)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    net, twin, untouched = (supernet.extract(arch) for _ in range(3))
    loss_before = _loss(untouched, arch, small_data, 8)

    adapt(net, arch, small_data, 8)
    adapt(twin, arch, small_data, 8)
    adapt(untouched, arch, small_data, 0)
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in before.items())  # the supernet is not trained
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), untouched.state_dict().values()))
    assert _loss(net, arch, small_data, 8) < loss_before
    assert 0 <= inherited_accuracy(net, arch, small_data) <= 1


def test_a_search_scores_candidates_after_their_own_steps(tmp_path, tiny_space, small_data, tiny_supernet):
    run_dir = tmp_path / "run"
    result = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet,
                     "--trials", 2, "--sampler", "random", "--limit-train", 512, "--adapt-steps", 4,
                     "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["adapt_steps"] == 4
    supernet, _ = _member(tiny_space, small_data, tiny_supernet)
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    from nas.arch import Arch

    arch = Arch.from_dict(best["arch"])
    row = next(r for r in csv.DictReader(open(run_dir / "trials.csv")) if r["arch_id"] == arch.arch_id)
    adapted = supernet.extract(arch)
    adapt(adapted, arch, small_data, 4)
    assert float(row["val_acc"]) == inherited_accuracy(adapted, arch, small_data)
    assert float(row["val_acc"]) != inherited_accuracy(supernet.extract(arch), arch, small_data)


def test_a_search_re_scores_its_shortlist_by_short_training_from_scratch(tmp_path, small_data, tiny_supernet):
    from nas.arch import Arch
    from nas.evaluate import scratch_accuracy

    run_dir = tmp_path / "run"
    result = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet,
                     "--trials", 6, "--sampler", "random", "--limit-train", 512, "--rescore-top", 3,
                     "--rescore-steps", 4, "--run-dir", run_dir, "--json")
    assert result.returncode == 0, result.stderr
    shortlist = list(csv.DictReader(open(run_dir / "rescored.csv")))
    trials = list(csv.DictReader(open(run_dir / "trials.csv")))
    distinct = sorted({(float(r["val_acc"]), r["arch_id"]) for r in trials}, key=lambda t: -t[0])
    assert 1 <= len(shortlist) == min(3, len({arch_id for _, arch_id in distinct}))
    assert {r["arch_id"] for r in shortlist} <= {arch_id for _, arch_id in distinct}
    assert max(float(r["val_acc"]) for r in trials) == max(float(r["val_acc"]) for r in shortlist)
    scores = [float(r["rescored_acc"]) for r in shortlist]
    assert scores == sorted(scores, reverse=True)
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["arch_id"] == shortlist[0]["arch_id"] and best["rescore"] == {"top": 3, "steps": 4}
    # the score is the member's own short training from scratch, on the search's data and seed
    arch = Arch.from_dict(best["arch"])
    assert best["val_accuracy_rescored"] == round(scratch_accuracy(arch, small_data, 4, 0, torch.device("cpu")), 4)
    assert "re-scoring 1/" in result.stderr + result.stdout and "Re-scored shortlist" in (
        run_dir / "report.md").read_text()
    files = sorted((run_dir / "shortlist").glob("*.yaml"))
    assert [yaml.safe_load(f.read_text())["arch_id"] for f in files] == [r["arch_id"] for r in shortlist]

    # a resumed search reuses the scores; without --rescore-top its winner is the supernet's again
    again = run_nas("search", "--resume", run_dir, "--rescore-top", 3, "--rescore-steps", 4)
    assert again.returncode == 0, again.stderr
    assert "re-scoring" not in again.stderr + again.stdout
    resumed = yaml.safe_load((run_dir / "best.yaml").read_text())  # its latency measured again
    assert (resumed["arch_id"], resumed["val_accuracy_rescored"]) == (best["arch_id"], best["val_accuracy_rescored"])
    plain = run_nas("search", "--resume", run_dir, "--rescore-top", 0)
    assert plain.returncode == 0, plain.stderr
    assert not (run_dir / "shortlist").exists() and not (run_dir / "rescored.csv").exists()
    winner = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert "rescore" not in winner and winner["val_accuracy_supernet"] == max(float(r["val_acc"]) for r in trials)


def test_a_shortlisted_member_over_the_budget_on_re_measurement_gives_way_to_the_next(tmp_path, tiny_space):
    """The K re-scored are the most accurate that stay feasible when re-measured: one that does not is replaced by
    the next (latency stands in here, as no real measurement can be made to exceed the budget on demand)."""
    import random
    from types import SimpleNamespace

    import optuna

    from nas.search.outputs import rescored_shortlist
    from nas.search.study import SearchSettings

    members = list({a.arch_id: a for a in (tiny_space.sample(random.Random(s)) for s in range(40))}.values())[:4]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, arch in zip((0.9, 0.8, 0.7, 0.6), members):
        trial = study.ask()
        for key, value in {"arch": arch.to_dict(), "arch_id": arch.arch_id, "latency_p90_ms": 1.0,
                           "latency_source": "measured", "params": 1}.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("latency", -1.0)
        study.tell(trial, [accuracy, 1.0])
    slow = members[1].arch_id  # within the budget in its trial, over it when measured again

    def remeasure(arch, median_ms, p90_ms):
        return SimpleNamespace(median_ms=1.0, p90_ms=3.0 if arch.arch_id == slow else 1.5), 10

    scores = {members[0].arch_id: 0.5, members[2].arch_id: 0.6, members[3].arch_id: 0.7}
    settings = SearchSettings(space="tiny", latency_budget="2ms", budget_ms=2.0, rescore_top=2)
    logged = []
    rows = rescored_shortlist(study.get_trials(), [], settings, tiny_space, remeasure,
                              lambda arch: scores[arch.arch_id], tmp_path, logged.append)
    assert [r["arch_id"] for r in rows] == [members[2].arch_id, members[0].arch_id]  # best re-scored first
    assert any(slow in line and "exceeds the budget" in line for line in logged)
