"""Lesson 6: generation. Prior samples; the decoded manifold over a grid of two latent
dimensions drawn under the latent map; linear and spherical interpolation between two
samples; a traversal grid (one row per dimension, -3..3, rows ordered by KL)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import teaching as ui
from explorer.compare import prior_fits
from explorer.diagnostics import latent_health
from explorer.generation import (
    default_span,
    encode_means,
    interpolate,
    labelled_rows,
    prior_samples,
    traversal,
)
from explorer.lesson_figures import manifold_figure
from explorer.text import plot_text
from explorer.verdicts import prior_samples_note, traversal_note

SEED_KEY = "gen_seed"


@st.cache_data(show_spinner=False, max_entries=16)
def prior_fit_of(mu: np.ndarray, is_vae: bool):
    return prior_fits(mu, is_vae)


def reseed() -> None:
    st.session_state[SEED_KEY] = int(st.session_state.get(SEED_KEY, 0)) + 1


def main() -> None:
    ui.page_header("Generation",
                   "What the decoder does with codes nobody encoded: draws from the prior, "
                   "the whole manifold over a grid, paths between two images, and one "
                   "dimension at a time.")
    opened = ui.open_picked_run()
    if opened is None:
        return
    path, run, latents = opened
    st.sidebar.caption(ui.UNITS_NOTE)
    dim = run.model.latent_dim
    seed = int(st.session_state.get(SEED_KEY, 0))
    tab_prior, tab_manifold, tab_interp, tab_trav = st.tabs(
        ["Prior samples", "Manifold", "Interpolation", "Traversals"])

    with tab_prior:
        c1, c2 = st.columns([1, 3])
        c1.button("New samples", key="gen_reseed", on_click=reseed, icon=":material/casino:")
        side = c2.slider("Grid size", 2, 12, 8, key="gen_prior_side")
        _, samples = prior_samples(run.model, side * side, seed)
        ui.show_grid(samples, cols=side)
        st.caption(f"{side * side} decoded draws z ~ N(0, I) (seed {seed}): means of "
                   f"p(x|z), not binarised samples.")
        fit, active_fit, n_dead = prior_fit_of(latents["mu"], run.model.is_vae)
        ui.show_verdict(prior_samples_note(fit, run.model.is_vae, active_fit, n_dead))
        ui.download_images(samples, f"{path.name}-prior-samples-{seed}", "dl_gen_prior",
                           cols=side)

    with tab_manifold:
        if dim < 2:
            st.info("The manifold needs at least two latent dimensions.")
        else:
            health = latent_health(latents["mu"], latents.get("logvar"))
            order = [0, 1] if dim == 2 else health.kl_order()
            c1, c2, c3, c4 = st.columns(4)
            d1 = c1.selectbox("x axis", range(dim), index=order[0], key="gen_dx",
                              format_func=lambda j: f"z{j}")
            d2 = c2.selectbox("y axis", range(dim), index=order[1], key="gen_dy",
                              format_func=lambda j: f"z{j}")
            n = c3.slider("Grid points per side", 5, 25, 15, key="gen_n")
            span = c4.number_input("Half-width of the grid", 0.5, 100.0,
                                   default_span(latents["mu"], (d1, d2), run.model.is_vae),
                                   0.5, key=f"gen_span_{run.model.is_vae}")
            if d1 == d2:
                st.warning("Pick two different dimensions for the axes.")
            else:
                base = np.zeros(dim, np.float32)
                fig, grid = manifold_figure(run.model, latents["mu"], latents["labels"],
                                            run.info.class_names, (d1, d2), n, float(span),
                                            base)
                st.plotly_chart(fig, key="gen_manifold")
                rest = "" if dim == 2 else " The other dimensions are held at 0 (the prior mean)."
                st.caption(f"Each tile is decode(z) at its grid position; the dots are the test "
                           f"set's μ(x) on the same axes.{rest}")
                ui.download_figure(fig, f"{path.name}-manifold-z{d1}-z{d2}", "dl_manifold",
                                   f"{plot_text(path.name)}: decoded manifold over z{d1}, z{d2}")
                ui.download_images(grid, f"{path.name}-manifold-grid-z{d1}-z{d2}",
                                   "dl_manifold_grid", label="grid PNG")

    images = ui.test_images(path)
    with tab_interp:
        if images is not None:
            n_img = len(images)
            default_a = int(st.session_state.get(ui.SAMPLE_KEY, 0)) % n_img
            c1, c2, c3 = st.columns(3)
            a = int(c1.number_input("From test sample", 0, n_img - 1, default_a, key="gen_a"))
            b = int(c2.number_input("To test sample", 0, n_img - 1,
                                    (default_a + 1) % n_img, key="gen_b"))
            steps = c3.slider("Steps", 3, 16, 10, key="gen_steps")
            za, zb = encode_means(run.model, images[[a, b]])
            rows = []
            for method in ("lerp", "slerp"):
                _, imgs = interpolate(run.model, za, zb, steps, method)
                rows.append(imgs)
            grid = np.stack(rows)  # (2, steps, C, H, W)
            ends = np.stack([images[a].numpy(), images[b].numpy()])
            e1, e2 = st.columns([1, 8])
            with e1:
                ui.show_grid(ends, cols=1, width=80)
                st.caption("inputs")
            with e2:
                ui.show_grid(grid, cols=steps)
                st.caption("Top: linear (1−t)·μ_a + t·μ_b. Bottom: spherical (slerp), which "
                           "keeps the norm of the path typical of N(0, I) instead of cutting "
                           "through the low-density centre. Both ends are decode(μ): the "
                           "reconstructions of the two inputs.")
            ui.download_images(grid, f"{path.name}-interpolation-{a}-{b}", "dl_interp",
                               cols=steps)

    with tab_trav:
        health = latent_health(latents["mu"], latents.get("logvar"))
        order = health.kl_order()
        c1, c2, c3 = st.columns(3)
        rows_n = c1.slider("Dimensions (rows)", 1, min(dim, 16), min(dim, 8), key="gen_rows")
        cols_n = c2.slider("Values per row", 5, 15, 9, key="gen_vals")
        start = c3.radio("Start from", ["the prior mean (z = 0)", "the selected sample's μ"],
                         key="gen_base", horizontal=False)
        base = np.zeros(dim, np.float32)
        if start.startswith("the selected") and images is not None:
            index = int(st.session_state.get(ui.SAMPLE_KEY, 0)) % len(images)
            base = encode_means(run.model, images[[index]])[0]
        dims = order[:rows_n]
        values, trav = traversal(run.model, base, dims, np.linspace(-3, 3, cols_n))
        key = "KL" if health.is_vae else "Var μ"
        row_labels = [f"z{j} · {key} {health.information[j]:.2f}"
                      + (" (dead)" if health.dead[j] else "") for j in dims]
        picture = labelled_rows(trav, row_labels, [f"{v:+.1f}" for v in values])
        st.image(picture, width="content", clamp=True, output_format="PNG")
        st.caption(f"Row r sweeps one dimension from −3 to 3 ({cols_n} values, written above "
                   f"the columns), the others fixed; each row is labelled with its dimension "
                   f"and its {'mean KL (nats)' if health.is_vae else 'Var μ over the data'}, "
                   f"most informative first. {traversal_note(health, dims)}")
        ui.download_picture(picture, f"{path.name}-traversal", "dl_trav")


main()
