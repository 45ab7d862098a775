"""Importance-weighted estimate of log p(x) next to the ELBO (Burda et al. 2015).

With K posterior samples z_k ~ q(z|x) and log weights
``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``:

    ELBO_K  = mean_k log w_k                     (Monte-Carlo ELBO, unbiased)
    IWAE_K  = logsumexp_k log w_k - log K        (a tighter lower bound on log p(x))

Both come from the *same* weights, so IWAE_K >= ELBO_K holds sample by sample (Jensen on
the empirical mean), IWAE_1 == ELBO_1, E[IWAE_K] grows with K towards log p(x), and when
q(z|x) is the exact posterior every weight equals p(x): gap zero. All values are per
sample, in nats. For grey-level pixels under a Bernoulli likelihood, log p(x|z) is a
cross-entropy, not a normalised density of continuous images: compare the gap, not the
absolute number with likelihoods reported on binarised or dequantised MNIST.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from explorer.generation import LatentModel
from training.loss import LOG_2PI, reconstruction_nll

LogLikelihood = Callable[[torch.Tensor], torch.Tensor]  # z (k, B, D) -> log p(x|z) (k, B)
MAX_PIXELS_PER_CHUNK = 4_000_000  # decoded pixels held at once: bounds memory at any K


@dataclass
class BoundEstimate:
    """Per-sample estimates in nats, shape (B,) each (numpy)."""

    elbo: np.ndarray  # mean_k log w_k
    iwae: np.ndarray  # logsumexp_k log w_k - log K
    num_samples: int  # K

    @property
    def gap(self) -> np.ndarray:
        """IWAE_K - ELBO_K >= 0: how much tighter the importance-weighted bound is."""
        return self.iwae - self.elbo


def normal_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension. (..., D) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension. (..., D) -> (...)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


def importance_log_weights(log_likelihood: LogLikelihood, mu: torch.Tensor,
                           logvar: torch.Tensor, num_samples: int,
                           generator: torch.Generator | None = None,
                           chunk: int | None = None) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k = mu + sigma * eps_k.

    ``mu``, ``logvar``: (B, D) posterior parameters; ``log_likelihood`` maps z (k, B, D)
    to log p(x|z) (k, B). Samples are drawn ``chunk`` at a time. Returns (K, B).
    """
    if num_samples < 1:
        raise ValueError(f"the number of importance samples K must be at least 1, "
                         f"got {num_samples}")
    chunk = max(1, min(chunk or num_samples, num_samples))
    sigma = (0.5 * logvar).exp()  # (B, D)
    out = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype,
                          device=mu.device)  # (k, B, D)
        z = mu + sigma * eps  # (k, B, D)
        log_q = normal_log_density(z, mu, logvar)  # (k, B)
        log_prior = standard_normal_log_density(z)  # (k, B)
        out.append(log_likelihood(z) + log_prior - log_q)  # (k, B)
    return torch.cat(out, dim=0)  # (K, B)


def bounds_from_log_weights(log_w: torch.Tensor) -> BoundEstimate:
    """ELBO_K and IWAE_K from log weights (K, B)."""
    k = log_w.shape[0]
    log_w = log_w.double()
    iwae = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
    elbo = log_w.mean(dim=0)  # (B,)
    return BoundEstimate(elbo=elbo.cpu().numpy(), iwae=iwae.cpu().numpy(), num_samples=k)


def iwae_curve(log_w: torch.Tensor, ks: list[int]) -> np.ndarray:
    """E[IWAE_k] for each k in ``ks`` from one set of log weights (K_total, B): the
    K_total draws are cut into floor(K_total / k) disjoint blocks of k, and the blocks'
    IWAE_k estimates averaged (unbiased, and less noisy than one block). IWAE_1 is the
    ELBO estimate; the curve rises towards log p(x). Returns (len(ks), B)."""
    total = log_w.shape[0]
    out = []
    for k in ks:
        if not 1 <= k <= total:
            raise ValueError(f"k must be between 1 and the {total} drawn samples, got {k}")
        blocks = total // k
        lw = log_w[:blocks * k].double().reshape(blocks, k, -1)  # (blocks, k, B)
        out.append((torch.logsumexp(lw, dim=1) - math.log(k)).mean(0).cpu().numpy())  # (B,)
    return np.stack(out)


def decoder_log_likelihood(model: LatentModel, x: torch.Tensor,
                           likelihood: str) -> LogLikelihood:
    """log p(x|z) of a trained model's decoder for the images x (B, C, H, W)."""
    log_sigma = getattr(model, "log_sigma", math.log(0.1))
    output = getattr(model, "decoder_output", "logits")

    def log_likelihood(z: torch.Tensor) -> torch.Tensor:
        k, b, d = z.shape
        logits = model.decode(z.reshape(k * b, d))  # (k*B, C, H, W)
        target = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        return -reconstruction_nll(logits, target, likelihood, log_sigma,
                                   output).view(k, b)  # (k, B)

    return log_likelihood


NOT_A_VAE = ("a plain autoencoder has no posterior q(z|x) and no prior, so it has no ELBO "
             "and no importance-weighted log p(x); pick a VAE run")


def _require_vae(model: LatentModel) -> None:
    if not getattr(model, "is_vae", False):
        raise ValueError(NOT_A_VAE)


def _posterior(model: LatentModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of q(z|x), (B, D) each; ValueError when the encoder has no logvar."""
    mu, logvar = model.encode(x)
    if logvar is None:
        raise ValueError(NOT_A_VAE)
    return mu, logvar


@torch.no_grad()
def sample_log_weights(model: LatentModel, x: torch.Tensor, num_samples: int,
                       likelihood: str = "bernoulli", seed: int = 0) -> torch.Tensor:
    """The K log weights of a trained VAE for a few images x (B, C, H, W): (K, B)."""
    _require_vae(model)
    model.eval()
    mu, logvar = _posterior(model, x)  # (B, D) each
    chunk = max(1, MAX_PIXELS_PER_CHUNK // max(1, int(np.prod(x.shape))))
    return importance_log_weights(decoder_log_likelihood(model, x, likelihood), mu, logvar,
                                  num_samples, torch.Generator().manual_seed(seed), chunk)


@torch.no_grad()
def estimate_bounds(model: LatentModel, x: torch.Tensor, num_samples: int,
                    likelihood: str = "bernoulli", seed: int = 0,
                    batch_size: int = 256) -> BoundEstimate:
    """ELBO_K and IWAE_K of a trained VAE for every image in x (N, C, H, W), in nats.

    Raises ValueError for a plain autoencoder: it has no q(z|x), so no likelihood bound.
    """
    _require_vae(model)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    pixels = int(np.prod(x.shape[1:]))
    elbos, iwaes = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]  # (B, C, H, W)
        mu, logvar = _posterior(model, xb)  # (B, D) each
        chunk = max(1, MAX_PIXELS_PER_CHUNK // max(1, len(xb) * pixels))
        log_w = importance_log_weights(decoder_log_likelihood(model, xb, likelihood), mu,
                                       logvar, num_samples, generator, chunk)  # (K, B)
        est = bounds_from_log_weights(log_w)
        elbos.append(est.elbo)
        iwaes.append(est.iwae)
    return BoundEstimate(elbo=np.concatenate(elbos), iwae=np.concatenate(iwaes),
                         num_samples=num_samples)


def sample_curve(model: LatentModel, x: torch.Tensor, ks: list[int] | tuple[int, ...],
                 likelihood: str = "bernoulli", seed: int = 0
                 ) -> list[tuple[int, float, float]]:
    """[(k, ELBO, E[IWAE_k])] for each k in ``ks`` for one image x (1, C, H, W), all from
    the same max(ks) draws (:func:`sample_log_weights`, :func:`iwae_curve`): the ELBO is
    the mean of all the log weights, so it is the same for every k."""
    ks = list(ks)
    log_w = sample_log_weights(model, x, max(ks), likelihood, seed)
    elbo = float(log_w.double().mean())
    curve = iwae_curve(log_w, ks)[:, 0]
    return [(k, elbo, float(v)) for k, v in zip(ks, curve, strict=True)]
