"""Groups 1, 2, 6 and 9 in the Streamlit app (AppTest, no browser): damaged and malicious
checkpoints are named in an error, never a traceback, and never executed; bad uploads
(a non-image renamed .png, image bombs, an oversized file) are rejected with a message
while RGBA / palette / 16-bit images are converted to the same input as a plain grey
one; run folders without latents.npz or with an old config.json are explained or opened;
and after every fault the same session keeps working on a good run.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from faultkit import REPO, snapshot
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_fault_corrupt_checkpoints import KINDS, WEIGHTS_PROBLEM, damage
from test_fault_untrusted_pickles import malicious_files

from training import rundir

APP = str(REPO / "streamlit_app.py")
GOOD = "a-good-run"  # the run every session falls back to


def start(runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at: AppTest, run: Path) -> AppTest:
    box = at.selectbox[0]
    assert any(o.startswith(f"{run.name} ") for o in box.options), (run.name, box.options)
    box.set_value(str(run)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def assert_works_on_good_run(at: AppTest, runs: Path) -> None:
    """The session is alive: the good run opens, a slider move re-decodes, no error."""
    pick(at, runs / GOOD)
    assert not errors(at), errors(at)
    assert [s.key for s in at.slider] == ["z0", "z1"]
    at.slider(key="z0").set_value(0.5).run()
    assert not at.exception and not errors(at)
    assert at.slider(key="z0").value == 0.5


@pytest.fixture
def runs(tiny_run, tmp_path) -> Path:
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run, folder / GOOD)
    return folder


# --------------------------------------------------------------------------- groups 1 and 2

def test_damaged_and_malicious_checkpoints_are_named_in_the_app(runs, tiny_run_z4, tmp_path,
                                                                monkeypatch):
    marker = tmp_path / "pwned"
    damaged: dict[str, Path] = {}
    for kind in KINDS:
        damaged[kind] = runs / f"damaged-{kind}"
        shutil.copytree(runs / GOOD, damaged[kind])
        damage(damaged[kind] / rundir.WEIGHTS_FILE, kind, tiny_run_z4)
    evil_weights = runs / "malicious-weights"
    shutil.copytree(runs / GOOD, evil_weights)
    (evil_weights / rundir.WEIGHTS_FILE).write_bytes(malicious_files(marker)["raw-pickle"])
    evil_latents = runs / "malicious-latents"
    shutil.copytree(runs / GOOD, evil_latents)
    (evil_latents / rundir.LATENTS_FILE).write_bytes(malicious_files(marker)["npz-object-array"])
    before = {p.name: snapshot(p) for p in runs.iterdir()}

    at = start(runs, monkeypatch)
    for kind, run in damaged.items():
        pick(at, run)
        weights = run / rundir.WEIGHTS_FILE
        assert any(f"Cannot open this run: {weights}: {WEIGHTS_PROBLEM[kind]}" in e
                   for e in errors(at)), (kind, errors(at))
        assert not at.slider  # nothing half-drawn from a bad model
    pick(at, evil_weights)
    assert any(f"{evil_weights / rundir.WEIGHTS_FILE}: not a valid safetensors file" in e
               for e in errors(at)), errors(at)
    pick(at, evil_latents)
    assert any(f"{evil_latents / rundir.LATENTS_FILE}: not a readable .npz file" in e
               for e in errors(at)), errors(at)
    assert not marker.exists(), "the pickled code was executed"

    assert_works_on_good_run(at, runs)
    assert {p.name: snapshot(p) for p in runs.iterdir()} == before  # the app wrote nothing


# --------------------------------------------------------------------------- group 6: uploads

def digit_pixels() -> np.ndarray:
    """A real test digit as (64, 64) uint8, white ink on black like the training data."""
    from training.data import load_digits

    image = load_digits().test_x[3, 0].numpy()  # (8, 8) in [0, 1]
    return np.kron(np.round(image * 255), np.ones((8, 8))).astype(np.uint8)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def same_digit_in_modes() -> dict[str, bytes]:
    grey = digit_pixels()
    rgba = np.zeros(grey.shape + (4,), np.uint8)
    rgba[..., 0] = 200  # a red background under full transparency: must not show
    ink = grey > 0
    rgba[ink, :3] = grey[ink, None]
    rgba[..., 3] = np.where(ink, 255, 0)
    return {
        "L": png(Image.fromarray(grey)),
        "RGBA": png(Image.fromarray(rgba, mode="RGBA")),
        "P": png(Image.fromarray(grey).convert("P")),
        "I;16": png(Image.fromarray(grey.astype(np.uint16) * 257)),
        "RGB": png(Image.fromarray(grey).convert("RGB")),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def bad_uploads() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the message the user must see)."""
    from explorer.uploads import MAX_BYTES

    real_bomb = png(Image.new("L", (6000, 6000)))  # 36 megapixels in ~35 KB
    assert len(real_bomb) < 100_000
    return {
        "report.png": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n",
                       "this file is not an image that can be read"),
        "program.png": (Path("/bin/true").read_bytes()[:4096],
                        "this file is not an image that can be read"),
        "bomb.png": (real_bomb, "the image is 6000×6000 pixels (36.0 megapixels); the largest accepted is 12.6"),
        "huge-header.png": (png_header_only(100_000, 100_000),
                            "too large to decode safely (decompression bomb"),
        "big.png": (png(Image.fromarray(digit_pixels())) + b"\0" * MAX_BYTES,
                    "the limit is 10.0 MB"),
        "empty.png": (b"", "the file is empty (0 bytes)"),
        "cut.png": (png(Image.fromarray(digit_pixels()))[:80], "truncated or corrupt"),
    }


def test_each_image_mode_converts_to_the_same_input():
    from explorer.uploads import prepare_upload

    files = same_digit_in_modes()
    reference = prepare_upload(files["L"], (1, 8, 8), invert=False, center=False).x
    expected = digit_pixels()[::8, ::8].astype(np.float32)[None] / 255.0  # (1, 8, 8)
    np.testing.assert_allclose(reference, expected, atol=1e-6)
    for mode, data in files.items():
        prepared = prepare_upload(data, (1, 8, 8), invert=False, center=False)
        assert prepared.original_mode == mode
        assert prepared.x.shape == (1, 8, 8) and prepared.x.dtype == np.float32
        np.testing.assert_allclose(prepared.x, reference, atol=1.5 / 255, err_msg=mode)


def test_bad_uploads_are_rejected_by_name():
    from explorer.uploads import UploadError, prepare_upload

    for name, (data, message) in bad_uploads().items():
        with pytest.raises(UploadError) as err:
            prepare_upload(data, (1, 8, 8))
        assert message in err.value.message, (name, err.value.message)


def test_upload_faults_in_one_session(runs, monkeypatch):
    at = start(runs, monkeypatch)
    for name, (data, message) in bad_uploads().items():
        at.file_uploader(key="upload").upload(name, data, "image/png")
        at.run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert any(f"Cannot use “{name}”" in e and message in e for e in errors(at)), \
            (name, errors(at))
    for mode, data in same_digit_in_modes().items():
        name = f"digit-{mode.replace(';', '')}.png"
        at.file_uploader(key="upload").upload(name, data, "image/png")
        at.run()
        assert not at.exception and not errors(at), (mode, errors(at))
        captions = " ".join(c.value for c in at.caption)
        assert f"(Pillow mode {mode})" in captions, mode
        assert any(f"Your image “{name}”" in m.value for m in at.markdown), mode
    assert_works_on_good_run(at, runs)


# --------------------------------------------------------------------------- group 9

def test_missing_latents_and_old_configs_are_explained_or_opened(runs, monkeypatch):
    import json

    no_latents = runs / "no-latents"
    shutil.copytree(runs / GOOD, no_latents)
    (no_latents / rundir.LATENTS_FILE).unlink()

    old = runs / "old-config"  # written before newer options and fields existed
    shutil.copytree(runs / GOOD, old)
    raw = json.loads((old / rundir.CONFIG_FILE).read_text())
    for key in ("format_version", "format", "versions", "argv", "message", "created"):
        raw.pop(key)
    for key in ("free_bits", "kl_warmup", "lr_final_fraction", "tsne", "tsne_perplexity",
                "threads", "learn_sigma"):
        raw["config"].pop(key)
    (old / rundir.CONFIG_FILE).write_text(json.dumps(raw))

    removed_option = runs / "removed-option"
    shutil.copytree(runs / GOOD, removed_option)
    raw = json.loads((removed_option / rundir.CONFIG_FILE).read_text())
    raw["config"]["dropout"] = 0.1
    (removed_option / rundir.CONFIG_FILE).write_text(json.dumps(raw))

    newer = runs / "newer-format"
    shutil.copytree(runs / GOOD, newer)
    raw = json.loads((newer / rundir.CONFIG_FILE).read_text())
    raw["format_version"] = 99
    (newer / rundir.CONFIG_FILE).write_text(json.dumps(raw))

    at = start(runs, monkeypatch)
    sidebar = " ".join(c.value for c in at.caption)
    assert "no-latents" in sidebar
    assert f"latents.npz is missing (deleted, or not copied with the run); recompute it from " \
           f"the weights with `python -m training.relatents {no_latents}`" in sidebar
    assert "removed-option" in sidebar and "unknown config keys: dropout" in sidebar
    assert "newer-format" in sidebar and "format_version 99 is newer" in sidebar

    pick(at, old)  # an old config.json opens with today's defaults
    assert not errors(at), errors(at)
    assert [s.key for s in at.slider] == ["z0", "z1"]
    at.slider(key="z1").set_value(-0.5).run()
    assert not at.exception and not errors(at)
    assert_works_on_good_run(at, runs)


def test_the_suggested_command_recomputes_the_same_latents(runs, monkeypatch, capsys):
    from training.relatents import main as relatents

    run = runs / GOOD
    original = rundir.read_latents(run)
    others = {n: b for n, b in snapshot(run).items() if n != rundir.LATENTS_FILE}
    (run / rundir.LATENTS_FILE).unlink()

    assert relatents([str(run)]) == 0
    assert f"wrote {run / rundir.LATENTS_FILE}" in capsys.readouterr().out
    again = rundir.read_latents(run)
    assert sorted(again) == sorted(original)
    for key, array in original.items():  # same weights, same split, same evaluation noise
        np.testing.assert_allclose(again[key], array, rtol=1e-5, atol=1e-5, err_msg=key)
    assert {n: b for n, b in snapshot(run).items() if n != rundir.LATENTS_FILE} == others

    at = start(runs, monkeypatch)  # and the app opens it again
    assert not errors(at) and [s.key for s in at.slider] == ["z0", "z1"]

    with pytest.raises(SystemExit) as exit_info:  # a folder that is not a run: exit 2
        relatents([str(runs / "nothing-here")])
    assert exit_info.value.code == 2
    assert "nothing-here: run directory does not exist" in capsys.readouterr().err


def test_corrupt_metrics_and_latents_are_explained_not_a_traceback(runs, monkeypatch):
    bad_metrics = runs / "bad-metrics"
    shutil.copytree(runs / GOOD, bad_metrics)
    metrics = bad_metrics / rundir.METRICS_FILE
    metrics.write_bytes(metrics.read_bytes()[:-40] + b"\n{not json\n")
    cut_latents = runs / "cut-latents"
    shutil.copytree(runs / GOOD, cut_latents)
    latents = cut_latents / rundir.LATENTS_FILE
    latents.write_bytes(latents.read_bytes()[:700])

    at = start(runs, monkeypatch)
    pick(at, bad_metrics)
    assert any(f"{metrics}: line " in m for m in errors(at) + [w.value for w in at.warning]), \
        (errors(at), [w.value for w in at.warning])
    pick(at, cut_latents)
    assert any(f"{latents}: not a readable .npz file" in e for e in errors(at)), errors(at)
    assert_works_on_good_run(at, runs)


PAGES = sorted(p.name for p in (REPO / "app" / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_a_damaged_run(page, runs, tiny_run_z4, monkeypatch):
    """Each page of the app, on runs with corrupt weights, a corrupt metrics.jsonl and a
    truncated latents.npz: never a traceback (pages that need the file say why they cannot show
    it); then the good run works."""
    flipped = runs / "flipped-weights"
    shutil.copytree(runs / GOOD, flipped)
    damage(flipped / rundir.WEIGHTS_FILE, "flipped-byte", tiny_run_z4)
    bad_metrics = runs / "bad-metrics"
    shutil.copytree(runs / GOOD, bad_metrics)
    (bad_metrics / rundir.METRICS_FILE).write_bytes(b'{"epoch": 1, "train_lo\n')
    cut_latents = runs / "cut-latents"
    shutil.copytree(runs / GOOD, cut_latents)
    latents = cut_latents / rundir.LATENTS_FILE
    latents.write_bytes(latents.read_bytes()[:700])

    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(str(REPO / "app" / "pages" / page), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    pickers = [s for s in at.selectbox if s.key == "_run_pick"]  # app_shared.pick_run
    for run in (flipped, bad_metrics, cut_latents, runs / GOOD):
        if pickers:
            at.selectbox(key="_run_pick").set_value(str(run)).run()
        assert not at.exception, (page, run.name, [e.value for e in at.exception])
