"""What the app asks of a trained model: decode a z, score one image's ELBO terms, order
and bound the latent sliders, and place a z on the 2-D latent map.

Pure torch/numpy (no Streamlit), CPU, ``torch.no_grad``. All ELBO terms are **nats per
sample** (summed over pixels or latent dimensions), as in ``training/loss.py``, which
computes them: this module only chooses the inputs and reduces the Monte-Carlo samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.loss import elbo_terms, kl_per_dim, reconstruction_nll
from training.model import VAE
from training.projection import apply_pca, place_by_neighbours
from training.rundir import RunInfo

PROJECTIONS = ("raw", "pca", "tsne")


def use_one_thread() -> None:
    """Decoding one small image is fastest on one intra-op thread (no pool hand-off), and
    leaves the other core to the web server. Cheap to call on every decode."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def load_test_images(info: RunInfo) -> torch.Tensor:
    """The run's test images (N, C, H, W) in [0, 1], in the order of ``latents.npz``: the
    split is deterministic (``split_seed``), so reloading the data set reproduces it.
    Raises :class:`training.data.DataError` when the data set cannot be read."""
    from training.data import load_dataset

    c = info.config
    data = load_dataset(c.dataset, c.data_dir, False, c.image_size, c.channels,
                        c.split_seed, c.test_fraction)
    return data.test_x


# --------------------------------------------------------------------------- decoding

@torch.no_grad()
def decode_mean(model: VAE, z: np.ndarray | list[float]) -> np.ndarray:
    """Mean image(s) sigmoid(decoder(z)) for z of shape (D,) or (B, D).
    Returns float32 (H, W, C) for one z, (B, H, W, C) for a batch, values in [0, 1]."""
    use_one_thread()
    z_arr = np.asarray(z, dtype=np.float32)
    single = z_arr.ndim == 1
    z_t = torch.from_numpy(np.atleast_2d(z_arr))  # (B, D)
    if z_t.shape[1] != model.latent_dim:
        raise ValueError(f"z has {z_t.shape[1]} dimensions, the model's latent space has "
                         f"{model.latent_dim}")
    images = torch.sigmoid(model.decode(z_t)).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return images[0] if single else images


# --------------------------------------------------------------------------- ELBO terms

@dataclass
class SampleTerms:
    """One image's ELBO terms, nats per sample, plus what the panel draws."""

    x: np.ndarray  # (H, W, C) input in [0, 1]
    recon_image: np.ndarray  # (H, W, C) sigmoid(decoder(mu)): the mean reconstruction
    mu: np.ndarray  # (D,)
    logvar: np.ndarray | None  # (D,); None for a plain autoencoder
    recon: float  # E_q[-log p(x|z)], mean over ``samples`` draws of z (at mu for an AE)
    recon_std_err: float  # standard error of that Monte-Carlo mean (0 for an AE or 1 sample)
    kl_per_dim: np.ndarray  # (D,) KL(q(z_j|x) || N(0,1)), closed form; zeros for an AE
    samples: int

    @property
    def kl(self) -> float:
        return float(self.kl_per_dim.sum())

    @property
    def neg_elbo(self) -> float:
        """-ELBO = recon + KL (nats); beta never enters the bound."""
        return self.recon + self.kl

    @property
    def elbo(self) -> float:
        return -self.neg_elbo

    @property
    def is_vae(self) -> bool:
        return self.logvar is not None


@torch.no_grad()
def sample_terms(model: VAE, x: torch.Tensor | np.ndarray, likelihood: str,
                 samples: int = 64, seed: int = 0) -> SampleTerms:
    """ELBO terms of one image ``x`` (C, H, W) in [0, 1].

    The reconstruction term is the mean of ``samples`` reparameterised draws
    z = mu + sigma * eps (seeded, so the panel shows the same number every time); the KL
    is exact. For an autoencoder z = mu and there is no KL."""
    use_one_thread()
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, *model.image_shape)
    mu, logvar = model.encode(x_t)  # (1, D), (1, D) | None
    recon_image = torch.sigmoid(model.decode(mu))  # (1, C, H, W)
    if logvar is None:
        samples = 1
        logits = model.decode(mu)  # (1, C, H, W)
        nll = reconstruction_nll(logits, x_t, likelihood, model.log_sigma)  # (1,)
        per_dim = torch.zeros_like(mu[0])
    else:
        generator = torch.Generator().manual_seed(seed)
        mu_k = mu.expand(samples, -1)  # (K, D)
        logvar_k = logvar.expand(samples, -1)  # (K, D)
        z = VAE.reparameterize(mu_k, logvar_k, generator)  # (K, D)
        logits = model.decode(z)  # (K, C, H, W)
        terms = elbo_terms(logits, x_t.expand(samples, -1, -1, -1), mu_k, logvar_k,
                           likelihood, log_sigma=model.log_sigma)
        nll = terms.recon  # (K,)
        per_dim = kl_per_dim(mu, logvar)[0]  # (D,)
    std_err = float(nll.std(unbiased=True) / np.sqrt(samples)) if samples > 1 else 0.0
    return SampleTerms(
        x=x_t[0].permute(1, 2, 0).numpy(), recon_image=recon_image[0].permute(1, 2, 0).numpy(),
        mu=mu[0].numpy(), logvar=None if logvar is None else logvar[0].numpy(),
        recon=float(nll.mean()), recon_std_err=std_err, kl_per_dim=per_dim.numpy(),
        samples=samples)


# --------------------------------------------------------------------------- sliders

def dimension_order(latents: dict[str, np.ndarray]) -> np.ndarray:
    """Latent dimensions, most informative first: by mean KL over the test set for a VAE
    (inactive, collapsed dimensions have KL ~ 0 and go last), by variance of mu for an
    autoencoder. Ties keep index order. Returns (D,) int indices."""
    mu = np.asarray(latents["mu"], dtype=np.float64)  # (N, D)
    if "logvar" in latents:
        logvar = np.asarray(latents["logvar"], dtype=np.float64)
        score = (-0.5 * (1.0 + logvar - mu**2 - np.exp(logvar))).mean(axis=0)  # (D,)
    else:
        score = mu.var(axis=0)
    return np.argsort(-score, kind="stable")


def mean_kl_per_dim(latents: dict[str, np.ndarray]) -> np.ndarray | None:
    """Mean KL per latent dimension over the test set (D,), None for an autoencoder."""
    if "logvar" not in latents:
        return None
    mu = np.asarray(latents["mu"], dtype=np.float64)
    logvar = np.asarray(latents["logvar"], dtype=np.float64)
    return (-0.5 * (1.0 + logvar - mu**2 - np.exp(logvar))).mean(axis=0)


def slider_bounds(latents: dict[str, np.ndarray], is_vae: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension slider range (lo (D,), hi (D,)), rounded to 0.5.

    A VAE's prior is N(0, 1), so at least [-3, 3] (99.7 % of the prior), widened to cover
    the test set's latent means. An autoencoder's latent scale is arbitrary: the means'
    range plus 10 % on each side."""
    mu = np.asarray(latents["mu"], dtype=np.float64)  # (N, D)
    lo, hi = mu.min(axis=0), mu.max(axis=0)
    if is_vae:
        lo, hi = np.minimum(lo, -3.0), np.maximum(hi, 3.0)
    else:
        pad = 0.1 * np.maximum(hi - lo, 1e-3)
        lo, hi = lo - pad, hi + pad
    return np.floor(lo * 2) / 2, np.ceil(hi * 2) / 2


def sample_prior(latent_dim: int, rng: np.random.Generator) -> np.ndarray:
    """One draw z ~ N(0, I), shape (D,)."""
    return rng.standard_normal(latent_dim).astype(np.float32)


# --------------------------------------------------------------------------- the map

def available_projections(latents: dict[str, np.ndarray]) -> list[str]:
    """Which 2-D views of the latent means exist: the raw axes for a 2-D space, otherwise
    PCA always and t-SNE when training cached it (never computed while the user waits)."""
    if latents["mu"].shape[1] <= 2:
        return ["raw"]
    return ["pca", "tsne"] if "tsne" in latents else ["pca"]


def map_coords(latents: dict[str, np.ndarray], projection: str) -> np.ndarray:
    """(N, 2) map positions of the test set's latent means for ``projection``."""
    mu = latents["mu"]
    if projection == "raw":
        if mu.shape[1] == 1:
            return np.column_stack([mu[:, 0], np.zeros(len(mu))]).astype(np.float32)
        return mu[:, :2].astype(np.float32)
    if projection not in latents:
        raise ValueError(f"this run has no cached {projection!r} projection")
    return np.asarray(latents[projection], dtype=np.float32)


def place_on_map(z: np.ndarray, latents: dict[str, np.ndarray], projection: str) -> np.ndarray:
    """Map position(s) (M, 2) of new latent vector(s) z (D,) or (M, D).

    Raw axes: z itself. PCA: the exact linear projection saved with the run. t-SNE has no
    such map, so a new point goes to the inverse-distance-weighted mean of its 10 nearest
    test-set neighbours' positions (``training.projection.place_by_neighbours``)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))  # (M, D)
    if projection == "raw":
        return z[:, :2] if z.shape[1] >= 2 else np.column_stack([z[:, 0], np.zeros(len(z))])
    if projection == "pca":
        return apply_pca(z, latents["pca_mean"], latents["pca_components"])
    return place_by_neighbours(z, latents["mu"], map_coords(latents, projection))
