"""Downloads: Plotly figures as self-contained HTML or PNG, image grids as PNG, and a
run's summary (config, final metrics, active units, IWAE estimate) as JSON.

HTML embeds plotly.js (works offline); PNG goes through kaleido, which drives a local
Chromium: one browser per process, started on the first PNG (or by :func:`warm_up`) and
kept open, so a PNG takes a few hundred milliseconds instead of seconds. PNGs are styled
for slides (:func:`print_figure`). Nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import io
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FORMAT = "vae-latent-explorer/run-summary"


class ExportError(RuntimeError):
    """A figure or summary could not be exported; the message says why."""


def figure_html(fig: Any) -> bytes:
    """A Plotly figure as one self-contained HTML file (plotly.js inlined, no CDN)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


EXPORT_FONT = dict(family="Helvetica, Arial, sans-serif", size=14, color="#222")


def print_figure(fig: Any, title: str | None = None) -> dict[str, Any]:
    """``fig`` as a figure dict styled for a slide (the figure is left as it is): white
    background, dark text, a ``title`` when given, every axis' tick labels and title and
    the legend inside the frame (automatic margins, starting wide enough that Plotly
    rarely has to redraw), and a legend whenever the figure has named traces (a lesson
    map's classes, markers, the prior's circle). Works on the dict: no validation pass."""
    out = fig.to_dict() if hasattr(fig, "to_dict") else dict(fig)
    data, layout = out.get("data", []), dict(out.get("layout", {}))
    named = [t for t in data if t.get("showlegend") is not False and t.get("name")]
    subplot_titles = any(a.get("yref") == "paper" and (a.get("y") or 0) >= 1
                         for a in layout.get("annotations", []))
    top = 24 + (40 if title else 0) + (32 if subplot_titles else 0)
    layout.pop("template", None)
    layout.update(
        template=_white_template(), paper_bgcolor="white", plot_bgcolor="white",
        font=dict(EXPORT_FONT), margin=dict(l=84, r=24, t=top, b=72, autoexpand=True),
        showlegend=bool(named) and (len(data) > 1 or layout.get("showlegend") is True))
    if title:
        layout["title"] = dict(text=title, x=0.01, xanchor="left", y=0.985, yanchor="top",
                               yref="container", font=dict(size=18, color="#222"))
    for key in list(layout):
        if key.startswith(("xaxis", "yaxis")):
            layout[key] = {**layout[key], "automargin": True, "gridcolor": "#e5e5e5",
                           "linecolor": "#444", "color": "#222"}
            if layout[key].get("constrain") == "domain":  # equal scales: on a slide, widen
                layout[key]["constrain"] = "range"  # the range, not a narrow plot
    layout.setdefault("xaxis", {"automargin": True})
    layout.setdefault("yaxis", {"automargin": True})
    layout["annotations"] = [{**a, "font": {**a.get("font", {}), "color": "#222"}}
                             for a in layout.get("annotations", [])]
    return {"data": data, "layout": layout}


_TEMPLATE: dict[str, Any] = {}


def _white_template() -> dict[str, Any]:
    """Plotly's ``plotly_white`` template as a dict (built once)."""
    if not _TEMPLATE:
        import plotly.io as pio

        _TEMPLATE.update(pio.templates["plotly_white"].to_plotly_json())
    return _TEMPLATE


PNG_IDLE_SECONDS = 600.0  # the PNG browser closes after this long without a PNG


class PngRenderer:
    """One kaleido Chromium kept open for every PNG this process makes: starting Chromium
    costs seconds, a render on an open one a few hundred milliseconds. Thread-safe (one
    render at a time, Streamlit serves sessions from several threads); a failed render
    closes the browser, and the next one starts a fresh one. The browser costs about
    420 MB (PSS, 10 processes), so it closes after ``idle`` seconds without a PNG."""

    def __init__(self, timeout: float = 60.0, idle: float = PNG_IDLE_SECONDS) -> None:
        self.timeout = timeout
        self.idle = idle
        self._idle_timer: threading.Timer | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._kaleido: Any = None

    @property
    def running(self) -> bool:
        return self._kaleido is not None

    def _open(self) -> None:
        import kaleido

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kaleido-png", daemon=True)
        thread.start()

        class Quick(kaleido.Kaleido):
            """Kaleido reloads its tab after every image, before handing the image back;
            here the reload runs after the image is returned (the next render waits for
            the tab as before)."""

            async def _return_kaleido_tab(self, tab: Any) -> None:
                parent = super()._return_kaleido_tab
                task = asyncio.ensure_future(parent(tab))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

        reloads: set[asyncio.Future[Any]] = set()

        async def start() -> Any:
            k = Quick(n=1, timeout=self.timeout, mathjax=False)  # no CDN script
            await k.open()
            return k

        self._loop, self._thread = loop, thread
        try:
            self._kaleido = asyncio.run_coroutine_threadsafe(start(), loop).result(self.timeout)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        loop, k = self._loop, self._kaleido
        self._kaleido = self._loop = None
        if loop is None:
            return
        if k is not None:
            try:
                asyncio.run_coroutine_threadsafe(k.close(), loop).result(10)
            except Exception:  # noqa: BLE001 - closing a broken browser: nothing to save
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None

    def render(self, fig_dict: dict[str, Any], opts: dict[str, Any]) -> bytes:
        """PNG bytes of a figure dict with kaleido's ``opts`` (format, width, height,
        scale), starting the browser on first use."""
        with self._lock:
            if self._kaleido is None:
                self._open()
            assert self._loop is not None
            try:
                png = asyncio.run_coroutine_threadsafe(
                    self._kaleido.calc_fig(fig_dict, opts=opts), self._loop
                ).result(self.timeout)
            except BaseException:
                self._close()
                raise
            self._last_used = time.monotonic()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._idle_timer = threading.Timer(self.idle, self._close_if_idle)
            self._idle_timer.daemon = True
            self._idle_timer.start()
            return png

    def _close_if_idle(self) -> None:
        with self._lock:  # a render that came in meanwhile keeps the browser open
            if time.monotonic() - self._last_used >= 0.99 * self.idle:
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()


RENDERER = PngRenderer()
atexit.register(RENDERER.close)


_WARMING = threading.Lock()  # held while a warm-up runs: one at a time, never a queue


def warm_up() -> None:
    """Start the PNG renderer's browser now (in a background thread), so the first PNG a
    visitor asks for does not wait for Chromium to start. Cheap to call on every page
    run: does nothing while the browser is open or another warm-up is under way."""
    if RENDERER.running or not _WARMING.acquire(blocking=False):
        return

    def run() -> None:
        try:
            if not RENDERER.running:
                figure_png({"data": [], "layout": {}}, width=50, height=50, scale=1)
        except ExportError:
            pass  # the button says why when it is pressed
        finally:
            _WARMING.release()

    threading.Thread(target=run, name="kaleido-warm-up", daemon=True).start()


def figure_png(fig: Any, title: str | None = None, width: int = 900,
               height: int | None = None, scale: float = 2.0) -> bytes:
    """A Plotly figure as PNG bytes for a slide: :func:`print_figure` (white, labels and
    legend inside the frame) rendered by kaleido's Chromium, kept open between calls.
    ``height`` defaults to the figure's own (at least 450 px)."""
    styled = print_figure(fig, title)
    if height is None:
        height = max(450, int(styled["layout"].get("height") or 600))
    try:
        return RENDERER.render(styled, dict(format="png", width=width, height=height,
                                            scale=scale))
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
