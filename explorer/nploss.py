"""The ELBO's terms in NumPy, for readers without PyTorch: ``training/loss.py``'s
reconstruction term and closed-form KL, computed in float64. Every term is **nats per
sample** (summed over pixels or latent dimensions), as in training.
"""

from __future__ import annotations

import math

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def mean_image(output: np.ndarray, kind: str = "logits") -> np.ndarray:
    """The decoder's mean image in [0, 1] from what it returned: sigmoid of ``logits``;
    ``probabilities`` or a Gaussian ``mean`` clipped to [0, 1] (for display)."""
    if kind == "logits":
        return sigmoid(output)
    return np.clip(output, 0.0, 1.0)


def reconstruction_nll(logits: np.ndarray, x: np.ndarray, likelihood: str,
                       log_sigma: float, output: str = "logits") -> np.ndarray:
    """``training.loss.reconstruction_nll`` in NumPy: -log p(x|z) per sample, summed over
    pixels (B,). Bernoulli: binary cross-entropy with logits, softplus(l) - x*l, computed
    stably (on ``probabilities``: -x log p - (1-x) log(1-p), each log clamped at -100 as
    torch does). Gaussian: N(x; sigmoid(l), sigma^2) per pixel (N(x; mean, sigma^2) when
    the decoder returns the ``mean`` or ``probabilities``)."""
    logits = np.asarray(logits, dtype=np.float64)  # (B, C, H, W)
    x = np.asarray(x, dtype=np.float64)  # (B, C, H, W)
    if likelihood == "bernoulli" and output != "logits":
        p = np.clip(logits, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), -100.0)
            log_q = np.maximum(np.log1p(-p), -100.0)
        per_pixel = -(x * log_p + (1.0 - x) * log_q)
    elif likelihood == "bernoulli":
        per_pixel = np.maximum(logits, 0.0) - x * logits + np.log1p(np.exp(-np.abs(logits)))
    elif likelihood == "gaussian":
        mean = sigmoid(logits) if output == "logits" else logits
        per_pixel = (0.5 * ((x - mean) / math.exp(log_sigma)) ** 2
                     + log_sigma + 0.5 * LOG_2PI)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")
    return per_pixel.reshape(len(per_pixel), -1).sum(axis=1)  # (B,)


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension in nats (B, D): the closed form of
    Kingma & Welling (2014), Appendix B, -1/2 (1 + log sigma^2 - mu^2 - sigma^2)."""
    mu = np.asarray(mu, dtype=np.float64)  # (B, D)
    logvar = np.asarray(logvar, dtype=np.float64)  # (B, D)
    return -0.5 * (1.0 + logvar - mu**2 - np.exp(logvar))  # (B, D)
