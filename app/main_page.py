"""The main page: latent map, live decoding sliders, ELBO terms (widgets only).

:func:`render` is the page ``streamlit_app.py`` lists first. The logic lives in
``explorer/`` (unit tested without Streamlit), the caching and the run picker in
``app/shared.py``. The decode panel is an ``st.fragment``: moving a slider reruns
only that panel (one decoder pass and two small PNGs), never the map or the ELBO panel.
The page runs the model with ONNX Runtime (``explorer/onnx_model.py``) and never imports
torch, and
draws its charts through ``app/chart.py`` (a light plotly.js build).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from app import chart as app_chart
from app import shared as app_shared
from explorer import figures
from explorer.inference import (
    SampleTerms,
    available_projections,
    map_coords,
    place_on_map,
    sample_prior,
    sample_terms,
)
from explorer.live import LiveDecoder
from explorer.onnx_model import OnnxModel
from explorer.uploads import (
    MAX_BYTES,
    PreparedImage,
    UploadError,
    has_dark_background,
    prepare_upload,
)
from training import rundir
from training.data import DataError

# "inline": decoded images travel inside the websocket message as data URIs (one round
# trip); "media": st.image, which the browser fetches with a second HTTP request.
IMAGE_MODE = os.environ.get("VAE_EXPLORER_IMAGES", "inline")
PROJECTION_NAMES = {"raw": "latent axes", "pca": "PCA", "tsne": "t-SNE"}
SAMPLE_KEY = "sample_index"
MC_SAMPLES = 64
SLIDER_STEP = 0.01


# --------------------------------------------------------------------------- cached pieces

@st.cache_resource(show_spinner=False)
def _training_lock() -> threading.Lock:
    return threading.Lock()


# --------------------------------------------------------------------------- state helpers

def z_keys(latent_dim: int) -> list[str]:
    return [f"z{j}" for j in range(latent_dim)]


def current_z(latent_dim: int) -> np.ndarray:
    return np.array([float(st.session_state.get(k, 0.0)) for k in z_keys(latent_dim)],
                    dtype=np.float32)


def set_z(z: np.ndarray, decoder: LiveDecoder) -> None:
    """Put ``z`` into the sliders' session state (callbacks only: before widgets exist)."""
    for key, value in zip(z_keys(len(z)), decoder.clamp(z), strict=True):
        st.session_state[key] = round(float(value), 2)


def select_from_map(key: str) -> None:
    index = figures.selected_index(st.session_state.get(key))
    if index is not None:
        st.session_state[SAMPLE_KEY] = index


def select_by(latents_key: str, path: str) -> None:
    values = app_shared.get_latents(path)[latents_key]
    st.session_state[SAMPLE_KEY] = int(np.argmax(values))


def select_random(n: int) -> None:
    st.session_state[SAMPLE_KEY] = int(np.random.default_rng().integers(n))


def show_image(png: bytes, caption: str, alt: str) -> None:
    if IMAGE_MODE == "media":
        st.image(png, caption=caption)
    else:
        st.html(f'<figure style="margin:0"><img src="{figures.data_uri(png)}" alt="{alt}" '
                f'style="image-rendering:pixelated;max-width:100%"/>'
                f'<figcaption style="font-size:0.85rem;color:#666">{caption}</figcaption>'
                f'</figure>')


# --------------------------------------------------------------------------- no runs yet

def empty_state(runs_dir: Path) -> None:
    st.title("VAE Latent Explorer")
    st.info(f"There is no trained run in `{runs_dir}` yet. Train the demo model here (a VAE "
            f"with a 2-D latent space on 5,000 MNIST digits, about a minute on 2 CPU cores), "
            f"or from a terminal: `python -m training --out {runs_dir}/demo-vae-z2`.")
    if not st.button("Train the demo model", key="train_demo", type="primary"):
        return
    from training.demo import demo_config, train_demo_runs
    from training.trainer import TrainingStopped

    lock = _training_lock()
    if not lock.acquire(blocking=False):
        st.warning("The demo model is already being trained from another browser tab; "
                   "reload this page in a minute.")
        return
    epochs = demo_config("demo-vae-z2").epochs
    bar = st.progress(0.0, text="Loading the data…")

    def progress(_name: str, row: dict) -> None:
        bar.progress(min(1.0, row["epoch"] / epochs),
                     text=f"epoch {row['epoch']}/{epochs}: test −ELBO {row['test_loss']:.1f} "
                          f"nats per sample")

    try:
        train_demo_runs(runs_dir, only=["demo-vae-z2"], log=lambda line: None, progress=progress)
    except (TrainingStopped, DataError, OSError, ValueError) as exc:
        st.error(f"Training stopped: {exc}")
        return
    finally:
        lock.release()
    bar.progress(1.0, text="Done.")
    st.rerun()


# --------------------------------------------------------------------------- latent map

def latent_map(path: str, model: OnnxModel, latents: dict, projection: str,
               selected: int, show_sigma: bool, upload: UploadOutcome | None) -> None:
    coords = map_coords(latents, projection)
    # The 1,000-point figure is built once per session, run and view (building it is most
    # of a rerun's cost); each rerun only moves the overlays.
    cache_key = (path, projection, app_shared.run_stamp(path))
    cached = st.session_state.get("_map_figure")
    if cached is None or cached[0] != cache_key:
        cached = (cache_key, figures.latent_map_base(
            coords, latents["labels"], model.info.class_names, latents["recon"], latents["kl"],
            projection))
        st.session_state["_map_figure"] = cached
    sigma = None
    if show_sigma and "logvar" in latents and projection == "raw":
        sigma = np.exp(0.5 * latents["logvar"][selected][:2])  # (2,)
    decoder_xy = None
    if all(k in st.session_state for k in z_keys(model.latent_dim)):
        decoder_xy = place_on_map(current_z(model.latent_dim), latents, projection)[0]
    upload_xy = None
    if upload is not None and upload.terms is not None:
        upload_xy = place_on_map(upload.terms.mu, latents, projection)[0]
    fig = figures.update_map_overlays(cached[1], coords, selected, sigma, decoder_xy, upload_xy)
    app_chart.plotly_chart(fig, key="latent_map", config={"scrollZoom": True},
                           on_select=lambda: select_from_map("latent_map"))


# --------------------------------------------------------------------------- decode panel

@st.fragment
def decode_panel(path: str, projection: str, selected: int) -> None:
    """Sliders z0, z1, ... and the live decoded image. Reruns alone on every move."""
    decoder = app_shared.get_live_decoder(path, projection)
    dim = decoder.latent_dim
    mu_selected = decoder.latents["mu"][selected]
    if st.session_state.get("_z_sample") != (path, selected):
        # a newly selected sample (or run): the sliders jump to its posterior mean
        st.session_state["_z_sample"] = (path, selected)
        set_z(mu_selected, decoder)
    for key, j in zip(z_keys(dim), range(dim), strict=True):
        value = float(st.session_state.get(key, 0.0))
        if not decoder.lo[j] <= value <= decoder.hi[j]:
            st.session_state[key] = float(np.clip(value, decoder.lo[j], decoder.hi[j]))
    frame = decoder.render(current_z(dim))
    note = (f"log p(z) = {frame.log_prior:.2f} nats under the prior N(0, I) "
            f"(−{0.5 * dim * np.log(2 * np.pi):.2f} at z = 0; lower means less typical)")
    # Few elements on purpose: every Streamlit element in a fragment costs a message and a
    # wake-up of the server's event loop per move (bench/app_latency.py).
    if IMAGE_MODE == "media":  # for bench/app_latency.py: the image as a media file
        st.image(frame.decoded_png, caption=note, width=224)
    else:
        st.html(decoder.html(frame, PROJECTION_NAMES[projection], note))
    shown, rest = decoder.visible()

    def slider(j: int) -> None:
        kl_note = (f"; test-set mean KL {decoder.mean_kl[j]:.2f} nats"
                   if decoder.mean_kl is not None else "")
        st.slider(f"z{j}", float(decoder.lo[j]), float(decoder.hi[j]), step=SLIDER_STEP,
                  key=f"z{j}", help=f"latent dimension {j}{kl_note}")

    for j in shown:
        slider(int(j))
    if len(rest):
        with st.expander(f"{len(rest)} more dimensions (less active, by KL)"):
            for j in rest:
                slider(int(j))


def decode_buttons(path: str, projection: str, selected: int) -> None:
    """Start points for the sliders. Outside the fragment: a click reruns the page (rare),
    while the fragment stays as light as possible for the slider moves (frequent)."""
    decoder = app_shared.get_live_decoder(path, projection)
    dim = decoder.latent_dim
    mu_selected = decoder.latents["mu"][selected]
    b1, b2, b3 = st.columns(3)
    b1.button("μ of sample", key="z_from_mu", help=f"Start from sample {selected}'s "
              f"posterior mean", on_click=lambda: set_z(mu_selected, decoder),
              width="stretch")
    b2.button("Prior draw", key="z_prior", help="Draw z ~ N(0, I)", width="stretch",
              on_click=lambda: set_z(sample_prior(dim, np.random.default_rng()), decoder))
    b3.button("Zero", key="z_zero", help="z = 0, the prior's mean",
              on_click=lambda: set_z(np.zeros(dim, np.float32), decoder),
              width="stretch")
    if dim > 1 and decoder.mean_kl is not None:
        st.caption("Sliders are ordered by how much information each dimension carries "
                   "(mean KL over the test set); near-zero KL means the decoder ignores it.")


# --------------------------------------------------------------------------- ELBO panel

def elbo_panel(terms, likelihood: str, title: str, key: str) -> None:
    st.markdown(f"**{title}**")
    c1, c2, c3 = st.columns(3)
    scale = figures.scale_for(terms.x.shape[0], 160)
    with c1:
        show_image(figures.png_bytes(terms.x, scale), "input x", f"{key} input")
    with c2:
        show_image(figures.png_bytes(terms.recon_image, scale), "reconstruction σ(f(μ))",
                   f"{key} reconstruction")
    with c3:
        show_image(figures.png_bytes(figures.difference_rgb(terms.x, terms.recon_image), scale),
                   "difference (red: too bright, blue: too dark)", f"{key} difference")
    m1, m2, m3 = st.columns(3)
    if terms.is_vae:
        m1.metric("reconstruction E_q[−log p(x|z)]", f"{terms.recon:.2f} nats",
                  help=f"Mean over {terms.samples} samples z = μ + σ·ε (standard error "
                       f"{terms.recon_std_err:.2f} nats), summed over pixels.")
        m2.metric("KL(q(z|x) ‖ p(z))", f"{terms.kl:.2f} nats",
                  help="Closed form, summed over latent dimensions.")
        m3.metric("ELBO", f"{terms.elbo:.2f} nats", help="log p(x) ≥ ELBO = −recon − KL")
        st.latex(figures.elbo_latex(terms.recon, terms.kl))
        caption = (f"Nats per sample. The reconstruction term is averaged over {terms.samples} "
                   f"posterior samples (± {terms.recon_std_err:.2f}); the map's hover shows the "
                   f"one-sample estimate from training.")
        if likelihood == "bernoulli":
            caption += (" Bernoulli likelihood on grey pixels: a cross-entropy, so the ELBO is "
                        "a bound in that sense, not a normalised density of the pixels.")
        st.caption(caption)
    else:
        m1.metric("reconstruction −log p(x|z=μ)", f"{terms.recon:.2f} nats")
        m2.metric("KL", "—", help="A plain autoencoder has no posterior q(z|x): no KL.")
        m3.metric("ELBO", "—", help="No KL, no prior: an autoencoder has no ELBO.")
        st.caption("A plain autoencoder maps x to one point z = μ: there is no posterior, so "
                   "no KL term and no ELBO — only the reconstruction error, in nats per sample.")


@dataclass
class UploadOutcome:
    name: str
    terms: SampleTerms | None = None
    prepared: PreparedImage | None = None
    error: str = ""


def process_upload(model: OnnxModel, test_images: np.ndarray) -> UploadOutcome | None:
    """The uploaded file (from the previous interaction's widget state), converted, encoded
    and scored, *before* the map is drawn, so the map can show it in the same run."""
    upload = st.session_state.get("upload")
    if upload is None:
        return None
    invert = {"auto": None, "yes": True, "no": False}[st.session_state.get("upload_invert", "auto")]
    try:
        prepared = prepare_upload(upload.getvalue(), model.image_shape, invert=invert,
                                  dark_background=has_dark_background(test_images),
                                  center=bool(st.session_state.get("upload_center", True)))
    except UploadError as exc:
        return UploadOutcome(name=upload.name, error=exc.message)
    terms = sample_terms(model, prepared.x, MC_SAMPLES)
    return UploadOutcome(name=upload.name, terms=terms, prepared=prepared)


def upload_section(model: OnnxModel, outcome: UploadOutcome | None, path: str,
                   projection: str) -> None:
    st.markdown(f"Upload an image (PNG, JPEG, GIF, BMP, TIFF, WebP; at most "
                f"{MAX_BYTES // (1024 * 1024)} MB). It is converted to the model's input "
                f"({'×'.join(map(str, model.image_shape))}), encoded, placed on the map "
                f"(★) and reconstructed.")
    c1, c2 = st.columns([3, 2])
    c1.file_uploader("Your image", key="upload", accept_multiple_files=False)
    c2.radio("Invert colours", ["auto", "yes", "no"], horizontal=True, key="upload_invert",
             help="auto: invert when the image's background is light but the training "
                  "images' is dark (MNIST digits are white on black)")
    c2.checkbox("Crop and centre the drawing like MNIST", value=True, key="upload_center")
    if outcome is None:
        return
    if outcome.error:
        st.error(f"Cannot use “{outcome.name}”: {outcome.error}")
        return
    terms, prepared = outcome.terms, outcome.prepared
    w, h = prepared.original_size
    notes = "; ".join(prepared.notes) or "resized"
    st.caption(f"Converted from {w}×{h} (Pillow mode {prepared.original_mode}): {notes}.")
    elbo_panel(terms, model.info.config.likelihood, f"Your image “{outcome.name}”", "upload")
    decoder = app_shared.get_live_decoder(path, projection)
    st.button("Decode from this image's μ", key="z_from_upload",
              on_click=lambda: set_z(terms.mu, decoder))
    if terms.is_vae:
        app_chart.plotly_chart(figures.kl_bar_figure(terms.kl_per_dim, decoder.order,
                                                     decoder.mean_kl), key="upload_kl")


# --------------------------------------------------------------------------- the page

def explorer_page(path: Path) -> None:
    key = str(path)
    try:
        model = app_shared.get_model(key)
        latents = app_shared.get_latents(key)
    except rundir.RunDirError as exc:
        st.error(f"Cannot open this run: {exc}")
        return
    info = model.info
    n = len(latents["mu"])
    dim = model.latent_dim
    kind = "VAE" if model.is_vae else "plain autoencoder"

    st.title("VAE Latent Explorer")
    try:
        metrics = app_shared.get_metrics(key)
    except rundir.RunDirError as exc:  # a damaged metrics.jsonl costs the curves, not the page
        metrics = []
        st.warning(f"The training curves cannot be shown: {exc}")
    last = metrics[-1] if metrics else {}
    status = "" if info.status == "complete" else f" — **{info.status}**"
    st.markdown(f"**{path.name}** · {kind}, {dim}-D latent space · {info.config.dataset} "
                f"({info.num_test:,} test images) · {info.epochs_completed}/{info.config.epochs} "
                f"epochs{status}" + (f" · test −ELBO **{last['test_loss']:.1f}** nats per sample"
                                     if last else ""))

    # sidebar: which sample
    if st.session_state.get("_sample_run") != key or st.session_state.get(SAMPLE_KEY, 0) >= n:
        st.session_state[SAMPLE_KEY] = 0
        st.session_state["_sample_run"] = key
        for k in z_keys(max(dim, 64)):
            st.session_state.pop(k, None)
    st.sidebar.number_input("Selected test sample (index)", 0, n - 1, step=1, key=SAMPLE_KEY,
                            help="Or click a point on the latent map.")
    st.sidebar.button("Worst reconstruction", key="pick_worst", on_click=select_by,
                      args=("recon", key), width="stretch", icon=":material/report:",
                      help="The test image the model reconstructs worst (highest "
                           "reconstruction term)")
    st.sidebar.button("Highest KL", key="pick_kl", on_click=select_by, args=("kl", key),
                      width="stretch", icon=":material/open_in_full:",
                      help="The test image whose posterior is furthest from the prior")
    st.sidebar.button("Random sample", key="pick_random", on_click=select_random, args=(n,),
                      width="stretch", icon=":material/casino:")
    selected = int(st.session_state[SAMPLE_KEY])
    st.sidebar.caption("All ELBO terms are in **nats per sample**: summed over pixels "
                       "(reconstruction) or latent dimensions (KL).")

    images_error = ""

    def load_images():
        nonlocal images_error
        try:
            images = app_shared.get_test_arrays(key)
        except DataError as exc:
            images_error = str(exc)
            return None
        if len(images) != n:
            images_error = (f"the data set now has {len(images):,} test images but "
                            f"latents.npz has {n:,}: it changed since training")
            return None
        return images

    # The test images (seconds to load cold for mnist5k) are only needed before the map
    # when there is an upload to place on it; otherwise the map and the decode panel reach
    # the browser first and the images load while the user looks at them.
    test_images = load_images() if st.session_state.get("upload") is not None else None
    upload = process_upload(model, test_images) if test_images is not None else None

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("Latent map")
        projections = available_projections(latents)
        c1, c2 = st.columns([3, 2])
        projection = projections[0]
        if len(projections) > 1:
            projection = c1.radio("Map", projections, key="projection", horizontal=True,
                                  format_func=lambda p: PROJECTION_NAMES[p],
                                  help="2-D views of the latent means, computed when training "
                                       "finished (t-SNE is never computed while you wait)")
        show_sigma = False
        if model.is_vae and dim == 2:
            show_sigma = c2.toggle("Show posterior σ", value=True, key="show_sigma",
                                   help="Ellipses at 1σ (solid) and 2σ (dotted) of q(z|x) "
                                        "for the selected sample")
        latent_map(key, model, latents, projection, selected, show_sigma, upload)
        st.caption(f"Test-set latent means μ(x), coloured by label. Hover for a sample's terms; "
                   f"click one to select it. ○ = selected sample {selected}, × = the decoder's z "
                   f"as of the last full refresh (the small map beside the sliders follows "
                   f"every move).")
    with right:
        st.subheader("Decode z")
        # the locator map's picture, once per full run (slider moves only move the marker)
        st.html(app_shared.get_live_decoder(key, projection).locator_css())
        decode_panel(key, projection, selected)
        decode_buttons(key, projection, selected)

    if test_images is None and not images_error:
        test_images = load_images()
    # on_change="rerun": Streamlit tracks which tab is open, so the curves' Plotly chart is
    # only built and drawn once someone opens their tab (one chart fewer for the browser to
    # render on the first page). The upload tab is always built: its uploader keeps the file.
    tab_elbo, tab_upload, tab_curves = st.tabs(
        [f"ELBO of sample {selected}", "Your own image", "Training curves"],
        key="panel_tab", on_change="rerun")
    if test_images is None:
        tab_elbo.warning(f"The test images cannot be loaded, so the ELBO panel is off: "
                         f"{images_error}")
    with tab_elbo:
        if test_images is not None:
            terms = sample_terms(model, test_images[selected], MC_SAMPLES)
            label = int(latents["labels"][selected])
            name = info.class_names[label] if label < len(info.class_names) else str(label)
            elbo_panel(terms, info.config.likelihood, f"Test sample {selected} (label {name})",
                       "sample")
            if terms.is_vae:
                decoder = app_shared.get_live_decoder(key, projection)
                app_chart.plotly_chart(figures.kl_bar_figure(terms.kl_per_dim, decoder.order,
                                                             decoder.mean_kl), key="kl_bars")
    with tab_upload:
        if test_images is not None:
            upload_section(model, upload, key, projection)
        else:
            st.info("Uploads need the test images (to tell dark from light backgrounds).")
    with tab_curves:
        if metrics and not tab_curves.open:
            st.caption("Loading the training curves…")
        elif metrics:
            app_chart.plotly_chart(app_shared.get_curves_figure(key), key="curves")
            st.caption("Nats per sample, per epoch: training (solid) is averaged over the "
                       "epoch's batches, test (dashed) measured after it.")
        else:
            st.info("No finished epoch yet.")


def render() -> None:
    """The page: the run picker in the sidebar, then the explorer (or the empty state)."""
    runs = app_shared.runs_dir()
    path = app_shared.pick_run()
    if path is None:
        empty_state(runs)
        return
    explorer_page(path)
