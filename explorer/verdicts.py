"""What the lesson pages *say* about a model, computed from the numbers they show.

Every verdict box on a lesson page (``st.success`` / ``st.warning`` / ``st.info``) comes
from one of these pure functions: numbers in, ``(kind, text)`` out, where ``kind`` is
``"success"``, ``"warning"`` or ``"info"``. The page only picks the Streamlit call by
``kind``. So a page can never praise a model whose numbers say otherwise, and every branch
is tested with plain numbers (``tests/test_verdicts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from explorer.compare import PriorFit, RatePoint
from explorer.diagnostics import ACTIVE_THRESHOLD, LatentHealth

Verdict = tuple[str, str]  # (kind: "success" | "warning" | "info", text)

GOOD_FIT_NATS = 1.0  # a Gaussian fitted to the codes at most this far from N(0, I)
GOOD_REACH = 0.5  # at least this share of prior draws near a code, and of codes reached
SAME_IMAGE = 0.01  # mean per-pixel change (grey levels 0..1) below this: "barely changes"


def fills_prior(fit: PriorFit) -> bool:
    """The codes sit like N(0, I): a Gaussian fitted to them is close to it, and prior
    draws land near codes and reach most of them."""
    return (fit.gaussian_kl <= GOOD_FIT_NATS and fit.prior_hits >= GOOD_REACH
            and fit.coverage >= GOOD_REACH)


def _stds(fit: PriorFit) -> str:
    return ", ".join(f"{s:.2g}" for s in fit.code_std[:4]) + (" ..." if fit.latent_dim > 4
                                                               else "")


def _numbers(fit: PriorFit) -> str:
    return (f"a Gaussian fitted to the codes is {fit.gaussian_kl:.2f} nats from N(0, I) "
            f"(per-dimension std {_stds(fit)}; the prior has 1), "
            f"{100 * fit.prior_hits:.0f}% of draws from N(0, I) land near a code and they "
            f"reach {100 * fit.coverage:.0f}% of the codes")


def compare_verdict(fit: PriorFit, is_vae: bool, active_fit: PriorFit | None = None,
                    n_dead: int = 0) -> Verdict:
    """The *Compare AE vs VAE* box under one run: do draws from N(0, I) land where the
    codes (posterior means) are? ``active_fit``: the same measures on the VAE's active
    dimensions only (when ``n_dead`` of its dimensions are dead)."""
    hits, cover = 100 * fit.prior_hits, 100 * fit.coverage
    if is_vae and fills_prior(fit):
        return "success", (
            f"The KL term pulls every posterior towards N(0, I), and here the codes fill the "
            f"prior: {_numbers(fit)}. So prior samples look like the data and show its "
            f"variety.")
    if is_vae and n_dead and active_fit is not None and fills_prior(active_fit):
        return "info", (
            f"Measured on all {fit.latent_dim} dimensions the codes do **not** fill the "
            f"prior: {_numbers(fit)}. That is the {n_dead} dead dimensions: their means sit "
            f"near 0 for every input while N(0, I) spreads them with std 1, so in "
            f"{fit.latent_dim}-D no draw comes close to any code. The decoder ignores those "
            f"dimensions, though. On the {fit.latent_dim - n_dead} active ones the codes are "
            f"{active_fit.gaussian_kl:.2f} nats from N(0, I) and draws reach "
            f"{100 * active_fit.coverage:.0f}% of the codes, so prior samples can still look "
            f"like the data; see Latent health for the dead dimensions.")
    if is_vae:
        return "warning", (
            f"The KL term pulls every posterior towards N(0, I), but this run's codes do not "
            f"fill it: {_numbers(fit)}. Prior draws that land away from every code decode "
            f"from regions the decoder was hardly trained on: expect blurs and less variety "
            f"than the data (more epochs, a larger β or a warm-up usually help).")
    text = (f"A plain autoencoder is never told where its codes should live: nothing in its "
            f"loss mentions N(0, I). Its codes have per-dimension std {_stds(fit)} (the prior "
            f"has 1), and a Gaussian fitted to them is {fit.gaussian_kl:.2f} nats from "
            f"N(0, I).")
    problems = []
    if fit.prior_hits < GOOD_REACH:
        problems.append(f"only {hits:.0f}% of draws z ~ N(0, I) land near any code; the rest "
                        f"decode from regions the decoder never saw (blurs, noise)")
    if fit.coverage < 0.7:
        problems.append(f"the draws reach only {cover:.0f}% of the codes: the \"samples\" "
                        f"show a small part of the data (whatever sits near the origin), "
                        f"over and over")
    if problems:
        return "warning", (f"{text} So {' and '.join(problems)}. That is the difference the "
                           f"KL term makes.")
    return "info", (f"{text} Here the codes happen to overlap the prior ({hits:.0f}% of draws "
                    f"land near a code, {cover:.0f}% of the codes reached), but nothing in "
                    f"training made them: another seed could put them anywhere. The KL term "
                    f"is what guarantees it.")


def prior_samples_note(fit: PriorFit, is_vae: bool, active_fit: PriorFit | None = None,
                       n_dead: int = 0) -> Verdict:
    """One sentence under the *Generation* page's prior samples: should they look like the
    data, by the same measures as :func:`compare_verdict`?"""
    reach = f"draws from N(0, I) reach {100 * fit.coverage:.0f}% of the test codes"
    if not is_vae:
        return "warning", (f"This is a plain autoencoder: its codes were never fitted to "
                           f"N(0, I) ({reach}; fit {fit.gaussian_kl:.1f} nats), so these are "
                           f"not samples of anything (see Autoencoder vs VAE).")
    if fills_prior(fit):
        return "success", (f"The codes fill the prior ({reach}; fit {fit.gaussian_kl:.2f} "
                           f"nats), so these draws should look like the data.")
    if n_dead and active_fit is not None and fills_prior(active_fit):
        return "info", (f"On all dimensions {reach}, because {n_dead} are dead (the decoder "
                        f"ignores them); on the active ones draws reach "
                        f"{100 * active_fit.coverage:.0f}%, so these draws can still look "
                        f"like the data.")
    return "warning", (f"Only a part of the prior is covered by codes ({reach}; fit "
                       f"{fit.gaussian_kl:.1f} nats): expect some blurry draws.")


def health_verdicts(health: LatentHealth) -> list[Verdict]:
    """The *Latent health* boxes: one warning per problem found, else one success that
    says which numbers make the run healthy; an autoencoder adds what cannot be tested."""
    out: list[Verdict] = [("warning", w) for w in health.warnings]
    if not out:
        spread = ("the reconstructions' spread was not measured (no test images)"
                  if health.recon_spread is None else
                  f"the reconstructions vary {100 * health.recon_spread:.0f}% as much as "
                  f"the inputs")
        weak = (f" ({len(health.weak_dims)} of them weak: less than 0.01 nats of KL)"
                if health.weak_dims else "")
        dims = (f"{health.active_units} of {health.latent_dim} dimensions are active "
                f"(Var μ > {ACTIVE_THRESHOLD}){weak}")
        if health.is_vae:
            out.append(("success", f"Healthy: the KL term is {health.total_kl:.2f} nats per "
                                   f"sample (no collapse), {dims}, and {spread}."))
        else:
            out.append(("success", f"Every code dimension is used: {dims}, and {spread}."))
    if not health.is_vae:
        out.append(("info", "A plain autoencoder has no KL term, so posterior collapse "
                            "cannot happen and only the variance test applies."))
    return out


def traversal_note(health: LatentHealth, dims: Sequence[int]) -> str:
    """What the traversal rows ``dims`` should show, from the health numbers."""
    dead = [j for j in dims if health.dead[j]]
    if not dead:
        return ("None of these rows is a dead dimension, so every row should change the "
                "image (the lower the KL, the less).")
    names = ", ".join(f"z{j}" for j in dead)
    return (f"{len(dead)} of these {len(dims)} rows are dead dimensions ({names}): their "
            f"images should stay (nearly) the same along the row.")


def reparam_note(change: float, sigma: np.ndarray) -> str:
    """What a new ε does to decode(z) for this posterior (``change``: mean per-pixel
    difference between decode(z) and decode(μ), grey levels 0..1)."""
    s = np.asarray(sigma, dtype=np.float64)
    size = f"σ between {s.min():.2g} and {s.max():.2g}" if len(s) > 1 else f"σ = {s[0]:.2g}"
    if change < SAME_IMAGE:
        return (f"decode(z) differs from decode(μ) by only {change:.3f} per pixel on average "
                f"(grey levels 0..1): this posterior is narrow ({size}), so z stays close to "
                f"μ and the image barely changes. Draw a new ε: z still moves, a little.")
    return (f"decode(z) differs from decode(μ) by {change:.3f} per pixel on average (grey "
            f"levels 0..1; {size}). Draw a new ε: z moves, and so does the image.")


def spread_note(pixel_spread: float) -> str:
    """The caption under the grid of decoded posterior draws."""
    how = ("near-identical images: a confident encoder (small σ)" if pixel_spread < SAME_IMAGE
           else "visibly different images: an uncertain posterior")
    return (f"Each image is decode(μ + σ·ε) for its own ε. Pixel standard deviation across "
            f"the draws: {pixel_spread:.3f} on average, i.e. {how}. This is the "
            f"posterior's spread, seen in image space.")


def rate_distortion_note(points: Sequence[RatePoint]) -> str:
    """Which run has the best bound and which sits where, for the β lesson."""
    if not points:
        return ""
    best = min(points, key=lambda p: p.neg_elbo)
    most = max(points, key=lambda p: p.rate)
    sharp = min(points, key=lambda p: p.distortion)
    text = f"Best bound: {best.name} (−ELBO {best.neg_elbo:.1f} nats)."
    if len(points) > 1:
        text += (f" Most information in z: {most.name} ({most.rate:.1f} nats of KL); "
                 f"sharpest reconstructions: {sharp.name} ({sharp.distortion:.1f} nats).")
    return text
