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


# --------------------------------------------------------------------------- locator map

class Locator:
    """A small server-rendered PNG of the latent map (test points coloured by label) on
    which the decode panel marks its current z after every slider move: re-sending a
    1,000-point Plotly figure per move would cost tens of milliseconds and ~100 KB. The
    picture is sent once; a move only sends the marker's pixel position."""

    def __init__(self, coords: np.ndarray, labels: np.ndarray, size: int = 200,
                 margin: float = 0.06):
        coords = np.asarray(coords, dtype=np.float64)  # (N, 2)
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        span = np.maximum(hi - lo, 1e-6)
        self.lo, self.hi = lo - margin * span, hi + margin * span
        self.size = size
        canvas = np.full((size, size, 3), 255, dtype=np.uint8)
        px = self.to_pixels(coords)  # (N, 2) integer (col, row)
        for (col, row), label in zip(px, np.asarray(labels), strict=True):
            r0, r1 = max(0, row - 1), min(size, row + 2)
            c0, c1 = max(0, col - 1), min(size, col + 2)
            canvas[r0:r1, c0:c1] = _hex_rgb(class_colour(label))
        canvas[[0, -1], :] = 200
        canvas[:, [0, -1]] = 200
        self.background = canvas

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Map coordinates (M, 2) -> pixel (col, row) (M, 2), y axis pointing up, clipped."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        frac = (points - self.lo) / (self.hi - self.lo)
        col = np.clip((frac[:, 0] * (self.size - 1)).round(), 0, self.size - 1)
        row = np.clip(((1.0 - frac[:, 1]) * (self.size - 1)).round(), 0, self.size - 1)
        return np.stack([col, row], axis=1).astype(int)

    def background_png(self) -> bytes:
        return png_bytes(self.background, scale=1)


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
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        traces.append(scatter(
            x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
            marker=dict(size=5, color=class_colour(label), opacity=opacity),
            customdata=customdata[mask], hovertemplate=hover(name)))
    return traces


OVERLAYS = ("sigma1", "sigma2", "selected", "decoder_z", "upload")  # traces' ``meta`` tags


def latent_map_base(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
                    recon: np.ndarray, kl: np.ndarray, projection: str = "raw",
                    height: int = 520) -> go.Figure:
    """The test set's latent means, one scatter trace per class (so the legend
    toggles classes); each point's customdata is [index, recon, KL] (nats). Then five
    overlay traces, empty until :func:`update_map_overlays` fills them: building the
    1,000-point figure is the expensive part of a rerun (Plotly validates every property),
    so the app builds it once per run and map view and only moves the overlays."""
    fig = go.Figure(label_traces(
        coords, labels, class_names,
        customdata=np.column_stack([np.arange(len(coords)), recon, kl]),
        hover=lambda name: (f"<b>label {name}</b><br>index %{{customdata[0]:.0f}}<br>"
                            "reconstruction %{customdata[1]:.1f} nats<br>"
                            "KL %{customdata[2]:.2f} nats<extra></extra>")))
    for n_sigma, dash in ((1, "solid"), (2, "dot")):
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(color="black", width=1.5, dash=dash),
                                 name=f"{n_sigma}σ", meta=f"sigma{n_sigma}"))
    fig.add_trace(go.Scatter(
        x=[], y=[], mode="markers", name="selected sample", meta="selected", showlegend=False,
        marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="black", width=2.5)),
        hovertemplate="selected sample<extra></extra>"))
    for meta, name, symbol, colour, size in (
            ("decoder_z", "decoder's z (sliders)", "x", "black", 13),
            ("upload", "your image", "star", "#d62728", 20)):
        fig.add_trace(go.Scatter(
            x=[], y=[], mode="markers", name=name, meta=meta, showlegend=False,
            marker=dict(size=size, symbol=symbol, color=colour,
                        line=dict(color="white", width=1.5)),
            hovertemplate=f"{name}<extra></extra>"))
    x_title, y_title = AXIS_TITLES.get(projection, ("x", "y"))
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=10, b=10), dragmode="pan",
        legend=dict(title="label", itemsizing="constant"), uirevision=projection,
        xaxis=dict(title=x_title, zeroline=projection == "raw", zerolinecolor="#bbb"),
        yaxis=dict(title=y_title, zeroline=projection == "raw", zerolinecolor="#bbb",
                   scaleanchor="x" if projection == "raw" else None),
        plot_bgcolor="white", clickmode="event+select",
    )
    fig.update_xaxes(showgrid=True, gridcolor="#eee")
    fig.update_yaxes(showgrid=True, gridcolor="#eee")
    return fig


def update_map_overlays(fig: go.Figure, coords: np.ndarray, selected: int | None = None,
                        sigma: np.ndarray | None = None, decoder_xy: np.ndarray | None = None,
                        upload_xy: np.ndarray | None = None) -> go.Figure:
    """Fill the overlays of a :func:`latent_map_base` figure in place: a ring around the
    ``selected`` sample, its posterior's 1σ and 2σ ellipses when ``sigma`` (2,) is given,
    the decoder's z and the uploaded image's position (map coordinates). Returns ``fig``."""
    traces = {t.meta: t for t in fig.data if t.meta in OVERLAYS}
    empty: dict[str, Any] = dict(x=[], y=[], showlegend=False)
    with fig.batch_update():
        for n_sigma in (1, 2):
            if selected is not None and sigma is not None:
                ex, ey = ellipse_xy(np.asarray(coords[selected]), np.asarray(sigma), n_sigma)
                traces[f"sigma{n_sigma}"].update(x=ex, y=ey)
            else:
                traces[f"sigma{n_sigma}"].update(x=[], y=[])
        if selected is not None:
            traces["selected"].update(x=[float(coords[selected][0])],
                                      y=[float(coords[selected][1])],
                                      hovertemplate=f"selected sample {selected}<extra></extra>")
        else:
            traces["selected"].update(x=[], y=[])
        for meta, xy in (("decoder_z", decoder_xy), ("upload", upload_xy)):
            if xy is None:
                traces[meta].update(**empty)
            else:
                traces[meta].update(x=[float(xy[0])], y=[float(xy[1])], showlegend=True)
    return fig


def latent_map_figure(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
                      recon: np.ndarray, kl: np.ndarray, projection: str = "raw",
                      selected: int | None = None, sigma: np.ndarray | None = None,
                      decoder_xy: np.ndarray | None = None,
                      upload_xy: np.ndarray | None = None, height: int = 520) -> go.Figure:
    """:func:`latent_map_base` with its overlays filled (a fresh figure)."""
    fig = latent_map_base(coords, labels, class_names, recon, kl, projection, height)
    return update_map_overlays(fig, coords, selected, sigma, decoder_xy, upload_xy)


def selected_index(selection: Any) -> int | None:
    """The test-set index of the first point in a Plotly selection event (the state of
    ``st.plotly_chart(on_select=...)`` or of ``app_chart.plotly_chart``, which has the same
    shape), or None when no data point is selected."""
    try:
        points = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, (list, tuple)) and data:
            return int(round(float(data[0])))
    return None


# --------------------------------------------------------------------------- ELBO panel

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
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="epoch", gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee")
    fig.update_yaxes(title_text="nats per sample", row=1, col=1)
    return fig
