"""The model and the loop: a training step changes weights, an eval step does not; a
run directory round-trips; --resume continues from the saved epoch, bit for bit."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from training import rundir
from training.config import TrainConfig
from training.data import load_dataset
from training.loss import elbo_terms
from training.model import VAE
from training.trainer import TrainingStopped, evaluate, train


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch,shape", [("mlp", (1, 8, 8)), ("conv", (1, 28, 28)),
                                        ("conv", (3, 16, 16))])
def test_shapes_and_logvar_clamp(arch, shape):
    model = VAE(shape, latent_dim=3, hidden_dim=32, arch=arch)
    x = torch.rand(5, *shape)
    logits, mu, logvar = model(x)
    assert logits.shape == (5, *shape) and mu.shape == logvar.shape == (5, 3)
    with torch.no_grad():
        model.to_logvar.bias.fill_(1e4)
    _, logvar = model.encode(x)
    assert torch.isfinite(logvar.exp()).all() and logvar.max() <= 8.0


def test_conv_rejects_small_images_clearly():
    with pytest.raises(ValueError, match="at least 16x16"):
        VAE((1, 8, 8), arch="conv")


def test_a_training_step_changes_every_weight_and_an_eval_step_changes_none():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=2, hidden_dim=16)
    x = torch.rand(32, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = _params(model)
    logits, mu, logvar = model(x)
    loss = elbo_terms(logits, x, mu, logvar).objective.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = _params(model)
    trained = [k for k in before if k != "log_sigma"]
    assert all(not torch.equal(before[k], after[k]) for k in trained)

    config = TrainConfig(dataset="digits", latent_dim=2)
    result = evaluate(model, x, config, torch.device("cpu"), seed=1)
    assert all(torch.equal(after[k], v) for k, v in _params(model).items())
    assert model.training  # evaluate restores the mode it found
    again = evaluate(model, x, config, torch.device("cpu"), seed=1)
    np.testing.assert_array_equal(result.recon, again.recon)  # fixed eval noise


def test_autoencoder_is_deterministic_and_has_no_logvar():
    model = VAE((1, 8, 8), latent_dim=2, hidden_dim=16, kind="ae").eval()
    x = torch.rand(4, 1, 8, 8)
    a, mu, logvar = model(x)
    b, _, _ = model(x)
    assert logvar is None and torch.equal(a, b) and not model.is_vae


def test_run_directory_round_trips(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert set(rundir.RUN_FILES) <= names
    assert not rundir.leftover_temp_files(tiny_run)
    loaded = rundir.load_run(tiny_run)
    assert not loaded.model.training
    info = loaded.info
    assert info.status == "complete" and info.epochs_completed == 3
    assert info.image_shape == (1, 8, 8) and info.config.latent_dim == 2
    assert "torch" in info.versions

    # same outputs: the saved latents are what the loaded model computes
    latents = rundir.read_latents(tiny_run)
    data = load_dataset("digits")
    with torch.no_grad():
        mu, logvar = loaded.model.encode(data.test_x)
    np.testing.assert_allclose(mu.numpy(), latents["mu"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logvar.numpy(), latents["logvar"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(latents["labels"], data.test_y.numpy())
    assert latents["pca"].shape == (len(data.test_x), 2)

    rows = rundir.read_metrics(tiny_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    required = {"epoch", "train_recon", "train_kl", "train_loss", "test_recon", "test_kl",
                "test_loss", "kl_per_dim", "active_units", "seconds"}
    assert required <= set(rows[-1])
    last = rows[-1]
    assert last["test_loss"] == pytest.approx(last["test_recon"] + last["test_kl"])
    assert last["test_loss"] == pytest.approx(float(latents["recon"].mean() + latents["kl"].mean()),
                                              rel=1e-5)
    assert len(last["kl_per_dim"]) == 2 and min(last["kl_per_dim"]) >= 0
    assert sum(last["kl_per_dim"]) == pytest.approx(last["test_kl"], rel=1e-4)

    # a second model built from config.json with these weights gives identical outputs
    again = rundir.load_run(tiny_run)
    z = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.equal(loaded.model.decode(z), again.model.decode(z))


def test_tsne_is_cached_only_for_latent_dims_above_two(tiny_run, tiny_run_z4):
    assert "tsne" not in rundir.read_latents(tiny_run)
    latents = rundir.read_latents(tiny_run_z4)
    assert latents["tsne"].shape == (len(latents["mu"]), 2)
    assert np.isfinite(latents["tsne"]).all()


def test_autoencoder_run_has_no_logvar_and_zero_kl(tiny_ae_run):
    latents = rundir.read_latents(tiny_ae_run)
    assert "logvar" not in latents and not latents["kl"].any()
    assert rundir.load_run(tiny_ae_run).model.is_vae is False


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path):
    base = dict(dataset="digits", hidden_dim=32, hidden_layers=1, latent_dim=2, batch_size=128,
                device="cpu", threads=1, seed=3, tsne=False)
    quiet = dict(log=lambda line: None, show_progress_bar=False)
    full = train(TrainConfig(**base, epochs=4), tmp_path / "full", **quiet)
    # The same 4-epoch schedule, stopped by a real SIGINT once epoch 2 is saved, then resumed.
    part = tmp_path / "part"
    config = TrainConfig(**base, epochs=4)

    def progress(row):
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingStopped) as info:
        train(config, part, progress=progress, **quiet)
    assert info.value.exit_code == 130
    assert rundir.read_config(part).epochs_completed == 2
    assert rundir.load_train_state(part)["epoch"] == 2
    resumed = train(config, part, resume=True, **quiet)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4]
    keys = ("train_recon", "train_kl", "test_recon", "test_kl")
    for a, b in zip(full.metrics, rundir.read_metrics(part), strict=False):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-6, abs=1e-6)
    assert rundir.read_config(part).status == "complete"


def test_config_round_trips_and_rejects_nonsense(tiny_run):
    raw = json.loads((tiny_run / "config.json").read_text())
    assert TrainConfig.from_dict(raw["config"]) == rundir.read_config(tiny_run).config
    with pytest.raises(ValueError, match="unknown config keys: colour"):
        TrainConfig.from_dict({**raw["config"], "colour": "red"})
    with pytest.raises(ValueError, match="latent-dim must be at least 1"):
        TrainConfig(latent_dim=0).validate()


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_final_fraction():
    from training.trainer import lr_at

    config = TrainConfig(dataset="digits", epochs=8, lr=4e-3, lr_warmup=1.0,
                         lr_final_fraction=0.1)
    low = 4e-4
    assert lr_at(0.0, config) == pytest.approx(low)
    assert lr_at(0.5, config) == pytest.approx(low + 0.5 * (4e-3 - low))
    assert lr_at(1.0, config) == pytest.approx(4e-3)
    assert lr_at(8.0, config) == pytest.approx(low)
    after = [lr_at(1.0 + 7.0 * i / 20, config) for i in range(21)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    # a warm-up longer than half the run is cut to half the run (a 1-epoch run still trains)
    short = TrainConfig(dataset="digits", epochs=1, lr=4e-3, lr_warmup=5.0)
    assert lr_at(0.5, short) == pytest.approx(4e-3)


def test_auto_epochs_follow_the_latent_size_and_explicit_epochs_win():
    assert TrainConfig().epochs == 8 and TrainConfig(latent_dim=20).epochs == 12
    assert TrainConfig(latent_dim=20, epochs=3).epochs == 3


def test_thread_governor_leaves_the_cores_other_processes_use(monkeypatch):
    from training.trainer import ThreadGovernor

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    governor = ThreadGovernor(cores=2, every=0.0)
    clock = {"wall": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(governor, "_sample",
                        lambda: (clock["wall"], clock["busy"], clock["own"]))
    governor._mark = governor._sample()

    def advance(wall: float, own: float, others: float) -> int:
        clock["wall"] += wall
        clock["own"] += own
        clock["busy"] += own + others
        return governor.check()

    assert advance(1.0, 2.0, 0.0) == 2  # idle machine: both cores
    assert advance(1.0, 1.3, 0.7) == 1  # a neighbour takes most of a core: one thread
    assert advance(1.0, 1.0, 1.0) == 1
    assert advance(1.0, 1.0, 0.2) == 2  # it left: both again
    assert governor.history[-1] == (0.2, 2)


def test_onnx_graphs_with_swapped_weights_equal_a_fresh_export():
    from training.export import export_graphs
    from training.onnx_templates import swap_weights

    config = TrainConfig(dataset="digits", hidden_dim=32, hidden_layers=1, latent_dim=3)
    torch.manual_seed(0)
    template = export_graphs(VAE.from_config(config, (1, 8, 8)))
    torch.manual_seed(1)
    trained = VAE.from_config(config, (1, 8, 8))
    swapped = swap_weights(template, trained)
    fresh = export_graphs(trained)
    assert swapped is not None
    assert (swapped.encoder, swapped.decoder) == (fresh.encoder, fresh.decoder)
    other = VAE.from_config(TrainConfig(dataset="digits", hidden_dim=16, hidden_layers=1,
                                        latent_dim=3), (1, 8, 8))
    assert swap_weights(template, other) is None  # another architecture: export anew


def test_demo_time_left_scales_measured_epochs_by_model_size_and_counts_fixed_costs():
    from training.demo import DEMO_RUNS, TimeLeft, demo_config, size_per_sample

    plan = {name: demo_config(name) for name in DEMO_RUNS}
    left = TimeLeft(plan, jobs=1)
    assert left.seconds_left() is None and "measuring" in left.describe()
    z2 = plan["demo-vae-z2"]
    left.epoch_done("demo-vae-z2", {"epoch": 1, "seconds": 2.0})
    per_unit = 2.0 / size_per_sample(z2)
    expected = sum((c.epochs - (1 if n == "demo-vae-z2" else 0)) * size_per_sample(c) * per_unit
                   + 4.0 for n, c in plan.items())
    assert left.seconds_left() == pytest.approx(expected)
    left.run_done("demo-vae-z2", wall=2.0 + 3.0, epoch_seconds=2.0)  # 3 s besides epochs
    rest = sum(c.epochs * size_per_sample(c) * per_unit + 3.0
               for n, c in plan.items() if n != "demo-vae-z2")
    assert left.seconds_left() == pytest.approx(rest)
    assert TimeLeft(plan, jobs=2, epoch_seconds=1.0, epoch_units=1.0).seconds_left() == \
        pytest.approx(TimeLeft(plan, jobs=1, epoch_seconds=1.0, epoch_units=1.0)
                      .seconds_left() / 2)
