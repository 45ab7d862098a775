"""Watch it learn: the latent map of every epoch as one animated figure, next to the loss
curves with the shown epoch marked. No Streamlit here.

The frames come from ``frames/epoch-NNNN.npy`` (``training/frames.py``). A 2-D latent space
is drawn as it is. A larger one goes through one PCA fitted once, on the newest frame, and
applied to every epoch, so a point only moves when its code moved (a PCA per epoch would
rotate and flip the picture between frames). The figure is a Plotly animation: the
slider and the play/pause buttons run in the browser, with no server round trip per frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures import class_colour
from explorer.text import plot_text
from training.frames import Frames, read_frames

FILM_POINTS = 2_000  # points drawn per frame (a fixed random subset; SVG stays smooth)
NO_FRAMES_WHY = ("This run has no per-epoch frames: it was trained before the explorer "
                 "stored them, or it was imported from another project. Its final map is "
                 "shown above; train a run (here or with `python -m training`) to watch one "
                 "form.")


@dataclass
class Film:
    """Everything the film shows: the frames, projected to 2-D, and how."""
    epochs: np.ndarray  # (E,)
    xy: np.ndarray  # (E, N, 2) the coordinates drawn
    labels: np.ndarray  # (N,)
    class_names: list[str]
    projection: str  # "raw" or "pca"
    note: str  # one sentence: what the axes are
    total_epochs: int  # frames stored (xy may hold every k-th)


def fit_projection(last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA of ``last`` (N, D): (mean (D,), components (2, D)), signs fixed so that each
    component's largest loading is positive (reproducible)."""
    mean = last.mean(axis=0)  # (D,)
    _, _, vt = np.linalg.svd(last - mean, full_matrices=False)  # vt (D, D)
    components = vt[:2]  # (2, D)
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    return mean, components * signs[:, None]


def make_film(frames: Frames, labels: np.ndarray, class_names: list[str]) -> Film:
    """Project ``frames`` to 2-D (see the module docstring)."""
    mu = frames.mu  # (E, N, D)
    if mu.shape[2] == 2:
        xy, projection = mu, "raw"
        note = "Axes: the latent coordinates z₀, z₁ themselves."
    elif mu.shape[2] == 1:
        xy = np.concatenate([mu, np.zeros_like(mu)], axis=2)  # (E, N, 2)
        projection, note = "raw", "Axes: z₀ (a 1-D latent space; the vertical axis is 0)."
    else:
        mean, components = fit_projection(mu[-1])
        xy = (mu - mean) @ components.T  # (E, N, 2)
        projection = "pca"
        note = (f"Axes: one PCA of the {mu.shape[2]}-D means, fitted once on epoch "
                f"{int(frames.epochs[-1])} and applied to every epoch, so points move only "
                f"when their codes move.")
    return Film(epochs=frames.epochs, xy=xy.astype(np.float32), labels=np.asarray(labels),
                class_names=list(class_names), projection=projection, note=note,
                total_epochs=frames.total_epochs)


def load_film(run_dir: str | os.PathLike, latents: dict[str, np.ndarray], latent_dim: int,
              epochs_completed: int, class_names: list[str]) -> Film | None:
    """The run's film, or None when it stored no frames. ``latents`` is the run's checked
    ``latents.npz`` (its ``labels`` colour the points, its row count is checked against
    every frame). A bad frame file raises :class:`training.rundir.RunDirError`."""
    labels = np.asarray(latents["labels"])
    frames = read_frames(Path(run_dir), len(labels), latent_dim, epochs_completed)
    if frames is None:
        return None
    return make_film(frames, labels, class_names)


def film_subset(n_points: int, max_points: int = FILM_POINTS) -> np.ndarray:
    """The indices drawn: all points, or a fixed random ``max_points`` of them, sorted."""
    if n_points <= max_points:
        return np.arange(n_points)
    return np.sort(np.random.default_rng(0).choice(n_points, max_points, replace=False))


def _range(values: np.ndarray) -> list[float]:
    """An axis range holding 99.8 % of the points of every frame, with a margin, so the
    axes stay fixed while the film plays."""
    low, high = np.percentile(values, [0.1, 99.9])
    pad = 0.06 * max(float(high - low), 1e-6)
    return [float(low - pad), float(high + pad)]


def _curve_values(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in metrics if isinstance(r.get(key), (int, float))]
    return [int(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def film_figure(film: Film, metrics: list[dict[str, Any]], height: int = 480,
                max_points: int = FILM_POINTS, start: str = "last") -> go.Figure:
    """The animated map (left) and the test-set curves with the shown epoch marked (right:
    −ELBO and reconstruction above, KL below, each on its own scale). Each point's
    customdata is its row in ``latents.npz``; each frame is named by its epoch. ``start``:
    "last" shows the final epoch first, "first" epoch 1."""
    keep = film_subset(film.xy.shape[1], max_points)  # (K,)
    xy = film.xy[:, keep]  # (E, K, 2)
    labels = film.labels[keep]
    classes = [int(c) for c in np.unique(labels)]
    shown = len(film.epochs) - 1 if start == "last" else 0
    fig = make_subplots(rows=2, cols=2, column_widths=[0.56, 0.44], row_heights=[0.6, 0.4],
                        horizontal_spacing=0.1, vertical_spacing=0.14,
                        specs=[[{"rowspan": 2}, {}], [None, {}]],
                        subplot_titles=("latent map", "test −ELBO and reconstruction",
                                        "test KL"))

    def map_traces(e: int) -> list[go.Scatter]:
        traces = []
        for c in classes:
            idx = np.flatnonzero(labels == c)
            name = film.class_names[c] if c < len(film.class_names) else str(c)
            # plain lists: plotly.js decodes base64 arrays (what numpy arrays become) in
            # the figure's data but not in animation frames, which then draw nothing
            traces.append(go.Scatter(
                x=np.round(xy[e, idx, 0], 4).tolist(), y=np.round(xy[e, idx, 1], 4).tolist(),
                mode="markers", name=plot_text(name), customdata=keep[idx].tolist(),
                marker=dict(size=4, color=class_colour(c), opacity=0.7),
                hovertemplate=f"{plot_text(name)}<extra></extra>", xaxis="x", yaxis="y"))
        return traces

    for trace in map_traces(shown):
        fig.add_trace(trace, row=1, col=1)
    panels = ((1, "x2", "y2", (("test_loss", "−ELBO", "#8c8c99"),  # grey: light and dark
                               ("test_recon", "reconstruction", "#4e79a7"))),
              (2, "x3", "y3", (("test_kl", "KL", "#e15759"),)))
    spans: dict[int, tuple[float, float]] = {}
    for row, _xa, _ya, curves in panels:
        values: list[float] = []
        for key, name, colour in curves:
            x, y = _curve_values(metrics, key)
            values += y
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+text", name=name, line=dict(color=colour),
                text=([""] * (len(x) - 1) + [name]) if x and len(curves) > 1 else None,
                textposition="top left",
                textfont=dict(color=colour), showlegend=False,
                hovertemplate=f"epoch %{{x}}: %{{y:.2f}} nats<extra>{name}</extra>"),
                row=row, col=2)
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        pad = 0.08 * max(high - low, 1e-6)
        spans[row] = (low - pad, high + pad)
        fig.update_yaxes(range=list(spans[row]), row=row, col=2)

    def markers(e: int) -> list[go.Scatter]:
        epoch = int(film.epochs[e])
        return [go.Scatter(x=[epoch, epoch], y=list(spans[row]), mode="lines",
                           name="shown epoch", line=dict(color="#f28e2b", width=3),
                           hoverinfo="skip", xaxis=xa, yaxis=ya, showlegend=False)
                for row, xa, ya, _curves in panels]

    for row, trace in zip((1, 2), markers(shown), strict=True):
        fig.add_trace(trace, row=row, col=2)
    n_map = len(classes)
    first_marker = len(fig.data) - 2
    fig.frames = [go.Frame(name=str(int(epoch)), data=[*map_traces(e), *markers(e)],
                           traces=[*range(n_map), first_marker, first_marker + 1])
                  for e, epoch in enumerate(film.epochs)]
    frame_args = {"frame": {"duration": 350, "redraw": False}, "mode": "immediate",
                  "transition": {"duration": 250, "easing": "cubic-in-out"}}
    steps = [{"label": str(int(epoch)), "method": "animate",
              "args": [[str(int(epoch))], {**frame_args, "transition": {"duration": 0}}]}
             for epoch in film.epochs]
    crowded = len(steps) > 24  # tick labels would overlap: the current value says the epoch
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=70, b=10), plot_bgcolor="white",
        legend=dict(orientation="h", x=0, y=1.08, xanchor="left", yanchor="bottom",
                    itemsizing="constant", title=dict(text="class ")),
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": -0.08,
                      "xanchor": "left", "yanchor": "top", "pad": {"t": 30, "r": 10},
                      "showactive": False, "buttons": [
                          {"label": "▶ play", "method": "animate",
                           "args": [None, {**frame_args, "fromcurrent": True}]},
                          {"label": "❚❚ pause", "method": "animate",
                           "args": [[None], {"mode": "immediate", "frame": {"duration": 0},
                                             "transition": {"duration": 0}}]}]}],
        sliders=[{"active": shown, "x": 0.18, "y": -0.08, "len": 0.82, "xanchor": "left",
                  "yanchor": "top", "pad": {"t": 20}, "steps": steps,
                  "font": {"color": "rgba(0,0,0,0)"} if crowded else {},
                  "currentvalue": {"prefix": "epoch ", "visible": True, "xanchor": "left",
                                   "font": {"size": 14}},
                  "transition": {"duration": 0}}])
    fig.update_xaxes(range=_range(xy[:, :, 0]), gridcolor="#eee", row=1, col=1,
                     title_text="z₀" if film.projection == "raw" else "PCA 1")
    fig.update_yaxes(range=_range(xy[:, :, 1]), gridcolor="#eee", row=1, col=1,
                     title_text="z₁" if film.projection == "raw" else "PCA 2")
    fig.update_xaxes(gridcolor="#eee", row=1, col=2)
    fig.update_xaxes(title_text="epoch", gridcolor="#eee", row=2, col=2)
    fig.update_yaxes(gridcolor="#eee", title_text="nats", row=1, col=2)
    fig.update_yaxes(gridcolor="#eee", title_text="nats", row=2, col=2)
    return fig
