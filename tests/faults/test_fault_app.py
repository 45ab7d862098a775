"""Groups 1, 2, 6 and 9 in the Streamlit app (AppTest, no browser): damaged and malicious
checkpoints are named with their one-line problem, never a traceback, and never loaded or
executed; bad uploads (a non-image renamed .png, image bombs, an oversized file) are
rejected with a message while RGBA / palette / 16-bit images are converted to the same
input as a plain grey one; run folders without latents.npz or with an old config.json are
explained or opened; and after every fault the same session keeps working on a good run.

Run folders are validated when they are listed (``explorer/runs.py``): a folder whose
config, weights header or latents fail is listed in the sidebar's "N run folder(s) cannot
be opened" expander with its problem and is never offered in the run picker; one whose
files pass those checks but fail on opening (a flipped byte in the tensor data: only the
checksum tells) is offered, and opening it shows the problem instead of the explorer.
Every line a page shows names the run folder and the file, never a server path.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from faultkit import REPO, snapshot
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import decoded_src, lens, lens_reports
from test_fault_corrupt_checkpoints import KINDS, WEIGHTS_PROBLEM, damage
from test_fault_untrusted_pickles import malicious_files

from training import rundir

APP = str(REPO / "streamlit_app.py")
GOOD = "a-good-run"  # the run every session falls back to
PICKER = "_run_pick"  # app_shared.pick_run's selectbox
# Damage the listing's checks catch (config, the weights' header, latents.npz): such a
# folder is never offered. A flipped byte in the tensor data leaves the header intact:
# only opening the run (which verifies the checksum) finds it.
CAUGHT_BY_LISTING = ("empty", "truncated", "random", "other-architecture")
OPEN_FAILS = ("flipped-byte",)
assert set(CAUGHT_BY_LISTING + OPEN_FAILS) == set(KINDS)


def plain(text: str) -> str:
    """An element's text without the Markdown escapes ``explorer.text.md`` adds."""
    return re.sub(r"\\(.)", r"\1", text)


def start(runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at: AppTest, run: Path) -> AppTest:
    box = at.selectbox(key=PICKER)
    assert any(o.startswith(f"{run.name} ") for o in box.options), (run.name, box.options)
    box.set_value(str(run)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [plain(e.value) for e in at.error]


def warnings(at: AppTest) -> list[str]:
    return [plain(w.value) for w in at.warning]


def messages(at: AppTest) -> list[str]:
    """Every line a student reads about a problem: errors, warnings, infos, captions."""
    return errors(at) + warnings(at) + [plain(e.value) for e in [*at.info, *at.caption]]


def unopenable(at: AppTest) -> dict[str, str]:
    """The sidebar's "cannot be opened" list: run folder name -> its one-line problem."""
    listed: dict[str, str] = {}
    for expander in at.sidebar.expander:
        if expander.label.endswith("run folder(s) cannot be opened"):
            for caption in expander.caption:
                match = re.fullmatch(r"\*\*(.+?)\*\*: (.*)", plain(caption.value))
                assert match, caption.value
                listed[match[1]] = match[2]
            assert expander.label.startswith(f"{len(listed)} run folder")
    return listed


def assert_no_server_path(at: AppTest, *paths: Path) -> None:
    """No message on the page shows a server path: not the runs folder's, not /tmp."""
    for text in messages(at):
        for path in paths:
            assert str(path) not in text, text
        assert "/tmp/" not in text and str(Path.home()) + "/" not in text, text


def assert_not_offered(at: AppTest, run: Path) -> None:
    """``run`` is not in the picker, and asking for it (a stale session, a crafted
    ``run_dir``) opens another run instead."""
    box = at.selectbox(key=PICKER)
    assert not any(o.startswith(f"{run.name} ") for o in box.options), (run.name, box.options)
    at.session_state["run_dir"] = str(run)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["run_dir"] != str(run)
    assert at.selectbox(key=PICKER).value != str(run)


def assert_works_on_good_run(at: AppTest, runs: Path) -> None:
    """The session is alive: the good run opens, a slider release re-decodes, no error."""
    pick(at, runs / GOOD)
    assert not errors(at), errors(at)
    assert len(lens(at)["z"]) == 2
    before = decoded_src(at)
    lens_reports(at, z=[0.5, 0.0])
    assert not at.exception and not errors(at), errors(at)
    assert at.session_state["z0"] == 0.5
    assert decoded_src(at) != before


@pytest.fixture
def runs(tiny_run, tmp_path) -> Path:
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run, folder / GOOD)
    return folder


def spy_on_loading(monkeypatch) -> dict[str, list[str]]:
    """Record the run folders whose weights or latents arrays the app loads."""
    import explorer.onnx_model

    loaded: dict[str, list[str]] = {"weights": [], "latents": []}
    real_weights, real_latents = rundir.load_weights, rundir.read_latents

    def load_weights(path, *args, **kwargs):
        loaded["weights"].append(Path(path).parent.name)
        return real_weights(path, *args, **kwargs)

    def read_latents(run_dir, *args, **kwargs):
        loaded["latents"].append(Path(run_dir).name)
        return real_latents(run_dir, *args, **kwargs)

    monkeypatch.setattr(explorer.onnx_model, "load_weights", load_weights)
    monkeypatch.setattr(rundir, "load_weights", load_weights)
    monkeypatch.setattr(rundir, "read_latents", read_latents)
    return loaded


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
    loaded = spy_on_loading(monkeypatch)

    at = start(runs, monkeypatch)
    listed = unopenable(at)
    assert set(listed) == {*(f"damaged-{k}" for k in CAUGHT_BY_LISTING), evil_weights.name,
                           evil_latents.name}
    for kind in CAUGHT_BY_LISTING:  # named with the problem, one line, never offered
        assert listed[f"damaged-{kind}"].startswith(
            f"model.safetensors: {WEIGHTS_PROBLEM[kind]}"), (kind, listed)
        assert_not_offered(at, damaged[kind])
    assert listed[evil_weights.name].startswith(
        "model.safetensors: not a valid safetensors file"), listed
    assert listed[evil_latents.name].startswith("latents.npz: not a readable .npz file"), listed
    assert "pickled data is never loaded" in listed[evil_latents.name]
    for run in (evil_weights, evil_latents):
        assert_not_offered(at, run)
    assert_no_server_path(at, runs, tmp_path)

    for kind in OPEN_FAILS:  # the header is intact: offered, and refused when opened
        pick(at, damaged[kind])
        (line,) = errors(at)
        assert line.startswith(f"Cannot open this run: damaged-{kind}/model.safetensors: "
                               f"{WEIGHTS_PROBLEM[kind]}"), line
        assert not at.get("bidi_component")  # nothing half-drawn from a bad model
        assert_no_server_path(at, runs, tmp_path)
    assert not marker.exists(), "the pickled code was executed"
    refused = {f"damaged-{k}" for k in CAUGHT_BY_LISTING} | {evil_weights.name,
                                                             evil_latents.name}
    assert not refused & set(loaded["weights"] + loaded["latents"]), loaded

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
        "bomb.png": (real_bomb, "the image is 6000×6000 pixels (36.0 megapixels); the "
                                "largest accepted is 12.6"),
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
        captions = " ".join(plain(c.value) for c in at.caption)
        assert f"(Pillow mode {mode})" in captions, mode
        assert any(f"Your image “{name}”" in plain(m.value) for m in at.markdown), mode
    assert_works_on_good_run(at, runs)


# --------------------------------------------------------------------------- group 9

RELATENTS = re.compile(r"`python -m training\.relatents (<runs folder>/[^`]+)`")


def test_missing_latents_and_old_configs_are_explained_or_opened(runs, monkeypatch):
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
    listed = unopenable(at)
    assert set(listed) == {"no-latents", "removed-option", "newer-format"}, listed
    assert listed["no-latents"] == (
        "latents.npz is missing (deleted, or not copied with the run); recompute it from the "
        "weights with `python -m training.relatents <runs folder>/no-latents`")
    assert "unknown config keys: dropout" in listed["removed-option"]
    assert "format_version 99 is newer" in listed["newer-format"]
    assert_no_server_path(at, runs)
    for run in (no_latents, removed_option, newer):
        assert_not_offered(at, run)

    pick(at, old)  # an old config.json opens with today's defaults
    assert not errors(at), errors(at)
    assert len(lens(at)["z"]) == 2
    before = decoded_src(at)
    lens_reports(at, z=[0.0, -0.5])
    assert not at.exception and not errors(at)
    assert at.session_state["z1"] == -0.5 and decoded_src(at) != before
    assert_works_on_good_run(at, runs)


def test_the_suggested_command_recomputes_the_same_latents(runs, monkeypatch, capsys):
    """The command the app suggests for a run without latents.npz, with the runs folder
    filled in, writes the latents the run had, changes no other file, and the app then
    offers and opens the run."""
    from training.relatents import main as relatents

    run = runs / "lost-latents"
    shutil.copytree(runs / GOOD, run)
    original = rundir.read_latents(run)
    others = {n: b for n, b in snapshot(run).items() if n != rundir.LATENTS_FILE}
    (run / rundir.LATENTS_FILE).unlink()

    at = start(runs, monkeypatch)
    (command,) = RELATENTS.findall(unopenable(at)[run.name])
    assert command == f"<runs folder>/{run.name}"
    assert relatents([command.replace("<runs folder>", str(runs))]) == 0
    assert f"wrote {run / rundir.LATENTS_FILE}" in capsys.readouterr().out
    again = rundir.read_latents(run)
    assert sorted(again) == sorted(original)
    for key, array in original.items():  # same weights, same split, same evaluation noise
        np.testing.assert_allclose(again[key], array, rtol=1e-5, atol=1e-5, err_msg=key)
    assert {n: b for n, b in snapshot(run).items() if n != rundir.LATENTS_FILE} == others

    at.run()  # and the app offers and opens it again
    assert run.name not in unopenable(at)
    pick(at, run)
    assert not errors(at) and len(lens(at)["z"]) == 2

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
    # a truncated latents.npz: named in the sidebar, never offered
    assert unopenable(at) == {"cut-latents": "latents.npz: not a readable .npz file "
                                             "(truncated or corrupt): no zip directory"}
    assert_not_offered(at, cut_latents)
    # a damaged metrics.jsonl costs the curves only: the run opens, with one warning
    pick(at, bad_metrics)
    assert not errors(at), errors(at)
    (warning,) = warnings(at)
    assert warning.startswith("The training curves cannot be shown: "
                              "bad-metrics/metrics.jsonl: line "), warning
    assert "is not valid JSON" in warning
    assert len(lens(at)["z"]) == 2
    assert_no_server_path(at, runs)
    assert_works_on_good_run(at, runs)


PAGES = sorted(p.name for p in (REPO / "app" / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_a_damaged_run(page, runs, tiny_run_z4, tmp_path, monkeypatch):
    """Each page of the app, on runs with corrupt weights, a corrupt metrics.jsonl and a
    truncated latents.npz: never a traceback; the truncated latents are named in one line
    (the sidebar's list of folders that cannot be opened) and never offered; a page that
    needs the damaged file says why it cannot show it, in one line naming the run folder
    and the file; then the good run works."""
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
    assert unopenable(at) == {"cut-latents": "latents.npz: not a readable .npz file "
                                             "(truncated or corrupt): no zip directory"}
    assert [m for m in messages(at) if "cut-latents" in m] == [
        "**cut-latents**: latents.npz: not a readable .npz file (truncated or corrupt): "
        "no zip directory"]
    assert_no_server_path(at, runs, tmp_path)

    if not [s for s in at.selectbox if s.key == PICKER]:  # a page over all runs at once
        return
    assert not any(o.startswith("cut-latents ") for o in at.selectbox(key=PICKER).options)
    opens_the_run = page != "train.py"
    for run, problem in ((flipped, "flipped-weights/model.safetensors: checksum mismatch"),
                         (bad_metrics, "bad-metrics/metrics.jsonl: line 1 ")):
        at.selectbox(key=PICKER).set_value(str(run)).run()
        assert not at.exception, (page, run.name, [e.value for e in at.exception])
        named = [m for m in errors(at) + warnings(at) if run.name in m]
        assert len(named) <= 1, named  # one line, or none where the file is not needed
        if opens_the_run and run == flipped:  # refused when opened: only this line
            assert errors(at) == named, errors(at)
            assert named[0].startswith(f"Cannot open this run: {problem}"), named
        for line in named:
            assert problem in line, (page, line)
        assert_no_server_path(at, runs, tmp_path)
    at.selectbox(key=PICKER).set_value(str(runs / GOOD)).run()
    assert not at.exception, (page, [e.value for e in at.exception])
    assert not errors(at), (page, errors(at))
    assert not [w for w in warnings(at) if GOOD in w], warnings(at)
