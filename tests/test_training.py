import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

from nas.errors import NasError
from nas.runs import load_checkpoint
from nas.supernet_training import TrainConfig, load_supernet, sandwich_members, train_config, train_supernet
from nas.training import adaptive_alpha_divergence, alpha_divergence, optimizer_and_schedule
from tests.conftest import ROOT, TINY_SPACE


def test_sandwich_training_writes_a_checkpoint_every_epoch(tiny_space, small_data, tmp_path):
    space = tiny_space.with_num_classes(small_data.num_classes)
    path = train_supernet(space, small_data, tmp_path, TrainConfig(epochs=2, batch_size=64), torch.device("cpu"),
                          log=lambda _: None)
    payload = load_checkpoint(path, "nas-supernet")
    assert payload["epoch"] == 2 and [h["epoch"] for h in payload["history"]] == [1, 2]
    assert payload["history"][-1]["val_acc_largest"] > 0.2  # it learns (chance is 0.1)
    assert load_supernet(path, space).space.space_hash == space.space_hash


def test_without_a_terminal_an_epoch_logs_its_progress(tiny_space, small_data, tmp_path, monkeypatch):
    monkeypatch.setattr("nas.training.PROGRESS_LOG_SECONDS", 0.0)  # a line after every step but the last
    lines = []
    space = tiny_space.with_num_classes(small_data.num_classes)
    train_supernet(space, small_data, tmp_path, TrainConfig(epochs=1, batch_size=64), torch.device("cpu"),
                   log=lines.append)
    progress = [line for line in lines if line.startswith("supernet epoch 1/1: step ")]
    assert progress and "steps/s" in progress[0] and "min left in the epoch" in progress[0]


def test_checkpoint_errors_are_one_clear_line(tiny_space, small_data, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(NasError, match="not a readable checkpoint"):
        load_supernet(corrupt, tiny_space)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(NasError, match="expected a nas-supernet checkpoint"):
        load_supernet(foreign, tiny_space)
    from nas.space import load_space

    trained = train_supernet(tiny_space, small_data, tmp_path / "tiny", TrainConfig(epochs=1, batch_size=128),
                             torch.device("cpu"), log=lambda _: None)
    with pytest.raises(NasError, match="trained for space 'tiny'"):
        load_supernet(trained, load_space(ROOT / "search_spaces" / "cpu_small.yaml"))
    older = tmp_path / "older.pt"  # same tensors, but from before GhostNet's channel order changed
    torch.save({**torch.load(trained, weights_only=True), "weight_layout": 1}, older)
    with pytest.raises(NasError, match="weights mean something else .* train it again"):
        load_supernet(older, tiny_space)


def test_resuming_with_another_recipe_is_refused(tiny_supernet, tmp_path):
    # a mid-epoch checkpoint is only meaningful for the batches and members the same recipe draws
    from nas.data import load_data
    from nas.space import load_space

    data = load_data(limit_train=512)
    space = load_space(TINY_SPACE).with_num_classes(data.num_classes)
    (tmp_path / "supernet.pt").write_bytes(tiny_supernet.read_bytes())
    with pytest.raises(NasError, match=r"trained with batch_size 128 \(not 64\), distill kl \(not alpha\)"):
        train_supernet(space, data, tmp_path, TrainConfig(epochs=2, batch_size=64, distill="alpha"),
                       torch.device("cpu"), log=lambda _: None)


def test_resuming_on_other_images_is_refused_before_anything_is_written(tiny_supernet, tmp_path):
    # the checkpoint's step counts and schedule belong to the images it was trained on
    import shutil

    from nas.data import SPLIT_FILE
    from nas.supernet_training import train_supernet_run

    for name in ("supernet.pt", "train_config.yaml", SPLIT_FILE):
        shutil.copy(tiny_supernet.parent / name, tmp_path / name)
    before = (tmp_path / "supernet.pt").read_bytes()
    other = tmp_path / "other.npz"
    x = np.zeros((20, 8, 8), dtype=np.uint8)
    np.savez(other, x_train=x, y_train=np.arange(20) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    for data, limit, message in ((None, 256, "--limit-train: this run began with 512 training images, not 256"),
                                 (str(other), 512, "--data .*other.npz: this run began with other images")):
        with pytest.raises(NasError, match=message):
            train_supernet_run(TINY_SPACE, TrainConfig(epochs=1), torch.device("cpu"), data, limit, tmp_path,
                               log=lambda _: None)
    assert (tmp_path / "supernet.pt").read_bytes() == before
    done = train_supernet_run(TINY_SPACE, TrainConfig(epochs=1), torch.device("cpu"), None, 512, tmp_path,
                              log=lambda _: None)
    assert len(done["history"]) == 1  # the same images: the finished run is resumed, not retrained


def test_a_supernet_recipe_sets_the_training_and_options_override_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 1\nrandom_subnets: 3\nsandwich: families\nepochs: 40\n")
    config = train_config(recipe, epochs=5, batch_size=None)
    assert (config.lr, config.random_subnets, config.sandwich, config.epochs, config.batch_size) == (
        1.0, 3, "families", 5, TrainConfig.batch_size)
    for text, message in (("lr: .nan\n", "finite"), ("random_subnets: 65\n", "random_subnets must be 0 to 64"),
                          ("sandwich: all\n", "sandwich 'all'"), ("momentum: 0.9\n", "unknown recipe setting"),
                          ("lr: fast\n", "lr must be a float"), ("- 1\n", "a mapping of settings")):
        recipe.write_text(text)
        with pytest.raises(NasError, match=message):
            train_config(recipe)


def test_the_families_sandwich_trains_each_familys_largest_member_in_turn(tiny_space):
    config = TrainConfig(sandwich="families", random_subnets=1)
    families = tiny_space.families()
    steps = [sandwich_members(tiny_space, config, step) for step in range(len(families))]
    assert all(len(members) == 4 for members in steps)
    assert all(members[:2] == [tiny_space.largest(), tiny_space.smallest()] for members in steps)
    assert [members[2] for members in steps] == [tiny_space.largest_of(family) for family in families]
    for family, members in zip(families, steps):
        assert family in {stage.family for stage in members[2].stages}
    assert sandwich_members(tiny_space, config, 3) == sandwich_members(tiny_space, config, 3)  # from (seed, step)
    assert len(sandwich_members(tiny_space, TrainConfig(sandwich="random", random_subnets=2), 0)) == 4


def test_the_no_smallest_sandwich_trains_only_the_teacher_on_every_step(tiny_space):
    config = TrainConfig(sandwich="no-smallest", random_subnets=2)
    steps = [sandwich_members(tiny_space, config, step) for step in range(6)]
    assert all(len(members) == 3 and members[0] == tiny_space.largest() for members in steps)
    default = TrainConfig(sandwich="random", random_subnets=2)
    sandwiches = [sandwich_members(tiny_space, default, step) for step in range(6)]
    assert [members[1:] for members in steps] == [members[2:] for members in sandwiches]  # the same random draws
    assert TrainConfig().sandwich == "no-smallest"


def test_the_ends_sandwich_gives_the_teacher_every_stem_and_head_in_turn(hybrid_cpu_space):
    space = hybrid_cpu_space
    config = TrainConfig(sandwich="ends", random_subnets=2)
    pairs = len(space.stems) * len(space.heads)
    teachers = [sandwich_members(space, config, step)[0] for step in range(pairs + 1)]
    assert {(t.stem_type, t.head_type) for t in teachers} == {(s.type, h.type) for s in space.stems
                                                               for h in space.heads}
    assert teachers[pairs] == teachers[0]
    largest = space.largest()
    assert largest in teachers
    assert all(t.stages == largest.stages for t in teachers)  # the same body: both stems have stride 2 here
    assert all(len(sandwich_members(space, config, step)) == 3 for step in range(pairs))


def test_the_fair_sandwich_deals_each_slots_families_evenly_on_every_step(hybrid_cpu_space):
    space = hybrid_cpu_space
    config = TrainConfig(sandwich="fair", random_subnets=len(space.stages[-1].families))  # 5: one each
    for step in range(4):
        teacher, *members = sandwich_members(space, config, step)
        assert teacher == sandwich_members(space, TrainConfig(sandwich="ends"), step)[0]
        assert sorted(m.stages[-1].family for m in members) == sorted(space.stages[-1].families)
        for dealt in (Counter(m.stages[0].family for m in members), Counter(m.head_type for m in members)):
            assert len(dealt) == 3 and max(dealt.values()) - min(dealt.values()) == 1  # 5 members over 3 choices
    assert sandwich_members(space, config, 3) == sandwich_members(space, config, 3)  # from (seed, step)
    assert sandwich_members(space, config, 3) != sandwich_members(space, config, 4)


def test_without_distillation_every_member_learns_from_the_labels(tiny_space, small_data):
    import torch.nn.functional as F

    from nas.supernet_training import train_step
    from nas.training import Precision
    from nas.weight_sharing import SpaceSupernet

    torch.manual_seed(0)
    model, config = SpaceSupernet(tiny_space), TrainConfig(distill="none", random_subnets=2)
    x, y = next(iter(small_data.loader("train", 32, 1, 16)))
    expected = 0.0
    for arch in sandwich_members(tiny_space, config, 0):  # the losses before the step, on the step's weights
        model.set_active(arch)
        expected += F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, tiny_space, x, y, 1.0, 0, config, optimizer, Precision(torch.device("cpu")))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_mixing_gives_every_member_the_same_mixed_batch_drawn_from_the_step(tiny_space, small_data):
    from nas.supernet_training import train_step
    from nas.training import Precision, batch_mixer
    from nas.weight_sharing import SpaceSupernet

    torch.manual_seed(0)
    model = SpaceSupernet(tiny_space)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = next(iter(small_data.loader("train", 32, 1, 15)))  # odd: a mixed step drops one image

    def loss(config, step):
        mixer = batch_mixer(config.mixup, config.cutmix, config.mix_prob, config.label_smoothing,
                            tiny_space.num_classes)
        return train_step(model, tiny_space, x.clone(), y, 1.0, step, config, optimizer,  # timm mixes in place
                          Precision(torch.device("cpu")), mixer)

    plain = TrainConfig(distill="none", random_subnets=2)
    mixing = TrainConfig(distill="none", random_subnets=2, mixup=1.0, cutmix=1.0, mix_prob=1.0)
    assert batch_mixer(plain.mixup, plain.cutmix, plain.mix_prob, 0.1, tiny_space.num_classes) is None
    assert loss(mixing, 3) == loss(mixing, 3)  # the mix is drawn from the step: a resumed run draws it again
    assert loss(mixing, 3) != loss(mixing, 4)
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    loss(mixing, 3)
    assert len(seen) == 3 and all(torch.equal(batch, seen[0]) for batch in seen)  # the largest and 2 random members
    assert len(seen[0]) == 14 and not torch.equal(seen[0], x[:14])


def test_supernet_train_reads_its_recipe(tmp_path, capsys):
    from nas.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("random_subnets: 1\nlr: 0.002\n")
    run = tmp_path / "run"
    assert main(["supernet", "train", "--space", str(TINY_SPACE), "--recipe", str(recipe), "--epochs", "1",
                 "--limit-train", "256", "--run-dir", str(run), "--json"]) == 0
    saved = yaml.safe_load((run / "train_config.yaml").read_text())
    assert (saved["random_subnets"], saved["lr"], saved["epochs"]) == (1, 0.002, 1)


def _divergence_inputs():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    teacher = (student + torch.randn(6, 10, generator=generator, dtype=torch.float64)).log_softmax(dim=-1)
    return student.requires_grad_(), teacher


def test_a_warm_up_as_long_as_the_schedule_is_cut_to_half_so_the_rate_still_decays():
    model = torch.nn.Linear(2, 2)
    optimizer, schedule = optimizer_and_schedule(model, 1e-3, 0.0, epochs=1, warmup_epochs=1, steps_per_epoch=10)
    rates = []
    for step in range(10):
        schedule.step_update(step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert schedule.warmup_t == 5 and rates[5:] == sorted(rates[5:], reverse=True) and rates[-1] < 0.05 * max(rates)
    _, long_schedule = optimizer_and_schedule(model, 1e-3, 0.0, epochs=3, warmup_epochs=1, steps_per_epoch=10)
    assert long_schedule.warmup_t == 10  # shorter than half the steps: as asked


@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.5, 1.0, 2.0])
def test_alpha_divergence_is_zero_only_for_the_teacher(alpha):
    student, teacher = _divergence_inputs()
    same = teacher.clone().requires_grad_()
    at_teacher = alpha_divergence(same, teacher, alpha)
    at_teacher.sum().backward()
    assert torch.allclose(at_teacher, torch.zeros(6, dtype=torch.float64), atol=1e-12)
    assert same.grad.abs().max() < 1e-12  # a minimum
    assert (alpha_divergence(student, teacher, alpha) > 1e-3).all()


def test_alpha_divergence_tends_to_the_two_kl_divergences():
    student, teacher = _divergence_inputs()
    q, p = student.log_softmax(dim=-1), teacher
    kl_q_p, kl_p_q = (q.exp() * (q - p)).sum(-1), (p.exp() * (p - q)).sum(-1)
    for near_zero in (1e-3, -1e-4, 1e-5):
        assert torch.allclose(alpha_divergence(student, teacher, near_zero), kl_q_p, rtol=3 * abs(near_zero))
    for near_one in (1 + 1e-3, 1 - 1e-4, 1 + 1e-5):
        assert torch.allclose(alpha_divergence(student, teacher, near_one), kl_p_q, rtol=3 * abs(near_one - 1))
    assert torch.allclose(alpha_divergence(student, teacher, 0.0), kl_q_p)
    assert torch.allclose(alpha_divergence(student, teacher, 1.0), kl_p_q)


def test_alpha_divergence_gradient_is_exact_until_clipped():
    student, teacher = _divergence_inputs()
    q = student.log_softmax(dim=-1)
    for alpha in (-1.0, 0.5, 2.0):
        exact = ((q.exp() * torch.expm1(alpha * (teacher - q))).sum(-1) / (alpha * (alpha - 1))).sum()
        (exact_grad,) = torch.autograd.grad(exact, student, retain_graph=True)
        (unclipped,) = torch.autograd.grad(alpha_divergence(student, teacher, alpha, clip=1e9).sum(), student)
        (clipped,) = torch.autograd.grad(alpha_divergence(student, teacher, alpha, clip=1.5).sum(), student)
        assert torch.allclose(unclipped, exact_grad, atol=1e-12)
        assert not torch.allclose(clipped, exact_grad, atol=1e-3)  # these inputs have ratios beyond the clip


def test_adaptive_alpha_divergence_takes_the_larger_per_sample():
    student, teacher = torch.zeros(2, 10, dtype=torch.float64), torch.zeros(2, 10, dtype=torch.float64)
    teacher[0, :2], student[0, 0], student[0, 1] = 3, 3, -3  # misses one of the teacher's two likely classes
    teacher[1, 0], student[1, 0] = -3, 3  # favours a class the teacher rules out
    teacher = teacher.log_softmax(dim=-1)
    low, high = alpha_divergence(student, teacher, -1.0), alpha_divergence(student, teacher, 1.0)
    assert high[0] > low[0] and low[1] > high[1]  # alpha = 1 penalises the first more, alpha = -1 the second
    assert torch.allclose(adaptive_alpha_divergence(student, teacher), (high[0] + low[1]) / 2)


def _payload(path):
    return load_checkpoint(path, "nas-supernet" if path.name == "supernet.pt" else "nas-model")


# One thread: bit-equal results need the same thread count in every run, and on a busy machine it is much faster
def one_thread() -> dict[str, str]:
    """The environment at the call: the session's NAS_CACHE_DIR (set by a fixture after import) included, so that
    these jobs never share device locks with nas jobs outside the tests."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_after_first_checkpoint(command, checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "nas", *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=one_thread())
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return _payload(checkpoint)


@pytest.mark.parametrize("job", ["supernet", "augmented supernet", "retrain"])
def test_a_killed_job_resumes_to_the_same_weights(job, tiny_space, tmp_path):
    recipe = tmp_path / "recipe.yaml"  # RandAugment and mixing: their draws must repeat after the kill too
    recipe.write_text("randaugment_ops: 1\nmixup: 0.2\ncutmix: 1.0\nmix_prob: 0.5\n")
    augmented = ["--recipe", recipe] if job == "augmented supernet" else []
    if job.endswith("supernet"):  # 2 epochs of 2 steps, a checkpoint after every step: the first is mid-epoch
        def command(run_dir):
            return ["supernet", "train", "--space", TINY_SPACE, "--epochs", 2, "--limit-train", 64, "--batch-size", 32,
                    "--checkpoint-every", 1, "--run-dir", run_dir, *augmented]
        checkpoint, final = "supernet.pt", "supernet.pt"
    else:
        arch_file = tmp_path / "arch.yaml"
        arch_file.write_text(yaml.safe_dump(tiny_space.largest().to_dict()))

        def command(run_dir):
            return ["retrain", arch_file, "--epochs", 3, "--limit-train", 512, "--run-dir", run_dir]
        checkpoint, final = "checkpoint.pt", "model.pt"
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    uninterrupted_run = subprocess.Popen([sys.executable, "-m", "nas", *map(str, command(straight))], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=one_thread())
    try:  # a failure must not leave the uninterrupted run behind
        payload = _kill_after_first_checkpoint([str(a) for a in command(killed)], killed / checkpoint)
        if job.endswith("supernet"):
            assert payload["step"] > 0  # killed mid-epoch
        else:
            assert payload["epoch"] < 3
        result = subprocess.run([sys.executable, "-m", "nas", *map(str, command(killed))], cwd=ROOT,
                                capture_output=True, text=True, timeout=300, env=one_thread())
        assert result.returncode == 0, result.stderr
        assert "resuming" in result.stderr
        assert uninterrupted_run.wait(timeout=300) == 0, uninterrupted_run.stderr.read()
    finally:
        uninterrupted_run.kill()
    resumed, uninterrupted = _payload(killed / final), _payload(straight / final)
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name in resumed["model"]:
        assert torch.equal(resumed["model"][name], uninterrupted["model"][name]), name
    if job.endswith("supernet"):  # the loss of the epoch the kill split is summed over both processes
        assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in uninterrupted["history"]]


def test_a_killed_search_resumes_without_losing_completed_trials(tmp_path, tiny_supernet):
    import optuna

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "nas", "search", "--space", str(TINY_SPACE), "--latency-budget", "1s",
               "--supernet", str(tiny_supernet), "--trials", "8", "--limit-train", "512", "--run-dir", str(run_dir)]

    def completed():
        journal = run_dir / "study.journal"
        if not journal.exists():
            return []
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        try:
            study = optuna.load_study(study_name="search", storage=storage)
        except KeyError:
            return []
        return [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(completed()) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = completed()
    assert 3 <= len(before) < 8 and not (run_dir / "best.yaml").exists()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(before)}/8 trials done" in result.stderr
    after = completed()
    assert len(after) == 8 and set(before) <= set(after)
    assert (run_dir / "best.yaml").exists()
