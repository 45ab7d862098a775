"""Group 8: many users at once. A freshly started ``streamlit run`` server on 127.0.0.1
(its start-up warm-up still loading the run) gets 20 concurrent sessions over real
websockets (``st_client.py`` speaks the browser's protobuf protocol), whose first runs
overlap. Each session selects its own test point (half by
clicking it on the latent lens's map, half by its index) and releases slider z0 at its own
value (the lens's one message per release, which reruns its fragment).
Checked: no exception or error box in any run of any session; each session shows its own
selection and its own z (the "log p(z)" caption, computed here independently); the model
was loaded exactly once for all of them and the warm-up (``load_counter.py`` logs every
load inside the server); the server log has no traceback.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from faultkit import REPO
from st_client import RunResult, Session

from explorer.server import StreamlitServer
from training import rundir

pytestmark = pytest.mark.slow

SESSIONS = int(os.environ.get("VAE_FAULT_SESSIONS", "20"))
SAMPLE_LABEL = "Selected test sample (index)"


@pytest.fixture
def server(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import load_counter\nload_counter.install()\n")
    loads = tmp_path / "loads.log"
    env = {"VAE_RUNS_DIR": str(runs), "VAE_FAULT_LOAD_LOG": str(loads),
           "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parent), str(REPO)])}
    srv = StreamlitServer(env=env, log_path=tmp_path / "streamlit.log", startup_timeout=120)
    srv.start()
    srv.loads = loads
    srv.run_dir = runs / tiny_run.name
    try:
        yield srv
    finally:
        srv.stop()


def log_prior(run: RunResult) -> float:
    text = " ".join(h for h in run.markdown() + run.html() if "log p(z) =" in h)
    match = re.search(r"log p\(z\) = (-?[0-9.]+) nats", text)
    assert match, "the decode panel's log p(z) caption is missing"
    return float(match.group(1))


def selected_sample(run: RunResult) -> int:
    titles = [m for m in run.markdown() if m.startswith("**Test sample ")]
    assert len(titles) == 1, titles
    return int(titles[0].split()[2])


async def one_user(port: int, sample: int, where: float, click: bool
                   ) -> tuple[float, list[RunResult]]:
    """Select ``sample`` (by a click on the lens's map, else by index), release z0 at
    fraction ``where`` of its range; returns that z0 and the four runs."""
    async with Session(port) as session:
        first = await session.rerun()
        if click:
            _element, data = first.lens()
            picked = await session.lens_release(first, data["z"], source="click",
                                                selected=sample)
        else:
            picked = await session.set_number(first, SAMPLE_LABEL, sample)
        _element, data = picked.lens()
        lo, hi = data["sliders"]["lo"][0], data["sliders"]["hi"][0]
        z0 = round(lo + where * (hi - lo), 2)
        moved = await session.lens_release(picked, [z0, *data["z"][1:]])
        await asyncio.sleep(0.5)  # let the other sessions act in between
        again = await session.rerun()  # a plain rerun: is my state still mine?
        return z0, [first, picked, moved, again]


async def all_users(port: int, plan: list[tuple[int, float, dict | None]]):
    return await asyncio.gather(*(one_user(port, *user) for user in plan))


def test_twenty_concurrent_sessions_on_a_fresh_server(server, tmp_path):
    latents = rundir.read_latents(server.run_dir)
    mu = latents["mu"]  # (N, 2): the map's coordinates
    samples = [7 + 11 * k for k in range(SESSIONS)]
    plan = [(sample, (k + 1) / (SESSIONS + 1), k % 2 == 1) for k, sample in enumerate(samples)]
    started = time.perf_counter()
    results = asyncio.run(all_users(server.port, plan))
    seconds = time.perf_counter() - started

    assert len({z0 for z0, _runs in results}) == SESSIONS  # every session its own z0
    for k, ((sample, _where, _click), (z0, runs)) in enumerate(zip(plan, results,
                                                                  strict=True)):
        for n, run in enumerate(runs):
            # 0: the script finished; 3: a fragment run finished (the lens's release)
            assert run.finished == (3 if n == 2 else 0), (k, n, run.finished)
            assert run.exceptions == [], (k, n, run.exceptions)
            assert run.errors == [], (k, n, run.errors)
        first, picked, moved, again = runs
        assert selected_sample(first) == 0
        assert selected_sample(picked) == sample
        assert moved.lens()[1]["selected"] == sample  # a fragment run: the lens only
        assert selected_sample(again) == sample, f"session {k} lost its selection"
        # z jumped to the sample's mu, then z0 was released: log p(z) of exactly that z
        z1 = float(mu[sample, 1])
        for name, run, z in (("picked", picked, (float(mu[sample, 0]), z1)),
                             ("moved", moved, (z0, z1)), ("again", again, (z0, z1))):
            expected = -0.5 * (z[0] ** 2 + z[1] ** 2) - math.log(2 * math.pi)
            assert log_prior(run) == pytest.approx(expected, abs=0.006), (k, name, z)

    loads = server.loads.read_text().splitlines()
    assert len(loads) == 1, f"the model was loaded {len(loads)} times: {loads}"
    log = (tmp_path / "streamlit.log").read_text(errors="replace")
    assert "Traceback" not in log and "Exception" not in log, log[-3000:]
    print(f"{SESSIONS} sessions x 4 runs in {seconds:.1f} s")
