"""The explorer in a real browser: ``streamlit run`` on a free port, driven by headless
Chromium through Playwright. Loads the page, drags slider z0 with the keyboard, checks the
decoded image changes and that no exception or error box appears, saves a screenshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (install Debian's chromium: "
                              f"bash scripts/setup.sh --with-browser)"),
]

DECODED = 'img[alt="decoded image"]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


@pytest.fixture
def server(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    srv = StreamlitServer(env={"VAE_RUNS_DIR": str(runs)}, log_path=tmp_path / "streamlit.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def test_page_loads_slider_drag_changes_image(server, page, tmp_path):
    page.goto(server.url, wait_until="domcontentloaded")
    image = page.locator(DECODED)
    image.wait_for(state="visible", timeout=60_000)
    page.get_by_text("Latent map").first.wait_for(timeout=30_000)
    before = image.get_attribute("src")
    assert before and before.startswith("data:image/png;base64,")

    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').first  # z0
    value_before = float(thumb.evaluate("e => e.value"))
    thumb.focus()
    for _ in range(30):  # 30 steps of 0.01 to the right: z0 += 0.3
        thumb.press("ArrowRight")
    page.wait_for_function(
        "([sel, old]) => { const img = document.querySelector(sel);"
        " return img && img.getAttribute('src') !== old; }",
        arg=[DECODED, before], timeout=30_000)
    after = page.locator(DECODED).get_attribute("src")
    assert after != before
    assert float(thumb.evaluate("e => e.value")) > value_before

    # the rest of the page is intact and there is no error anywhere
    page.wait_for_timeout(500)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    shot = tmp_path / "app-main.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_training_curves_are_drawn_when_their_tab_opens(server, page):
    """The curves tab is built lazily (``st.tabs(on_change="rerun")``): no chart for it on
    the first page, a chart with all three panels once the tab is clicked, and the ELBO
    panel back intact after returning to its tab."""
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator(DECODED).wait_for(state="visible", timeout=60_000)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).wait_for(timeout=30_000)  # the map and the KL bars
    assert charts.count() == 2
    page.get_by_role("tab", name="Training curves").click()
    page.get_by_text("Nats per sample, per epoch").wait_for(timeout=30_000)
    charts.nth(2).wait_for(timeout=30_000)
    curves = charts.nth(2).locator(".js-plotly-plot .main-svg").first
    curves.wait_for(timeout=30_000)
    assert page.get_by_text("−ELBO = recon + KL").count() >= 1  # the third panel's title
    page.get_by_role("tab", name="ELBO of sample 0").click()
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(timeout=30_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()
