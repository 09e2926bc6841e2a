import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from nas.errors import NasError
from nas.runs import load_checkpoint
from supernet.training import TrainConfig, load_supernet, train_supernet
from tests.conftest import ROOT, TINY_SPACE


def test_sandwich_training_writes_a_checkpoint_every_epoch(tiny_space, small_data, tmp_path):
    space = tiny_space.with_num_classes(small_data.num_classes)
    path = train_supernet(space, small_data, tmp_path, TrainConfig(epochs=2, batch_size=64), torch.device("cpu"),
                          log=lambda _: None)
    payload = load_checkpoint(path, "nas-supernet")
    assert payload["epoch"] == 2 and [h["epoch"] for h in payload["history"]] == [1, 2]
    assert payload["history"][-1]["val_acc_largest"] > 0.2  # it learns (chance is 0.1)
    assert load_supernet(path, space).space.space_hash == space.space_hash


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


def _states(path):
    return load_checkpoint(path, "nas-supernet" if path.name == "supernet.pt" else "nas-model")["model"]


def _kill_after_first_checkpoint(command, checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "nas", *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()
    assert load_checkpoint(checkpoint, "nas-supernet" if checkpoint.name == "supernet.pt" else "nas-model")["epoch"] < 3


@pytest.mark.parametrize("job", ["supernet", "retrain"])
def test_a_killed_job_resumes_to_the_same_weights(job, tiny_space, tmp_path):
    if job == "supernet":
        def command(run_dir):
            return ["supernet", "train", "--space", TINY_SPACE, "--epochs", 3, "--limit-train", 256,
                    "--run-dir", run_dir]
        checkpoint, final = "supernet.pt", "supernet.pt"
    else:
        arch_file = tmp_path / "arch.yaml"
        arch_file.write_text(yaml.safe_dump(tiny_space.largest().to_dict()))

        def command(run_dir):
            return ["retrain", arch_file, "--epochs", 3, "--limit-train", 512, "--run-dir", run_dir]
        checkpoint, final = "checkpoint.pt", "model.pt"
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    _kill_after_first_checkpoint([str(a) for a in command(killed)], killed / checkpoint)
    for run_dir in (killed, straight):
        result = subprocess.run([sys.executable, "-m", "nas", *map(str, command(run_dir))], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        if run_dir == killed:
            assert "resuming" in result.stderr
    resumed, uninterrupted = _states(killed / final), _states(straight / final)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name


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
