import numpy as np
import pytest
import torch

from nas.data import batches, load_data
from nas.errors import NasError


def test_embedded_fashion_mnist_has_stratified_splits():
    data = load_data()
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    assert (data.size("train"), data.size("val"), data.size("test")) == (4500, 500, 1000)
    assert np.bincount(data.labels["val"]).tolist() == [50] * 10
    x, y = data.tensors("val", 32, 1)
    assert x.shape == (500, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0
    rgb, _ = data.tensors("test", 40, 3)
    assert rgb.shape == (1000, 3, 40, 40)


def test_npz_file_with_nhwc_colour_images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.integers(0, 255, (60, 20, 20, 3), dtype=np.uint8), y_train=np.arange(60) % 3,
             x_test=rng.integers(0, 255, (9, 20, 20, 3), dtype=np.uint8), y_test=np.arange(9) % 3)
    data = load_data(path)
    assert data.num_classes == 3 and data.size("val") == 6 and data.size("train") == 54
    assert data.tensors("train", 32, 1)[0].shape == (54, 1, 32, 32)


def test_image_folder(tmp_path):
    from PIL import Image

    for split, count in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24, 24), (i * 30, 0, 200 if label == "dog" else 0)).save(folder / f"{i}.png")
    data = load_data(tmp_path)
    assert data.class_names == ["cat", "dog"]
    assert data.size("test") == 4 and data.size("train") + data.size("val") == 12
    assert data.tensors("test", 32, 3)[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere", "no such file or folder"),
    (lambda p: p, "no class subfolders found"),
    (lambda p: (p / "a.txt").write_text("x") and p / "a.txt", "expected an .npz file or an image folder"),
])
def test_bad_data_paths_are_named(tmp_path, make, message):
    with pytest.raises(NasError, match=message):
        load_data(make(tmp_path))


def test_shuffled_batches_are_seeded_and_cover_everything():
    x, y = torch.arange(10.0).reshape(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous(), torch.arange(10)
    first = [yb.tolist() for _, yb in batches(x, y, 4, torch.Generator().manual_seed(1), augment=True)]
    second = [yb.tolist() for _, yb in batches(x, y, 4, torch.Generator().manual_seed(1), augment=True)]
    assert first == second and sorted(sum(first, [])) == list(range(10))
