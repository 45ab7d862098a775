"""Lesson 4: posterior collapse and latent health: active units, KL per dimension with
dead dimensions flagged, plain-language warnings, and the run's summary as JSON."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app import shared as app_shared
from app import teaching as ui
from explorer import export
from explorer.diagnostics import ACTIVE_THRESHOLD, latent_health, reconstruction_spread
from explorer.generation import decode_images
from explorer.iwae import estimate_bounds
from explorer.runs import file_stamp
from training import rundir
from training.data import DataError

SPREAD_IMAGES = 500
SUMMARY_K, SUMMARY_N = 100, 250


@st.cache_data(show_spinner="Decoding the test set…", max_entries=16)
def health_of(path: str, _stamp: float):
    run = app_shared.get_run(path)
    latents = app_shared.get_latents(path)
    spread = None
    try:
        x = app_shared.get_test_images(path)[:SPREAD_IMAGES]
        with torch.no_grad():
            mu, _ = run.model.encode(x)
        spread = reconstruction_spread(x.numpy(), decode_images(run.model, mu.numpy()))
    except DataError:  # data set unavailable: the spread check is skipped ("n/a")
        spread = None
    return latent_health(latents["mu"], latents.get("logvar"), spread)


def dims_figure(health) -> go.Figure:
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
                    name="KL", hovertemplate="%{x}: %{y:.3f} nats<extra></extra>")
    fig.add_bar(x=names, y=health.mu_variance, marker_color=colours, row=rows, col=1,
                name="Var μ", hovertemplate="%{x}: %{y:.4f}<extra></extra>")
    fig.add_hline(y=ACTIVE_THRESHOLD, line=dict(color="#e15759", dash="dot"), row=rows, col=1,
                  annotation_text=f"active above {ACTIVE_THRESHOLD}",
                  annotation_position="top right")
    fig.update_yaxes(type="log", row=rows, col=1)
    fig.update_layout(height=230 * rows + 40, showlegend=False, plot_bgcolor="white",
                      margin=dict(l=10, r=10, t=30, b=10), bargap=0.2)
    fig.update_yaxes(gridcolor="#eee")
    return fig


def main() -> None:
    ui.page_header("Latent health",
                   "Is every latent dimension pulling its weight? A dimension is **active** "
                   f"when its posterior mean varies over the data, Var_x[μ_j(x)] > "
                   f"{ACTIVE_THRESHOLD} (Burda et al. 2015). A dimension whose KL to the "
                   "prior is ~0 is **dead**: q(z_j|x) = N(0, 1) for every x, so it carries no "
                   "information. When the whole KL term goes to zero, that is **posterior "
                   "collapse**.")
    opened = ui.open_picked_run()
    if opened is None:
        return
    path, run, _ = opened
    st.sidebar.caption(ui.UNITS_NOTE)
    stamp = file_stamp(path, rundir.LATENTS_FILE)
    health = health_of(str(path), stamp)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Active units", f"{health.active_units} / {health.latent_dim}")
    c2.metric("Dead dimensions", f"{len(health.dead_dims)}",
              help=f"Weak (active, KL < 0.01 nats): {len(health.weak_dims)}")
    c3.metric("Total KL", f"{health.total_kl:.2f} nats" if health.is_vae else "— (AE)")
    c4.metric("Reconstruction spread",
              "n/a" if health.recon_spread is None else f"{100 * health.recon_spread:.0f}%",
              help="How much the reconstructions vary, relative to how much the inputs vary "
                   "(100% = as much; near 0% = every input gives the same image)")
    if health.warnings:
        for warning in health.warnings:
            st.warning(warning, icon=":material/warning:")
    else:
        st.success("Healthy: no collapse, every dimension is active, and the reconstructions "
                   "vary with the input.", icon=":material/check_circle:")
    if not health.is_vae:
        st.info("A plain autoencoder has no KL term, so only the variance test applies.")
    fig = dims_figure(health)
    st.plotly_chart(fig, key="health_dims")
    st.caption("Blue: active. Red: dead (Var μ_j ≤ 0.01: the code ignores this dimension). "
               "Orange: active but weak (mean KL below 0.01 nats: almost no information). "
               "Computed on the test set's posteriors saved with the run.")
    ui.download_figure(fig, f"{path.name}-latent-health", "dl_health")
    if health.is_vae:
        order = health.kl_order()
        st.markdown("**Dimensions by information** (mean KL, nats): " + ", ".join(
            f"z{j} {health.kl_per_dim[j]:.2f}" for j in order[:16]) +
            (" …" if len(order) > 16 else ""))

    st.subheader("Export this run's summary")
    with_iwae = run.model.is_vae and st.checkbox(
        f"Include an IWAE estimate of log p(x) (K={SUMMARY_K}, first {SUMMARY_N} test images)",
        value=True, key="summary_iwae")
    bounds = None
    if with_iwae:
        cached = st.session_state.get("_iwae_summary")
        weights = file_stamp(path, rundir.WEIGHTS_FILE)
        if cached and cached[0] == str(path) and cached[1] == weights:
            bounds = cached[2]
        else:
            images = ui.test_images(path)
            if images is not None:
                bounds = summary_bounds(str(path), weights)
    try:
        summary = export.run_summary(path, health, bounds)
    except rundir.RunDirError as exc:  # e.g. a damaged metrics.jsonl: no summary, no traceback
        st.warning(f"The summary cannot be built: {exc}")
        return
    st.download_button("Run summary (JSON)", export.summary_json(summary),
                       file_name=f"{path.name}-summary.json", mime="application/json",
                       key="dl_summary", on_click="ignore", icon=":material/download:")
    with st.expander("Preview"):
        st.json(summary, expanded=1)


@st.cache_data(show_spinner="Importance sampling…", max_entries=8)
def summary_bounds(path: str, _stamp: float):
    run = app_shared.get_run(path)
    x = app_shared.get_test_images(path)[:SUMMARY_N]
    return estimate_bounds(run.model, x, SUMMARY_K, run.info.config.likelihood, seed=0)


main()
