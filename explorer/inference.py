"""What the app asks of a trained model: decode a z, score one image's ELBO terms, order
and bound the latent sliders, and place a z on the 2-D latent map.

NumPy and ONNX Runtime (no Streamlit, no PyTorch: the model is
:class:`explorer.onnx_model.OnnxModel`, see there for why). All ELBO terms are **nats
per sample** (summed over pixels or latent dimensions), the same terms as
``training/loss.py``; this module only chooses the inputs and reduces the Monte-Carlo
samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from explorer.nploss import kl_per_dim
from explorer.onnx_model import OnnxModel
from training.projection import apply_pca, place_by_neighbours
from training.rundir import RunInfo

PROJECTIONS = ("raw", "pca", "tsne")


def load_test_images(info: RunInfo) -> np.ndarray:
    """The run's test images (N, C, H, W) float32 in [0, 1], in the order of
    ``latents.npz``: the split is deterministic (``split_seed``), so reloading the data set
    reproduces it. Raises :class:`training.data.DataError` when the data set cannot be read,
    or when its images are not of the run's ``image_shape`` (when ``info`` gives one)."""
    from training.data import DataError, load_dataset

    c = info.config
    data = load_dataset(c.dataset, c.data_dir, False, c.image_size, c.channels,
                        c.split_seed, c.test_fraction, numpy=True)
    if all(info.image_shape) and tuple(data.image_shape) != tuple(info.image_shape):
        raise DataError(f"the data set {c.dataset} has images of shape "
                        f"{'x'.join(map(str, data.image_shape))}, this run's model takes "
                        f"{'x'.join(map(str, info.image_shape))}")
    return np.asarray(data.test_x)


# --------------------------------------------------------------------------- decoding

def decode_mean(model: OnnxModel, z: np.ndarray | list[float]) -> np.ndarray:
    """Mean image(s) sigmoid(decoder(z)) for z of shape (D,) or (B, D).
    Returns float32 (H, W, C) for one z, (B, H, W, C) for a batch, values in [0, 1]."""
    z_arr = np.asarray(z, dtype=np.float32)
    single = z_arr.ndim == 1
    z_arr = np.atleast_2d(z_arr)  # (B, D)
    if z_arr.shape[1] != model.latent_dim:
        raise ValueError(f"z has {z_arr.shape[1]} dimensions, the model's latent space has "
                         f"{model.latent_dim}")
    images = model.mean_image(model.decode(z_arr)).transpose(0, 2, 3, 1)  # (B, H, W, C)
    images = images.astype(np.float32)
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


def sample_terms(model: OnnxModel, x: np.ndarray, samples: int = 64,
                 seed: int = 0) -> SampleTerms:
    """ELBO terms of one image ``x`` (C, H, W) in [0, 1], under the run's likelihood.

    The reconstruction term is the mean of ``samples`` reparameterised draws
    z = mu + sigma * eps (seeded, so the panel shows the same number every time); the KL
    is exact. For an autoencoder z = mu and there is no KL."""
    x_arr = np.asarray(x, dtype=np.float32)
    if x_arr.size != math.prod(model.image_shape):
        raise ValueError(f"the image has shape {x_arr.shape}, the model takes "
                         f"{tuple(model.image_shape)}")
    x_b = x_arr.reshape(1, *model.image_shape)  # (1, C, H, W)
    mu, logvar = model.encode(x_b)  # (1, D), (1, D) | None
    logits_mu = model.decode(mu)  # (1, C, H, W)
    recon_image = model.mean_image(logits_mu)
    if logvar is None:
        samples = 1
        nll = model.reconstruction_nll(logits_mu, x_b)  # (1,)
        per_dim = np.zeros(model.latent_dim)
    else:
        eps = np.random.default_rng(seed).standard_normal((samples, model.latent_dim))  # (K, D)
        z = mu + np.exp(0.5 * logvar) * eps.astype(np.float32)  # (K, D)
        nll = model.reconstruction_nll(model.decode(z), x_b)  # (K,)
        per_dim = kl_per_dim(mu, logvar)[0]  # (D,)
    std_err = float(nll.std(ddof=1) / np.sqrt(samples)) if samples > 1 else 0.0
    return SampleTerms(
        x=x_b[0].transpose(1, 2, 0),
        recon_image=recon_image[0].transpose(1, 2, 0).astype(np.float32),
        mu=mu[0], logvar=None if logvar is None else logvar[0],
        recon=float(nll.mean()), recon_std_err=std_err, kl_per_dim=per_dim, samples=samples)


# --------------------------------------------------------------------------- sliders

def dimension_order(latents: dict[str, np.ndarray]) -> np.ndarray:
    """Latent dimensions, most informative first: by mean KL over the test set for a VAE
    (inactive, collapsed dimensions have KL ~ 0 and go last), by variance of mu for an
    autoencoder. Ties keep index order. Returns (D,) int indices."""
    score = mean_kl_per_dim(latents)  # (D,)
    if score is None:
        score = np.asarray(latents["mu"], dtype=np.float64).var(axis=0)
    return np.argsort(-score, kind="stable")


def mean_kl_per_dim(latents: dict[str, np.ndarray]) -> np.ndarray | None:
    """Mean KL per latent dimension over the test set (D,), None for an autoencoder."""
    if "logvar" not in latents:
        return None
    return kl_per_dim(latents["mu"], latents["logvar"]).mean(axis=0)


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
