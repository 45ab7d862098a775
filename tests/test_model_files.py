"""The route that gives the browser a run's decoder.onnx serves that file and nothing
else: wrong names, traversal, symbolic links, other files and stale hashes are refused."""

from __future__ import annotations

import hashlib
import os

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from explorer.model_files import ModelFileError, model_url, read_model_file

PAYLOAD = b"\x08\x07onnx-bytes" * 100


@pytest.fixture
def runs(tmp_path):
    run = tmp_path / "runs" / "demo-vae-z2"
    run.mkdir(parents=True)
    (run / "decoder.onnx").write_bytes(PAYLOAD)
    (run / "config.json").write_text("{}")
    return tmp_path / "runs"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_serves_the_file_whose_hash_is_asked(runs):
    assert read_model_file(runs, "demo-vae-z2", sha(PAYLOAD), "decoder.onnx") == PAYLOAD


@pytest.mark.parametrize(("run", "file"), [
    ("demo-vae-z2", "config.json"),          # not a model file
    ("demo-vae-z2", "../config.json"),
    ("..", "decoder.onnx"),                   # traversal
    ("demo-vae-z2/..", "decoder.onnx"),
    (".hidden", "decoder.onnx"),
    ("missing-run", "decoder.onnx"),
])
def test_refuses_other_files(runs, run, file):
    with pytest.raises(ModelFileError) as caught:
        read_model_file(runs, run, sha(PAYLOAD), file)
    assert caught.value.status == 404
    assert str(runs) not in str(caught.value)  # no server paths in the answer


def test_refuses_a_stale_hash(runs):
    with pytest.raises(ModelFileError) as caught:
        read_model_file(runs, "demo-vae-z2", sha(b"older model"), "decoder.onnx")
    assert caught.value.status == 409
    with pytest.raises(ModelFileError):
        read_model_file(runs, "demo-vae-z2", "not-a-hash", "decoder.onnx")


def test_refuses_symbolic_links(runs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    link_run = runs / "linked"
    link_run.mkdir()
    os.symlink(secret, link_run / "decoder.onnx")
    with pytest.raises(ModelFileError):
        read_model_file(runs, "linked", sha(b"private"), "decoder.onnx")


def test_a_changed_file_is_rehashed(runs):
    read_model_file(runs, "demo-vae-z2", sha(PAYLOAD), "decoder.onnx")  # now cached
    new = PAYLOAD + b"retrained"
    (runs / "demo-vae-z2" / "decoder.onnx").write_bytes(new)
    assert read_model_file(runs, "demo-vae-z2", sha(new), "decoder.onnx") == new
    with pytest.raises(ModelFileError):
        read_model_file(runs, "demo-vae-z2", sha(PAYLOAD), "decoder.onnx")


def test_http_route(runs, monkeypatch):
    from app import routes

    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    monkeypatch.setattr("sys.argv", ["streamlit_app.py"])
    client = TestClient(Starlette(routes=routes.routes()))
    url = model_url(routes.MODEL_PREFIX, "demo-vae-z2", "decoder.onnx", sha(PAYLOAD))
    answer = client.get(url)
    assert answer.status_code == 200 and answer.content == PAYLOAD
    assert "immutable" in answer.headers["cache-control"]
    bad = model_url(routes.MODEL_PREFIX, "demo-vae-z2", "config.json", sha(b"{}"))
    assert client.get(bad).status_code == 404
    assert client.get(f"{routes.MODEL_PREFIX}/%2E%2E/{sha(PAYLOAD)}/decoder.onnx"
                      ).status_code == 404
