"""Shared fixtures: tiny trained run directories, made once per test session.

``tiny_run`` is a 2-D VAE on scikit-learn's 8x8 digits (about a second to train);
``tiny_run_z4`` a 4-D one (with a cached t-SNE); ``tiny_ae_run`` a plain autoencoder.
Tests must not modify them: copy with ``copy_run`` first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.trainer import train

TINY = dict(dataset="digits", hidden_dim=64, hidden_layers=1, epochs=3, batch_size=64,
            lr=3e-3, seed=0, device="cpu", threads=1)


def make_run(root: Path, name: str, **overrides) -> Path:
    config = TrainConfig(**{**TINY, **overrides})
    out = root / name
    train(config, out, log=lambda line: None, show_progress_bar=False)
    return out


@pytest.fixture(scope="session", autouse=True)
def onnx_template_cache(tmp_path_factory):
    """Every test (and every process it starts) keeps ONNX templates in one folder of this
    session (``training/onnx_templates.py``), never in the user's cache: the first run of
    an architecture exports, later ones reuse, as on a user's machine."""
    before = os.environ.get("VAE_CACHE_DIR")
    os.environ["VAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["VAE_CACHE_DIR"])
    if before is None:
        os.environ.pop("VAE_CACHE_DIR", None)
    else:
        os.environ["VAE_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def tiny_run(runs_root) -> Path:
    return make_run(runs_root, "digits-vae-z2", latent_dim=2)


@pytest.fixture(scope="session")
def tiny_run_z4(runs_root) -> Path:
    return make_run(runs_root, "digits-vae-z4", latent_dim=4)


@pytest.fixture(scope="session")
def tiny_ae_run(runs_root) -> Path:
    return make_run(runs_root, "digits-ae-z2", latent_dim=2, model="ae")


@pytest.fixture
def copy_run(tmp_path):
    """Copy a run directory into this test's tmp_path: ``copy_run(src) -> Path``."""
    def _copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        return dst
    return _copy
