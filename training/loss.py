"""The whole ELBO: reconstruction term, closed-form KL, and the training objective.

Pure functions, no state. Every term is returned **per sample, in nats** (shape ``(B,)``),
summed over pixels or latent dimensions and *not* averaged over the batch; callers take
``.mean()`` for a batch average. The negative ELBO of one sample is

    -ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || p(z)),   p(z) = N(0, I),

estimated with one reparameterised sample z = mu + sigma * eps for the first term and
computed exactly for the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
DEFAULT_LOG_SIGMA = math.log(0.1)  # gaussian likelihood: pixel std 0.1 unless told otherwise


def reconstruction_nll(
    logits: torch.Tensor,  # (B, C, H, W) decoder output
    x: torch.Tensor,  # (B, C, H, W) data in [0, 1]
    likelihood: str = "bernoulli",
    log_sigma: torch.Tensor | float = DEFAULT_LOG_SIGMA,
    output: str = "logits",
) -> torch.Tensor:
    """-log p(x | z) per sample in nats, summed over pixels. Returns shape (B,).

    - ``bernoulli``: binary cross-entropy with logits. For grey-level pixels in [0, 1]
      this is the cross-entropy of a continuous target, not a normalised density
      (see the README's note on the ELBO of continuous pixels).
    - ``gaussian``: N(x; sigmoid(logits), sigma^2) per pixel, i.e. squared error
      scaled by 1 / (2 sigma^2) plus the normalising constant log sigma + log(2 pi) / 2.

    ``output`` says what the decoder returned (an imported model's, ``explorer/adopt.py``):
    ``logits`` (every model trained here), ``probabilities`` (binary cross-entropy on
    them, log clamped at -100 as ``F.binary_cross_entropy`` does) or ``mean`` (the
    Gaussian's mean itself).
    """
    if likelihood == "bernoulli":
        if output == "logits":
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_pixel = F.binary_cross_entropy(logits.clamp(0.0, 1.0), x, reduction="none")
    elif likelihood == "gaussian":
        log_sigma = torch.as_tensor(log_sigma, dtype=logits.dtype, device=logits.device)
        mean = torch.sigmoid(logits) if output == "logits" else logits
        per_pixel = 0.5 * ((x - mean) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * LOG_2PI
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")
    return per_pixel.flatten(1).sum(dim=1)  # (B,)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) for each latent dimension, in nats. Shape (B, D).

    Closed form from Kingma & Welling (2014), "Auto-Encoding Variational Bayes",
    Appendix B:  -1/2 * (1 + log sigma^2 - mu^2 - sigma^2).
    """
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())  # (B, D)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample in nats, summed over latent dimensions. Shape (B,)."""
    return kl_per_dim(mu, logvar).sum(dim=1)  # (B,)


@dataclass
class ElboTerms:
    """Per-sample terms, each of shape (B,), in nats."""

    recon: torch.Tensor  # -E_q[log p(x|z)], one-sample estimate
    kl: torch.Tensor  # KL(q(z|x) || p(z)), exact
    objective: torch.Tensor  # what the optimiser minimises: recon + beta * KL (with free bits)

    @property
    def neg_elbo(self) -> torch.Tensor:
        """-ELBO = recon + KL per sample (beta does not enter: this is the real bound)."""
        return self.recon + self.kl


def elbo_terms(
    logits: torch.Tensor,  # (B, C, H, W)
    x: torch.Tensor,  # (B, C, H, W)
    mu: torch.Tensor | None,  # (B, D); None for a plain autoencoder
    logvar: torch.Tensor | None,  # (B, D); None for a plain autoencoder
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    free_bits: float = 0.0,
    log_sigma: torch.Tensor | float = DEFAULT_LOG_SIGMA,
) -> ElboTerms:
    """Reconstruction, KL and the training objective, each per sample in nats.

    ``free_bits`` (lambda, nats per dimension) floors the *batch-average* KL of each
    dimension in the objective only (Kingma et al. 2016, "Improved Variational Inference
    with Inverse Autoregressive Flow", eq. 15): objective = recon + beta * sum_j
    max(lambda, mean_batch KL_j). The reported ``kl`` is always the true KL. For a plain
    autoencoder (``mu``/``logvar`` None) KL is zero and the objective is the reconstruction.
    """
    recon = reconstruction_nll(logits, x, likelihood, log_sigma)  # (B,)
    if mu is None or logvar is None:
        zero = torch.zeros_like(recon)
        return ElboTerms(recon=recon, kl=zero, objective=recon)
    per_dim = kl_per_dim(mu, logvar)  # (B, D)
    kl = per_dim.sum(dim=1)  # (B,)
    if free_bits > 0:
        floored = per_dim.mean(dim=0).clamp(min=free_bits).sum()  # scalar, batch-level
        # Spread the floored batch KL over samples so objective.mean() is the paper's loss.
        kl_for_objective = kl - kl.mean() + floored  # (B,)
    else:
        kl_for_objective = kl
    return ElboTerms(recon=recon, kl=kl, objective=recon + beta * kl_for_objective)


def beta_at(epoch_progress: float, beta: float, warmup_epochs: int) -> float:
    """KL weight after ``epoch_progress`` epochs (fractional): linear ramp 0 -> beta over
    ``warmup_epochs`` epochs, then constant. ``warmup_epochs == 0`` means no warm-up."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, max(0.0, epoch_progress) / warmup_epochs)
