"""Plotly charts of the lesson pages' numbers (everything that is not the latent map,
which is :mod:`explorer.lesson_figures`): the rate-distortion plane of runs trained with
different beta and their warm-up curves, the IWAE-vs-ELBO curve of one image and the
histogram of the gap over the test set, and the per-dimension bars of latent health.

Every function takes plain results of :mod:`explorer.compare`, :mod:`explorer.iwae` or
:mod:`explorer.diagnostics` and returns a ``go.Figure``; values are in nats per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.compare import RatePoint
from explorer.diagnostics import ACTIVE_THRESHOLD, LatentHealth
from explorer.figures import PALETTE
from explorer.text import plot_text

HEALTH_COLOURS = (("#4e79a7", "active"), ("#f28e2b", "weak (KL < 0.01 nats)"),
                  ("#e15759", "dead (Var μ ≤ 0.01)"))
CurvePoint = tuple[int, float, float]  # (K, ELBO, E[IWAE_K]) as explorer.iwae.sample_curve
WARMUP_PANELS = (("beta", "β in the objective"), ("test_kl", "test KL (rate)"),
                 ("test_recon", "test reconstruction"))  # short: three fit at 1024x768


def decimal(value: float) -> str:
    """A tick label written in full: 0.0001, 0.5, 20, 1000 (never 1e-04 or 1k)."""
    return np.format_float_positional(float(value), trim="-")


def log_ticks(values: Sequence[float] | np.ndarray) -> dict[str, object]:
    """Tick values and labels for a log axis over ``values``, written in full: the values
    themselves when there are at most 12 of them and they are all "round" (1, 2, 5 times a
    power of 10, as K of the IWAE chart), else one tick per power of 10 (..., 0.01, 0.1,
    1, 10, ...). Plotly's own log ticks read "1 2 5 10 2 5 100"."""
    v = np.asarray([x for x in np.asarray(values, dtype=np.float64).ravel()
                    if np.isfinite(x) and x > 0])
    if len(v) == 0:
        return {}
    exps = np.floor(np.log10(v) + 1e-9)
    mant = np.round(v / 10.0**exps, 6)
    unique = np.unique(v)
    if len(unique) <= 12 and np.isin(mant, (1.0, 2.0, 5.0)).all():
        ticks = [float(x) for x in unique]
    else:
        lo, hi = int(np.floor(np.log10(v.min()))), int(np.ceil(np.log10(v.max())))
        ticks = [10.0**e for e in range(lo, max(hi, lo + 1) + 1)]
    return dict(tickmode="array", tickvals=ticks, ticktext=[decimal(t) for t in ticks])


def rate_distortion_figure(points: Sequence[RatePoint]) -> go.Figure:
    """One marker per run at (rate = test KL, distortion = test reconstruction), ◆ for
    runs trained with KL warm-up, over dotted lines of equal −ELBO (recon + KL)."""
    fig = go.Figure()
    rates = np.array([p.rate for p in points])
    dists = np.array([p.distortion for p in points])
    # iso-ELBO lines: recon + KL = const
    lo, hi = float(rates.min()), float(rates.max())
    pad = max(1.0, 0.15 * (hi - lo))
    xs = np.array([max(0.0, lo - pad), hi + pad])
    for level in np.unique(np.round(dists + rates, -1)):
        fig.add_scatter(x=xs, y=level - xs, mode="lines", showlegend=False, hoverinfo="skip",
                        line=dict(color="#999", dash="dot", width=1))
        fig.add_annotation(x=xs[1], y=level - xs[1], text=f"−ELBO {level:.0f}",
                           showarrow=False, font=dict(size=10, color="#999"), xanchor="left")
    for i, p in enumerate(points):
        name = plot_text(p.name)
        fig.add_scatter(
            x=[p.rate], y=[p.distortion], mode="markers+text", name=name,
            text=[f"β={p.beta:g}"], textposition="top center",
            marker=dict(size=16, color=PALETTE[i % len(PALETTE)],
                        symbol="diamond" if p.kl_warmup else "circle",
                        line=dict(color="white", width=1)),
            hovertemplate=(f"<b>{name}</b><br>β={p.beta:g}, warm-up {p.kl_warmup} epochs, "
                           f"z={p.latent_dim}<br>rate (KL) %{{x:.2f}} nats<br>distortion "
                           f"(recon) %{{y:.2f}} nats<br>active units {p.active_units}"
                           "<extra></extra>"))
    fig.update_layout(height=440, margin=dict(l=10, r=60, t=10, b=10),
                      xaxis_title="rate: KL(q(z|x) ‖ p(z)), nats per sample",
                      yaxis_title="distortion: reconstruction, nats per sample",
                      legend=dict(title="run"))
    fig.update_xaxes(range=[xs[0], xs[1] * 1.1])
    fig.update_yaxes(range=[dists.min() - pad * 0.8 - 2,
                                             dists.max() + pad * 0.8 + 2])
    return fig


def warmup_figure(curves: dict[str, dict[str, list[float]]]) -> go.Figure:
    """Three panels per epoch (β used, test KL, test reconstruction), one line per run;
    ``curves`` maps run names to :func:`explorer.compare.warmup_curve` columns."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=[title for _, title in WARMUP_PANELS])
    for i, (run_name, c) in enumerate(curves.items()):
        name = plot_text(run_name)
        colour = PALETTE[i % len(PALETTE)]
        for col, (key, _) in enumerate(WARMUP_PANELS, start=1):
            fig.add_scatter(x=c["epoch"], y=c[key], mode="lines+markers", name=name,
                            legendgroup=name, showlegend=col == 1,
                            line=dict(color=colour), marker=dict(size=4),
                            hovertemplate=f"epoch %{{x}}: %{{y:.3f}}<extra>{name}</extra>",
                            row=1, col=col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.3, title="run"))
    fig.update_xaxes(title_text="epoch")
    for col, unit in enumerate(("β", "nats", "nats"), start=1):
        fig.update_yaxes(title_text=unit, row=1, col=col)
    return fig


def iwae_curve_figure(points: Sequence[CurvePoint], k: int) -> go.Figure:
    """IWAE_K against K (log axis) next to the ELBO, a dotted line at the chosen ``k``."""
    ks = [p[0] for p in points]
    fig = go.Figure()
    fig.add_scatter(x=ks, y=[p[2] for p in points], mode="lines+markers", name="IWAE_K",
                    line=dict(color="#4e79a7", width=3),
                    hovertemplate="K=%{x}: %{y:.2f} nats<extra>IWAE</extra>")
    fig.add_scatter(x=ks, y=[p[1] for p in points], mode="lines", name="ELBO",
                    line=dict(color="#e15759", dash="dash"),
                    hovertemplate="K=%{x}: %{y:.2f} nats<extra>ELBO</extra>")
    fig.add_vline(x=k, line=dict(color="#999", dash="dot"))
    fig.add_annotation(x=math.log10(k), y=1, yref="paper", text=f"K = {k}", showarrow=False,
                       xanchor="left", yanchor="top", font=dict(size=11, color="#999"))
    fig.update_layout(height=340, xaxis=dict(type="log", title="K (importance samples)",
                                             **log_ticks(ks)),
                      yaxis_title="nats (higher = tighter bound)",
                      margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=1.1, x=1, xanchor="right"))
    return fig


def gap_histogram(gap: np.ndarray) -> go.Figure:
    """Histogram of IWAE − ELBO per test image (nats)."""
    fig = go.Figure(go.Histogram(x=gap, nbinsx=40, marker_color="#4e79a7",
                                 hovertemplate="gap %{x}: %{y} images<extra></extra>"))
    fig.update_layout(height=260, xaxis_title="IWAE − ELBO per image (nats)",
                      yaxis_title="images",
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig


def latent_health_figure(health: LatentHealth) -> go.Figure:
    """Bars per latent dimension: mean KL (a VAE only) above Var_x[μ_j(x)] on a log axis
    with the activity threshold; red = dead, orange = weak, blue = active."""
    names = [f"z{j}" for j in range(health.latent_dim)]
    colours = ["#e15759" if d else "#f28e2b" if w else "#4e79a7"
               for d, w in zip(health.dead, health.weak, strict=True)]
    rows = 2 if health.is_vae else 1
    titles = (["mean KL per dimension (nats)"] if health.is_vae else []) + \
        ["Var over the data of μ_j(x)"]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=0.12)
    if health.is_vae:
        fig.add_bar(x=names, y=health.kl_per_dim, marker_color=colours, row=1, col=1,
                    name="KL", showlegend=False,
                    hovertemplate="%{x}: %{y:.3f} nats<extra></extra>")
    fig.add_bar(x=names, y=health.mu_variance, marker_color=colours, row=rows, col=1,
                name="Var μ", showlegend=False, hovertemplate="%{x}: %{y:.4f}<extra></extra>")
    for colour, name in HEALTH_COLOURS:  # the legend says what the colours mean
        fig.add_bar(x=[None], y=[None], marker_color=colour, name=name, row=rows, col=1,
                    hoverinfo="skip")
    fig.add_hline(y=ACTIVE_THRESHOLD, line=dict(color="#e15759", dash="dot"), row=rows, col=1)
    # on a log axis an annotation's y is log10 of the value (add_hline's own label is not)
    fig.add_annotation(x=1, xref="x domain", y=math.log10(ACTIVE_THRESHOLD), row=rows, col=1,
                       text=f"active above {ACTIVE_THRESHOLD}", showarrow=False,
                       xanchor="right", yanchor="bottom", font=dict(size=11, color="#e15759"))
    fig.update_yaxes(type="log", row=rows, col=1,
                     **log_ticks([ACTIVE_THRESHOLD, *health.mu_variance]))
    fig.update_layout(height=230 * rows + 40, showlegend=True, legend=dict(title="dimension"),
                      margin=dict(l=10, r=10, t=30, b=10), bargap=0.2)
    fig.update_xaxes(title_text="latent dimension", row=rows, col=1)
    if health.is_vae:
        fig.update_yaxes(title_text="nats", row=1, col=1)
    fig.update_yaxes(title_text="Var μ_j (log)", row=rows, col=1)
    return fig
