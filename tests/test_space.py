import dataclasses
import random

import optuna
import pytest
import yaml

from nas.arch import load_arch
from nas.errors import NasError
from nas.search.encoding import suggest, to_params
from nas.space import load_space, space_from_dict
from supernet.blocks import FAMILIES
from tests.conftest import ROOT, TINY_SPACE


@pytest.mark.parametrize("name", ["cpu_small", "hybrid_cpu", "hybrid"])
def test_shipped_spaces_load(name):
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    assert space.cardinality > 1_000_000
    assert space.contains(space.smallest()) and space.contains(space.largest())


def test_cardinality_counts_distinct_members(tiny_space):
    per_stage = (2 * 2) * (2 * 2 * 2 + 2 * 2 * 2 * 2 * 2 * 2)  # depth x width x (ghost + fwa knob combinations)
    assert tiny_space.cardinality == 2 * 2 * per_stage ** 2  # stem x head x stages
    rng = random.Random(0)
    ids = {tiny_space.sample(rng).arch_id for _ in range(300)}
    assert len(ids) > 250


def test_samples_are_members_and_suggest_inverts_to_params(tiny_space):
    rng = random.Random(1)
    for _ in range(50):
        arch = tiny_space.sample(rng)
        assert tiny_space.contains(arch)
        assert suggest(tiny_space, optuna.trial.FixedTrial(to_params(tiny_space, arch))) == arch


def test_smallest_is_smaller_than_largest(tiny_space):
    from nas.complexity import count_params
    from supernet.network import build

    assert count_params(build(tiny_space.smallest())) < count_params(build(tiny_space.largest()))


def _tiny_dict():
    import yaml

    return yaml.safe_load(TINY_SPACE.read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][0]["families"]["ghost"].update(kernal=[3]), "stages[0].families.ghost.kernal: unknown key"),
    (lambda d: d["stages"][1]["families"].update(vit={}), "stages[1].families.vit: unknown key"),
    (lambda d: d["stages"][0].update(depth=[-1, 1]), "stages[0].depth: expected integers >= 0"),
    (lambda d: d["stages"][0].update(depth=[0]), "stages[0].depth: expected at least one depth > 0"),
    (lambda d: d["stages"][0]["families"]["fwa"].update(kv_rule=["diagonal"]),
     "stages[0].families.fwa.kv_rule: expected grid, sqrt or ratio"),
    (lambda d: d["stages"][0]["families"]["fwa"].pop("heads"), "stages[0].families.fwa.heads: expected"),
    (lambda d: d["stages"][1]["families"]["fwa"].update(heads=[5]),
     "stages[1]: fwa: no width choice fits its knobs (knob heads: the transformer dim 32"),
    (lambda d: d.update(stages=[]), "stages: expected a non-empty list"),
    (lambda d: d.update(head=[64]), "head[0]: expected a mapping"),
])
def test_malformed_space_names_file_key_and_expectation(edit, message):
    data = _tiny_dict()
    edit(data)
    with pytest.raises(NasError) as error:
        space_from_dict(data, "spaces/bad.yaml")
    assert str(error.value).startswith("spaces/bad.yaml: ")
    assert message in str(error.value)


def test_unparsable_yaml_is_reported(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("stages: [\n  - {stride: 2\n")
    with pytest.raises(NasError, match="broken.yaml: not valid YAML"):
        load_space(path)


REFERENCES = sorted((ROOT / "search_spaces" / "reference").glob("*.yaml"))


@pytest.fixture(scope="module")
def hybrid_space():
    return load_space(ROOT / "search_spaces" / "hybrid.yaml")


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.stem)
def test_every_reference_architecture_is_a_member_of_the_union_space(hybrid_space, path):
    arch = load_arch(path)
    plan = hybrid_space.slot_plan(arch)
    assert plan is not None and len(plan) == len(arch.stages)
    per_block_lists = any(isinstance(v, tuple) and FAMILIES[s.family].knobs[k].per_block
                          for s in arch.stages for k, v in s.knob_items)
    if not per_block_lists:  # Optuna suggests one value per stage; GhostNet's per-block lists are members only
        assert suggest(hybrid_space, optuna.trial.FixedTrial(to_params(hybrid_space, arch))) == arch


def test_slots_follow_the_stem_stride_and_may_be_left_out(hybrid_space):
    lightvit, ghostnet = (load_arch(ROOT / "search_spaces" / "reference" / f"{n}.yaml")
                          for n in ("lightvit_t", "ghostnet_100"))
    assert hybrid_space.slot_plan(lightvit) == (2, 4, 6)  # the stride-8 stem leaves out levels 2 and 4
    assert lightvit.stages[0].stride == 1 and hybrid_space.slot_strides(2) == (1, 2)
    assert hybrid_space.slot_plan(ghostnet) == (0, 1, 2, 4, 5, 6)  # the level-8 and level-32 fwa slots left out
    # dropping GhostNet's only level-4 stage would skip a level: not a member
    skipped = dataclasses.replace(ghostnet, stages=ghostnet.stages[:1] + ghostnet.stages[2:])
    assert not hybrid_space.contains(skipped)


def test_heads_are_offered_only_with_the_widths_they_divide(hybrid_space):
    slot = hybrid_space.stages[2]  # lightvit heads 2, 3, 4 over widths 40 .. 128
    assert slot.options[("lightvit", 96)]["heads"] == (2, 3, 4)
    assert slot.options[("lightvit", 64)]["heads"] == (2, 4)
    rng = random.Random(0)
    for _ in range(300):
        arch = hybrid_space.sample(rng)
        assert hybrid_space.contains(arch)
        for stage in arch.stages:
            if stage.family in ("lightvit", "rasa", "saa", "csa"):
                assert stage.width % stage.knobs["heads"] == 0


def test_a_new_study_is_warm_started_with_the_reference_members(hybrid_space, tmp_path):
    import optuna

    from nas.search.study import SearchSettings, open_study, reference_members

    members = reference_members(hybrid_space.with_num_classes(10))
    assert len(members) == 8 and "ghostnet_100" not in members  # its per-block lists are no single trial
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    settings = SearchSettings(space="search_spaces/hybrid.yaml", latency_budget="5ms", budget_ms=5.0)
    study, done = open_study(settings, hybrid_space.with_num_classes(10), storage, log=lambda _: None)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    labelled = {t.user_attrs["reference"]: t.system_attrs["fixed_params"] for t in waiting
                if "reference" in t.user_attrs}
    assert done == 0 and set(labelled) == set(members)
    for name, params in labelled.items():  # each enqueued trial is that reference architecture
        assert suggest(hybrid_space.with_num_classes(10), optuna.trial.FixedTrial(params)) == members[name]
    assert reference_members(load_space(TINY_SPACE)) == {}


def test_a_search_folder_written_before_a_setting_existed_resumes_with_its_default(tmp_path):
    from nas.search.study import SearchSettings, check_run_folder

    settings = SearchSettings(space="search_spaces/hybrid.yaml", latency_budget="5ms", budget_ms=5.0)
    older = {**settings.identity(), "space_hash": "abc"}
    del older["adapt_steps"]  # config.yaml of a nas without --adapt-steps
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    check_run_folder(tmp_path, settings, "abc")
    with pytest.raises(NasError, match="adapt_steps differ"):
        check_run_folder(tmp_path, SearchSettings(**{**settings.to_dict(), "adapt_steps": 10}), "abc")
