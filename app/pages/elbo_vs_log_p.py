"""Lesson 3: ELBO <= log p(x). An importance-weighted estimate of log p(x) with K samples
(Burda et al. 2015) next to the ELBO, for the selected sample and over the test set."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from explorer.generation import enlarge, image_hwc
from explorer.iwae import estimate_bounds
from explorer.iwae import sample_curve as iwae_sample_curve
from explorer.lesson_charts import gap_histogram, iwae_curve_figure
from explorer.runs import file_stamp
from explorer.text import plot_text
from training import rundir

K_CHOICES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
K_DRAWS = 1000  # draws for the one-sample curve: E[IWAE_k] averages 1000 / k blocks
MAIN_PAGE_SAMPLES = app_shared.MC_SAMPLES  # draws behind the main page's ELBO panel
MEANING = """
**What the number means.** log p(x) is the log-likelihood of the image under the model,
in nats. The ELBO is a lower bound on it; the gap is KL(q(z|x) ‖ p(z|x)), how far the
encoder's posterior is from the true one. The importance-weighted bound
IWAE_K = log (1/K) Σₖ p(x, zₖ) / q(zₖ|x) is also a lower bound, never below the ELBO
(here both use the same K draws, so IWAE_K ≥ ELBO_K for every image), and it climbs to
log p(x) as K grows. When q is the exact posterior every weight equals p(x) and the gap is
zero.

**A caveat on the absolute value.** These pixels are grey levels in [0, 1] scored with a
*Bernoulli* likelihood, i.e. a binary cross-entropy. For a non-binary target that is a
cross-entropy objective, not a normalised density of continuous images, so "log p(x)"
here is not comparable with likelihoods reported for binarised MNIST or for dequantised
images in bits per dimension. The lesson is the *gap*, ELBO vs IWAE, on one model.
"""


@st.cache_data(show_spinner="Importance sampling…", max_entries=32)
def sample_curve(path: str, index: int, ks: tuple[int, ...], seed: int, _stamp: float):
    """[(k, ELBO, E[IWAE_k])] for one test image, all from the same max(ks) draws."""
    run = app_shared.get_run(path)
    x = app_shared.get_test_images(path)[index:index + 1]
    return iwae_sample_curve(run.model, x, ks, run.info.config.likelihood, seed)


@st.cache_data(show_spinner="Estimating over the test set…", max_entries=16)
def test_set_bounds(path: str, k: int, n: int, seed: int, _stamp: float):
    run = app_shared.get_run(path)
    x = app_shared.get_test_images(path)[:n]
    return estimate_bounds(run.model, x, k, run.info.config.likelihood, seed=seed)


def mc_note(elbo: float) -> str:
    """Why this page's ELBO of a sample differs a little from the main page's."""
    return (f"Monte-Carlo estimates from {K_DRAWS:,} draws z ~ q(z|x) of this image "
            f"(ELBO {elbo:.2f} nats). The main page's ELBO of the same sample uses "
            f"{MAIN_PAGE_SAMPLES} draws (and the KL in closed form), so the two values differ "
            f"by Monte-Carlo noise (the main page shows its standard error); with "
            f"{K_DRAWS / MAIN_PAGE_SAMPLES:.0f}x as many draws this one is the more precise.")


def main() -> None:
    ui.page_header("ELBO ≤ log p(x)",
                   "The ELBO is what a VAE maximises, but it is only a lower bound on the "
                   "log-likelihood log p(x). Importance weighting with K posterior samples "
                   "(Burda et al., 2015) gives a tighter bound: watch it rise above the ELBO "
                   "as K grows.")
    opened = ui.open_vae_sample("without q(z|x) and a prior there is no ELBO and no bound.")
    if opened is None:
        return
    path, run, _, images, index = opened
    c1, c2, c3 = st.columns(3)
    k = int(c1.select_slider("K, importance samples", K_CHOICES, value=100, key="iwae_k"))
    n_max = len(images)
    n = int(c2.select_slider("Test images averaged", sorted({min(n_max, v) for v in
                                                             (100, 250, 500, 1000, n_max)}),
                             value=min(250, n_max), key="iwae_n"))
    seed = int(c3.number_input("Seed", 0, 10**6, 0, key="iwae_seed"))
    if k * n >= 200_000:
        st.caption(f"K × images = {k * n:,} decoder passes: this can take a minute on a CPU "
                   f"(results are cached).")
    stamp = file_stamp(path, rundir.WEIGHTS_FILE)

    curve = sample_curve(str(path), index, tuple(K_CHOICES), seed, stamp)
    one = next(p for p in curve if p[0] == k)
    st.subheader(f"Test sample {index}")
    row = ui.metric_row()
    row.image(enlarge(image_hwc(images[index]), 96), caption=f"sample {index}",
              output_format="PNG", width=96)
    row.metric("ELBO (nats)", f"{one[1]:.2f}", width="content",
               help=f"Mean of the {K_DRAWS} log weights log p(x, z_k) − log q(z_k|x)")
    row.metric(f"log p(x) ≈ IWAE, K={k} (nats)", f"{one[2]:.2f}", width="content",
               help=f"IWAE_{k} averaged over {K_DRAWS // k} disjoint blocks of {k} draws")
    row.metric("gap IWAE − ELBO (nats)", f"{one[2] - one[1]:.2f}", width="content")
    st.caption(mc_note(one[1]))
    fig = iwae_curve_figure(curve, k)
    st.plotly_chart(fig, key="iwae_curve")
    st.caption(f"From {K_DRAWS} draws z_k ~ q(z|x) of this image: IWAE_K is averaged over the "
               f"{K_DRAWS}/K disjoint blocks of K draws. IWAE_1 is the ELBO; IWAE_K rises with "
               f"K towards log p(x). The ELBO does not depend on K. The dotted line marks "
               f"the chosen K.")
    ui.download_figure(fig, f"{path.name}-iwae-sample-{index}", "dl_iwae_curve",
                       f"{plot_text(path.name)}, test sample {index}: IWAE_K and the ELBO")

    st.subheader(f"Averaged over the first {n} test images")
    bounds = test_set_bounds(str(path), k, n, seed, stamp)
    st.session_state["_iwae_summary"] = (str(path), stamp, bounds)
    row = ui.metric_row()
    row.metric("mean ELBO (nats)", f"{bounds.elbo.mean():.2f}", width="content")
    row.metric(f"mean IWAE, K={k} (nats)", f"{bounds.iwae.mean():.2f}", width="content")
    row.metric("mean gap (nats)", f"{bounds.gap.mean():.2f}", width="content")
    row.metric("images with IWAE ≥ ELBO",
               f"{int((bounds.gap >= -1e-9).sum())}/{len(bounds.gap)}", width="content")
    hist = gap_histogram(bounds.gap)
    st.plotly_chart(hist, key="iwae_hist")
    ui.download_figure(hist, f"{path.name}-iwae-gap-histogram", "dl_iwae_hist",
                       f"{plot_text(path.name)}: IWAE − ELBO, K={k}, {n} test images")
    if len(bounds.gap):
        worst = int(np.argmax(bounds.gap))
        st.caption(f"Largest gap: test image {worst} ({bounds.gap[worst]:.2f} nats): its "
                   f"posterior is the one q(z|x) approximates worst.")
    st.markdown(MEANING)


main()
