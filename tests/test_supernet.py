import random

import torch

from nas.complexity import count_params
from nas.search.encoding import suggest, to_params
from nas.weight_sharing import SpaceSupernet
from supernet.network import build
from tests.conftest import randomise_norms


def _eval_supernet(space) -> SpaceSupernet:
    """A seeded supernet with non-trivial norm statistics, in eval mode (so equality means something)."""
    torch.manual_seed(0)
    supernet = SpaceSupernet(space)
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
        assert suggest(space, optuna.trial.FixedTrial(to_params(space, arch))) == arch
        seen.update(s.family for s in arch.stages)
        seen.update({("stem", arch.stem_type), ("head", arch.head_type), ("tokens", arch.global_tokens),
                     ("stages", len(arch.stages))})
        seen.update(("ffn", s.knobs["ffn"]) for s in arch.stages if "ffn" in s.knobs)
    assert {"ghost", "fwa", "csa", "rasa", "saa", "lightvit"} <= seen
    assert {("stem", "conv"), ("stem", "patch"), ("head", "conv"), ("head", "gap"), ("head", "lightvit"),
            ("tokens", 0), ("tokens", 4), ("stages", 3), ("stages", 4)} <= seen
    assert {("ffn", kind) for kind in ("mlp", "dwconv", "biattn", "ciffn")} <= seen


def test_supernet_trains_through_any_member(tiny_space):
    supernet = SpaceSupernet(tiny_space)
    arch = tiny_space.sample(random.Random(3))
    supernet.set_active(arch)
    supernet(torch.randn(4, 1, 32, 32)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.parameters())


def test_non_members_are_refused(tiny_space):
    import dataclasses

    import pytest

    supernet = SpaceSupernet(tiny_space)
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
        assert suggest(space, optuna.trial.FixedTrial(to_params(space, arch))) == arch
    assert families_seen == {"ghost", "csa", "mhsa", "rasa", "saa", "lightvit", "fwa"}


@torch.no_grad()
def test_a_narrower_ghost_module_gives_the_first_channels_of_a_wider_one():
    """Weight sharing: channel i means the same feature at every width (GhostNet's [all primary, all cheap]
    order would put a cheap channel where a wider module has a primary one)."""
    from supernet.blocks.ghost import GhostModule
    from supernet.ops import Ops

    torch.manual_seed(0)
    module = GhostModule(8, 24, True, Ops(True), ratio=3).eval()
    randomise_norms(module)
    x = torch.randn(2, 8, 6, 6)
    module.set_active(24)
    wide = module(x)
    for width in (6, 12, 17):
        module.set_active(width)
        assert torch.allclose(module(x), wide[:, :width], atol=1e-6)


@torch.no_grad()
def test_fused_and_concatenated_dimensions_are_sliced_part_by_part():
    """A narrower member's k and v come from the rows the widest member uses for k and v, and a layer reading a
    concatenation reads each part's own columns."""
    from supernet.ops import ElasticConv2d, ElasticLayerNorm, ElasticLinear, copy_sliced_state

    torch.manual_seed(0)
    qkv = ElasticLinear(8, 3 * 8, out_parts=3)
    x = torch.randn(5, 4)
    qkv.active_out = 3 * 4
    weight = qkv.weight.unflatten(0, (3, 8))[:, :4, :4].flatten(0, 1)  # the first 4 rows of each of q, k, v
    bias = qkv.bias.unflatten(0, (3, 8))[:, :4].flatten()
    assert torch.allclose(qkv(x), torch.nn.functional.linear(x, weight, bias), atol=1e-6)

    # reading [a, b] at width 3 equals reading [a, 0, b, 0] at width 8: each part's first columns
    fuse = ElasticConv2d(2 * 8, 4, 3, in_parts=2)
    a, b = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    padded = torch.cat([a, torch.zeros(1, 5, 5, 5), b, torch.zeros(1, 5, 5, 5)], dim=1)
    assert torch.allclose(fuse(torch.cat([a, b], dim=1)), fuse(padded), atol=1e-5)

    norm = ElasticLayerNorm(4 * 8, parts=4)
    torch.nn.init.normal_(norm.weight)
    tokens = torch.randn(2, 4 * 3)
    expected = torch.nn.functional.layer_norm(tokens, (12,), norm.weight.unflatten(0, (4, 8))[:, :3].flatten(),
                                              norm.bias.unflatten(0, (4, 8))[:, :3].flatten())
    assert torch.allclose(norm(tokens), expected, atol=1e-6)

    # a static layer takes the same slices
    static = torch.nn.Linear(4, 3 * 4)
    copy_sliced_state(static, qkv)
    assert torch.allclose(static(x), qkv(x), atol=1e-6)
