import random

import optuna
import pytest

from nas.errors import NasError
from nas.space import load_space, space_from_dict
from tests.conftest import ROOT, TINY_SPACE


def test_shipped_spaces_load():
    space = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
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
        assert tiny_space.suggest(optuna.trial.FixedTrial(tiny_space.to_params(arch))) == arch


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
    (lambda d: d["stages"][0].update(depth=[0, 1]), "stages[0].depth: expected positive integers"),
    (lambda d: d["stages"][0]["families"]["fwa"].update(kv_rule=["diagonal"]),
     "stages[0].families.fwa.kv_rule: expected grid, sqrt or ratio"),
    (lambda d: d["stages"][0]["families"]["fwa"].pop("heads"), "stages[0].families.fwa.heads: expected"),
    (lambda d: d["stages"][1]["families"]["fwa"].update(heads=[5]),
     "stages[1]: fwa: knob heads: the transformer dim 32"),
    (lambda d: d.update(stages=[]), "stages: expected a non-empty list"),
    (lambda d: d.update(head=[64]), "head: expected a mapping"),
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
