"""Turning a user's uploaded file into one model input (C, H, W) in [0, 1], or a clear
:class:`UploadError` saying what is wrong with it.

Uploads come from untrusted browsers, so each one is decoded within a memory budget
(:data:`MEMORY_BUDGET`). The file's header is read first, and an image whose decoding
would need more memory than that is refused before any pixel is decoded: over
:data:`MAX_PIXELS` (Pillow's own decompression-bomb limit is process-global, so it is not
relied on, nor changed), a WebP over a quarter of that (its decoder holds four copies),
a progressive JPEG whose coefficients alone would not fit, a TIFF whose compressed strips
or tiles are huge. Only the first frame of an animated or multi-page file is read; frames
are never counted (Pillow's ``n_frames`` reads every frame, quadratically for TIFF).

Decoding is at 8 bits per channel: a JPEG much larger than needed is decoded at 1/2, 1/4
or 1/8 of its size (``Image.draft``); 16-bit, 32-bit and float images are scaled to 8
bits, and every image is shrunk strip by strip (box filter) to at most
:data:`WORK_SIDE` pixels a side before the float work, so no full-size float copy exists.

Rejected: empty files, files over :data:`MAX_BYTES`, formats other than
:data:`SUPPORTED`, anything Pillow cannot read, truncated images, and the oversized
images above. Handled: every Pillow mode (palette, 16-bit and 32-bit grey, float, CMYK,
alpha), animated files (first frame), EXIF rotation.

Transparent pixels become *background*: they are laid on white when the opaque ink is
dark and on black when it is light, so a digit drawn on a transparent canvas works either
way. When the image's background (its border) is light but the model was trained on
dark backgrounds (MNIST: white digits on black), the image is inverted; ``invert`` forces
or forbids that. Optionally the content is cropped and centred as MNIST's digits are.

:func:`prepare_upload_cached` remembers the result (or the refusal) per file and options,
so a rerun of the page does not decode the same upload again.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image as PILImage

MAX_BYTES = 10 * 1024 * 1024  # 10 MiB

# The budget: one upload may raise the process's peak memory by at most MEMORY_BUDGET
# above its level before the call (the file's bytes, held by the caller, not counted).
# Pillow holds a decoded image at up to BYTES_PER_PIXEL bytes a pixel (RGB is padded to
# 4), so MAX_PIXELS decodes into at most 48 MiB; the format-specific limits below keep
# every decoder's extra buffers within the same 48 MiB ("decode bytes"), and everything
# after decoding works on a copy of at most WORK_SIDE x WORK_SIDE pixels (a few MiB).
MEMORY_BUDGET = 64 * 1024 * 1024
MAX_SIZE = (4096, 3072)  # phone photos (4032 x 3024) fit
MAX_PIXELS = MAX_SIZE[0] * MAX_SIZE[1]  # 12.6 megapixels
BYTES_PER_PIXEL = 4
# A baseline JPEG is decoded at 1/2, 1/4 or 1/8 scale when it is larger than needed, so
# its header may claim more pixels (the decoded size is still held to MAX_PIXELS); this
# bounds the time spent on one.
MAX_JPEG_PIXELS = 8192 * 8192
# libwebp keeps its canvas twice and hands Pillow a copy of the frame: 16 bytes a pixel.
WEBP_BYTES_PER_PIXEL = 16
# libtiff decodes a compressed TIFF's strip or tile into a buffer besides the image.
MAX_TIFF_BLOCK_BYTES = 4 * 1024 * 1024
WORK_SIDE = 512  # the image is shrunk to at most this many pixels a side first
STRIP_BYTES = 1024 * 1024  # converted and shrunk this many bytes of image at a time
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # Pillow's names (JPEG: also MPO)
SUPPORTED = "PNG, JPEG, GIF, BMP, TIFF, WebP"
# prepare_upload_cached: a few entries (a (1, 28, 28) input is 3 KiB), bounded in bytes
CACHE_ENTRIES = 32
CACHE_BYTES = 16 * 1024 * 1024

_ORIENTATION = 0x0112  # EXIF tag
_PILLOW_MODE_NOTED = ("P", "CMYK", "YCbCr", "LAB", "HSV", "1")
_FORMAT_NAMES = {"WEBP": "WebP"}


class UploadError(ValueError):
    """An uploaded file cannot be used; ``message`` is written for the user."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class PreparedImage:
    """An upload converted to the model's input; shared between reruns and sessions by
    :func:`prepare_upload_cached`, so it is frozen and ``x`` is read-only."""

    x: np.ndarray  # (C, H, W) float32 in [0, 1], read-only
    original_size: tuple[int, int]  # (width, height) as uploaded
    original_mode: str  # Pillow mode as uploaded ("RGBA", "P", "I;16", ...)
    inverted: bool
    notes: tuple[str, ...] = ()  # what was done, for the user


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _largest(pixels: int) -> str:
    """'12.6 megapixels, e.g. 4096×3072' for a pixel limit (4:3 like MAX_SIZE)."""
    scale = math.sqrt(pixels / MAX_PIXELS)
    w, h = int(MAX_SIZE[0] * scale), int(MAX_SIZE[1] * scale)
    return f"{pixels / 1e6:.1f} megapixels, e.g. {w}×{h}"


def _size(w: int, h: int) -> str:
    return f"{w}×{h} pixels ({w * h / 1e6:.1f} megapixels)"


def border_brightness(img: np.ndarray) -> float:
    """Median of the outermost pixel ring of a (H, W) or (H, W, C) image in [0, 1]."""
    grey = img.mean(axis=2) if img.ndim == 3 else img
    ring = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(ring))


# --------------------------------------------------------------------------- header checks

def _webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk (as Pillow reads it), or None."""
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_webp(data: bytes, max_pixels: int) -> None:
    """libwebp allocates its canvas when Pillow *opens* a WebP, so check it before."""
    if not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return
    size = _webp_size(data)
    if size is None:
        raise UploadError("the WebP file's header is truncated or not one that can be read; "
                          "save the image as PNG or JPEG")
    w, h = size
    limit = max_pixels * BYTES_PER_PIXEL // WEBP_BYTES_PER_PIXEL
    if w * h > limit:
        raise UploadError(f"the WebP image is {_size(w, h)}; the largest accepted WebP is "
                          f"{_largest(limit)}, as decoding WebP takes 4 times the memory "
                          f"(a PNG or JPEG may be up to {max_pixels / 1e6:.1f} megapixels)")


def _jpeg_coefficient_bytes(img: PILImage.Image) -> int:
    """The DCT coefficients libjpeg keeps for a whole progressive JPEG (2 bytes each)."""
    w, h = img.size
    layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * len(img.getbands())
    hmax = max(max(layer[1] for layer in layers), 1)
    vmax = max(max(layer[2] for layer in layers), 1)
    total = 0
    for _, hs, vs, _ in layers:
        cw, ch = math.ceil(w * hs / hmax), math.ceil(h * vs / vmax)
        total += math.ceil(cw / 8) * math.ceil(ch / 8) * 64 * 2
    return total


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The JPEG's start-of-frame marker (0xC0 baseline, 0xC2 progressive, ...), found by
    walking its segments' headers; None when there is none."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _tiff_block_bytes(img: PILImage.Image) -> int:
    """Bytes of the buffer libtiff decodes one compressed strip or tile into (0: none)."""
    tags = img.tag_v2  # type: ignore[attr-defined]
    if tags.get(259, 1) == 1:  # uncompressed: read straight into the image
        return 0
    w, h = img.size
    try:
        bits = tags.get(258, (8,))
        bits = sum(bits) if isinstance(bits, tuple) else int(bits)
        pixel_bytes = max(BYTES_PER_PIXEL, math.ceil(bits / 8))  # YCbCr is read as RGBA
        if 322 in tags and 323 in tags:  # tiled
            return int(tags[322]) * int(tags[323]) * pixel_bytes
        return min(int(tags.get(278, h)), h) * w * pixel_bytes
    except (TypeError, ValueError) as exc:
        raise UploadError(f"the TIFF's header is malformed: {exc}") from exc


def _check_decode_cost(img: PILImage.Image, data: bytes, max_pixels: int) -> None:
    """Refuse, from the header alone, an image whose first frame would take more than the
    decode bytes (BYTES_PER_PIXEL * max_pixels) to decode."""
    w, h = img.size
    pixels = w * h
    budget = BYTES_PER_PIXEL * max_pixels
    marker = _jpeg_frame_marker(data) if img.format in ("JPEG", "MPO") else None
    # sequential (Huffman or arithmetic) and progressive JPEGs decode at a reduced scale;
    # lossless and hierarchical ones are held to max_pixels like other formats
    if marker in (0xC0, 0xC1, 0xC9, 0xC2, 0xCA):
        limit = max(max_pixels, MAX_JPEG_PIXELS)
        if pixels > limit:
            raise UploadError(f"the JPEG image is {_size(w, h)}; the largest accepted JPEG is "
                              f"{_largest(limit)}")
        if marker in (0xC2, 0xCA):  # libjpeg keeps every coefficient until the end
            need = _jpeg_coefficient_bytes(img)
            if need > budget:
                most = int(pixels * budget / need)
                raise UploadError(f"the image is a progressive JPEG of {_size(w, h)}, which "
                                  f"needs {_mb(need)} to decode; the limit is {_mb(budget)} "
                                  f"(about {most / 1e6:.1f} megapixels for this JPEG): save "
                                  f"it as a baseline JPEG or a PNG")
        return
    if pixels > max_pixels:
        bomb = (" (a file this small that claims so many pixels may be a decompression bomb)"
                if len(data) * 100 < pixels else "")
        raise UploadError(f"the image is {_size(w, h)}; the largest accepted is "
                          f"{_largest(max_pixels)}{bomb}")
    if img.format == "WEBP":
        limit = budget // WEBP_BYTES_PER_PIXEL
        if pixels > limit:  # already checked from the bytes; a second opinion from Pillow
            raise UploadError(f"the WebP image is {_size(w, h)}; the largest accepted WebP is "
                              f"{_largest(limit)}")
    if img.format == "TIFF":
        block = _tiff_block_bytes(img)
        if block > MAX_TIFF_BLOCK_BYTES:
            raise UploadError(f"this TIFF stores its pixels in compressed blocks of "
                              f"{_mb(block)}; the largest accepted block is "
                              f"{_mb(MAX_TIFF_BLOCK_BYTES)} (save it as PNG, or as a TIFF "
                              f"with smaller strips)")
        if img.tag_v2.get(274, 1) in range(2, 9) and 2 * pixels > max_pixels:  # type: ignore[attr-defined]
            # Pillow rotates a TIFF as it loads it: a second full-size copy
            raise UploadError(f"the image is a rotated TIFF (EXIF orientation) of "
                              f"{_size(w, h)}; the largest accepted rotated TIFF is "
                              f"{_largest(max_pixels // 2)}")


def _first_frame(img: PILImage.Image) -> str | None:
    """A note when the file holds more frames than the first, which alone is used. Frames
    are never counted: PNG, WebP, TIFF and MPO say so in their headers; for GIF Pillow looks
    for a second frame, skipping the first's data without decoding it."""
    if not getattr(img, "is_animated", False):
        return None
    img.seek(0)
    return {"TIFF": "multi-page TIFF: the first page was used",
            "MPO": "multi-picture JPEG: the first picture was used"}.get(
        str(img.format), f"animated {_FORMAT_NAMES.get(str(img.format), img.format)}: the "
                         f"first frame was used")


def _jpeg_draft(img: PILImage.Image, channels: int, work: int, max_pixels: int) -> None:
    """Decode a JPEG at the smallest of 1/1, 1/2, 1/4, 1/8 scale still >= ``work`` pixels
    a side (and as grey when the model wants grey), then hold it to ``max_pixels``."""
    w, h = img.size
    factor = max(1, -(-max(w, h) // work))
    mode = "L" if channels == 1 and img.mode == "RGB" else None
    if factor > 1 or mode:
        img.draft(mode, (-(-w // factor), -(-h // factor)))
    dw, dh = img.size
    if dw * dh > max_pixels:
        raise UploadError(f"the JPEG image is {_size(w, h)} and decodes at {dw}×{dh}; the "
                          f"largest accepted is {_largest(max_pixels)}")


# --------------------------------------------------------------------------- decoding

def _wide_to_8bit(img: PILImage.Image, notes: list[str]) -> Callable[[PILImage.Image],
                                                                      PILImage.Image]:
    """A converter of strips of a 16-bit, 32-bit integer or float image to 8-bit "L".
    16-bit spans [0, 65535]; "I" and "F" are taken as [0, 1] unless their (finite)
    values leave it, when they are rescaled from [min, max], as before."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16"):
        notes.append("16-bit image scaled to 8 bits")

        def sixteen(strip: PILImage.Image) -> PILImage.Image:
            a = np.asarray(strip).astype(np.uint32)
            return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))
        return sixteen
    lo, hi = math.inf, -math.inf
    w, h = img.size
    rows = max(1, STRIP_BYTES // (BYTES_PER_PIXEL * w))
    for top in range(0, h, rows):
        a = np.asarray(img.crop((0, top, w, min(h, top + rows))))
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if lo > hi:  # no finite pixel
        lo = hi = 0.0
    rescale = lo < 0.0 or hi > 1.0
    if rescale:
        notes.append(f"{mode} pixels rescaled from [{lo:g}, {hi:g}] to [0, 1]")
    dtype = np.float32 if mode == "F" else np.float64  # "I" holds 32-bit integers

    def wide(strip: PILImage.Image) -> PILImage.Image:
        a = np.array(strip, dtype=dtype)  # one copy, then in place
        if rescale:
            np.subtract(a, lo, out=a)
            np.multiply(a, 1.0 / (hi - lo) if hi > lo else 0.0, out=a)
        np.nan_to_num(a, copy=False)
        np.clip(a, 0.0, 1.0, out=a)
        np.multiply(a, 255.0, out=a)
        return Image.fromarray(np.rint(a, out=a).astype(np.uint8))
    return wide


def _shrink_to_8bit(img: PILImage.Image, work: int) -> tuple[PILImage.Image, list[str]]:
    """The loaded image as 8-bit "L", "RGB" or "RGBA", box-filtered to at most ``work``
    pixels a side, converted and shrunk a strip at a time (no full-size copy)."""
    from PIL import Image

    notes: list[str] = []
    mode = img.mode
    convert: Callable[[PILImage.Image], PILImage.Image]
    if mode.startswith("I") or mode == "F":
        out_mode = "L"
        convert = _wide_to_8bit(img, notes)
    else:
        alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        out_mode = "RGBA" if alpha else "L" if mode in ("1", "L") else "RGB"
        if mode in _PILLOW_MODE_NOTED:
            notes.append(f"converted from Pillow mode {mode}")

        def convert(strip: PILImage.Image) -> PILImage.Image:
            return strip.convert(out_mode)  # a copy when already out_mode
    w, h = img.size
    factor = max(1, -(-max(w, h) // work))
    if factor == 1:
        return convert(img), notes
    out = Image.new(out_mode, (-(-w // factor), -(-h // factor)))
    rows = factor * max(1, STRIP_BYTES // (factor * w * BYTES_PER_PIXEL))
    for top in range(0, h, rows):  # every strip but the last a multiple of factor rows
        strip = convert(img.crop((0, top, w, min(h, top + rows))))
        out.paste(strip.reduce(factor), (0, top // factor))  # RGBA: premultiplied
    return out, notes


def _to_float_grey_or_rgb(img: PILImage.Image, channels: int) -> tuple[np.ndarray, list[str]]:
    """An 8-bit "L", "RGB" or "RGBA" image -> float32 (H, W) for channels == 1 or
    (H, W, 3), in [0, 1]; transparency composited onto a background that contrasts
    with the ink."""
    notes: list[str] = []
    if img.mode == "L":
        grey = np.asarray(img, dtype=np.float32) / 255.0
        return (grey if channels == 1 else np.repeat(grey[:, :, None], 3, axis=2)), notes
    if img.mode == "RGBA":
        rgba = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 4)
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


def _orientation(img: PILImage.Image) -> int:
    """The EXIF orientation (1-8; 1 when absent or malformed). A TIFF's is applied, and
    removed, by Pillow as it loads the image."""
    value = img.getexif().get(_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _transpose(img: PILImage.Image, orientation: int) -> PILImage.Image:
    """Apply an EXIF orientation, as ``ImageOps.exif_transpose``, to the small image."""
    from PIL import Image

    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return img if method is None else img.transpose(method)


def _decode(data: bytes, channels: int, work: int, max_pixels: int
            ) -> tuple[PILImage.Image, tuple[int, int], str, list[str]]:
    """The first frame as a small 8-bit image, its (width, height) and Pillow mode as
    uploaded, and notes; every check made before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    _check_webp(data, max_pixels)
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise UploadError(f"the image is too large to decode safely (decompression bomb "
                          f"protection): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(f"this file is not an image that can be read ({SUPPORTED}); "
                          f"first bytes: {data[:8]!r}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(f"the image file is truncated or corrupt: {exc}") from exc
    with img:
        try:
            w, h = img.size
            if w < 1 or h < 1:
                raise UploadError(f"the image has no pixels ({w}×{h})")
            _check_decode_cost(img, data, max_pixels)
            frame_note = _first_frame(img)
            notes = [frame_note] if frame_note else []
            original_mode = img.mode
            if img.format in ("JPEG", "MPO"):
                _jpeg_draft(img, channels, work, max_pixels)
            img.load()
            orientation = _orientation(img)
        except UploadError:
            raise
        except Image.DecompressionBombError as exc:
            raise UploadError(f"the image is too large to decode safely (decompression bomb "
                              f"protection): {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UploadError(f"the image file is truncated or corrupt: {exc}") from exc
        try:
            small, more = _shrink_to_8bit(img, work)
        except (OSError, ValueError) as exc:
            raise UploadError(f"cannot convert this image (Pillow mode {img.mode}): "
                              f"{exc}") from exc
    return _transpose(small, orientation), (w, h), original_mode, notes + more


def prepare_upload(data: bytes, image_shape: tuple[int, int, int], invert: bool | None = None,
                   dark_background: bool = True, center: bool = True,
                   max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> PreparedImage:
    """Decode ``data`` and convert it to ``image_shape`` (C, H, W) in [0, 1].

    ``dark_background``: whether the model's training images have dark backgrounds
    (MNIST-like). ``invert``: None inverts when the upload's background is on the other
    side; True/False force it. ``center``: crop to the content and centre it with MNIST's
    margin (only applied when the background is dark after inversion). ``max_pixels``:
    the most pixels decoded at full size (the memory budget's limit).
    Raises :class:`UploadError` with a message for the user. See
    :func:`prepare_upload_cached` for the page, which reruns often."""
    channels, height, width = image_shape
    if channels not in (1, 3):
        raise UploadError(f"the model expects {channels}-channel images; uploads can only be "
                          f"converted to 1 (grey) or 3 (RGB) channels")
    if not data:
        raise UploadError("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise UploadError(f"the file is {_mb(len(data))}; the limit is {_mb(max_bytes)}. "
                          f"A small image is plenty: it is shrunk to {height}×{width} pixels")
    work = max(WORK_SIDE, 2 * max(height, width))
    small, (w, h), original_mode, notes = _decode(data, channels, work, max_pixels)
    arr, more = _to_float_grey_or_rgb(small, channels)
    del small
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
    x = np.array(arr[None] if channels == 1 else arr.transpose(2, 0, 1),  # (C, H, W)
                 dtype=np.float32, order="C")
    x.setflags(write=False)
    return PreparedImage(x=x, original_size=(w, h), original_mode=original_mode,
                         inverted=do_invert, notes=tuple(notes))


# --------------------------------------------------------------------------- cache

_CacheKey = tuple[str, tuple[int, ...], bool | None, bool, bool]


class UploadCache:
    """A thread-safe LRU of prepared uploads and of refusals (their messages), keyed by the
    SHA-256 of the file's bytes and the options; at most ``max_entries`` entries and
    ``max_bytes`` bytes of arrays and messages. One per process, shared by all sessions:
    a hit returns the very same (frozen, read-only) :class:`PreparedImage`."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[_CacheKey, tuple[PreparedImage | str, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @staticmethod
    def _unwrap(value: PreparedImage | str) -> PreparedImage:
        if isinstance(value, str):
            raise UploadError(value)
        return value

    def prepare(self, data: bytes, image_shape: tuple[int, int, int],
                invert: bool | None = None, dark_background: bool = True,
                center: bool = True) -> PreparedImage:
        """:func:`prepare_upload`, or its earlier result for the same bytes and options."""
        key: _CacheKey = (hashlib.sha256(data).hexdigest(), tuple(int(s) for s in image_shape),
                          None if invert is None else bool(invert), bool(dark_background),
                          bool(center))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            return self._unwrap(hit[0])
        value: PreparedImage | str
        try:  # outside the lock: other sessions' uploads do not wait for this one
            value = prepare_upload(data, image_shape, invert=invert,
                                   dark_background=dark_background, center=center)
            size = value.x.nbytes + sum(len(n) for n in value.notes)
        except UploadError as exc:
            value, size = exc.message, len(exc.message)
        with self._lock:
            raced = self._entries.get(key)
            if raced is not None:  # another session prepared the same file meanwhile
                self._entries.move_to_end(key)
                value = raced[0]
            elif size <= self.max_bytes:
                self._entries[key] = (value, size)
                self._bytes += size
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
        return self._unwrap(value)


UPLOAD_CACHE = UploadCache()


def prepare_upload_cached(data: bytes, image_shape: tuple[int, int, int],
                          invert: bool | None = None, dark_background: bool = True,
                          center: bool = True) -> PreparedImage:
    """:func:`prepare_upload` through the process-wide :data:`UPLOAD_CACHE`: a rerun with
    the same file and options returns the same :class:`PreparedImage` (or raises the same
    :class:`UploadError`) without decoding the file again."""
    return UPLOAD_CACHE.prepare(data, image_shape, invert=invert,
                                dark_background=dark_background, center=center)


def has_dark_background(images: np.ndarray) -> bool:
    """Whether training images (N, C, H, W) in [0, 1] mostly have dark borders."""
    images = np.asarray(images[:200], dtype=np.float32)
    ring = np.concatenate([images[:, :, 0].ravel(), images[:, :, -1].ravel(),
                           images[:, :, :, 0].ravel(), images[:, :, :, -1].ravel()])
    return float(np.median(ring)) < 0.5
