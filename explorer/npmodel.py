"""A trained run's model as NumPy: the app's main page decodes and scores without PyTorch.

``import torch`` alone takes about 2.8 s on the 2-core machine this project is measured
on, more than half of the app's 5 s cold-start budget, while one forward pass of these
small models is well under a millisecond in NumPy. So the main page reads the weights with
``safetensors.numpy`` (verified against the same SHA-256 as :func:`training.rundir.load_weights`)
and runs the forward pass here. The teaching pages, which train-time code shares, keep
the torch model (:func:`training.rundir.load_run`).

:class:`NumpyModel` mirrors ``training/model.py`` layer for layer (MLP and conv backbones,
VAE and plain autoencoder, log sigma^2 clamped the same way), and :func:`reconstruction_nll`
and :func:`kl_per_dim` mirror ``training/loss.py``; ``tests/test_npmodel.py`` checks both
against the torch code on every architecture and likelihood. Terms are **nats per
sample**, summed over pixels or latent dimensions.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from training.config import LOGVAR_MAX, LOGVAR_MIN
from training.rundir import WEIGHTS_FILE, RunDirError, RunInfo, load_weights, read_config

LOG_2PI = math.log(2.0 * math.pi)
Layer = tuple[np.ndarray, np.ndarray]  # (weight, bias) as torch stores them


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def _linear(x: np.ndarray, layer: Layer) -> np.ndarray:
    weight, bias = layer  # (out, in), (out,)
    return x @ weight.T + bias  # (B, out)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def conv2d(x: np.ndarray, layer: Layer, stride: int, padding: int) -> np.ndarray:
    """``torch.nn.functional.conv2d``: x (B, C, H, W), weight (O, C, k, k) -> (B, O, H', W')."""
    weight, bias = layer
    k = weight.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(x, (k, k), axis=(2, 3))  # (B, C, H+2p-k+1, ..., k, k)
    windows = windows[:, :, ::stride, ::stride]  # (B, C, H', W', k, k)
    out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (B, H', W', O)
    return out.transpose(0, 3, 1, 2) + bias[:, None, None]  # (B, O, H', W')


def conv_transpose2d(x: np.ndarray, layer: Layer, stride: int, padding: int) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d``: x (B, C, H, W), weight (C, O, k, k) ->
    (B, O, (H-1)*stride - 2*padding + k, ...). As a convolution: spread the input out with
    stride-1 zeros between pixels, pad by k-1-padding, convolve with the flipped kernel."""
    weight, bias = layer
    batch, channels, height, width = x.shape
    k = weight.shape[-1]
    spread = np.zeros((batch, channels, (height - 1) * stride + 1, (width - 1) * stride + 1),
                      dtype=x.dtype)
    spread[:, :, ::stride, ::stride] = x
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (O, C, k, k)
    return conv2d(spread, (flipped, bias), stride=1, padding=k - 1 - padding)


def _layers(tensors: dict[str, np.ndarray], prefix: str) -> list[Layer]:
    """The (weight, bias) pairs under ``prefix`` in module order (``prefix.<i>.weight``)."""
    found = []
    for name in tensors:
        m = re.fullmatch(re.escape(prefix) + r"((?:\d+\.)*\d+)\.weight", name)
        if m:
            index = tuple(int(part) for part in m.group(1).split("."))
            found.append((index, name[:-len("weight")]))
    return [(tensors[stem + "weight"], tensors[stem + "bias"]) for _, stem in sorted(found)]


@dataclass
class NumpyModel:
    """The forward pass of :class:`training.model.VAE`, weights as float32 arrays."""

    info: RunInfo
    encoder: list[Layer]  # MLP: every layer then ReLU; conv: 2 convs, then a linear
    decoder: list[Layer]  # MLP: ReLU between layers; conv: 2 linears, then 2 transposed convs
    to_mu: Layer
    to_logvar: Layer | None  # None for a plain autoencoder
    log_sigma: float  # Gaussian likelihood's pixel log-std (unused for Bernoulli)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.info.image_shape

    @property
    def latent_dim(self) -> int:
        return self.to_mu[0].shape[0]

    @property
    def is_vae(self) -> bool:
        return self.to_logvar is not None

    @property
    def arch(self) -> str:
        return self.info.config.arch

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """x (B, C, H, W) -> mu (B, D), logvar (B, D) clamped as in training (None for an AE)."""
        h = np.asarray(x, dtype=np.float32)
        if self.arch == "mlp":
            h = h.reshape(len(h), -1)  # (B, C*H*W)
            for layer in self.encoder:
                h = _relu(_linear(h, layer))  # (B, hidden)
        else:
            h = _relu(conv2d(h, self.encoder[0], stride=2, padding=1))  # (B, 32, H/2, W/2)
            h = _relu(conv2d(h, self.encoder[1], stride=2, padding=1))  # (B, 64, H/4, W/4)
            h = _relu(_linear(h.reshape(len(h), -1), self.encoder[2]))  # (B, hidden)
        mu = _linear(h, self.to_mu)  # (B, D)
        if self.to_logvar is None:
            return mu, None
        return mu, np.clip(_linear(h, self.to_logvar), LOGVAR_MIN, LOGVAR_MAX)  # (B, D)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z (B, D) -> logits (B, C, H, W)."""
        h = np.asarray(z, dtype=np.float32)
        channels, height, width = self.image_shape
        if self.arch == "mlp":
            for layer in self.decoder[:-1]:
                h = _relu(_linear(h, layer))  # (B, hidden)
            return _linear(h, self.decoder[-1]).reshape(len(h), channels, height, width)
        h = _relu(_linear(h, self.decoder[0]))  # (B, hidden)
        h = _relu(_linear(h, self.decoder[1]))  # (B, 64 * H/4 * W/4)
        h = h.reshape(len(h), 64, height // 4, width // 4)  # (B, 64, H/4, W/4)
        h = _relu(conv_transpose2d(h, self.decoder[2], stride=2, padding=1))  # (B, 32, H/2, W/2)
        return conv_transpose2d(h, self.decoder[3], stride=2, padding=1)  # (B, C, H, W)

    def reconstruction_nll(self, logits: np.ndarray, x: np.ndarray) -> np.ndarray:
        """-log p(x|z) per sample in nats under the run's likelihood. Returns (B,)."""
        return reconstruction_nll(logits, x, self.info.config.likelihood, self.log_sigma)


def reconstruction_nll(logits: np.ndarray, x: np.ndarray, likelihood: str,
                       log_sigma: float) -> np.ndarray:
    """``training.loss.reconstruction_nll`` in NumPy: per sample, summed over pixels (B,).
    Bernoulli: binary cross-entropy with logits, softplus(l) - x*l, computed stably.
    Gaussian: N(x; sigmoid(l), sigma^2) per pixel."""
    logits = np.asarray(logits, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if likelihood == "bernoulli":
        per_pixel = np.maximum(logits, 0.0) - x * logits + np.log1p(np.exp(-np.abs(logits)))
    elif likelihood == "gaussian":
        per_pixel = (0.5 * ((x - sigmoid(logits)) / math.exp(log_sigma)) ** 2
                     + log_sigma + 0.5 * LOG_2PI)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")
    return per_pixel.reshape(len(per_pixel), -1).sum(axis=1)  # (B,)


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent dimension in nats (B, D): the closed form of
    Kingma & Welling (2014), Appendix B, -1/2 (1 + log sigma^2 - mu^2 - sigma^2)."""
    mu = np.asarray(mu, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    return -0.5 * (1.0 + logvar - mu**2 - np.exp(logvar))  # (B, D)


def load_numpy_model(run_dir: str | os.PathLike) -> NumpyModel:
    """Read ``config.json`` and verify and read ``model.safetensors`` as NumPy arrays.
    Raises :class:`training.rundir.RunDirError` naming the file, as ``load_run`` does."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(run_dir, "run directory does not exist")
    info = read_config(run_dir)
    source = run_dir / WEIGHTS_FILE
    tensors, _ = load_weights(source, framework="np")
    c = info.config
    try:
        encoder = _layers(tensors, "encoder.body.")
        decoder = _layers(tensors, "decoder.to_grid.") + _layers(tensors, "decoder.body.")
        to_mu = (tensors["to_mu.weight"], tensors["to_mu.bias"])
        to_logvar = ((tensors["to_logvar.weight"], tensors["to_logvar.bias"])
                     if c.model == "vae" else None)
        log_sigma = float(tensors["log_sigma"])
    except KeyError as exc:
        raise RunDirError(source, f"weights do not match the model described in config.json "
                                  f"(another architecture?): missing {exc.args[0]}") from exc
    expected = (c.hidden_layers, c.hidden_layers + 1) if c.arch == "mlp" else (3, 4)
    if (len(encoder), len(decoder)) != expected or to_mu[0].shape[0] != c.latent_dim:
        raise RunDirError(source, f"weights do not match the model described in config.json "
                                  f"(another architecture?): {len(encoder)} encoder and "
                                  f"{len(decoder)} decoder layers, latent size "
                                  f"{to_mu[0].shape[0]}, expected {expected} and {c.latent_dim}")
    return NumpyModel(info=info, encoder=encoder, decoder=decoder, to_mu=to_mu,
                      to_logvar=to_logvar, log_sigma=log_sigma)
