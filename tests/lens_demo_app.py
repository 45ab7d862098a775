"""A small Streamlit app hosting the latent lens for the browser tests (and for a look).

    LENS_DEMO_RUN=<run dir> LENS_DEMO_DECODER=<decoder.onnx> streamlit run tests/lens_demo_app.py

Environment: ``LENS_DEMO_RUN`` a run directory (``config.json``, ``latents.npz``),
``LENS_DEMO_DECODER`` its decoder as ONNX (served to the browser at
``/lens-demo/decoder.onnx`` through ``st.App(routes=...)``, as the app serves run files),
``LENS_DEMO_RERUNS`` (optional) a file that gets one line per script run, so a test can
count reruns. Query parameters: ``projection=raw|pca|tsne`` (default: raw for 2-D
latents, else pca), ``inline=1`` (the decoder inline as base64 instead of a URL),
``nomodel=1`` (no decoder at all: server decoding only), ``upload=1`` (a ★ at the
map's median), ``badsha=1`` (a SHA-256 that
does not match the decoder file).

The page shows what Python received from the component (``received: {...}``), the
script-run count, and a button with which Python sets z (bumping ``z_version``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import streamlit as st
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

DECODER_ROUTE = "/lens-demo/decoder.onnx"


def _decoder_path() -> Path:
    return Path(os.environ["LENS_DEMO_DECODER"])


@st.cache_resource
def _session(path: str, mtime: float):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@st.cache_data
def _latents(run: str) -> dict[str, np.ndarray]:
    from training.rundir import read_latents

    return read_latents(run)


@st.cache_data
def _sha256(path: str, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def server_png(z: list[float], shape: tuple[int, int, int]) -> str:
    """The server's decode of z (onnxruntime on the CPU) as a PNG data URI."""
    from PIL import Image

    path = _decoder_path()
    session = _session(str(path), path.stat().st_mtime)
    logits = session.run(None, {session.get_inputs()[0].name:
                                np.asarray([z], dtype=np.float32)})[0][0]
    pixels = np.round(np.clip(1.0 / (1.0 + np.exp(-logits)), 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[0] if shape[0] == 1 else np.moveaxis(pixels, 0, -1))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _count_run() -> int:
    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    marker = os.environ.get("LENS_DEMO_RERUNS")
    if marker:
        with open(marker, "a", encoding="utf-8") as fh:
            fh.write("run\n")
    return st.session_state["runs"]


def page() -> None:
    from app.lens import latent_lens
    from training.rundir import read_config

    st.set_page_config(page_title="Latent lens demo", layout="wide")
    runs = _count_run()
    run = os.environ["LENS_DEMO_RUN"]
    info = read_config(run)
    lat = _latents(run)
    mu = lat["mu"].astype(np.float32)
    n, dim = mu.shape
    shape = tuple(info.image_shape)
    params = st.query_params
    projection = params.get("projection", "raw" if dim == 2 else "pca")
    state = st.session_state
    if "z" not in state:
        state.z = [0.0] * dim
        state.z_version = 0
        state.selected = None

    def received() -> None:
        value = state["lens"]["update"]
        state.received = value
        state.z = [float(v) for v in value["z"]]
        if value["source"] == "click" and value["selected"] is not None:
            state.selected = int(value["selected"])
            state.z = [float(v) for v in mu[state.selected]]  # the sample's mu, set by Python
            state.z_version += 1

    if st.button("Python sets z = 0"):
        state.z = [0.0] * dim
        state.z_version += 1

    path = _decoder_path()
    sha = _sha256(str(path), path.stat().st_mtime)
    model: dict = {"decoder_url": DECODER_ROUTE, "decoder_b64": None}
    if params.get("inline") == "1":
        model = {"decoder_url": None,
                 "decoder_b64": base64.b64encode(path.read_bytes()).decode("ascii")}
    if params.get("badsha") == "1":  # a digest that does not match the file
        sha = hashlib.sha256(b"another file").hexdigest()
    if params.get("nomodel") == "1":
        model = {"decoder_url": None, "decoder_b64": None}
    xy = {"raw": mu[:, :2], "pca": lat["pca"], "tsne": lat.get("tsne")}[projection]
    titles = {"raw": ("z0", "z1"), "pca": ("PCA 1", "PCA 2"), "tsne": ("t-SNE 1", "t-SNE 2")}
    lo = np.minimum(np.floor(mu.min(axis=0)) - 0.5, -3.0)
    hi = np.maximum(np.ceil(mu.max(axis=0)) + 0.5, 3.0)
    selected = state.selected
    sigma = None
    if selected is not None and "logvar" in lat and projection == "raw":
        sigma = np.exp(0.5 * lat["logvar"][selected][:2])
    kl_dim = np.mean(0.5 * (mu**2 + np.exp(lat.get("logvar", np.zeros_like(mu)))
                            - 1 - lat.get("logvar", np.zeros_like(mu))), axis=0)
    order = [int(i) for i in np.argsort(-kl_dim, kind="stable")]
    value = latent_lens(
        key="lens", **model, decoder_sha256=sha, image_shape=shape,
        output="logits", latent_dim=dim, z=state.z, z_version=state.z_version,
        lo=lo, hi=hi, order=order, visible=min(dim, 4),
        slider_help=[f"mean KL {k:.2f} nats" for k in kl_dim],
        server_png=server_png(state.z, shape), projection=projection, xy=xy,
        labels=lat["labels"], class_names=info.class_names, recon_nats=lat["recon"],
        kl_nats=lat["kl"], pca_mean=lat.get("pca_mean"),
        pca_components=lat.get("pca_components"), mu=mu, selected=selected, sigma=sigma,
        upload_xy=np.median(xy, axis=0) if params.get("upload") == "1" else None,
        x_title=titles[projection][0], y_title=titles[projection][1],
        height=380, on_change=received)
    st.text(f"received: {json.dumps(value)}")
    st.text(f"selected: {state.selected}")
    st.text(f"python z: {json.dumps(state.z)}")
    st.text(f"script runs: {runs}")


async def _decoder(request: Request) -> Response:
    try:
        return FileResponse(_decoder_path(), media_type="application/octet-stream")
    except KeyError:
        return PlainTextResponse("no decoder configured", status_code=404)


if __name__ == "__main__":
    page()
else:  # `streamlit run` imports the file to find the ASGI app, then runs page() per session
    app = st.App(__file__, routes=[Route(DECODER_ROUTE, _decoder)])
