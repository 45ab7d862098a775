"""The teaching views' logic: IWAE vs ELBO, latent health, generation, comparison,
export and training jobs, checked against closed forms and independent references."""

from __future__ import annotations

import base64
import io
import json
import math
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import compare, diagnostics, export, generation, iwae, jobs
from explorer.verdicts import compare_verdict
from training import rundir
from training.loss import elbo_terms
from training.trainer import count_active_units

# --------------------------------------------------------------------------- IWAE


class LinearGaussian:
    """p(z) = N(0, I_D), p(x|z) = N(W z + b, s^2 I_P): log p(x) and the posterior are
    known in closed form (Bishop 2006, section 2.3.3), an independent reference."""

    def __init__(self, dim_z=2, dim_x=5, s=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim_x, dim_z, generator=g, dtype=torch.float64)  # (P, D)
        self.b = torch.randn(dim_x, generator=g, dtype=torch.float64)  # (P,)
        self.s = s
        self.dim_z = dim_z

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.dim_z, generator=g, dtype=torch.float64)
        return z @ self.w.T + self.b + self.s * torch.randn(n, len(self.b), generator=g,
                                                             dtype=torch.float64)

    def log_px(self, x):
        cov = self.w @ self.w.T + self.s**2 * torch.eye(len(self.b), dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x)  # (B,)

    def posterior(self, x):
        """Exact q: mean (B, D) and diagonal log-variance are only exact when the posterior
        covariance is diagonal, so this returns the full covariance too."""
        prec = torch.eye(self.dim_z, dtype=torch.float64) + self.w.T @ self.w / self.s**2
        cov = torch.linalg.inv(prec)  # (D, D)
        mean = (x - self.b) @ self.w @ cov / self.s**2  # (B, D)
        return mean, cov

    def log_likelihood(self, x):
        def fn(z):  # z (k, B, D) -> (k, B)
            mean = z @ self.w.T + self.b  # (k, B, P)
            return torch.distributions.Normal(mean, self.s).log_prob(x).sum(-1)
        return fn


@pytest.fixture
def diag_model():
    """A linear-Gaussian model with orthogonal columns of W: the posterior covariance is
    diagonal, so a mean-field q can match it exactly."""
    m = LinearGaussian(dim_z=2, dim_x=5, s=0.5)
    q, _ = torch.linalg.qr(m.w)
    m.w = q * torch.tensor([1.5, 0.7], dtype=torch.float64)  # orthogonal columns
    return m


def test_iwae_equals_log_px_when_q_is_the_exact_posterior(diag_model):
    m = diag_model
    x = m.sample_x(20)
    mean, cov = m.posterior(x)
    assert torch.allclose(cov, torch.diag(torch.diag(cov)), atol=1e-12)
    logvar = torch.log(torch.diag(cov)).expand_as(mean)
    log_w = iwae.importance_log_weights(m.log_likelihood(x), mean, logvar, 16,
                                        torch.Generator().manual_seed(0))
    est = iwae.bounds_from_log_weights(log_w)
    truth = m.log_px(x).numpy()
    np.testing.assert_allclose(est.iwae, truth, atol=1e-9)
    np.testing.assert_allclose(est.elbo, truth, atol=1e-9)  # every weight is p(x)
    assert np.abs(est.gap).max() < 1e-9


def test_gap_shrinks_as_q_approaches_the_posterior(diag_model):
    m = diag_model
    x = m.sample_x(200)
    mean, cov = m.posterior(x)
    logvar = torch.log(torch.diag(cov)).expand_as(mean)
    truth = m.log_px(x).numpy().mean()
    gaps, elbos = [], []
    for t in (1.0, 0.5, 0.25, 0.1, 0.0):  # t = 0: exact posterior
        q_mean = mean + t * 1.5  # shifted
        q_logvar = logvar + t * 1.0  # too wide
        log_w = iwae.importance_log_weights(m.log_likelihood(x), q_mean, q_logvar, 64,
                                            torch.Generator().manual_seed(1))
        est = iwae.bounds_from_log_weights(log_w)
        gaps.append(truth - est.elbo.mean())
        elbos.append(est.elbo.mean())
        assert (est.iwae >= est.elbo - 1e-12).all()  # per sample, always
        assert est.iwae.mean() <= truth + 0.05  # a lower bound (up to MC noise)
    # the ELBO's gap shrinks monotonically
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] == pytest.approx(0.0, abs=1e-9)


def test_iwae_is_non_decreasing_in_k_and_tends_to_log_px():
    m = LinearGaussian(dim_z=2, dim_x=6, s=0.4, seed=3)  # non-diagonal true posterior
    x = m.sample_x(300, seed=4)
    mean, cov = m.posterior(x)
    logvar = torch.log(torch.diag(cov)).expand_as(mean) + 0.5  # mean-field, too wide
    truth = m.log_px(x).numpy().mean()
    means = []
    for k in (1, 5, 50, 500):
        log_w = iwae.importance_log_weights(m.log_likelihood(x), mean, logvar, k,
                                            torch.Generator().manual_seed(k), chunk=37)
        est = iwae.bounds_from_log_weights(log_w)
        means.append(est.iwae.mean())
        if k == 1:
            np.testing.assert_array_equal(est.iwae, est.elbo)
        assert est.iwae.mean() >= est.elbo.mean()
    assert all(b >= a - 1e-3 for a, b in zip(means, means[1:], strict=False))
    assert means[-1] > means[0] + 0.1
    assert means[-1] == pytest.approx(truth, abs=0.02)


def test_iwae_curve_block_averages():
    m = LinearGaussian(dim_z=2, dim_x=6, s=0.4, seed=3)
    x = m.sample_x(50, seed=4)
    mean, cov = m.posterior(x)
    logvar = torch.log(torch.diag(cov)).expand_as(mean) + 0.5
    log_w = iwae.importance_log_weights(m.log_likelihood(x), mean, logvar, 1000,
                                        torch.Generator().manual_seed(0))
    curve = iwae.iwae_curve(log_w, [1, 10, 100, 1000])
    np.testing.assert_allclose(curve[0], log_w.mean(0).numpy())  # IWAE_1 = ELBO
    np.testing.assert_allclose(curve[3], (torch.logsumexp(log_w, 0) - math.log(1000)).numpy())
    manual = np.mean([(torch.logsumexp(log_w[i:i + 100], 0) - math.log(100)).numpy()
                      for i in range(0, 1000, 100)], axis=0)
    np.testing.assert_allclose(curve[2], manual)
    means = curve.mean(1)
    assert all(b > a for a, b in zip(means, means[1:], strict=False))
    assert means[-1] == pytest.approx(m.log_px(x).numpy().mean(), abs=0.05)
    with pytest.raises(ValueError, match="between 1 and the 1000"):
        iwae.iwae_curve(log_w, [2000])


def test_trained_vae_bounds_match_loss_module_and_order(tiny_run):
    run = rundir.load_run(tiny_run)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32))
    from training.data import load_digits

    x = load_digits().test_x[:40]
    e1 = iwae.estimate_bounds(run.model, x, 1, seed=0)
    e50 = iwae.estimate_bounds(run.model, x, 50, seed=0, batch_size=16)
    assert e1.iwae.shape == (40,) and e50.num_samples == 50
    assert e50.iwae.mean() > e50.elbo.mean()
    assert e50.iwae.mean() > e1.iwae.mean()
    # ELBO_K averaged over many draws equals -(recon + KL) from training.loss (which uses
    # the closed-form KL): an independent check of log p(z) - log q(z|x)
    with torch.no_grad():
        mu, logvar = run.model.encode(x)
        k = 400
        z = run.model.reparameterize(mu.repeat(k, 1), logvar.repeat(k, 1),
                                     torch.Generator().manual_seed(5))
        terms = elbo_terms(run.model.decode(z), x.repeat(k, 1, 1, 1), mu.repeat(k, 1),
                           logvar.repeat(k, 1))
        reference = -terms.neg_elbo.view(k, -1).mean(0).numpy()  # (B,)
    many = iwae.estimate_bounds(run.model, x, 400, seed=1)
    np.testing.assert_allclose(many.elbo, reference, atol=0.5)


def test_iwae_refuses_an_autoencoder_and_bad_k(tiny_ae_run, tiny_run):
    ae = rundir.load_run(tiny_ae_run).model
    with pytest.raises(ValueError, match="autoencoder has no posterior"):
        iwae.estimate_bounds(ae, torch.zeros(2, 1, 8, 8), 5)
    vae = rundir.load_run(tiny_run).model
    with pytest.raises(ValueError, match="at least 1"):
        iwae.estimate_bounds(vae, torch.zeros(2, 1, 8, 8), 0)


# --------------------------------------------------------------------------- diagnostics

def test_planted_dead_dimension_is_counted_dead_and_flagged(tiny_run_z4):
    from training.data import load_digits

    run = rundir.load_run(tiny_run_z4)
    model = run.model
    with torch.no_grad():  # dim 2: mu = 0 and logvar = 0 for every input -> q = prior
        model.to_mu.weight[2].zero_()
        model.to_mu.bias[2] = 0.0
        model.to_logvar.weight[2].zero_()
        model.to_logvar.bias[2] = 0.0
        x = load_digits().test_x
        mu, logvar = model.encode(x)
    health = diagnostics.latent_health(mu.numpy(), logvar.numpy())
    assert not health.active[2] and health.dead[2] and not health.weak[2]
    assert 2 in health.dead_dims
    assert health.kl_per_dim[2] == pytest.approx(0.0, abs=1e-9)
    assert health.mu_variance[2] == 0.0
    assert health.active_units == count_active_units(mu.numpy()) == int(health.active.sum())
    assert health.active_units <= 3
    assert health.kl_order()[-1] == 2 or health.kl_per_dim[health.kl_order()[-1]] == 0
    assert any("dead" in w and "2" in w for w in health.warnings)


def test_health_warnings_for_collapse_and_mean_reconstructions():
    rng = np.random.default_rng(0)
    n, d = 500, 8
    mu = rng.normal(0, 0.01, (n, d))  # every posterior at the prior
    logvar = np.zeros((n, d))
    h = diagnostics.latent_health(mu, logvar, recon_spread=0.02)
    text = " ".join(h.warnings)
    assert h.active_units == 0 and len(h.dead_dims) == d
    assert "Posterior collapse" in text and "Most latent dimensions are dead" in text
    assert "near the data mean" in text
    healthy = diagnostics.latent_health(rng.normal(0, 1, (n, 3)), np.full((n, 3), -2.0), 0.7)
    assert healthy.warnings == [] and healthy.active_units == 3
    # active by the variance test (0.013 > 0.01) but with ~0.0065 nats of KL: weak, not dead
    weak_mu = np.column_stack([rng.normal(0, 1, n), rng.normal(0, np.sqrt(0.013), n)])
    weak = diagnostics.latent_health(weak_mu, np.column_stack([np.full(n, -2.0),
                                                               np.zeros(n)]))
    assert weak.active_units == 2 and weak.dead_dims == [] and weak.weak_dims == [1]


def test_reconstruction_spread():
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 4, 4))
    assert diagnostics.reconstruction_spread(x, x) == pytest.approx(1.0)
    mean = np.repeat(x.mean(0, keepdims=True), 50, 0)
    assert diagnostics.reconstruction_spread(x, mean) == pytest.approx(0.0)
    assert diagnostics.reconstruction_spread(x, 0.5 * x + 0.25) == pytest.approx(0.25)


def test_health_of_an_autoencoder_has_no_kl_warnings():
    mu = np.random.default_rng(0).normal(0, 5, (100, 2))
    h = diagnostics.latent_health(mu, None)
    assert not h.is_vae and h.total_kl == 0 and h.warnings == []
    with pytest.raises(ValueError, match="at least 2 samples"):
        diagnostics.latent_health(np.zeros((1, 2)), None)


# --------------------------------------------------------------------------- generation

def test_interpolation_endpoints_decode_to_the_endpoints_reconstructions(tiny_run_z4):
    from training.data import load_digits

    model = rundir.load_run(tiny_run_z4).model
    x = load_digits().test_x[:2]
    with torch.no_grad():
        mu, _ = model.encode(x)
        recon = torch.sigmoid(model.decode(mu)).numpy()  # (2, C, H, W)
    for method in ("lerp", "slerp"):
        z, images = generation.interpolate(model, mu[0].numpy(), mu[1].numpy(), 7, method)
        np.testing.assert_array_equal(z[0], mu[0].numpy())
        np.testing.assert_array_equal(z[-1], mu[1].numpy())
        np.testing.assert_allclose(images[0], recon[0], atol=1e-6)
        np.testing.assert_allclose(images[-1], recon[1], atol=1e-6)
        assert not np.allclose(images[3], images[0])


def test_slerp_follows_the_great_circle():
    z0, z1 = np.array([2.0, 0.0]), np.array([0.0, 4.0])
    mid = generation.slerp(z0, z1, np.array([0.5]))[0]
    angle = math.degrees(math.atan2(mid[1], mid[0]))
    assert angle == pytest.approx(45.0, abs=1e-4)
    assert np.linalg.norm(mid) == pytest.approx(3.0, abs=1e-5)  # norm interpolated linearly
    np.testing.assert_allclose(generation.lerp(z0, z1, np.array([0.5]))[0], [1.0, 2.0])
    parallel = generation.slerp(z0, 2 * z0, np.array([0.5]))[0]
    np.testing.assert_allclose(parallel, [3.0, 0.0], atol=1e-6)


def test_manifold_grid_orientation_and_traversal(tiny_run_z4):
    model = rundir.load_run(tiny_run_z4).model
    xs, ys, grid = generation.manifold_grid(model, (1, 3), n=5)
    assert grid.shape == (5, 5, 1, 8, 8)
    # top-left cell is (x min, y max); check it against a direct decode
    z = np.zeros((1, 4), np.float32)
    z[0, 1], z[0, 3] = xs[0], ys[-1]
    np.testing.assert_allclose(grid[0, 0], generation.decode_images(model, z)[0], atol=1e-6)
    with pytest.raises(ValueError, match="two different latent dimensions"):
        generation.manifold_grid(model, (1, 1))
    values, rows = generation.traversal(model, np.zeros(4), [3, 0], np.linspace(-3, 3, 7))
    assert rows.shape == (2, 7, 1, 8, 8)
    z = np.zeros((1, 4), np.float32)
    z[0, 0] = 3.0
    np.testing.assert_allclose(rows[1, -1], generation.decode_images(model, z)[0], atol=1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        generation.traversal(model, np.zeros(4), [4])


def test_reparam_draws_and_prior_samples(tiny_run):
    model = rundir.load_run(tiny_run).model
    mu, logvar = np.array([0.5, -1.0]), np.log(np.array([0.2, 0.3]) ** 2)
    d1 = generation.reparam_draws(model, mu, logvar, k=4, seed=1)
    d2 = generation.reparam_draws(model, mu, logvar, k=4, seed=2)
    np.testing.assert_allclose(d1.z, mu + np.array([0.2, 0.3]) * d1.eps, rtol=1e-5)
    assert d1.images.shape == (4, 1, 8, 8)
    assert not np.allclose(d1.images, d2.images)  # a fresh eps changes the decoded image
    np.testing.assert_allclose(d1.mean_image, d2.mean_image)
    z, images = generation.prior_samples(model, 6, seed=0)
    assert z.shape == (6, 2) and images.shape == (6, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1


def test_tile_layout():
    images = np.zeros((5, 1, 2, 3))
    images[4] = 1.0
    out = generation.tile(images, cols=3, pad=1, pad_value=0.5)
    assert out.shape == (2 * 3 + 1, 3 * 4 + 1)
    assert out[4:6, 5:8].min() == 1.0  # image 4 is row 1, column 1
    assert out[0, 0] == 0.5
    rgb = generation.tile(np.zeros((2, 3, 3, 4, 4)))  # (rows, cols, C, H, W)
    assert rgb.shape == (2 * 5 + 1, 3 * 5 + 1, 3)


# --------------------------------------------------------------------------- compare

def test_prior_fit_tells_a_vae_from_an_autoencoder():
    rng = np.random.default_rng(0)
    vae_codes = rng.standard_normal((1000, 2))
    ae_codes = rng.standard_normal((1000, 2)) * np.array([9.0, 4.0]) + 6.0
    vae, ae = compare.prior_fit(vae_codes), compare.prior_fit(ae_codes)
    assert vae.gaussian_kl < 0.02 and ae.gaussian_kl > 10
    assert vae.inside_prior == pytest.approx(0.95, abs=0.03)
    assert ae.inside_prior < 0.1
    assert vae.prior_hits > 0.75 and vae.coverage > 0.75
    assert ae.coverage < 0.2  # the prior reaches only the codes near the origin
    tiny = compare.prior_fit(rng.standard_normal((1000, 16)) * 0.3)
    assert tiny.prior_hits < 0.1  # codes squeezed near 0: most prior draws miss them
    assert "never told" in compare_verdict(ae, is_vae=False)[1]
    assert compare_verdict(vae, is_vae=True)[0] == "success"
    # closed form against torch.distributions
    mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.3], [0.3, 0.5]])
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(torch.tensor(mean), torch.tensor(cov)),
        torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2, dtype=torch.float64)))
    assert compare.gaussian_kl_to_standard(mean, cov) == pytest.approx(float(ref))


def test_rate_points_and_warmup_curve(tiny_run, tiny_ae_run, tiny_run_z4):
    points = [compare.rate_point(p) for p in (tiny_run, tiny_ae_run, tiny_run_z4)]
    last = rundir.read_metrics(tiny_run)[-1]
    assert points[0].distortion == pytest.approx(last["test_recon"])
    assert points[0].rate == pytest.approx(last["test_kl"])
    kept, notes = compare.comparable(points)
    assert [p.name for p in kept] == [tiny_run.name, tiny_run_z4.name]
    assert any("autoencoder" in n for n in notes)
    curve = compare.warmup_curve(rundir.read_metrics(tiny_run))
    assert curve["epoch"] == [1.0, 2.0, 3.0] and len(curve["beta"]) == 3


# --------------------------------------------------------------------------- export

def test_exports(tiny_run):
    import plotly.graph_objects as go

    html = export.figure_html(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    assert b"<html" in html and b"<script src=" not in html  # no CDN: works offline
    assert len(html) > 1_000_000  # plotly.js is inlined
    png = export.image_png(np.linspace(0, 1, 12).reshape(3, 4), upscale=2)
    img = Image.open(io.BytesIO(png))
    assert img.size == (8, 6) and np.asarray(img)[5, 7] == 255
    with pytest.raises(export.ExportError, match="expected an image"):
        export.image_png(np.zeros((2, 2, 2, 2)))
    latents = rundir.read_latents(tiny_run)
    health = diagnostics.latent_health(latents["mu"], latents["logvar"])
    bounds = iwae.BoundEstimate(elbo=np.array([-50.0, -52.0]), iwae=np.array([-49.0, -51.5]),
                                num_samples=10)
    summary = export.run_summary(tiny_run, health, bounds)
    data = json.loads(export.summary_json(summary))
    assert data["config"]["latent_dim"] == 2 and data["status"] == "complete"
    assert data["final_metrics"]["epoch"] == 3
    assert data["active_units"] == health.active_units
    assert data["iwae"]["gap_mean"] == pytest.approx(0.75)
    assert data["latent_health"]["kl_per_dim"] == pytest.approx(health.kl_per_dim.tolist())


# --------------------------------------------------------------------------- jobs

def test_form_options_are_validated(tmp_path):
    (tmp_path / "taken").mkdir()
    bad = jobs.TrainOptions(name="../evil", latent_dim=0, beta=-1.0, epochs=5, kl_warmup=9,
                            dataset="nope")
    text = "\n".join(bad.problems(tmp_path))
    for part in ("Run name", "Latent dim", "Beta", "warm-up", "Data set 'nope'"):
        assert part in text
    assert "already exists" in "".join(jobs.TrainOptions(name="taken").problems(tmp_path))
    assert jobs.TrainOptions(name="ok", model="ae", beta=4.0).problems(tmp_path) == [
        "A plain autoencoder has no KL term: beta and warm-up do not apply; set beta to 1 "
        "and warm-up to 0, or choose the VAE."]
    assert jobs.TrainOptions(name="fine-1").problems(tmp_path) == []
    with pytest.raises(ValueError, match="Run name"):
        jobs.start_job(bad, tmp_path)
    assert not (tmp_path / ".jobs").exists()  # nothing started


def test_job_trains_a_run_and_reports_progress(tmp_path):
    options = jobs.TrainOptions(name="job-digits", dataset="digits", epochs=2, hidden_dim=32,
                                latent_dim=2)
    job = jobs.start_job(options, tmp_path)
    assert "--threads" in job.argv and job.argv[job.argv.index("--threads") + 1] == "1"
    status = jobs.wait_job(job, timeout=120)
    assert status.state == "complete", status.log_tail
    assert status.epochs_completed == 2 and status.fraction == 1.0
    assert [r["epoch"] for r in status.metrics] == [1, 2]
    assert rundir.read_config(tmp_path / "job-digits").status == "complete"
    found = jobs.find_jobs(tmp_path)
    assert [j.name for j in found] == ["job-digits"]
    assert jobs.poll_job(found[0]).state == "complete"  # found again without a handle
    assert jobs.cancel_job(job) is False  # already finished


def test_job_cancel_keeps_finished_epochs(tmp_path):
    options = jobs.TrainOptions(name="job-cancel", dataset="digits", epochs=100, hidden_dim=32)
    job = jobs.start_job(options, tmp_path)
    status = jobs.poll_job(job)
    deadline = 60
    import time

    start = time.monotonic()
    while status.epochs_completed < 1 and time.monotonic() - start < deadline:
        time.sleep(0.2)
        status = jobs.poll_job(job)
    assert status.state == "training", status.log_tail
    assert jobs.cancel_job(job)
    status = jobs.wait_job(job, timeout=60)
    assert status.state == "cancelled", status.log_tail
    assert job.returncode in (130, -signal.SIGINT)
    assert "kept in" in status.message
    info = rundir.read_config(tmp_path / "job-cancel")
    assert info.status == "interrupted" and info.epochs_completed >= 1


def test_job_failure_is_reported_with_the_cli_error(tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    from explorer.train_policy import TrainPolicy

    options = jobs.TrainOptions(name="job-bad", dataset="folder:no-images", epochs=1)
    job = jobs.start_job(options, tmp_path, policy=TrainPolicy(data_root=tmp_path))
    status = jobs.wait_job(job, timeout=120, data_root=tmp_path)
    assert status.state == "failed"
    assert "exit code 2" in status.message and "no images" in status.message


def test_lesson_map_overlays():
    from scipy import stats as sp_stats

    from explorer.lesson_figures import lesson_map, prior_circle_radius

    coords = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 3
    fig = lesson_map(coords, labels, ["a", "b", "c"], rings=[4, 7],
                     ellipse=(coords[4], np.array([0.5, 0.2])),
                     markers=[{"x": 1.0, "y": 2.0, "name": "z"}], prior_circle=True)
    names = [t.name for t in fig.data]
    assert names[:3] == ["a", "b", "c"] and "95% of N(0, I)" in names
    assert names.count("1σ") == 1 and names.count("2σ") == 1
    rings = next(t for t in fig.data if t.name == "chosen")
    np.testing.assert_allclose(rings.x, coords[[4, 7], 0])
    circle = next(t for t in fig.data if t.name == "95% of N(0, I)")
    # a dark dashed line on a light halo, labelled on the map: seen on light and dark pages
    halo = next(t for t in fig.data if t.name == "95% of N(0, I) (halo)")
    assert circle.line.dash == "dash" and circle.line.width < halo.line.width
    assert halo.showlegend is False and "95% of N(0, I)" in [a.text for a in
                                                             fig.layout.annotations]
    assert fig.layout.plot_bgcolor is None  # the theme's background, not white
    # fixed ranges around the codes and the circle (a label's box must not widen the map)
    r = prior_circle_radius()
    assert fig.layout.xaxis.range[0] < min(coords[:, 0].min(), -r)
    assert fig.layout.yaxis.range[1] > max(coords[:, 1].max(), r)
    assert fig.layout.xaxis.range[1] < max(coords[:, 0].max(), r) + 1
    np.testing.assert_allclose(np.hypot(circle.x, circle.y), prior_circle_radius())
    # 95% of a 2-D standard normal lies inside the circle
    draws = np.random.default_rng(1).standard_normal((200_000, 2))
    inside = (np.hypot(*draws.T) <= prior_circle_radius()).mean()
    assert inside == pytest.approx(0.95, abs=0.003)
    assert prior_circle_radius() == pytest.approx(np.sqrt(sp_stats.chi2.ppf(0.95, 2)))


# --------------------------------------------------------------------------- lesson figures
# (built in explorer/, drawn by the pages in app/pages/)


def _rate_points():
    return [compare.RatePoint(name=name, path="", model="vae", beta=beta, kl_warmup=warm,
                              latent_dim=2, dataset="digits", distortion=dist, rate=rate,
                              active_units=2)
            for name, beta, warm, dist, rate in [("b1", 1.0, 0, 140.2, 6.1),
                                                 ("b4", 4.0, 2, 171.0, 2.5),
                                                 ("b05", 0.5, 0, 129.0, 9.9)]]


def test_rate_distortion_figure_places_each_run():
    from explorer.lesson_charts import rate_distortion_figure

    points = _rate_points()
    fig = rate_distortion_figure(points)
    levels = np.unique(np.round([p.distortion + p.rate for p in points], -1))
    lines, runs = fig.data[:len(levels)], fig.data[len(levels):]
    assert len(fig.data) == len(levels) + len(points)
    assert all(t.type == "scatter" and t.mode == "lines" and not t.showlegend for t in lines)
    for line, level in zip(lines, levels, strict=True):  # iso-ELBO: x + y = level
        np.testing.assert_allclose(np.asarray(line.x) + np.asarray(line.y), level)
    assert [a.text for a in fig.layout.annotations] == [f"−ELBO {v:.0f}" for v in levels]
    for trace, p in zip(runs, points, strict=True):
        assert trace.name == p.name and trace.mode == "markers+text"
        assert list(trace.x) == [p.rate] and list(trace.y) == [p.distortion]
        assert trace.text == (f"β={p.beta:g}",)
        assert trace.marker.symbol == ("diamond" if p.kl_warmup else "circle")
    assert len({t.marker.color for t in runs}) == len(points)
    assert fig.layout.xaxis.title.text == "rate: KL(q(z|x) ‖ p(z)), nats per sample"
    assert fig.layout.yaxis.title.text == "distortion: reconstruction, nats per sample"
    low, high = fig.layout.yaxis.range  # every run inside the visible range
    assert low < min(p.distortion for p in points) and high > max(p.distortion for p in points)
    assert fig.layout.xaxis.range[1] > max(p.rate for p in points)


def test_warmup_figure_has_three_panels_per_run():
    from explorer.lesson_charts import warmup_figure

    curves = {f"run{i}": {"epoch": [1.0, 2.0, 3.0], "beta": [0.0, 0.5 * (i + 1), 1.0],
                          "test_kl": [1.0, 2.0, 3.0 + i], "test_recon": [9.0, 8.0, 7.0 - i]}
              for i in range(2)}
    fig = warmup_figure(curves)
    assert len(fig.data) == 6 and all(t.type == "scatter" for t in fig.data)
    for i, name in enumerate(curves):
        traces = fig.data[3 * i:3 * i + 3]
        assert [t.name for t in traces] == [name] * 3
        assert [t.showlegend for t in traces] == [True, False, False]  # one legend entry
        for trace, key, axis in zip(traces, ("beta", "test_kl", "test_recon"),
                                    ("x", "x2", "x3"), strict=True):
            assert list(trace.y) == curves[name][key] and list(trace.x) == curves[name]["epoch"]
            assert trace.xaxis == axis
        assert len({t.line.color for t in traces}) == 1
    assert fig.data[0].line.color != fig.data[3].line.color
    assert [a.text for a in fig.layout.annotations] == [
        "β in the objective", "test KL (rate)", "test reconstruction"]
    assert [fig.layout[f"yaxis{s}"].title.text for s in ("", "2", "3")] == ["β", "nats", "nats"]
    assert [fig.layout[f"xaxis{s}"].title.text for s in ("", "2", "3")] == ["epoch"] * 3


def test_iwae_curve_figure_and_gap_histogram():
    from explorer.lesson_charts import gap_histogram, iwae_curve_figure

    points = [(1, -100.0, -100.0), (10, -100.0, -98.0), (100, -100.0, -97.5)]
    fig = iwae_curve_figure(points, k=10)
    assert [t.name for t in fig.data] == ["IWAE_K", "ELBO"]
    assert list(fig.data[0].x) == [1, 10, 100] and list(fig.data[0].y) == [-100, -98, -97.5]
    assert list(fig.data[1].y) == [-100.0] * 3
    assert fig.layout.xaxis.type == "log"
    # ticks at the K values, written in full (plotly's own read "1 2 5 10 2 5 100")
    assert list(fig.layout.xaxis.tickvals) == [1, 10, 100]
    assert list(fig.layout.xaxis.ticktext) == ["1", "10", "100"]
    assert fig.layout.xaxis.title.text == "K (importance samples)"
    assert fig.layout.yaxis.title.text == "nats (higher = tighter bound)"
    (vline,) = fig.layout.shapes
    assert vline.x0 == vline.x1 == 10

    gap = np.array([0.1, 0.5, 0.5, 2.0])
    hist = gap_histogram(gap)
    (trace,) = hist.data
    assert trace.type == "histogram" and trace.nbinsx == 40
    np.testing.assert_array_equal(trace.x, gap)
    assert hist.layout.xaxis.title.text == "IWAE − ELBO per image (nats)"
    assert hist.layout.yaxis.title.text == "images"


def test_latent_health_figure_colours_dead_and_weak_dimensions():
    from explorer.lesson_charts import latent_health_figure

    rng = np.random.default_rng(1)
    mu = rng.normal(size=(200, 4)) * np.array([1.0, 0.12, 0.001, 2.0])  # z2 dead
    logvar = np.zeros((200, 4))
    logvar[:, 0] = -2.0
    logvar[:, 1] = np.log(1 - 0.12**2)  # z1: active, but KL tiny: weak
    health = diagnostics.latent_health(mu, logvar)
    assert health.dead_dims == [2] and health.weak_dims == [1]
    fig = latent_health_figure(health)
    kl, var, *legend = fig.data
    assert [t.name for t in legend] == ["active", "weak (KL < 0.01 nats)",
                                        "dead (Var μ ≤ 0.01)"]  # what the colours mean
    assert [t.marker.color for t in legend] == ["#4e79a7", "#f28e2b", "#e15759"]
    assert fig.layout.showlegend and not kl.showlegend and not var.showlegend
    # log axis ticks written in full, one per power of ten
    ticks, text = list(fig.layout.yaxis2.tickvals), list(fig.layout.yaxis2.ticktext)
    assert ticks[0] <= health.mu_variance.min() and ticks[-1] >= health.mu_variance.max()
    assert np.allclose(np.log10(ticks), np.round(np.log10(ticks)))  # 10^k only
    assert "0.01" in text and "1" in text and not any("e" in t for t in text)
    assert kl.type == var.type == "bar"
    assert list(kl.x) == list(var.x) == ["z0", "z1", "z2", "z3"]
    np.testing.assert_allclose(kl.y, health.kl_per_dim)
    np.testing.assert_allclose(var.y, health.mu_variance)
    assert list(var.marker.color) == ["#4e79a7", "#f28e2b", "#e15759", "#4e79a7"]
    assert var.yaxis == "y2" and fig.layout.yaxis2.type == "log"
    assert fig.layout.shapes[0].y0 == diagnostics.ACTIVE_THRESHOLD
    assert [a.text for a in fig.layout.annotations] == [
        "mean KL per dimension (nats)", "Var over the data of μ_j(x)", "active above 0.01"]
    assert fig.layout.annotations[2].y == pytest.approx(-2.0)  # log10(0.01) on a log axis
    assert fig.layout.height == 2 * 230 + 40

    ae = latent_health_figure(diagnostics.latent_health(mu, None))
    bar, *_ = ae.data  # no KL panel for an autoencoder
    assert bar.name == "Var μ" and ae.layout.yaxis.type == "log"
    assert ae.layout.height == 230 + 40


def test_reparam_map_and_zoom():
    from explorer.lesson_figures import ellipse_scale, reparam_map, reparam_zoom, z_label

    rng = np.random.default_rng(2)
    coords, labels = rng.normal(size=(40, 2)), np.arange(40) % 2
    points = rng.normal(size=(2 + 5, 2))  # mu, z, 5 more draws
    sigmas = np.array([0.3, 0.1])
    fig = reparam_map(coords, labels, ["a", "b"], "raw", 7, points, sigmas, seed=3)
    names = [t.name for t in fig.data]
    assert names[:2] == ["a", "b"] and names[-3:] == [z_label(3), "other draws", "σ·ε"]
    assert z_label(3) == "z (ε #3)" and "1σ" in names and "chosen" in names
    star = fig.data[names.index(z_label(3))]
    assert (star.x[0], star.y[0]) == (points[1, 0], points[1, 1])
    np.testing.assert_allclose(fig.data[-2].x, points[2:, 0])
    np.testing.assert_allclose(fig.data[-2].y, points[2:, 1])
    np.testing.assert_allclose(fig.data[-1].x, points[:2, 0])  # from mu to z
    assert fig.layout.showlegend is False and fig.layout.height == 440
    # sigma 0.3 on a map ~4 wide is visible as it is: drawn true size, nothing written
    ellipse = fig.data[names.index("1σ")]
    assert np.ptp(ellipse.x) == pytest.approx(2 * 0.3, rel=1e-2)
    assert not [a for a in fig.layout.annotations if "drawn ×" in a.text]

    zoom = reparam_zoom(fig, points[0], sigmas, seed=3)
    half = 3 * 0.3
    np.testing.assert_allclose(zoom.layout.xaxis.range, [points[0, 0] - half, points[0, 0] + half])
    np.testing.assert_allclose(zoom.layout.yaxis.range, [points[0, 1] - half, points[0, 1] + half])
    assert zoom.data[names.index(z_label(3))].marker.size == 22
    assert zoom.data[-2].marker.size == 9
    assert star.marker.size == 18 and fig.data[-2].marker.size == 7  # original untouched
    assert fig.layout.xaxis.range[0] <= coords[:, 0].min()  # the whole map, not the zoom
    assert fig.layout.xaxis.range[1] >= coords[:, 0].max()

    # the demo's sigma ~0.05 on the same map: enlarged to be seen, and labelled so
    tiny = np.array([0.05, 0.02])
    big = reparam_map(coords, labels, ["a", "b"], "raw", 7, points, tiny, seed=3)
    times = ellipse_scale(tiny, float(np.ptp(coords, axis=0).max()))
    assert times in (5, 10, 20)
    ellipse = big.data[[t.name for t in big.data].index("1σ")]
    assert np.ptp(ellipse.x) == pytest.approx(2 * 0.05 * times, rel=1e-2)
    assert [a.text for a in big.layout.annotations] == [f"q(z|x) 1σ, 2σ drawn ×{times}"]
    true_size = reparam_map(coords, labels, ["a", "b"], "raw", 7, points, tiny, seed=3,
                            ellipse_times=1)
    ellipse = true_size.data[[t.name for t in true_size.data].index("1σ")]
    assert np.ptp(ellipse.x) == pytest.approx(2 * 0.05, rel=1e-2)
    assert ellipse_scale(np.array([1.0, 1.0]), 8.0) == 1

    no_ellipse = reparam_map(coords, labels, ["a", "b"], "pca", 7, points, None, seed=0)
    assert "1σ" not in [t.name for t in no_ellipse.data] and no_ellipse.layout.showlegend
    assert no_ellipse.layout.xaxis.title.text == "PCA 1"


def test_manifold_figure_draws_the_decoded_grid_under_the_codes(tiny_run_z4):
    from explorer.lesson_figures import manifold_figure

    run = rundir.load_run(tiny_run_z4)
    latents = rundir.read_latents(tiny_run_z4)
    base = np.zeros(4, np.float32)
    fig, grid = manifold_figure(run.model, latents["mu"], latents["labels"],
                                run.info.class_names, (1, 3), 5, 2.0, base)
    _, _, expected = generation.manifold_grid(run.model, (1, 3), 5, (-2, 2), (-2, 2), base)
    np.testing.assert_allclose(grid, expected)
    (image,) = fig.layout.images
    png = export.image_png(generation.tile(grid, pad=0))
    assert image.source == "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    step = 4.0 / 4  # tile centres at -2, -1, ..., 2: each tile 1 wide
    assert (image.x, image.y, image.sizex, image.sizey) == (-2.5, 2.5, 5.0, 5.0)
    assert image.layer == "below" and image.xref == "x" and image.yref == "y"
    assert fig.layout.xaxis.title.text == "z1" and fig.layout.yaxis.title.text == "z3"
    assert list(fig.layout.xaxis.range) == [-2 - step, 2 + step]
    dots = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in dots) == len(latents["mu"])
    shown = np.concatenate([np.column_stack([t.x, t.y]) for t in dots])
    codes = latents["mu"][:, [1, 3]]
    np.testing.assert_allclose(np.sort(shown, axis=0), np.sort(codes, axis=0), rtol=1e-6)
    assert all(t.marker.size == 4 for t in dots)


# --------------------------------------------------------------------------- page logic


def test_sample_curve_shares_one_set_of_draws(tiny_run):
    from training.data import load_digits

    run = rundir.load_run(tiny_run)
    x = load_digits().test_x[3:4]
    curve = iwae.sample_curve(run.model, x, (1, 2, 5, 10), run.info.config.likelihood, seed=4)
    assert [k for k, _, _ in curve] == [1, 2, 5, 10]
    elbos = {elbo for _, elbo, _ in curve}
    assert len(elbos) == 1  # the ELBO does not depend on K
    log_w = iwae.sample_log_weights(run.model, x, 10, run.info.config.likelihood, seed=4)
    assert curve[0][1] == pytest.approx(float(log_w.double().mean()))
    assert curve[0][2] == pytest.approx(curve[0][1])  # IWAE_1 is the ELBO
    assert all(v >= elbo - 1e-9 for _, elbo, v in curve)  # every k divides the 10 draws


def test_sample_curve_refuses_an_autoencoder(tiny_ae_run):
    model = rundir.load_run(tiny_ae_run).model
    with pytest.raises(ValueError, match="autoencoder has no posterior"):
        iwae.sample_curve(model, torch.zeros(1, 1, 8, 8), (1, 2))


def test_run_health_measures_the_spread_only_with_images(tiny_run_z4):
    from training.data import load_digits

    run = rundir.load_run(tiny_run_z4)
    latents = rundir.read_latents(tiny_run_z4)
    x = load_digits().test_x[:100]
    health = diagnostics.run_health(run.model, latents["mu"], latents["logvar"], x)
    recon = generation.decode_images(run.model, generation.encode_means(run.model, x))
    assert health.recon_spread == pytest.approx(diagnostics.reconstruction_spread(x, recon))
    np.testing.assert_allclose(health.kl_per_dim,
                               diagnostics.latent_health(latents["mu"],
                                                         latents["logvar"]).kl_per_dim)
    assert diagnostics.run_health(run.model, latents["mu"], None).recon_spread is None
    order = health.kl_order()
    assert health.describe_dims(order[:2]) == ", ".join(
        f"z{j} (mean KL {health.kl_per_dim[j]:.2f})" for j in order[:2])
    ae = diagnostics.latent_health(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]), None)
    assert ae.describe_dims([0, 1]) == "z0 (Var μ 2.67), z1 (Var μ 0.00)"


def test_default_pair_pick_inputs_and_curve_runs(tmp_path, tiny_run):
    from pathlib import Path

    from explorer.runs import RunEntry

    def entry(name, model, dim=2, dataset="digits"):
        return RunEntry(path=Path("/runs") / name, modified=0.0, model=model,
                        latent_dim=dim, dataset=dataset)

    twins = [entry("x-vae-z2", "vae"), entry("d-ae-z3", "ae", 3), entry("d-vae-z3", "vae", 3)]
    assert compare.default_pair(twins) == (1, 2)  # the VAE named like the AE
    same_shape = [entry("v", "vae", 3, "mnist"), entry("a", "ae", 3), entry("w", "vae", 3)]
    assert compare.default_pair(same_shape) == (1, 2)  # same latent size and data set
    no_match = [entry("v", "vae", 8), entry("a", "ae", 3)]
    assert compare.default_pair(no_match) == (1, 0)
    assert compare.default_pair([entry("v", "vae"), entry("w", "vae")]) == (0, 1)

    picked = compare.pick_inputs(50, 8, seed=1)
    assert picked == sorted(picked) and len(set(picked)) == 8 and max(picked) < 50
    assert picked == compare.pick_inputs(50, 8, seed=1) != compare.pick_inputs(50, 8, seed=2)
    assert compare.pick_inputs(3, 8, seed=0) == [0, 1, 2]

    points = _rate_points()  # b4 has a warm-up, b1 and b05 not
    assert compare.default_curve_runs(points) == ["b4", "b1"]
    assert compare.default_curve_runs(points[::2]) == ["b1"]  # no warm-up: the first run
    assert compare.default_curve_runs([]) == []

    broken = tmp_path / "broken"
    broken.mkdir()
    found, problems = compare.rate_points([tiny_run, broken])
    assert [p.name for p in found] == [tiny_run.name]
    assert len(problems) == 1 and problems[0].startswith("broken: ")


def test_posterior_reconstruct_and_reparam_summaries(tiny_run, tiny_ae_run):
    from training.data import load_digits

    x = load_digits().test_x[:5]
    vae = rundir.load_run(tiny_run).model
    mu, logvar = generation.posterior(vae, x)
    with torch.no_grad():
        ref_mu, ref_logvar = vae.encode(x)
    np.testing.assert_allclose(mu, ref_mu.numpy())
    assert logvar is not None
    np.testing.assert_allclose(logvar, ref_logvar.numpy())
    np.testing.assert_allclose(generation.encode_means(vae, x.numpy()), mu, rtol=1e-6)
    np.testing.assert_allclose(generation.reconstruct(vae, x),
                               generation.decode_images(vae, mu))
    ae = rundir.load_run(tiny_ae_run).model
    assert generation.posterior(ae, x)[1] is None

    draws = generation.reparam_draws(vae, mu[0], logvar[0], k=6, seed=0)
    assert draws.change(2) == pytest.approx(
        float(np.abs(draws.images[2] - draws.mean_image).mean()))
    assert draws.change() > 0
    assert draws.pixel_spread == pytest.approx(float(draws.images.std(axis=0).mean()))
    assert generation.reparam_draws(vae, mu[0], logvar[0], k=1).pixel_spread == 0.0


def test_display_helpers_and_default_span():
    images = np.random.default_rng(0).uniform(-0.5, 1.5, size=(6, 1, 8, 8))
    pixels = generation.grid_pixels(images, cols=3, cell=72)
    grid = generation.tile(images, 3)  # (2*9+1, 3*9+1)
    assert pixels.shape == (grid.shape[0] * 9, grid.shape[1] * 9)  # 72 / 8 = 9
    np.testing.assert_array_equal(pixels[::9, ::9], np.clip(grid, 0, 1))
    assert pixels.min() >= 0 and pixels.max() <= 1

    grey = generation.image_hwc(torch.ones(1, 4, 6))
    assert grey.shape == (4, 6)
    rgb = np.zeros((3, 4, 6))
    rgb[1] = 1.0
    hwc = generation.image_hwc(rgb)
    assert hwc.shape == (4, 6, 3) and hwc[..., 1].min() == 1.0 and hwc[..., 0].max() == 0.0
    big = generation.enlarge(np.array([[2.0, -1.0], [0.25, 0.5]]), size=10)
    assert big.shape == (10, 10)
    np.testing.assert_array_equal(big[::5, ::5], [[1.0, 0.0], [0.25, 0.5]])

    mu = np.array([[0.5, -7.2, 0.0], [1.0, 2.0, 300.0]])
    assert generation.default_span(mu, (0, 1), is_vae=True) == 3.0
    assert generation.default_span(mu, (0, 1), is_vae=False) == 8.0
    assert generation.default_span(mu, (0, 2), is_vae=False) == 100.0
