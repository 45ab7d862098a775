"""The live decode panel's work: everything that can be computed once per run and map
view is computed in :func:`build_live_decoder`, so that one slider move costs one small
decoder pass, one tiny PNG and a few hundred bytes of HTML (:meth:`LiveDecoder.render`,
:meth:`LiveDecoder.html`).

What a move sends to the browser is kept small on purpose: the decoded image travels at
its native size (a 28x28 PNG is ~0.5 KB) and the browser upscales it with
``image-rendering: pixelated``; the locator map's picture is sent once, as a CSS class
(:meth:`LiveDecoder.locator_css`), and a move only moves a marker over it.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass, field

import numpy as np

from explorer.figures import Locator, data_uri, png_bytes
from explorer.inference import (
    decode_mean,
    dimension_order,
    mean_kl_per_dim,
    place_on_map,
    slider_bounds,
)
from explorer.onnx_model import OnnxModel

VISIBLE_SLIDERS = 8  # sliders shown up front; the rest sit in an expander
DISPLAY_PX = 224  # the decoded image's on-screen size


@dataclass
class LiveFrame:
    """What one slider move sends to the browser."""

    decoded_png: bytes  # the decoded mean image at its native size
    map_xy: np.ndarray  # (2,) where z lands on the map
    marker_px: tuple[int, int]  # (col, row) of z on the locator picture
    log_prior: float  # log N(z; 0, I) in nats: how typical z is under the prior


@dataclass
class LiveDecoder:
    model: OnnxModel
    latents: dict[str, np.ndarray]
    projection: str
    order: np.ndarray  # (D,) dimensions, most active first
    lo: np.ndarray  # (D,) slider minimum per dimension
    hi: np.ndarray  # (D,) slider maximum per dimension
    mean_kl: np.ndarray | None  # (D,) test-set mean KL per dimension (None for an AE)
    locator: Locator
    locator_class: str  # CSS class carrying the locator picture
    _locator_css: str | None = field(default=None, repr=False, compare=False)

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def visible(self, n: int = VISIBLE_SLIDERS) -> tuple[np.ndarray, np.ndarray]:
        """(dimensions shown up front, dimensions in the 'more' expander), by activity."""
        return self.order[:n], self.order[n:]

    def clamp(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(z, dtype=np.float32), self.lo, self.hi)

    def render(self, z: np.ndarray) -> LiveFrame:
        """Decode ``z`` (D,) and place it on the locator map."""
        z = np.asarray(z, dtype=np.float32)
        image = decode_mean(self.model, z)  # (H, W, C)
        xy = place_on_map(z, self.latents, self.projection)[0]  # (2,)
        col, row = self.locator.to_pixels(xy)[0]
        log_prior = float(-0.5 * (z.astype(np.float64) ** 2).sum()
                          - 0.5 * len(z) * np.log(2.0 * np.pi))
        return LiveFrame(decoded_png=png_bytes(image, scale=1), map_xy=xy,
                         marker_px=(int(col), int(row)), log_prior=log_prior)

    def locator_css(self) -> str:
        """A ``<style>`` block defining the locator's picture; sent once per page, outside
        the live panel, so slider moves never resend it. Drawn once per decoder (1,000
        points and a PNG: ~0.1 s), then reused."""
        if self._locator_css is None:
            self._locator_css = (
                f"<style>.{self.locator_class}{{background-image:url("
                f"{data_uri(self.locator.background_png())});background-size:100% 100%;}}"
                f"</style>")
        return self._locator_css

    def html(self, frame: LiveFrame, map_name: str, note: str = "") -> str:
        """The decoded image beside the locator map with z marked, and ``note`` below: one
        small HTML block. Both scale with the column (percentages), pixels stay crisp."""
        span = self.locator.size - 1
        left = 100.0 * frame.marker_px[0] / span
        top = 100.0 * frame.marker_px[1] / span
        _, height, width = self.model.image_shape
        line = "position:absolute;background:rgba(0,0,0,0.45);"
        marker = (f'<div style="{line}left:0;top:{top:.2f}%;width:100%;height:1px"></div>'
                  f'<div style="{line}left:{left:.2f}%;top:0;width:1px;height:100%"></div>'
                  f'<div id="z-marker" data-col="{frame.marker_px[0]}" '
                  f'data-row="{frame.marker_px[1]}" style="position:absolute;left:{left:.2f}%;'
                  f'top:{top:.2f}%;width:12px;height:12px;transform:translate(-50%,-50%);'
                  f'border:2px solid #000;border-radius:50%"></div>')
        caption = "font-size:0.8rem;color:#666;margin-top:2px"
        cell = "flex:1 1 0;min-width:0;margin:0"
        return (f'<div style="display:flex;gap:12px;align-items:flex-start">'
                f'<figure style="{cell}"><img alt="decoded image" '
                f'src="{data_uri(frame.decoded_png)}" style="display:block;width:100%;'
                f'max-width:{DISPLAY_PX}px;aspect-ratio:{width}/{height};object-fit:fill;'
                f'image-rendering:pixelated;border:1px solid #ccc"/>'
                f'<figcaption style="{caption}">decoder mean σ(f(z))</figcaption></figure>'
                f'<figure style="{cell}"><div class="{self.locator_class}" role="img" '
                f'aria-label="z on the latent map" style="position:relative;width:100%;'
                f'max-width:{DISPLAY_PX}px;aspect-ratio:1/1;border:1px solid #ccc">{marker}'
                f'</div><figcaption style="{caption}">z on the map ({map_name})</figcaption>'
                f'</figure></div>'
                + (f'<div style="{caption};margin:4px 0 8px">{html.escape(note)}</div>'
                   if note else ""))


def build_live_decoder(model: OnnxModel, latents: dict[str, np.ndarray], projection: str,
                       coords: np.ndarray) -> LiveDecoder:
    """Precompute slider order and bounds and the locator's picture for one run and map
    view (``coords``: the map's (N, 2) positions of the test set)."""
    lo, hi = slider_bounds(latents, model.is_vae)
    locator = Locator(coords, latents["labels"])
    digest = hashlib.sha1(locator.background.tobytes()).hexdigest()[:10]
    return LiveDecoder(model=model, latents=latents, projection=projection,
                       order=dimension_order(latents), lo=lo, hi=hi,
                       mean_kl=mean_kl_per_dim(latents), locator=locator,
                       locator_class=f"zloc-{digest}")
