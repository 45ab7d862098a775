"""The explorer's logic without Streamlit: run listing, inference (checked against
torch.distributions / numpy references), slider order and bounds, map placement,
figures and PNGs, the live decoder, and uploads (good files of every mode, bad files).
"""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import figures
from explorer.inference import (
    available_projections,
    decode_mean,
    dimension_order,
    map_coords,
    place_on_map,
    sample_terms,
    slider_bounds,
)
from explorer.live import build_live_decoder
from explorer.onnx_model import load_onnx_model
from explorer.runs import list_runs, openable_runs
from explorer.uploads import (
    MAX_BYTES,
    UploadError,
    border_brightness,
    has_dark_background,
    prepare_upload,
)
from training.rundir import load_run, read_latents

SHAPE = (1, 28, 28)


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# --------------------------------------------------------------------------- runs

def test_list_runs_newest_first_and_names_broken_ones(tiny_run, tiny_ae_run, copy_run, tmp_path):
    a = copy_run(tiny_run, "a")
    b = copy_run(tiny_ae_run, "b")
    os.utime(a / "config.json", (1_000, 1_000))
    os.utime(b / "config.json", (2_000, 2_000))
    broken = tmp_path / "c"
    broken.mkdir()
    (broken / "config.json").write_text("[]")
    half = copy_run(tiny_run, "d")
    (half / "model.safetensors").unlink()
    os.utime(half / "config.json", (3_000, 3_000))
    (tmp_path / "not-a-run").mkdir()

    os.utime(broken / "config.json", (500, 500))
    entries = list_runs(tmp_path)
    assert [e.name for e in entries] == ["d", "b", "a", "c"]  # newest config.json first
    assert [e.name for e in openable_runs(tmp_path)] == ["b", "a"]
    by_name = {e.name: e for e in entries}
    assert "not-a-run" not in by_name
    assert "missing" in by_name["c"].problem
    assert "model.safetensors" in by_name["d"].problem
    assert by_name["b"].model == "ae" and by_name["a"].latent_dim == 2
    assert "VAE z=2" in by_name["a"].label() and "cannot open" in by_name["c"].label()
    assert list_runs(tmp_path / "nowhere") == []


# --------------------------------------------------------------------------- inference

def test_decode_mean_is_sigmoid_of_the_decoder(tiny_run):
    run, model = load_run(tiny_run), load_onnx_model(tiny_run)  # torch reference, app's model
    z = np.array([[0.5, -1.0], [0.0, 0.0]], dtype=np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(run.model.decode(torch.from_numpy(z))).permute(0, 2, 3, 1)
    out = decode_mean(model, z)
    assert out.shape == (2, 8, 8, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(decode_mean(model, z[0]), out[0], atol=1e-6)
    with pytest.raises(ValueError, match="3 dimensions"):
        decode_mean(model, np.zeros(3))


def test_sample_terms_match_torch_distributions(tiny_run):
    """KL against torch.distributions.kl_divergence, reconstruction against Bernoulli
    log-probabilities of the same reparameterised samples, both per sample in nats."""
    from torch.distributions import Bernoulli, Normal, kl_divergence

    run, model = load_run(tiny_run), load_onnx_model(tiny_run)
    from training.data import load_digits

    x = load_digits().test_x[3]  # (1, 8, 8)
    terms = sample_terms(model, x.numpy(), samples=200, seed=5)
    with torch.no_grad():
        mu, logvar = run.model.encode(x[None])
        sigma = (0.5 * logvar).exp()
        kl_ref = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0))[0]  # (D,)
        # the same eps sample_terms draws (NumPy's generator, seeded)
        eps = np.random.default_rng(5).standard_normal((200, 2)).astype(np.float32)
        eps = torch.from_numpy(eps)
        z = mu + sigma * eps  # (K, D)
        likelihood = Bernoulli(logits=run.model.decode(z), validate_args=False)
        log_px = likelihood.log_prob(x.expand(200, -1, -1, -1))  # (K, 1, 8, 8)
        recon_ref = -log_px.flatten(1).sum(1)  # (K,)
    np.testing.assert_allclose(terms.kl_per_dim, kl_ref.numpy(), rtol=1e-5, atol=1e-6)
    assert terms.recon == pytest.approx(float(recon_ref.mean()), rel=1e-5)
    assert terms.recon_std_err == pytest.approx(float(recon_ref.std() / np.sqrt(200)), rel=1e-4)
    assert terms.elbo == pytest.approx(-(terms.recon + terms.kl))
    assert terms.x.shape == (8, 8, 1) and terms.recon_image.shape == (8, 8, 1)
    again = sample_terms(model, x.numpy(), samples=200, seed=5)
    assert again.recon == terms.recon  # seeded: the panel shows stable numbers


def test_sample_terms_of_an_autoencoder_have_no_kl(tiny_ae_run):
    run = load_run(tiny_ae_run)
    x = torch.rand(1, 8, 8)
    terms = sample_terms(load_onnx_model(tiny_ae_run), x.numpy(), samples=50)
    assert not terms.is_vae and terms.kl == 0.0 and terms.samples == 1
    with torch.no_grad():
        logits = run.model.decode(run.model.encode(x[None])[0])
    p = torch.sigmoid(logits).numpy().ravel().astype(np.float64)
    xs = x.numpy().ravel()
    bce = -(xs * np.log(p) + (1 - xs) * np.log(1 - p)).sum()
    assert terms.recon == pytest.approx(bce, rel=1e-4)


def test_dimension_order_puts_high_kl_first_and_bounds_cover_the_prior():
    rng = np.random.default_rng(0)
    mu = np.column_stack([rng.normal(0, 0.01, 500), rng.normal(0, 2.0, 500),
                          rng.normal(0, 0.5, 500)]).astype(np.float32)
    logvar = np.column_stack([np.zeros(500), np.full(500, -4.0), np.full(500, -1.0)])
    latents = {"mu": mu, "logvar": logvar.astype(np.float32)}
    assert dimension_order(latents).tolist() == [1, 2, 0]  # dim 0 is the prior: KL ~ 0
    assert dimension_order({"mu": mu}).tolist() == [1, 2, 0]  # AE: by variance
    lo, hi = slider_bounds(latents, is_vae=True)
    assert (lo <= -3).all() and (hi >= 3).all()
    assert lo[1] <= mu[:, 1].min() and hi[1] >= mu[:, 1].max()
    lo, hi = slider_bounds({"mu": mu * 100}, is_vae=False)
    assert (lo <= mu.min(0) * 100).all() and (hi >= mu.max(0) * 100).all()
    assert np.all(lo * 2 == np.round(lo * 2))  # rounded to 0.5


def test_map_placement_raw_pca_and_tsne(tiny_run, tiny_run_z4):
    raw = read_latents(tiny_run)
    assert available_projections(raw) == ["raw"]
    np.testing.assert_allclose(place_on_map(raw["mu"][:3], raw, "raw"), raw["mu"][:3])
    z4 = read_latents(tiny_run_z4)
    assert available_projections(z4) == ["pca", "tsne"]
    # PCA is linear: the stored projection of the test set is reproduced exactly
    np.testing.assert_allclose(place_on_map(z4["mu"][:5], z4, "pca"), z4["pca"][:5], atol=1e-4)
    # t-SNE: a test point lands exactly on its own t-SNE position (nearest neighbour)
    np.testing.assert_allclose(place_on_map(z4["mu"][7], z4, "tsne")[0], z4["tsne"][7],
                               atol=1e-3)
    assert map_coords(z4, "tsne").shape == (len(z4["mu"]), 2)
    with pytest.raises(ValueError, match="no cached"):
        map_coords(raw, "tsne")


# --------------------------------------------------------------------------- figures

def test_png_bytes_roundtrip_and_upscaling():
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
    pixels = decode_png(figures.png_bytes(image, scale=5))
    assert pixels.shape == (15, 20)
    np.testing.assert_array_equal(pixels[::5, ::5], figures.to_uint8(image))
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255
    rgb = decode_png(figures.png_bytes(np.ones((2, 2, 3), np.float32) * 0.5, scale=1))
    assert rgb.shape == (2, 2, 3) and (rgb == 128).all()
    assert figures.data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBOR")
    assert figures.scale_for(28, 224) == 8 and figures.scale_for(8, 224) == 28


def test_difference_image_colours():
    x = np.zeros((1, 3, 1), np.float32)
    recon = np.array([[[1.0], [0.0], [0.5]]], np.float32)
    x[0, 1] = 1.0
    diff = figures.difference_rgb(x, recon)
    assert tuple(diff[0, 0]) == (255, 0, 0)  # recon brighter: red
    assert tuple(diff[0, 1]) == (0, 0, 255)  # recon darker: blue
    assert tuple(diff[0, 2]) == (255, 128, 128)  # half brighter: light red


def test_large_maps_are_webgl_small_ones_svg():
    rng = np.random.default_rng(0)
    for n, kind in ((figures.WEBGL_MIN_POINTS, "scatter"),
                    (figures.WEBGL_MIN_POINTS + 1, "scattergl")):
        coords = rng.normal(size=(n, 2)).astype(np.float32)
        labels = np.arange(n) % 3
        traces = figures.label_traces(coords, labels, ["a", "b", "c"], np.zeros((n, 1)),
                                      hover=lambda name: name)
        assert {t.type for t in traces} == {kind}
        assert [t.name for t in traces] == ["a", "b", "c"]
        assert sum(len(t.x) for t in traces) == n


def test_elbo_latex_and_curves():
    tex = figures.elbo_latex(85.123, 6.5)
    assert "-85.12" in tex and "6.50" in tex and "-91.62" in tex and r"\text{nats}" in tex
    rows = [{"epoch": e, "train_recon": 10 - e, "test_recon": 11 - e, "train_kl": e,
             "test_kl": e, "train_loss": 10, "test_loss": 11} for e in (1, 2, 3)]
    fig = figures.training_curves_figure(rows)
    assert len(fig.data) == 6 and list(fig.data[0].y) == [9, 8, 7]
    bars = figures.kl_bar_figure(np.array([0.1, 2.0, 0.5]), order=np.array([1, 2, 0]),
                                 mean_kl=np.array([0.0, 1.0, 0.2]))
    assert list(bars.data[0].x) == ["z1", "z2", "z0"] and list(bars.data[0].y) == [2.0, 0.5, 0.1]


def test_live_decoder_renders_z_and_prior_density(tiny_run_z4):
    model = load_onnx_model(tiny_run_z4)
    latents = read_latents(tiny_run_z4)
    live = build_live_decoder(model, latents, "pca")
    np.testing.assert_array_equal(live.coords, latents["pca"])
    assert sorted(live.order.tolist()) == [0, 1, 2, 3]
    assert len(live.slider_help()) == 4 and "mean KL" in live.slider_help()[0]
    z = latents["mu"][0]
    frame = live.render(z)
    np.testing.assert_allclose(decode_png(frame.decoded_png) / 255.0,
                               decode_mean(model, z)[:, :, 0], atol=0.5 / 255 + 1e-6)
    ref = -0.5 * float((z.astype(np.float64) ** 2).sum()) - 2 * np.log(2 * np.pi)
    assert frame.log_prior == pytest.approx(ref)
    other = live.render(z + 1.0)
    assert other.decoded_png != frame.decoded_png
    assert (live.clamp(np.full(4, 1e6)) == live.hi).all()


# --------------------------------------------------------------------------- uploads

def digit_like(size: int = 56, ink: int = 0, paper: int = 255) -> np.ndarray:
    pixels = np.full((size, size), paper, np.uint8)
    pixels[size // 4: 3 * size // 4, size // 2 - 3: size // 2 + 3] = ink  # a "1"
    return pixels


def test_upload_black_on_white_is_inverted_and_centred():
    prepared = prepare_upload(png(Image.fromarray(digit_like())), SHAPE)
    assert prepared.x.shape == SHAPE and prepared.x.dtype == np.float32
    assert prepared.inverted and any("inverted" in n for n in prepared.notes)
    assert border_brightness(prepared.x[0]) < 0.05  # dark background like MNIST
    assert prepared.x.max() > 0.9
    rows = np.flatnonzero(prepared.x[0].max(axis=1) > 0.1)
    assert rows[0] >= 3 and rows[-1] <= 24  # MNIST-style margin
    kept = prepare_upload(png(Image.fromarray(digit_like())), SHAPE, invert=False, center=False)
    assert not kept.inverted and border_brightness(kept.x[0]) > 0.95


def test_upload_white_on_black_jpeg_is_not_inverted():
    data = png(Image.fromarray(digit_like(ink=255, paper=0)).convert("RGB"), format="JPEG")
    prepared = prepare_upload(data, SHAPE)
    assert not prepared.inverted and prepared.x.max() > 0.8


@pytest.mark.parametrize("ink", [0, 255])
def test_upload_transparent_background_becomes_background(ink):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 18:22] = [ink, ink, ink, 255]  # opaque stroke on a fully transparent canvas
    prepared = prepare_upload(png(Image.fromarray(rgba, "RGBA")), SHAPE)
    assert border_brightness(prepared.x[0]) < 0.05
    assert prepared.x.max() > 0.9  # the stroke survives, white on black, either way
    assert any("transparent" in n for n in prepared.notes)


def test_upload_palette_and_16_bit_images():
    pal = Image.fromarray(digit_like()).convert("P")
    assert prepare_upload(png(pal), SHAPE).x.max() > 0.9
    sixteen = Image.fromarray(digit_like(ink=255, paper=0).astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    prepared = prepare_upload(png(sixteen), SHAPE)
    assert prepared.x.max() == pytest.approx(1.0, abs=0.02)
    assert any("16-bit" in n for n in prepared.notes)


def test_upload_rgb_model_and_animated_gif():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :, 0] = 255
    prepared = prepare_upload(png(Image.fromarray(rgb)), (3, 16, 16), center=False,
                              dark_background=False)
    assert prepared.x.shape == (3, 16, 16)
    frames = [Image.fromarray(digit_like(ink=255, paper=0)), Image.fromarray(digit_like())]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    prepared = prepare_upload(buf.getvalue(), SHAPE)
    assert any("first frame was used" in n for n in prepared.notes)  # frames never counted


def test_upload_errors_are_specific():
    with pytest.raises(UploadError, match="empty"):
        prepare_upload(b"", SHAPE)
    with pytest.raises(UploadError, match="not an image"):
        prepare_upload(b"%PDF-1.4 hello", SHAPE)
    with pytest.raises(UploadError, match="limit is 10.0 MB"):
        prepare_upload(b"\0" * (MAX_BYTES + 1), SHAPE)
    good = png(Image.fromarray(digit_like()))
    with pytest.raises(UploadError, match="truncated or corrupt|not an image"):
        prepare_upload(good[: len(good) // 2], SHAPE)
    with pytest.raises(UploadError, match="4 channels|1 \\(grey\\) or 3"):
        prepare_upload(good, (4, 28, 28))


def test_upload_decompression_bomb_is_refused_before_decoding():
    # a valid PNG header claiming 30,000 x 30,000 pixels, in a few hundred bytes
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))
    ihdr = (30_000).to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    assert len(bomb) < 500
    with pytest.raises(UploadError, match="megapixels|decompression bomb"):
        prepare_upload(bomb, SHAPE)


def test_has_dark_background():
    dark = np.zeros((5, 1, 8, 8), np.float32)
    dark[:, :, 3:5, 3:5] = 1.0
    assert has_dark_background(dark) and not has_dark_background(1.0 - dark)
