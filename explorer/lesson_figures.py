"""Plotly figures of the teaching pages: the latent map with lesson overlays (rings on
chosen samples, the posterior's 1σ/2σ ellipses, extra markers, the prior's 95% circle).

Both start from :func:`explorer.figures.label_traces` (one scatter trace per class, WebGL
for large maps); the main page's map adds overlays tuned for live updates, these add the
lessons' own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from scipy import stats

from explorer.figures import AXIS_TITLES, ellipse_xy, label_traces


def prior_circle_radius(level: float = 0.95) -> float:
    """Radius of the disc holding ``level`` of a 2-D standard normal: sqrt(chi2_2(level))."""
    return float(np.sqrt(stats.chi2.ppf(level, 2)))


def lesson_map(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
               projection: str = "raw", rings: list[int] | None = None,
               ellipse: tuple[np.ndarray, np.ndarray] | None = None,
               markers: list[dict[str, Any]] | None = None, prior_circle: bool = False,
               height: int = 480, legend: bool = True) -> go.Figure:
    """Test-set latent means (N, 2), one trace per class, plus overlays:
    ``rings`` (indices to circle), ``ellipse`` (center (2,), sigma (2,)) drawn at 1σ and
    2σ, ``markers`` (dicts with x, y, name and optional symbol, colour, size) and the
    prior's 95% circle."""
    coords = np.asarray(coords, dtype=np.float32)
    fig = go.Figure(label_traces(
        coords, labels, class_names, customdata=np.arange(len(coords)), opacity=0.7,
        hover=lambda name: f"label {name}<br>index %{{customdata}}<extra></extra>"))
    if prior_circle:
        r = prior_circle_radius()
        t = np.linspace(0, 2 * np.pi, 120)
        fig.add_trace(go.Scatter(x=r * np.cos(t), y=r * np.sin(t), mode="lines",
                                 name="95% of N(0, I)", hoverinfo="name",
                                 line=dict(color="black", dash="dash", width=3)))
    if ellipse is not None:
        center, sigma = ellipse
        for n_sigma, dash in ((1.0, "solid"), (2.0, "dot")):
            ex, ey = ellipse_xy(np.asarray(center), np.asarray(sigma), n_sigma)
            fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", hoverinfo="skip",
                                     showlegend=False, name=f"{n_sigma:.0f}σ",
                                     line=dict(color="black", width=1.5, dash=dash)))
    if rings:
        fig.add_trace(go.Scatter(
            x=coords[rings, 0], y=coords[rings, 1], mode="markers", name="chosen",
            showlegend=False, hovertemplate="sample %{text}<extra></extra>",
            text=[str(i) for i in rings],
            marker=dict(size=15, color="rgba(0,0,0,0)", line=dict(color="black", width=2.5))))
    for m in markers or []:
        fig.add_trace(go.Scatter(
            x=[m["x"]], y=[m["y"]], mode="markers", name=m["name"],
            marker=dict(size=m.get("size", 18), symbol=m.get("symbol", "star"),
                        color=m.get("colour", "black"), line=dict(color="white", width=1.5)),
            hovertemplate=f"{m['name']}<extra></extra>"))
    x_title, y_title = AXIS_TITLES.get(projection, ("x", "y"))
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="white",
        showlegend=legend, legend=dict(title="label", itemsizing="constant"),
        xaxis=dict(title=x_title, zeroline=projection == "raw", gridcolor="#eee"),
        yaxis=dict(title=y_title, zeroline=projection == "raw", gridcolor="#eee",
                   scaleanchor="x" if projection == "raw" else None))
    return fig
