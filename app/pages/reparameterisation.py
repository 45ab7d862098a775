"""Lesson 2: the reparameterisation trick, made visible. For the selected sample: mu,
sigma, a fresh eps and z = mu + sigma * eps drawn on the map; drawing a new eps moves z
and changes the decoded image; many draws show the posterior's spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import teaching as ui
from explorer.generation import enlarge, image_hwc, posterior, reparam_draws
from explorer.inference import available_projections, map_coords, place_on_map
from explorer.lesson_figures import ellipse_scale, reparam_map, reparam_zoom
from explorer.text import plot_text
from explorer.verdicts import reparam_note, spread_note

EPS_KEY = "reparam_eps_seed"
MAX_TABLE_DIMS = 16
# σ is always the posterior's standard deviation here; the squashing function gets its own
# name, s(·), so the two are never confused on a slide
DECODE_NOTE = {
    "logits": "σ: the posterior's standard deviation. decode(z) = s(f(z)) is the mean image: "
              "the decoder's output f(z) through the logistic sigmoid s(·).",
    "probabilities": "σ: the posterior's standard deviation. decode(z) is the mean image "
                     "the imported decoder outputs (probabilities per pixel).",
    "mean": "σ: the posterior's standard deviation. decode(z) is the mean image the imported "
            "decoder outputs (the Gaussian likelihood's mean).",
}


def new_eps() -> None:
    st.session_state[EPS_KEY] = int(st.session_state.get(EPS_KEY, 0)) + 1


def main() -> None:
    ui.page_header("The reparameterisation trick",
                   "The encoder outputs a distribution q(z|x) = N(μ, σ²), not a point. To "
                   "sample from it *and* still back-propagate into μ and σ, the VAE draws "
                   "noise ε ~ N(0, I) separately and computes **z = μ + σ · ε**: the "
                   "randomness sits in ε, the gradient flows through μ and σ "
                   "(Kingma & Welling 2014, §2.4).")
    opened = ui.open_vae_sample("there is nothing to sample, z is always the same code.")
    if opened is None:
        return
    path, run, latents, images, index = opened
    mus, logvars = posterior(run.model, images[index:index + 1])
    mu, logvar = mus[0], logvars[0]
    seed = int(st.session_state.get(EPS_KEY, 0))
    c1, c2 = st.columns([1, 3])
    c1.button("Draw a new ε", key="new_eps", on_click=new_eps, type="primary",
              icon=":material/casino:")
    n_draws = c2.slider("Draws to show the posterior's spread", 1, 64, 16, key="reparam_k")
    one = reparam_draws(run.model, mu, logvar, k=1, seed=seed)
    many = reparam_draws(run.model, mu, logvar, k=n_draws, seed=10_000 + seed)
    sigma, eps, z = one.sigma, one.eps[0], one.z[0]

    # numbers and images first, then the maps side by side: each gets half the page, so
    # a 1024x768 projector still shows the whole table and two readable maps
    st.subheader(f"Sample {index}: the numbers")
    numbers, pictures = st.columns([5, 4], gap="medium")
    with numbers:
        dims = min(len(mu), MAX_TABLE_DIMS)
        table = pd.DataFrame({"μ": mu[:dims], "σ": sigma[:dims], f"ε #{seed}": eps[:dims],
                              "z": z[:dims]},
                             index=[f"z{j}" for j in range(dims)])
        st.dataframe(table.style.format("{:+.3f}"), key="reparam_table")
        if len(mu) > dims:
            st.caption(f"First {dims} of {len(mu)} dimensions.")
        st.latex(r"z = \mu + \sigma \odot \varepsilon,\quad \varepsilon \sim \mathcal{N}(0, I)")
        st.caption(DECODE_NOTE.get(getattr(run.model, "decoder_output", "logits"),
                                   DECODE_NOTE["logits"]))
    with pictures:
        p1, p2, p3 = st.columns(3)
        p1.image(enlarge(image_hwc(images[index])), caption="input x", width="stretch",
                 output_format="PNG")
        p2.image(enlarge(image_hwc(one.mean_image)), caption="decode(μ)", width="stretch",
                 output_format="PNG")
        p3.image(enlarge(image_hwc(one.images[0])), caption=f"decode(z), ε #{seed}",
                 width="stretch", output_format="PNG")
        st.caption(reparam_note(one.change(), sigma))

    st.subheader("Where z lands")
    projection = available_projections(latents)[0]
    coords = map_coords(latents, projection)
    points = place_on_map(np.concatenate([mu[None], z[None], many.z]), latents, projection)
    sigmas = sigma[:2] if projection == "raw" and len(mu) == 2 else None
    fig = reparam_map(coords, latents["labels"], run.info.class_names, projection, index,
                      points, sigmas, seed)
    title = f"{plot_text(path.name)}, test sample {index}: z = μ + σ·ε"
    if sigmas is None:
        st.plotly_chart(fig, key="reparam_map")
        st.caption(f"○ μ of sample {index}; ★ z = μ + σ·ε; × {n_draws} more draws "
                   f"({projection.upper()} view: z placed like any code).")
        ui.download_figure(fig, f"{path.name}-reparameterisation-{index}", "dl_reparam_map",
                           title)
    else:
        whole, close = st.columns(2, gap="medium")
        with whole:
            st.plotly_chart(fig, key="reparam_map")
            times = ellipse_scale(sigmas, float(np.max(np.ptp(coords, axis=0))))
            st.caption(f"The whole map: ○ μ of sample {index}" + (
                f"; its 1σ/2σ ellipses are drawn {times} times their size, or they "
                f"would be too small to see (true size on the right)." if times > 1
                else "; the ellipses are q(z|x) at 1σ and 2σ."))
            ui.download_figure(fig, f"{path.name}-reparameterisation-{index}",
                               "dl_reparam_map", title)
        true_size = reparam_map(coords, latents["labels"], run.info.class_names,
                                projection, index, points, sigmas, seed, ellipse_times=1)
        zoom = reparam_zoom(true_size, points[0], sigmas, seed)
        with close:
            st.plotly_chart(zoom, key="reparam_zoom")
            st.caption(f"Zoomed to μ ± 3σ, true size: ★ z = μ + σ·ε, red line σ·ε, "
                       f"× {n_draws} more draws, ellipses at 1σ (solid) and 2σ (dotted) of "
                       f"q(z|x).")
            ui.download_figure(zoom, f"{path.name}-reparameterisation-zoom-{index}",
                               "dl_reparam_zoom", f"{title}, zoomed to μ ± 3σ")
    st.subheader(f"{n_draws} draws of z ~ q(z|x), decoded")
    ui.show_grid(many.images, cols=min(16, n_draws))
    st.caption(spread_note(many.pixel_spread) if n_draws > 1 else
               "One draw: pick more to see the posterior's spread.")
    ui.download_images(many.images, f"{path.name}-posterior-draws-{index}", "dl_reparam_draws")


main()
