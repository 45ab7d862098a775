"""Lesson 4: posterior collapse and latent health: active units, KL per dimension with
dead dimensions flagged, plain-language warnings, and the run's summary as JSON."""

from __future__ import annotations

import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from explorer import export
from explorer.diagnostics import ACTIVE_THRESHOLD, run_health
from explorer.iwae import estimate_bounds
from explorer.lesson_charts import latent_health_figure
from explorer.runs import file_stamp
from explorer.text import md, plot_text
from explorer.verdicts import health_verdicts
from training import rundir
from training.data import DataError

SPREAD_IMAGES = 500
SUMMARY_K, SUMMARY_N = 100, 250


@st.cache_data(show_spinner="Decoding the test set…", max_entries=16)
def health_of(path: str, _stamp: float):
    run = app_shared.get_run(path)
    latents = app_shared.get_latents(path)
    try:
        x = app_shared.get_test_images(path)[:SPREAD_IMAGES]
    except DataError:  # data set unavailable: the spread check is skipped ("n/a")
        x = None
    return run_health(run.model, latents["mu"], latents.get("logvar"), x)


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
    row = ui.metric_row()
    row.metric("Active units", f"{health.active_units} / {health.latent_dim}", width="content")
    row.metric("Dead dimensions", f"{len(health.dead_dims)}", width="content",
               help=f"Weak (active, KL < 0.01 nats): {len(health.weak_dims)}")
    row.metric("Total KL", f"{health.total_kl:.2f} nats" if health.is_vae else "— (AE)",
               width="content")
    row.metric("Reconstruction spread",
               "n/a" if health.recon_spread is None else f"{100 * health.recon_spread:.0f}%",
               width="content",
               help="How much the reconstructions vary, relative to how much the inputs vary "
                    "(100% = as much; near 0% = every input gives the same image)")
    for verdict in health_verdicts(health):
        ui.show_verdict(verdict)
    fig = latent_health_figure(health)
    st.plotly_chart(fig, key="health_dims")
    st.caption("Blue: active. Red: dead (Var μ_j ≤ 0.01: the code ignores this dimension). "
               "Orange: active but weak (mean KL below 0.01 nats: almost no information). "
               "Computed on the test set's posteriors saved with the run.")
    ui.download_figure(fig, f"{path.name}-latent-health", "dl_health",
                       f"{plot_text(path.name)}: latent health per dimension")
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
        st.warning(f"The summary cannot be built: {md(exc.public)}")
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
