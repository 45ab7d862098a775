"""The Streamlit app under AppTest (no browser): start-up on a freshly trained tiny run,
slider z0 -> new decoded image, selecting a sample -> new ELBO panel, uploads good and
bad, larger and autoencoder runs, a broken run folder, and the empty runs folder's
train button (which really trains, with a tiny configuration patched in).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def start(runs, monkeypatch) -> AppTest:
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    return at


def decoded_src(at: AppTest) -> str:
    blocks = [h.value for h in at.html if 'alt="decoded image"' in h.value]
    assert len(blocks) == 1, "the decode panel's image is missing"
    match = re.search(r'alt="decoded image" src="(data:image/png;base64,[^"]+)"', blocks[0])
    assert match, blocks[0][:200]
    return match.group(1)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list[dict]:
    """The page's Plotly figures in page order: drawn by the light build's component
    (``app_chart``) or, for figures it cannot draw, by ``st.plotly_chart``."""
    found = []
    for element in at.get("component_instance") + at.get("plotly_chart"):
        if element.type == "plotly_chart":
            found.append(json.loads(element.proto.spec))
        else:
            assert element.proto.component_name == "app.chart.plotly_chart"
            found.append(json.loads(json.loads(element.proto.json_args)["spec"]))
    return found


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def runs(tiny_run, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run, folder / tiny_run.name)
    return folder


def digit_png(run_dir, index: int = 0, size: int = 64, mode: str = "L") -> bytes:
    """A real test-set digit, upscaled and saved as a PNG (black ink on white, as drawn)."""
    from training.data import load_digits

    image = load_digits().test_x[index, 0].numpy()  # (8, 8) in [0, 1], white on black
    pixels = ((1.0 - image) * 255).astype(np.uint8)  # black on white
    img = Image.fromarray(pixels).resize((size, size), Image.NEAREST).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_starts_on_a_tiny_run_without_exception(runs, monkeypatch):
    at = start(runs, monkeypatch)
    assert_clean(at)
    assert at.title[0].value == "VAE Latent Explorer"
    assert [s.key for s in at.slider] == ["z0", "z1"]
    figures = charts(at)
    assert len(figures) == 2  # the latent map and the KL bars (the curves tab is lazy)
    assert not at.get("plotly_chart")  # both drawn by the light build
    assert {t["type"] for t in figures[0]["data"]} == {"scatter"}  # 100 points: SVG
    m = metrics(at)
    recon = float(m["reconstruction E_q[−log p(x|z)]"].split()[0])
    kl = float(m["KL(q(z|x) ‖ p(z))"].split()[0])
    elbo = float(m["ELBO"].split()[0])
    assert recon > 0 and kl >= 0 and elbo == pytest.approx(-(recon + kl), abs=0.011)
    latex = at.latex[0].value
    assert f"{-recon:.2f}" in latex and f"{elbo:.2f}" in latex and "nats" in latex
    assert at.selectbox[0].value == str(runs / "digits-vae-z2")


def test_moving_slider_z0_changes_the_decoded_image(runs, monkeypatch):
    at = start(runs, monkeypatch)
    before = decoded_src(at)
    z0 = at.slider(key="z0")
    at.slider(key="z0").set_value(round(z0.max - 0.1, 2) if z0.value < 0 else z0.min + 0.1).run()
    assert_clean(at)
    after = decoded_src(at)
    assert after != before
    # buttons: reset to zero and back to the sample's mu
    at.button(key="z_zero").click().run()
    assert at.slider(key="z0").value == 0.0 and at.slider(key="z1").value == 0.0
    at.button(key="z_from_mu").click().run()
    assert decoded_src(at) == before
    at.button(key="z_prior").click().run()
    assert_clean(at)


def test_selecting_a_sample_updates_the_elbo_panel(runs, monkeypatch):
    at = start(runs, monkeypatch)
    first = metrics(at)
    assert at.tabs[0].label == "ELBO of sample 0"
    at.number_input(key="sample_index").set_value(7).run()
    assert_clean(at)
    assert at.tabs[0].label == "ELBO of sample 7"
    assert metrics(at) != first
    # the sliders moved to the new sample's posterior mean
    from training.rundir import read_latents

    mu = read_latents(runs / "digits-vae-z2")["mu"][7]
    assert at.slider(key="z0").value == pytest.approx(mu[0], abs=0.006)
    # the map rings the new sample (its figure is reused, only the overlays move)
    spec = charts(at)[0]
    ring = next(t for t in spec["data"] if t.get("meta") == "selected")
    assert ring["x"][0] == pytest.approx(float(mu[0]), abs=1e-5)
    assert any(t.get("meta") == "sigma1" and len(t["x"]) > 0 for t in spec["data"])
    # the "worst reconstruction" shortcut selects the arg-max of the per-sample terms
    at.button(key="pick_worst").click().run()
    worst = int(np.argmax(read_latents(runs / "digits-vae-z2")["recon"]))
    assert at.number_input(key="sample_index").value == worst


def test_upload_of_a_real_image_works(runs, monkeypatch):
    at = start(runs, monkeypatch)
    at.file_uploader(key="upload").upload("three.png", digit_png(runs), "image/png")
    at.run()
    assert_clean(at)
    titles = [m.value for m in at.markdown if "Your image" in m.value]
    assert titles, "no ELBO panel for the upload"
    captions = " ".join(c.value for c in at.caption)
    assert "inverted" in captions  # black-on-white drawing, model trained white-on-black
    assert len([m for m in at.metric if m.label == "ELBO"]) == 2  # sample + upload


def test_bad_uploads_show_an_error_not_a_traceback(runs, monkeypatch):
    at = start(runs, monkeypatch)
    at.file_uploader(key="upload").upload("notes.txt", b"this is not an image\n", "text/plain")
    at.run()
    assert not at.exception
    assert any("not an image" in e.value for e in at.error), [e.value for e in at.error]
    at.file_uploader(key="upload").upload("cut.png", digit_png(runs)[:60], "image/png")
    at.run()
    assert not at.exception
    assert any("truncated or corrupt" in e.value or "not an image" in e.value
               for e in at.error), [e.value for e in at.error]


def test_larger_latent_space_offers_pca_and_tsne(tiny_run_z4, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run_z4, folder / tiny_run_z4.name)
    at = start(folder, monkeypatch)
    assert_clean(at)
    assert sorted(s.key for s in at.slider) == ["z0", "z1", "z2", "z3"]
    radio = at.radio(key="projection")
    assert radio.options == ["PCA", "t-SNE"]
    before = decoded_src(at)
    radio.set_value("tsne").run()
    assert_clean(at)
    at.slider(key="z3").set_value(1.5).run()
    assert_clean(at)
    assert decoded_src(at) != before


def test_autoencoder_run_has_no_kl_and_a_broken_run_is_named(tiny_ae_run, tmp_path,
                                                            monkeypatch):
    folder = tmp_path / "runs"
    shutil.copytree(tiny_ae_run, folder / tiny_ae_run.name)
    broken = folder / "zz-broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    at = start(folder, monkeypatch)
    assert_clean(at)
    assert metrics(at)["KL"] == "—"
    assert any("zz-broken" in c.value for c in at.caption)
    assert any("not valid JSON" in c.value for c in at.caption)


def test_empty_runs_folder_offers_the_train_button_which_trains(tmp_path, monkeypatch):
    from conftest import TINY

    import training.demo

    monkeypatch.setitem(training.demo.DEMO_RUNS, "demo-vae-z2",
                        {**TINY, "epochs": 2, "latent_dim": 2})
    folder = tmp_path / "empty"
    folder.mkdir()
    at = start(folder, monkeypatch)
    assert_clean(at)
    button = at.button(key="train_demo")
    assert "Train the demo model" in button.label
    assert not at.slider
    button.click().run()
    assert_clean(at)
    assert (folder / "demo-vae-z2" / "model.safetensors").is_file()
    assert [s.key for s in at.slider] == ["z0", "z1"]  # the app opened the new run


def test_a_retrained_run_is_reread_not_served_stale(runs, tiny_run_z4, monkeypatch):
    at = start(runs, monkeypatch)
    assert [s.key for s in at.slider] == ["z0", "z1"]
    target = runs / "digits-vae-z2"
    for name in ("config.json", "model.safetensors", "latents.npz", "metrics.jsonl",
                 "encoder.onnx", "decoder.onnx", "onnx.json"):
        shutil.copy(tiny_run_z4 / name, target / name)  # new mtimes: the caches must miss
    at.run()
    assert_clean(at)
    assert sorted(s.key for s in at.slider) == ["z0", "z1", "z2", "z3"]


def test_large_maps_fall_back_to_webgl_through_st_plotly_chart(runs, monkeypatch):
    """A map over ``WEBGL_MIN_POINTS`` points is a WebGL scatter, which the light build
    cannot draw: it goes through st.plotly_chart (with its on_select), the KL bars still
    through the light build."""
    from explorer import figures

    monkeypatch.setattr(figures, "WEBGL_MIN_POINTS", 10)
    at = start(runs, monkeypatch)
    assert_clean(at)
    (native,) = at.get("plotly_chart")
    spec = json.loads(native.proto.spec)
    assert "scattergl" in {t["type"] for t in spec["data"]}
    assert native.proto.selection_mode  # clicking a point still selects it
    assert len(at.get("component_instance")) == 1  # the KL bars


def test_main_page_never_imports_torch(tiny_run):
    """The main page's first run and a slider move, in a fresh interpreter: torch's import
    alone would cost most of the cold-start budget, so it must not sneak back in.
    (This run uses the digits data set, whose loader imports scikit-learn; mnist5k needs
    nothing beyond NumPy.)"""
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(ROOT / 'streamlit_app.py')!r}, default_timeout=120)\n"
        "at.run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "assert at.slider, 'no sliders: the page did not open the run'\n"
        "at.slider(key='z0').set_value(0.5).run()\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "VAE_RUNS_DIR": str(tiny_run.parent)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TORCH False" in out.stdout, out.stdout
