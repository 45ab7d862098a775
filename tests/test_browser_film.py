"""Watch it learn, in a real browser: train a 6-epoch run from the Train page, open it on
the main page, and scrub the training film with the mouse: the map's points move between
epoch 1 and epoch 6, and the frame shown is the stored ``frames/epoch-NNNN.npy`` of that
epoch (point by point, through each point's row index)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent"),
]
WAIT_MS = 90_000
RUN = "film-run"
FILM = ".st-key-film iframe"


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("film")
    runs = tmp / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    srv = StreamlitServer(env={"VAE_RUNS_DIR": str(runs)}, log_path=tmp / "streamlit.log",
                          startup_timeout=120)
    srv.start()
    srv.runs = runs
    try:
        yield srv
    finally:
        srv.stop()


def shown_frame(frame) -> tuple[str, np.ndarray, np.ndarray]:
    """(the slider's epoch label, the rows shown, their (x, y)) as the browser has them."""
    data = frame.evaluate("""() => {
        const gd = document.querySelector('.js-plotly-plot');
        const traces = gd.data.filter(t => t.customdata);
        const slider = gd._fullLayout.sliders[0];
        return {epoch: slider.steps[slider.active].label,
                rows: traces.flatMap(t => Array.from(t.customdata)),
                x: traces.flatMap(t => Array.from(t.x)), y: traces.flatMap(t => Array.from(t.y))};
    }""")
    assert len(data["rows"]) == len(data["x"]) > 0, "the film shows no points"
    return (data["epoch"], np.asarray(data["rows"], int),
            np.stack([data["x"], data["y"]], axis=1).astype(np.float32))


def click_slider(frame, page, fraction: float) -> None:
    """A real mouse click on the film's epoch slider, ``fraction`` of the way along it."""
    box = frame.locator(".slider-rail-rect").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 4 + fraction * (box["width"] - 8), box["y"] + box["height"] / 2)
    page.wait_for_timeout(600)


def test_train_from_the_app_then_scrub_the_film(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # 1. train 6 epochs from the Train page, the fresh server's first page: no "Page not
        # found" dialog (a stale pages/ folder beside streamlit_app.py once caused one)
        page.goto(server.url + "/Train", wait_until="domcontentloaded")
        page.get_by_role("button", name="Start training").wait_for(timeout=WAIT_MS)
        assert page.get_by_text("Page not found").count() == 0
        form = page.locator('[data-testid="stForm"]')
        form.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="digits", exact=True).click()
        form.get_by_label("Run name (blank: automatic)", exact=True).fill(RUN)
        form.get_by_label("Epochs", exact=True).fill("6")
        page.get_by_role("button", name="Start training").click()
        config = server.runs / RUN / "config.json"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if json.loads(config.read_text())["status"] == "complete":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        else:
            pytest.fail("the run trained from the Train page did not complete in 300 s")
        stored = {e: np.load(server.runs / RUN / "frames" / f"epoch-{e:04d}.npy")
                  .astype(np.float32) for e in range(1, 7)}

        # 2. open it on the main page, the film's tab
        page.goto(f"{server.url}/?run={RUN}", wait_until="domcontentloaded")
        page.get_by_role("tab", name="Watch it learn").click(timeout=WAIT_MS)
        page.locator(FILM).wait_for(timeout=WAIT_MS)
        frame = page.frame_locator(FILM).first.locator("body").element_handle().owner_frame()
        frame.wait_for_selector(".slider-rail-rect", timeout=WAIT_MS)
        page.locator(FILM).scroll_into_view_if_needed()
        epoch, rows, xy = shown_frame(frame)
        assert epoch == "6"  # it opens on the final epoch
        np.testing.assert_allclose(xy, stored[6][rows], rtol=1e-3, atol=1e-4)

        # 3. scrub to epoch 1 with the mouse, then back to epoch 6
        click_slider(frame, page, 0.0)
        epoch, rows1, xy1 = shown_frame(frame)
        assert epoch == "1"
        np.testing.assert_allclose(xy1, stored[1][rows1], rtol=1e-3, atol=1e-4)
        click_slider(frame, page, 1.0)
        epoch, rows6, xy6 = shown_frame(frame)
        assert epoch == "6"
        np.testing.assert_allclose(xy6, stored[6][rows6], rtol=1e-3, atol=1e-4)
        assert np.array_equal(np.sort(rows1), np.sort(rows6))
        moved = np.abs(xy6[np.argsort(rows6)] - xy1[np.argsort(rows1)]).mean()
        assert moved > 0.01, f"the points did not move between epoch 1 and 6 ({moved})"
        errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        assert errors.count() == 0
        browser.close()
