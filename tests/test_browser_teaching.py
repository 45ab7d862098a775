"""The teaching pages in a real browser: ``streamlit run`` on a free port, headless
Chromium through Playwright. Each test opens one lesson, checks what it shows (numbers,
element counts, images that change when the user acts, real downloads) and saves a
screenshot.

By default the pages run on the tiny digits runs of ``conftest.py`` and screenshots go to
the test's tmp folder. For the README's screenshots, point them at the demo runs:

    python -m training.demo --runs-dir runs
    VAE_TEACHING_RUNS=runs VAE_SCREENSHOT_DIR=docs/screenshots \\
        python -m pytest tests/test_browser_teaching.py -m browser
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer
from tests.conftest import make_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (install Debian's chromium: "
                              f"bash scripts/setup.sh --with-browser)"),
]

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
IMAGES = '[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img'
TIMEOUT = 90_000
DEMO_RUNS = os.environ.get("VAE_TEACHING_RUNS")
SHOT_DIR = os.environ.get("VAE_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request) -> Path:
    """The runs the server shows: the demo runs when VAE_TEACHING_RUNS is set, else the
    tiny digits runs (AE, 2-D VAE, 4-D VAE) plus a beta = 4 run with warm-up."""
    root = tmp_path_factory.mktemp("browser-teach-runs")
    if DEMO_RUNS:
        for run in sorted(Path(DEMO_RUNS).iterdir()):
            if (run / "config.json").is_file():
                (root / run.name).symlink_to(run.resolve(), target_is_directory=True)
        return root
    for name in ("tiny_run", "tiny_ae_run", "tiny_run_z4"):
        run = request.getfixturevalue(name)
        (root / run.name).symlink_to(run, target_is_directory=True)
    make_run(root, "digits-vae-z2-beta4", latent_dim=2, beta=4.0, kl_warmup=2)
    return root


def names(runs: Path) -> dict[str, str]:
    """Which run plays which role, for demo runs and tiny runs alike."""
    if DEMO_RUNS:
        return {"vae": "demo-vae-z2", "ae": "demo-ae-z2", "big": "demo-vae-z16-beta4",
                "dataset": "mnist5k", "big_dim": 16}
    return {"vae": "digits-vae-z2", "ae": "digits-ae-z2", "big": "digits-vae-z4",
            "dataset": "digits", "big_dim": 4}


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    log = tmp_path_factory.mktemp("teach-server") / "streamlit.log"
    srv = StreamlitServer(env={"VAE_RUNS_DIR": str(runs)}, log_path=log,
                          startup_timeout=120)
    srv.start()
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


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900},
                                  accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def open_page(page, server, path: str, run: str | None = None, wait_text: str = "") -> None:
    """Open a page (``/Compare_AE_vs_VAE`` ...), choose ``run`` in the sidebar picker."""
    page.goto(server.url + path, wait_until="domcontentloaded")
    page.locator("h1").first.wait_for(timeout=TIMEOUT)
    if run is not None:
        picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
        picker.wait_for(timeout=TIMEOUT)
        if not picker.locator("input").input_value().startswith(f"{run} —"):
            picker.click()
            page.get_by_role("option", name=re.compile(f"^{re.escape(run)} —")).first.click()
    if wait_text:
        page.get_by_text(wait_text).first.wait_for(timeout=TIMEOUT)
    settle(page)


def settle(page, quiet_ms: int = 600) -> None:
    """Wait until the script run is over (no 'Running…' indicator) for ``quiet_ms``."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !/Running|Stop/.test(document.querySelector('[data-testid=\"stStatusWidget\"]')"
        ".innerText)", timeout=TIMEOUT)
    page.wait_for_timeout(quiet_ms)


def no_errors(page) -> None:
    errors = page.locator(ERRORS)
    assert errors.count() == 0, errors.first.inner_text()


def shot(page, tmp_path: Path, name: str, full_page: bool = False) -> Path:
    """Screenshot to the tmp folder (or VAE_SCREENSHOT_DIR). Streamlit scrolls inside its
    main container, not the document, so ``full_page`` grows the viewport to fit it."""
    folder = Path(SHOT_DIR) if SHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"teaching-{name}.png"
    size = page.viewport_size
    if full_page:
        height = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
            "[data-testid=\"stMainBlockContainer\"]')].map(e => e.scrollHeight), 0)")
        page.set_viewport_size({"width": size["width"], "height": min(4000, max(
            size["height"], int(height) + 40))})
        page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    if full_page:
        page.set_viewport_size(size)
    assert path.stat().st_size > 10_000
    return path


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def image_sources(page) -> list[str]:
    return [img.get_attribute("src") or "" for img in page.locator(IMAGES).all()]


def test_compare_ae_vs_vae(server, page, runs, tmp_path):
    roles = names(runs)
    open_page(page, server, "/Compare_AE_vs_VAE", wait_text="never told where its codes")
    from playwright.sync_api import expect

    charts = page.locator('[data-testid="stPlotlyChart"]')
    # the text arrives before the charts are attached: wait (retrying) for exactly two
    expect(charts).to_have_count(2, timeout=TIMEOUT)
    assert len(image_sources(page)) == 5  # inputs + each run's reconstructions and samples
    expected = {name: verdict_text(runs, name, is_vae)
                for name, is_vae in ((roles["ae"], False), (roles["vae"], True))}
    for verdict in expected.values():  # the right column's box may come a moment later
        page.get_by_text(verdict[:40]).first.wait_for(timeout=TIMEOUT)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert roles["ae"] in text and roles["vae"] in text
    for name, verdict in expected.items():
        assert verdict in squash(text), name  # the words follow the numbers
    no_errors(page)
    shot(page, tmp_path, "1-compare", full_page=True)
    # the big VAE on the right: its box says what its numbers say (for demo-vae-z16-beta4,
    # 30.5 nats and 1% of the codes reached, no longer "the codes fill the prior")
    right = page.locator('[data-testid="stSelectbox"]').filter(has_text="Right run").first
    right.click()
    page.get_by_role("option", name=roles["big"], exact=True).click()
    page.get_by_role("heading", name=roles["big"]).first.wait_for(timeout=TIMEOUT)
    verdict = verdict_text(runs, roles["big"], True)
    page.get_by_text(verdict[:40]).first.wait_for(timeout=TIMEOUT)
    settle(page, 1000)
    text = squash(page.locator('[data-testid="stMain"]').inner_text())
    assert verdict in text
    if DEMO_RUNS:
        assert "30.5" in text and "do not fill" in text
    no_errors(page)


def squash(text: str) -> str:
    """Page text with Markdown emphasis and line breaks gone, for comparing with a verdict."""
    return re.sub(r"\s+", " ", text.replace("**", ""))


def verdict_text(runs: Path, name: str, is_vae: bool) -> str:
    """What explorer.verdicts says about the run's codes (the page must show exactly it)."""
    from explorer.compare import prior_fits
    from explorer.verdicts import compare_verdict
    from training import rundir

    mu = rundir.read_latents(runs / name)["mu"]
    fit, active_fit, n_dead = prior_fits(mu, is_vae)
    return squash(compare_verdict(fit, is_vae, active_fit, n_dead)[1])


def test_reparameterisation_draw_moves_z(server, page, runs, tmp_path):
    open_page(page, server, "/Reparameterisation", run=names(runs)["vae"],
              wait_text="Where z lands")
    decoded_z = page.locator('[data-testid="stImage"], [data-testid="stFullScreenFrame"]') \
        .filter(has_text="decode(z)").locator("img").first
    decoded_z.wait_for(timeout=TIMEOUT)
    before = decoded_z.get_attribute("src")
    page.get_by_role("button", name="Draw a new ε").click()
    page.wait_for_function(
        "old => [...document.querySelectorAll('img')].every(i => i.getAttribute('src') !== old)",
        arg=before, timeout=TIMEOUT)
    settle(page)
    assert page.get_by_text("ε #1").count() >= 1
    no_errors(page)
    shot(page, tmp_path, "2-reparameterisation", full_page=True)


def test_elbo_vs_iwae(server, page, runs, tmp_path):
    open_page(page, server, "/ELBO_vs_log_p", run=names(runs)["vae"],
              wait_text="Averaged over the first")
    page.locator('[data-testid="stMetric"]').filter(has_text="mean gap").wait_for(
        timeout=TIMEOUT)
    settle(page, 1000)
    elbo = float(metric_value(page, "mean ELBO").split()[0])
    iwae = float(metric_value(page, "mean IWAE").split()[0])
    assert iwae > elbo
    assert float(metric_value(page, "gap IWAE").split()[0]) >= 0
    assert "not a normalised density" in page.locator('[data-testid="stMain"]').inner_text()
    no_errors(page)
    shot(page, tmp_path, "3-elbo-vs-iwae", full_page=True)


def test_latent_health_and_summary_download(server, page, runs, tmp_path):
    open_page(page, server, "/Latent_health", run=names(runs)["big"], wait_text="Active units")
    page.get_by_role("button", name="Run summary (JSON)").wait_for(timeout=TIMEOUT)
    settle(page)
    active = metric_value(page, "Active units")
    no_errors(page)
    shot(page, tmp_path, "4-latent-health", full_page=True)
    with page.expect_download(timeout=TIMEOUT) as info:
        page.get_by_role("button", name="Run summary (JSON)").click()
    summary = json.loads(Path(info.value.path()).read_text())
    assert f"{summary['active_units']} / {summary['config']['latent_dim']}" == active
    assert summary["iwae"]["log_px_iwae_mean"] >= summary["iwae"]["elbo_mean"]
    assert summary["run"] == names(runs)["big"]
    # any figure downloads as a real PNG for a slide (kaleido + Chromium in the server):
    # white, every label inside the picture, the legend saying what the colours mean
    from tests.test_exports import colour, frame_is_background, ink, pixels

    for attempt in range(2):  # the first click may still wait for Chromium to start
        started = time.perf_counter()
        with page.expect_download(timeout=TIMEOUT) as info:
            page.locator(".st-key-dl_health_png button").first.click()  # not the toolbar
        png = Path(info.value.path()).read_bytes()
        print(f"PNG download {attempt + 1}: {time.perf_counter() - started:.2f} s")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = pixels(png)
    h, w, _ = img.shape
    assert frame_is_background(img) and ink(img[: h // 12]) and colour(img[:, int(0.8 * w):])


def test_beta_and_warmup(server, page, runs, tmp_path):
    open_page(page, server, "/Beta_and_warmup", wait_text="Training curves: the warm-up")
    page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for(timeout=TIMEOUT)
    settle(page, 1000)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "β=4" in text or "beta4" in text
    no_errors(page)
    shot(page, tmp_path, "5-beta-warmup", full_page=True)


def test_generation_views(server, page, runs, tmp_path):
    open_page(page, server, "/Generation", run=names(runs)["vae"], wait_text="Prior samples")
    page.locator(IMAGES).first.wait_for(timeout=TIMEOUT)  # the tab's text comes first
    page.get_by_text("decoded draws z ~ N(0, I)").first.wait_for(timeout=TIMEOUT)
    before = image_sources(page)
    page.get_by_role("button", name="New samples").click()
    page.wait_for_function(
        "old => { const img = document.querySelector('[data-testid=\"stImage\"] img,"
        " [data-testid=\"stFullScreenFrame\"] img'); return img && img.src && "
        "img.getAttribute('src') !== old; }", arg=before[0], timeout=TIMEOUT)
    settle(page)
    shot(page, tmp_path, "6a-prior-samples")
    page.get_by_role("tab", name="Manifold").click()
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(1500)
    layout_images = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".map(g => ((g.layout || {}).images || []).length)")
    assert max(layout_images) == 1  # the decoded grid, drawn under the latent map
    shot(page, tmp_path, "6b-manifold")
    page.get_by_role("tab", name="Interpolation").click()
    page.get_by_text("Top: linear").first.wait_for(timeout=TIMEOUT)
    shot(page, tmp_path, "6c-interpolation")
    no_errors(page)


def test_traversals_of_every_dimension(server, page, runs, tmp_path):
    big = names(runs)["big"]
    open_page(page, server, "/Generation", run=big, wait_text="Prior samples")
    page.get_by_role("tab", name="Traversals").click()
    page.get_by_text("labelled with its dimension").first.wait_for(timeout=TIMEOUT)
    grid = page.locator('[data-testid="stTabPanel"]:visible img').first
    grid.wait_for(timeout=TIMEOUT)
    before = grid.get_attribute("src")
    rows = page.locator('[data-testid="stSlider"]').filter(has_text="Dimensions (rows)") \
        .get_by_role("slider")
    latent_dim = names(runs)["big_dim"]
    rows.focus()
    rows.press("Home")  # one row ...
    page.wait_for_function(
        "old => { const i = [...document.querySelectorAll('[data-testid=\"stTabPanel\"] img')]"
        ".find(e => e.offsetParent); return i && i.getAttribute('src') !== old; }",
        arg=before, timeout=TIMEOUT)
    settle(page)
    before = page.locator('[data-testid="stTabPanel"]:visible img').first.get_attribute("src")
    rows.press("End")  # ... then every latent dimension, one row each
    page.wait_for_function(
        "old => { const i = [...document.querySelectorAll('[data-testid=\"stTabPanel\"] img')]"
        ".find(e => e.offsetParent); return i && i.getAttribute('src') !== old; }",
        arg=before, timeout=TIMEOUT)
    settle(page)
    value = page.locator('[data-testid="stSlider"]').filter(has_text="Dimensions (rows)") \
        .locator('[data-testid="stSliderThumbValue"]').inner_text()
    assert value.strip() == str(latent_dim)
    no_errors(page)
    shot(page, tmp_path, "6d-traversals", full_page=True)


TRUNCATED = """() => [...document.querySelectorAll(
    '[data-testid="stMain"] button, [data-testid="stMetricLabel"], [data-testid="stMetricValue"]')]
    .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText.trim())"""
LESSONS = [("/Compare_AE_vs_VAE", None, "1-compare"),
           ("/Reparameterisation", "vae", "2-reparameterisation"),
           ("/ELBO_vs_log_p", "vae", "3-elbo-vs-iwae"),
           ("/Latent_health", "big", "4-latent-health"),
           ("/Beta_and_warmup", None, "5-beta-warmup"), ("/Generation", "big", "6-generation")]


@pytest.mark.parametrize("path,role,name", LESSONS, ids=[n for *_, n in LESSONS])
def test_a_projector_shows_every_label_whole(server, browser, runs, tmp_path, path, role,
                                             name):
    """At 1024x768 (a projector), no button, metric label or value is cut to "Pr..."."""
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        page = context.new_page()
        open_page(page, server, path, run=names(runs)[role] if role else None)
        page.locator('[data-testid="stMain"] button').first.wait_for(timeout=TIMEOUT)
        settle(page, 1500)
        assert page.evaluate(TRUNCATED) == []
        no_errors(page)
        if name in ("1-compare", "2-reparameterisation"):
            shot(page, tmp_path, f"{name}-1024", full_page=True)
    finally:
        context.close()


def test_train_from_the_app(server, page, runs, tmp_path):
    roles = names(runs)
    open_page(page, server, "/Train", wait_text="Start training")
    form = page.locator('[data-testid="stForm"]')
    form.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=roles["dataset"], exact=True).click()
    name = "browser-trained" if not DEMO_RUNS else "mnist5k-vae-z2-b2"
    form.get_by_label("Run name (blank: automatic)", exact=True).fill(name)
    epochs = form.get_by_label("Epochs", exact=True)
    epochs.fill("3" if not DEMO_RUNS else "12")
    if DEMO_RUNS:
        form.get_by_label("β (KL weight)", exact=True).fill("2")
        form.get_by_label("KL warm-up (epochs)", exact=True).fill("4")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(f"Started {name}").first.wait_for(timeout=TIMEOUT)
    bar = page.locator('[data-testid="stProgress"]').first
    bar.wait_for(timeout=TIMEOUT)
    if DEMO_RUNS:  # a screenshot mid-training, with live curves
        page.get_by_text("Epoch 3:").first.wait_for(timeout=300_000)
        page.wait_for_timeout(1200)
        shot(page, tmp_path, "7-train", full_page=True)
    page.get_by_text("finished:").first.wait_for(timeout=300_000)
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    no_errors(page)
    if not DEMO_RUNS:
        shot(page, tmp_path, "7-train", full_page=True)
    page.get_by_role("button", name="Open in the explorer").click()
    page.wait_for_url(lambda url: "Train" not in url, timeout=TIMEOUT)
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    from playwright.sync_api import expect

    # the new run is now the selected one
    expect(picker.locator("input")).to_have_value(re.compile(f"^{re.escape(name)} —"),
                                                  timeout=TIMEOUT)
    assert (runs / name / "config.json").is_file()  # in the served folder, not DEMO_RUNS
