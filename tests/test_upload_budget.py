"""Uploads within a budget (explorer/uploads.py): an untrusted file costs at most
MEMORY_BUDGET of peak memory (measured in a subprocess), oversized images are refused from
their headers before any pixel is decoded, multi-frame files are read from their first
frame without counting frames, 16-bit and float images decode to 8 bits, and the per-file
cache returns the same prepared image for the same bytes and options.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageFile, TiffImagePlugin, WebPImagePlugin

from explorer import uploads
from explorer.uploads import (
    MAX_PIXELS,
    MEMORY_BUDGET,
    UploadCache,
    UploadError,
    prepare_upload,
    prepare_upload_cached,
)

SHAPE = (1, 28, 28)
REPO = Path(__file__).resolve().parents[1]


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@lru_cache(maxsize=4)
def stroke_rgba_png(width: int, height: int) -> bytes:
    """A transparent RGBA PNG with an opaque black vertical stroke (a "1"), written row by
    row so the test never holds the pixels: 5000 x 5000 compresses to about 100 KB."""
    blank = b"\0" + b"\0\0\0\0" * width
    stroke = b"\0" + b"\0\0\0\0" * (width * 2 // 5) + b"\0\0\0\xff" * (width // 5) \
        + b"\0\0\0\0" * (width - width * 2 // 5 - width // 5)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(stroke if height // 5 <= y < height * 4 // 5 else blank)
                    for y in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def digit(size: int = 8) -> np.ndarray:
    pixels = np.zeros((size, size), np.uint8)
    pixels[1:-1, size // 2 - 1: size // 2 + 1] = 255
    return pixels


# --------------------------------------------------------------------------- memory budget

CHILD = textwrap.dedent("""
    import json, sys
    from explorer.uploads import UploadError, prepare_upload

    def status(field):  # bytes; VmHWM: this process's peak RSS (ru_maxrss would include
        # the forking parent's, carried over exec)
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    prepare_upload(open(sys.argv[2], "rb").read(), (1, 28, 28))  # load the decoders
    data = open(sys.argv[1], "rb").read()
    before = status("VmRSS")
    try:
        prepared = prepare_upload(data, (1, 28, 28))
        outcome = {"size": prepared.original_size, "notes": prepared.notes}
    except UploadError as exc:
        outcome = {"refused": exc.message}
    print(json.dumps({"rise": status("VmHWM") - before, **outcome}))
""")


def peak_rise(tmp_path: Path, data: bytes, warm: bytes) -> dict:
    """Run prepare_upload(data) in a fresh interpreter: the rise of its peak RSS over its
    RSS just before the call (the decoders already loaded by a small image, ``warm``),
    an upper bound on the call's own peak."""
    (tmp_path / "upload").write_bytes(data)
    (tmp_path / "warm").write_bytes(warm)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "upload"),
                          str(tmp_path / "warm")], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_huge_rgba_png_is_refused_within_the_budget(tmp_path):
    data = stroke_rgba_png(5000, 5000)  # as in the finding: a small file, 25 megapixels
    assert len(data) < 200_000
    result = peak_rise(tmp_path, data, stroke_rgba_png(600, 600))
    assert "5000×5000" in result["refused"] and "largest accepted" in result["refused"]
    assert result["rise"] < MEMORY_BUDGET // 8, result


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_largest_accepted_rgba_png_stays_within_the_budget(tmp_path):
    width, height = uploads.MAX_SIZE
    assert width * height == MAX_PIXELS
    result = peak_rise(tmp_path, stroke_rgba_png(width, height), stroke_rgba_png(600, 600))
    assert result["size"] == [width, height], result
    assert result["rise"] < MEMORY_BUDGET, f"{result['rise'] / 2**20:.1f} MiB"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    photo = Image.new("RGB", (4032, 3024), "white")  # a phone photo of a "1"
    photo.paste((0, 0, 0), (1900, 600, 2100, 2400))
    warm = encode(Image.new("RGB", (600, 600), "white"), "JPEG")
    result = peak_rise(tmp_path, encode(photo, "JPEG", quality=90), warm)
    assert result["size"] == [4032, 3024], result
    # decoded at 1/4 scale: ~3 MiB, where the full image alone would be 47 MiB
    assert result["rise"] < MEMORY_BUDGET // 4, f"{result['rise'] / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- header checks

REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {  # name -> (file, in the message)
    "png": (lambda: stroke_rgba_png(5000, 5000),
            "the image is 5000×5000 pixels (25.0 megapixels); the largest accepted is "
            "12.6 megapixels, e.g. 4096×3072"),
    "webp": (lambda: encode(Image.new("RGB", (2049, 1537)), "WEBP", lossless=True),
             "the largest accepted WebP is 3.1 megapixels"),
    # 4:4:4 coefficients: 2 bytes x 3 x 8.8 M = 50.6 MiB
    "progressive": (lambda: encode(Image.new("RGB", (3400, 2600)), "JPEG", progressive=True,
                                   subsampling=0), "progressive JPEG of 3400×2600 pixels"),
    "tiff-strip": (lambda: encode(Image.new("RGBA", (1025, 1024)), "TIFF",
                                  compression="tiff_lzw", strip_size=1 << 30),
                   "compressed blocks of 4.0 MB; the largest accepted block"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_oversized_images_are_refused_before_decoding(name, monkeypatch):
    write, message = REFUSED[name]
    data = write()

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", no_decoding)
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", no_decoding)  # opening
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # another module switched it off
    with pytest.raises(UploadError) as err:
        prepare_upload(data, SHAPE)
    assert message in err.value.message
    assert "\n" not in err.value.message


# --------------------------------------------------------------------------- frames

def many_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of ``pages`` grey pages: the first an 8 x 8 digit, the rest
    1 x 1, each IFD pointing at the next (written directly: Pillow would take long)."""
    pixels = digit().tobytes()
    ifd_size = 2 + 9 * 12 + 4
    first = 8 + len(pixels)
    out = bytearray(b"II*\0" + struct.pack("<I", first) + pixels)
    for page in range(pages):
        side = 8 if page == 0 else 1
        entries = [(256, 3, side), (257, 3, side), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                   (273, 4, 8), (277, 3, 1), (278, 3, side), (279, 4, side * side)]
        nxt = first + (page + 1) * ifd_size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHII", tag, kind, 1, value)
        out += struct.pack("<I", nxt)
    return bytes(out)


@pytest.fixture
def n_frames_forbidden(monkeypatch):
    def counted(self):
        raise AssertionError("n_frames read: it reads every frame")
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames", property(counted))
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "n_frames", property(counted))


def test_many_page_tiff_uses_the_first_page_without_counting(n_frames_forbidden):
    data = many_page_tiff(20_000)
    assert len(data) < uploads.MAX_BYTES
    prepared = prepare_upload(data, (1, 8, 8), invert=False, center=False)
    assert prepared.original_size == (8, 8)
    np.testing.assert_allclose(prepared.x[0], digit() / 255.0, atol=1e-6)
    assert "multi-page TIFF: the first page was used" in prepared.notes


def test_animated_gif_uses_the_first_frame_without_counting(n_frames_forbidden):
    frames = [Image.fromarray(digit()), Image.fromarray(255 - digit()), Image.new("L", (8, 8))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    prepared = prepare_upload(data, (1, 8, 8), invert=False, center=False)
    np.testing.assert_allclose(prepared.x[0], digit() / 255.0, atol=1e-6)
    assert "animated GIF: the first frame was used" in prepared.notes


# --------------------------------------------------------------------------- 8 bits

def assert_8_bit(x: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(x * 255.0, np.rint(x * 255.0), atol=1e-3)  # 8-bit levels
    np.testing.assert_allclose(x * 255.0, expected, atol=1e-3)


def test_16_bit_png_decodes_to_8_bits():
    values = (np.arange(64, dtype=np.uint16) * 1000 + 7).reshape(8, 8)  # 7 ... 63007
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    prepared = prepare_upload(encode(img), (1, 8, 8), invert=False, center=False)
    assert prepared.original_mode == "I;16"
    assert_8_bit(prepared.x[0], np.rint(values / 257.0))
    assert any("16-bit" in n for n in prepared.notes)


def test_float_tiffs_decode_to_8_bits():
    unit = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)  # taken as [0, 1]
    prepared = prepare_upload(encode(Image.fromarray(unit), "TIFF"), (1, 8, 8), invert=False,
                              center=False)
    assert prepared.original_mode == "F"
    assert_8_bit(prepared.x[0], np.rint(unit * 255.0))
    wide = unit * 105.0 - 5.0  # outside [0, 1]: rescaled from [min, max]
    prepared = prepare_upload(encode(Image.fromarray(wide), "TIFF"), (1, 8, 8), invert=False,
                              center=False)
    assert_8_bit(prepared.x[0], np.rint(unit * 255.0))
    assert "F pixels rescaled from [-5, 100] to [0, 1]" in prepared.notes


# --------------------------------------------------------------------------- cache

def test_cache_returns_the_same_prepared_image_per_file_and_options(monkeypatch):
    calls = []
    real = uploads.prepare_upload

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(uploads, "prepare_upload", counting)
    uploads.UPLOAD_CACHE.clear()
    data = encode(Image.fromarray(digit(28)))
    first = prepare_upload_cached(data, SHAPE, invert=None, dark_background=True, center=True)
    assert prepare_upload_cached(data, SHAPE, invert=None, dark_background=True,
                                 center=True) is first
    assert prepare_upload_cached(bytes(data), SHAPE) is first  # equal bytes, not the object
    other = prepare_upload_cached(data, SHAPE, invert=True)
    assert other is not first and other.inverted
    assert len(calls) == 2
    assert not first.x.flags.writeable
    with pytest.raises(ValueError):
        first.x[0, 0, 0] = 1.0
    # a refusal is remembered too: the same message, without reading the file again
    for _ in range(2):
        with pytest.raises(UploadError, match="not an image"):
            prepare_upload_cached(b"%PDF-1.4 hello", SHAPE)
    assert len(calls) == 3
    uploads.UPLOAD_CACHE.clear()


def test_cache_evicts_by_its_byte_cap_and_is_thread_safe():
    files = [encode(Image.fromarray(np.roll(digit(28), shift, axis=1))) for shift in range(4)]
    entry = prepare_upload(files[0], SHAPE).x.nbytes  # 3136 bytes
    cache = UploadCache(max_entries=100, max_bytes=2 * entry + 200)  # room for two
    a, b = cache.prepare(files[0], SHAPE), cache.prepare(files[1], SHAPE)
    assert cache.prepare(files[0], SHAPE) is a  # a is now the most recently used
    cache.prepare(files[2], SHAPE)  # evicts b, the least recently used
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.prepare(files[0], SHAPE) is a
    assert cache.prepare(files[1], SHAPE) is not b
    shared = UploadCache()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: shared.prepare(files[3], SHAPE), range(32)))
    assert all(r is results[0] for r in results) and len(shared) == 1
