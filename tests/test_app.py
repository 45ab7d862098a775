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


def lens_element(at: AppTest, role: str = "lens"):
    """The latent lens's main element (``role="lens"``: z, sliders, decoder, server image)
    or its map element (``role="map"``), and its data."""
    for element in at.get("bidi_component"):
        data = json.loads(element.proto.json)
        if element.proto.component_name == "vae-latent-explorer.lens" and \
                data.get("role", "lens") == role:
            return element, data
    raise AssertionError(f"no latent lens ({role}) on the page")


def lens(at: AppTest) -> dict:
    return lens_element(at)[1]


def decoded_src(at: AppTest) -> str:
    """The server's decode of the current z, as the lens shows it before (or without) the
    browser's decoder."""
    src = lens(at)["server_png"]
    assert src.startswith("data:image/png;base64,")
    return src


def lens_reports(at: AppTest, **update) -> AppTest:
    """Run the app as after the lens reported to Python (a slider released, the pointer
    left the map, a click): its state widget gets ``{"update": {...}}``, as the browser
    sends it."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates

    element, data = lens_element(at)
    value = {"z": data["z"], "selected": None, "source": "slider",
             "event": data.get("last_event", 0) + 1, **update}
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    state = states.widgets.add()
    state.id = element.proto.id
    state.json_value = json.dumps({"update": value})
    return at._run(states)


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
    data = lens(at)
    assert data["model"]["latent_dim"] == 2 and len(data["z"]) == 2
    assert data["model"]["url"].startswith("/vae-model/digits-vae-z2/")
    assert data["model"]["url"].endswith("/decoder.onnx")
    assert lens_element(at, "map")[1]["map"]["n"] == 359  # every test point on the map
    figures = charts(at)
    assert len(figures) == 1  # the KL bars (the curves tab is lazy; the map is the lens)
    assert not at.get("plotly_chart")  # drawn by the light build
    m = metrics(at)
    recon = float(m["reconstruction E_q[−log p(x|z)]"].split()[0])
    kl = float(m["KL(q(z|x) ‖ p(z))"].split()[0])
    elbo = float(m["ELBO"].split()[0])
    assert recon > 0 and kl >= 0 and elbo == pytest.approx(-(recon + kl), abs=0.011)
    latex = at.latex[0].value
    assert f"{-recon:.2f}" in latex and f"{elbo:.2f}" in latex and "nats" in latex
    assert at.selectbox[0].value == str(runs / "digits-vae-z2")


def test_a_lens_release_changes_the_decoded_image_and_log_prior(runs, monkeypatch):
    at = start(runs, monkeypatch)
    before, version = decoded_src(at), lens(at)["z_version"]
    caption = [c.value for c in at.caption if "log p(z)" in c.value]
    lens_reports(at, z=[1.25, -0.5])
    assert_clean(at)
    assert at.session_state["z0"] == 1.25 and at.session_state["z1"] == -0.5
    assert lens(at)["z"] == [1.25, -0.5]
    assert lens(at)["z_version"] == version  # the browser set z: no need to send it back
    assert decoded_src(at) != before
    log_prior = -0.5 * (1.25**2 + 0.5**2) - np.log(2 * np.pi)
    assert any(f"log p(z) = {log_prior:.2f} nats" in c.value for c in at.caption)
    assert caption != [c.value for c in at.caption if "log p(z)" in c.value]
    # buttons: reset to zero and back to the sample's mu (Python sets z: a new version)
    at.button(key="z_zero").click().run()
    assert lens(at)["z"] == [0.0, 0.0] and lens(at)["z_version"] > version
    at.button(key="z_from_mu").click().run()
    assert decoded_src(at) == before
    at.button(key="z_prior").click().run()
    assert_clean(at)


def test_a_click_on_the_lens_map_selects_the_sample(runs, monkeypatch):
    at = start(runs, monkeypatch)
    lens_reports(at, source="click", selected=5)
    assert_clean(at)
    assert at.tabs[0].label == "ELBO of sample 5"
    from training.rundir import read_latents

    mu = read_latents(runs / "digits-vae-z2")["mu"][5]
    assert lens(at)["selected"] == 5
    assert lens(at)["z"] == pytest.approx(mu.tolist(), abs=1e-6)


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
    assert at.session_state["z0"] == pytest.approx(mu[0], abs=1e-6)
    # the lens rings the new sample, with its posterior's sigma for the ellipses
    data = lens(at)
    assert data["selected"] == 7 and data["z"] == pytest.approx(mu.tolist(), abs=1e-6)
    assert data["sigma"] is not None and len(data["sigma"]) == 2
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
    assert len(lens(at)["z"]) == 4
    radio = at.radio(key="projection")
    assert radio.options == ["PCA", "t-SNE"]
    map_data = lens_element(at, "map")[1]["map"]
    assert map_data["projection"] == "pca" and "pca_mean" in map_data and "mu" not in map_data
    before = decoded_src(at)
    radio.set_value("tsne").run()
    assert_clean(at)
    map_data = lens_element(at, "map")[1]["map"]
    assert map_data["projection"] == "tsne" and "mu" in map_data  # the lens's inverse
    lens_reports(at, z=[0.0, 0.0, 0.0, 1.5])
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
    header = next(m.value for m in at.markdown if "digits-ae-z2" in m.value)
    assert "test reconstruction loss" in header and "ELBO" not in header  # an AE has none
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
    assert not at.get("bidi_component")
    button.click().run()
    assert_clean(at)
    assert (folder / "demo-vae-z2" / "model.safetensors").is_file()
    assert len(lens(at)["z"]) == 2  # the app opened the new run


def test_a_retrained_run_is_reread_not_served_stale(runs, tiny_run_z4, monkeypatch):
    at = start(runs, monkeypatch)
    assert len(lens(at)["z"]) == 2
    target = runs / "digits-vae-z2"
    for name in ("config.json", "model.safetensors", "latents.npz", "metrics.jsonl",
                 "encoder.onnx", "decoder.onnx", "onnx.json"):
        shutil.copy(tiny_run_z4 / name, target / name)  # new mtimes: the caches must miss
    at.run()
    assert_clean(at)
    assert len(lens(at)["z"]) == 4


def test_a_run_without_onnx_files_says_how_to_export_it(runs, monkeypatch):
    for name in ("encoder.onnx", "decoder.onnx", "onnx.json"):
        (runs / "digits-vae-z2" / name).unlink()
    at = start(runs, monkeypatch)
    assert not at.exception
    (message,) = [e.value for e in at.error]
    assert "python -m training.export" in re.sub(r"\\(.)", r"\1", message)  # Markdown-escaped
    assert len(message.splitlines()) == 1


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
        "assert at.get('bidi_component'), 'no lens: the page did not open the run'\n"
        "at.button(key='z_zero').click().run()\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "VAE_RUNS_DIR": str(tiny_run.parent)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TORCH False" in out.stdout, out.stdout
