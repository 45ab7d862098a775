"""Streamlit-layer helpers shared by every page: caches, the run picker, the start-up hook.

- :func:`runs_dir` — where the runs live: ``--runs-dir PATH`` after ``--`` on the
  ``streamlit run`` command line, else the ``VAE_RUNS_DIR`` environment variable, else ``runs``.
- :func:`get_run` — the loaded run (torch model in eval mode + info), once per process
  (``st.cache_resource``), for the teaching pages; :func:`get_model` — the same
  model through ONNX Runtime for the main page, which never imports torch (its import
  would be most of the cold-start budget); :func:`get_latents`, :func:`get_metrics` — the
  run's arrays (read-only) and training curves; :func:`get_live_decoder`,
  :func:`get_curves_figure` — the decode panel's state and the curves figure, all shared by
  every session (``st.cache_resource``); :func:`get_test_arrays` /
  :func:`get_test_images` — the test images the latents were computed from, as NumPy
  arrays / torch tensors (one copy in memory). Each cache is keyed by the file's
  modification time as well as the path (a parameter without a leading underscore, so
  Streamlit hashes it): a run that is retrained, or still training, is re-read, never
  served stale.
- :func:`pick_run` — the sidebar run picker; the choice lives in
  ``st.session_state["run_dir"]`` so every page shows the same run.
- :func:`lifespan` — the server's start-up hook (``st.App`` in ``streamlit_app.py``):
  :func:`warm_up` loads the newest run into these caches in a background thread, so the
  first browser to connect finds it ready, then freezes the start-up heap
  (:func:`freeze_gc_once`). Only a real server runs it; AppTest never does.

The logic behind these lives in ``explorer/`` and ``training/`` and is tested without
Streamlit; this module only adds caching and widgets.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported eagerly on purpose: two sessions' first runs importing Plotly's lazily loaded
# submodules at the same time have raced ("partially initialized module"). Not pandas or
# plotly.express: the main page never needs them, and they cost 0.6 s of its cold start
# (the two teaching pages that build tables import pandas themselves).
import numpy as np
import plotly.graph_objects  # noqa: F401
import streamlit as st

from app.chart import PreparedChart, prepare
from explorer import figures
from explorer.inference import (
    SampleTerms,
    available_projections,
    dimension_order,
    mean_kl_per_dim,
    sample_terms,
)
from explorer.live import LiveDecoder, build_live_decoder
from explorer.model_files import MODEL_PREFIX, model_url
from explorer.onnx_model import OnnxModel, load_onnx_model
from explorer.runs import DEFAULT_RUN_ENV, RunEntry, default_run, file_stamp, list_runs
from explorer.text import md
from training import rundir

DATA_FIELDS = ("dataset", "data_dir", "image_size", "channels", "split_seed", "test_fraction")
RUNS_ENV = "VAE_RUNS_DIR"
RUNS_ARG = "--runs-dir"
DEFAULT_RUNS = "runs"
MC_SAMPLES = 64  # posterior draws behind the main page's ELBO panel
RUN_KEY = "run_dir"  # st.session_state key holding the chosen run (a str path)
_PICK_KEY = "_run_pick"  # the selectbox's own key (widget state is dropped between pages)
# The tab icon, for every page. A local SVG, which Streamlit inlines as a data URI: a
# ":material/...:" icon would make the browser fetch it from fonts.gstatic.com (offline here).
FAVICON = str(Path(__file__).resolve().parent / "assets" / "favicon.svg")


def runs_dir(argv: list[str] | None = None) -> Path:
    """The runs folder: ``--runs-dir PATH`` (or ``--runs-dir=PATH``) in ``argv`` (default
    ``sys.argv[1:]``, i.e. what follows ``--`` on ``streamlit run``), else ``$VAE_RUNS_DIR``,
    else ``runs``."""
    args = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(args):
        if arg == RUNS_ARG and i + 1 < len(args):
            return Path(args[i + 1]).expanduser()
        if arg.startswith(RUNS_ARG + "="):
            return Path(arg.split("=", 1)[1]).expanduser()
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS).expanduser()


# --------------------------------------------------------------------------- cached loaders

@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _load_run(path: str, stamp: float) -> rundir.LoadedRun:
    return rundir.load_run(path)


def is_imported(path: str | os.PathLike) -> bool:
    """Whether the run was imported (``explorer/adopt.py``): no weights, no history."""
    try:
        return rundir.read_config(path).is_imported
    except rundir.RunDirError:
        return False


def get_run(path: str | os.PathLike) -> rundir.LoadedRun:
    """The run at ``path`` (model in eval mode, info), loaded once per process and shared by
    all sessions. Raises :class:`training.rundir.RunDirError` naming the bad file.
    An imported run (``explorer/adopt.py``) has no torch weights: its ``model`` is its
    ONNX model behind the same torch interface (:class:`explorer.onnx_torch.OnnxTorchModel`)."""
    if rundir.read_config(path).is_imported:
        from explorer.onnx_torch import OnnxTorchModel

        model = get_model(path)
        return rundir.LoadedRun(path=Path(path), info=model.info,
                                model=OnnxTorchModel(model),  # type: ignore[arg-type]
                                weights_meta={})
    return _load_run(str(path), file_stamp(path, rundir.WEIGHTS_FILE))


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _load_model(path: str, stamp: tuple[float, float]) -> OnnxModel:
    return load_onnx_model(path)


def get_model(path: str | os.PathLike) -> OnnxModel:
    """The run's model through ONNX Runtime (:mod:`explorer.onnx_model`), loaded once per
    process and shared by all sessions; ``.info`` is its config. Raises
    :class:`training.rundir.RunDirError` naming the bad file (for a run trained before
    ONNX export: the one line that says to run ``python -m training.export``)."""
    return _load_model(str(path), (file_stamp(path, rundir.WEIGHTS_FILE),
                                   file_stamp(path, rundir.ONNX_RECORD_FILE)))


# Latents and metrics are shared by all sessions (``st.cache_resource``, not ``cache_data``:
# no per-call copy, and no storage manager to look up while ``streamlit run`` imports this
# module before its runtime exists). The arrays are made read-only so no page can change
# what the others see.
@st.cache_resource(show_spinner=False, max_entries=16)
def _read_latents(path: str, stamp: float) -> dict[str, Any]:
    latents = rundir.read_latents(path)
    for array in latents.values():
        array.flags.writeable = False
    return latents


def get_latents(path: str | os.PathLike) -> dict[str, Any]:
    """``latents.npz`` of the run as a dict of read-only numpy arrays (see
    ``training/rundir.py``), shared by all sessions."""
    return _read_latents(str(path), file_stamp(path, rundir.LATENTS_FILE))


@st.cache_resource(show_spinner=False, max_entries=16)
def _read_metrics(path: str, stamp: float) -> tuple[dict[str, Any], ...]:
    return tuple(rundir.read_metrics(path))


def get_metrics(path: str | os.PathLike) -> tuple[dict[str, Any], ...]:
    """``metrics.jsonl`` of the run: one dict per finished epoch (nats per sample), shared
    by all sessions: read them, do not change them."""
    return _read_metrics(str(path), file_stamp(path, rundir.METRICS_FILE))


@st.cache_resource(show_spinner="Loading the test images…", max_entries=4)
def _load_test_arrays(data_key: str):
    from explorer.inference import load_test_images
    from training.config import TrainConfig

    return load_test_images(rundir.RunInfo(config=TrainConfig(**json.loads(data_key)),
                                           image_shape=(0, 0, 0), class_names=[]))


@st.cache_resource(show_spinner="Loading the test images…", max_entries=4)
def _read_images(path: str, stamp: float):
    return rundir.read_images(path)


def get_test_arrays(path: str | os.PathLike):
    """The run's test images, (N, C, H, W) float32 NumPy array in [0, 1], in the same order
    as ``get_latents(path)`` (shared read-only by all sessions: do not modify in place).
    Cached by the data set's settings, so runs on the same data share one copy (an
    imported run's come from its own ``images.npz``)."""
    info = rundir.read_config(path)
    if info.is_imported:
        try:
            return _read_images(str(path), file_stamp(path, rundir.IMAGES_FILE))
        except rundir.RunDirError as exc:
            from training.data import DataError

            raise DataError(exc.public) from exc
    c = info.config
    data_key = json.dumps({k: getattr(c, k) for k in DATA_FIELDS}, sort_keys=True)
    return _load_test_arrays(data_key)


def get_test_images(path: str | os.PathLike):
    """:func:`get_test_arrays` as a torch tensor sharing its memory (the teaching pages)."""
    import torch

    return torch.from_numpy(get_test_arrays(path))


def run_stamp(path: str | os.PathLike) -> tuple[float, float]:
    """Modification times of the weights and the latents: part of cache keys."""
    return file_stamp(path, rundir.WEIGHTS_FILE), file_stamp(path, rundir.LATENTS_FILE)


@st.cache_resource(max_entries=16, show_spinner=False)
def _live_decoder(path: str, projection: str, stamp: tuple[float, float]) -> LiveDecoder:
    return build_live_decoder(get_model(path), get_latents(path), projection)


def get_live_decoder(path: str | os.PathLike, projection: str) -> LiveDecoder:
    """The decode panel's precomputed state per run and map view, shared by all sessions
    (read-only after construction)."""
    return _live_decoder(str(path), projection, run_stamp(path))


@st.cache_resource(max_entries=16, show_spinner=False)
def _decoder_link(path: str, stamp: float) -> tuple[str, str]:
    sha = rundir.read_onnx_record(path)["files"][rundir.ONNX_DECODER_FILE]["sha256"]
    return model_url(MODEL_PREFIX, Path(path).name, rundir.ONNX_DECODER_FILE, sha), sha


def get_decoder_link(path: str | os.PathLike) -> tuple[str, str]:
    """(URL on this server, SHA-256) of the run's ``decoder.onnx``, which the browser
    downloads once and decodes with (``app/routes.py`` serves it). Call after
    :func:`get_model`, which verified the file against that digest."""
    return _decoder_link(str(path), file_stamp(path, rundir.ONNX_RECORD_FILE))


@st.cache_resource(max_entries=16, show_spinner=False)
def _curves_figure(path: str, stamp: float) -> PreparedChart:
    return prepare(figures.training_curves_figure(get_metrics(path)))


def get_curves_figure(path: str | os.PathLike):
    """The training curves figure per run (rebuilt when metrics.jsonl changes); shared,
    read-only once built."""
    return _curves_figure(str(path), file_stamp(path, rundir.METRICS_FILE))


@dataclass(frozen=True)
class SamplePanel:
    """The ELBO panel of one test sample: its terms, the three PNGs, the KL bars."""
    terms: SampleTerms
    pngs: tuple[bytes, bytes, bytes]  # input, reconstruction, difference
    kl_chart: PreparedChart | None  # None for an autoencoder


@st.cache_resource(max_entries=512, show_spinner=False)
def _sample_panel(path: str, selected: int, samples: int,
                  stamp: tuple[float, float]) -> SamplePanel:
    terms = sample_terms(get_model(path), get_test_arrays(path)[selected], samples)
    kl_chart = None
    if terms.is_vae:  # bars in the sliders' order (any map view: it is the latents')
        latents = get_latents(path)
        kl_chart = prepare(figures.kl_bar_figure(terms.kl_per_dim, dimension_order(latents),
                                                 mean_kl_per_dim(latents)))
    return SamplePanel(terms, figures.elbo_images(terms.x, terms.recon_image), kl_chart)


def get_sample_panel(path: str | os.PathLike, selected: int, samples: int) -> SamplePanel:
    """The main page's ELBO panel for test sample ``selected``, made once per run and
    sample and shared by every session and map view (a class opening the same sample pays
    once). Raises :class:`training.data.DataError` when the test images cannot be loaded."""
    return _sample_panel(str(path), int(selected), samples, run_stamp(path))


@st.cache_resource(max_entries=16, show_spinner=False)
def _film(path: str, stamp: tuple[float, float, float]) -> tuple[Any, str]:
    from explorer.film import film_figure, load_film

    info = rundir.read_config(path)
    film = load_film(path, get_latents(path), info.config.latent_dim, info.epochs_completed,
                     info.class_names)
    if film is None:
        return None, ""
    figure = prepare(film_figure(film, list(get_metrics(path))))
    every = (f" {len(film.epochs)} of its {film.total_epochs} epochs are shown, evenly "
             f"spread." if len(film.epochs) < film.total_epochs else "")
    return figure, film.note + every


def get_film(path: str | os.PathLike) -> tuple[Any, str]:
    """(the training film's figure, one line on its axes) per run, or (None, "") when the
    run stored no per-epoch frames; shared, read-only once built, rebuilt after each new
    epoch. Raises :class:`training.rundir.RunDirError` for a bad frame file."""
    return _film(str(path), (file_stamp(path, rundir.CONFIG_FILE),
                             file_stamp(path, rundir.LATENTS_FILE),
                             file_stamp(path, rundir.METRICS_FILE)))


@st.cache_resource(show_spinner=False)
def _frozen() -> list[bool]:
    return [False]


def freeze_gc_once() -> None:
    """``gc.freeze()`` once per process, after the warm-up: the tens of thousands of
    long-lived objects Streamlit, plotly and the model created are moved out of the collector's
    reach, so automatic collections stay short (the app also turns off Streamlit's
    ``runner.postScriptGC`` in ``.streamlit/config.toml``)."""
    import gc

    flag = _frozen()
    if not flag[0]:
        flag[0] = True
        gc.freeze()  # no collect() first: that alone would cost a full heap walk


# --------------------------------------------------------------------------- warm-up

@st.cache_resource(show_spinner=False)
def warm_up() -> str | None:
    """The first page's slow, shareable work, done before anyone asks: load the default run
    (the one a new session opens, :func:`explorer.runs.default_run`) into the process-wide
    caches above, and build each kind of Plotly figure the page shows once (Plotly imports a
    trace type's validators on first use). Returns the run's path, None when there is no
    openable run. Errors propagate; the page reports them itself when it opens the run.

    Cached: it runs once per process, and the loaders it calls, being nested in a cached
    function, do not try to show their spinners (there is no page to show them on)."""
    first = default_run(list_runs(runs_dir()), os.environ.get(DEFAULT_RUN_ENV))
    if first is None:
        return None
    path = str(first.path)
    model, latents = get_model(path), get_latents(path)
    projection = available_projections(latents)[0]
    decoder = get_live_decoder(path, projection)
    decoder.render(np.zeros(model.latent_dim, dtype=np.float32))  # imports PIL's PNG encoder
    get_decoder_link(path)
    get_test_arrays(path)
    get_sample_panel(path, 0, MC_SAMPLES)  # sample 0: where every session starts
    get_curves_figure(path)
    # Streamlit's first element in a process checks for a REPL with inspect.stack(), whose
    # first call maps every loaded module to its file (~0.2 s here), and its components
    # import pyarrow (0.1 s): pay for both now.
    inspect.stack()
    import pyarrow  # noqa: F401
    return path


def _warm_up_in_background() -> None:
    try:
        warm_up()
    except Exception as exc:  # the page shows the real error to the user who opens the run
        logging.getLogger(__name__).warning("warm-up skipped: %s", exc)
    freeze_gc_once()


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """``st.App`` lifespan: start :func:`warm_up` in a background thread and return at once,
    so the server accepts the browser (which needs a second or so to load Streamlit's
    frontend) while the run loads."""
    threading.Thread(target=_warm_up_in_background, name="vae-explorer-warm-up",
                     daemon=True).start()
    yield


# --------------------------------------------------------------------------- errors on a page

def public_message(error: BaseException | str) -> str:
    """The one line a page may show for ``error``, without the server's paths: a
    :class:`training.rundir.RunDirError`'s ``public`` (run folder and file); for any other
    error or text (a ``DataError`` names the folder it looked in), the home folder as ``~``
    and any other absolute path cut to its last component. Escape it with ``md()``."""
    if isinstance(error, rundir.RunDirError):
        return error.public
    text = " ".join(str(error).split())
    home = os.path.expanduser("~").rstrip("/")
    if home:
        text = re.sub(re.escape(home) + r"(?![\w.-])", "~", text)
    return rundir.redact_paths(text)


def show_unopenable(entries: list[RunEntry] | None = None) -> None:
    """In the sidebar: the run folders that cannot be opened, each with its one-line
    problem (no server path), so a damaged folder is named instead of silently missing."""
    if entries is None:
        entries = list_runs(runs_dir())
    broken = [e for e in entries if not e.openable]
    if broken:
        with st.sidebar.expander(f"{len(broken)} run folder(s) cannot be opened"):
            for e in broken:
                st.caption(f"**{md(e.name)}**: {md(e.problem)}")


# --------------------------------------------------------------------------- run picker

RUN_PARAM = "run"  # ?run=<run folder name>: a reload or a shared link opens that run
SAMPLE_PARAM = "sample"  # ?sample=<test index>: ... and that sample (the main page)


def _adopt_pick() -> None:
    st.session_state[RUN_KEY] = st.session_state[_PICK_KEY]
    st.query_params.pop(SAMPLE_PARAM, None)  # the old run's sample means nothing here


def query_param(name: str) -> str | None:
    """One query parameter of the page's URL, as text (None when absent or too long)."""
    value = st.query_params.get(name)
    return value if isinstance(value, str) and len(value) <= 256 else None


def pick_run(label: str = "Run") -> Path | None:
    """Sidebar selectbox over the openable runs under :func:`runs_dir`, newest first.
    The choice is kept in ``st.session_state["run_dir"]`` (shared by every page) and in the
    URL (``?run=<folder name>``, so a reload or a shared link restores it). A session
    without a choice takes the URL's run, else :func:`explorer.runs.default_run`: a new
    run trained by someone else never changes this session's run. Returns None when there
    is no openable run."""
    entries = list_runs(runs_dir())
    openable = [e for e in entries if e.openable]
    by_path: dict[str, RunEntry] = {str(e.path): e for e in openable}
    by_name: dict[str, RunEntry] = {e.name: e for e in openable}
    options = list(by_path)
    current = st.session_state.get(RUN_KEY)
    if current not in by_path:
        wanted = by_name.get(query_param(RUN_PARAM) or "")
        if wanted is None:
            wanted = default_run(openable, os.environ.get(DEFAULT_RUN_ENV))
        current = str(wanted.path) if wanted is not None else None
    st.session_state[RUN_KEY] = current
    if current is not None and query_param(RUN_PARAM) != by_path[current].name:
        st.query_params[RUN_PARAM] = by_path[current].name
    show_unopenable(entries)
    if current is None:
        return None
    st.session_state[_PICK_KEY] = current  # before the widget exists: allowed, no warning
    st.sidebar.selectbox(label, options, key=_PICK_KEY, on_change=_adopt_pick,
                         format_func=lambda p: by_path[p].label(),
                         help="The run folders this server offers, newest first.")
    return Path(current)
