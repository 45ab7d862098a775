"""Lesson 5: beta and KL warm-up. Runs trained with different beta on one rate-distortion
chart (reconstruction vs KL), and the training curves that show the warm-up ramp."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app import shared as app_shared
from app import teaching as ui
from explorer.compare import comparable, rate_point, warmup_curve
from explorer.runs import openable_runs
from training import rundir

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]


def rate_distortion_figure(points) -> go.Figure:
    fig = go.Figure()
    rates = np.array([p.rate for p in points])
    dists = np.array([p.distortion for p in points])
    # iso-ELBO lines: recon + KL = const
    lo, hi = float(rates.min()), float(rates.max())
    pad = max(1.0, 0.15 * (hi - lo))
    xs = np.array([max(0.0, lo - pad), hi + pad])
    for level in np.unique(np.round(dists + rates, -1)):
        fig.add_scatter(x=xs, y=level - xs, mode="lines", showlegend=False, hoverinfo="skip",
                        line=dict(color="#ccc", dash="dot", width=1))
        fig.add_annotation(x=xs[1], y=level - xs[1], text=f"−ELBO {level:.0f}",
                           showarrow=False, font=dict(size=10, color="#999"), xanchor="left")
    for i, p in enumerate(points):
        fig.add_scatter(
            x=[p.rate], y=[p.distortion], mode="markers+text", name=p.name,
            text=[f"β={p.beta:g}"], textposition="top center",
            marker=dict(size=16, color=PALETTE[i % len(PALETTE)],
                        symbol="diamond" if p.kl_warmup else "circle",
                        line=dict(color="white", width=1)),
            hovertemplate=(f"<b>{p.name}</b><br>β={p.beta:g}, warm-up {p.kl_warmup} epochs, "
                           f"z={p.latent_dim}<br>rate (KL) %{{x:.2f}} nats<br>distortion "
                           f"(recon) %{{y:.2f}} nats<br>active units {p.active_units}"
                           "<extra></extra>"))
    fig.update_layout(height=440, plot_bgcolor="white", margin=dict(l=10, r=60, t=10, b=10),
                      xaxis_title="rate: KL(q(z|x) ‖ p(z)), nats per sample",
                      yaxis_title="distortion: reconstruction, nats per sample",
                      legend=dict(title="run"))
    fig.update_xaxes(gridcolor="#eee", range=[xs[0], xs[1] * 1.1])
    fig.update_yaxes(gridcolor="#eee", range=[dists.min() - pad * 0.8 - 2,
                                             dists.max() + pad * 0.8 + 2])
    return fig


def warmup_figure(curves: dict[str, dict[str, list[float]]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=("β used in the objective", "test KL (rate), nats",
                                        "test reconstruction, nats"))
    for i, (name, c) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        for col, key in enumerate(("beta", "test_kl", "test_recon"), start=1):
            fig.add_scatter(x=c["epoch"], y=c[key], mode="lines+markers", name=name,
                            legendgroup=name, showlegend=col == 1,
                            line=dict(color=colour), marker=dict(size=4),
                            hovertemplate=f"epoch %{{x}}: %{{y:.3f}}<extra>{name}</extra>",
                            row=1, col=col)
    fig.update_layout(height=320, plot_bgcolor="white", margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title_text="epoch", gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee")
    return fig


def main() -> None:
    ui.page_header("β and KL warm-up",
                   "The β-VAE objective is recon + β·KL. β trades **rate** (KL: how many nats "
                   "the code carries about x) against **distortion** (reconstruction error). "
                   "β > 1 buys a smoother, more prior-like latent space with blurrier "
                   "reconstructions; β < 1 the opposite. A **KL warm-up** ramps β from 0 over "
                   "the first epochs so the decoder learns to use z before the KL pressure "
                   "arrives (Bowman et al. 2016; Sønderby et al. 2016).")
    st.sidebar.caption(ui.UNITS_NOTE)
    entries = openable_runs(app_shared.runs_dir())
    points, problems = [], []
    for e in entries:
        try:
            points.append(rate_point(e.path))
        except rundir.RunDirError as exc:
            problems.append(f"{e.name}: {exc.problem}")
    kept, notes = comparable(points)
    if not kept:
        st.info("No VAE run with a finished epoch yet. Train runs with different β on the "
                "Train page (or `python -m training.demo`, which includes a β = 4 run).")
        return
    names = [p.name for p in kept]
    chosen = st.multiselect("Runs on the chart", names, default=names, key="beta_runs")
    shown = [p for p in kept if p.name in chosen]
    if not shown:
        st.warning("Pick at least one run.")
        return
    fig = rate_distortion_figure(shown)
    st.plotly_chart(fig, key="rate_distortion")
    st.caption(f"Final test-set terms of {len(shown)} VAE runs on {shown[0].dataset}. Down = "
               "sharper reconstructions, left = less information in z. Dotted lines: equal "
               "−ELBO (recon + KL). ◆ = trained with KL warm-up.")
    ui.download_figure(fig, "rate-distortion", "dl_rd")
    for note in notes + problems:
        st.caption(f"Not shown: {note}")
    table = pd.DataFrame([{"run": p.name, "β": p.beta, "warm-up (epochs)": p.kl_warmup,
                           "latent dim": p.latent_dim, "rate KL": p.rate,
                           "distortion recon": p.distortion, "−ELBO": p.neg_elbo,
                           "active units": p.active_units} for p in shown])
    st.dataframe(table.style.format({"β": "{:g}", "rate KL": "{:.2f}",
                                     "distortion recon": "{:.2f}", "−ELBO": "{:.2f}"}),
                 hide_index=True, key="rd_table")

    st.subheader("Training curves: the warm-up")
    warm = [p.name for p in shown if p.kl_warmup] or names[:1]
    curve_runs = st.multiselect("Runs", [p.name for p in shown], default=warm[:2] + [
        n for n in [p.name for p in shown if not p.kl_warmup][:1] if n not in warm],
        key="beta_curve_runs")
    curves = {}
    for p in shown:
        if p.name in curve_runs:
            curves[p.name] = warmup_curve(app_shared.get_metrics(p.path))
    if curves:
        curve_fig = warmup_figure(curves)
        st.plotly_chart(curve_fig, key="warmup_curves")
        st.caption("β per epoch as used in the objective (the ramp is per batch; the value at "
                   "the end of each epoch is shown). While β is small the KL is cheap and "
                   "rises; as β reaches its value the optimiser gives some of it back.")
        ui.download_figure(curve_fig, "warmup-curves", "dl_warmup")


main()
