"""Plotly latent maps of the teaching pages: the map with lesson overlays (rings on
chosen samples, the posterior's 1σ/2σ ellipses, extra markers, the prior's 95% circle),
the reparameterisation lesson's map of z = μ + σ·ε and its close-up, and the generation
lesson's map drawn over the decoded manifold. (Charts of numbers, not maps, are
:mod:`explorer.lesson_charts`.)

All start from :func:`explorer.figures.label_traces` (one scatter trace per class, WebGL
for large maps); the main page's map adds overlays tuned for live updates, these add the
lessons' own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from scipy import stats

from explorer.export import image_png
from explorer.figures import AXIS_TITLES, data_uri, ellipse_xy, label_traces
from explorer.generation import LatentModel, manifold_grid, tile

OTHER_DRAWS = "other draws"  # the reparameterisation map's trace of the further draws of z


def prior_circle_radius(level: float = 0.95) -> float:
    """Radius of the disc holding ``level`` of a 2-D standard normal: sqrt(chi2_2(level))."""
    return float(np.sqrt(stats.chi2.ppf(level, 2)))


INK = "#222"  # strokes drawn over the map: dark, on a light halo, ...
HALO = "rgba(255, 255, 255, 0.85)"  # ... so they show on light and dark themes alike
NICE_SCALES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def halo_line(x: np.ndarray, y: np.ndarray, name: str, dash: str = "solid",
              width: float = 2.0, showlegend: bool = False,
              hoverinfo: str = "skip", shade: bool = False) -> list[go.Scatter]:
    """A dark line on a wider light one: visible on a white page, on Streamlit's dark
    theme and over a cloud of coloured points. The first trace is the halo (no legend);
    ``shade`` fills a closed line with translucent grey."""
    fill = dict(fill="toself", fillcolor="rgba(128, 128, 128, 0.3)") if shade else {}
    return [go.Scatter(x=x, y=y, mode="lines", hoverinfo="skip", showlegend=False,
                       name=f"{name} (halo)", line=dict(color=HALO, width=width + 3), **fill),
            go.Scatter(x=x, y=y, mode="lines", name=name, hoverinfo=hoverinfo,
                       showlegend=showlegend, line=dict(color=INK, width=width, dash=dash))]


def ellipse_scale(sigma: np.ndarray, extent: float, share: float = 0.06) -> int:
    """The smallest of 1, 2, 5, 10, 20, ... by which the 1σ ellipse of ``sigma`` (2,) must
    be enlarged for its larger radius to be ``share`` of the map's ``extent`` (its
    larger side): 1 when it is visible as it is."""
    radius = float(np.max(sigma))
    if radius <= 0 or not np.isfinite(radius):
        return 1
    need = share * extent / radius
    return next((k for k in NICE_SCALES if k >= need), NICE_SCALES[-1])


def lesson_map(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
               projection: str = "raw", rings: list[int] | None = None,
               ellipse: tuple[np.ndarray, np.ndarray] | None = None,
               markers: list[dict[str, Any]] | None = None, prior_circle: bool = False,
               height: int = 480, legend: bool = True, ellipse_times: int = 1) -> go.Figure:
    """Test-set latent means (N, 2), one trace per class, plus overlays:
    ``rings`` (indices to circle), ``ellipse`` (center (2,), sigma (2,)) drawn at 1σ and
    2σ (enlarged ``ellipse_times`` about its centre, and labelled so, when the true
    ellipse would be too small to see), ``markers`` (dicts with x, y, name and optional
    symbol, colour, size) and the prior's 95% circle, labelled on the map. Overlays are
    dark lines on light halos and the background is the theme's, so the map reads on
    light and dark pages; :func:`explorer.export.print_figure` makes it white for a
    slide."""
    coords = np.asarray(coords, dtype=np.float32)
    fig = go.Figure(label_traces(
        coords, labels, class_names, customdata=np.arange(len(coords)), opacity=0.7,
        hover=lambda name: f"label {name}<br>index %{{customdata}}<extra></extra>"))
    if prior_circle:
        r = prior_circle_radius()
        t = np.linspace(0, 2 * np.pi, 120)
        fig.add_traces(halo_line(r * np.cos(t), r * np.sin(t), "95% of N(0, I)", dash="dash",
                                 width=3, showlegend=True, hoverinfo="name",
                                 # shaded where it is small next to the codes (an AE's)
                                 shade=2 * r < 0.25 * float(np.ptp(coords, axis=0).max())))
        fig.add_annotation(x=0.0, y=r, ax=0, ay=-36,  # above the circle: near the middle
                           text="95% of N(0, I)", showarrow=True, arrowhead=2,
                           arrowcolor="#888", arrowwidth=1.5, font=dict(size=12, color=INK),
                           bgcolor=HALO, bordercolor="#888")
    if ellipse is not None:
        center, sigma = np.asarray(ellipse[0]), np.asarray(ellipse[1]) * ellipse_times
        for n_sigma, dash in ((1.0, "solid"), (2.0, "dot")):
            ex, ey = ellipse_xy(center, sigma, n_sigma)
            fig.add_traces(halo_line(ex, ey, f"{n_sigma:.0f}σ", dash=dash, width=1.5))
        if ellipse_times > 1:
            fig.add_annotation(x=float(center[0]), y=float(center[1] - 2 * sigma[1]),
                               ax=0, ay=80, showarrow=True, arrowhead=2,
                               arrowcolor="#888", arrowwidth=1.5, font=dict(size=12, color=INK),
                               bgcolor=HALO, bordercolor="#888",
                               text=f"q(z|x) 1σ, 2σ drawn ×{ellipse_times}")
    if rings:
        for colour, width in ((HALO, 5.0), (INK, 2.5)):
            fig.add_trace(go.Scatter(
                x=coords[rings, 0], y=coords[rings, 1], mode="markers",
                name="chosen" if colour == INK else "chosen (halo)", showlegend=False,
                hovertemplate="sample %{text}<extra></extra>",
                hoverinfo="skip" if colour == HALO else None,
                text=[str(i) for i in rings],
                marker=dict(size=15, color="rgba(0,0,0,0)", line=dict(color=colour,
                                                                      width=width))))
    for m in markers or []:
        fig.add_trace(go.Scatter(
            x=[m["x"]], y=[m["y"]], mode="markers", name=m["name"],
            marker=dict(size=m.get("size", 18), symbol=m.get("symbol", "star"),
                        color=m.get("colour", INK), line=dict(color="white", width=1.5)),
            hovertemplate=f"{m['name']}<extra></extra>"))
    x_title, y_title = AXIS_TITLES.get(projection, ("x", "y"))
    if projection == "raw":  # fixed ranges: the labels' boxes must not widen the map
        xs, ys = [coords[:, 0]], [coords[:, 1]]
        for trace in fig.data:
            if trace.x is not None and trace.y is not None:
                xs.append(np.asarray(trace.x, dtype=np.float64))
                ys.append(np.asarray(trace.y, dtype=np.float64))
        for axis, values in (("xaxis", np.concatenate(xs)), ("yaxis", np.concatenate(ys))):
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            pad = 0.05 * max(hi - lo, 1e-6)
            fig.layout[axis].range = [lo - pad, hi + pad]
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=10, b=10),
        showlegend=legend, legend=dict(title="label", itemsizing="constant"),
        xaxis=dict(title=x_title, zeroline=projection == "raw",
                   constrain="domain" if projection == "raw" else None),
        yaxis=dict(title=y_title, zeroline=projection == "raw",
                   scaleanchor="x" if projection == "raw" else None,
                   # equal scales by shrinking the plot, not by padding a range with nothing
                   constrain="domain" if projection == "raw" else None))
    return fig


def z_label(seed: int) -> str:
    """Name of the reparameterisation map's z marker: ``z (ε #seed)``."""
    return f"z (ε #{seed})"


def reparam_map(coords: np.ndarray, labels: np.ndarray, class_names: list[str],
                projection: str, index: int, points: np.ndarray, sigmas: np.ndarray | None,
                seed: int, ellipse_times: int | None = None) -> go.Figure:
    """The map for z = μ + σ·ε of test sample ``index`` (ringed). ``points`` (2 + K, 2) are
    μ, z and K further draws placed on the map; ``sigmas`` (2,) draws q(z|x)'s 1σ/2σ
    ellipses around μ (a raw 2-D map only; the legend is hidden then, None: no ellipses),
    enlarged ``ellipse_times`` (None: by :func:`ellipse_scale`, so they can be seen on the
    whole map; the enlargement is written on the map)."""
    if sigmas is not None and ellipse_times is None:
        extent = float(np.max(np.ptp(np.asarray(coords, dtype=np.float64), axis=0)))
        ellipse_times = ellipse_scale(np.asarray(sigmas), extent)
    fig = lesson_map(
        coords, labels, class_names, projection, rings=[index],
        ellipse=(points[0], sigmas) if sigmas is not None else None, height=440,
        legend=sigmas is None, ellipse_times=ellipse_times or 1,
        markers=[{"x": float(points[1, 0]), "y": float(points[1, 1]),
                  "name": z_label(seed), "symbol": "star", "colour": "#d62728"}])
    fig.add_scatter(x=points[2:, 0], y=points[2:, 1], mode="markers", name=OTHER_DRAWS,
                    marker=dict(size=7, symbol="x", color=INK,
                                line=dict(color="white", width=0.5)),
                    hovertemplate="another draw of z<extra></extra>")
    fig.add_scatter(x=[points[0, 0], points[1, 0]], y=[points[0, 1], points[1, 1]],
                    mode="lines", name="σ·ε", line=dict(color="#d62728", width=2),
                    hoverinfo="skip")
    return fig


def reparam_zoom(fig: go.Figure, center: np.ndarray, sigmas: np.ndarray,
                 seed: int) -> go.Figure:
    """A copy of a :func:`reparam_map` figure drawn with ``ellipse_times=1`` (true-size
    ellipses) zoomed to ``center`` ± 3σ, its markers enlarged (the original is left as it
    is)."""
    half = 3.0 * float(np.max(sigmas))
    zoom = go.Figure(fig)
    zoom.update_layout(  # "domain": a narrow plot shrinks, the ranges stay μ ± 3σ
        xaxis=dict(range=[center[0] - half, center[0] + half], constrain="domain"),
        yaxis=dict(range=[center[1] - half, center[1] + half], constrain="domain"))
    zoom.update_traces(marker=dict(size=22), selector=dict(name=z_label(seed)))
    zoom.update_traces(marker=dict(size=9), selector=dict(name=OTHER_DRAWS))
    return zoom


def manifold_map(codes: np.ndarray, labels: np.ndarray, class_names: list[str],
                 dims: tuple[int, int], picture: np.ndarray, span: float,
                 n: int) -> go.Figure:
    """The test codes ``codes`` (N, 2) on latent dimensions ``dims`` over ``picture``, the
    tiled n x n manifold (row 0 = largest y) whose tile centres span [-span, span]."""
    fig = lesson_map(codes, labels, class_names, "raw", height=560)
    step = (2 * span) / (n - 1)
    fig.add_layout_image(dict(source=data_uri(image_png(picture)), xref="x", yref="y",
                              x=-span - step / 2, y=span + step / 2, sizex=2 * span + step,
                              sizey=2 * span + step, sizing="stretch", layer="below",
                              opacity=1.0))
    fig.update_traces(marker=dict(size=4, opacity=0.55), selector=dict(mode="markers"))
    fig.update_layout(legend=dict(title="label of the dots"))
    fig.update_layout(xaxis=dict(title=f"z{dims[0]}", range=[-span - step, span + step],
                                 showgrid=False),
                      yaxis=dict(title=f"z{dims[1]}", range=[-span - step, span + step],
                                 showgrid=False))
    return fig


def manifold_figure(model: LatentModel, mu: np.ndarray, labels: np.ndarray,
                    class_names: list[str], dims: tuple[int, int], n: int, span: float,
                    base: np.ndarray) -> tuple[go.Figure, np.ndarray]:
    """Decode the n x n grid over ``dims`` (the other dimensions at ``base``) and draw it
    under the test set's means ``mu`` (N, D): (figure, grid images (n, n, C, H, W))."""
    _, _, grid = manifold_grid(model, dims, n, (-span, span), (-span, span), base)
    picture = tile(grid, pad=0)  # (n*H, n*W[, C]), row 0 = top = largest y
    codes = np.column_stack([mu[:, dims[0]], mu[:, dims[1]]])
    return manifold_map(codes, labels, class_names, dims, picture, span, n), grid
