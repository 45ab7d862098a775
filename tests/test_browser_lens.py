"""The latent lens in headless Chromium: ``tests/lens_demo_app.py`` (served by
:class:`explorer.server.StreamlitServer`) on the 2-D digits VAE of ``conftest.tiny_run``,
its decoder exported to ONNX.

Checked: a slider held down and moved re-decodes the image at every step in the browser
with no rerun on the server; the lens over the map does the same; the browser's pixels
equal ONNX Runtime's (Python) for the same z within 1/255; a release sends one value to
Python; a click selects a point (and Python's z for it is adopted); Python setting z is
adopted; without WebAssembly the component says so once and a release still updates the
server's image; the t-SNE lens of a 4-D model; the decoder is fetched once per page; no
request leaves the app's server. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
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

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# --------------------------------------------------------------------------- fixtures

def decoder_onnx(run: Path, out_dir: Path) -> Path:
    """The run's decoder.onnx if the trainer wrote one, else an export of its decoder."""
    if (run / "decoder.onnx").is_file():
        return run / "decoder.onnx"
    import torch

    from training.rundir import load_run

    loaded = load_run(run)
    dim = loaded.model.latent_dim
    path = out_dir / f"{run.name}-decoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            loaded.model.decoder, (torch.zeros(2, dim),), dynamo=True, input_names=["z"],
            output_names=["logits"], dynamic_shapes={"z": {0: torch.export.Dim("batch")}})
    program.save(str(path))
    return path


class Demo:
    """A running lens_demo_app.py and what a test needs to check it."""

    def __init__(self, run: Path, decoder: Path, tmp: Path):
        import onnxruntime as ort

        from training.rundir import read_latents

        self.run, self.decoder = run, decoder
        self.reruns_file = tmp / "reruns.txt"
        self.reruns_file.touch()
        self.mu = read_latents(run)["mu"].astype(np.float32)
        self.session = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
        self.server = StreamlitServer(
            "tests/lens_demo_app.py", log_path=tmp / "streamlit.log",
            env={"LENS_DEMO_RUN": str(run), "LENS_DEMO_DECODER": str(decoder),
                 "LENS_DEMO_RERUNS": str(self.reruns_file)})

    def reruns(self) -> int:
        return len(self.reruns_file.read_text().splitlines())

    def expected_pixels(self, z) -> np.ndarray:
        """(H, W, C) uint8 as Python decodes z: sigmoid of ONNX Runtime's logits, rounded."""
        logits = self.session.run(None, {self.session.get_inputs()[0].name:
                                         np.asarray([z], dtype=np.float32)})[0][0]
        return np.moveaxis(np.round(1 / (1 + np.exp(-logits.astype(np.float64))) * 255), 0, -1)


@pytest.fixture(scope="module")
def demo(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lens")
    d = Demo(tiny_run, decoder_onnx(tiny_run, tmp), tmp)
    d.server.start()
    try:
        yield d
    finally:
        d.server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A fresh browser context on the demo (a new Streamlit session), recording requests."""

    def __init__(self, browser, demo: Demo, query: str = "", width: int = 1440,
                 height: int = 900, init_script: str | None = None):
        self.demo = demo
        self.context = browser.new_context(viewport={"width": width, "height": height})
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(demo.server.url + "/" + query, wait_until="domcontentloaded")
        try:
            self.page.locator(LENS).wait_for(timeout=WAIT_MS)
            self.page.get_by_text("script runs: 1").wait_for(timeout=WAIT_MS)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            self.page.screenshot(path=ARTIFACTS / "lens_failed_to_load.png")
            raise

    def wait_runtime(self, runtime: str) -> None:
        self.page.wait_for_function(f"() => {API} && {API}.runtime === {json.dumps(runtime)}"
                                    + (f" && {API}.decodes > 0" if runtime == "wasm" else ""),
                                    timeout=WAIT_MS)

    def decodes(self) -> int:
        return lens_driver.decodes(self.page)

    def wait_decodes_above(self, n: int) -> None:
        """Wait until the browser decoded again and no decode is pending."""
        lens_driver.wait_decodes_above(self.page, n)

    def pixels(self) -> tuple[np.ndarray, list[float]]:
        """The decoded canvas as (H, W, 3) and the z it shows (data-decoded-z)."""
        return lens_driver.pixels(self.page)

    def check_pixels_match_python(self) -> np.ndarray:
        image, z = self.pixels()
        want = self.demo.expected_pixels(z)
        channels = want.shape[-1]
        got = image if channels == 3 else image[..., :1]
        assert np.abs(got - want).max() <= 1, f"browser and ONNX Runtime differ at z={z}"
        return image

    def received(self) -> dict | None:
        text = self.page.get_by_text("received:").first.text_content()
        return json.loads(text.split("received:", 1)[1])

    def wait_received(self, event: int) -> dict:
        self.page.wait_for_function(
            "n => [...document.querySelectorAll('[data-testid=\"stText\"]')].some(e => "
            "e.textContent.startsWith('received: {') && "
            "JSON.parse(e.textContent.slice(10)).event >= n)", arg=event, timeout=WAIT_MS)
        return self.received()

    def slider_thumb(self, dim: int) -> tuple[float, float, float]:
        """(x, y) of slider z<dim>'s thumb and the slider's width, in viewport pixels."""
        return lens_driver.slider_thumb(self.page, dim)

    def no_foreign_requests(self) -> None:
        foreign = [u for u in self.requests
                   if not u.startswith((self.demo.server.url + "/", "data:", "blob:"))]
        assert not foreign, f"requests left the app's server: {foreign}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser, demo):
    pages: list[Page] = []

    def _open(**kwargs) -> Page:
        pages.append(Page(browser, demo, **kwargs))
        return pages[-1]

    yield _open
    for p in pages:
        p.close()


# --------------------------------------------------------------------------- tests

def test_slider_drag_decodes_in_the_browser_without_reruns_then_release_sends_once(
        open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    page = p.page
    assert p.received() is None
    first = p.check_pixels_match_python()  # the first browser decode, before any input
    runs = demo.reruns()
    x, y, width = p.slider_thumb(0)
    page.mouse.move(x, y)
    page.mouse.down()
    images = [first]
    seen_z = set()
    for step in range(1, 7):
        n = p.decodes()
        page.mouse.move(x + step * width / 16, y, steps=2)  # 6 steps stay on the track
        p.wait_decodes_above(n)  # decoded while the button is still down
        image = p.check_pixels_match_python()
        assert not np.array_equal(image, images[-1]), f"step {step}: the image did not change"
        images.append(image)
        seen_z.add(round(p.pixels()[1][0], 4))
    assert len(seen_z) == 6
    assert demo.reruns() == runs, "the server reran during the drag"
    assert p.received() is None
    label = page.locator(f"{LENS} .lens-slider-value").first.text_content()
    page.mouse.up()
    value = p.wait_received(1)
    z = page.evaluate(f"() => {API}.z")
    assert value["source"] == "slider" and value["event"] == 1 and value["selected"] is None
    assert value["z"] == pytest.approx(z)
    assert f"{z[0]:.2f}" == label
    page.get_by_text("script runs: 2").wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(500)  # let anything else arrive: there must be nothing else
    assert demo.reruns() == runs + 1, "one release should make exactly one rerun"
    assert p.received()["event"] == 1
    # the rerun did not refetch the model: one decoder download, one wasm download per page
    assert sum(u.endswith("/lens-demo/decoder.onnx") for u in p.requests) == 1
    assert sum(u.endswith(".wasm") for u in p.requests) == 1
    assert page.locator(f"{LENS} .lens-status").text_content() == "Decoded in your browser (wasm)"
    assert not p.errors
    p.no_foreign_requests()


def test_keyboard_arrows_move_a_slider_and_a_burst_is_one_message(open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    runs = demo.reruns()
    slider = p.page.locator(f"{LENS} input[aria-label='z1']")
    before = p.decodes()
    for _ in range(5):
        slider.press("ArrowRight")  # one input + one change event each, well within 150 ms
    value = p.wait_received(1)
    assert value["source"] == "slider" and value["event"] == 1
    assert p.decodes() > before
    p.check_pixels_match_python()
    p.page.wait_for_timeout(500)
    assert demo.reruns() == runs + 1
    assert p.received()["event"] == 1


def test_lens_over_the_map_decodes_live_and_leaving_sends_once(open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    page = p.page
    runs = demo.reruns()
    box = page.locator(f"{LENS} canvas.lens-map-overlay").bounding_box()
    mu = demo.mu
    lo, hi = mu.min(axis=0), mu.max(axis=0)
    images, zs = [], []
    for t in np.linspace(0.1, 0.9, 6):  # a diagonal across the data
        target = page.evaluate(f"([x, y]) => {API}.clientXY(x, y)",
                               [float(lo[0] + t * (hi[0] - lo[0])),
                                float(lo[1] + t * (hi[1] - lo[1]))])
        n = p.decodes()
        page.mouse.move(target["x"], target["y"], steps=2)
        p.wait_decodes_above(n)
        images.append(p.check_pixels_match_python())
        zs.append(page.evaluate(f"() => {API}.z"))
        # raw 2-D axes: z is the point under the pointer
        assert zs[-1][0] == pytest.approx(lo[0] + t * (hi[0] - lo[0]), abs=0.02 * (hi[0] - lo[0]))
    for a, b in zip(images, images[1:], strict=False):
        assert not np.array_equal(a, b), "the image did not change between lens steps"
    assert demo.reruns() == runs and p.received() is None
    assert page.locator(f"{LENS} .lens-slider-value").first.text_content() == f"{zs[-1][0]:.2f}"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] + 150)  # leave
    value = p.wait_received(1)
    assert value["source"] == "lens" and value["z"] == pytest.approx(zs[-1])
    p.page.wait_for_timeout(500)
    assert demo.reruns() == runs + 1
    p.no_foreign_requests()


def _lonely_point(p: Page) -> tuple[int, dict, int, dict]:
    """The two map points furthest (on screen) from every other point, and where they are."""
    coords = p.page.evaluate(
        f"n => Array.from({{length: n}}, (_, i) => {API}.pointXY(i))", len(p.demo.mu))
    xy = np.array([[c["x"], c["y"]] for c in coords])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    gap = d.min(axis=1)
    order = np.argsort(-gap)
    return int(order[0]), coords[int(order[0])], int(order[1]), coords[int(order[1])]


def test_click_selects_a_point_and_python_sets_its_mu(open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    page = p.page
    i, at, j, at_j = _lonely_point(p)
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator(f"{LENS} .lens-tooltip")
    tooltip.wait_for(state="visible", timeout=WAIT_MS)
    assert f"#{i}" in tooltip.text_content() and "nats" in tooltip.text_content()
    page.mouse.click(at["x"], at["y"])
    value = p.wait_received(1)
    assert value["source"] == "click" and value["selected"] == i
    page.get_by_text(f"selected: {i}").wait_for(timeout=WAIT_MS)
    # Python answered with z = mu_i and a bumped z_version: the component adopts it
    page.wait_for_function(f"z => {API}.z.every((v, d) => Math.abs(v - z[d]) < 1e-5)",
                           arg=[float(v) for v in demo.mu[i]], timeout=WAIT_MS)
    assert page.evaluate(f"() => {API}.selected") == i
    p.wait_decodes_above(0)
    page.wait_for_function(f"z => JSON.parse({API}.root.dataset.decodedZ || '[]')"
                           f".every((v, k) => Math.abs(v - z[k]) < 1e-5)",
                           arg=[float(v) for v in demo.mu[i]], timeout=WAIT_MS)
    p.check_pixels_match_python()
    # a click on another point: only that one is selected now
    page.mouse.move(at_j["x"], at_j["y"])
    page.mouse.click(at_j["x"], at_j["y"])
    page.get_by_text(f"selected: {j}").wait_for(timeout=WAIT_MS)
    assert page.evaluate(f"() => {API}.selected") == j
    assert p.received()["selected"] == j
    p.no_foreign_requests()


def test_python_setting_z_is_adopted(open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    x, y, width = p.slider_thumb(0)
    p.page.mouse.move(x, y)
    p.page.mouse.down()
    p.page.mouse.move(x + width / 4, y, steps=3)
    p.page.mouse.up()
    p.wait_received(1)
    assert p.page.evaluate(f"() => {API}.z")[0] != 0
    n = p.decodes()
    p.page.get_by_role("button", name="Python sets z = 0").click()
    p.page.wait_for_function(f"() => {API}.z.every(v => v === 0)", timeout=WAIT_MS)
    p.wait_decodes_above(n)
    image, z = p.pixels()
    assert z == [0, 0]
    p.check_pixels_match_python()


def test_inline_model_decodes_like_the_served_one(open_page, demo):
    p = open_page(query="?inline=1")
    p.wait_runtime("wasm")
    p.check_pixels_match_python()
    assert not any(u.endswith("/lens-demo/decoder.onnx") for u in p.requests)
    p.no_foreign_requests()


def _png_pixels(src: str) -> np.ndarray:
    from PIL import Image

    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_without_webassembly_it_says_so_once_and_release_updates_the_server_image(
        open_page, demo):
    p = open_page(init_script="delete window.WebAssembly;")
    p.wait_runtime("server")
    page = p.page
    notice = page.locator(f"{LENS} .lens-notice")
    assert notice.is_visible()
    assert "Live decoding is off" in notice.text_content()
    assert "WebAssembly" in notice.text_content()
    assert page.locator(f"{LENS} .lens-status").text_content() == "Decoded on the server"
    server_image = page.locator(f"{LENS} img.lens-server-image")
    assert server_image.is_visible()
    assert not page.locator(f"{LENS} canvas.lens-image").is_visible()
    before = server_image.get_attribute("src")
    x, y, width = p.slider_thumb(0)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + width / 3, y, steps=4)
    page.mouse.up()
    value = p.wait_received(1)
    page.wait_for_function(
        f"before => {API}.root.querySelector('img.lens-server-image').src !== before",
        arg=before, timeout=WAIT_MS)
    after = server_image.get_attribute("src")
    want = demo.expected_pixels(value["z"])
    assert np.abs(_png_pixels(after)[..., :want.shape[-1]] - want).max() <= 1
    assert p.decodes() == 0
    assert page.locator(f"{LENS} .lens-notice").count() == 1
    assert notice.text_content().count("Live decoding is off") == 1
    assert not any(u.endswith(".wasm") or u.endswith("decoder.onnx") for u in p.requests)
    p.no_foreign_requests()


@pytest.fixture(scope="module")
def demo_z4(tiny_run_z4, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lens_z4")
    d = Demo(tiny_run_z4, decoder_onnx(tiny_run_z4, tmp), tmp)
    d.server.start()
    try:
        yield d
    finally:
        d.server.stop()


def test_tsne_lens_decodes_neighbour_means_live(browser, demo_z4):
    p = Page(browser, demo_z4, query="?projection=tsne")
    try:
        p.wait_runtime("wasm")
        page = p.page
        caption = page.locator(f"{LENS} .lens-caption").text_content()
        assert "t-SNE has no inverse" in caption and "10 nearest" in caption
        runs = demo_z4.reruns()
        i, at, j, at_j = _lonely_point(p)
        images = []
        for target in (at, at_j):
            n = p.decodes()
            page.mouse.move(target["x"], target["y"], steps=3)
            p.wait_decodes_above(n)
            images.append(p.check_pixels_match_python())
        assert not np.array_equal(images[0], images[1])
        assert demo_z4.reruns() == runs
        assert page.locator(f"{LENS} .lens-slider").count() == 4
        p.no_foreign_requests()
    finally:
        p.close()


@pytest.mark.parametrize("width, height", [(1440, 900), (1024, 768)])
def test_screenshots(open_page, demo, width, height):
    p = open_page(width=width, height=height)
    p.wait_runtime("wasm")
    i, at, _, _ = _lonely_point(p)
    p.page.mouse.move(at["x"], at["y"])
    p.page.locator(f"{LENS} .lens-tooltip").wait_for(state="visible", timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    p.page.screenshot(path=ARTIFACTS / f"lens_{width}x{height}.png")
    box = p.page.locator(LENS).bounding_box()
    assert box["width"] <= width and box["height"] > 300
    side = p.page.locator(f"{LENS} .lens-image-frame").bounding_box()
    assert side["x"] + side["width"] <= width  # the image is on screen, not cut off
    p.no_foreign_requests()


def test_a_decoder_that_does_not_match_its_sha256_falls_back_to_the_server(open_page, demo):
    p = open_page(query="?badsha=1")
    p.wait_runtime("server")
    notice = p.page.locator(f"{LENS} .lens-notice")
    assert "does not match its SHA-256" in notice.text_content()
    assert p.page.locator(f"{LENS} img.lens-server-image").is_visible()
    assert p.decodes() == 0
    p.no_foreign_requests()


def test_with_the_lens_off_hover_only_shows_and_the_marker_can_be_dragged(open_page, demo):
    p = open_page()
    p.wait_runtime("wasm")
    page = p.page
    page.locator(f"{LENS} .lens-toggle input").uncheck()
    runs = demo.reruns()
    i, at, j, at_j = _lonely_point(p)
    n = p.decodes()
    page.mouse.move(at["x"], at["y"], steps=4)  # hover: a tooltip, no decode
    page.locator(f"{LENS} .lens-tooltip").wait_for(state="visible", timeout=WAIT_MS)
    assert p.decodes() == n and page.evaluate(f"() => {API}.z") == [0, 0]
    marker = page.evaluate(f"() => {API}.markerXY()")
    page.mouse.move(marker["x"], marker["y"])
    page.mouse.down()
    images = [p.pixels()[0]]
    for step in range(1, 4):
        n = p.decodes()
        page.mouse.move(marker["x"] - 25 * step, marker["y"] + 15 * step, steps=2)
        p.wait_decodes_above(n)
        images.append(p.check_pixels_match_python())
        assert not np.array_equal(images[-1], images[-2])
    assert demo.reruns() == runs and p.received() is None
    z = page.evaluate(f"() => {API}.z")
    page.mouse.up()
    value = p.wait_received(1)
    assert value["source"] == "lens" and value["z"] == pytest.approx(z)
