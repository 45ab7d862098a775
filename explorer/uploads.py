"""Turning a user's uploaded file into one model input (C, H, W) in [0, 1], or a clear
:class:`UploadError` saying what is wrong with it.

Rejected: empty files, files over :data:`MAX_BYTES`, anything Pillow cannot read,
truncated images, and decompression bombs (over :data:`MAX_PIXELS`, checked from the
header before any pixel is decoded). Handled: every Pillow mode (palette, 16-bit and
32-bit grey, float, CMYK, alpha), animated files (first frame), EXIF rotation.

Transparent pixels become *background*: they are laid on white when the opaque ink is
dark and on black when it is light, so a digit drawn on a transparent canvas works either
way. When the image's background (its border) is light but the model was trained on
dark backgrounds (MNIST: white digits on black), the image is inverted; ``invert`` forces
or forbids that. Optionally the content is cropped and centred as MNIST's digits are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

MAX_BYTES = 10 * 1024 * 1024  # 10 MiB
MAX_PIXELS = 25_000_000  # well below Pillow's own bomb threshold (89 M), checked first
SUPPORTED = "PNG, JPEG, GIF, BMP, TIFF, WebP"


class UploadError(ValueError):
    """An uploaded file cannot be used; ``message`` is written for the user."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


@dataclass
class PreparedImage:
    """An upload converted to the model's input."""

    x: np.ndarray  # (C, H, W) float32 in [0, 1]
    original_size: tuple[int, int]  # (width, height) as uploaded
    original_mode: str  # Pillow mode as uploaded ("RGBA", "P", "I;16", ...)
    inverted: bool
    notes: list[str] = field(default_factory=list)  # what was done, for the user


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def border_brightness(img: np.ndarray) -> float:
    """Median of the outermost pixel ring of a (H, W) or (H, W, C) image in [0, 1]."""
    grey = img.mean(axis=2) if img.ndim == 3 else img
    ring = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(ring))


def _to_float_grey_or_rgb(img, channels: int) -> tuple[np.ndarray, list[str]]:
    """Any Pillow image -> float32 (H, W) for channels == 1 or (H, W, 3), in [0, 1];
    transparency composited onto a background that contrasts with the ink."""
    notes: list[str] = []
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        elif arr.size and (arr.max() > 1.0 or arr.min() < 0.0):
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            notes.append(f"{mode} pixels rescaled from [{lo:g}, {hi:g}] to [0, 1]")
        arr = np.clip(np.nan_to_num(arr), 0.0, 1.0)
        if mode.startswith("I;16"):
            notes.append("16-bit image scaled to [0, 1]")
        grey = arr.astype(np.float32)
        return (grey if channels == 1 else np.repeat(grey[:, :, None], 3, axis=2)), notes
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
        alpha = rgba[:, :, 3:4]
        colour = rgba[:, :, :3]
        if float(alpha.min()) < 1.0:
            opaque = alpha[:, :, 0] > 0.5
            ink = float(colour[opaque].mean()) if opaque.any() else 0.0
            background = 1.0 if ink < 0.5 else 0.0
            colour = colour * alpha + background * (1.0 - alpha)
            notes.append(f"transparent pixels laid on {'white' if background else 'black'} "
                         f"(the opaque pixels are {'dark' if background else 'light'})")
        rgb = colour
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        notes.append(f"converted from Pillow mode {mode}")
    if channels == 1:
        # ITU-R 601 luma, as Pillow's convert("L")
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return grey.astype(np.float32), notes
    return rgb.astype(np.float32), notes


def _center_content(arr: np.ndarray, threshold: float = 0.1, fill: float = 20 / 28) -> np.ndarray:
    """Crop (H, W[, C]) with a dark background to its content's bounding box and pad it
    to a square in which the content spans ``fill`` of the side (MNIST: 20 of 28 pixels)."""
    grey = arr.mean(axis=2) if arr.ndim == 3 else arr
    rows = np.flatnonzero(grey.max(axis=1) > threshold)
    cols = np.flatnonzero(grey.max(axis=0) > threshold)
    if len(rows) == 0 or len(cols) == 0:
        return arr
    crop = arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    side = int(np.ceil(max(crop.shape[:2]) / fill))
    out = np.zeros((side, side) + arr.shape[2:], dtype=arr.dtype)
    top = (side - crop.shape[0]) // 2
    left = (side - crop.shape[1]) // 2
    out[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return out


def _pad_square(arr: np.ndarray, background: float) -> np.ndarray:
    h, w = arr.shape[:2]
    side = max(h, w)
    if h == w:
        return arr
    out = np.full((side, side) + arr.shape[2:], background, dtype=arr.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = arr
    return out


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaging resize of a float (H, W[, C]) array in [0, 1] via Pillow's mode F."""
    from PIL import Image

    planes = [arr] if arr.ndim == 2 else [arr[:, :, c] for c in range(arr.shape[2])]
    out = [np.asarray(Image.fromarray(p.astype(np.float32), mode="F")
                      .resize((width, height), Image.Resampling.BOX if p.shape[0] >= height
                              else Image.Resampling.BILINEAR), dtype=np.float32)
           for p in planes]
    return np.clip(out[0] if arr.ndim == 2 else np.stack(out, axis=2), 0.0, 1.0)


def prepare_upload(data: bytes, image_shape: tuple[int, int, int], invert: bool | None = None,
                   dark_background: bool = True, center: bool = True,
                   max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> PreparedImage:
    """Decode ``data`` and convert it to ``image_shape`` (C, H, W) in [0, 1].

    ``dark_background``: whether the model's training images have dark backgrounds
    (MNIST-like). ``invert``: None inverts when the upload's background is on the other
    side; True/False force it. ``center``: crop to the content and centre it with MNIST's
    margin (only applied when the background is dark after inversion).
    Raises :class:`UploadError` with a message for the user."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels, height, width = image_shape
    if channels not in (1, 3):
        raise UploadError(f"the model expects {channels}-channel images; uploads can only be "
                          f"converted to 1 (grey) or 3 (RGB) channels")
    if not data:
        raise UploadError("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise UploadError(f"the file is {_mb(len(data))}; the limit is {_mb(max_bytes)}. "
                          f"A small image is plenty: it is shrunk to {height}×{width} pixels")
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise UploadError(f"the image is {w}×{h} = {w * h / 1e6:.0f} megapixels; the limit "
                              f"is {max_pixels / 1e6:.0f} (a file this small that claims so many "
                              f"pixels may be a decompression bomb)")
        if w < 1 or h < 1:
            raise UploadError(f"the image has no pixels ({w}×{h})")
        notes = []
        frames = int(getattr(img, "n_frames", 1))  # only multi-frame formats have it
        if frames > 1:
            img.seek(0)
            notes.append(f"first of {frames} frames used")
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadError(f"the image is too large to decode safely (decompression bomb "
                          f"protection): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(f"this file is not an image that can be read ({SUPPORTED}); "
                          f"first bytes: {data[:8]!r}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(f"the image file is truncated or corrupt: {exc}") from exc
    original_mode = img.mode
    try:
        arr, more = _to_float_grey_or_rgb(img, channels)
    except (OSError, ValueError) as exc:
        raise UploadError(f"cannot convert this image (Pillow mode {img.mode}): {exc}") from exc
    notes += more
    light = border_brightness(arr) > 0.5
    do_invert = (light == dark_background) if invert is None else bool(invert)
    if do_invert:
        arr = 1.0 - arr
        if invert is None:
            notes.append(f"inverted: the image has a {'light' if light else 'dark'} background, "
                         f"the model was trained on {'dark' if dark_background else 'light'} ones")
        else:
            notes.append("inverted, as asked")
    background = float(light != do_invert)  # brightness of the background now
    if center and background < 0.5:
        arr = _center_content(arr)
        notes.append("cropped to the drawing and centred with an MNIST-style margin")
    else:
        arr = _pad_square(arr, background)
    arr = _resize(arr, height, width)
    x = arr[None] if channels == 1 else arr.transpose(2, 0, 1)  # (C, H, W)
    return PreparedImage(x=np.ascontiguousarray(x, dtype=np.float32), original_size=(w, h),
                         original_mode=original_mode, inverted=do_invert, notes=notes)


def has_dark_background(images: np.ndarray) -> bool:
    """Whether training images (N, C, H, W) in [0, 1] mostly have dark borders."""
    images = np.asarray(images[:200], dtype=np.float32)
    ring = np.concatenate([images[:, :, 0].ravel(), images[:, :, -1].ravel(),
                           images[:, :, :, 0].ravel(), images[:, :, :, -1].ravel()])
    return float(np.median(ring)) < 0.5
