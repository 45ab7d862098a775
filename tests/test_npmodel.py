"""The app's NumPy model (explorer/npmodel.py) against the torch model it mirrors: every
backbone, kind and likelihood, the convolution primitives against torch.nn.functional,
the same weight checksum whichever framework reads the file, and clear errors for weights
that do not match their config. Also: the main page never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.npmodel import (
    conv2d,
    conv_transpose2d,
    kl_per_dim,
    load_numpy_model,
    reconstruction_nll,
    sigmoid,
)
from training import loss, rundir
from training.config import TrainConfig
from training.model import VAE

ROOT = Path(__file__).resolve().parent.parent


def save_model(folder: Path, config: TrainConfig, shape: tuple[int, int, int],
               seed: int = 0) -> VAE:
    """A randomly initialised model written as a run directory (config + weights)."""
    torch.manual_seed(seed)
    model = VAE.from_config(config, shape).eval()
    with torch.no_grad():  # non-trivial log sigma and biases, so every parameter matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.log_sigma.fill_(-1.3)
    folder.mkdir(parents=True, exist_ok=True)
    rundir.write_config(folder, rundir.RunInfo(config=config, image_shape=shape,
                                               class_names=[str(i) for i in range(10)]))
    rundir.save_weights(folder / rundir.WEIGHTS_FILE, model.state_dict())
    return model


CASES = [  # (arch, image shape, kind, likelihood, hidden layers, latent dim)
    ("mlp", (1, 8, 8), "vae", "bernoulli", 2, 2),
    ("mlp", (1, 8, 8), "ae", "gaussian", 1, 3),
    ("mlp", (3, 6, 5), "vae", "gaussian", 3, 4),
    ("conv", (1, 16, 16), "vae", "bernoulli", 1, 3),
    ("conv", (3, 16, 20), "ae", "gaussian", 1, 2),
]


@pytest.mark.parametrize("arch,shape,kind,likelihood,layers,latent", CASES)
def test_forward_matches_torch(tmp_path, arch, shape, kind, likelihood, layers, latent):
    config = TrainConfig(dataset="digits", arch=arch, model=kind, likelihood=likelihood,
                         hidden_layers=layers, hidden_dim=24, latent_dim=latent)
    reference = save_model(tmp_path / "run", config, shape)
    model = load_numpy_model(tmp_path / "run")
    assert (model.latent_dim, model.is_vae, model.image_shape) == (latent, kind == "vae", shape)
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu, logvar = reference.encode(x)
        z = mu + 0.7  # decode somewhere other than the means too
        logits = reference.decode(z)
        nll = loss.reconstruction_nll(logits, x, likelihood, reference.log_sigma)
    np_mu, np_logvar = model.encode(x.numpy())
    np.testing.assert_allclose(np_mu, mu.numpy(), rtol=1e-5, atol=1e-6)
    if kind == "vae":
        np.testing.assert_allclose(np_logvar, logvar.numpy(), rtol=1e-5, atol=1e-6)
    else:
        assert np_logvar is None
    np_logits = model.decode(z.numpy())
    np.testing.assert_allclose(np_logits, logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.reconstruction_nll(np_logits, x.numpy()), nll.numpy(),
                               rtol=1e-5)


def test_logvar_is_clamped_like_training(tmp_path):
    config = TrainConfig(dataset="digits", hidden_layers=1, hidden_dim=8, latent_dim=2)
    reference = save_model(tmp_path / "run", config, (1, 8, 8))
    with torch.no_grad():
        reference.to_logvar.bias.copy_(torch.tensor([50.0, -50.0]))
    rundir.save_weights(tmp_path / "run" / rundir.WEIGHTS_FILE, reference.state_dict())
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        expected = reference.encode(x)[1].numpy()
    _, logvar = load_numpy_model(tmp_path / "run").encode(x.numpy())
    np.testing.assert_allclose(logvar, expected, atol=1e-6)
    assert logvar.max() == 8.0 and logvar.min() == -12.0


@pytest.mark.parametrize("stride,padding,kernel", [(2, 1, 4), (1, 0, 3), (2, 0, 3), (3, 2, 5)])
def test_convolutions_match_torch(stride, padding, kernel):
    rng = np.random.default_rng(stride * 10 + kernel)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                        stride=stride, padding=padding).numpy()
    np.testing.assert_allclose(conv2d(x, (w, b), stride, padding), expected, rtol=1e-4,
                               atol=1e-4)
    wt = rng.standard_normal((3, 4, kernel, kernel)).astype(np.float32)  # (in, out, k, k)
    if padding < kernel:
        expected_t = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt),
                                        torch.from_numpy(b), stride=stride,
                                        padding=padding).numpy()
        np.testing.assert_allclose(conv_transpose2d(x, (wt, b), stride, padding), expected_t,
                                   rtol=1e-4, atol=1e-4)


def test_loss_terms_match_training_loss():
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


def test_checksum_is_the_same_from_numpy_and_torch(tiny_run):
    pt, meta = rundir.load_weights(tiny_run / rundir.WEIGHTS_FILE)
    arrays, _ = rundir.load_weights(tiny_run / rundir.WEIGHTS_FILE, framework="np")
    assert isinstance(next(iter(arrays.values())), np.ndarray)
    assert rundir.weights_sha256(arrays) == rundir.weights_sha256(pt) == meta["weights_sha256"]
    assert arrays["log_sigma"].shape == ()  # 0-d stays 0-d (ascontiguousarray would not)


def test_bad_weights_are_refused_with_the_file_named(tiny_run, copy_run):
    run = copy_run(tiny_run)
    weights = run / rundir.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(rundir.RunDirError, match="checksum mismatch") as err:
        load_numpy_model(run)
    assert str(weights) in str(err.value)
    with pytest.raises(rundir.RunDirError, match="does not exist"):
        load_numpy_model(run.parent / "no-such-run")


def test_weights_of_another_architecture_are_refused(tiny_run, copy_run):
    run = copy_run(tiny_run)
    config = json.loads((run / rundir.CONFIG_FILE).read_text())
    config["config"]["hidden_layers"] += 1  # config.json no longer describes the weights
    (run / rundir.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(rundir.RunDirError, match="another architecture"):
        load_numpy_model(run)


def test_main_page_never_imports_torch(tiny_run):
    """The main page's first run and a slider move, in a fresh interpreter: torch's import
    alone would cost ~2.8 s of the 5 s cold-start budget, so it must not sneak back in.
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
