"""Lesson 5: beta and KL warm-up. Runs trained with different beta on one rate-distortion
chart (reconstruction vs KL), and the training curves that show the warm-up ramp."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from explorer.compare import comparable, default_curve_runs, rate_points, warmup_curve
from explorer.lesson_charts import rate_distortion_figure, warmup_figure
from explorer.runs import openable_runs
from explorer.text import md
from explorer.verdicts import rate_distortion_note


def main() -> None:
    ui.page_header("β and KL warm-up",
                   "The β-VAE objective is recon + β·KL. β trades **rate** (KL: how many nats "
                   "the code carries about x) against **distortion** (reconstruction error). "
                   "β > 1 buys a smoother, more prior-like latent space with blurrier "
                   "reconstructions; β < 1 the opposite. A **KL warm-up** ramps β from 0 over "
                   "the first epochs so the decoder learns to use z before the KL pressure "
                   "arrives (Bowman et al. 2016; Sønderby et al. 2016).")
    st.sidebar.caption(ui.UNITS_NOTE)
    app_shared.show_unopenable()  # damaged run folders, named with their problem
    points, problems = rate_points(e.path for e in openable_runs(app_shared.runs_dir()))
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
    st.caption(f"Final test-set terms of {len(shown)} VAE runs on {md(shown[0].dataset)}. Down = "
               "sharper reconstructions, left = less information in z. Dotted lines: equal "
               "−ELBO (recon + KL). ◆ = trained with KL warm-up. "
               + md(rate_distortion_note(shown)))
    ui.download_figure(fig, "rate-distortion", "dl_rd",
                       "Rate vs distortion (test set, nats per sample)")
    for note in notes + problems:
        st.caption(f"Not shown: {md(app_shared.public_message(note))}")
    table = pd.DataFrame([{"run": p.name, "β": p.beta, "warm-up (epochs)": p.kl_warmup,
                           "latent dim": p.latent_dim, "rate KL": p.rate,
                           "distortion recon": p.distortion, "−ELBO": p.neg_elbo,
                           "active units": p.active_units} for p in shown])
    st.dataframe(table.style.format({"β": "{:g}", "rate KL": "{:.2f}",
                                     "distortion recon": "{:.2f}", "−ELBO": "{:.2f}"}),
                 hide_index=True, key="rd_table")

    st.subheader("Training curves: the warm-up")
    curve_runs = st.multiselect("Runs", [p.name for p in shown],
                                default=default_curve_runs(shown), key="beta_curve_runs")
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
        ui.download_figure(curve_fig, "warmup-curves", "dl_warmup",
                           "Training curves and KL warm-up")


main()
