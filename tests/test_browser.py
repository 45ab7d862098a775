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
CHARTS = 'iframe[title="app.chart.plotly_chart"]'  # the light plotly.js build's charts
DRAWN = ".js-plotly-plot .main-svg"
# The point of the map to click: the one furthest from any other point or overlay, so
# the click can only mean that sample; its test-set index and its centre in page pixels.
LONELY_POINT_JS = """() => {
  const frame = [...document.querySelectorAll('iframe')].find(
      f => f.title === 'app.chart.plotly_chart');
  const box = frame.getBoundingClientRect();
  const points = [...frame.contentDocument.querySelectorAll('.scatterlayer path.point')]
    .map(el => { const r = el.getBoundingClientRect();
                 return {x: r.x + r.width / 2, y: r.y + r.height / 2, i: el.__data__.i,
                         trace: el.closest('.trace').__data__[0].trace}; });
  let best = null, room = 0;
  for (const p of points) {
    if (p.trace.meta) continue;  // overlays: ring, ellipses, markers
    const gap = Math.min(...points.filter(q => q !== p).map(q => Math.hypot(q.x - p.x, q.y - p.y)));
    if (gap > room) { room = gap; best = p; }
  }
  return best && {index: best.trace.customdata[best.i][0], room: room,
                  x: box.x + best.x, y: box.y + best.y};
}"""


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
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
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
    assert page.frame_locator(CHARTS).first.locator(DRAWN).count() >= 1  # the map
    # the page works offline: every request goes to the app's own server (the tab icon is
    # an inline SVG, not a Material Symbols icon from fonts.gstatic.com)
    icon = page.locator('link[rel="shortcut icon"], link[rel="icon"]').first.get_attribute("href")
    assert icon and icon.startswith("data:image/svg+xml"), icon
    elsewhere = [u for u in urls if not u.startswith((server.url, "data:", "blob:"))]
    assert not elsewhere, elsewhere
    shot = tmp_path / "app-main.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_training_curves_are_drawn_when_their_tab_opens(server, page):
    """The curves tab is built lazily (``st.tabs(on_change="rerun")``): no chart for it on
    the first page, a chart with all three panels once the tab is clicked, and the ELBO
    panel back intact after returning to its tab."""
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator(DECODED).wait_for(state="visible", timeout=60_000)
    charts = page.locator(CHARTS)
    charts.nth(1).wait_for(timeout=30_000)  # the map and the KL bars
    assert charts.count() == 2
    page.get_by_role("tab", name="Training curves").click()
    page.get_by_text("Nats per sample, per epoch").wait_for(timeout=30_000)
    charts.nth(2).wait_for(timeout=30_000)
    curves = page.frame_locator(CHARTS).nth(2)
    curves.locator(DRAWN).first.wait_for(timeout=30_000)
    assert curves.get_by_text("−ELBO = recon + KL").count() >= 1  # the third panel's title
    page.get_by_role("tab", name="ELBO of sample 0").click()
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(timeout=30_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()


def test_clicking_a_point_on_the_map_selects_that_sample(server, page):
    """The map is drawn by the light plotly.js build in an iframe: a click on a point
    travels back to Python, which selects that test sample (ELBO tab, sidebar index) and
    rings it on the map."""
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator(DECODED).wait_for(state="visible", timeout=60_000)
    page.frame_locator(CHARTS).first.locator(".scatterlayer path.point").first.wait_for(
        timeout=30_000)
    page.get_by_role("tab", name="ELBO of sample 0").wait_for(timeout=30_000)
    target = page.evaluate(LONELY_POINT_JS)
    assert target is not None and target["index"] != 0 and target["room"] > 4, target
    page.mouse.move(target["x"], target["y"])
    page.mouse.click(target["x"], target["y"])
    index = int(target["index"])
    page.get_by_role("tab", name=f"ELBO of sample {index}").wait_for(timeout=30_000)
    sidebar = page.locator('[data-testid="stSidebar"] input[type="number"]')
    assert sidebar.input_value() == str(index)
    # the ring overlay moved to the clicked point
    page.wait_for_function(
        """(i) => { const f = [...document.querySelectorAll('iframe')].find(
                        f => f.title === 'app.chart.plotly_chart');
                    const gd = f.contentDocument.getElementById('chart');
                    const ring = gd.data.find(t => t.meta === 'selected');
                    return ring && ring.hovertemplate.includes('sample ' + i); }""",
        arg=index, timeout=30_000)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()
