"""What the latent lens needs from the server for one run and map view, computed once
(:func:`build_live_decoder`) and shared by every session: slider order, bounds and help
text, the map's coordinates, where the browser downloads the decoder, and the server's own
decode of a z (:meth:`LiveDecoder.render`: the first paint, before the browser's decoder is
ready, and the image a browser without WebAssembly keeps seeing).

The decoded image travels at its native size (a 28x28 PNG is ~0.5 KB); the browser
upscales it with ``image-rendering: pixelated``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.figures import png_bytes
from explorer.inference import (
    decode_mean,
    dimension_order,
    map_coords,
    mean_kl_per_dim,
    slider_bounds,
)
from explorer.onnx_model import OnnxModel

VISIBLE_SLIDERS = 8  # sliders shown up front; the rest sit behind "more dimensions"
LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass
class LiveFrame:
    """The server's decode of one z."""

    decoded_png: bytes  # the decoded mean image at its native size
    log_prior: float  # log N(z; 0, I) in nats: how typical z is under the prior


@dataclass
class LiveDecoder:
    model: OnnxModel
    latents: dict[str, np.ndarray]
    projection: str
    coords: np.ndarray  # (N, 2) the test set's positions on this map
    order: np.ndarray  # (D,) dimensions, most active first
    lo: np.ndarray  # (D,) slider minimum per dimension
    hi: np.ndarray  # (D,) slider maximum per dimension
    mean_kl: np.ndarray | None  # (D,) test-set mean KL per dimension (None for an AE)

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def clamp(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(z, dtype=np.float32), self.lo, self.hi)

    def slider_help(self) -> list[str]:
        """One tooltip per latent dimension: its index and, for a VAE, its mean KL."""
        if self.mean_kl is None:
            return [f"latent dimension {j}" for j in range(self.latent_dim)]
        return [f"latent dimension {j}; test-set mean KL {kl:.2f} nats"
                for j, kl in enumerate(self.mean_kl)]

    @staticmethod
    def log_prior(z: np.ndarray) -> float:
        """log N(z; 0, I) in nats."""
        z64 = np.asarray(z, dtype=np.float64)
        return float(-0.5 * (z64 ** 2).sum() - 0.5 * len(z64) * LOG_2PI)

    def render(self, z: np.ndarray) -> LiveFrame:
        """Decode ``z`` (D,) on the server and score it under the prior."""
        z = np.asarray(z, dtype=np.float32)
        image = decode_mean(self.model, z)  # (H, W, C)
        return LiveFrame(decoded_png=png_bytes(image, scale=1), log_prior=self.log_prior(z))


def build_live_decoder(model: OnnxModel, latents: dict[str, np.ndarray],
                       projection: str) -> LiveDecoder:
    """Precompute slider order, bounds and the map's coordinates for one run and view."""
    lo, hi = slider_bounds(latents, model.is_vae)
    return LiveDecoder(model=model, latents=latents, projection=projection,
                       coords=map_coords(latents, projection), order=dimension_order(latents),
                       lo=lo, hi=hi, mean_kl=mean_kl_per_dim(latents))
