"""Downloads: Plotly figures as self-contained HTML or PNG, image grids as PNG, and a
run's summary (config, final metrics, active units, IWAE estimate) as JSON.

HTML embeds plotly.js (works offline); PNG goes through kaleido, which drives a local
Chromium. Nothing here touches the network.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FORMAT = "vae-latent-explorer/run-summary"


class ExportError(RuntimeError):
    """A figure or summary could not be exported; the message says why."""


def figure_html(fig: Any) -> bytes:
    """A Plotly figure as one self-contained HTML file (plotly.js inlined, no CDN)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_png(fig: Any, width: int = 900, height: int = 600, scale: float = 2.0) -> bytes:
    """A Plotly figure as PNG bytes via kaleido (needs a local Chromium)."""
    try:
        return fig.to_image(format="png", width=width, height=height, scale=scale)
    except Exception as exc:  # kaleido raises its own types when Chromium is missing
        raise ExportError(f"PNG export needs kaleido and a Chromium browser (on Debian: "
                          f"apt-get install chromium); it failed with: {exc}. The HTML "
                          f"download works without it.") from exc


def image_png(image: np.ndarray, upscale: int = 1) -> bytes:
    """An image (H, W) or (H, W, C) with values in [0, 1] as PNG bytes, each pixel
    repeated ``upscale`` times in both directions (nearest neighbour, no blur)."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ExportError(f"expected an image shaped (H, W) or (H, W, C), got {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if upscale > 1:
        arr = arr.repeat(upscale, axis=0).repeat(upscale, axis=1)
    pixels = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python; non-finite floats -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_summary(run_dir: str | Path, health: Any | None = None,
                bounds: Any | None = None) -> dict[str, Any]:
    """Config, data description, final metrics and status of a run, plus (when given) the
    latent health (:class:`explorer.diagnostics.LatentHealth`) and the importance-weighted
    estimate (:class:`explorer.iwae.BoundEstimate`). Values in nats per sample."""
    from training import rundir

    run_dir = Path(run_dir)
    info = rundir.read_config(run_dir)
    rows = rundir.read_metrics(run_dir)
    final = dict(rows[-1]) if rows else {}
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run_dir.name,
        "units": "nats per sample",
        "status": info.status,
        "epochs_completed": info.epochs_completed,
        "config": info.config.to_dict(),
        "data": {"image_shape": list(info.image_shape), "class_names": info.class_names,
                 "num_train": info.num_train, "num_test": info.num_test},
        "final_metrics": final,
        "active_units": final.get("active_units"),
    }
    if health is not None:
        summary["active_units"] = health.active_units
        summary["latent_health"] = {
            "latent_dim": health.latent_dim, "active_units": health.active_units,
            "dead_dims": health.dead_dims, "weak_dims": health.weak_dims,
            "kl_per_dim": health.kl_per_dim,
            "mu_variance": health.mu_variance, "total_kl": health.total_kl,
            "reconstruction_spread": health.recon_spread, "warnings": health.warnings,
        }
    if bounds is not None:
        summary["iwae"] = {
            "num_importance_samples": bounds.num_samples,
            "num_test_images": int(len(bounds.iwae)),
            "log_px_iwae_mean": float(np.mean(bounds.iwae)),
            "elbo_mean": float(np.mean(bounds.elbo)),
            "gap_mean": float(np.mean(bounds.gap)),
            "note": "lower bounds on log p(x) in nats per image; for grey-level pixels under a "
                    "Bernoulli likelihood they are cross-entropies, not normalised densities",
        }
    return _jsonable(summary)


def summary_json(summary: dict[str, Any]) -> bytes:
    return (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode("utf-8")
