"""Lesson 1: autoencoder vs VAE, side by side: latent maps, reconstructions of the same
inputs, and draws from the prior N(0, I), with the reason the autoencoder's look wrong."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from explorer.compare import default_pair, pick_inputs, prior_fits
from explorer.generation import prior_samples, reconstruct
from explorer.inference import available_projections, map_coords
from explorer.lesson_figures import lesson_map
from explorer.runs import file_stamp, openable_runs
from explorer.text import md, plot_text
from explorer.verdicts import compare_verdict
from training import rundir

N_INPUTS = 8
N_PRIOR = 16


@st.cache_data(show_spinner=False, max_entries=16)
def reconstructions(path: str, indices: tuple[int, ...], _stamp: float) -> np.ndarray:
    run = app_shared.get_run(path)
    return reconstruct(run.model, app_shared.get_test_images(path)[list(indices)])


def column(entry, indices: list[int], seed: int, side: str) -> None:
    path = str(entry.path)
    opened = ui.open_run(path)
    if opened is None:
        return
    run, latents = opened
    is_vae = run.model.is_vae
    kind = "VAE" if is_vae else "plain autoencoder"
    st.subheader(md(entry.name))
    st.caption(f"{kind}, {run.model.latent_dim}-D latent space, {md(run.info.config.dataset)}")
    projection = available_projections(latents)[0]
    coords = map_coords(latents, projection)
    fig = lesson_map(coords, latents["labels"], run.info.class_names, projection,
                     rings=indices, height=380, legend=False,
                     prior_circle=projection == "raw" and run.model.latent_dim == 2)
    st.plotly_chart(fig, key=f"map_{side}")
    st.caption("Latent means μ(x) of the test set" + (" (PCA)" if projection == "pca" else "")
               + "; the rings mark the inputs reconstructed below"
               + ("; the dashed circle holds 95% of the prior N(0, I): where the samples "
                  "below come from." if projection == "raw" and run.model.latent_dim == 2
                  else "."))
    ui.download_figure(fig, f"{entry.name}-latent-map", f"dl_map_{side}",
                       f"{plot_text(entry.name)} ({kind}): latent means μ(x) of the test set")

    recon = reconstructions(path, tuple(indices), file_stamp(path, rundir.WEIGHTS_FILE))
    ui.show_grid(recon, caption=f"Reconstructions by {entry.name}", cols=N_INPUTS)
    ui.download_images(recon, f"{entry.name}-reconstructions", f"dl_recon_{side}")

    z, samples = prior_samples(run.model, N_PRIOR, seed)
    ui.show_grid(samples, caption=f"{N_PRIOR} decoded draws z ~ N(0, I)", cols=8)
    ui.download_images(samples, f"{entry.name}-prior-samples", f"dl_prior_{side}")
    fit, active_fit, n_dead = prior_fits(latents["mu"], is_vae)
    row = ui.metric_row()
    row.metric("Fit to N(0, I), nats", f"{fit.gaussian_kl:.2f}", width="content",
               help="KL from a Gaussian fitted to the test codes to the prior N(0, I): 0 when "
                    "the codes are distributed like the prior")
    row.metric("Codes in 95% ball", f"{100 * fit.inside_prior:.0f}%", width="content",
               help="Share of test codes inside the ball that holds 95% of N(0, I)")
    row.metric("Codes reached", f"{100 * fit.coverage:.0f}%", width="content",
               help=f"Share of test codes with a prior draw nearby ({100 * fit.prior_hits:.0f}% "
                    f"of the prior draws land near some code)")
    ui.show_verdict(compare_verdict(fit, is_vae, active_fit, n_dead))


def main() -> None:
    ui.page_header("Autoencoder vs VAE",
                   "Two runs with the same backbone, side by side. Both reconstruct; only "
                   "the VAE can **generate**, because its KL term makes the codes fill the "
                   "prior N(0, I) that we sample from.")
    app_shared.show_unopenable()  # damaged run folders, named with their problem
    entries = openable_runs(app_shared.runs_dir())
    if len(entries) < 2:
        st.info("This view needs two runs (e.g. demo-ae-z2 and demo-vae-z2: run "
                "`python -m training.demo`, or train them on the Train page).")
        return
    names = [e.name for e in entries]
    left_default, right_default = default_pair(entries)
    c1, c2 = st.columns(2)
    left = c1.selectbox("Left run", names, index=left_default, key="cmp_left")
    right = c2.selectbox("Right run", names, index=right_default, key="cmp_right")
    a, b = entries[names.index(left)], entries[names.index(right)]
    st.sidebar.caption(ui.UNITS_NOTE)
    if a.dataset != b.dataset:
        st.error(f"{md(a.name)} was trained on {md(a.dataset)} and {md(b.name)} on "
                 f"{md(b.dataset)}: "
                 f"reconstructions of the same inputs need runs on the same data set.")
        return
    images = ui.test_images(str(a.path))
    if images is None:
        return
    seed = int(st.sidebar.number_input("Prior-sample seed", 0, 10**6, 0, key="cmp_seed"))
    indices = pick_inputs(len(images), N_INPUTS, seed)
    st.markdown("**The same test inputs** (both runs share the data set's fixed split):")
    ui.show_grid(images[indices].numpy(), cols=N_INPUTS)
    left_col, right_col = st.columns(2, gap="large")
    with left_col:
        column(a, indices, seed, "left")
    with right_col:
        column(b, indices, seed, "right")


main()
