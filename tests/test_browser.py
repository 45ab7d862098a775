"""The explorer's main page in a real browser: ``streamlit run streamlit_app.py`` on a free
port, driven by headless Chromium through Playwright.

Checked on the app itself (the lens component alone is tested on a demo page in
``tests/test_browser_lens.py``): the decoder downloads from the app's own route and runs in
the browser; a slider held down and moved re-decodes the image at every step while the
browser sends the server nothing, and the pixels equal ONNX Runtime's in Python for the
same z (within 1/255); the release sends one message and the page's log p(z) follows; the
lens over the map decodes live; a click on a point selects that sample (ELBO tab, sidebar
index); without WebAssembly the page says so once and a release still updates the
server's image; the curves tab draws when opened; no request leaves the app's server.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer
from tests import lens_driver
from tests.lens_driver import API, LENS, WAIT_MS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (install Debian's chromium: "
                              f"bash scripts/setup.sh --with-browser)"),
]

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
CHARTS = 'iframe[title="app.chart.plotly_chart"]'  # the light plotly.js build's charts
DRAWN = ".js-plotly-plot .main-svg"


@pytest.fixture(scope="module")
def app_server(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    srv = StreamlitServer(env={"VAE_RUNS_DIR": str(runs)}, log_path=tmp / "streamlit.log")
    srv.start()
    srv.run = runs / tiny_run.name
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class AppPage:
    """A fresh browser context on the app (a new Streamlit session) that records every
    request and every websocket message the browser sends to the server."""

    def __init__(self, browser, server, init_script: str | None = None):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.sent: list[int] = []  # sizes of the websocket frames sent to the server
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: ws.on(
            "framesent", lambda payload: self.sent.append(len(payload))))
        self.page.goto(server.url, wait_until="domcontentloaded")
        self.page.locator(LENS).wait_for(timeout=WAIT_MS)
        self.page.get_by_text("log p(z) =").first.wait_for(timeout=WAIT_MS)

    def wait_runtime(self, runtime: str) -> None:
        self.page.wait_for_function(
            f"() => {API} && {API}.runtime === {json.dumps(runtime)}"
            + (f" && {API}.decodes > 0" if runtime == "wasm" else ""), timeout=WAIT_MS)

    def decodes(self) -> int:
        return lens_driver.decodes(self.page)

    def wait_decodes_above(self, n: int) -> None:
        lens_driver.wait_decodes_above(self.page, n)

    def pixels(self) -> tuple[np.ndarray, list[float]]:
        return lens_driver.pixels(self.page)

    def slider_thumb(self, dim: int) -> tuple[float, float, float]:
        return lens_driver.slider_thumb(self.page, dim)

    def log_prior_caption(self) -> str:
        return self.page.get_by_text("log p(z) =").first.text_content()

    def no_errors(self) -> None:
        errors = self.page.locator(ERRORS)
        assert errors.count() == 0, errors.first.inner_text()

    def no_foreign_requests(self) -> None:
        foreign = [u for u in self.requests
                   if not u.startswith((self.server.url + "/", "data:", "blob:"))]
        assert not foreign, f"requests left the app's server: {foreign}"


@pytest.fixture
def open_app(browser, app_server):
    pages: list[AppPage] = []

    def _open(**kwargs) -> AppPage:
        pages.append(AppPage(browser, app_server, **kwargs))
        return pages[-1]

    yield _open
    for p in pages:
        p.context.close()


def python_pixels(run: Path, z: list[float]) -> np.ndarray:
    """(H, W, C) in 0..255 as the server decodes z: ONNX Runtime in Python, sigmoid."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(run / "decoder.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"z": np.asarray([z], dtype=np.float32)})[0][0]
    return np.moveaxis(np.round(255 / (1 + np.exp(-logits.astype(np.float64)))), 0, -1)


def test_slider_drag_decodes_in_the_browser_and_release_updates_the_page(open_app,
                                                                          app_server):
    p = open_app()
    p.wait_runtime("wasm")
    page = p.page
    assert sum("/vae-model/" in u and u.endswith("/decoder.onnx") for u in p.requests) == 1
    caption = p.log_prior_caption()
    x, y, width = p.slider_thumb(0)
    page.mouse.move(x, y)
    page.mouse.down()
    sent = len(p.sent)
    previous, zs = p.pixels()[0], set()
    for step in range(1, 7):  # held down, never released
        n = p.decodes()
        page.mouse.move(x + step * width / 16, y, steps=2)
        p.wait_decodes_above(n)
        image, z = p.pixels()
        assert not np.array_equal(image, previous), f"step {step}: the image did not change"
        want = python_pixels(app_server.run, z)
        assert np.abs(image - want).max() <= 1, f"browser and ONNX Runtime differ at z={z}"
        previous = image
        zs.add(round(z[0], 4))
    assert len(zs) == 6
    assert len(p.sent) == sent, "the browser talked to the server during the drag"
    page.mouse.up()
    page.wait_for_function(
        "old => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
        ".some(e => e.textContent.includes('log p(z) =') && e.textContent !== old)",
        arg=caption, timeout=WAIT_MS)
    z = page.evaluate(f"() => {API}.z")
    want = -0.5 * float(np.sum(np.square(z))) - np.log(2 * np.pi)
    assert f"log p(z) = {want:.2f} nats" in p.log_prior_caption()
    page.wait_for_timeout(500)
    assert len(p.sent) == sent + 1, "one release should be one message to the server"
    assert sum(u.endswith(".wasm") for u in p.requests) == 1  # the rerun refetched nothing
    p.no_errors()
    icon = page.locator('link[rel="shortcut icon"], link[rel="icon"]').first.get_attribute("href")
    assert icon and icon.startswith("data:image/svg+xml"), icon
    p.no_foreign_requests()


def test_the_lens_over_the_map_decodes_live(open_app, app_server):
    p = open_app()
    p.wait_runtime("wasm")
    page = p.page
    sent = len(p.sent)
    mu = np.load(app_server.run / "latents.npz")["mu"]
    lo, hi = mu.min(axis=0), mu.max(axis=0)
    images = []
    for t in np.linspace(0.15, 0.85, 5):
        target = page.evaluate(f"([x, y]) => {API}.clientXY(x, y)",
                               [float(lo[0] + t * (hi[0] - lo[0])),
                                float(lo[1] + t * (hi[1] - lo[1]))])
        n = p.decodes()
        page.mouse.move(target["x"], target["y"], steps=2)
        p.wait_decodes_above(n)
        image, z = p.pixels()
        assert z[0] == pytest.approx(lo[0] + t * (hi[0] - lo[0]), abs=0.02 * (hi[0] - lo[0]))
        images.append(image)
    for a, b in zip(images, images[1:], strict=False):
        assert not np.array_equal(a, b), "the image did not change between lens steps"
    assert len(p.sent) == sent, "the lens talked to the server while moving"
    p.no_errors()


def test_clicking_a_point_selects_that_sample(open_app, app_server):
    p = open_app()
    p.wait_runtime("wasm")
    page = p.page
    n = len(np.load(app_server.run / "latents.npz")["mu"])
    coords = page.evaluate(f"n => Array.from({{length: n}}, (_, i) => {API}.pointXY(i))", n)
    xy = np.array([[c["x"], c["y"]] for c in coords])
    gap = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(gap, np.inf)
    order = [int(i) for i in np.argsort(-gap.min(axis=1)) if int(i) != 0]
    index = order[0]  # the point with the most room around it (not the selected sample 0)
    page.mouse.move(coords[index]["x"], coords[index]["y"])
    page.mouse.click(coords[index]["x"], coords[index]["y"])
    page.get_by_role("tab", name=f"ELBO of sample {index}").wait_for(timeout=WAIT_MS)
    sidebar = page.locator('[data-testid="stSidebar"] input[type="number"]')
    assert sidebar.input_value() == str(index)
    mu = np.load(app_server.run / "latents.npz")["mu"][index]
    page.wait_for_function(f"z => {API}.z.every((v, j) => Math.abs(v - z[j]) < 1e-4)",
                           arg=mu.tolist(), timeout=WAIT_MS)  # z = the new sample's mu
    p.no_errors()


def test_without_webassembly_the_page_says_so_and_decodes_on_the_server(open_app):
    p = open_app(init_script="delete window.WebAssembly;")
    p.wait_runtime("server")
    page = p.page
    notice = page.locator(f"{LENS} .lens-notice")
    assert notice.is_visible() and "WebAssembly" in notice.text_content()
    server_src = page.locator(f"{LENS} img.lens-server-image").get_attribute("src")
    slider = page.locator(f"{LENS} input[aria-label='z1']")
    for _ in range(10):
        slider.press("ArrowRight")
    image = page.locator(f"{LENS} img.lens-server-image")
    for _ in range(WAIT_MS // 250):  # the release reran the lens with the server's new image
        if image.get_attribute("src") != server_src:
            break
        page.wait_for_timeout(250)
    assert image.get_attribute("src") != server_src, "the server's image did not follow"
    assert page.locator(f"{LENS} .lens-notice").count() == 1
    p.no_errors()


def test_training_curves_are_drawn_when_their_tab_opens(open_app):
    """The curves tab is built lazily (``st.tabs(on_change="rerun")``): no chart for it on
    the first page, a chart with all three panels once the tab is clicked, and the ELBO
    panel back intact after returning to its tab."""
    p = open_app()
    page = p.page
    charts = page.locator(CHARTS)
    charts.first.wait_for(timeout=WAIT_MS)  # the KL bars
    assert charts.count() == 1
    page.get_by_role("tab", name="Watch it learn").click()
    page.get_by_text("Nats per sample, per epoch").wait_for(timeout=WAIT_MS)
    charts.nth(2).wait_for(timeout=WAIT_MS)
    film = page.frame_locator(CHARTS).nth(1)  # the training film, then the curves
    film.locator(DRAWN).first.wait_for(timeout=WAIT_MS)
    assert film.get_by_text("latent map").count() >= 1
    assert film.get_by_text("play").count() >= 1  # its play button
    curves = page.frame_locator(CHARTS).nth(2)
    curves.locator(DRAWN).first.wait_for(timeout=WAIT_MS)
    assert curves.get_by_text("−ELBO = recon + KL").count() >= 1  # the third panel's title
    page.get_by_role("tab", name=re.compile(r"ELBO of sample \d+")).click()
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(timeout=WAIT_MS)
    p.no_errors()
