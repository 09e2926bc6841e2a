"""Retraining: the recipe and its scaling, recipe files, weights inherited from the supernet, distillation, and
the one-line errors of a retrain that cannot start (nothing written)."""

import random

import pytest
import torch
import yaml

from nas.errors import NasError
from tests.conftest import assert_one_line_error, run_nas


def test_the_default_recipe_scales_with_the_data():
    from nas.retrain import Recipe, default_recipe

    small, large = default_recipe(4_500), default_recipe(1_281_167)
    assert (small.epochs, large.epochs) == (15, 100)
    assert small.mix_prob < large.mix_prob and small.randaugment_magnitude < large.randaugment_magnitude
    assert small.drop_path < large.drop_path and small.warmup_epochs < large.warmup_epochs
    # the EMA averages over about a tenth of all steps: longer runs average over more
    assert 0.9 <= small.ema_decay < large.ema_decay < 1
    assert default_recipe(4_500, epochs=3, ema_decay=0.5).ema_decay == 0.5
    plain = Recipe()  # what `supernet rank` trains with: no mixing, RandAugment, drop path or EMA
    assert (plain.mixup, plain.cutmix, plain.randaugment_ops, plain.drop_path, plain.ema_decay) == (0, 0, 0, 0, 0)
    with pytest.raises(NasError, match="recipe: distill must be in"):
        default_recipe(4_500, distill=2.0)


@pytest.fixture
def arch_file(tmp_path, tiny_space):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(tiny_space.largest().to_dict()))
    return path


@pytest.mark.parametrize("recipe, message", [
    ("lrr: 0.1\n", "unknown recipe setting 'lrr'"),
    ("epochs: ten\n", "epochs must be an int"),
    ("mix_prob: 1.5\n", "mix_prob must be in [0, 1]"),
    ("init: imagenet\n", "init must be one of scratch, supernet"),
    ("- epochs\n", "a recipe is a mapping"),
])
def test_a_bad_recipe_file_is_one_line_and_writes_nothing(recipe, message, arch_file, tmp_path):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe)
    result = run_nas("retrain", arch_file, "--recipe", recipe_file, "--limit-train", 256, "--run-dir",
                     tmp_path / "run")
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_retrain_inputs_that_cannot_work_are_one_line(arch_file, tmp_path, tiny_space):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["retrain", arch_file, "--limit-train", 256]
    assert_one_line_error(run_nas(*base, "--data", tmp_path / "missing", "--run-dir", tmp_path / "a"),
                          "no such file or folder")
    assert_one_line_error(run_nas(*base, "--data", empty, "--run-dir", tmp_path / "b"), str(empty))
    assert_one_line_error(run_nas(*base, "--init", "supernet", "--run-dir", tmp_path / "c"), "--supernet")
    assert_one_line_error(run_nas("retrain", tmp_path, "--run-dir", tmp_path / "d"), "is a folder", "--top")
    assert_one_line_error(run_nas("retrain", tmp_path, "--top", 2, "--run-dir", tmp_path / "e"), "no front/")
    assert not any((tmp_path / name).exists() for name in "abcde")

    # a run folder holding another arch's checkpoint is refused, not overwritten
    from nas.retrain import CHECKPOINT_KIND
    from nas.runs import save_checkpoint

    other = tiny_space.smallest()
    save_checkpoint(tmp_path / "f" / "checkpoint.pt",
                    {"format": CHECKPOINT_KIND, "version": 2, "arch_id": other.arch_id, "arch": other.to_dict()})
    assert_one_line_error(run_nas(*base, "--run-dir", tmp_path / "f"), f"arch {other.arch_id}", "another --run-dir")
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["checkpoint.pt"]  # nothing of the other run touched


def test_init_from_the_supernet_and_distillation(tiny_supernet, tiny_space, small_data, tmp_path):
    from nas.retrain import Recipe, supernet_for, train_standalone

    arch = tiny_space.with_num_classes(small_data.num_classes).sample(random.Random(3))
    supernet = supernet_for(arch, tiny_supernet)
    inherited = supernet.extract(arch).state_dict()
    # a step so small it cannot move the weights: what training starts from is what the supernet holds
    recipe = Recipe(epochs=1, batch_size=128, lr=1e-12, warmup_epochs=0, weight_decay=0.0, init="supernet",
                    distill=0.5)
    trained = train_standalone(arch, small_data, recipe, torch.device("cpu"), tmp_path / "c.pt", lambda _: None,
                               supernet)
    weights = dict(trained.model.named_parameters())
    assert weights and all(torch.allclose(weights[name], inherited[name], atol=1e-6) for name in weights)
    assert torch.isfinite(torch.tensor(trained.history[0]["train_loss"]))

    foreign = tiny_space.largest().with_num_classes(3)
    with pytest.raises(NasError, match="not a member of this supernet's space"):
        supernet_for(foreign, tiny_supernet)
