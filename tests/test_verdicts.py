"""Every verdict a lesson page shows, branch by branch, from plain numbers
(``explorer/verdicts.py``): a healthy VAE, a VAE whose codes miss the prior, one that
misses it only through dead dimensions, a collapsed VAE, and an autoencoder. The pages
show exactly these (``tests/test_pages.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from explorer import verdicts
from explorer.compare import PriorFit, RatePoint, prior_fits
from explorer.diagnostics import latent_health


def fit(kl: float, hits: float, coverage: float, std: tuple[float, ...] = (1.0, 1.0)
        ) -> PriorFit:
    d = len(std)
    return PriorFit(latent_dim=d, code_mean=np.zeros(d), code_std=np.array(std),
                    gaussian_kl=kl, inside_prior=0.9, prior_hits=hits, coverage=coverage)


# --------------------------------------------------------------------------- compare

def test_a_vae_whose_codes_fill_the_prior_gets_a_green_box_with_its_numbers():
    kind, text = verdicts.compare_verdict(fit(0.08, 0.74, 0.76, (1.15, 1.19)), is_vae=True)
    assert kind == "success"
    assert "0.08 nats" in text and "74%" in text and "76%" in text and "1.1, 1.2" in text
    assert "prior samples look like the data" in text


def test_the_beta4_bug_a_vae_with_30_nats_and_0_percent_is_not_praised():
    """demo-vae-z16-beta4: 30.5 nats and 0% of draws reaching 1% of the codes. The box
    used to say the codes fill the prior because the run is a VAE."""
    bad = fit(30.54, 0.003, 0.011, (0.94, 0.95, 0.87, 0.03) + (0.03,) * 12)
    kind, text = verdicts.compare_verdict(bad, is_vae=True)
    assert kind == "warning"
    assert "do not fill" in text and "30.54 nats" in text and "0%" in text and "1%" in text
    assert "prior samples look like the data" not in text
    # with its dead dimensions named and the active ones fitting: an honest "info"
    active = fit(0.05, 0.885, 0.973, (0.94, 0.95, 0.87, 1.0, 0.98, 1.03))
    kind, text = verdicts.compare_verdict(bad, True, active_fit=active, n_dead=10)
    assert kind == "info"
    assert "do **not** fill" in text and "30.54 nats" in text and "10 dead dimensions" in text
    assert "6 active" in text and "0.05 nats" in text and "97%" in text
    # dead dimensions but the active ones miss the prior too: still a warning
    kind, _ = verdicts.compare_verdict(bad, True, active_fit=fit(5.0, 0.2, 0.3), n_dead=10)
    assert kind == "warning"


@pytest.mark.parametrize("kl,hits,coverage", [(1.5, 0.9, 0.9), (0.2, 0.3, 0.9),
                                              (0.2, 0.9, 0.4)])
def test_each_number_alone_can_turn_a_vae_verdict(kl, hits, coverage):
    assert verdicts.compare_verdict(fit(kl, hits, coverage), is_vae=True)[0] == "warning"
    assert not verdicts.fills_prior(fit(kl, hits, coverage))
    assert verdicts.fills_prior(fit(0.5, 0.6, 0.6))


def test_an_autoencoder_is_warned_about_or_told_it_was_lucky():
    kind, text = verdicts.compare_verdict(fit(22.42, 0.91, 0.57, (3.5, 6.0)), is_vae=False)
    assert kind == "warning"
    assert "never told" in text and "22.42 nats" in text and "only 57% of the codes" in text
    assert "land near any code" not in text  # 91% of draws do land near a code
    kind, text = verdicts.compare_verdict(fit(22.0, 0.2, 0.1), is_vae=False)
    assert kind == "warning" and "only 20% of draws" in text and "only 10%" in text
    kind, text = verdicts.compare_verdict(fit(0.3, 0.8, 0.9), is_vae=False)
    assert kind == "info" and "happen to overlap" in text and "80%" in text


def test_prior_fits_measures_active_dimensions_apart():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((600, 4))
    mu[:, 2:] *= 0.01  # two dead dimensions
    whole, active, n_dead = prior_fits(mu, is_vae=True)
    assert n_dead == 2 and active is not None and active.latent_dim == 2
    assert whole.gaussian_kl > 5 and active.gaussian_kl < 0.1
    assert verdicts.compare_verdict(whole, True, active, n_dead)[0] == "info"
    assert prior_fits(mu, is_vae=False)[1:] == (None, 0)  # an AE: no such excuse
    healthy, none, zero = prior_fits(rng.standard_normal((600, 3)), is_vae=True)
    assert none is None and zero == 0
    assert verdicts.compare_verdict(healthy, True)[0] == "success"


def test_prior_samples_note_follows_the_same_numbers():
    assert verdicts.prior_samples_note(fit(0.1, 0.8, 0.8), True)[0] == "success"
    kind, text = verdicts.prior_samples_note(fit(30.0, 0.0, 0.01), True)
    assert kind == "warning" and "1%" in text
    kind, text = verdicts.prior_samples_note(fit(30.0, 0.0, 0.01), True,
                                             fit(0.05, 0.9, 0.97), n_dead=10)
    assert kind == "info" and "10 are dead" in text and "97%" in text
    kind, text = verdicts.prior_samples_note(fit(22.4, 0.9, 0.57), False)
    assert kind == "warning" and "plain autoencoder" in text and "57%" in text


# --------------------------------------------------------------------------- latent health

def health(kl_scale: float, dead: int = 0, d: int = 4, spread: float | None = 0.8,
           is_vae: bool = True):
    """A latent space of d dimensions, ``dead`` of them squeezed to 0, whose posteriors
    carry about ``kl_scale`` nats per active dimension."""
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((400, d)) * np.sqrt(1 - np.exp(-2 * kl_scale))
    mu[:, d - dead:] *= 1e-3
    logvar = np.full((400, d), -2 * kl_scale) if is_vae else None
    if is_vae:
        logvar[:, d - dead:] = 0.0
    return latent_health(mu, logvar, spread)


def test_a_healthy_vae_is_praised_with_its_numbers():
    h = health(1.0)
    (kind, text), = verdicts.health_verdicts(h)
    assert kind == "success"
    assert f"{h.total_kl:.2f} nats" in text and "4 of 4 dimensions are active" in text
    assert "80% as much as the inputs" in text
    (kind, text), = verdicts.health_verdicts(health(1.0, spread=None))
    assert kind == "success" and "not measured" in text and "vary" not in text.split(",")[-1]


def test_a_collapsed_vae_gets_only_warnings():
    h = health(0.001, dead=4, spread=0.02)
    out = verdicts.health_verdicts(h)
    assert {k for k, _ in out} == {"warning"}
    text = " ".join(t for _, t in out)
    assert "Posterior collapse" in text and "Most latent dimensions are dead" in text
    assert "near the data mean" in text
    assert [t for _, t in out] == h.warnings
    dead_some = verdicts.health_verdicts(health(1.0, dead=1))
    assert [k for k, _ in dead_some] == ["warning"] and "1 of 4" in dead_some[0][1]


def test_an_autoencoder_is_told_what_does_not_apply():
    out = verdicts.health_verdicts(health(1.0, is_vae=False))
    assert [k for k, _ in out] == ["success", "info"]
    assert "no collapse" not in out[0][1] and "KL" not in out[0][1]
    assert "no KL term" in out[1][1]
    out = verdicts.health_verdicts(health(1.0, dead=3, is_vae=False))
    assert [k for k, _ in out] == ["warning", "info"]


def test_traversal_note_names_the_dead_rows():
    h = health(1.0, dead=2)
    note = verdicts.traversal_note(h, h.kl_order())
    assert "2 of these 4 rows" in note and "z2" in note and "z3" in note
    assert "None of these rows" in verdicts.traversal_note(h, h.kl_order()[:2])


# --------------------------------------------------------------------------- reparam, beta

def test_reparam_notes_follow_the_measured_change():
    narrow = verdicts.reparam_note(0.001, np.array([0.067, 0.043]))
    assert "barely changes" in narrow and "0.043 and 0.067" in narrow
    wide = verdicts.reparam_note(0.08, np.array([0.9]))
    assert "so does the image" in wide and "σ = 0.9" in wide
    assert "near-identical" in verdicts.spread_note(0.009)
    assert "visibly different" in verdicts.spread_note(0.05)


def test_rate_distortion_note_names_the_best_bound():
    def point(name, rate, dist):
        return RatePoint(name, name, "vae", 1.0, 0, 2, "mnist5k", dist, rate, 2)

    points = [point("a", 6.2, 143.7), point("b", 22.8, 87.3), point("c", 7.5, 120.1)]
    note = verdicts.rate_distortion_note(points)
    assert note.startswith("Best bound: b (−ELBO 110.1 nats).")
    assert "Most information in z: b (22.8 nats" in note
    assert verdicts.rate_distortion_note(points[:1]) == "Best bound: a (−ELBO 149.9 nats)."
    assert verdicts.rate_distortion_note([]) == ""
