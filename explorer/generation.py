"""Generating images from a trained model: prior samples, the decoded manifold over a
grid of two latent dimensions, linear and spherical interpolation, traversals, and the
reparameterisation trick's draws z = mu + sigma * eps.

Every function returns mean images (``sigmoid(logits)``) as numpy arrays in [0, 1],
shaped (N, C, H, W), plus the latent codes they were decoded from. :func:`posterior`,
:func:`encode_means` and :func:`reconstruct` go the other way (images to codes, and
back). :func:`tile` lays a batch out as one grid image for display or PNG export;
:func:`grid_pixels`, :func:`image_hwc` and :func:`enlarge` prepare such images for the
pages (channels last, upscaled by pixel repetition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


class LatentModel(Protocol):
    """What these functions (and :mod:`explorer.iwae`, :mod:`explorer.diagnostics`) use
    of a trained model (``training.model.VAE``): its latent size and image shape, the
    encoder's posterior parameters (log-variance None for a plain autoencoder) and the
    decoder's logits (or, where the model has a ``decoder_output`` attribute other than
    ``"logits"``, its probabilities or Gaussian means: an imported run's model,
    :class:`explorer.onnx_torch.OnnxTorchModel`)."""

    @property
    def latent_dim(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    @property
    def is_vae(self) -> bool: ...

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Any: ...


@torch.no_grad()
def posterior(model: LatentModel, x: np.ndarray | torch.Tensor
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """The encoder's (mu (N, D), logvar (N, D) or None for an autoencoder) of images x
    (N, C, H, W), as numpy arrays."""
    model.eval()
    mu, logvar = model.encode(torch.as_tensor(x, dtype=torch.float32))
    return mu.numpy(), None if logvar is None else logvar.numpy()


def encode_means(model: LatentModel, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """The posterior means (codes of an autoencoder) mu(x) (N, D) of images x (N, C, H, W)."""
    return posterior(model, x)[0]


def reconstruct(model: LatentModel, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """decode(mu(x)): the mean reconstructions (N, C, H, W) of images x (N, C, H, W)."""
    return decode_images(model, encode_means(model, x))


def mean_images(model: LatentModel, output: torch.Tensor) -> torch.Tensor:
    """Mean images in [0, 1] from the decoder's output: sigmoid of logits (every model
    trained here); an imported decoder's probabilities or Gaussian means (its
    ``decoder_output``, see ``explorer/adopt.py``) clamped to [0, 1]."""
    if getattr(model, "decoder_output", "logits") == "logits":
        return torch.sigmoid(output)
    return output.clamp(0.0, 1.0)


@torch.no_grad()
def decode_images(model: LatentModel, z: np.ndarray | torch.Tensor,
                  batch_size: int = 1024) -> np.ndarray:
    """Decode latent codes z (N, D) to mean images (N, C, H, W) in [0, 1]."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(f"latent codes must have shape (N, {model.latent_dim}), "
                         f"got {tuple(z.shape)}")
    model.eval()
    out = [mean_images(model, model.decode(z[i:i + batch_size]))
           for i in range(0, len(z), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, *model.image_shape), np.float32)


def prior_samples(model: LatentModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n draws z ~ N(0, I) and their decoded images: (z (n, D), images (n, C, H, W))."""
    z = np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(np.float32)
    return z, decode_images(model, z)


def manifold_grid(model: LatentModel, dims: tuple[int, int] = (0, 1), n: int = 15,
                  x_range: tuple[float, float] = (-3.0, 3.0),
                  y_range: tuple[float, float] = (-3.0, 3.0),
                  base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an n x n grid over two latent dimensions (the others held at ``base``,
    default 0). Returns (x values (n,), y values (n,), images (n, n, C, H, W)) with row 0
    at the *top*, i.e. the largest y value, so a tiled image matches a plot's axes."""
    d = model.latent_dim
    i, j = dims
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise ValueError(f"pick two different latent dimensions between 0 and {d - 1}, "
                         f"got {dims}")
    if n < 2:
        raise ValueError(f"the grid needs at least 2 points per side, got {n}")
    xs = np.linspace(*x_range, n, dtype=np.float32)
    ys = np.linspace(*y_range, n, dtype=np.float32)
    z = np.tile(np.zeros(d, np.float32) if base is None else np.asarray(base, np.float32),
                (n * n, 1))  # (n*n, D)
    grid_y, grid_x = np.meshgrid(ys[::-1], xs, indexing="ij")  # (n, n): rows top->bottom
    z[:, i] = grid_x.ravel()
    z[:, j] = grid_y.ravel()
    images = decode_images(model, z)
    return xs, ys, images.reshape(n, n, *images.shape[1:])


def lerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation (1 - t) z0 + t z1 for each t. Returns (len(t), D)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1 - t) * np.asarray(z0, np.float64) + t * np.asarray(z1, np.float64)).astype(
        np.float32)


def slerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models): moves
    along the great circle between the directions of z0 and z1 while the norm changes
    linearly, so intermediate codes keep the norm typical of N(0, I) samples instead of
    cutting through the low-density centre. Falls back to lerp for (anti)parallel codes.
    Returns (len(t), D); t = 0 and t = 1 give z0 and z1 exactly."""
    z0 = np.asarray(z0, np.float64)
    z1 = np.asarray(z1, np.float64)
    t = np.asarray(t, dtype=np.float64)
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if n0 < 1e-12 or n1 < 1e-12:
        return lerp(z0, z1, t)
    cos = np.clip(z0 @ z1 / (n0 * n1), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return lerp(z0, z1, t)
    u0, u1 = z0 / n0, z1 / n1
    direction = (np.sin((1 - t) * omega)[:, None] * u0 + np.sin(t * omega)[:, None] * u1) \
        / np.sin(omega)  # (T, D) unit vectors
    norm = (1 - t) * n0 + t * n1  # (T,)
    out = direction * norm[:, None]
    out[t == 0] = z0
    out[t == 1] = z1
    return out.astype(np.float32)


def interpolate(model: LatentModel, z0: np.ndarray, z1: np.ndarray, steps: int = 8,
                method: str = "lerp") -> tuple[np.ndarray, np.ndarray]:
    """Decode ``steps`` codes from z0 to z1 (both ends included) by ``lerp`` or ``slerp``.
    Returns (codes (steps, D), images (steps, C, H, W))."""
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    fn = {"lerp": lerp, "slerp": slerp}.get(method)
    if fn is None:
        raise ValueError(f"unknown interpolation {method!r}; use 'lerp' or 'slerp'")
    z = fn(z0, z1, np.linspace(0.0, 1.0, steps))
    return z, decode_images(model, z)


def traversal(model: LatentModel, base: np.ndarray, dims: list[int],
              values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One row per dimension in ``dims``: ``base`` with that dimension swept over
    ``values`` (default 9 values from -3 to 3). Returns (values (V,), images (R, V, C, H, W))."""
    values = np.linspace(-3.0, 3.0, 9) if values is None else np.asarray(values)
    base = np.asarray(base, np.float32)
    if not dims:
        raise ValueError("choose at least one latent dimension to traverse")
    z = np.repeat(base[None], len(dims) * len(values), axis=0)  # (R*V, D)
    for r, dim in enumerate(dims):
        if not 0 <= dim < model.latent_dim:
            raise ValueError(f"latent dimension {dim} does not exist (0..{model.latent_dim - 1})")
        z[r * len(values):(r + 1) * len(values), dim] = values
    images = decode_images(model, z)
    return values.astype(np.float32), images.reshape(len(dims), len(values), *images.shape[1:])


@dataclass
class ReparamDraws:
    """Draws of the reparameterisation trick for one input: z_k = mu + sigma * eps_k."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D,)
    eps: np.ndarray  # (K, D) ~ N(0, I)
    z: np.ndarray  # (K, D)
    images: np.ndarray  # (K, C, H, W) decoded z
    mean_image: np.ndarray  # (C, H, W) decoded mu

    def change(self, k: int = 0) -> float:
        """Mean absolute per-pixel difference between decode(z_k) and decode(mu)."""
        return float(np.abs(self.images[k] - self.mean_image).mean())

    @property
    def pixel_spread(self) -> float:
        """Per-pixel standard deviation across the K decoded draws, averaged over pixels
        (0 for a single draw): the posterior's spread seen in image space."""
        return float(self.images.std(axis=0).mean()) if len(self.images) > 1 else 0.0


def reparam_draws(model: LatentModel, mu: np.ndarray, logvar: np.ndarray, k: int = 1,
                  seed: int = 0) -> ReparamDraws:
    """Draw eps ~ N(0, I) k times with ``seed`` and form z = mu + sigma * eps."""
    mu = np.asarray(mu, np.float32)
    sigma = np.exp(0.5 * np.asarray(logvar, np.float32))
    eps = np.random.default_rng(seed).standard_normal((k, len(mu))).astype(np.float32)
    z = mu[None] + sigma[None] * eps  # (K, D)
    images = decode_images(model, np.concatenate([mu[None], z]))
    return ReparamDraws(mu=mu, sigma=sigma, eps=eps, z=z, images=images[1:],
                        mean_image=images[0])


def tile(images: np.ndarray, cols: int | None = None, pad: int = 1,
         pad_value: float = 1.0) -> np.ndarray:
    """Lay out images (N, C, H, W) or a grid (R, V, C, H, W) as one (H', W', C) array in
    [0, 1] with ``pad`` pixels of ``pad_value`` between them (greyscale: (H', W'))."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 5:
        rows, cols = images.shape[:2]
        images = images.reshape(rows * cols, *images.shape[2:])
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected images shaped (N, C, H, W), got {images.shape}")
    n, c, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value, np.float32)
    for idx in range(n):
        r, q = divmod(idx, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        out[:, top:top + h, left:left + w] = images[idx]
    out = np.clip(out, 0.0, 1.0).transpose(1, 2, 0)  # (H', W', C)
    return out[..., 0] if c == 1 else out


def grid_pixels(images: np.ndarray, cols: int | None = None, cell: int = 72) -> np.ndarray:
    """A batch (N, C, H, W) or grid (R, V, C, H, W) of images as one :func:`tile`d picture,
    each pixel repeated so every image is about ``cell`` pixels wide."""
    images = np.asarray(images)
    scale = max(1, int(round(cell / images.shape[-1])))
    return np.clip(tile(images, cols), 0, 1).repeat(scale, 0).repeat(scale, 1)


def labelled_rows(images: np.ndarray, row_labels: list[str],
                  col_labels: list[str] | None = None, cell: int = 72) -> np.ndarray:
    """A grid (R, V, C, H, W) as one RGB picture (H', W', 3) in [0, 1] with a label left
    of every row (e.g. ``z3 · KL 1.20``) and, when given, one above every column (e.g. the
    value swept): :func:`grid_pixels` on a white margin with black text, the same for the
    page and for a slide."""
    from PIL import Image, ImageDraw, ImageFont

    images = np.asarray(images)
    if images.ndim != 5 or len(row_labels) != images.shape[0]:
        raise ValueError(f"expected a grid (R, V, C, H, W) and R row labels, got "
                         f"{images.shape} and {len(row_labels)} labels")
    rows, cols = images.shape[:2]
    grid = grid_pixels(images, cols, cell)  # (h, w[, C])
    if grid.ndim == 2:
        grid = np.repeat(grid[..., None], 3, axis=2)
    grid = grid[..., :3]
    size = max(12, int(round(0.22 * grid.shape[0] / rows)))
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 12 + max(int(measure.textlength(t, font=font)) for t in row_labels)
    top = size + 12 if col_labels else 0
    canvas = Image.new("RGB", (left + grid.shape[1] + 4, top + grid.shape[0] + 4), "white")
    canvas.paste(Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)),
                 (left, top))
    draw = ImageDraw.Draw(canvas)
    row_h, col_w = grid.shape[0] / rows, grid.shape[1] / cols
    for r, text in enumerate(row_labels):
        draw.text((left - 6, top + (r + 0.5) * row_h), text, fill="black", font=font,
                  anchor="rm")
    for c, text in enumerate(col_labels or []):
        draw.text((left + (c + 0.5) * col_w, top - 4), text, fill="black", font=font,
                  anchor="md")
    return np.asarray(canvas, dtype=np.float32) / 255.0


def image_hwc(x: Any) -> np.ndarray:
    """One image (C, H, W), tensor or array, as (H, W) for one channel, else (H, W, C)."""
    arr = np.asarray(x, dtype=np.float32)
    arr = arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
    return arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr


def enlarge(image: np.ndarray, size: int = 168) -> np.ndarray:
    """Upscale a small (H, W[, C]) image by pixel repetition to about ``size`` pixels,
    values clipped to [0, 1]."""
    scale = max(1, size // max(image.shape[:2]))
    return np.clip(image, 0, 1).repeat(scale, 0).repeat(scale, 1)


def default_span(mu: np.ndarray, dims: tuple[int, int], is_vae: bool) -> float:
    """Half-width of the manifold grid: 3 (the prior's +-3 sigma) for a VAE; for an
    autoencoder, whose codes may sit anywhere, enough to hold its codes on those two
    dimensions (rounded up, at most 100)."""
    if is_vae:
        return 3.0
    return min(100.0, float(np.ceil(np.abs(np.asarray(mu)[:, list(dims)]).max())))
