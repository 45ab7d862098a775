"""``training/onnx_templates.py``: the first run of an architecture keeps its exported
graphs, later runs swap their weights in instead of exporting, and a template that is
damaged, forged or unreadable is never used: the run exports as before, its ONNX files
always reproduce its own model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from training import onnx_templates, rundir, trainer
from training.config import TrainConfig
from training.model import VAE

CONFIG = dict(dataset="digits", hidden_dim=32, hidden_layers=1, latent_dim=3, epochs=1,
              batch_size=128, device="cpu", threads=1, seed=0)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / onnx_templates.FOLDER


def train(out: Path, **overrides) -> Path:
    trainer.train(TrainConfig(**{**CONFIG, **overrides}), out, log=lambda line: None,
                  show_progress_bar=False)
    return out


def exports(monkeypatch) -> list[int]:
    """Count the trainer's own exports from here on."""
    calls: list[int] = []
    real = trainer.export_graphs

    def counting(model):
        calls.append(1)
        return real(model)
    monkeypatch.setattr(trainer, "export_graphs", counting)
    return calls


def assert_onnx_reproduces(run: Path) -> None:
    """The run's ONNX files, read through the explorer's checks, equal its torch model."""
    from explorer.onnx_model import load_onnx_model

    model = rundir.load_run(run).model
    onnx_model = load_onnx_model(run)
    z = np.random.default_rng(0).normal(size=(5, model.latent_dim)).astype(np.float32)
    with torch.no_grad():
        want = model.decode(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(onnx_model.decode(z), want, rtol=1e-4, atol=1e-4)


def test_the_second_run_of_an_architecture_exports_nothing(cache, tmp_path, monkeypatch):
    calls = exports(monkeypatch)
    train(tmp_path / "first")
    assert calls == [1]
    assert len(list(cache.glob("*.onnx"))) == 2 and len(list(cache.glob("*.json"))) == 1
    train(tmp_path / "second", seed=1)  # other weights, same architecture
    assert calls == [1]  # taken from the template
    assert_onnx_reproduces(tmp_path / "second")
    train(tmp_path / "wider", hidden_dim=48)  # another architecture: a template of its own
    assert calls == [1, 1] and len(list(cache.glob("*.json"))) == 2


def _template_files(cache: Path) -> dict[str, Path]:
    (record,) = cache.glob("*.json")
    key = record.name[:-len(".json")]
    return {"encoder": cache / f"{key}.encoder.onnx", "decoder": cache / f"{key}.decoder.onnx",
            "record": record}


def test_a_damaged_template_is_exported_anew(cache, tmp_path, monkeypatch):
    train(tmp_path / "first")
    files = _template_files(cache)
    blob = bytearray(files["decoder"].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    files["decoder"].write_bytes(bytes(blob))
    calls = exports(monkeypatch)
    train(tmp_path / "second", seed=1)
    assert calls == [1]
    assert_onnx_reproduces(tmp_path / "second")
    assert onnx_templates.load(files["record"].name[:-5]) is not None  # replaced, whole


def test_a_forged_template_that_computes_something_else_is_never_used(cache, tmp_path,
                                                                       monkeypatch):
    """A template with the right names, shapes and checksums whose decoder computes
    another function (its ReLU made a sigmoid): the numerical check refuses it."""
    train(tmp_path / "first")
    files = _template_files(cache)
    graph = onnx.load_from_string(files["decoder"].read_bytes())
    relus = [node for node in graph.graph.node if node.op_type == "Relu"]
    assert relus
    relus[0].op_type = "Sigmoid"
    forged = graph.SerializeToString()
    files["decoder"].write_bytes(forged)
    record = json.loads(files["record"].read_text())
    record["decoder_sha256"] = hashlib.sha256(forged).hexdigest()
    files["record"].write_text(json.dumps(record))
    key = files["record"].name[:-5]
    assert onnx_templates.load(key) is not None  # it passes every check but the last

    calls = exports(monkeypatch)
    train(tmp_path / "second", seed=1)
    assert calls == [1]
    assert_onnx_reproduces(tmp_path / "second")
    assert onnx_templates.load(key).decoder != forged  # the export replaced it


def test_no_cache_when_turned_off_or_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_CACHE_DIR", "")
    assert onnx_templates.cache_dir() is None
    calls = exports(monkeypatch)
    train(tmp_path / "off")
    train(tmp_path / "off-again", seed=1)
    assert calls == [1, 1]

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VAE_CACHE_DIR", str(blocker))
    train(tmp_path / "unwritable")  # the cache only saves time: training never fails for it
    assert calls == [1, 1, 1]
    assert_onnx_reproduces(tmp_path / "unwritable")


def test_a_fifo_or_oversized_file_in_place_of_a_template_is_skipped(cache, monkeypatch):
    config = TrainConfig(**CONFIG)
    key = onnx_templates.template_key(config, (1, 8, 8))
    graphs = trainer.export_graphs(VAE.from_config(config, (1, 8, 8)))
    assert onnx_templates.store(key, graphs)
    assert onnx_templates.load(key) is not None
    encoder = cache / f"{key}.encoder.onnx"
    encoder.unlink()
    os.mkfifo(encoder)
    assert onnx_templates.load(key) is None  # returns at once: a FIFO is never read
    encoder.unlink()
    encoder.write_bytes(graphs.encoder)
    monkeypatch.setattr(onnx_templates, "MAX_ONNX_BYTES", len(graphs.encoder) - 1)
    assert onnx_templates.load(key) is None


def test_the_key_follows_architecture_and_versions(monkeypatch):
    base = TrainConfig(**CONFIG)
    key = onnx_templates.template_key(base, (1, 8, 8))
    assert key == onnx_templates.template_key(TrainConfig(**{**CONFIG, "seed": 5, "lr": 1e-4,
                                                             "beta": 4.0}), (1, 8, 8))
    assert key != onnx_templates.template_key(TrainConfig(**{**CONFIG, "latent_dim": 4}),
                                              (1, 8, 8))
    assert key != onnx_templates.template_key(TrainConfig(**{**CONFIG, "model": "ae"}),
                                              (1, 8, 8))
    assert key != onnx_templates.template_key(base, (1, 12, 12))
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert key != onnx_templates.template_key(base, (1, 8, 8))


def test_a_first_run_exports_in_a_child_while_it_trains(cache, tmp_path, monkeypatch):
    """With two cores and epochs left to hide it, a run without a template exports a
    freshly initialised model of its architecture in a child process during training,
    swaps its final weights in and keeps the child's graphs as the template."""
    if trainer.default_threads() < 2:
        pytest.skip("the early export needs a second core")
    monkeypatch.setattr(trainer, "EARLY_EXPORT_MIN_S", 0.0)
    calls = exports(monkeypatch)
    train(tmp_path / "run", epochs=3, threads=2)
    assert calls == []  # no export in this process
    assert len(list(cache.glob("*.json"))) == 1
    assert_onnx_reproduces(tmp_path / "run")


def test_only_the_most_recently_used_templates_are_kept(cache, monkeypatch):
    monkeypatch.setattr(onnx_templates, "KEEP", 2)
    config = TrainConfig(**CONFIG)
    graphs = trainer.export_graphs(VAE.from_config(config, (1, 8, 8)))
    keys = [f"{i:032x}" for i in range(4)]
    for age, key in enumerate(keys[:2]):
        assert onnx_templates.store(key, graphs)
        os.utime(cache / f"{key}.json", (1000 + age, 1000 + age))
    assert onnx_templates.load(keys[0]) is not None  # used: now the most recent
    assert onnx_templates.store(keys[2], graphs)  # one too many: keys[1] goes
    assert {p.name.split(".")[0] for p in cache.iterdir()} == {keys[0], keys[2]}
    assert len(list(cache.iterdir())) == 6  # three files each


def test_templates_beyond_the_byte_budget_are_removed_the_newest_kept(cache, monkeypatch):
    config = TrainConfig(**CONFIG)
    graphs = trainer.export_graphs(VAE.from_config(config, (1, 8, 8)))
    one = len(graphs.encoder) + len(graphs.decoder)
    monkeypatch.setattr(onnx_templates, "KEEP_BYTES", int(1.5 * one))
    assert onnx_templates.store("a" * 32, graphs)
    os.utime(cache / f"{'a' * 32}.json", (1000, 1000))
    assert onnx_templates.store("b" * 32, graphs)  # two would exceed 1.5 templates' bytes
    assert {p.name.split(".")[0] for p in cache.iterdir()} == {"b" * 32}
    monkeypatch.setattr(onnx_templates, "KEEP_BYTES", 1)
    assert onnx_templates.store("c" * 32, graphs)  # alone over the budget: still kept
    assert {p.name.split(".")[0] for p in cache.iterdir()} == {"c" * 32}
