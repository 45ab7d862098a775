"""Streamlit helpers shared by the teaching pages in ``app/pages/``: opening a run with a
clear error, the selected test sample (shared with the main page), download buttons for
every figure (PNG and HTML) and image grid (PNG), and drawing image grids. The logic
lives in ``explorer/``; caching and widgets only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import shared as app_shared
from explorer import export
from explorer.generation import grid_pixels, tile
from explorer.text import md
from training import rundir
from training.data import DataError

SAMPLE_KEY = "sample_index"  # the main page's selected test sample (shared across pages)
_SAMPLE_WIDGET = "_teach_sample"
VERDICT_BOXES = {"success": (st.success, ":material/check_circle:"),
                 "warning": (st.warning, ":material/warning:"),
                 "info": (st.info, ":material/info:")}
UNITS_NOTE = "All ELBO terms are in **nats per sample** (summed over pixels or latent dimensions)."


def page_header(title: str, intro: str) -> None:
    st.set_page_config(page_title=f"{title} · VAE Latent Explorer", page_icon=app_shared.FAVICON,
                       layout="wide")
    st.title(title)
    st.markdown(intro)


def open_run(path: Path | str) -> tuple[Any, dict[str, np.ndarray]] | None:
    """(LoadedRun, latents) of the run, or None after showing why it cannot be opened."""
    try:
        return app_shared.get_run(path), app_shared.get_latents(path)
    except rundir.RunDirError as exc:
        st.error(f"Cannot open this run: {md(exc.public)}")
        return None


def open_picked_run() -> tuple[Path, Any, dict[str, np.ndarray]] | None:
    """The sidebar's run (shared by every page) as (path, LoadedRun, latents), or None after
    saying why there is none to show."""
    path = app_shared.pick_run()
    if path is None:
        st.info("No trained run yet: run `python -m training.demo` or use the Train page.")
        return None
    opened = open_run(path)
    return None if opened is None else (path, *opened)


def open_vae_sample(why_not_ae: str
                    ) -> tuple[Path, Any, dict[str, np.ndarray], Any, int] | None:
    """For the lessons about one sample's posterior: the picked run (a VAE), its test
    images and the selected sample, as (path, run, latents, images, index); None after
    saying why not (no run, an autoencoder: ``why_not_ae``, images unavailable)."""
    opened = open_picked_run()
    if opened is None:
        return None
    path, run, latents = opened
    if not require_vae(run, why_not_ae):
        return None
    images = test_images(path)
    if images is None:
        return None
    index = pick_sample(len(images))
    st.sidebar.caption(UNITS_NOTE)
    return path, run, latents, images, index


def test_images(path: Path | str):
    """The run's test images (N, C, H, W), or None after an error message."""
    try:
        return app_shared.get_test_images(path)
    except DataError as exc:
        st.error(f"The test images of this run cannot be loaded: "
                 f"{md(app_shared.public_message(exc))}")
        return None


def pick_sample(n: int, label: str = "Selected test sample (index)") -> int:
    """Sidebar number input for the selected test sample, kept in sync with the main
    page's selection (``st.session_state["sample_index"]``)."""
    current = st.session_state.get(SAMPLE_KEY, 0)
    current = int(current) if isinstance(current, (int, float)) and 0 <= current < n else 0
    if st.session_state.get(_SAMPLE_WIDGET) != current:
        st.session_state[_SAMPLE_WIDGET] = current

    def adopt() -> None:
        st.session_state[SAMPLE_KEY] = int(st.session_state[_SAMPLE_WIDGET])

    st.sidebar.number_input(label, 0, n - 1, step=1, key=_SAMPLE_WIDGET, on_change=adopt,
                            help="The same sample as on the main page.")
    st.session_state[SAMPLE_KEY] = int(st.session_state[_SAMPLE_WIDGET])
    return int(st.session_state[_SAMPLE_WIDGET])


def metric_row() -> Any:
    """A row for ``st.metric`` boxes that wraps onto a second line when the page is narrow
    (a 1024x768 projector), instead of cutting labels and values to "Fit to …"; give each
    metric ``width="content"``."""
    return st.container(horizontal=True, gap="small")


def show_verdict(verdict: tuple[str, str]) -> None:
    """A verdict of :mod:`explorer.verdicts` as the box its kind names (success, warning,
    info): the page never chooses the colour, the numbers do."""
    kind, text = verdict
    box, icon = VERDICT_BOXES[kind]
    box(text, icon=icon)


def require_vae(run: Any, what: str) -> bool:
    """Show why ``what`` needs a VAE when the run is a plain autoencoder."""
    if run.model.is_vae:
        return True
    st.info(f"This run is a plain autoencoder: {what} It has no posterior q(z|x), only one "
            f"code per image. Pick a VAE run in the sidebar (e.g. demo-vae-z2).")
    return False


# --------------------------------------------------------------------------- downloads

def download_figure(fig: Any, name: str, key: str, title: str | None = None) -> None:
    """PNG and HTML download buttons for a Plotly figure, made only when clicked. The PNG
    is styled for a slide (white, ``title`` on top, labels and legend inside the frame)
    by a Chromium the server keeps open, started in the background on the first page that
    shows a figure, so a click takes well under a second."""
    export.warm_up()
    row = st.container(horizontal=True, gap="small")
    row.download_button("PNG", data=lambda: export.figure_png(fig, title),
                        file_name=f"{name}.png", mime="image/png", key=f"{key}_png",
                        on_click="ignore", icon=":material/download:",
                        help="For slides: white background, every label inside the picture")
    row.download_button("HTML", data=lambda: export.figure_html(fig), file_name=f"{name}.html",
                        mime="text/html", key=f"{key}_html", on_click="ignore",
                        icon=":material/download:",
                        help="Interactive, self-contained (works offline)")


def download_images(images: np.ndarray, name: str, key: str, cols: int | None = None,
                    label: str = "PNG") -> None:
    """A PNG download button for a batch (N, C, H, W) or grid (R, V, C, H, W) of images."""
    st.download_button(label, data=lambda: export.image_png(tile(images, cols), upscale=4),
                       file_name=f"{name}.png", mime="image/png", key=key, on_click="ignore",
                       icon=":material/download:")


def download_picture(picture: np.ndarray, name: str, key: str, label: str = "PNG") -> None:
    """A PNG download button for one ready picture (H, W[, C]) in [0, 1]."""
    st.download_button(label, data=lambda: export.image_png(picture), file_name=f"{name}.png",
                       mime="image/png", key=key, on_click="ignore",
                       icon=":material/download:")


def show_grid(images: np.ndarray, caption: str | None = None, cols: int | None = None,
              width: int | None = None, cell: int = 72) -> None:
    """Draw a batch or grid of images as one picture (nearest-neighbour upscaled so each
    image is about ``cell`` pixels wide; never wider than its column)."""
    st.image(grid_pixels(images, cols, cell), caption=caption,
             width=int(width) if width else "content", clamp=True, output_format="PNG")
