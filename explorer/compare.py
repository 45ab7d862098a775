"""Comparing runs: how well each latent space matches the prior N(0, I) (why an
autoencoder's "prior samples" look wrong), which two runs and which inputs the side by
side view starts with, and the rate-distortion trade-off of runs trained with different
beta (final reconstruction vs KL, and the warm-up curves).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats


@dataclass
class PriorFit:
    """How the test set's codes (posterior means) sit relative to the prior N(0, I)."""

    latent_dim: int
    code_mean: np.ndarray  # (D,) mean of the codes
    code_std: np.ndarray  # (D,) std of the codes
    gaussian_kl: float  # KL(N(mean, cov) || N(0, I)) of a Gaussian fitted to the codes, nats
    inside_prior: float  # share of codes inside the prior's 95% ball
    prior_hits: float  # share of prior draws within a typical neighbour distance of a code
    coverage: float  # share of codes with a prior draw within that distance
    # what the page says about these numbers: explorer.verdicts.compare_verdict


def gaussian_kl_to_standard(mean: np.ndarray, cov: np.ndarray) -> float:
    """KL(N(mean, cov) || N(0, I)) = 1/2 (tr cov + |mean|^2 - D - log det cov), nats."""
    d = len(mean)
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return math.inf
    return float(0.5 * (np.trace(cov) + mean @ mean - d - logdet))


def prior_fit(mu: np.ndarray, seed: int = 0) -> PriorFit:
    """Measure the codes ``mu`` (N, D) against N(0, I), with as many prior draws as codes
    (at most 2,000 of each)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or len(mu) < 3:
        raise ValueError(f"need codes of at least 3 samples as an (N, D) array, got {mu.shape}")
    n, d = mu.shape
    mean = mu.mean(0)
    cov = np.atleast_2d(np.cov(mu, rowvar=False)) + 1e-9 * np.eye(d)
    radius2 = stats.chi2.ppf(0.95, d)
    inside = float(((mu**2).sum(1) <= radius2).mean())
    # typical distance from a code to its nearest other code, then: does a prior draw
    # fall within 2x that distance of some code?
    ref = mu[np.random.default_rng(seed).permutation(n)[:2000]]  # (M, D)
    d_codes = _sq_distances(ref, ref)
    np.fill_diagonal(d_codes, np.inf)
    typical = np.sqrt(np.median(d_codes.min(1)))
    draws = np.random.default_rng(seed + 1).standard_normal((len(ref), d))
    near = np.sqrt(_sq_distances(draws, ref)) <= 2 * typical  # (M, M) draw i near code j
    hits, coverage = float(near.any(1).mean()), float(near.any(0).mean())
    return PriorFit(latent_dim=d, code_mean=mean, code_std=mu.std(0),
                    gaussian_kl=gaussian_kl_to_standard(mean, cov), inside_prior=inside,
                    prior_hits=hits, coverage=coverage)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None], 0.0)


class RunLike(Protocol):
    """What :func:`default_pair` reads of a run (``explorer.runs.RunEntry``)."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def dataset(self) -> str: ...


def default_pair(entries: Sequence[RunLike]) -> tuple[int, int]:
    """Indices of the runs the side by side view starts with: an autoencoder on the left
    (else the first run) and its VAE twin on the right: the VAE named like the AE
    (``-ae-`` -> ``-vae-``), else another VAE with the same latent size and data set, else
    any other run."""
    names = [e.name for e in entries]
    ae = next((i for i, e in enumerate(entries) if e.model == "ae"), 0)
    twin = entries[ae].name.replace("-ae-", "-vae-")
    if twin in names and twin != entries[ae].name:
        return ae, names.index(twin)
    vae = next((i for i, e in enumerate(entries) if i != ae and e.model == "vae"
                and e.latent_dim == entries[ae].latent_dim
                and e.dataset == entries[ae].dataset), None)
    if vae is None:
        vae = next((i for i in range(len(names)) if i != ae), 0)
    return ae, vae


def pick_inputs(n_images: int, n: int, seed: int) -> list[int]:
    """``n`` distinct test-image indices (fewer when there are fewer images), sorted,
    drawn with ``seed``: the inputs both runs reconstruct."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_images, size=min(n, n_images), replace=False).tolist())


@dataclass
class RatePoint:
    """One run on the rate-distortion plane (test set, final epoch, nats per sample)."""

    name: str
    path: str
    model: str
    beta: float
    kl_warmup: int
    latent_dim: int
    dataset: str
    distortion: float  # test reconstruction term, -E_q[log p(x|z)]
    rate: float  # test KL(q(z|x) || p(z))
    active_units: int

    @property
    def neg_elbo(self) -> float:
        return self.distortion + self.rate


def rate_point(run_dir: str | Path) -> RatePoint:
    """The final test-set rate and distortion of a run (its last metrics row)."""
    from training import rundir

    run_dir = Path(run_dir)
    info = rundir.read_config(run_dir)
    rows = rundir.read_metrics(run_dir)
    if not rows and info.is_imported:
        raise rundir.RunDirError(run_dir, "imported: it has no training history")
    if not rows:
        raise rundir.RunDirError(run_dir / rundir.METRICS_FILE,
                                 "no finished epoch yet: nothing to place on the chart")
    last = rows[-1]
    c = info.config
    return RatePoint(name=run_dir.name, path=str(run_dir), model=c.model, beta=c.beta,
                     kl_warmup=c.kl_warmup, latent_dim=c.latent_dim, dataset=c.dataset,
                     distortion=float(last["test_recon"]), rate=float(last["test_kl"]),
                     active_units=int(last.get("active_units", 0)))


def rate_points(run_dirs: Iterable[str | Path]) -> tuple[list[RatePoint], list[str]]:
    """:func:`rate_point` of every run that has one, and ``name: problem`` for the rest."""
    from training import rundir

    points, problems = [], []
    for run_dir in run_dirs:
        try:
            points.append(rate_point(run_dir))
        except rundir.RunDirError as exc:
            problems.append(f"{Path(run_dir).name}: {exc.problem}")
    return points, problems


def default_curve_runs(points: list[RatePoint]) -> list[str]:
    """The runs whose training curves are shown first: up to two trained with KL warm-up
    (else the first run) and one without, so the ramp can be compared."""
    warm = [p.name for p in points if p.kl_warmup] or [p.name for p in points[:1]]
    plain = [p.name for p in points if not p.kl_warmup][:1]
    return warm[:2] + [n for n in plain if n not in warm]


def comparable(points: list[RatePoint]) -> tuple[list[RatePoint], list[str]]:
    """Keep the VAE runs on the most common data set (rates of different data sets or of
    autoencoders do not belong on one chart); say what was left out and why."""
    notes = []
    vaes = [p for p in points if p.model == "vae"]
    for p in points:
        if p.model != "vae":
            notes.append(f"{p.name}: a plain autoencoder has no KL (rate), left out")
    if not vaes:
        return [], notes
    datasets = [p.dataset for p in vaes]
    common = max(set(datasets), key=datasets.count)
    for p in vaes:
        if p.dataset != common:
            notes.append(f"{p.name}: trained on {p.dataset}, not {common}, left out")
    return [p for p in vaes if p.dataset == common], notes


def warmup_curve(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Columns for the training-curve chart: epoch, beta, train/test recon and KL."""
    keys = ("epoch", "beta", "train_recon", "train_kl", "test_recon", "test_kl", "test_loss")
    return {k: [float(r.get(k, math.nan)) for r in rows] for k in keys}


def prior_fits(mu: np.ndarray, is_vae: bool, seed: int = 0
               ) -> tuple[PriorFit, PriorFit | None, int]:
    """(fit on all dimensions, fit on the active dimensions only or None, number of dead
    dimensions) of the codes ``mu`` (N, D): the numbers behind
    :func:`explorer.verdicts.compare_verdict`. A VAE's dead dimensions (Var_x[mu_j] <=
    ``ACTIVE_THRESHOLD``) squeeze its codes to 0 where the prior has std 1, so the fit on
    all dimensions alone would call a fine model bad."""
    from explorer.diagnostics import ACTIVE_THRESHOLD

    mu = np.asarray(mu, dtype=np.float64)
    fit = prior_fit(mu, seed)
    active = mu.var(axis=0) > ACTIVE_THRESHOLD
    n_dead = int((~active).sum())
    if not is_vae or n_dead == 0 or not active.any():
        return fit, None, n_dead if is_vae else 0
    return fit, prior_fit(mu[:, active], seed), n_dead
