"""The live decode panel's work: everything that can be computed once per run and map
view is computed in :func:`build_live_decoder`, so that one slider move costs one small
decoder pass and two small PNG encodings (:meth:`LiveDecoder.render`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.figures import Locator, png_bytes, scale_for
from explorer.inference import (
    decode_mean,
    dimension_order,
    mean_kl_per_dim,
    place_on_map,
    slider_bounds,
)
from training.model import VAE

VISIBLE_SLIDERS = 8  # sliders shown up front; the rest sit in an expander


@dataclass
class LiveFrame:
    """What one slider move sends to the browser."""

    decoded_png: bytes  # the decoded mean image, upscaled
    locator_png: bytes  # the latent map with the current z marked
    map_xy: np.ndarray  # (2,) where z lands on the map
    log_prior: float  # log N(z; 0, I) in nats: how typical z is under the prior


@dataclass
class LiveDecoder:
    model: VAE
    latents: dict[str, np.ndarray]
    projection: str
    order: np.ndarray  # (D,) dimensions, most active first
    lo: np.ndarray  # (D,) slider minimum per dimension
    hi: np.ndarray  # (D,) slider maximum per dimension
    mean_kl: np.ndarray | None  # (D,) test-set mean KL per dimension (None for an AE)
    locator: Locator
    scale: int  # PNG upscaling factor

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def visible(self, n: int = VISIBLE_SLIDERS) -> tuple[np.ndarray, np.ndarray]:
        """(dimensions shown up front, dimensions in the 'more' expander), by activity."""
        return self.order[:n], self.order[n:]

    def clamp(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(z, dtype=np.float32), self.lo, self.hi)

    def render(self, z: np.ndarray) -> LiveFrame:
        """Decode ``z`` (D,) and mark it on the locator map."""
        z = np.asarray(z, dtype=np.float32)
        image = decode_mean(self.model, z)  # (H, W, C)
        xy = place_on_map(z, self.latents, self.projection)[0]  # (2,)
        log_prior = float(-0.5 * (z.astype(np.float64) ** 2).sum()
                          - 0.5 * len(z) * np.log(2.0 * np.pi))
        return LiveFrame(decoded_png=png_bytes(image, self.scale),
                         locator_png=self.locator.render(xy), map_xy=xy, log_prior=log_prior)


def build_live_decoder(model: VAE, latents: dict[str, np.ndarray], projection: str,
                       coords: np.ndarray, target_px: int = 224) -> LiveDecoder:
    """Precompute slider order and bounds and the locator's background for one run and
    map view (``coords``: the map's (N, 2) positions of the test set)."""
    lo, hi = slider_bounds(latents, model.is_vae)
    return LiveDecoder(model=model, latents=latents, projection=projection,
                       order=dimension_order(latents), lo=lo, hi=hi,
                       mean_kl=mean_kl_per_dim(latents),
                       locator=Locator(coords, latents["labels"]),
                       scale=scale_for(model.image_shape[1], target_px))
