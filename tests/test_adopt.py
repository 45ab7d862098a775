"""Explore your own VAE (``explorer/adopt.py``): a model of the test's own (conv encoder
with batch norm, latent size 8, a decoder returning probabilities) trained for a few steps,
adopted from PyTorch, from an ONNX pair and from a pythae-format folder; each run opens in
AppTest on every page; the refusals; the ELBO terms of an adopted copy of one of our runs;
the README example, run as written."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import explorer
from explorer import adopt as adopt_mod
from explorer.adopt import AdoptError, adopt, main
from explorer.inference import sample_terms
from explorer.onnx_model import load_onnx_model
from explorer.runs import describe_run
from training import rundir, validate

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180
PAGES = ["reparameterisation.py", "elbo_vs_log_p.py", "latent_health.py", "generation.py",
         "compare_ae_vs_vae.py", "beta_and_warmup.py", "train.py"]


class ConvVAE(nn.Module):
    """Shares nothing with training/model.py: conv + batch norm, z = 8, probabilities out."""

    def __init__(self, latent: int = 8):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(8 * 4 * 4, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64))

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 8)

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, 1, 8, 8)


def digits(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images[:n] / 16.0).astype(np.float32)[:, None], data.target[:n]


@pytest.fixture(scope="module")
def trained() -> ConvVAE:
    torch.manual_seed(0)
    model = ConvVAE()
    x = torch.from_numpy(digits(400)[0])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(30):
        xb = x[(step * 64) % 400:][:64]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = nn.functional.binary_cross_entropy(model.decode(z), xb, reduction="sum")
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum()
        opt.zero_grad()
        ((recon + kl) / len(xb)).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def adopted(tmp_path_factory, trained) -> Path:
    root = tmp_path_factory.mktemp("adopted")
    x, y = digits()
    adopt(trained, x, labels=y, out=root / "mine", decoder_output="probabilities")
    return root / "mine"


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory, adopted) -> tuple[Path, Path]:
    """An ONNX pair exported from that model (with its own names for inputs/outputs)."""
    import onnx

    folder = tmp_path_factory.mktemp("pair")
    names = {"encoder.onnx": {"x": "images", "mu": "m", "logvar": "lv"},
             "decoder.onnx": {"z": "code", "probabilities": "pixels"}}
    for file, mapping in names.items():
        model = onnx.load(str(adopted / file))
        adopt_mod._rename(model, mapping)
        onnx.save(model, str(folder / file))
    return folder / "encoder.onnx", folder / "decoder.onnx"


def test_adopted_run_is_complete_and_valid(adopted, trained):
    info = validate.check_run(adopted)
    assert info.is_imported and info.decoder_output == "probabilities"
    assert info.config.latent_dim == 8 and info.image_shape == (1, 8, 8)
    for name in ("config.json", "encoder.onnx", "decoder.onnx", "onnx.json", "latents.npz",
                 "images.npz"):
        assert (adopted / name).is_file()
    assert not (adopted / rundir.WEIGHTS_FILE).exists()
    latents = rundir.read_latents(adopted)
    assert {"mu", "logvar", "labels", "recon", "kl", "pca", "tsne"} <= set(latents)
    images = rundir.read_images(adopted)
    x, _ = digits()
    np.testing.assert_array_equal(images, x)
    model = load_onnx_model(adopted)
    with torch.no_grad():
        mu, _ = trained.eval().encode(torch.from_numpy(x[:5]))
    np.testing.assert_allclose(model.encode(x[:5])[0], mu.numpy(), atol=1e-4)
    entry = describe_run(adopted)
    assert entry.openable and entry.imported and "imported" in entry.label()


def test_unlabelled_images_are_coloured_by_reconstruction_error(tmp_path, trained):
    x, _ = digits(60)
    out = adopt(trained, x, out=tmp_path / "r", decoder_output="probabilities", tsne=False)
    info = rundir.read_config(out)
    assert info.imported["colour_by"] == "reconstruction error"
    assert all(name.startswith("reconstruction error") for name in info.class_names)
    attr = np.linspace(0, 1, 60)
    out = adopt(trained, x, out=tmp_path / "a", decoder_output="probabilities", tsne=False,
                attribute=attr, attribute_name="thickness")
    names = rundir.read_config(out).class_names
    assert all(name.startswith("thickness") for name in names)


class OneTensor(ConvVAE):
    def encode(self, x):
        return self.enc(x)[:, :8]


class FlatDecoder(ConvVAE):
    def decode(self, z):
        return torch.sigmoid(self.dec(z))


class NanDecoder(ConvVAE):
    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, 1, 8, 8) * float("nan")


@pytest.mark.parametrize("model, images, message", [
    (OneTensor(), None, "returns one tensor"),
    (FlatDecoder(), None, "must have the images' shape"),
    (NanDecoder(), None, "NaN"),
    (ConvVAE(), np.zeros((0, 1, 8, 8), np.float32), "empty"),
    (ConvVAE(), np.zeros((4, 1, 16, 16), np.float32), "cannot take the images"),
])
def test_refusals_write_nothing(tmp_path, model, images, message):
    x = digits(20)[0] if images is None else images
    with pytest.raises(AdoptError, match=message):
        adopt(model, x, out=tmp_path / "run", decoder_output="probabilities")
    assert not (tmp_path / "run").exists()


def test_refuses_a_folder_holding_a_run(adopted, trained):
    before = sorted(p.name for p in adopted.iterdir())
    with pytest.raises(AdoptError, match="already holds a run"):
        adopt(trained, digits(20)[0], out=adopted, decoder_output="probabilities")
    assert sorted(p.name for p in adopted.iterdir()) == before


def test_cli_from_onnx_pair(tmp_path, onnx_pair, capsys):
    encoder, decoder = onnx_pair
    x, y = digits()
    np.save(tmp_path / "x.npy", (x * 255).round().astype(np.uint8))
    np.save(tmp_path / "y.npy", y)
    assert main(["--encoder", str(encoder), "--decoder", str(decoder), "--images",
                 str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--decoder-output", "probabilities", "--out", str(tmp_path / "runs" / "pair"),
                 "--no-tsne"]) == 0
    info = validate.check_run(tmp_path / "runs" / "pair")
    assert info.imported["source"] == "onnx"
    # the refusals, each with its one line and nothing written
    assert main(["--encoder", str(encoder), "--decoder", str(decoder), "--images",
                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "runs" / "pair")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    assert main(["--encoder", str(encoder), "--decoder", str(decoder), "--images",
                 str(tmp_path / "empty.npy"), "--out", str(tmp_path / "e")]) == 2
    assert "empty" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert main(["--encoder", str(decoder), "--decoder", str(decoder), "--images",
                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "w")]) == 2
    assert "returns 1 tensor" in capsys.readouterr().err and not (tmp_path / "w").exists()
    assert main(["--encoder", str(decoder), "--decoder", str(decoder), "--images",
                 str(tmp_path / "x.npy"), "--model", "ae", "--out", str(tmp_path / "w")]) == 2
    assert "cannot take" in capsys.readouterr().err and not (tmp_path / "w").exists()


def pythae_folder(folder: Path, model: ConvVAE | None = None, custom: bool = False) -> Path:
    """A saved pythae VAE (pythae 0.1.2's format): model_config.json, environment.json,
    model.pt = {"model_state_dict": ...} of Encoder_VAE_MLP + Decoder_AE_MLP."""
    folder.mkdir(parents=True)
    net = adopt_mod.PythaeMLPVAE((1, 8, 8), 4)
    torch.manual_seed(1)
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    config = {"name": "VAEConfig", "input_dim": [1, 8, 8], "latent_dim": 4,
              "uses_default_encoder": not custom, "uses_default_decoder": True,
              "reconstruction_loss": "bce"}
    (folder / "model_config.json").write_text(json.dumps(config))
    (folder / "environment.json").write_text(json.dumps({"name": "EnvironmentConfig",
                                                         "python_version": "3.11"}))
    torch.save({"model_state_dict": net.state_dict()}, folder / "model.pt")
    if custom:
        (folder / "encoder.pkl").write_bytes(b"\x80\x04N.")
    return folder


def test_pythae_folder(tmp_path):
    folder = pythae_folder(tmp_path / "pythae")
    x, y = digits(100)
    np.savez(tmp_path / "x.npz", x=x, labels=y)
    assert main(["--pythae", str(folder), "--images", str(tmp_path / "x.npz"), "--out",
                 str(tmp_path / "runs" / "py")]) == 0
    info = validate.check_run(tmp_path / "runs" / "py")
    assert info.decoder_output == "probabilities" and info.config.likelihood == "bernoulli"
    assert info.imported["source"].startswith("pythae")


def test_pythae_custom_architecture_is_refused(tmp_path, capsys):
    folder = pythae_folder(tmp_path / "custom", custom=True)
    np.save(tmp_path / "x.npy", digits(10)[0])
    assert main(["--pythae", str(folder), "--images", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cloudpickle" in err and "run code" in err and "ONNX" in err
    assert not (tmp_path / "out").exists()


def test_validation_refuses_bad_imported_runs(adopted, copy_run):
    run = copy_run(adopted, "bad")
    raw = json.loads((run / "config.json").read_text())
    raw["imported"]["decoder_output"] = "softmax"
    (run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(rundir.RunDirError, match="decoder_output"):
        validate.check_run(run)
    run = copy_run(adopted, "noimages")
    (run / "images.npz").unlink()
    with pytest.raises(rundir.RunDirError, match="images.npz is missing"):
        validate.check_run(run)
    assert not describe_run(run).openable


def test_elbo_terms_of_an_adopted_copy_match_the_original(tiny_run, tmp_path):
    """Same model, same images: the ELBO panel's terms agree within 1e-3 nats."""
    loaded = rundir.load_run(tiny_run)
    from explorer.inference import load_test_images

    x = load_test_images(loaded.info)
    out = adopt(loaded.model, x, out=tmp_path / "copy", tsne=False)
    original, copy = load_onnx_model(tiny_run), load_onnx_model(out)
    for index in (0, 7, 42):
        a, b = sample_terms(original, x[index], 64), sample_terms(copy, x[index], 64)
        assert abs(a.recon - b.recon) < 1e-3 and abs(a.kl - b.kl) < 1e-3
        assert abs(a.elbo - b.elbo) < 1e-3


def test_module_is_callable(tmp_path, trained):
    assert callable(explorer.adopt)
    out = explorer.adopt(trained, digits(30)[0], out=tmp_path / "c",
                         decoder_output="probabilities", tsne=False)
    assert validate.check_run(out).is_imported


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Explore your own VAE", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 20
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert validate.check_run(tmp_path / "runs" / "mine").is_imported


# --------------------------------------------------------------------------- the app

class TinyAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(64, 2), nn.Linear(2, 64)

    def encode(self, x):
        return self.enc(x.flatten(1))

    def decode(self, z):
        return self.dec(z).view(-1, 1, 8, 8)


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory, trained, onnx_pair) -> Path:
    """Imported runs only, all on the same images ("digits8"): the PyTorch one, the ONNX
    pair, the pythae folder, and a plain autoencoder (for the AE vs VAE page)."""
    root = tmp_path_factory.mktemp("app-runs")
    x, y = digits()
    adopt(trained, x, labels=y, out=root / "mine", decoder_output="probabilities",
          dataset="digits8")
    adopt(TinyAE(), x, labels=y, out=root / "ae", kind="ae", dataset="digits8", tsne=False)
    encoder, decoder = onnx_pair
    np.save(root.parent / "digits8.npy", x)
    np.save(root.parent / "labels.npy", y)
    assert main(["--encoder", str(encoder), "--decoder", str(decoder), "--images",
                 str(root.parent / "digits8.npy"), "--labels", str(root.parent / "labels.npy"),
                 "--decoder-output", "probabilities", "--out", str(root / "pair"),
                 "--no-tsne"]) == 0
    folder = pythae_folder(root.parent / "pythae-model")
    assert main(["--pythae", str(folder), "--images", str(root.parent / "digits8.npy"),
                 "--out", str(root / "py"), "--no-tsne"]) == 0
    return root


def _problems(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error] + [str(e.value) for e in at.exception]


@pytest.mark.slow
@pytest.mark.parametrize("run", ["mine", "pair", "py"])
def test_every_page_opens_an_adopted_run(app_runs, run, monkeypatch):
    monkeypatch.setenv("VAE_RUNS_DIR", str(app_runs))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state["run_dir"] = str(app_runs / run)
    at.run()
    assert not _problems(at), _problems(at)
    text = "\n".join(str(m.value) for m in [*at.markdown, *at.caption, *at.info])
    assert "imported" in text and "nats" in text
    assert any(m.label == "ELBO" for m in at.metric)
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "app" / "pages" / page), default_timeout=TIMEOUT)
        at.session_state["run_dir"] = str(app_runs / run)
        at.run()
        assert not _problems(at), (page, _problems(at))


LESSON_URLS = ["Compare_AE_vs_VAE", "Reparameterisation", "ELBO_vs_log_p", "Latent_health",
               "Beta_and_warmup", "Generation", "Train"]


@pytest.mark.browser
@pytest.mark.slow
def test_adopted_runs_in_the_browser(app_runs):
    """Each imported run in Chromium, one server and one browser for all three (the conv
    VAE adopted from PyTorch and as an ONNX pair, whose decoders return probabilities, and
    the pythae folder): the browser decodes while a slider is held down, its pixels equal
    ONNX Runtime's in Python (a sigmoid only for a decoder that returns logits), the ELBO
    panel shows; with the first run selected, every other page opens without an error
    (every page of every adopted run opens in AppTest above)."""
    from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer
    from tests.test_browser import ERRORS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent")
    from playwright.sync_api import sync_playwright

    with StreamlitServer(env={"VAE_RUNS_DIR": str(app_runs)}) as server, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url, wait_until="domcontentloaded")
        for name in ["mine", "pair", "py"]:
            _drag_and_compare(page, app_runs / name)
        for url in LESSON_URLS:  # the last run selected ("py") stays selected
            page.goto(f"{server.url}/{url}", wait_until="domcontentloaded")
            page.locator("h1").first.wait_for(timeout=120_000)
            page.wait_for_timeout(1500)
            assert page.locator('[data-testid="stException"]').count() == 0, url
            assert page.locator(ERRORS).count() == 0, (url,
                                                       page.locator(ERRORS).first.inner_text())
        browser.close()


def _drag_and_compare(page, run: Path) -> None:
    """Select ``run`` in the sidebar, hold z0's slider down and move it: every decode the
    browser shows equals ONNX Runtime's in Python; then the ELBO panel shows."""
    import onnxruntime as ort

    from tests import lens_driver
    from tests.lens_driver import API, LENS
    from tests.test_browser import ERRORS

    info = rundir.read_config(run)
    session = ort.InferenceSession(str(run / "decoder.onnx"), providers=["CPUExecutionProvider"])
    z_input = session.get_inputs()[0].name
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click(timeout=120_000)
    page.get_by_role("option", name=re.compile(f"^{run.name} ")).click()
    sha = hashlib.sha256((run / "decoder.onnx").read_bytes()).hexdigest()
    page.wait_for_function(f"() => {API} && {API}.runtime === 'wasm' && {API}.decodes > 0 "
                           f"&& {API}.sha === '{sha}' "
                           f"&& {API}.z.length === {info.config.latent_dim}",
                           timeout=120_000)
    slider = page.locator(f"{LENS} input[aria-label='z0']")
    box = slider.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    previous = None
    for step in range(1, 5):
        n = lens_driver.decodes(page)
        page.mouse.move(x + step * box["width"] / 10, y, steps=2)
        lens_driver.wait_decodes_above(page, n)
        rgb, z = lens_driver.pixels(page)
        image = rgb[..., 0]
        out = session.run(None, {z_input: np.asarray([z], np.float64).astype(np.float32)})
        mean = out[0][0, 0].astype(np.float64)
        if info.decoder_output == "logits":
            mean = 1 / (1 + np.exp(-mean))
        want = np.round(255 * mean)
        assert np.abs(image - want).max() <= 1, f"{run.name}: browser and ONNX differ at {z}"
        assert previous is None or not np.array_equal(image, previous)
        previous = image
    page.mouse.up()
    page.get_by_role("tab", name=re.compile(r"ELBO of sample")).wait_for(timeout=60_000)
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(timeout=60_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()
