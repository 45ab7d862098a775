"""ONNX export (training/export.py) and the app's ONNX model (explorer/onnx_model.py)
against the torch model they come from: every backbone, kind and likelihood; the NumPy
ELBO terms (explorer/nploss.py) against training/loss.py; missing, stale and modified ONNX
files refused with one clear line, and ``python -m training.export`` fixing a run that has
none. Also: a trained run has its ONNX files, and the ONNX model never imports torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.nploss import kl_per_dim, reconstruction_nll, sigmoid
from explorer.onnx_model import OnnxModel, load_onnx_model
from training import loss, rundir
from training.config import LOGVAR_MAX, LOGVAR_MIN, TrainConfig
from training.data import load_dataset
from training.export import OnnxGraphs, export_graphs, write_graphs
from training.export import main as export_main
from training.model import VAE

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # max abs difference between ONNX Runtime's and torch's outputs
SHAPES = {"mlp": (3, 6, 5), "conv": (1, 16, 20)}  # odd sizes: no accidental square layouts
LATENT = 3
CLAMPED_BIAS = (50.0, -50.0)  # to_logvar biases of dims 0 and 1: clamped to the max, min


def tiny_config(arch: str, kind: str, likelihood: str = "bernoulli") -> TrainConfig:
    return TrainConfig(dataset="digits", arch=arch, model=kind, likelihood=likelihood,
                       hidden_layers=2, hidden_dim=24, latent_dim=LATENT)


@pytest.fixture(scope="module")
def exported():
    """``exported(arch, kind) -> (model, graphs)``: a random tiny model with non-trivial
    biases and log sigma, and its ONNX export, made once per (arch, kind). The graphs do
    not depend on the likelihood (that only enters the loss), so the likelihood cases
    share them."""
    cache: dict[tuple[str, str], tuple[VAE, OnnxGraphs]] = {}

    def get(arch: str, kind: str) -> tuple[VAE, OnnxGraphs]:
        if (arch, kind) not in cache:
            torch.manual_seed(len(cache))
            model = VAE.from_config(tiny_config(arch, kind), SHAPES[arch]).eval()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
                model.log_sigma.fill_(-1.3)
                if model.to_logvar is not None:
                    model.to_logvar.bias[:2] = torch.tensor(CLAMPED_BIAS)
            cache[arch, kind] = model, export_graphs(model)
        return cache[arch, kind]
    return get


def write_run(folder: Path, config: TrainConfig, model: VAE, graphs: OnnxGraphs,
              shape: tuple[int, int, int]) -> Path:
    """A run directory holding config.json, the weights and their ONNX files."""
    folder.mkdir(parents=True, exist_ok=True)
    rundir.write_config(folder, rundir.RunInfo(config=config, image_shape=shape,
                                               class_names=[str(i) for i in range(10)]))
    sha = rundir.save_weights(folder / rundir.WEIGHTS_FILE, model.state_dict(), {"epoch": "1"})
    write_graphs(folder, graphs, sha, epoch=1)
    return folder


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_onnx_model_matches_torch(tmp_path, exported, arch, kind, likelihood):
    model, graphs = exported(arch, kind)
    shape = SHAPES[arch]
    config = dataclasses.replace(tiny_config(arch, kind), likelihood=likelihood)
    onnx_model = load_onnx_model(write_run(tmp_path / "run", config, model, graphs, shape))
    assert isinstance(onnx_model, OnnxModel)
    assert (onnx_model.image_shape, onnx_model.latent_dim, onnx_model.is_vae,
            onnx_model.arch) == (shape, LATENT, kind == "vae", arch)
    assert onnx_model.log_sigma == pytest.approx(-1.3)

    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)
    z = torch.randn(7, LATENT, generator=torch.Generator().manual_seed(2))  # (B', D)
    with torch.no_grad():
        mu, logvar = model.encode(x)  # (B, D), (B, D) or None
        logits = model.decode(z)  # (B', C, H, W)
        recon_logits = model.decode(mu)  # (B, C, H, W)
        nll = loss.reconstruction_nll(recon_logits, x, likelihood, model.log_sigma)  # (B,)

    onnx_mu, onnx_logvar = onnx_model.encode(x.numpy())
    assert onnx_mu.dtype == np.float32 and onnx_mu.shape == (5, LATENT)
    assert np.abs(onnx_mu - mu.numpy()).max() <= TOLERANCE
    if kind == "vae":
        assert logvar is not None and onnx_logvar is not None
        assert np.abs(onnx_logvar - logvar.numpy()).max() <= TOLERANCE
        # clamped in the graph exactly as in training
        assert (onnx_logvar[:, 0] == LOGVAR_MAX).all() and (onnx_logvar[:, 1] == LOGVAR_MIN).all()
        np.testing.assert_allclose(kl_per_dim(onnx_mu, onnx_logvar),
                                   loss.kl_per_dim(mu, logvar).numpy(), rtol=1e-4, atol=1e-4)
    else:
        assert onnx_logvar is None
    onnx_logits = onnx_model.decode(z.numpy())
    assert onnx_logits.shape == (7, *shape)
    assert np.abs(onnx_logits - logits.numpy()).max() <= TOLERANCE
    assert onnx_model.decode(z[:1].numpy()).shape == (1, *shape)  # the batch axis is free

    # -log p(x|z): the same function of the same logits, and of ONNX's own logits
    np.testing.assert_allclose(onnx_model.reconstruction_nll(recon_logits.numpy(), x.numpy()),
                               nll.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        onnx_model.reconstruction_nll(onnx_model.decode(onnx_mu), x.numpy()), nll.numpy(),
        rtol=1e-4)


def test_numpy_loss_terms_match_training_loss():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 30, (5, 1, 4, 4))  # large |logits|: the stable form matters
    x = rng.uniform(0, 1, (5, 1, 4, 4))
    for likelihood in ("bernoulli", "gaussian"):
        expected = loss.reconstruction_nll(torch.from_numpy(logits), torch.from_numpy(x),
                                           likelihood, -0.7).numpy()
        np.testing.assert_allclose(reconstruction_nll(logits, x, likelihood, -0.7), expected,
                                   rtol=1e-10)
    mu, logvar = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    from torch.distributions import Normal, kl_divergence

    ref = kl_divergence(Normal(torch.from_numpy(mu), torch.from_numpy(np.exp(0.5 * logvar))),
                        Normal(0.0, 1.0)).numpy()
    np.testing.assert_allclose(kl_per_dim(mu, logvar), ref, rtol=1e-10)
    np.testing.assert_allclose(sigmoid(np.array([-800.0, 0.0, 800.0])), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="unknown likelihood"):
        reconstruction_nll(logits, x, "poisson", 0.0)


def test_a_trained_run_has_current_onnx_files_that_reproduce_its_latents(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert set(rundir.ONNX_FILES) <= names and not any(n.endswith(".data") for n in names)
    weights_sha = rundir.load_run(tiny_run).weights_meta["weights_sha256"]
    assert rundir.onnx_problem(tiny_run, weights_sha) is None
    record = json.loads((tiny_run / rundir.ONNX_RECORD_FILE).read_text())
    assert record["epoch"] == 3 and record["exporter"] == "torch.onnx.export(dynamo=True)"

    model = load_onnx_model(tiny_run)
    latents = rundir.read_latents(tiny_run)
    mu, logvar = model.encode(load_dataset("digits").test_x.numpy())
    assert np.abs(mu - latents["mu"]).max() <= TOLERANCE
    assert np.abs(logvar - latents["logvar"]).max() <= TOLERANCE


def test_checksum_is_the_same_from_numpy_and_torch(tiny_run):
    pt, meta = rundir.load_weights(tiny_run / rundir.WEIGHTS_FILE)
    arrays, _ = rundir.load_weights(tiny_run / rundir.WEIGHTS_FILE, framework="np")
    assert isinstance(next(iter(arrays.values())), np.ndarray)
    assert rundir.weights_sha256(arrays) == rundir.weights_sha256(pt) == meta["weights_sha256"]
    assert arrays["log_sigma"].shape == ()  # 0-d stays 0-d (ascontiguousarray would not)


def test_a_run_without_onnx_files_says_how_to_export_and_the_cli_fixes_it(tiny_run, copy_run):
    run = copy_run(tiny_run, "before-onnx")
    for name in rundir.ONNX_FILES:
        (run / name).unlink()
    with pytest.raises(rundir.RunDirError) as err:
        load_onnx_model(run)
    message = str(err.value)
    assert "\n" not in message
    assert "this run has no encoder.onnx/decoder.onnx (trained before ONNX export" in message
    assert f"run `python -m training.export {run}`" in message

    done = subprocess.run([sys.executable, "-m", "training.export", str(run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{run}: exported encoder.onnx, decoder.onnx\n"  # and nothing else
    assert done.stderr == ""
    assert load_onnx_model(run).decode(np.zeros((1, 2))).shape == (1, 1, 8, 8)


def test_a_complete_demo_run_from_before_onnx_export_gets_its_files(tiny_run, copy_run):
    from training.demo import train_demo_runs

    run = copy_run(tiny_run, "demo-vae-z2")  # complete: train_demo_runs never retrains it
    for name in rundir.ONNX_FILES:
        (run / name).unlink()
    lines: list[str] = []
    train_demo_runs(run.parent, only=["demo-vae-z2"], log=lines.append)
    assert lines == ["demo-vae-z2: already trained, kept as it is; exported its ONNX files"]
    assert load_onnx_model(run).latent_dim == 2


def test_export_cli_refuses_bad_input_with_one_line_and_exit_2(tmp_path, tiny_run, capsys):
    assert export_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nothing'}: run directory does not exist\n"

    (tmp_path / "not-a-run").mkdir()
    assert export_main([str(tmp_path / "not-a-run"), str(tiny_run)]) == 2  # the good one: kept
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "config.json is missing" in err and "Traceback" not in err
    assert out == f"{tiny_run}: encoder.onnx, decoder.onnx already current\n"

    with pytest.raises(SystemExit) as info:
        export_main([])
    assert info.value.code == 2


def test_modified_onnx_file_is_refused(tiny_run, copy_run):
    run = copy_run(tiny_run)
    decoder = run / rundir.ONNX_DECODER_FILE
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    decoder.write_bytes(bytes(data))
    with pytest.raises(rundir.RunDirError, match="checksum mismatch: the file is corrupt or "
                                                 "was modified") as err:
        load_onnx_model(run)
    assert err.value.path == decoder and "\n" not in str(err.value)


def test_stale_onnx_files_are_refused(tiny_run, copy_run):
    """New weights (another epoch, say) without a new export: the ONNX files are stale."""
    run = copy_run(tiny_run)
    tensors, _ = rundir.load_weights(run / rundir.WEIGHTS_FILE)
    tensors = {k: v + 0.01 if k.startswith("decoder.") else v for k, v in tensors.items()}
    rundir.save_weights(run / rundir.WEIGHTS_FILE, tensors, {"epoch": "4"})
    with pytest.raises(rundir.RunDirError, match=r"are stale: exported from other weights "
                                                 r"\(epoch 3\)") as err:
        load_onnx_model(run)
    assert "python -m training.export" in str(err.value)


def test_bad_weights_or_another_architecture_are_refused(tiny_run, copy_run):
    run = copy_run(tiny_run, "flipped")
    weights = run / rundir.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(rundir.RunDirError, match="checksum mismatch") as err:
        load_onnx_model(run)
    assert err.value.path == weights
    with pytest.raises(rundir.RunDirError, match="does not exist"):
        load_onnx_model(run.parent / "no-such-run")

    run = copy_run(tiny_run, "other-arch")
    config = json.loads((run / rundir.CONFIG_FILE).read_text())
    config["config"]["latent_dim"] = 5  # config.json no longer describes the ONNX files
    (run / rundir.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(rundir.RunDirError, match="another architecture"):
        load_onnx_model(run)


def test_the_onnx_model_never_imports_torch(tiny_run):
    """The app's main page opens runs through it: torch's import alone would eat most of
    the page's cold-start budget, so it must not sneak in."""
    code = ("import sys\n"
            "import numpy as np\n"
            "from explorer.onnx_model import load_onnx_model\n"
            f"model = load_onnx_model({str(tiny_run)!r})\n"
            "mu, _ = model.encode(np.zeros((2, 1, 8, 8)))\n"
            "model.reconstruction_nll(model.decode(mu), np.zeros((2, 1, 8, 8)))\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "TORCH False"
