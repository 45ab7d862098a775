"""PNG exports a teacher can paste into slides (``explorer/export.py``): every lesson
chart, rendered for real by kaleido's Chromium, has all its text inside the picture (the
outermost pixels are background, and there is ink where the title, the axis titles and
the legend must be), a legend where it has colours, a white background whatever the app's
theme, and one Chromium serves every PNG of the process. Timings are not asserted here
(they are in docs/teaching.md)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from explorer import export
from explorer.compare import RatePoint
from explorer.diagnostics import latent_health
from explorer.lesson_charts import (
    gap_histogram,
    iwae_curve_figure,
    latent_health_figure,
    rate_distortion_figure,
    warmup_figure,
)
from explorer.lesson_figures import lesson_map, manifold_map, reparam_map, reparam_zoom
from explorer.server import CHROMIUM

BORDER = 4  # pixels at each edge that must be pure background
INK = 110  # a channel below this: text or a line, not background


def figures() -> dict[str, tuple[go.Figure, str, bool]]:
    """name -> (figure, title, has colours that need a legend), like the lesson pages."""
    rng = np.random.default_rng(0)
    names = [str(i) for i in range(10)]
    labels = np.arange(600) % 10
    vae = rng.standard_normal((600, 2))
    ae = rng.standard_normal((600, 2)) * np.array([6.0, 12.0]) + np.array([0.0, 8.0])
    mu, sigma = vae[3], np.array([0.067, 0.043])
    points = np.concatenate([mu[None], mu + sigma * rng.standard_normal((17, 2))])

    def rp(name: str, beta: float, warm: int, rate: float, dist: float) -> RatePoint:
        return RatePoint(name, name, "vae", beta, warm, 16, "mnist5k", dist, rate, 6)

    epochs = list(range(1, 41))
    curve = {"epoch": epochs, "beta": [min(4.0, 0.4 * e) for e in epochs],
             "test_kl": [7 + 1 / e for e in epochs], "test_recon": [120 + 60 / e for e in epochs]}
    ks = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    vae16 = rng.standard_normal((400, 16)) * np.r_[np.ones(6), np.full(10, 0.03)]
    logvar16 = np.log(np.r_[np.full(6, 0.1), np.ones(10)]) * np.ones((400, 16))
    picture = rng.uniform(size=(15 * 8, 15 * 8))
    full = reparam_map(vae, labels, names, "raw", 3, points, sigma, seed=0)
    true_size = reparam_map(vae, labels, names, "raw", 3, points, sigma, seed=0,
                            ellipse_times=1)
    return {
        "compare-ae-map": (lesson_map(ae, labels, names, rings=[0, 5, 9], height=380,
                                      legend=False, prior_circle=True),
                           "demo-ae-z2 (plain autoencoder): latent means μ(x)", True),
        "compare-vae-map": (lesson_map(vae, labels, names, rings=[0, 5], height=380,
                                       legend=False, prior_circle=True),
                            "demo-vae-z2 (VAE): latent means μ(x)", True),
        "reparam-map": (full, "demo-vae-z2, test sample 3: z = μ + σ·ε", True),
        "reparam-zoom": (reparam_zoom(true_size, mu, sigma, 0), "zoomed to μ ± 3σ", True),
        "manifold": (manifold_map(vae, labels, names, (0, 1), picture, 3.0, 15),
                     "decoded manifold over z0, z1", True),
        "rate-distortion": (rate_distortion_figure([rp("demo-vae-z2", 1, 0, 6.2, 143.7),
                                                    rp("demo-vae-z16", 1, 0, 22.8, 87.3),
                                                    rp("demo-vae-z16-beta4", 4, 10, 7.5,
                                                       120.1)]),
                            "Rate vs distortion (test set, nats per sample)", True),
        "warmup": (warmup_figure({"demo-vae-z16-beta4": curve, "demo-vae-z2": curve}),
                   "Training curves and KL warm-up", True),
        "iwae-curve": (iwae_curve_figure([(k, -148.2, -148.2 + np.log(k)) for k in ks], 100),
                       "test sample 0: IWAE_K and the ELBO", True),
        "gap-histogram": (gap_histogram(np.abs(rng.normal(3, 1, 250))),
                          "IWAE − ELBO, K=100, 250 test images", False),
        "health-vae": (latent_health_figure(latent_health(vae16, logvar16)),
                       "demo-vae-z16-beta4: latent health per dimension", True),
        "health-ae": (latent_health_figure(latent_health(ae, None)),
                      "demo-ae-z2: latent health per dimension", True),
    }


FIGURES = figures()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def frame_is_background(img: np.ndarray, border: int = BORDER) -> bool:
    """Nothing drawn in the outermost ``border`` pixels: no label runs off the picture."""
    edges = [img[:border], img[-border:], img[:, :border], img[:, -border:]]
    return all((e >= 250).all() for e in edges)


def ink(region: np.ndarray) -> bool:
    """Dark pixels (text) in a region."""
    return bool((region.max(axis=2) < INK).any())


def colour(region: np.ndarray) -> bool:
    """Saturated pixels (a legend's swatches) in a region."""
    return bool(((region.max(axis=2) - region.min(axis=2)) > 60).any())


# --------------------------------------------------------------------------- no browser

@pytest.mark.parametrize("name", sorted(FIGURES))
def test_print_figure_styles_a_copy_for_slides(name):
    fig, title, coloured = FIGURES[name]
    before = fig.to_plotly_json()
    styled = export.print_figure(fig, title)
    layout = styled["layout"]
    assert layout["paper_bgcolor"] == layout["plot_bgcolor"] == "white"
    assert layout["title"]["text"] == title and layout["margin"]["autoexpand"] is True
    axes = [k for k in layout if k.startswith(("xaxis", "yaxis"))]
    assert axes and all(layout[a]["automargin"] is True for a in axes)
    assert layout["showlegend"] is coloured  # a legend wherever colours mean something
    assert fig.to_plotly_json() == before  # the page's figure is left as it is
    assert "plot_bgcolor" not in before["layout"]  # on the page: the theme's background


def test_lesson_maps_get_a_legend_in_the_png_only():
    fig = FIGURES["compare-ae-map"][0]
    assert fig.layout.showlegend is False  # the page's small map has no room for it
    styled = export.print_figure(fig)
    assert styled["layout"]["showlegend"] is True
    named = [t["name"] for t in styled["data"] if t.get("showlegend") is not False]
    assert named[:10] == [str(i) for i in range(10)] and "95% of N(0, I)" in named


# --------------------------------------------------------------------------- Chromium

@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: kaleido cannot render PNGs")
    try:
        out = {name: export.figure_png(fig, title) for name, (fig, title, _) in FIGURES.items()}
    except export.ExportError as exc:
        pytest.skip(f"kaleido cannot render here: {exc}")
    if os.environ.get("VAE_EXPORT_DIR"):  # to look at them
        folder = Path(os.environ["VAE_EXPORT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        for name, png in out.items():
            (folder / f"{name}.png").write_bytes(png)
    return out


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_label_of_every_png_is_inside_the_picture(rendered, name):
    img = pixels(rendered[name])
    h, w, _ = img.shape
    fig, _, coloured = FIGURES[name]
    assert w == 900 * 2 and h == max(450, fig.layout.height or 600) * 2
    assert frame_is_background(img), "something is drawn on the picture's edge (cut off)"
    assert ink(img[: h // 12, : w // 2]), "no title at the top left"
    assert ink(img[int(0.85 * h):, int(0.2 * w):int(0.8 * w)]), "no x-axis title/ticks"
    assert ink(img[int(0.2 * h):int(0.8 * h), : w // 20]), "no y-axis title at the left"
    if coloured and name not in ("warmup",):  # warm-up's legend sits under the panels
        assert colour(img[: int(0.9 * h), int(0.8 * w):]), "no legend swatches at the right"
    if name == "warmup":
        assert colour(img[int(0.85 * h):, : w // 2]), "no legend under the panels"
    # white background whatever the app's theme: most of the picture is white
    assert (img.min(axis=2) >= 250).mean() > 0.5


def test_the_check_catches_a_clipped_chart(rendered):
    """The pixel test is not vacuous: a chart with no margins and no automatic margins
    (what the old exports looked like) fails it."""
    fig = go.Figure(go.Scatter(x=[1, 10, 100], y=[3, 1, 2]))
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), xaxis_title="K", yaxis_title="nats")
    styled = fig.to_dict()
    styled["layout"].update(paper_bgcolor="white", plot_bgcolor="white")
    png = export.RENDERER.render(styled, dict(format="png", width=400, height=300, scale=1))
    assert not frame_is_background(pixels(png))
    assert frame_is_background(pixels(export.figure_png(fig, "fixed")))


def test_one_chromium_serves_every_png_and_threads_share_it(rendered):
    first = export.RENDERER._kaleido
    assert first is not None and export.RENDERER.running
    fig = FIGURES["gap-histogram"][0]
    sizes = {}

    def make(width: int) -> None:
        sizes[width] = Image.open(io.BytesIO(export.figure_png(fig, width=width,
                                                               scale=1))).size

    threads = [threading.Thread(target=make, args=(w,)) for w in (500, 600, 700)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {w: s[0] for w, s in sizes.items()} == {500: 500, 600: 600, 700: 700}
    assert export.RENDERER._kaleido is first  # not restarted


def test_a_failed_render_starts_a_fresh_browser(rendered, monkeypatch):
    broken = export.RENDERER._kaleido

    async def fail(*args, **kwargs):
        raise RuntimeError("the browser went away")

    monkeypatch.setattr(broken, "calc_fig", fail)
    with pytest.raises(export.ExportError, match="HTML download works"):
        export.figure_png(FIGURES["gap-histogram"][0])
    assert not export.RENDERER.running  # closed, not left half-broken
    assert export.figure_png(FIGURES["gap-histogram"][0]).startswith(b"\x89PNG")
    assert export.RENDERER._kaleido is not broken


def test_an_idle_browser_is_closed(rendered):
    renderer = export.PngRenderer(idle=1.0)
    try:
        png = renderer.render(export.print_figure(FIGURES["gap-histogram"][0]),
                              dict(format="png", width=300, height=200, scale=1))
        assert png.startswith(b"\x89PNG") and renderer.running
        for _ in range(100):
            if not renderer.running:
                break
            threading.Event().wait(0.1)
        assert not renderer.running  # its ~420 MB are given back
    finally:
        renderer.close()


def test_warm_up_starts_one_browser_once(rendered, monkeypatch):
    calls = []
    monkeypatch.setattr(export.RENDERER, "_kaleido", None)  # as if closed (restored after)
    monkeypatch.setattr(export, "figure_png", lambda *a, **k: calls.append(a) or b"")
    release = export._WARMING.acquire()  # a warm-up under way: more calls do nothing
    try:
        for _ in range(20):
            export.warm_up()
    finally:
        export._WARMING.release()
    assert release and calls == []
    export.warm_up()
    for _ in range(50):
        if calls:
            break
        threading.Event().wait(0.05)
    assert len(calls) == 1
