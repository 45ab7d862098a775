"""2-D projections of latent means: PCA (exact, reusable for new points) and t-SNE.

t-SNE is computed once, at the end of training, and cached in ``latents.npz``; a new
point is never given a fresh t-SNE: :func:`place_by_neighbours` puts it at the
distance-weighted mean of the projections of its nearest latent neighbours.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# openTSNE settings chosen by measurement (20-D latent means of mnist5k, one thread; see
# bench/projection_speed.py): Barnes-Hut beats the FFT method at 5,000 points, the FFT method
# wins at 20,000, and their fitted cost curves cross near 8,000. Exact nearest neighbours (a
# ball tree) beat Annoy's approximate ones for 5,000-20,000 20-D points.
FFT_ABOVE = 8_000
EXACT_NEIGHBOURS_UP_TO = 30_000
# With a stop request (Ctrl-C), the optimisation checks it every this many iterations
# (of 500 or 750): a stop takes effect within a fraction of a second at these sizes. The
# nearest-neighbour search before the first iteration cannot be interrupted.
STOP_CHECK_EVERY = 10
# Iterations after the 250 of early exaggeration: openTSNE's 500 for large sets; 250 up to
# SHORT_UP_TO points, where the map has converged by then (1,000 20-D latent means of
# mnist5k, two threads: 500 iterations 2.75 s, 250 iterations 1.75 s, trustworthiness at 10
# neighbours 0.968 for both, 10-NN label accuracy on the map 0.883 vs 0.880).
SHORT_UP_TO = 2_000


class TsneInterrupted(Exception):
    """:func:`tsne` was asked to stop before it finished; it returns no embedding."""


def fit_pca(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA to 2-D by SVD. Returns (projection (N, 2), mean (D,), components (2, D)).

    For D == 1 the second axis is zero; for D == 2 this is a rotation of the raw axes.
    Component signs are fixed (largest loading positive) so reruns agree.
    """
    mu = np.asarray(mu, dtype=np.float64)
    mean = mu.mean(axis=0)
    centred = mu - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.zeros((2, mu.shape[1]))
    k = min(2, vt.shape[0])
    components[:k] = vt[:k]
    for row in components:
        if row.any() and row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return (centred @ components.T).astype(np.float32), mean.astype(np.float32), \
        components.astype(np.float32)


def apply_pca(z: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project new latent vectors (M, D) with a fitted PCA. Returns (M, 2)."""
    return ((np.atleast_2d(z) - mean) @ components.T).astype(np.float32)


def tsne(mu: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1,
         stop_requested: Callable[[], object] | None = None) -> np.ndarray:
    """t-SNE of latent means to 2-D (N, 2) with openTSNE when installed (Barnes-Hut up to
    ``FFT_ABOVE`` points, FFT-accelerated gradients above; both faster than scikit-learn's,
    see ``bench/projection_speed.py``), scikit-learn otherwise. Perplexity is capped for
    tiny sets.

    ``stop_requested`` (e.g. the trainer's Ctrl-C flag) is polled before the start and
    every :data:`STOP_CHECK_EVERY` iterations (openTSNE's callbacks; scikit-learn's
    fallback only before and after): when it returns true, :class:`TsneInterrupted` is
    raised instead of returning a half-optimised map."""
    def stopping() -> bool:
        return bool(stop_requested is not None and stop_requested())

    if stopping():
        raise TsneInterrupted
    mu = np.asarray(mu, dtype=np.float32)
    n = len(mu)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    try:
        from openTSNE import TSNE as OpenTSNE
    except ImportError:
        OpenTSNE = None
    if OpenTSNE is not None:
        # a callback that returns True ends openTSNE's optimisation early (it then returns
        # the unfinished embedding, which is discarded below)
        callbacks = (lambda _iteration, _error, _embedding: stopping()) \
            if stop_requested is not None else None
        embedding = OpenTSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs,
                             negative_gradient_method="fft" if n > FFT_ABOVE else "bh",
                             neighbors="exact" if n <= EXACT_NEIGHBOURS_UP_TO else "auto",
                             n_iter=250 if n <= SHORT_UP_TO else 500,
                             callbacks=callbacks, callbacks_every_iters=STOP_CHECK_EVERY,
                             verbose=False).fit(mu)
        if stopping():
            raise TsneInterrupted
        return np.asarray(embedding, dtype=np.float32)
    from sklearn.manifold import TSNE

    result = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca",
                  n_jobs=n_jobs).fit_transform(mu).astype(np.float32)
    if stopping():
        raise TsneInterrupted
    return result


def place_by_neighbours(z: np.ndarray, mu: np.ndarray, projected: np.ndarray,
                        k: int = 10) -> np.ndarray:
    """Place new latent vectors z (M, D) on an existing 2-D map of ``mu`` (N, D) ->
    ``projected`` (N, 2): inverse-distance-weighted mean of the k nearest neighbours'
    positions. An exact match lands exactly on its neighbour (only the matches count then,
    since 1e-6-floored weights would still let close neighbours pull it). Returns (M, 2)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    mu = np.asarray(mu, dtype=np.float32)
    k = max(1, min(k, len(mu)))
    # squared distances via |a|^2 - 2ab + |b|^2: one matmul, no (M, N, D) temporary
    d2 = (z**2).sum(1)[:, None] - 2.0 * z @ mu.T + (mu**2).sum(1)[None, :]  # (M, N)
    d2 = np.maximum(d2, 0.0)
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]  # (M, k)
    # the expansion above can lose small distances to float32 cancellation (an exact match
    # would then not count as one): the k chosen ones are measured again directly
    dist = np.linalg.norm(z[:, None, :] - mu[nearest], axis=2)  # (M, k)
    exact = dist <= 1e-6  # (M, k) a point that is one of the map's: exactly its place
    weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float32),
                       1.0 / np.maximum(dist, 1e-6))
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights[:, :, None] * projected[nearest]).sum(axis=1).astype(np.float32)
