"""Every picture the explorer draws: Plotly figures (latent map, KL bars, training
curves) and small PNGs (decoded digits, input/reconstruction/difference, the live
z-locator map), built from numpy arrays. No Streamlit here.

PNGs are upscaled by nearest neighbour (pixels stay crisp when projected in a class
room) and written with fast zlib settings: a 28x28 digit at 8x is ~1-2 KB and takes well
under a millisecond, which matters for the live slider.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.text import plot_text

# Tableau-10: distinguishable, colour-blind friendlier than Plotly's default for 10 classes.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
AXIS_TITLES = {"raw": ("z₀", "z₁"), "pca": ("PCA 1", "PCA 2"), "tsne": ("t-SNE 1", "t-SNE 2")}
# Maps with more points than this are WebGL scatters; smaller ones are SVG, which draws a
# few thousand points as fast and needs only the light plotly.js build (app_chart.py).
WEBGL_MIN_POINTS = 2_000


def class_colour(label: int) -> str:
    return PALETTE[int(label) % len(PALETTE)]


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


# --------------------------------------------------------------------------- PNG images

def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> uint8 (H, W) for one channel, (H, W, 3) for three."""
    arr = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return (arr * 255.0 + 0.5).astype(np.uint8)


def upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (H, W[, C]) by an integer factor."""
    if scale <= 1:
        return pixels
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def png_bytes(image: np.ndarray, scale: int = 8) -> bytes:
    """PNG of an (H, W, C) float image in [0, 1] (or uint8 pixels), upscaled ``scale`` x."""
    from PIL import Image

    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(upscale(pixels, scale)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def scale_for(height: int, target: int = 224) -> int:
    """Integer upscaling factor that brings an image of ``height`` pixels near ``target``."""
    return max(1, round(target / max(1, height)))


def difference_rgb(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Signed difference recon - x as an RGB uint8 (H, W, 3) image on white: red where the
    reconstruction is brighter than the input, blue where darker, white where equal.
    Multi-channel images are compared on their channel mean."""
    d = np.asarray(recon, np.float32).mean(axis=2) - np.asarray(x, np.float32).mean(axis=2)
    d = np.clip(d, -1.0, 1.0)  # (H, W)
    pos, neg = np.clip(d, 0, None), np.clip(-d, 0, None)
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=2)  # red (+), blue (-)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- latent map

def ellipse_xy(center: np.ndarray, sigma: np.ndarray, n_sigma: float = 1.0,
               points: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Outline of the axis-aligned ellipse mu ± n_sigma * sigma (diagonal posterior)."""
    t = np.linspace(0.0, 2.0 * np.pi, points)
    return (center[0] + n_sigma * sigma[0] * np.cos(t), center[1] + n_sigma * sigma[1] * np.sin(t))


def label_traces(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
                 customdata: np.ndarray, hover: Callable[[str], str],
                 opacity: float = 0.75) -> list[go.Scatter | go.Scattergl]:
    """Points (N, 2) as one scatter trace per class, in label order and colour (so the
    legend toggles classes): WebGL when N > ``WEBGL_MIN_POINTS``, else SVG. ``customdata``
    (N, ...) travels with each point and ``hover(class name)`` gives each trace's hover
    template. The main page's map and the lessons' maps both start from these."""
    coords = np.asarray(coords, dtype=np.float32)
    labels = np.asarray(labels)
    customdata = np.asarray(customdata)
    scatter = go.Scattergl if len(coords) > WEBGL_MIN_POINTS else go.Scatter
    traces = []
    for label in np.unique(labels):
        mask = labels == label
        name = plot_text(class_names[label] if 0 <= label < len(class_names) else label)
        traces.append(scatter(
            x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
            marker=dict(size=5, color=class_colour(label), opacity=opacity),
            customdata=customdata[mask], hovertemplate=hover(name)))
    return traces


# --------------------------------------------------------------------------- ELBO panel

def elbo_images(x: np.ndarray, recon_image: np.ndarray, target: int = 160
                ) -> tuple[bytes, bytes, bytes]:
    """The ELBO panel's three PNGs: input, reconstruction, and their signed difference
    (:func:`difference_rgb`), each (H, W, C) in [0, 1] upscaled to about ``target`` px."""
    scale = scale_for(x.shape[0], target)
    return (png_bytes(x, scale), png_bytes(recon_image, scale),
            png_bytes(difference_rgb(x, recon_image), scale))


def elbo_latex(recon: float, kl: float) -> str:
    """The ELBO written out with one sample's numbers filled in (nats), for ``st.latex``:
    ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) = -recon - KL."""
    expectation = r"\mathbb{E}_{q(z\mid x)}\!\left[\log p(x\mid z)\right]"
    divergence = r"\mathrm{KL}\!\left(q(z\mid x)\,\|\,p(z)\right)"
    return (r"\mathrm{ELBO}(x) = \underbrace{" + expectation + "}_{" + f"{-recon:.2f}" + "}"
            + r"\;-\;\underbrace{" + divergence + "}_{" + f"{kl:.2f}" + "}"
            + r"\;=\;" + f"{-recon - kl:.2f}" + r"\ \text{nats}")


def kl_bar_figure(kl_per_dim: np.ndarray, order: np.ndarray | None = None,
                  mean_kl: np.ndarray | None = None, max_bars: int = 64,
                  height: int = 260) -> go.Figure:
    """This sample's KL per latent dimension (nats), in ``order``, with the test-set
    mean per dimension as markers (dimensions near 0 on average are inactive)."""
    kl_per_dim = np.asarray(kl_per_dim, dtype=np.float64)
    order = np.arange(len(kl_per_dim)) if order is None else np.asarray(order)[:max_bars]
    names = [f"z{j}" for j in order]
    fig = go.Figure(go.Bar(x=names, y=kl_per_dim[order], name="this sample",
                           marker_color="#4e79a7",
                           hovertemplate="%{x}: %{y:.3f} nats<extra>this sample</extra>"))
    if mean_kl is not None:
        fig.add_trace(go.Scatter(x=names, y=np.asarray(mean_kl)[order], mode="markers",
                                 name="test-set mean", marker=dict(color="black", symbol="line-ew",
                                                                   size=18, line=dict(width=2)),
                                 hovertemplate="%{x}: %{y:.3f} nats<extra>test-set mean</extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis_title="KL (nats)", title=dict(text="KL per latent dimension", x=0),
                      legend=dict(orientation="h", y=1.15, x=1, xanchor="right"),
                      plot_bgcolor="white", bargap=0.25)
    fig.update_yaxes(gridcolor="#eee", rangemode="tozero")
    return fig


def training_curves_figure(metrics: list[dict[str, Any]], height: int = 300) -> go.Figure:
    """Reconstruction, KL and -ELBO (nats per sample) per epoch, train (solid) vs test
    (dashed), one panel each."""
    epochs = [row["epoch"] for row in metrics]
    titles = ("reconstruction", "KL", "−ELBO = recon + KL")
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.08)
    for col, key in enumerate(("recon", "kl", "loss"), start=1):
        for split, dash, colour in (("train", "solid", "#4e79a7"), ("test", "dash", "#e15759")):
            values = [row.get(f"{split}_{key}") for row in metrics]
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=split,
                                     line=dict(dash=dash, color=colour), marker=dict(size=4),
                                     legendgroup=split, showlegend=col == 1,
                                     hovertemplate=f"epoch %{{x}}: %{{y:.2f}} nats"
                                                   f"<extra>{split}</extra>"),
                          row=1, col=col)
    # the legend above the panels, right: below them it would cover the "epoch" titles
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.12,
                                  yanchor="bottom"))
    fig.update_xaxes(title_text="epoch", gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee")
    fig.update_yaxes(title_text="nats per sample", row=1, col=1)
    return fig
