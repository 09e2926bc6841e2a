import json

import numpy as np
import pytest
import torch
import yaml

from nas.data import SPLIT_FILE, EpochBatches, load_data
from nas.errors import NasError
from tests.conftest import TINY_SPACE


def _images_of(batches):
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_embedded_fashion_mnist_has_stratified_splits_and_loads_in_batches():
    data = load_data()
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    assert (data.size("train"), data.size("val"), data.size("test")) == (4500, 500, 1000)
    assert np.bincount(data.labels["val"]).tolist() == [50] * 10
    x, y = _images_of(data.loader("val", 32, 1, 128))
    assert x.shape == (500, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0 and torch.equal(y, torch.from_numpy(data.labels["val"]))
    rgb, _ = _images_of(data.loader("test", 40, 3, 500))
    assert rgb.shape == (1000, 3, 40, 40)


def test_npz_file_with_nhwc_colour_images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.integers(0, 255, (60, 20, 20, 3), dtype=np.uint8), y_train=np.arange(60) % 3,
             x_test=rng.integers(0, 255, (9, 20, 20, 3), dtype=np.uint8), y_test=np.arange(9) % 3)
    data = load_data(path)
    assert data.num_classes == 3 and data.size("val") == 6 and data.size("train") == 54
    assert _images_of(data.loader("train", 32, 1, 16, train=True))[0].shape == (54, 1, 32, 32)


def _folder(root, counts=(("train", 6), ("test", 2)), size=24):
    from PIL import Image

    for split, count in counts:
        for label in ("cat", "dog"):
            folder = root / split / label if split else root / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (size, size), (i * 30, 0, 200 if label == "dog" else 0)).save(folder / f"{i}.png")
    return root


def test_an_image_folder_is_read_lazily_through_timm_transforms(tmp_path):
    data = load_data(_folder(tmp_path), workers=0)
    assert data.class_names == ["cat", "dog"] and not data.images  # files, not decoded images
    assert data.size("test") == 4 and data.size("train") + data.size("val") == 12
    x, y = _images_of(data.loader("test", 32, 3, 3))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    assert x[2, 2].mean() > 0.5 > x[0, 2].mean()  # the dogs are blue: the pixels are the files'
    train = _images_of(data.loader("train", 16, 1, 4, train=True, seed=1))[0]
    assert train.shape == (data.size("train"), 1, 16, 16)


def test_loader_worker_processes_give_the_images_one_process_does(tmp_path):
    folder = _folder(tmp_path)
    alone = load_data(folder, workers=0).loader("train", 16, 3, 4, train=True, seed=3)
    workers = load_data(folder, workers=2).loader("train", 16, 3, 4, train=True, seed=3)
    for (x1, y1, s1), (x2, y2, s2) in zip(alone.epoch(1), workers.epoch(1)):  # per-image seeds: same augmentation
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and s1 == s2


def test_a_flat_folders_held_out_split_is_written_reused_and_a_changed_folder_refused(tmp_path):
    folder = _folder(tmp_path / "images", counts=((None, 10),))
    run = tmp_path / "run"
    run.mkdir()
    data = load_data(folder, seed=4, workers=0, run_dir=run)
    assert (data.size("train"), data.size("val"), data.size("test")) == (14, 2, 4)
    data.save_split(run)
    saved = json.loads((run / SPLIT_FILE).read_text())
    assert len(saved["val"]) == 2 and len(saved["test"]) == 4
    again = load_data(folder, seed=5, workers=0, run_dir=run)  # another seed, but the run's split stands
    assert [str(f) for f in again.files["val"]] == [str(f) for f in data.files["val"]]
    assert load_data(folder, seed=5, workers=0).files["val"] != data.files["val"]
    (folder / "cat" / "0.png").unlink()
    with pytest.raises(NasError, match="the images changed since this run began"):
        load_data(folder, seed=4, workers=0, run_dir=run)


def test_a_run_folder_records_its_images_and_refuses_others_whatever_path_names_them(tmp_path, monkeypatch):
    def npz(path, shift):
        x = (np.arange(40 * 8 * 8).reshape(40, 8, 8) + shift).astype(np.uint8)
        np.savez(path, x_train=x[:30], y_train=np.arange(30) % 2, x_test=x[30:], y_test=np.arange(10) % 2)
        return path

    ours, run = npz(tmp_path / "ours.npz", 0), tmp_path / "run"
    npz(tmp_path / "other.npz", 1)
    run.mkdir()
    load_data(ours, run_dir=run).save_split(run)
    recorded = json.loads((run / SPLIT_FILE).read_text())
    assert recorded["source"] == str(ours.resolve()) and recorded["train_images"] == 26
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy.npz").write_bytes(ours.read_bytes())
    for same in ("ours.npz", "copy.npz"):  # another path to the same images resumes
        assert load_data(same, run_dir=run).fingerprint == recorded["fingerprint"]
    with pytest.raises(NasError, match=r"--data other.npz: this run began with other images \(.*ours.npz\)"):
        load_data("other.npz", run_dir=run)
    with pytest.raises(NasError, match="--limit-train: this run began with 26 training images, not 20"):
        load_data("ours.npz", limit_train=20, run_dir=run)
    npz(ours, 2)
    with pytest.raises(NasError, match="--data ours.npz: the images changed since this run began"):
        load_data("ours.npz", run_dir=run)


def test_unreadable_images_are_skipped_and_counted_and_a_mostly_unreadable_folder_refused(tmp_path):
    folder = _folder(tmp_path / "some", counts=(("train", 8), ("test", 2)))
    (folder / "train" / "cat" / "3.png").write_bytes(b"not a png")
    (folder / "train" / "dog" / "zero.png").write_bytes(b"")
    data = load_data(folder, workers=0)
    x, y = _images_of(data.loader("train", 16, 3, 5))
    assert len(y) == data.size("train")  # the next file stood in for each unreadable one
    assert sorted(p.split("/")[-1] for p in data.skipped) == ["3.png", "zero.png"]
    lines = []
    assert data.note_skipped(lines.append, 0) == 2 and "skipped 2 unreadable image(s)" in lines[0]

    bad = _folder(tmp_path / "bad", counts=(("train", 4), ("test", 2)))
    for png in (bad / "train").rglob("*.png"):
        png.write_bytes(b"\x89PNG broken")
    with pytest.raises(NasError, match="6 of 6 train images tried are unreadable .* not an image file Pillow"):
        load_data(bad)


def test_bad_data_paths_are_named(tmp_path):
    for make, message in [(lambda p: p / "nowhere", "no such file or folder"),
                          (lambda p: p, "no class subfolders found"),
                          (lambda p: (p / "a.txt").write_text("x") and p / "a.txt",
                           "expected an .npz file or an image folder")]:
        with pytest.raises(NasError, match=message):
            load_data(make(tmp_path))


def test_epoch_batches_are_seeded_and_the_ranks_share_each_global_batch_exactly_once():
    def epoch(rank=0, world=1, epoch=2):
        sampler = EpochBatches(range(11), 4, shuffle=True, seed=1, rank=rank, world=world)
        sampler.set_epoch(epoch)
        return list(sampler)

    one = epoch()
    assert one == epoch() and one != epoch(epoch=3)
    assert sorted(i for batch in one for i, _ in batch) == list(range(11))
    two = [epoch(0, 2), epoch(1, 2)]
    for step, whole in enumerate(one):  # rank 0 then rank 1 make up each global batch, seeds included
        assert two[0][step] + two[1][step] == whole
    three = EpochBatches(range(9), 4, shuffle=False, rank=2, world=3)  # a last batch of 1 for 3 ranks is dropped
    assert three.dropped == 1 and len(list(three)) == 2


def test_each_rank_reads_only_its_shard_under_torchrun(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT, TESTS

    rng = np.random.default_rng(0)
    npz = tmp_path / "ids.npz"  # every image's label is its own index, so a batch's labels say what was read
    np.savez(npz, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40),
             x_val=np.zeros((1, 8, 8), np.uint8), y_val=[0], x_test=np.zeros((1, 8, 8), np.uint8), y_test=[0])
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]
    result = subprocess.run([*torchrun, str(TESTS / "shard_worker.py"), str(npz), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in range(2):
        mine = [set(sum(s[epoch], [])) for s in seen]
        assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(40))  # disjoint, and the whole epoch
        assert len(seen[0][epoch]) == len(seen[1][epoch]) == 4  # global batches of 12: 6 images a rank a step
    assert seen[0][0] != seen[0][1]  # a new order each epoch


def test_every_resolution_of_a_two_resolution_space_is_trained_on(tmp_path, small_data):
    from nas.space import load_space
    from nas.supernet_training import (TrainConfig, load_supernet_checkpoint, step_resolution, train_step,
                                       train_supernet)
    from nas.training import Precision
    from nas.weight_sharing import SpaceSupernet

    document = yaml.safe_load(TINY_SPACE.read_text())
    document["resolution"] = [32, 40]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(document))
    space = load_space(tmp_path / "two.yaml").with_num_classes(small_data.num_classes)
    path = train_supernet(space, small_data, tmp_path / "run", TrainConfig(epochs=1, batch_size=32, random_subnets=2),
                          torch.device("cpu"), log=lambda _: None)
    steps = load_supernet_checkpoint(path, space)["history"][0]["steps_per_resolution"]
    assert set(steps) == {32, 40} and sum(steps.values()) == 16 and min(steps.values()) >= 3

    model, sizes = SpaceSupernet(space), []  # and every member of a step sees the step's resolution
    model.register_forward_pre_hook(lambda _, inputs: sizes.append(inputs[0].shape[-1]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = next(iter(small_data.loader("train", 40, 1, 8)))
    for step in range(6):
        train_step(model, space, x, y, 1.0, step, TrainConfig(random_subnets=2), optimizer,
                   Precision(torch.device("cpu")))
    assert sizes == [step_resolution(space, 0, step) for step in range(6) for _ in range(3)]  # 3 members a step
    assert set(sizes) == {32, 40}
