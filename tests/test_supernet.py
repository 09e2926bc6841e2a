import random

import torch

from nas.complexity import count_params
from supernet.network import HybridSupernet, build
from tests.conftest import randomise_norms


def _eval_supernet(space) -> HybridSupernet:
    """A seeded supernet with non-trivial norm statistics, in eval mode (so equality means something)."""
    torch.manual_seed(0)
    supernet = HybridSupernet(space)
    randomise_norms(supernet)
    return supernet.eval()


@torch.no_grad()
def test_extracted_subnets_match_the_supernet_on_many_archs(hybrid_cpu_space):
    """The union space: every family, both stems, every head, global tokens, slots left out."""
    import optuna

    space = hybrid_cpu_space
    supernet = _eval_supernet(space)
    x = torch.randn(2, 1, 32, 32)
    rng = random.Random(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(100)]
    seen = set()
    for arch in archs:
        supernet.set_active(arch)
        expected = supernet(x)
        net = supernet.extract(arch).eval()
        assert torch.allclose(net(x), expected, atol=1e-5, rtol=0), arch.to_dict()
        assert count_params(net) == count_params(build(arch))
        assert not any(type(m).__name__.startswith("Elastic") for m in net.modules())
        assert space.suggest(optuna.trial.FixedTrial(space.to_params(arch))) == arch
        seen.update(s.family for s in arch.stages)
        seen.update({("stem", arch.stem_type), ("head", arch.head_type), ("tokens", arch.global_tokens),
                     ("stages", len(arch.stages))})
        seen.update(("ffn", s.knobs["ffn"]) for s in arch.stages if "ffn" in s.knobs)
    assert {"ghost", "fwa", "csa", "rasa", "saa", "lightvit"} <= seen
    assert {("stem", "conv"), ("stem", "patch"), ("head", "conv"), ("head", "gap"), ("head", "lightvit"),
            ("tokens", 0), ("tokens", 4), ("stages", 3), ("stages", 4)} <= seen
    assert {("ffn", kind) for kind in ("mlp", "dwconv", "biattn", "ciffn")} <= seen


def test_supernet_trains_through_any_member(tiny_space):
    supernet = HybridSupernet(tiny_space)
    arch = tiny_space.sample(random.Random(3))
    supernet.set_active(arch)
    supernet(torch.randn(4, 1, 32, 32)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.parameters())


def test_non_members_are_refused(tiny_space):
    import dataclasses

    import pytest

    supernet = HybridSupernet(tiny_space)
    too_wide = dataclasses.replace(tiny_space.largest(), head_width=512)
    with pytest.raises(ValueError, match="not a member"):
        supernet.set_active(too_wide)


@torch.no_grad()
def test_every_family_extracts_exactly_from_one_supernet():
    """A space offering all seven families (list-valued knobs, optional weights like CPE and the fusion conv)."""
    import optuna

    from nas.space import load_space
    from tests.conftest import TESTS

    space = load_space(TESTS / "all_families_space.yaml")
    supernet = _eval_supernet(space)
    x = torch.randn(2, 1, 32, 32)
    rng = random.Random(0)
    families_seen = set()
    for _ in range(60):
        arch = space.sample(rng)
        supernet.set_active(arch)
        assert torch.allclose(supernet.extract(arch).eval()(x), supernet(x), atol=1e-5, rtol=0), arch.to_dict()
        families_seen.update(s.family for s in arch.stages)
        # Optuna stores list-valued knobs (RASA dilations) as text; suggest() must give the arch back
        assert space.suggest(optuna.trial.FixedTrial(space.to_params(arch))) == arch
    assert families_seen == {"ghost", "csa", "mhsa", "rasa", "saa", "lightvit", "fwa"}
