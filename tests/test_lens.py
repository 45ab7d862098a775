"""The latent lens without a browser: the Python wrapper's data shaping (base64 round trip,
stable content hashes, shape checks with clear errors), the component mounted through
Streamlit's AppTest (file-backed v2 assets), the vendored onnxruntime-web files against
VENDOR.md, and the component's JS maths run with ``node`` against ``training/projection.py``
on random data (PCA slice and its inverse, the t-SNE neighbour placement both ways, the
pixel conversion)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from app.lens import (
    COMPONENT_NAME,
    FRONTEND,
    decode_array,
    encode_array,
    latent_lens,
    lens_data,
    map_payload,
)
from training.projection import apply_pca, fit_pca, place_by_neighbours

JS = FRONTEND / "lens.js"
VENDOR = FRONTEND / "vendor" / "onnxruntime-web"
SHA = "ab" * 32


def _base(**overrides):
    args = dict(key="lens", decoder_url="/vae-model/run/x/decoder.onnx", decoder_sha256=SHA,
                image_shape=(1, 8, 8), latent_dim=2, z=[0.0, 0.5], lo=[-3, -3], hi=[3, 3])
    args.update(overrides)
    return args


# --------------------------------------------------------------------------- encoding

def test_base64_round_trip_is_little_endian_float32_and_int32():
    values = np.random.default_rng(0).normal(size=(7, 3))
    text = encode_array(values)
    raw = base64.b64decode(text)
    assert raw == values.astype("<f4").tobytes()
    np.testing.assert_array_equal(decode_array(text, shape=(7, 3)), values.astype(np.float32))
    ints = np.array([0, -1, 2**31 - 1, 7])
    assert base64.b64decode(encode_array(ints, "i4")) == ints.astype("<i4").tobytes()
    np.testing.assert_array_equal(decode_array(encode_array(ints, "i4"), "i4"), ints)


def test_map_payload_hash_is_stable_and_follows_content():
    rng = np.random.default_rng(1)
    xy, labels, mu = rng.normal(size=(50, 2)), rng.integers(0, 3, 50), rng.normal(size=(50, 4))
    a = map_payload(projection="tsne", xy=xy, labels=labels, latent_dim=4, mu=mu)
    b = map_payload(projection="tsne", xy=xy.copy(), labels=list(labels), latent_dim=4,
                    mu=mu.copy())
    assert a["hash"] == b["hash"] and a is b  # same content: same payload, not re-encoded
    assert set(a) >= {"xy", "labels", "mu", "hash", "n", "class_names", "colours"}
    assert a["n"] == 50 and a["class_names"] == ["0", "1", "2"]
    xy2 = xy.copy()
    xy2[3, 1] += 1e-3
    c = map_payload(projection="tsne", xy=xy2, labels=labels, latent_dim=4, mu=mu)
    d = map_payload(projection="tsne", xy=xy, labels=labels, latent_dim=4, mu=mu,
                    class_names=["a", "b", "c"])
    assert len({a["hash"], c["hash"], d["hash"]}) == 3
    np.testing.assert_allclose(decode_array(a["xy"], shape=(50, 2)), xy, rtol=1e-6)
    np.testing.assert_array_equal(decode_array(a["labels"], "i4"), labels)


def test_lens_data_shapes_everything_for_the_component():
    data = lens_data(**_base(latent_dim=3, z=[0, 1, 2], lo=[-1] * 3, hi=[3] * 3, order=[2, 0, 1],
                             visible=2, slider_help=["a", "b", "c"],
                             server_png="data:image/png;base64,AAAA"))
    json.dumps(data)  # JSON only: no NumPy scalars or arrays
    assert data["model"] == {"url": "/vae-model/run/x/decoder.onnx", "sha256": SHA, "b64": None,
                             "shape": [1, 8, 8], "output": "logits", "latent_dim": 3}
    assert data["z"] == [0.0, 1.0, 2.0] and data["z_version"] == 0
    assert data["sliders"] == {"lo": [-1.0] * 3, "hi": [3.0] * 3, "order": [2, 0, 1],
                               "visible": 2, "help": ["a", "b", "c"]}
    assert data["map"] is None and data["selected"] is None and data["id"] == "lens"


@pytest.mark.parametrize("overrides, message", [
    (dict(z=[0.0]), r"z must have shape \(2,\)"),
    (dict(z=[0.0, float("nan")]), "z has NaN"),
    (dict(lo=[-3, 3]), "lo must be below hi.*z1"),
    (dict(order=[0, 0]), "order must be a permutation"),
    (dict(visible=3), "visible must be in 0..2"),
    (dict(slider_help=["x"]), "slider_help needs 2 strings"),
    (dict(image_shape=(2, 8, 8)), "1 or 3 channels"),
    (dict(image_shape=(8, 8)), r"image_shape must be \(C, H, W\)"),
    (dict(decoder_sha256="abc"), "64-digit lowercase hex"),
    (dict(decoder_url="http://elsewhere.example/decoder.onnx"), "path on the app's own server"),
    (dict(decoder_url="//elsewhere.example/decoder.onnx"), "path on the app's own server"),
    (dict(decoder_url="javascript:alert(1)"), "path on the app's own server"),
    (dict(server_png="javascript:alert(1)"), "data:image"),
    (dict(output="sigmoid"), "output must be"),
    (dict(xy=[[0, 0, 0]], labels=[0]), r"xy must have shape \(N, 2\)"),
    (dict(xy=[[0, 0], [1, 1]], labels=[0]), r"labels must have shape \(2,\)"),
    (dict(xy=[[0, 0]], labels=[0.5]), "labels must be integers"),
    (dict(xy=[[0, 0]], labels=[3], class_names=["a"]), "class_names has 1 names"),
    (dict(xy=[[0, 0]], labels=[0], colours=["red; background:url(x)"]), "hex colours"),
    (dict(xy=[[0, 0]], labels=[0], projection="pca"), "needs pca_mean and pca_components"),
    (dict(xy=[[0, 0]], labels=[0], projection="pca", pca_mean=[0, 0],
          pca_components=[[1, 0, 0], [0, 1, 0]]), r"pca_components must have shape \(2, 2\)"),
    (dict(xy=[[0, 0]], labels=[0], projection="tsne"), "needs mu"),
    (dict(xy=[[0, 0]], labels=[0], projection="tsne", mu=[[0, 0, 0]]),
     r"mu must have shape \(1, 2\)"),
    (dict(xy=[[0, 0]], labels=[0], projection="umap"), "projection must be one of"),
    (dict(xy=[[0, 0]], labels=[0], selected=1), "selected=1 is not a row"),
    (dict(xy=[[0, 0]], labels=[0], sigma=[1.0]), r"sigma must have shape \(2,\)"),
])
def test_bad_input_is_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        latent_lens(**_base(**overrides))


def test_outside_streamlit_it_validates_and_returns_none():
    assert latent_lens(**_base(xy=[[0, 0], [1, 1]], labels=[0, 1], selected=1,
                               sigma=[0.1, 0.2])) is None


def test_component_mounts_with_file_backed_v2_assets():
    """Through AppTest's runtime: Streamlit serves app/lens/frontend (the JS is a URL, not
    inline content); the lens's data is lens_data's JSON naming the map by its hash, and
    the map's arrays ride in a second element of the same component."""
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from app.lens import latent_lens

        value = latent_lens(key="lens", decoder_url="/m/decoder.onnx", decoder_sha256="ab" * 32,
                            image_shape=(1, 8, 8), latent_dim=2, z=[0.5, -0.5], z_version=3,
                            lo=[-3, -3], hi=[3, 3], xy=[[0, 0], [1, 1]], labels=[0, 1],
                            class_names=["<b>zero</b>", "one"])
        st.text(f"value={value}")

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert at.text[0].value == "value=None"
    protos = [node.proto for node in at.main[0].children.values()]
    assert [p.component_name for p in protos] == [COMPONENT_NAME] * 2
    for proto in protos:
        assert (proto.js_source_path, proto.css_source_path) == ("lens.js", "lens.css")
        assert proto.js_content == ""
    lens, carrier = (json.loads(p.json) for p in protos)
    assert lens["z"] == [0.5, -0.5] and lens["z_version"] == 3
    assert carrier["role"] == "map" and set(lens["map"]) == {"hash", "n", "projection"}
    assert lens["map"]["hash"] == carrier["map"]["hash"]
    assert carrier["map"]["class_names"] == ["<b>zero</b>", "one"]  # passed on as text


# --------------------------------------------------------------------------- assets

def test_vendored_runtime_matches_vendor_md_and_lens_js():
    text = (VENDOR / "VENDOR.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", text, flags=re.M)
    assert {name for name, _, _ in rows} == {"ort.wasm.bundle.min.mjs",
                                            "ort-wasm-simd-threaded.wasm", "LICENSE"}
    for name, size, sha in rows:
        data = (VENDOR / name).read_bytes()
        assert len(data) == int(size), name
        assert hashlib.sha256(data).hexdigest() == sha, name
    assert re.search(r"onnxruntime-web \d+\.\d+\.\d+", text) and "MIT" in text
    assert "MIT License" in (VENDOR / "LICENSE").read_text()
    js = JS.read_text()
    for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"):
        assert f"'{name}'" in js
    assert "numThreads = 1" in js


def test_component_never_renders_data_as_html():
    js = JS.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in js, sink
    assert not re.search(r"""fetch\(\s*['"`]https?:""", js)  # nothing from elsewhere


# --------------------------------------------------------------------------- JS maths

NODE = shutil.which("node")
HARNESS = """
import fs from 'node:fs';
const source = fs.readFileSync(process.argv[1]);
const lens = await import('data:text/javascript;base64,' + source.toString('base64'));
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = {};
for (const [name, call] of Object.entries(input)) {
  const args = call.args.map((a) => (a && a.f32 !== undefined ? lens.f32(a.f32)
    : a && a.i32 !== undefined ? lens.i32(a.i32) : a));
  if (call.fn === 'toRGBA') args.push(new Uint8ClampedArray(4 * args[2] * args[3]));
  const result = lens[call.fn](...args);
  out[name] = Array.from(result);
}
process.stdout.write(JSON.stringify(out));
"""


def run_js(calls: dict) -> dict:
    proc = subprocess.run([NODE, "--input-type=module", "-e", HARNESS, str(JS)],
                          input=json.dumps(calls), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def f32(a):
    return {"f32": encode_array(a)}


needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


@needs_node
def test_js_pca_slice_and_marker_agree_with_training_projection():
    rng = np.random.default_rng(2)
    dim = 6
    mu = rng.normal(size=(300, dim)) * rng.uniform(0.2, 2, size=dim)
    _, mean, comps = fit_pca(mu)
    z = rng.normal(size=dim).astype(np.float32)
    p = rng.normal(size=2)
    calls = {
        "forward": {"fn": "pcaForward", "args": [list(map(float, z)), f32(mean), f32(comps), dim]},
        "inverse": {"fn": "pcaInverse", "args": [float(p[0]), float(p[1]), f32(mean), f32(comps),
                                                dim]},
    }
    out = run_js(calls)
    np.testing.assert_allclose(out["forward"], apply_pca(z, mean, comps)[0], rtol=1e-5,
                               atol=1e-5)
    inverse = np.asarray(out["inverse"])
    np.testing.assert_allclose(inverse, mean + p @ comps, rtol=1e-5, atol=1e-5)
    # the lens decodes a point of the slice, and the × marker lands where the pointer is
    np.testing.assert_allclose(apply_pca(inverse, mean, comps)[0], p, atol=1e-4)


@needs_node
def test_js_tsne_marker_is_place_by_neighbours_and_lens_is_its_map_space_mirror():
    rng = np.random.default_rng(3)
    n, dim = 400, 5
    mu = rng.normal(size=(n, dim)).astype(np.float32)
    xy = (rng.normal(size=(n, 2)) * 20).astype(np.float32)
    queries = rng.normal(size=(8, dim)).astype(np.float32)
    points = (rng.normal(size=(8, 2)) * 20).astype(np.float32)
    calls = {}
    for i, z in enumerate(queries):
        calls[f"marker{i}"] = {"fn": "latentToMapIDW",
                               "args": [list(map(float, z)), f32(mu), f32(xy), n, dim]}
    for i, p in enumerate(points):
        calls[f"lens{i}"] = {"fn": "mapToLatentIDW",
                             "args": [float(p[0]), float(p[1]), f32(xy), f32(mu), n, dim]}
    calls["exact"] = {"fn": "latentToMapIDW", "args": [list(map(float, mu[7])), f32(mu), f32(xy),
                                                       n, dim]}
    out = run_js(calls)
    want_marker = place_by_neighbours(queries, mu, xy, k=10)
    # the lens: the same IDW with the roles swapped (neighbours in map space, mean of mu)
    want_lens = place_by_neighbours(points, xy, mu, k=10)
    for i in range(len(queries)):
        np.testing.assert_allclose(out[f"marker{i}"], want_marker[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out[f"lens{i}"], want_lens[i], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["exact"], xy[7], atol=1e-3)  # an exact match lands on it


@needs_node
def test_js_pixels_are_rounded_sigmoid_of_logits():
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=(3, 4, 5)) * 4).astype(np.float32)
    out = run_js({
        "grey": {"fn": "toRGBA", "args": [f32(logits[:1]), 1, 4, 5, True]},
        "rgb": {"fn": "toRGBA", "args": [f32(logits), 3, 4, 5, True]},
        "prob": {"fn": "toRGBA", "args": [f32(1 / (1 + np.exp(-logits[:1]))), 1, 4, 5, False]},
    })
    want = np.round(1 / (1 + np.exp(-logits.astype(np.float64))) * 255)
    grey = np.asarray(out["grey"]).reshape(4, 5, 4)
    assert np.abs(grey[..., 0] - want[0]).max() <= 1  # float32 vs float64 sigmoid at .5
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 3] == 255).all()
    rgb = np.asarray(out["rgb"]).reshape(4, 5, 4)
    assert np.abs(np.moveaxis(rgb[..., :3], -1, 0) - want).max() <= 1
    assert np.abs(np.asarray(out["prob"]).reshape(4, 5, 4)[..., 0] - want[0]).max() <= 1


@needs_node
def test_js_reads_the_wrappers_base64_and_ticks_are_nice():
    values = np.random.default_rng(5).normal(size=11)
    out = run_js({"f32": {"fn": "f32", "args": [encode_array(values)]},
                  "i32": {"fn": "i32", "args": [encode_array([3, -4, 5], "i4")]},
                  "ticks": {"fn": "ticks", "args": [-1.73, 0.8, 5]},
                  "range": {"fn": "paddedRange", "args": [f32([[0, 1], [2, 5]]), 2, 0.1]}})
    np.testing.assert_array_equal(out["f32"], values.astype(np.float32))
    assert out["i32"] == [3, -4, 5]
    assert out["ticks"] == pytest.approx([-1.5, -1.0, -0.5, 0.0, 0.5])
    assert out["range"] == pytest.approx([-0.2, 2.2, 0.6, 5.4])
