"""Row 3: the latent map. t-SNE of 5,000 and 20,000 latent means (the project's openTSNE
path next to scikit-learn's Barnes-Hut t-SNE) and placing one new point on an existing map
(nearest neighbours, :func:`training.projection.place_by_neighbours`: never a new t-SNE).

The latent means come from a 20-D VAE trained for a few epochs on ``mnist5k``: its 5,000
digits, and for 20,000 the same digits plus 15,000 copies shifted by one or two pixels
(MNIST-like inputs, real encoder outputs; full MNIST is not downloaded here).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from bench.common import Row, summary

SHIFTS = [(1, 0), (0, 1), (-1, -1)]  # (dy, dx) pixel shifts for the extra 15,000 inputs


def latent_means(epochs: int = 4) -> np.ndarray:
    """(20000, 20) float32: mnist5k and three shifted copies through a trained encoder."""
    from training import rundir
    from training.config import TrainConfig
    from training.data import load_dataset
    from training.trainer import train

    data = load_dataset("mnist5k")
    images = torch.cat([data.train_x, data.test_x])  # (5000, 1, 28, 28)
    images = torch.cat([images] + [torch.roll(images, shifts=s, dims=(2, 3)) for s in SHIFTS])
    with tempfile.TemporaryDirectory(prefix="bench-proj-") as tmp:
        config = TrainConfig(dataset="mnist5k", latent_dim=20, epochs=epochs, tsne=False,
                             device="cpu")
        train(config, f"{tmp}/run", data=data, log=lambda line: None, show_progress_bar=False)
        model = rundir.load_run(f"{tmp}/run").model
    with torch.no_grad():
        mu, _ = model.encode(images)  # (20000, 20)
    return mu.numpy().astype(np.float32)


SKLEARN_PROBE = """
import sys, time
import numpy as np
from sklearn.manifold import TSNE
mu = np.load(sys.argv[1])
start = time.perf_counter()
TSNE(n_components=2, perplexity=30.0, random_state=0, init="pca",
     n_jobs=int(sys.argv[2])).fit_transform(mu)
print(time.perf_counter() - start)
"""


def sklearn_tsne_seconds(mu: np.ndarray, n_jobs: int, timeout: float) -> float | None:
    """Seconds scikit-learn's t-SNE takes on ``mu`` (its own process, so it can be stopped
    after ``timeout``: then None)."""
    with tempfile.TemporaryDirectory(prefix="bench-sk-") as tmp:
        np.save(f"{tmp}/mu.npy", mu)
        try:
            done = subprocess.run([sys.executable, "-c", SKLEARN_PROBE, f"{tmp}/mu.npy",
                                   str(n_jobs)], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    if done.returncode != 0:
        raise RuntimeError(f"scikit-learn t-SNE failed: {done.stderr[-1000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(sklearn_sizes: tuple[int, ...] = (5000, 20000), threads: int = 2,
            sklearn_timeout: float = 90.0) -> tuple[list[Row], dict[str, Any]]:
    from training.projection import FFT_ABOVE, place_by_neighbours, tsne

    torch.set_num_threads(threads)
    mu_all = latent_means()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    maps: dict[int, np.ndarray] = {}
    for n in (5000, 20000):
        mu = mu_all[:n]
        start = time.perf_counter()
        maps[n] = tsne(mu, 30.0, seed=0, n_jobs=threads)
        ours = time.perf_counter() - start
        raw[f"opentsne_{n}"] = ours
        method = "FFT" if n > FFT_ABOVE else "Barnes-Hut"
        detail = f"project: openTSNE {method}, exact neighbours, {threads} threads"
        if n in sklearn_sizes:
            theirs = sklearn_tsne_seconds(mu, threads, sklearn_timeout)
            raw[f"sklearn_{n}"] = theirs
            detail += (f"; scikit-learn (Barnes-Hut) {theirs:.1f} s, {theirs / ours:.1f}× "
                       f"slower" if theirs is not None else
                       f"; scikit-learn (Barnes-Hut) stopped after {sklearn_timeout:.0f} s: "
                       f"> {sklearn_timeout / ours:.1f}× slower")
        else:
            detail += "; scikit-learn skipped (--quick)"
        rows.append(Row("projection", f"t-SNE of {n:,} latent means", ours, "s", detail))

    # one new point (an uploaded image's latent mean) placed on the 20,000-point map
    mu = mu_all
    rng = np.random.default_rng(0)
    queries = mu[rng.integers(0, len(mu), 300)] + rng.normal(0, 0.05, (300, mu.shape[1]))
    times = []
    for q in queries.astype(np.float32):
        start = time.perf_counter()
        place_by_neighbours(q, mu, maps[20000], k=10)
        times.append(time.perf_counter() - start)
    stats = summary(times[20:])
    raw["place_one"] = stats
    rows.append(Row("projection", "place one new point on the 20,000-point map",
                    1e3 * stats["median"], "ms",
                    f"10 nearest latent neighbours, inverse-distance weights; p90 "
                    f"{1e3 * stats['p90']:.1f} ms (no new t-SNE)"))
    return rows, raw
