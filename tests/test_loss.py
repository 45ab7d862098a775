"""The ELBO's maths against independent references (torch.distributions, hand sums)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from training.loss import (
    beta_at,
    elbo_terms,
    kl_per_dim,
    reconstruction_nll,
)
from training.loss import (
    kl_divergence as closed_form_kl,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(16, 5, generator=g) * 2  # (B, D)
    logvar = torch.randn(16, 5, generator=g)  # (B, D)
    logits = torch.randn(16, 1, 6, 6, generator=g) * 3  # (B, C, H, W)
    x = torch.rand(16, 1, 6, 6, generator=g)  # (B, C, H, W) grey levels in [0, 1]
    return mu, logvar, logits, x


def test_kl_matches_torch_distributions(batch):
    mu, logvar, _, _ = batch
    q = Normal(mu, (0.5 * logvar).exp())
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    reference = kl_divergence(q, p)  # (B, D)
    torch.testing.assert_close(kl_per_dim(mu, logvar), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(closed_form_kl(mu, logvar), reference.sum(1), rtol=1e-5, atol=1e-5)


def test_kl_is_non_negative_and_zero_only_at_the_prior(batch):
    mu, logvar, _, _ = batch
    assert (closed_form_kl(mu, logvar) >= 0).all()
    zero = torch.zeros(3, 4)
    assert torch.equal(closed_form_kl(zero, zero), torch.zeros(3))
    assert (closed_form_kl(zero + 1e-3, zero) > 0).all()


def test_bernoulli_recon_is_summed_bce_per_sample(batch):
    _, _, logits, x = batch
    x_binary = (x > 0.5).float()
    reference = -Bernoulli(logits=logits).log_prob(x_binary).flatten(1).sum(1)  # (B,)
    got = reconstruction_nll(logits, x_binary)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-4)
    # continuous targets: cross-entropy by hand
    p = torch.sigmoid(logits)
    by_hand = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(logits, x), by_hand, rtol=1e-4, atol=1e-3)


def test_gaussian_recon_is_a_normal_log_density(batch):
    _, _, logits, x = batch
    sigma = 0.2
    reference = -Normal(torch.sigmoid(logits), sigma).log_prob(x).flatten(1).sum(1)
    got = reconstruction_nll(logits, x, "gaussian", math.log(sigma))
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-4)


def test_elbo_is_recon_plus_kl_per_sample(batch):
    mu, logvar, logits, x = batch
    terms = elbo_terms(logits, x, mu, logvar)
    assert terms.recon.shape == terms.kl.shape == (16,)
    torch.testing.assert_close(terms.neg_elbo, terms.recon + terms.kl)
    torch.testing.assert_close(terms.objective, terms.recon + terms.kl)  # beta = 1
    weighted = elbo_terms(logits, x, mu, logvar, beta=4.0)
    torch.testing.assert_close(weighted.objective, terms.recon + 4.0 * terms.kl)
    torch.testing.assert_close(weighted.neg_elbo, terms.neg_elbo)  # beta never enters the bound


def test_free_bits_floors_each_dimension_in_the_objective_only():
    mu = torch.zeros(4, 3)
    mu[:, 0] = 3.0  # dim 0 carries KL 4.5 nats, dims 1-2 none
    logvar = torch.zeros(4, 3)
    logits, x = torch.zeros(4, 1, 2, 2), torch.full((4, 1, 2, 2), 0.5)
    terms = elbo_terms(logits, x, mu, logvar, free_bits=0.5)
    torch.testing.assert_close(terms.kl, torch.full((4,), 4.5))  # the true KL is reported
    torch.testing.assert_close(terms.objective.mean(), terms.recon.mean() + 4.5 + 2 * 0.5)


def test_autoencoder_has_no_kl(batch):
    _, _, logits, x = batch
    terms = elbo_terms(logits, x, None, None)
    assert torch.equal(terms.kl, torch.zeros(16))
    torch.testing.assert_close(terms.objective, terms.recon)


def test_unknown_likelihood_is_a_clear_error(batch):
    _, _, logits, x = batch
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        reconstruction_nll(logits, x, "poisson")


def test_beta_warmup_is_linear_then_constant():
    assert beta_at(0.0, 2.0, 4) == 0.0
    assert beta_at(1.0, 2.0, 4) == pytest.approx(0.5)
    assert beta_at(4.0, 2.0, 4) == 2.0
    assert beta_at(9.0, 2.0, 4) == 2.0
    assert beta_at(0.0, 2.0, 0) == 2.0
