"""The teaching pages under Streamlit's AppTest: each page runs on tiny digits runs and
shows what it promises (numbers that match the logic, element counts, images that change
when the user acts, clear messages for autoencoders and bad form input)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import compare, diagnostics
from explorer.verdicts import compare_verdict, health_verdicts, prior_samples_note, traversal_note
from tests.conftest import make_run
from training import rundir

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app" / "pages"
TIMEOUT = 120


@pytest.fixture(scope="module")
def teach_runs(tmp_path_factory, tiny_run, tiny_ae_run, tiny_run_z4) -> Path:
    """A runs folder: the three shared tiny runs (symlinked) and a beta = 4 run with a
    2-epoch KL warm-up."""
    root = tmp_path_factory.mktemp("teach-runs")
    for run in (tiny_run, tiny_ae_run, tiny_run_z4):
        (root / run.name).symlink_to(run, target_is_directory=True)
    make_run(root, "digits-vae-z2-beta4", latent_dim=2, beta=4.0, kl_warmup=2)
    return root


@pytest.fixture
def app(teach_runs, monkeypatch):
    monkeypatch.setenv("VAE_RUNS_DIR", str(teach_runs))
    monkeypatch.chdir(ROOT)

    def make(page: str, run: str | None = None, **state) -> AppTest:
        at = AppTest.from_file(str(PAGES / page), default_timeout=TIMEOUT)
        if run is not None:
            at.session_state["run_dir"] = str(teach_runs / run)
        for key, value in state.items():
            at.session_state[key] = value
        return at.run()
    return make


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}: {[m.label for m in at.metric]}")


def image_bytes(at: AppTest) -> list[str]:
    """The media URL of every st.image element, in page order: the URL is a hash of the
    image's bytes, so a changed image gets a new URL."""
    return [img.url for element in at.get("image") for img in element.proto.imgs]


def test_compare_page_contrasts_ae_and_vae(app):
    at = app("compare_ae_vs_vae.py")
    assert not at.exception, at.exception
    assert [s.value for s in at.selectbox] == ["digits-ae-z2", "digits-vae-z2"]
    assert len(at.get("plotly_chart")) == 2  # two latent maps
    assert len(image_bytes(at)) == 5  # inputs + 2 x (reconstructions, prior samples)
    # each run's box is the verdict of its own numbers (explorer.verdicts), not of AE/VAE
    boxes = {"success": at.success, "warning": at.warning, "info": at.info}
    for name, is_vae in (("digits-ae-z2", False), ("digits-vae-z2", True)):
        mu = rundir.read_latents(rundir.Path(os.environ["VAE_RUNS_DIR"]) / name)["mu"]
        fit, active_fit, n_dead = compare.prior_fits(mu, is_vae)
        kind, text = compare_verdict(fit, is_vae, active_fit, n_dead)
        assert text in [b.value for b in boxes[kind]], (name, kind)
    assert "never told where its codes should live" in texts(at)
    ae = rundir.read_latents(rundir.Path(os.environ["VAE_RUNS_DIR"]) / "digits-ae-z2")
    fit = compare.prior_fit(ae["mu"])
    assert metric(at, "Fit to N(0, I), nats") == f"{fit.gaussian_kl:.2f}"  # left: the AE
    assert metric(at, "Codes reached") == f"{100 * fit.coverage:.0f}%"
    # a run pair on different data sets is refused with a reason (here: same set, so the
    # swap only changes sides)
    at.selectbox(key="cmp_left").set_value("digits-vae-z4").run()
    assert not at.exception
    assert "digits-vae-z4" in texts(at) or at.subheader[0].value == "digits-vae-z4"


def test_reparameterisation_page_moves_z_with_a_new_eps(app, tiny_run):
    at = app("reparameterisation.py", run="digits-vae-z2", sample_index=3)
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.columns)[:2] == ["μ", "σ"] and len(table) == 2
    mu, sigma = table["μ"].to_numpy(), table["σ"].to_numpy()
    z = table.iloc[:, 3].to_numpy()
    eps = table.iloc[:, 2].to_numpy()
    np.testing.assert_allclose(z, mu + sigma * eps, rtol=1e-5, atol=1e-6)
    latents = rundir.read_latents(tiny_run)
    np.testing.assert_allclose(mu, latents["mu"][3], atol=1e-5)
    before = image_bytes(at)
    at.button(key="new_eps").click().run()
    assert not at.exception
    table2 = at.dataframe[0].value
    np.testing.assert_allclose(table2["μ"].to_numpy(), mu)  # same sample, same posterior
    assert not np.allclose(table2.iloc[:, 3].to_numpy(), z)  # z moved
    after = image_bytes(at)
    assert after[0] == before[0] and after[1] == before[1]  # input and decode(mu) unchanged
    assert after[2] != before[2]  # decode(z) changed
    at.slider(key="reparam_k").set_value(5).run()
    assert "5 draws of z" in at.subheader[-1].value
    # σ means only the posterior's standard deviation; the sigmoid is named s(·)
    assert "logistic sigmoid s(·)" in texts(at) and "σ(" not in texts(at)
    assert "decode(z) differs from decode(μ) by" in texts(at)  # verdicts.reparam_note


def test_reparameterisation_page_explains_an_autoencoder(app):
    at = app("reparameterisation.py", run="digits-ae-z2")
    assert not at.exception
    assert "plain autoencoder" in at.info[0].value and not at.dataframe


def test_elbo_page_shows_iwae_above_elbo(app):
    at = app("elbo_vs_log_p.py", run="digits-vae-z2", sample_index=0)
    assert not at.exception, at.exception
    at.select_slider(key="iwae_k").set_value(20)
    at.select_slider(key="iwae_n").set_value(100).run()
    assert not at.exception
    elbo = float(metric(at, "ELBO (nats)"))
    iwae = float(metric(at, "log p(x) ≈ IWAE, K=20 (nats)"))
    gap = float(metric(at, "gap IWAE − ELBO (nats)"))
    assert iwae >= elbo and gap == pytest.approx(iwae - elbo, abs=0.011)
    mean_elbo = float(metric(at, "mean ELBO (nats)"))
    mean_iwae = float(metric(at, "mean IWAE, K=20 (nats)"))
    assert mean_iwae > mean_elbo
    assert metric(at, "images with IWAE ≥ ELBO") == "100/100"
    assert "not a normalised density" in texts(at)
    # says how many Monte-Carlo draws, and why the main page's ELBO differs
    assert "from 1,000 draws" in texts(at) and "uses 64 draws" in texts(at)
    at.select_slider(key="iwae_k").set_value(1).run()
    assert metric(at, "gap IWAE − ELBO (nats)") == "0.00"  # IWAE_1 is the ELBO
    curve = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    iwae_line = next(t for t in curve if t["name"] == "IWAE_K")
    assert iwae_line["x"][0] == 1 and iwae_line["y"][-1] > iwae_line["y"][0]


def test_health_page_counts_active_units_and_exports_summary(app, tiny_run_z4):
    at = app("latent_health.py", run="digits-vae-z4")
    assert not at.exception, at.exception
    latents = rundir.read_latents(tiny_run_z4)
    model = rundir.load_run(tiny_run_z4).model
    from training.data import load_digits

    x = load_digits().test_x[:500]
    with torch.no_grad():
        recon = torch.sigmoid(model.decode(model.encode(x)[0])).numpy()
    spread = diagnostics.reconstruction_spread(x.numpy(), recon)
    health = diagnostics.latent_health(latents["mu"], latents["logvar"], spread)
    assert metric(at, "Reconstruction spread") == f"{100 * spread:.0f}%"
    assert metric(at, "Active units") == f"{health.active_units} / 4"
    assert metric(at, "Dead dimensions") == str(len(health.dead_dims))
    assert metric(at, "Total KL") == f"{health.total_kl:.2f} nats"
    assert [w.value for w in at.warning] == health.warnings
    shown = [(k, b.value) for k, boxes in (("success", at.success), ("warning", at.warning),
                                           ("info", at.info)) for b in boxes]
    assert sorted(shown) == sorted(health_verdicts(health))  # the words follow the numbers
    assert at.get("download_button")  # summary JSON and the figure's PNG/HTML


def test_health_page_warns_on_a_collapsed_run(app, teach_runs, tmp_path, monkeypatch):
    collapsed = teach_runs / "digits-vae-z4-collapsed"
    if not collapsed.exists():
        import shutil

        shutil.copytree(teach_runs / "digits-vae-z4", collapsed)
        arrays = rundir.read_latents(collapsed)
        arrays["mu"] = np.random.default_rng(0).normal(0, 1e-3, arrays["mu"].shape).astype(
            np.float32)
        arrays["logvar"] = np.zeros_like(arrays["logvar"])
        rundir.write_latents(collapsed, arrays)
    try:
        at = app("latent_health.py", run=collapsed.name)
        assert not at.exception, at.exception
        text = " ".join(w.value for w in at.warning)
        assert "Posterior collapse" in text and "Most latent dimensions are dead" in text
        assert metric(at, "Active units") == "0 / 4"
    finally:
        import shutil

        shutil.rmtree(collapsed)


def test_beta_page_charts_rate_distortion_and_warmup(app, teach_runs):
    at = app("beta_and_warmup.py")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["digits-vae-z2", "digits-vae-z2-beta4", "digits-vae-z4"]
    beta4 = table[table["run"] == "digits-vae-z2-beta4"].iloc[0]
    point = compare.rate_point(teach_runs / "digits-vae-z2-beta4")
    assert beta4["β"] == 4.0 and beta4["rate KL"] == pytest.approx(point.rate)
    assert any("autoencoder" in c.value for c in at.caption)  # the AE is left out, said so
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert at.multiselect(key="beta_curve_runs").value[0] == "digits-vae-z2-beta4"
    curves = json.loads(charts[1].proto.spec)
    betas = [t["y"] for t in curves["data"] if t.get("xaxis", "x") == "x"
             and t["name"] == "digits-vae-z2-beta4"][0]
    assert betas == [2.0, 4.0, 4.0]  # the warm-up ramp: beta_at(epoch) for 2 warm-up epochs


def test_generation_page_draws_grids_and_interpolations(app, tiny_run_z4):
    at = app("generation.py", run="digits-vae-z4", sample_index=0)
    assert not at.exception, at.exception
    first = image_bytes(at)
    assert len(first) >= 4  # prior grid, interpolation inputs + rows, traversal grid
    at.button(key="gen_reseed").click().run()
    assert image_bytes(at)[0] != first[0]  # new prior samples
    latents = rundir.read_latents(tiny_run_z4)
    fit, active_fit, n_dead = compare.prior_fits(latents["mu"], True)
    kind, note = prior_samples_note(fit, True, active_fit, n_dead)
    assert note in [b.value for b in getattr(at, kind)]  # the prior samples' verdict
    health = diagnostics.latent_health(latents["mu"], latents["logvar"])
    dims = health.kl_order()[:at.slider(key="gen_rows").value]
    assert traversal_note(health, dims) in texts(at)  # which rows should stay still
    assert "labelled with its dimension" in texts(at)
    at.number_input(key="gen_b").set_value(5).run()
    assert not at.exception
    assert image_bytes(at)[2] != first[2]  # the interpolation changed
    manifold = at.get("plotly_chart")[0]
    spec = json.loads(manifold.proto.spec)
    assert spec["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    at.selectbox(key="gen_dy").set_value(at.selectbox(key="gen_dx").value).run()
    assert "two different dimensions" in texts(at)


def test_train_page_validates_the_form(app):
    at = app("train.py")
    assert not at.exception, at.exception
    at.text_input(key="tf_name").set_value("bad name/..")
    at.number_input(key="tf_epochs").set_value(3)
    at.number_input(key="tf_warmup").set_value(5)
    at.button[0].click().run()  # the form's submit button
    errors = " ".join(e.value for e in at.error)
    assert "Training was not started" in errors
    assert "Run name 'bad name/..'" in errors and "longer than training" in errors
    at.text_input(key="tf_name").set_value("digits-vae-z2")  # an existing run
    at.number_input(key="tf_warmup").set_value(0)
    at.button[0].click().run()
    assert "already exists" in " ".join(e.value for e in at.error)


def test_train_page_starts_and_follows_a_job(app, teach_runs):
    at = app("train.py")
    at.selectbox(key="tf_dataset").set_value("digits")
    at.text_input(key="tf_name").set_value("from-the-form")
    at.number_input(key="tf_epochs").set_value(2)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert "Started **from-the-form**" in " ".join(s.value for s in at.success)
    from explorer.jobs import find_jobs, wait_job

    job = next(j for j in find_jobs(teach_runs) if j.name == "from-the-form")
    status = wait_job(job, timeout=120)
    assert status.state == "complete", status.log_tail
    at.run()
    assert at.session_state["run_dir"] == str(teach_runs / "from-the-form")
    assert "finished: 2 epochs" in at.get("progress")[0].proto.text


@pytest.mark.parametrize("page", ["reparameterisation.py", "elbo_vs_log_p.py",
                                  "latent_health.py", "generation.py"])
def test_pages_open_an_autoencoder_without_errors(app, page):
    at = app(page, run="digits-ae-z2")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    text = texts(at)
    assert "autoencoder" in text  # each page says what does not apply to an AE


def test_pages_say_when_there_are_no_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "none"))
    for page in sorted(p.name for p in PAGES.glob("*.py")):
        at = AppTest.from_file(str(PAGES / page), default_timeout=TIMEOUT).run()
        assert not at.exception, (page, at.exception)
        if page != "train.py":
            assert at.info and ("python -m training" in at.info[0].value
                                or "No VAE run" in at.info[0].value), page


def test_elbo_page_names_the_main_pages_sample_count():
    from app import shared as app_shared

    page = (PAGES / "elbo_vs_log_p.py").read_text()
    assert "MAIN_PAGE_SAMPLES = app_shared.MC_SAMPLES" in page
    assert app_shared.MC_SAMPLES == 64  # what the ELBO page's test above reads
