import re

import pytest
import yaml

from nas.arch import Arch, load_arch
from nas.errors import NasError


def test_round_trips_through_yaml_with_a_stable_id(tiny_space, tmp_path):
    arch = tiny_space.largest()
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(arch.to_dict()))
    again = load_arch(path)
    assert again == arch and again.arch_id == arch.arch_id
    # a best.yaml holds the arch under `arch`
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"arch": arch.to_dict(), "latency_ms": 1.0}))
    assert load_arch(tmp_path / "best.yaml") == arch


def test_id_ignores_the_name_and_number_spelling(tiny_space):
    data = tiny_space.smallest().to_dict()
    spelled = yaml.safe_load(yaml.safe_dump(data))
    spelled["stages"][0]["knobs"]["expansion"] = 2.0
    spelled["name"] = "my favourite"
    assert Arch.from_dict(spelled).arch_id == Arch.from_dict(data).arch_id
    assert Arch.from_dict(spelled).name == "my favourite"


def test_id_is_frozen_for_a_known_arch(tiny_space):
    # The canonical form is a contract (best.yaml files and caches key on it): changing it changes these values.
    assert tiny_space.smallest().arch_id == "8e86a16f42cc"
    assert tiny_space.largest().arch_id == "4085fd075c09"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][0].update(family="resnet"), "stages[0].family: expected one of ghost, fwa"),
    (lambda d: d["stages"][0]["knobs"].update(colour=1), "stages[0].knobs.colour: unknown key"),
    (lambda d: d["stages"][0]["knobs"].pop("kernel"), "stages[0].knobs.kernel: expected"),
    (lambda d: d["stages"][0]["knobs"].update(kernel=4), "stages[0].knobs.kernel: expected a depthwise kernel"),
    (lambda d: d.update(resolution="big"), "resolution: expected a positive integer"),
    (lambda d: d.update(extra=1), "extra: unknown key"),
])
def test_bad_arch_names_the_key(tiny_space, edit, message):
    data = tiny_space.smallest().to_dict()
    data["stages"][0] = {**data["stages"][0], "knobs": dict(data["stages"][0]["knobs"])}
    edit(data)
    with pytest.raises(NasError, match="^arch.yaml: ") as error:
        Arch.from_dict(data, "arch.yaml")
    assert message in str(error.value)


def _fwa_arch(**knobs):
    return {"resolution": 32, "in_channels": 1, "num_classes": 10, "stem": {"width": 8, "stride": 2},
            "stages": [{"family": "fwa", "depth": 1, "width": 16, "stride": 2,
                        "knobs": {"heads": 2, "mlp_ratio": 1, "kv_rule": "grid", "kv_size": 2,
                                  "aggregator": "avg", "normaliser": "softmax", **knobs}}],
            "head": {"width": 32}}


@pytest.mark.parametrize("knobs, message", [
    ({"heads": 3}, "stages[0] (fwa, 8x8 map at resolution 32): knob heads: the transformer dim 16"),
    ({"kv_rule": "ratio", "kv_size": 9}, "knob kv_size: window 9 is larger than the 8x8 map"),
])
def test_knobs_that_cannot_work_are_rejected_at_validation(knobs, message):
    with pytest.raises(NasError, match=re.escape(message)):
        Arch.from_dict(_fwa_arch(**knobs))
