"""The Train page in a real browser (headless Chromium, ``streamlit run``): a visitor's
finished job selects its run, and the message saying so comes while the sidebar shows
that run; a job started while a finished job's panel is on show is followed at once,
with its Cancel button, listed first; Cancel stops it.

The browser matters here: its once-a-second refreshes of the jobs panel may carry the
job selector's old value, which AppTest never sends. The server's jobs run a stand-in
for the trainer (installed by a ``sitecustomize`` on the server's ``PYTHONPATH``): a job
named ``first...`` copies the tiny run into its folder and exits 0 a second later; any
other waits until it is cancelled."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (install Debian's chromium: "
                              f"bash scripts/setup.sh --with-browser)"),
]

TIMEOUT = 90_000
STAND_IN = """\
import os, sys
sys.path.insert(0, os.environ["VAE_TEST_ROOT"])
from explorer import jobs

SCRIPT = (
    "import os, shutil, sys, time\\n"
    "src, dst = sys.argv[1:3]\\n"
    "if not os.path.basename(dst).startswith('first'):\\n"
    "    while True: time.sleep(0.05)\\n"
    "time.sleep(1)\\n"
    "shutil.copytree(src, dst, dirs_exist_ok=True)\\n")


def argv(self, run_dir):
    return [sys.executable, "-c", SCRIPT, os.environ["VAE_TEST_TINY_RUN"], str(run_dir)]


jobs.TrainOptions.argv = argv
"""
SIDEBAR_RUN = '[data-testid="stSidebar"] [data-testid="stSelectbox"] input'


@pytest.fixture
def runs(tmp_path, tiny_run) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    (path / tiny_run.name).symlink_to(tiny_run, target_is_directory=True)
    return path


@pytest.fixture
def server(runs, tmp_path, tiny_run):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(STAND_IN)
    srv = StreamlitServer(env={"VAE_RUNS_DIR": str(runs), "PYTHONPATH": str(shim),
                               "VAE_TEST_TINY_RUN": str(tiny_run),
                               "VAE_TEST_ROOT": str(Path(__file__).resolve().parents[1])},
                          log_path=tmp_path / "app.log", startup_timeout=120)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        # the jobs it launched run in their own process groups: end them too
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if f" {runs}/" in args:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def start(page, name: str, epochs: int) -> None:
    form = page.locator('[data-testid="stForm"]')
    form.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="digits", exact=True).click()
    form.get_by_label("Run name (blank: automatic)", exact=True).fill(name)
    form.get_by_label("Epochs", exact=True).fill(str(epochs))
    page.get_by_role("button", name="Start training").click()


def job_selector(page):
    return page.locator('[data-testid="stSelectbox"]').filter(has_text="Training job") \
        .last.locator("input")


def followed(page) -> str:
    """The job the selector shows (its name, without what follows it)."""
    return job_selector(page).input_value().split(" (")[0]


def expect_followed(page, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while followed(page) != name:
        assert time.monotonic() < deadline, f"the panel shows {followed(page)!r}, not {name!r}"
        page.wait_for_timeout(100)


def test_train_page_follows_each_new_job_and_selects_the_finished_run(server, page, runs):
    page.goto(server.url + "/Train", wait_until="domcontentloaded")
    page.get_by_role("button", name="Start training").wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(1500)
    page.keyboard.press("Escape")  # a "Page not found" notice the first load may show
    old = page.locator(SIDEBAR_RUN).first.input_value()
    assert old.startswith("digits-vae-z2 —")
    start(page, "first", 1)
    expect_followed(page, "first", TIMEOUT / 1000)
    # when it finishes: the message, and the sidebar showing the run it names
    toast = page.locator('[data-testid="stToast"]').filter(has_text="first finished")
    toast.wait_for(timeout=180_000)
    assert "is now the selected run" in toast.inner_text()
    assert page.locator(SIDEBAR_RUN).first.input_value().startswith("first —")
    page.get_by_text(re.compile(r"^finished: \d+ epochs")).first.wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(2500)  # the finished panel is refreshed a few times
    start(page, "second", 40)
    begun = time.monotonic()
    expect_followed(page, "second", 5)
    cancel = page.get_by_role("button", name="Cancel")
    cancel.wait_for(timeout=5_000)
    assert time.monotonic() - begun < 5
    for _ in range(6):  # and it stays on the new job while the panel refreshes
        page.wait_for_timeout(700)
        assert followed(page) == "second"
    job_selector(page).click()
    options = page.get_by_role("option").all_inner_texts()
    assert [o for o in options if re.match(r"^(first|second)", o)] == \
        ["second (yours)", "first (yours)"]
    page.keyboard.press("Escape")
    cancel.click()
    page.get_by_text(re.compile(r"^cancelled")).first.wait_for(timeout=TIMEOUT)
    assert page.get_by_role("button", name="Cancel").count() == 0
    assert page.locator(SIDEBAR_RUN).first.input_value().startswith("first —")
    assert page.locator('[data-testid="stException"]').count() == 0
