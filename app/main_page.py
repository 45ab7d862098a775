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

import html
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from app import chart as app_chart
from app import shared as app_shared
from app.lens import latent_lens, lens_map
from explorer import figures
from explorer.inference import (
    SampleTerms,
    available_projections,
    place_on_map,
    sample_prior,
    sample_terms,
)
from explorer.live import LiveDecoder
from explorer.onnx_model import OnnxModel
from explorer.text import md
from explorer.uploads import (
    MAX_BYTES,
    PreparedImage,
    UploadError,
    has_dark_background,
    prepare_upload,
)
from training import rundir
from training.data import DataError

PROJECTION_NAMES = {"raw": "latent axes", "pca": "PCA", "tsne": "t-SNE"}
SAMPLE_KEY = "sample_index"
LENS_KEY = "lens"
Z_VERSION_KEY = "_z_version"  # bumped whenever Python (not the browser) sets z
BROWSER_DECODES_KEY = "_lens_wasm"  # the lens last reported decoding in the browser
MC_SAMPLES = app_shared.MC_SAMPLES
MAP_HEIGHT = 440  # CSS px of the lens's map
AXIS_TITLES = {"raw": ("z₀", "z₁"), "pca": ("PCA 1", "PCA 2"), "tsne": ("t-SNE 1", "t-SNE 2")}


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
    """Python sets z (a button, a newly selected sample): into ``st.session_state["z0"...]``
    and a new ``z_version``, so the lens adopts it instead of keeping its own."""
    for key, value in zip(z_keys(len(z)), decoder.clamp(z), strict=True):
        st.session_state[key] = float(value)
    st.session_state[Z_VERSION_KEY] = st.session_state.get(Z_VERSION_KEY, 0) + 1


def adopt_lens_value() -> None:
    """The lens reported (a slider released, the pointer left the map, a click): keep its
    z, or select the clicked sample (whose posterior mean then becomes z)."""
    state = st.session_state.get(LENS_KEY)
    value = state.get("update") if hasattr(state, "get") else None
    if not isinstance(value, dict):
        return
    # a browser that decodes itself needs no server image (a class on one server: each
    # release then costs no decode and no PNG); one that reports anything else gets it
    st.session_state[BROWSER_DECODES_KEY] = value.get("runtime") == "wasm"
    if value.get("source") == "click" and isinstance(value.get("selected"), int):
        st.session_state[SAMPLE_KEY] = int(value["selected"])
        return
    z = value.get("z")
    if isinstance(z, list) and all(isinstance(v, (int, float)) for v in z):
        for key, v in zip(z_keys(len(z)), z, strict=False):
            if key in st.session_state:
                st.session_state[key] = float(v)


def sample_from_url(n: int) -> int:
    """The URL's ``?sample=`` when it is an index 0..n-1 of this run, else 0."""
    text = app_shared.query_param(app_shared.SAMPLE_PARAM) or ""
    return int(text) if text.isdigit() and int(text) < n else 0


def select_by(latents_key: str, path: str) -> None:
    values = app_shared.get_latents(path)[latents_key]
    st.session_state[SAMPLE_KEY] = int(np.argmax(values))


def select_random(n: int) -> None:
    st.session_state[SAMPLE_KEY] = int(np.random.default_rng().integers(n))


def show_image(png: bytes, caption: str, alt: str) -> None:
    st.html(f'<figure style="margin:0"><img src="{figures.data_uri(png)}" '
            f'alt="{html.escape(alt)}" style="image-rendering:pixelated;max-width:100%"/>'
            f'<figcaption style="font-size:0.85rem;color:#666">{html.escape(caption)}'
            f'</figcaption></figure>')


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
        st.error(f"Training stopped: {md(app_shared.public_message(exc))}")
        return
    finally:
        lock.release()
    bar.progress(1.0, text="Done.")
    st.rerun()


# --------------------------------------------------------------------------- the lens

def map_arrays(path: str, projection: str) -> dict:
    """Mount the latent map's arrays (outside the lens's fragment: a slider release then
    does not resend them) and return their reference for :func:`lens_panel`."""
    decoder = app_shared.get_live_decoder(path, projection)
    latents = decoder.latents
    x_title, y_title = AXIS_TITLES[projection]
    return lens_map(
        key=LENS_KEY, projection=projection, xy=decoder.coords, labels=latents["labels"],
        latent_dim=decoder.latent_dim, class_names=decoder.model.info.class_names,
        recon_nats=latents["recon"], kl_nats=latents["kl"],
        pca_mean=latents.get("pca_mean") if projection == "pca" else None,
        pca_components=latents.get("pca_components") if projection == "pca" else None,
        mu=latents["mu"] if projection == "tsne" else None, x_title=x_title, y_title=y_title)


@st.fragment
def lens_panel(path: str, projection: str, selected: int, show_sigma: bool,
               upload_xy: np.ndarray | None, map_ref: dict) -> None:
    """The latent map, the sliders z0, z1, ... and the decoded image, in one component that
    decodes in the browser while a slider or the pointer moves; it reports to Python once
    per interaction, which reruns only this fragment (a click on a point reruns the page).
    ``map_ref``: the map's arrays, mounted by :func:`map_arrays` outside the fragment."""
    decoder = app_shared.get_live_decoder(path, projection)
    latents = decoder.latents
    dim = decoder.latent_dim
    if st.session_state.get("_z_sample") != (path, selected):
        # a newly selected sample (or run): z jumps to its posterior mean
        st.session_state["_z_sample"] = (path, selected)
        set_z(latents["mu"][selected], decoder)
    elif st.session_state.get(SAMPLE_KEY, selected) != selected:
        st.rerun()  # the lens selected another sample: the whole page follows
    z = decoder.clamp(current_z(dim))
    server_png = None
    if not st.session_state.get(BROWSER_DECODES_KEY):
        server_png = figures.data_uri(decoder.render(z).decoded_png)
    url, sha = app_shared.get_decoder_link(path)
    sigma = None
    if show_sigma and "logvar" in latents and projection == "raw":
        sigma = np.exp(0.5 * latents["logvar"][selected][:2])  # (2,)
    info = decoder.model.info
    latent_lens(
        key=LENS_KEY, decoder_url=url, decoder_sha256=sha, image_shape=info.image_shape,
        output="logits" if info.decoder_output == "logits" else "probabilities",
        latent_dim=dim, z=z.tolist(),
        z_version=int(st.session_state.get(Z_VERSION_KEY, 0)), lo=decoder.lo, hi=decoder.hi,
        order=decoder.order, visible=min(dim, 8), slider_help=decoder.slider_help(),
        server_png=server_png, map_ref=map_ref, selected=selected, sigma=sigma,
        upload_xy=upload_xy, height=MAP_HEIGHT, on_change=adopt_lens_value)
    st.caption(f"log p(z) = {decoder.log_prior(z):.2f} nats under the prior N(0, I) "
               f"(−{0.5 * dim * np.log(2 * np.pi):.2f} at z = 0; lower means less typical), "
               f"for the z last released.")


def decode_buttons(path: str, projection: str, selected: int) -> None:
    """Start points for z, below the lens and outside its fragment: a release reruns only
    the lens (five elements fewer to send per move, for a class on one server); a click
    here, rarer, reruns the page."""
    decoder = app_shared.get_live_decoder(path, projection)
    dim = decoder.latent_dim
    mu_selected = decoder.latents["mu"][selected]
    row = st.container(horizontal=True, gap="small")
    row.button("μ of sample", key="z_from_mu", help=f"Start from sample {selected}'s "
               f"posterior mean", on_click=lambda: set_z(mu_selected, decoder),
               icon=":material/my_location:")
    row.button("Prior draw", key="z_prior", help="Draw z ~ N(0, I)",
               on_click=lambda: set_z(sample_prior(dim, np.random.default_rng()), decoder),
               icon=":material/casino:")
    row.button("Zero", key="z_zero", help="z = 0, the prior's mean",
               on_click=lambda: set_z(np.zeros(dim, np.float32), decoder),
               icon=":material/exposure_zero:")
    if dim > 1 and decoder.mean_kl is not None:
        st.caption("Sliders are ordered by how much information each dimension carries "
                   "(mean KL over the test set); near-zero KL means the decoder ignores it.")


# --------------------------------------------------------------------------- ELBO panel

RECON_CAPTIONS = {  # what the reconstruction image is, by what the decoder outputs
    "logits": "reconstruction sigmoid(f(μ))",
    "probabilities": "reconstruction f(μ) (the decoder gives probabilities)",
    "mean": "reconstruction f(μ) (the decoder's Gaussian mean)",
}


def elbo_panel(terms, likelihood: str, title: str, key: str,
               decoder_output: str = "logits",
               pngs: tuple[bytes, bytes, bytes] | None = None) -> None:
    """The ELBO terms of one image; ``pngs`` (input, reconstruction, difference) when
    already made (the shared cache), else made here."""
    st.markdown(f"**{title}**")
    c1, c2, c3 = st.columns(3)
    x_png, recon_png, diff_png = pngs or figures.elbo_images(terms.x, terms.recon_image)
    with c1:
        show_image(x_png, "input x", f"{key} input")
    with c2:
        show_image(recon_png, RECON_CAPTIONS.get(decoder_output, RECON_CAPTIONS["logits"]),
                   f"{key} reconstruction")
    with c3:
        show_image(diff_png, "difference (red: too bright, blue: too dark)", f"{key} difference")
    m1, m2, m3 = st.columns(3)
    if terms.is_vae:
        m1.metric("reconstruction E_q[−log p(x|z)]", f"{terms.recon:.2f} nats",
                  help=f"Mean over {terms.samples} samples z = μ + σ·ε (standard error "
                       f"{terms.recon_std_err:.2f} nats), summed over pixels.")
        m2.metric("KL(q(z|x) ‖ p(z))", f"{terms.kl:.2f} nats",
                  help="Closed form, summed over latent dimensions.")
        m3.metric("ELBO", f"{terms.elbo:.2f} nats", help="log p(x) ≥ ELBO = −recon − KL")
        st.latex(figures.elbo_latex(terms.recon, terms.kl))
        caption = (f"Nats per sample. The reconstruction term is a Monte-Carlo average over "
                   f"{terms.samples} posterior samples (± {terms.recon_std_err:.2f}, one "
                   f"standard error); the ELBO vs log p(x) lesson averages more samples, so its "
                   f"ELBO for the same image differs by about that noise, and the map's hover "
                   f"shows the one-sample estimate from training.")
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
        st.error(f"Cannot use “{md(outcome.name)}”: {md(outcome.error)}")
        return
    terms, prepared = outcome.terms, outcome.prepared
    w, h = prepared.original_size
    notes = "; ".join(prepared.notes) or "resized"
    st.caption(f"Converted from {w}×{h} (Pillow mode {prepared.original_mode}): {notes}.")
    elbo_panel(terms, model.info.config.likelihood, f"Your image “{md(outcome.name)}”", "upload",
               model.info.decoder_output)
    decoder = app_shared.get_live_decoder(path, projection)
    st.button("Decode from this image's μ", key="z_from_upload",
              on_click=lambda: set_z(terms.mu, decoder))
    if terms.is_vae:
        app_chart.plotly_chart(figures.kl_bar_figure(terms.kl_per_dim, decoder.order,
                                                     decoder.mean_kl), key="upload_kl")


# --------------------------------------------------------------------------- the film

def film_section(path: str) -> None:
    """Training as a film: the latent map of every epoch with play/pause and an epoch
    slider (in the browser), next to the test loss with the shown epoch marked."""
    from explorer.film import NO_FRAMES_WHY

    try:
        figure, note = app_shared.get_film(path)
    except rundir.RunDirError as exc:
        st.warning(f"The training film cannot be shown: {md(exc.public)}")
        return
    if figure is None:
        st.info(NO_FRAMES_WHY)
        return
    app_chart.plotly_chart(figure, key="film")
    st.caption(f"Press ▶ to watch the latent space form, or drag the epoch slider. Each "
               f"point is a test image's posterior mean μ at the end of that epoch. {note}")


# --------------------------------------------------------------------------- the page

def explorer_page(path: Path) -> None:
    key = str(path)
    try:
        model = app_shared.get_model(key)
        latents = app_shared.get_latents(key)
    except rundir.RunDirError as exc:
        st.error(f"Cannot open this run: {md(exc.public)}")
        return
    info = model.info
    n = len(latents["mu"])
    dim = model.latent_dim
    kind = "VAE" if model.is_vae else "plain autoencoder"

    st.title("VAE Latent Explorer")
    curves_problem = ""
    try:
        metrics = app_shared.get_metrics(key)
    except rundir.RunDirError as exc:  # a damaged metrics.jsonl costs the curves, not the page
        metrics, curves_problem = [], exc.public
    if not metrics and info.epochs_completed and not curves_problem:  # deleted or emptied
        curves_problem = (f"{path.name}/{rundir.METRICS_FILE} is missing or empty, although "
                          f"{info.epochs_completed} epoch(s) finished")
    if curves_problem:
        st.warning(f"The training curves cannot be shown: {md(curves_problem)}")
    last = metrics[-1] if metrics else {}
    status = "" if info.status == "complete" else f" — **{md(info.status)}**"
    history = (f"imported ({md(info.imported.get('source', ''))}), no training history"
               if info.imported is not None else
               f"{info.epochs_completed}/{info.config.epochs} epochs{status}")
    st.markdown(f"**{md(path.name)}** · {kind}, {dim}-D latent space · "
                f"{md(info.config.dataset)} ({info.num_test:,} test images) · {history}"
                + (f" · {'test −ELBO' if model.is_vae else 'test reconstruction loss'} "
                   f"**{last['test_loss']:.1f}** nats per sample" if last else ""))

    # sidebar: which sample
    if st.session_state.get("_sample_run") != key or st.session_state.get(SAMPLE_KEY, 0) >= n:
        st.session_state[SAMPLE_KEY] = sample_from_url(n)
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
    if app_shared.query_param(app_shared.SAMPLE_PARAM) != str(selected):
        st.query_params[app_shared.SAMPLE_PARAM] = str(selected)  # a reload keeps it
    st.sidebar.caption("All ELBO terms are in **nats per sample**: summed over pixels "
                       "(reconstruction) or latent dimensions (KL).")

    images_error = ""

    def load_images():
        nonlocal images_error
        try:
            images = app_shared.get_test_arrays(key)
        except DataError as exc:
            images_error = app_shared.public_message(exc)
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

    projections = available_projections(latents)
    controls = st.container(horizontal=True, gap="medium", vertical_alignment="center")
    projection = projections[0]
    if len(projections) > 1:
        projection = controls.radio("Map", projections, key="projection", horizontal=True,
                                    format_func=lambda p: PROJECTION_NAMES[p],
                                    help="2-D views of the latent means, computed when "
                                         "training finished (t-SNE is never computed while "
                                         "you wait)")
    show_sigma = False
    if model.is_vae and dim == 2:
        show_sigma = controls.toggle("Show posterior σ", value=True, key="show_sigma",
                                     help="Ellipses at 1σ (solid) and 2σ (dotted) of q(z|x) "
                                          "for the selected sample")
    upload_xy = None
    if upload is not None and upload.terms is not None:
        upload_xy = place_on_map(upload.terms.mu, latents, projection)[0]  # (2,)
    with controls:  # no DOM of its own: the row's end is where its gap does not show
        map_ref = map_arrays(key, projection)
    lens_panel(key, projection, selected, show_sigma, upload_xy, map_ref)
    decode_buttons(key, projection, selected)

    if test_images is None and not images_error:
        test_images = load_images()
    # on_change="rerun": Streamlit tracks which tab is open, so the curves' Plotly chart is
    # only built and drawn once someone opens their tab (one chart fewer for the browser to
    # render on the first page). The upload tab is always built: its uploader keeps the file.
    tab_elbo, tab_upload, tab_curves = st.tabs(
        [f"ELBO of sample {selected}", "Your own image", "Watch it learn"],
        key="panel_tab", on_change="rerun")
    if test_images is None:
        tab_elbo.warning(f"The test images cannot be loaded, so the ELBO panel is off: "
                         f"{md(images_error)}")
    with tab_elbo:
        if test_images is not None:
            panel = app_shared.get_sample_panel(key, selected, MC_SAMPLES)
            label = int(latents["labels"][selected])
            name = info.class_names[label] if label < len(info.class_names) else str(label)
            elbo_panel(panel.terms, info.config.likelihood,
                       f"Test sample {selected} (label {md(name)})", "sample",
                       info.decoder_output, panel.pngs)
            if panel.kl_chart is not None:
                app_chart.plotly_chart(panel.kl_chart, key="kl_bars")
    with tab_upload:
        if test_images is not None:
            upload_section(model, upload, key, projection)
        else:
            st.info("Uploads need the test images (to tell dark from light backgrounds).")
    with tab_curves:
        if metrics and not tab_curves.open:
            st.caption("Loading the training film and curves…")
        elif metrics:
            film_section(key)
            app_chart.plotly_chart(app_shared.get_curves_figure(key), key="curves")
            st.caption("Nats per sample, per epoch: training (solid) is averaged over the "
                       "epoch's batches, test (dashed) measured after it.")
        elif curves_problem:
            st.info("No training curves: see the warning at the top of the page.")
        elif info.is_imported:
            st.info("This run was imported (explorer/adopt.py): it has no training history, "
                    "so there are no training curves.")
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
