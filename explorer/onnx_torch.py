"""An ONNX model behind the torch-facing :class:`explorer.generation.LatentModel` protocol.

The lessons (``explorer/generation.py``, ``iwae.py``, ``diagnostics.py``) take torch
tensors and a model with ``encode``/``decode``. A run imported by ``explorer/adopt.py``
has no torch architecture, only its ``encoder.onnx``/``decoder.onnx``:
:class:`OnnxTorchModel` runs those through :class:`explorer.onnx_model.OnnxModel` and
converts at the edges (float32 tensors on the CPU). ``decoder_output`` tells the lessons
whether ``decode`` returns logits, probabilities or Gaussian means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.onnx_model import OnnxModel
from training.rundir import RunInfo


@dataclass(eq=False)
class OnnxTorchModel:
    """:class:`OnnxModel` with torch tensors in and out (no gradients)."""

    onnx: OnnxModel

    @property
    def info(self) -> RunInfo:
        return self.onnx.info

    @property
    def latent_dim(self) -> int:
        return self.onnx.latent_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.onnx.image_shape

    @property
    def is_vae(self) -> bool:
        return self.onnx.is_vae

    @property
    def decoder_output(self) -> str:
        return self.onnx.decoder_output

    @property
    def log_sigma(self) -> float:
        return self.onnx.log_sigma

    @property
    def training(self) -> bool:
        return False

    def eval(self) -> OnnxTorchModel:
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) -> mu (B, D), logvar (B, D) (None for an autoencoder)."""
        batch = np.asarray(torch.as_tensor(x, dtype=torch.float32).detach().cpu().numpy())
        if len(batch) == 0:
            empty = torch.zeros(0, self.latent_dim)
            return empty, (empty.clone() if self.is_vae else None)
        mu, logvar = self.onnx.encode(batch)
        return torch.from_numpy(np.asarray(mu, np.float32)), \
            None if logvar is None else torch.from_numpy(np.asarray(logvar, np.float32))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> the decoder's output (B, C, H, W) (see :attr:`decoder_output`)."""
        codes = np.asarray(torch.as_tensor(z, dtype=torch.float32).detach().cpu().numpy())
        if len(codes) == 0:
            return torch.zeros(0, *self.image_shape)
        return torch.from_numpy(np.asarray(self.onnx.decode(codes), np.float32))
