"""Run folders and output files: nas writes only into folders it created (or empty ones), under parents that
exist, and names taken from files cannot lead out of runs/."""

import pytest
import yaml

from nas.cli import main
from nas.runs import safe_name
from tests.conftest import TINY_SPACE


def _refused(capsys, argv, *fragments):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(f in err[0] for f in fragments), err


def _snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def arch_file(tmp_path, tiny_space):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(tiny_space.smallest().to_dict()))
    return path


def test_names_from_files_become_one_plain_folder_name():
    assert safe_name("../../etc") == "etc"
    assert safe_name("my space/v2: big") == "my-space-v2-big"
    assert safe_name("..") == "unnamed" and safe_name(".hidden") == "hidden"


def test_a_run_folder_nas_did_not_create_is_refused_and_left_as_it_was(tmp_path, capsys, arch_file):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's own file")
    before = _snapshot(tmp_path)
    for argv in (["supernet", "train", "--space", TINY_SPACE, "--run-dir", foreign],
                 ["retrain", arch_file, "--run-dir", foreign],
                 ["search", "--space", TINY_SPACE, "--latency-budget", "1s", "--run-dir", foreign]):
        _refused(capsys, argv, str(foreign), "holds files nas did not write there")
    assert _snapshot(tmp_path) == before


def test_a_file_a_device_or_a_missing_parent_is_no_run_folder(tmp_path, capsys, arch_file):
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    _refused(capsys, ["supernet", "train", "--space", TINY_SPACE, "--run-dir", a_file], "is a file, not a folder")
    _refused(capsys, ["retrain", arch_file, "--run-dir", "/dev/null"], "is a file, not a folder")
    _refused(capsys, ["supernet", "train", "--space", TINY_SPACE, "--run-dir", "/"], "holds files nas did not write")
    _refused(capsys, ["retrain", arch_file, "--run-dir", tmp_path / "no" / "such" / "run"], "does not exist")
    assert not (tmp_path / "no").exists()


def test_output_files_must_be_files_in_existing_folders(tmp_path, capsys):
    _refused(capsys, ["latency", "fit", "--space", TINY_SPACE, "--out", tmp_path / "missing" / "p.json"],
             "does not exist")
    _refused(capsys, ["latency", "fit", "--space", TINY_SPACE, "--out", tmp_path], "is a folder")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    _refused(capsys, ["export", checkpoint, "--out", tmp_path / "missing" / "m.onnx"], "does not exist")
    assert _snapshot(tmp_path) == ["model.pt"]


def test_a_space_named_to_escape_trains_inside_runs(tmp_path, capsys, monkeypatch):
    document = yaml.safe_load(TINY_SPACE.read_text())
    document["name"] = "../../escaped"
    space = tmp_path / "work" / "space.yaml"
    space.parent.mkdir()
    space.write_text(yaml.safe_dump(document))
    monkeypatch.chdir(space.parent)
    assert main(["supernet", "train", "--space", "space.yaml", "--epochs", "1", "--limit-train", "64"]) == 0
    assert (space.parent / "runs" / "supernet-escaped" / "supernet.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
