"""Latent-space health: active units, KL per dimension, and plain-language warnings.

A dimension is *active* when the variance over the data of its posterior mean exceeds
0.01 (Burda et al. 2015, section 5.2; the count itself is
:func:`training.trainer.count_active_units`), and *dead* otherwise, so dead + active = D.
An active dimension whose mean KL to the prior is below 0.01 nats is flagged *weak*: it
moves a little with x but carries almost no information. The report
warns when the whole KL term has collapsed, when most dimensions are dead, and when the
reconstructions barely vary (they sit near the data mean whatever the input).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.generation import LatentModel, reconstruct
from training.loss import kl_per_dim as kl_per_dim_fn
from training.trainer import count_active_units

ACTIVE_THRESHOLD = 0.01  # Var_x[mu_j(x)] above this: the dimension is active
DEAD_KL_NATS = 0.01  # an active dimension with less mean KL than this (nats) is "weak"
COLLAPSE_KL_NATS = 0.1  # total mean KL below this: posterior collapse of the whole code
NEAR_MEAN_SPREAD = 0.1  # reconstructions' spread / data spread below this: "near the mean"


@dataclass
class LatentHealth:
    """Everything the health panel shows. Arrays are per latent dimension (D,)."""

    latent_dim: int
    is_vae: bool
    mu_variance: np.ndarray  # Var_x[mu_j(x)] over the data
    kl_per_dim: np.ndarray  # mean KL_j in nats (zeros for an AE)
    active: np.ndarray  # bool, Var_x[mu_j] > ACTIVE_THRESHOLD
    dead: np.ndarray  # bool, not active
    weak: np.ndarray  # bool, active but (VAE) mean KL_j < DEAD_KL_NATS
    active_units: int
    total_kl: float  # mean KL per sample, nats
    recon_spread: float | None  # spread of reconstructions / spread of the data (0..~1)
    warnings: list[str] = field(default_factory=list)

    @property
    def dead_dims(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.dead)]

    @property
    def weak_dims(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.weak)]

    def kl_order(self) -> list[int]:
        """Dimensions from the most to the least informative (largest mean KL first; an
        AE, with no KL, by the variance of its codes)."""
        return [int(i) for i in np.argsort(-self.information, kind="stable")]

    @property
    def information(self) -> np.ndarray:
        """What ranks the dimensions (D,): mean KL for a VAE, Var μ for an autoencoder."""
        return self.kl_per_dim if self.is_vae else self.mu_variance

    def describe_dims(self, dims: list[int]) -> str:
        """``z3 (mean KL 1.20), z0 (mean KL 0.85)``: each dimension with its score."""
        key = "mean KL" if self.is_vae else "Var μ"
        return ", ".join(f"z{j} ({key} {self.information[j]:.2f})" for j in dims)


def reconstruction_spread(x: np.ndarray | torch.Tensor,
                          recon: np.ndarray | torch.Tensor) -> float:
    """Mean squared distance of the reconstructions from *their* mean over the mean
    squared distance of the data from the data mean: 1 when the reconstructions vary as
    much as the data does, 0 when every input is reconstructed as the same image."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    recon = np.asarray(recon, dtype=np.float64).reshape(len(recon), -1)
    data_spread = ((x - x.mean(0)) ** 2).sum(1).mean()
    recon_spread = ((recon - recon.mean(0)) ** 2).sum(1).mean()
    if data_spread <= 0:
        return 1.0
    return float(recon_spread / data_spread)


def latent_health(mu: np.ndarray, logvar: np.ndarray | None,
                  recon_spread: float | None = None) -> LatentHealth:
    """Diagnose a latent space from the test set's posterior means ``mu`` (N, D) and
    log-variances ``logvar`` (N, D; None for a plain autoencoder)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        raise ValueError(f"need posterior means of at least 2 samples as an (N, D) array, "
                         f"got shape {mu.shape}")
    d = mu.shape[1]
    variance = mu.var(axis=0)  # (D,)
    active = variance > ACTIVE_THRESHOLD
    is_vae = logvar is not None
    if is_vae:
        per_dim = kl_per_dim_fn(torch.from_numpy(mu),
                                torch.from_numpy(np.asarray(logvar, dtype=np.float64)))
        kl = per_dim.mean(0).numpy()  # (D,)
        weak = active & (kl < DEAD_KL_NATS)
    else:
        kl = np.zeros(d)
        weak = np.zeros(d, dtype=bool)
    health = LatentHealth(
        latent_dim=d, is_vae=is_vae, mu_variance=variance, kl_per_dim=kl, active=active,
        dead=~active, weak=weak, active_units=count_active_units(mu, ACTIVE_THRESHOLD),
        total_kl=float(kl.sum()), recon_spread=recon_spread)
    health.warnings = health_warnings(health)
    return health


def run_health(model: LatentModel, mu: np.ndarray, logvar: np.ndarray | None,
               x: np.ndarray | torch.Tensor | None = None) -> LatentHealth:
    """:func:`latent_health` of a run's saved test posteriors, with the reconstruction
    spread measured on the images ``x`` (N, C, H, W) when given (None: no images, the
    spread check is skipped)."""
    spread = None if x is None else reconstruction_spread(x, reconstruct(model, x))
    return latent_health(mu, logvar, spread)


def health_warnings(h: LatentHealth) -> list[str]:
    """Plain-language warnings, most serious first; empty when the latent space looks sound."""
    out = []
    if h.is_vae and h.total_kl < COLLAPSE_KL_NATS:
        out.append(
            f"Posterior collapse: the KL term is {h.total_kl:.3f} nats per sample in total, so "
            f"q(z|x) is (almost) the prior N(0, I) for every input and the decoder ignores z. "
            f"Try KL warm-up, free bits, a smaller beta or a weaker decoder.")
    n_dead = len(h.dead_dims)
    if n_dead > h.latent_dim / 2:
        dims = ", ".join(str(i) for i in h.dead_dims[:12]) + (" ..." if n_dead > 12 else "")
        out.append(
            f"Most latent dimensions are dead: {n_dead} of {h.latent_dim} carry no information "
            f"(dims {dims}). Only {h.active_units} are active (Var[mu] > {ACTIVE_THRESHOLD}). "
            f"A smaller latent space would do the same job, or the KL pressure (beta) is too "
            f"strong.")
    elif n_dead:
        out.append(
            f"{n_dead} of {h.latent_dim} latent dimensions are dead (dims "
            f"{', '.join(str(i) for i in h.dead_dims)}): their posterior is the prior, so "
            f"moving along them changes nothing. Common and harmless in a large latent space.")
    if h.recon_spread is not None and h.recon_spread < NEAR_MEAN_SPREAD:
        out.append(
            f"Reconstructions are near the data mean: they vary only "
            f"{100 * h.recon_spread:.1f}% as much as the inputs do, so the model draws "
            f"(nearly) the same average image whatever the input.")
    return out
