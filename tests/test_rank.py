import itertools
import json
import math
import random

import pytest

from nas.cli import main
from nas.errors import NasError
from nas.rank import average_ranks, bootstrap_ci, kendall_tau_b, measure_subnet, pool_rankings, spearman_rho, \
    stratified_sample, stratify
from tests.conftest import ROOT, TINY_SPACE, run_nas


def brute_force_tau_b(a, b):
    """Kendall tau-b from its definition: (C - D) / sqrt((n0 - n1)(n0 - n2)), n1/n2 the pairs tied in a/b."""
    concordant = discordant = tied_a = tied_b = 0
    for (a1, b1), (a2, b2) in itertools.combinations(zip(a, b), 2):
        tied_a += a1 == a2
        tied_b += b1 == b2
        if a1 != a2 and b1 != b2:
            concordant += (a1 < a2) == (b1 < b2)
            discordant += (a1 < a2) != (b1 < b2)
    pairs = len(a) * (len(a) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_a) * (pairs - tied_b))


def brute_force_rho(a, b):
    """Pearson correlation of ranks, each rank 1 + (values below) + (other values equal) / 2."""
    def ranks(values):
        return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def test_perfect_and_reversed_orders():
    a = [0.1, 0.4, 0.2, 0.9, 0.5]
    same = [10 * x + 3 for x in a]
    assert kendall_tau_b(a, same) == pytest.approx(1.0) and spearman_rho(a, same) == pytest.approx(1.0)
    reversed_ = [-x for x in a]
    assert kendall_tau_b(a, reversed_) == pytest.approx(-1.0) and spearman_rho(a, reversed_) == pytest.approx(-1.0)
    assert bootstrap_ci(kendall_tau_b, a, same) == pytest.approx([1.0, 1.0])


def test_ties_by_hand_and_against_the_definitions():
    # pairs of (a, b) = (1,1) (2,3) (2,2) (3,3): 4 concordant, one tied in a only, one in b only -> 4 / sqrt(5 * 5)
    a, b = [1, 2, 2, 3], [1, 3, 2, 3]
    assert kendall_tau_b(a, b) == pytest.approx(0.8)
    # ranks (1, 2.5, 2.5, 4) and (1, 3.5, 2, 3.5): covariance 3.75, variances 4.5 -> 0.8333
    assert list(average_ranks(a)) == [1, 2.5, 2.5, 4] and list(average_ranks(b)) == [1, 3.5, 2, 3.5]
    assert spearman_rho(a, b) == pytest.approx(3.75 / 4.5)
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(3, 9)
        x, y = [rng.randint(0, 3) for _ in range(n)], [rng.randint(0, 3) for _ in range(n)]
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert kendall_tau_b(x, y) == pytest.approx(brute_force_tau_b(x, y))
            assert spearman_rho(x, y) == pytest.approx(brute_force_rho(x, y))


def test_constant_accuracies_leave_the_statistics_undefined():
    assert kendall_tau_b([1, 2, 3], [0.5, 0.5, 0.5]) is None
    assert spearman_rho([0.5, 0.5, 0.5], [1, 2, 3]) is None
    assert bootstrap_ci(spearman_rho, [1, 1, 1], [1, 2, 3]) is None


def ranking(seed, members, supernet_hash="abc"):
    """rank.json's content for `members` [(arch id, inherited, standalone seeds)], ranked on sample `seed`."""
    rows = [{"arch_id": arch_id, "inherited": inherited, "standalone": sum(seeds) / len(seeds),
             "standalone_seeds": seeds, "ratio": inherited / (sum(seeds) / len(seeds))}
            for arch_id, inherited, seeds in members]
    settings = {"space_hash": "s", "supernet_hash": supernet_hash, "data": "d", "train_images": 100, "epochs": 15,
                "seeds": 2, "evaluated_on": "val+test", "adapt_steps": 0, "seed": seed,
                "recipe": {"epochs": 15, "lr": 0.003, "seed": seed}}
    floor = {"value": kendall_tau_b(*zip(*(seeds for _, _, seeds in members))), "ci95": [0, 1]}
    return {"subnets": rows, "settings": settings, "seed_to_seed_tau": floor}


def test_pooled_rankings_judge_every_member_of_every_sample_once():
    first = ranking(0, [("a", 0.70, [0.80, 0.81]), ("b", 0.60, [0.78, 0.77]), ("c", 0.65, [0.70, 0.72])])
    second = ranking(1, [("d", 0.50, [0.60, 0.62]), ("a", 0.99, [0.10, 0.10]), ("e", 0.72, [0.85, 0.86])])
    pooled = pool_rankings([first, second])
    members = first["subnets"] + second["subnets"][:1] + second["subnets"][2:]  # a: its first ranking's row
    assert [r["arch_id"] for r in pooled["subnets"]] == ["a", "b", "c", "d", "e"] and pooled["drawn_twice"] == 1
    assert pooled["kendall_tau"]["value"] == pytest.approx(
        brute_force_tau_b([r["inherited"] for r in members], [r["standalone"] for r in members]))
    assert pooled["spearman_rho"]["value"] == pytest.approx(
        brute_force_rho([r["inherited"] for r in members], [r["standalone"] for r in members]))
    assert pooled["sample_seeds"] == [0, 1] and pooled["median_ratio"] == pytest.approx(0.72 / 0.855)
    # each sample trains with its own seeds, so the noise floor stays each sample's own
    assert pooled["noise_floors"] == [first["seed_to_seed_tau"], second["seed_to_seed_tau"]]

    with pytest.raises(NasError, match="supernet_hash differ"):
        pool_rankings([first, ranking(1, [("d", 0.5, [0.6, 0.6])], supernet_hash="other")])
    with pytest.raises(NasError, match="same sample seed"):
        pool_rankings([first, ranking(0, [("d", 0.5, [0.6, 0.6])])])
    with pytest.raises(NasError, match="at least two"):
        pool_rankings([first])


def test_stratify_draws_one_from_each_equal_count_stratum():
    picked = stratify(list(range(30)), 3, random.Random(0))
    assert [p // 10 for p in picked] == [0, 1, 2]
    assert stratify(list(range(10)), 10, random.Random(1)) == list(range(10))


def test_stratify_spreads_the_draws_over_the_keys():
    # 40 items in 4 strata; family "a" fills most of each stratum, "b" and "c" are rare: a plain draw would take
    # mostly "a", the keyed one takes each family before any twice
    items = [(k, "a" if k % 10 < 8 else "b" if k % 10 == 8 else "c") for k in range(40)]
    for seed in range(20):
        picked = stratify(items, 4, random.Random(seed), key=lambda item: item[1])
        assert [k // 10 for k, _ in picked] == [0, 1, 2, 3]
        counts = sorted(sum(f == family for _, f in picked) for family in "abc")
        assert counts == [1, 1, 2], picked


def test_stratified_sample_spans_the_mac_range_with_distinct_members(tiny_space):
    chosen = stratified_sample(tiny_space, 4, seed=0, pool_factor=5)
    assert len({s.arch.arch_id for s in chosen}) == 4 and all(tiny_space.contains(s.arch) for s in chosen)
    macs = [s.macs for s in chosen]
    assert macs == sorted(macs)
    # the pool is the first 20 draws of the seeded sampler; pick k lies in quarter k of the pool's MAC order,
    # so the picks span the range from the lowest quarter to the highest
    rng = random.Random(0)
    pool = {arch.arch_id: arch for arch in (tiny_space.sample(rng) for _ in range(20))}
    ordered = sorted(measure_subnet(arch).macs for arch in pool.values())
    bounds = [round(k * len(ordered) / 4) for k in range(5)]
    for k, value in enumerate(macs):
        assert ordered[bounds[k]] <= value <= ordered[bounds[k + 1] - 1]


def test_rank_end_to_end_then_resume(tmp_path, tiny_supernet):
    run_dir = tmp_path / "rank"
    command = ["supernet", "rank", "--space", TINY_SPACE, "--supernet", tiny_supernet, "--subnets", 3,
               "--limit-train", 3000, "--run-dir", run_dir, "--adapt-steps", 2, "--epochs", 1]
    first = run_nas(*command, "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads((run_dir / "rank.json").read_text())
    assert json.loads(first.stdout)["kendall_tau"] == result["kendall_tau"]
    rows = result["subnets"]
    assert len({r["arch_id"] for r in rows}) == 3 and [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    for r in rows:
        assert 0 <= r["inherited"] <= 1 and 0 <= r["standalone"] <= 1 and r["params"] > 0
        assert len(r["standalone_seeds"]) == 2 and r["standalone"] == pytest.approx(sum(r["standalone_seeds"]) / 2)
        assert r["ratio"] == pytest.approx(r["inherited"] / r["standalone"]) and r["family"] in ("ghost", "fwa")
    assert sum(row["subnets"] for row in result["families"].values()) == 3
    assert result["median_ratio"] == pytest.approx(sorted(r["ratio"] for r in rows)[1])
    low, high = result["seed_to_seed_tau"]["ci95"]
    assert -1 <= low <= high <= 1 and result["settings"]["seeds"] == 2
    for name in ("kendall_tau", "spearman_rho"):
        value, (low, high) = result[name]["value"], result[name]["ci95"]
        assert -1 <= low <= value <= high <= 1, result[name]
    assert result["settings"]["subnets"] == 3 and result["settings"]["epochs"] == 1
    assert result["settings"]["adapt_steps"] == 2 and "after 2 steps of its own training" in first.stderr + \
        run_nas(*command).stdout
    assert (run_dir / "rank.png").stat().st_size > 1000

    # a run cut short after two sub-networks finishes only the third
    results = run_dir / "rank_results.jsonl"
    finished = results.read_text().splitlines()
    results.write_text("\n".join(finished[:2]) + "\n")
    (run_dir / "standalone" / f"{rows[2]['arch_id']}.pt").unlink()
    (run_dir / "standalone" / f"{rows[2]['arch_id']}-seed1.pt").unlink()
    kept = {r["arch_id"]: (run_dir / "standalone" / f"{r['arch_id']}.pt").stat().st_mtime_ns for r in rows[:2]}
    again = run_nas(*command)
    assert again.returncode == 0, again.stderr
    assert "2/3 sub-networks already ranked" in again.stderr
    assert {a: (run_dir / "standalone" / f"{a}.pt").stat().st_mtime_ns for a in kept} == kept
    assert results.read_text().splitlines()[:2] == finished[:2]
    assert json.loads((run_dir / "rank.json").read_text())["subnets"][2]["arch_id"] == rows[2]["arch_id"]
    assert "Kendall tau-b" in again.stdout and "Spearman rho" in again.stdout and "noise floor" in again.stdout

    # the same folder with other settings is refused
    assert_cli_error(run_in_process(*command[:-1], 2), "other settings", "epochs")

    # another ranking (here: without adapt steps) reuses these standalone accuracies instead of training again
    def reusing(earlier, epochs, folder):
        return ["supernet", "rank", "--space", TINY_SPACE, "--supernet", tiny_supernet, "--subnets", 3,
                "--limit-train", 3000, "--epochs", epochs, "--standalone-from", earlier, "--run-dir", folder]

    reused = run_nas(*reusing(run_dir, 1, tmp_path / "reused"))
    assert reused.returncode == 0, reused.stderr
    assert "reusing the standalone accuracies of 3 sub-network(s)" in reused.stderr and "measured in" in reused.stdout
    again_rows = json.loads((tmp_path / "reused" / "rank.json").read_text())["subnets"]
    assert [r["standalone_seeds"] for r in again_rows] == [r["standalone_seeds"] for r in rows]
    assert not (tmp_path / "reused" / "standalone").exists()
    # trained for another number of epochs, or no ranking at all: nothing applies
    assert_cli_error(run_in_process(*reusing(run_dir, 2, tmp_path / "refused")), "--standalone-from",
                     "epochs, recipe differ")
    assert_cli_error(run_in_process(*reusing(run_dir, 1, tmp_path / "refused"), "--standalone", "retrain"),
                     "--standalone-from", "recipe differ")
    assert_cli_error(run_in_process(*reusing(tmp_path, 1, tmp_path / "refused")), "no rank_plan.json")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "rank_plan.json").write_text('{"settings": ')
    assert_cli_error(run_in_process(*reusing(tmp_path / "torn", 1, tmp_path / "refused")), "not a readable ranking")
    assert not (tmp_path / "refused").exists()


def test_standalone_recipes_and_the_recipe_of_rankings_that_did_not_record_it():
    from dataclasses import asdict

    from nas.rank import _with_recipe, standalone_recipe
    from nas.retrain import Recipe, default_recipe

    assert standalone_recipe("plain", 4500, None, 7) == Recipe(epochs=3, seed=7)
    assert standalone_recipe("plain", 4500, 8, 7) == Recipe(epochs=8, seed=7)
    retrain = standalone_recipe("retrain", 4500, None, 7)
    assert retrain == default_recipe(4500, seed=7) and retrain.epochs == 15 and retrain.mixup > 0
    assert standalone_recipe("retrain", 4500, 4, 7).epochs == 4
    old = {"epochs": 8, "seed": 0, "seeds": 2}  # rank_plan.json before the recipe was recorded: the plain one
    assert _with_recipe(old)["recipe"] == asdict(Recipe(epochs=8, seed=0))
    assert _with_recipe({**old, "recipe": {"epochs": 15}})["recipe"] == {"epochs": 15}


COMMITTED_TARGETS = sorted((ROOT / "bench" / "targets").glob("*/rank_plan.json"))


@pytest.mark.parametrize("plan_file", COMMITTED_TARGETS, ids=lambda path: path.parent.name)
def test_a_committed_ranking_target_still_fits_its_space_recipe_and_data(plan_file):
    """bench/targets/SPACE-RECIPE-seedN[-DATA] holds standalone accuracies that took hours: a change to the space,
    to `nas retrain`'s recipe or to the embedded images makes them stale, and fails here rather than in a bench.
    Targets on other data (DATA) are checked against it where `bench/targets/README.md` says how to make it."""
    from dataclasses import asdict

    from nas.data import load_data
    from nas.rank import earlier_standalone, standalone_recipe
    from nas.space import load_space

    folder = plan_file.parent
    space_name, recipe_kind, _, *on_other_data = folder.name.split("-")
    plan = json.loads(plan_file.read_text())
    settings = plan["settings"]
    space = load_space(ROOT / "search_spaces" / f"{space_name}.yaml")
    assert settings["space_hash"] == space.space_hash
    if not on_other_data:
        assert settings["data"] == load_data().fingerprint
    # the plain recipe's length is the ranking's choice (--rank-epochs); the retrain recipe's, the recipe's own
    epochs = settings["epochs"] if recipe_kind == "plain" else None
    now = asdict(standalone_recipe(recipe_kind, settings["train_images"], epochs, settings["seed"]))
    reused = earlier_standalone(folder, {**settings, "recipe": now})
    assert reused and set(reused) <= {s["arch_id"] for s in plan["subnets"]}  # a run reusing it trains the rest
    assert all(len(accuracies) == settings["seeds"] and all(0 < a <= 1 for a in accuracies)
               for accuracies in reused.values())


def run_in_process(*args):
    """Run the CLI in this process; returns (exit code, stderr lines)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue().strip().splitlines()


def assert_cli_error(outcome, *fragments):
    code, lines = outcome
    assert code == 2 and len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_errors_are_one_line(tmp_path, tiny_supernet):
    base = ["supernet", "rank", "--space", TINY_SPACE, "--limit-train", 512, "--run-dir", tmp_path / "run"]
    assert_cli_error(run_in_process(*base, "--supernet", tmp_path / "none.pt"), "none.pt", "no such checkpoint")
    assert_cli_error(run_in_process(*base, "--supernet", tiny_supernet, "--subnets", 2), "--subnets", "must be from 3")
    assert_cli_error(run_in_process(*base, "--supernet", tiny_supernet, "--epochs", 0), "--epochs", "must be from 1")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    assert_cli_error(run_in_process(*base, "--supernet", corrupt), "not a readable checkpoint")
    other_space = ["supernet", "rank", "--space", ROOT / "search_spaces" / "cpu_small.yaml", "--supernet",
                   tiny_supernet, "--run-dir", tmp_path / "run"]
    assert_cli_error(run_in_process(*other_space), "trained for space 'tiny'")
    assert not (tmp_path / "run").exists()


def test_help_has_an_example():
    result = run_nas("supernet", "rank", "--help")
    assert result.returncode == 0 and "example" in result.stdout and "--subnets" in result.stdout
