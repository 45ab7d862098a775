"""Benchmark: how fast the explorer's server answers a slider release, as a browser sees it.

Starts ``streamlit run`` on 127.0.0.1 (free ports) for several variants, drives each with
headless Chromium through Playwright, and times every slider release from the browser's
websocket frames (Chrome DevTools Protocol ``Network.webSocketFrame*`` timestamps, taken
inside the browser): from the ``rerun_script`` BackMsg the browser sends to the frame that
carries the new decoded image (or, for ``st.image``, to the end of the image's HTTP fetch),
and to ``script_finished``. Variants:

- ``app``            this app on a trained run: the main page's latent lens (``app/lens/``)
                     reports a slider once per interaction (an arrow key here), which reruns
                     the lens's ``st.fragment`` on the server; its reply carries the server's
                     decode (``server_png``). While a slider is dragged the lens decodes in
                     the browser and the server hears nothing: ``bench/live_decoding.py``
                     measures that side (and the release -> image path without WebAssembly);
- ``app-gc``         the same as ``app`` with Streamlit's default ``runner.postScriptGC=true``
                     (a full ``gc.collect()`` after every rerun; the app's config turns it off);
- ``minimal``        the one-slider decode app ``bench/apps/minimal_app.py`` (the model in
                     ``st.cache_resource``, one ``st.slider``, one ``st.image``);
- ``app full rerun`` whole-app reruns of ``app`` (the "random sample" button): what every
                     release would cost without the fragment.

(The ``app-media`` variant, the decode panel's images through ``st.image``, is gone with
that panel: the lens sends its one small server image inline.)

Also: cold start (a new server process -> first page ready in the browser, with a fresh and
with a returning browser profile, see :func:`cold_start`), what each import costs, resident
memory of the server with 1 and with 10 open sessions (psutil), and an in-process
breakdown of where a whole-app rerun spends its time. Prints a table; writes
``bench/results/app_latency.json``.

    python -m bench.app_latency [--moves 30] [--run runs/demo-vae-z2] [--screenshot PATH]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from explorer.server import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"  # the baseline pages measured beside the app

RESULTS = ROOT / "bench" / "results" / "app_latency.json"
# the lens's data in a websocket frame, with the server's decode of z (app/lens lens_data)
DECODED_MARK = b'"server_png": "data:image/'
LENS = ".latent-lens[data-key='lens']"
LENS_SLIDER = f"{LENS} input[aria-label='z0']"  # a native range input in the shadow root
ST_SLIDER = '[data-testid="stSlider"] input[type="range"]'
# The lens is drawn: its root, the map painted (mapTimes.draw_ms), and the decoded image
# showing (the server's PNG loaded, or the canvas once the browser decoded).
LENS_SHOWN_JS = """(() => {
    const lens = window.__latentLens && window.__latentLens.lens;
    if (!lens || !lens.root.isConnected) return false;
    const img = lens.root.querySelector('img.lens-server-image');
    const canvas = lens.root.querySelector('canvas.lens-image');
    const image = (img && img.getAttribute('src') && !img.hidden && img.complete)
        || (canvas && !canvas.hidden);
    return !!(lens.mapTimes && lens.mapTimes.draw_ms != null && image);
})()"""



TRIVIAL_READY_JS = """() => !!(document.querySelector('h1')
    && document.querySelector('[data-testid="stSlider"]'))
    && !document.querySelector('[data-testid="stStatusWidget"]')"""
PLOTLY_FLOOR_READY_JS = """() => !!(document.querySelector('h1')
    && document.querySelector('.js-plotly-plot .main-svg')
    && document.querySelector('[data-testid="stSlider"]'))
    && !document.querySelector('[data-testid="stStatusWidget"]')"""

# --------------------------------------------------------------------------- helpers

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "median_ms": statistics.median(ms) if ms else float("nan"),
            "p90_ms": percentile(ms, 0.9), "min_ms": min(ms) if ms else float("nan"),
            "max_ms": max(ms) if ms else float("nan")}


def ensure_run(path: Path) -> Path:
    """The demo run at ``path``, trained if missing, with its ``decoder.onnx`` (the main
    page's lens decodes with it; ``python -m training.export`` adds it to an older run)."""
    if not ((path / "model.safetensors").is_file() and (path / "latents.npz").is_file()):
        print(f"training the demo run into {path} (a few minutes on 2 cores) ...", flush=True)
        subprocess.run([sys.executable, "-m", "training", "--out", str(path)], cwd=ROOT,
                       check=True)
    if not (path / "decoder.onnx").is_file():
        print(f"exporting {path}'s model to ONNX ...", flush=True)
        subprocess.run([sys.executable, "-m", "training.export", str(path)], cwd=ROOT,
                       check=True)
    return path


class FrameLog:
    """Websocket frames and media fetches of one page, from CDP events (browser clock)."""

    def __init__(self, page):
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._back, self._fwd = BackMsg, ForwardMsg
        self.sent: list[tuple[float, str]] = []  # (timestamp, BackMsg type)
        self.sent_raw: list[bytes] = []  # the same frames' bytes, for replay_moves()
        self.received: list[tuple[float, str, int, bool, bool]] = []
        # (timestamp, ForwardMsg type, bytes, has decoded image inline, has a media url)
        self.media_done: list[tuple[float, str]] = []
        self._urls: dict[str, str] = {}
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.webSocketFrameSent", self._on_sent)
        cdp.on("Network.webSocketFrameReceived", self._on_received)
        cdp.on("Network.requestWillBeSent", self._on_request)
        cdp.on("Network.loadingFinished", self._on_finished)
        cdp.send("Network.enable")
        self.cdp = cdp

    @staticmethod
    def _payload(event) -> bytes:
        resp = event["response"]
        data = resp.get("payloadData", "")
        return base64.b64decode(data) if resp.get("opcode") == 2 else data.encode()

    def _on_sent(self, event) -> None:
        raw = self._payload(event)
        try:
            kind = self._back.FromString(raw).WhichOneof("type") or "?"
        except Exception:  # noqa: BLE001 - not a protobuf frame
            kind = "?"
        self.sent.append((event["timestamp"], kind))
        self.sent_raw.append(raw)

    def _on_received(self, event) -> None:
        raw = self._payload(event)
        try:
            kind = self._fwd.FromString(raw).WhichOneof("type") or "?"
        except Exception:  # noqa: BLE001
            kind = "?"
        self.received.append((event["timestamp"], kind, len(raw), DECODED_MARK in raw,
                              b"/media/" in raw))

    def _on_request(self, event) -> None:
        self._urls[event["requestId"]] = event["request"]["url"]

    def _on_finished(self, event) -> None:
        url = self._urls.get(event["requestId"], "")
        if "/media/" in url:
            self.media_done.append((event["timestamp"], url))

    def reruns_since(self, start: int) -> list[float]:
        return [t for t, kind in self.sent[start:] if kind == "rerun_script"]

    def move_result(self, t_sent: float, t_next: float, media: bool) -> dict[str, Any] | None:
        """Latency of one rerun that started at ``t_sent`` (ends before ``t_next``)."""
        window = [r for r in self.received if t_sent <= r[0] < t_next]
        finished = [r[0] for r in window if r[1] == "script_finished"]
        if media:
            media_frames = [r[0] for r in window if r[4]]
            if not media_frames:
                return None
            done = [t for t, _ in self.media_done if media_frames[0] <= t < t_next]
            t_image = done[0] if done else None
        else:
            inline = [r[0] for r in window if r[3]]
            t_image = inline[0] if inline else None
        if t_image is None:
            return None
        return {"image_s": t_image - t_sent,
                "finished_s": (finished[0] - t_sent) if finished else None,
                "bytes": sum(r[2] for r in window)}


def replay_moves(url: str, backmsgs: list[bytes], media: bool,
                 timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Server-side round trips without a browser: open a fresh websocket session, send the
    browser's own first ``rerun_script`` BackMsg (the page load), then each recorded slider
    move's BackMsg, timing (``time.perf_counter`` in this lean client) until the frame
    carrying the new image (for ``st.image``: until its HTTP fetch completes too) and until
    ``script_finished``. Widget and fragment ids are deterministic, so the replay is the
    same work the browser's session asked for. The client ACKs every segment at once
    (``TCP_QUICKACK``): without it Linux's delayed ACK added a flat ~40 ms to every reply."""
    import re
    import socket
    import urllib.request

    import websocket
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws = websocket.create_connection(url.replace("http", "ws") + "/_stcore/stream",
                                     subprotocol=["streamlit"], timeout=timeout_s)
    results = []
    try:
        for i, payload in enumerate(backmsgs):
            t0 = time.perf_counter()
            ws.send_binary(payload)
            t_image = t_done = None
            nbytes = 0
            while t_done is None:
                if hasattr(socket, "TCP_QUICKACK"):  # ACK at once: no 40 ms delayed-ACK stall
                    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                raw = ws.recv()
                raw = raw if isinstance(raw, bytes) else raw.encode()
                nbytes += len(raw)
                kind = ForwardMsg.FromString(raw).WhichOneof("type")
                if t_image is None and not media and DECODED_MARK in raw:
                    t_image = time.perf_counter()
                if t_image is None and media and b"/media/" in raw:
                    match = re.search(rb"(/media/[0-9a-f]+\.\w+)", raw)
                    if match:
                        with urllib.request.urlopen(url + match.group(1).decode()) as resp:
                            resp.read()
                        t_image = time.perf_counter()
                if kind == "script_finished":
                    t_done = time.perf_counter()
            if i == 0 or t_image is None:
                continue  # the page load itself is not a move
            results.append({"image_s": t_image - t0, "finished_s": t_done - t0,
                            "bytes": nbytes})
    finally:
        ws.close()
    return results


def launch_browser(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_image(page, media: bool, timeout: float = 120_000) -> None:
    """The decoded image is on the page: the lens's (map drawn, image showing) for the
    app, ``st.image``'s for ``media`` (the minimal app)."""
    if media:
        page.locator('[data-testid="stImage"] img').first.wait_for(state="visible",
                                                                   timeout=timeout)
    else:
        page.wait_for_function(f"() => {LENS_SHOWN_JS}", timeout=timeout, polling=25)


def timed_reruns(page, log: FrameLog, act, count: int, timeout_s: float, settle_ms: int,
                 media: bool) -> list[dict[str, Any]]:
    """Call ``act(i)`` ``count`` times, each after the previous rerun finished (then
    ``settle_ms`` more), and return each rerun's latencies from the websocket frames."""
    starts = []
    for i in range(count):
        n_sent = len(log.sent)
        act(i)
        deadline = time.time() + timeout_s
        while time.time() < deadline and not log.reruns_since(n_sent):
            page.wait_for_timeout(10)
        reruns = log.reruns_since(n_sent)
        if not reruns:
            continue
        starts.append(reruns[0])
        # wait for the rerun to finish, then let the page settle
        deadline = time.time() + timeout_s
        while time.time() < deadline and not any(
                r[1] == "script_finished" and r[0] >= reruns[0] for r in log.received):
            page.wait_for_timeout(10)
        page.wait_for_timeout(settle_ms)
    starts.append(float("inf"))
    results = []
    for t0, t1 in zip(starts[:-1], starts[1:], strict=True):
        result = log.move_result(t0, t1, media)
        if result is not None:
            results.append(result)
    return results


def drive_slider(page, log: FrameLog, moves: int, media: bool, selector: str,
                 pause_s: float = 0.35) -> list[dict[str, Any]]:
    """Press ArrowRight/ArrowLeft on the slider ``selector`` ``moves`` times, one move at a
    time, each after the previous rerun finished; return per-move latencies. (The lens
    reports a key press 150 ms later, once per burst: the latency counts from its
    message.)"""
    thumb = page.locator(selector).first
    thumb.focus()
    return timed_reruns(
        page, log, lambda i: thumb.press("ArrowRight" if (i // 10) % 2 == 0 else "ArrowLeft"),
        moves, timeout_s=10, settle_ms=int(pause_s * 1000), media=media)


def click_reruns(page, log: FrameLog, clicks: int, button_text: str) -> list[dict[str, Any]]:
    """Whole-app reruns: click a (non-fragment) button ``clicks`` times."""
    button = page.get_by_role("button", name=button_text)
    return timed_reruns(page, log, lambda _i: button.click(), clicks, timeout_s=20,
                        settle_ms=400, media=False)


def take_screenshots(browser, url: str, path: Path, sample: int = 17, steps: int = 40) -> None:
    """README images: select a sample, drag the most active slider ``steps`` steps, save the
    top of the page to ``path`` and the ELBO panel to ``app-elbo.png`` beside it."""
    page = browser.new_page(viewport={"width": 1500, "height": 1350})
    page.goto(url, wait_until="domcontentloaded")
    wait_image(page, media=False)
    page.locator('[data-testid="stNumberInputField"]').fill(str(sample))
    page.keyboard.press("Enter")
    page.get_by_text(f"ELBO of sample {sample}").first.wait_for(timeout=60_000)
    page.wait_for_timeout(2000)
    thumb = page.locator(LENS_SLIDER).first
    thumb.focus()
    for _ in range(steps):
        thumb.press("ArrowRight")
    page.wait_for_timeout(3000)
    page.mouse.move(5, 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    panel = page.locator('[data-testid="stTabPanel"]').first
    panel.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    panel.screenshot(path=str(path.with_name("app-elbo.png")))
    page.close()


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        total += child.memory_info().rss
    return total / 2**20


# --------------------------------------------------------------------------- one variant

def measure_variant(name: str, script: str, runs_dir: Path, moves: int, pw,
                    env: dict[str, str] | None = None, args: list[str] | None = None,
                    script_args: list[str] | None = None, media: bool = False,
                    full_reruns: int = 0, sessions: int = 1,
                    screenshot: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"variant": name}
    server = StreamlitServer(script, env={"VAE_RUNS_DIR": str(runs_dir), **(env or {})},
                             args=args, script_args=script_args,
                             log_path=Path(tempfile.gettempdir()) / f"bench-{name}.log")
    browser = launch_browser(pw)
    try:
        t_start = time.perf_counter()
        server.start()
        out["server_healthy_s"] = time.perf_counter() - t_start
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log = FrameLog(page)
        page.goto(server.url, wait_until="domcontentloaded")
        wait_image(page, media)
        out["first_image_s"] = time.perf_counter() - t_start  # process start -> decoded image
        page.wait_for_timeout(1500)
        moves_result = drive_slider(page, log, moves, media, ST_SLIDER if media else LENS_SLIDER)
        out["moves"] = stats_ms([m["image_s"] for m in moves_result])
        out["moves"]["finished_median_ms"] = statistics.median(
            [m["finished_s"] * 1000 for m in moves_result if m["finished_s"] is not None] or [0])
        out["moves"]["bytes_per_move"] = statistics.median([m["bytes"] for m in moves_result])
        reruns = [raw for (t, kind), raw in zip(log.sent, log.sent_raw, strict=True)
                  if kind == "rerun_script"]
        if len(reruns) > 1:
            replay = replay_moves(server.url, reruns, media)
            out["replayed_moves"] = stats_ms([m["image_s"] for m in replay])
            out["replayed_moves"]["finished_median_ms"] = statistics.median(
                [m["finished_s"] * 1000 for m in replay] or [0])
        if full_reruns:
            reruns = click_reruns(page, log, full_reruns, "Random sample")
            out["full_reruns"] = stats_ms([m["finished_s"] for m in reruns
                                           if m["finished_s"] is not None])
            out["full_reruns"]["image_median_ms"] = statistics.median(
                [m["image_s"] * 1000 for m in reruns] or [0])
            out["full_reruns"]["bytes_per_rerun"] = statistics.median(
                [m["bytes"] for m in reruns] or [0])
        out["rss_1_session_mb"] = rss_mb(server.proc.pid)
        if sessions > 1:
            pages = []
            for _ in range(sessions - 1):
                extra = browser.new_page(viewport={"width": 1400, "height": 1000})
                extra.goto(server.url, wait_until="domcontentloaded")
                wait_image(extra, media)
                pages.append(extra)
            time.sleep(1.0)
            out[f"rss_{sessions}_sessions_mb"] = rss_mb(server.proc.pid)
            for extra in pages:
                extra.close()
        if screenshot is not None:
            take_screenshots(browser, server.url, screenshot)
    finally:
        browser.close()
        server.stop()
    return out


# --------------------------------------------------------------------------- cold start

# The first page is ready when everything above the fold is drawn and the script has
# finished: the title, the latent lens (its root, the map painted on its canvas, the
# latent sliders, the decoded image showing: the server's PNG, or the canvas once the
# browser decoded), the ELBO panel's metrics, and no "running" status widget. The lens
# lives in a shadow root; window.__latentLens.lens (app/lens) reaches it.
PAGE_READY_JS = f"""() => !!(document.querySelector('h1')
    && {LENS_SHOWN_JS}
    && window.__latentLens.lens.root.querySelector("input[aria-label='z0']")
    && document.querySelector('[data-testid="stMetric"]'))
    && !document.querySelector('[data-testid="stStatusWidget"]')"""
# usable: the lens (map, sliders, decoded image) is drawn, whatever else is still coming
DECODE_PANEL_JS = f"""() => !!({LENS_SHOWN_JS}
    && window.__latentLens.lens.root.querySelector("input[aria-label='z0']"))"""
MINIMAL_READY_JS = """() => !!(document.querySelector('[data-testid="stSlider"]')
    && document.querySelector('[data-testid="stImage"] img'))
    && !document.querySelector('[data-testid="stStatusWidget"]')"""


def cold_start(script: str, runs_dir: Path, pw, repeats: int, ready_js: str,
               script_args: list[str] | None = None,
               usable_js: str | None = None) -> dict[str, Any]:
    """Seconds from ``streamlit run`` (a new server process, nothing loaded) to the first
    page ready (``ready_js``), in two browsers:

    - ``fresh``: a new Chromium profile per start, nothing cached: the browser downloads,
      compiles and runs Streamlit's whole frontend (the Plotly bundle alone is 4.7 MB);
    - ``returning``: one profile that has opened the app at this address before (the
      usual case: a teacher's own browser, the port `streamlit run` always uses), so
      Chromium's HTTP and code caches hold the frontend; the server is still cold.

    Each start is a new server process on the same port; medians over ``repeats``. With
    ``usable_js``, also the time until that holds (the decode panel: sliders and image)."""
    from explorer.server import free_port

    port = free_port()
    env = {"VAE_RUNS_DIR": str(runs_dir)}
    out: dict[str, Any] = {}

    def one(context) -> dict[str, float]:
        server = StreamlitServer(script, env=env, script_args=script_args, port=port,
                                 log_path=Path(tempfile.gettempdir()) / "bench-cold.log")
        page = context.new_page()
        page.set_viewport_size({"width": 1400, "height": 1000})
        try:
            t0 = time.perf_counter()
            server.start()
            healthy = time.perf_counter() - t0
            page.goto(server.url, wait_until="domcontentloaded")
            times = {"healthy_s": healthy}
            if usable_js:
                page.wait_for_function(usable_js, timeout=120_000, polling=25)
                times["usable_s"] = time.perf_counter() - t0
            page.wait_for_function(ready_js, timeout=120_000, polling=25)
            return {**times, "ready_s": time.perf_counter() - t0}
        finally:
            page.close()
            server.stop()

    fresh = []
    for _ in range(repeats):
        browser = launch_browser(pw)
        try:
            fresh.append(one(browser.new_context()))
        finally:
            browser.close()
    profile = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            one(context)  # the earlier visit that fills the caches; not counted
            returning = [one(context) for _ in range(repeats)]
        finally:
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    for name, runs in (("fresh", fresh), ("returning", returning)):
        ready = [r["ready_s"] for r in runs]
        out[name] = {"median_s": statistics.median(ready), "min_s": min(ready),
                     "max_s": max(ready), "runs_s": ready,
                     "healthy_median_s": statistics.median(r["healthy_s"] for r in runs)}
        if usable_js:
            out[name]["usable_median_s"] = statistics.median(r["usable_s"] for r in runs)
    return out


def import_seconds(repeats: int = 3) -> dict[str, float]:
    """Median wall seconds of ``python -c "import X"`` minus a bare interpreter start: what
    each import adds to a cold start (the main page needs streamlit and the NumPy model,
    not torch)."""
    def timed(code: str) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    bare = timed("pass")
    return {name: timed(code) - bare for name, code in (
        ("streamlit", "import streamlit"),
        ("main page modules (app.main_page)", "import streamlit, app.main_page"),
        ("torch", "import torch"),
    )}


# --------------------------------------------------------------------------- where the time goes

def rerun_breakdown(run_dir: Path, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each piece of a rerun of the main page, measured in-process:
    the lens's fragment (what a slider release reruns: the server's decode of z, the map's
    payload, the component's data and its JSON) and the rest of a whole-app rerun (the
    ELBO panel, the KL bars, the training curves)."""
    import json as json_lib

    import numpy as np
    import plotly.io as pio

    from app.lens import lens_data, map_payload
    from explorer import figures
    from explorer.inference import load_test_images, sample_terms
    from explorer.live import build_live_decoder
    from explorer.onnx_model import load_onnx_model
    from explorer.uploads import has_dark_background
    from training.rundir import read_latents, read_metrics

    model = load_onnx_model(run_dir)
    latents = read_latents(run_dir)
    metrics = read_metrics(run_dir)
    images = load_test_images(model.info)
    live = build_live_decoder(model, latents, "raw")
    info = model.info
    z = latents["mu"][0]
    sha = "0" * 64

    def med(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    def payload():  # as latent_lens() builds it on every rerun (the encoding is cached)
        return map_payload(projection="raw", xy=live.coords, labels=latents["labels"],
                           latent_dim=model.latent_dim, class_names=info.class_names,
                           recon_nats=latents["recon"], kl_nats=latents["kl"],
                           x_title="z0", y_title="z1")

    def data(png: bytes, map_data) -> dict[str, Any]:  # as latent_lens() shapes it
        out = lens_data(key="lens", decoder_url="/x/decoder.onnx", decoder_sha256=sha,
                        image_shape=info.image_shape, latent_dim=model.latent_dim,
                        z=z.tolist(), lo=live.lo, hi=live.hi, order=live.order,
                        slider_help=live.slider_help(), server_png=figures.data_uri(png),
                        map_data=map_data, selected=0, sigma=[0.1, 0.1], height=440)
        out["map"] = {"hash": map_data["hash"], "n": map_data["n"], "projection": "raw"}
        return out

    def fragment():  # the lens fragment's own work, then Streamlit's JSON of both elements
        frame = live.render(z)
        map_data = payload()
        json_lib.dumps(data(frame.decoded_png, map_data))
        json_lib.dumps({"role": "map", "map": map_data})

    png = live.render(z).decoded_png
    map_data = payload()
    curves = figures.training_curves_figure(metrics)

    def terms_and_images():
        terms = sample_terms(model, images[0], 64)
        for img in (terms.x, terms.recon_image):
            figures.data_uri(figures.png_bytes(img, 6))
        figures.png_bytes(figures.difference_rgb(terms.x, terms.recon_image), 6)

    import gc

    import streamlit  # noqa: F401 - the server's heap holds it too

    gc_full = med(gc.collect)
    gc.freeze()
    gc_frozen = med(gc.collect)
    gc.unfreeze()
    return {
        "gc.collect() after a rerun (Streamlit's default postScriptGC)": gc_full,
        "gc.collect() after gc.freeze() of the start-up heap": gc_frozen,
        "lens fragment: server decode of z + PNG (LiveDecoder.render)": med(lambda: live.render(z)),
        "lens fragment: map payload (validate + digest; encoding cached)": med(payload),
        "lens fragment: lens_data (validate) + JSON of the component's data": med(
            lambda: json_lib.dumps(data(png, map_data))),
        "lens fragment: JSON of the map element (what Streamlit serialises per rerun)": med(
            lambda: json_lib.dumps({"role": "map", "map": payload()})),
        "lens fragment, all of it (per slider release)": med(fragment),
        "ELBO panel: 64-sample terms + 3 PNGs": med(terms_and_images),
        "KL bars: build go.Figure + JSON (per selected sample)": med(lambda: pio.to_json(
            figures.kl_bar_figure(np.ones(2), np.arange(2), np.ones(2)), validate=False)),
        "training curves: build go.Figure + JSON": med(lambda: pio.to_json(
            figures.training_curves_figure(metrics), validate=False)),
        "training curves: cached figure, to_dict + JSON (the app's way)": med(lambda: pio.to_json(
            curves.to_dict(), validate=False)),
        "upload background check (has_dark_background)":
            med(lambda: has_dark_background(images)),
    }


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-vae-z2")
    parser.add_argument("--moves", type=int, default=30)
    parser.add_argument("--full-reruns", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="also save a screenshot of the app on this run (README image)")
    parser.add_argument("--variants", nargs="+", default=["app", "app-gc", "minimal"],
                        choices=["app", "app-gc", "minimal"])
    parser.add_argument("--cold-repeats", type=int, default=5,
                        help="server starts per browser state for the cold-start figures")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is absent: install Debian's chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    run_dir = ensure_run(args.run.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="app-latency-"))
    try:
        runs_dir = tmp / "runs"
        runs_dir.mkdir()
        shutil.copytree(run_dir, runs_dir / run_dir.name)
        minimal = APPS / "minimal_app.py"
        plotly_floor = APPS / "plotly_floor_app.py"
        trivial = APPS / "trivial_app.py"
        load_before = os.getloadavg()
        results: dict[str, Any] = {}
        with sync_playwright() as pw:
            for variant in args.variants:
                print(f"measuring {variant} ...", flush=True)
                if variant == "app":
                    results[variant] = measure_variant(
                        variant, "streamlit_app.py", runs_dir, args.moves, pw,
                        full_reruns=args.full_reruns, sessions=args.sessions,
                        screenshot=args.screenshot)
                elif variant == "app-gc":
                    results[variant] = measure_variant(
                        variant, "streamlit_app.py", runs_dir, args.moves, pw,
                        args=["--runner.postScriptGC", "true"])
                elif variant == "minimal":
                    results[variant] = measure_variant(
                        variant, str(minimal), runs_dir, args.moves, pw, media=True,
                        script_args=[str(runs_dir / run_dir.name)], sessions=args.sessions)
                else:
                    parser.error(f"unknown variant {variant}")
            cold: dict[str, Any] = {}
            if args.cold_repeats and "app" in args.variants:
                print("measuring cold start: app ...", flush=True)
                cold["app"] = cold_start("streamlit_app.py", runs_dir, pw, args.cold_repeats,
                                         PAGE_READY_JS, usable_js=DECODE_PANEL_JS)
            if args.cold_repeats and "minimal" in args.variants:
                print("measuring cold start: minimal ...", flush=True)
                cold["minimal"] = cold_start(str(minimal), runs_dir, pw, args.cold_repeats,
                                             MINIMAL_READY_JS,
                                             script_args=[str(runs_dir / run_dir.name)])
            if args.cold_repeats and "app" in args.variants:
                print("measuring cold start: plotly floor ...", flush=True)
                cold["plotly-floor"] = cold_start(str(plotly_floor), runs_dir, pw,
                                                  args.cold_repeats, PLOTLY_FLOOR_READY_JS,
                                                  script_args=[str(runs_dir / run_dir.name)])
                print("measuring cold start: trivial page ...", flush=True)
                cold["trivial"] = cold_start(str(trivial), runs_dir, pw, args.cold_repeats,
                                             TRIVIAL_READY_JS)
        imports = import_seconds()
        breakdown = rerun_breakdown(runs_dir / run_dir.name)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "benchmark": "app_latency",
        "what": "slider release (the lens's one message per interaction; st.slider for "
                "'minimal') -> new image over the websocket: as the browser's frames "
                "show it (CDP timestamps, incl. its main thread) and as the server answers "
                "the same frames replayed without a browser (the server-side round trip, "
                "p90 goal 50 ms)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "run": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
        "moves": args.moves,
        "variants": results,
        "rerun_breakdown_ms": breakdown,
        "cold_start": cold,
        "import_s": imports,
        "goal_p90_ms": 50.0,
        "goal_met": bool(
            results.get("app", {}).get("replayed_moves", {}).get("p90_ms", 1e9) <= 50.0),
        "browser_seen_p90_within_goal": bool(
            results.get("app", {}).get("moves", {}).get("p90_ms", 1e9) <= 50.0),
        "cold_start_goal_s": 5.0,
        "cold_start_met_returning": bool(
            cold.get("app", {}).get("returning", {}).get("median_s", 1e9) < 5.0),
        "cold_start_met_fresh": bool(
            cold.get("app", {}).get("fresh", {}).get("median_s", 1e9) < 5.0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwritten: {args.out}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"\nSlider release -> new image over the websocket ({report['moves']} moves; load "
          f"average "
          f"{machine['load_average_before'][0]:.1f} before, "
          f"{machine['load_average_after'][0]:.1f} after, {machine['cpus']} CPUs). Each variant's "
          f"row: the browser's frame timestamps (incl. its main thread); 'replayed': the same "
          f"frames from a Python client, the server-side round trip (goal: p90 <= 50 ms)")
    header = (f"{'variant':<16} {'median ms':>10} {'p90 ms':>8} {'finished ms':>12} "
              f"{'KB/move':>8} {'first image s':>13} {'RSS 1 MB':>9} {'RSS 10 MB':>10}")
    print(header)
    print("-" * len(header))
    for name, r in report["variants"].items():
        m = r.get("moves", {})
        print(f"{name:<16} {m.get('median_ms', float('nan')):>10.1f} "
              f"{m.get('p90_ms', float('nan')):>8.1f} {m.get('finished_median_ms', 0):>12.1f} "
              f"{m.get('bytes_per_move', 0) / 1024:>8.1f} {r.get('first_image_s', 0):>13.2f} "
              f"{r.get('rss_1_session_mb', 0):>9.0f} "
              f"{r.get('rss_10_sessions_mb', float('nan')):>10.0f}")
        if "replayed_moves" in r:
            q = r["replayed_moves"]
            print(f"{'  replayed':<16} {q['median_ms']:>10.1f} {q['p90_ms']:>8.1f} "
                  f"{q['finished_median_ms']:>12.1f}   (same BackMsgs from a Python websocket "
                  f"client, no browser)")
        if "full_reruns" in r:
            f = r["full_reruns"]
            print(f"{name + ' full rerun':<16} {f['image_median_ms']:>10.1f} "
                  f"{'':>8} {f['median_ms']:>12.1f} {f['bytes_per_rerun'] / 1024:>8.1f}"
                  f"   (whole-app rerun: image arrives / script finished; p90 "
                  f"{f['p90_ms']:.0f} ms)")
    if report.get("cold_start"):
        print("\nCold start: `streamlit run` (new server process) -> first page ready (title, "
              "the lens's map drawn, its sliders and decoded image, ELBO metrics, script "
              "finished), seconds; goal < 5 s")
        header = (f"{'variant':<13} {'browser':<10} {'median':>7} {'min':>6} {'max':>6} "
                  f"{'healthy':>8} {'decode panel':>13}")
        print(header)
        print("-" * len(header))
        for name, by_browser in report["cold_start"].items():
            for browser, c in by_browser.items():
                usable = c.get("usable_median_s")
                print(f"{name:<13} {browser:<10} {c['median_s']:>7.2f} {c['min_s']:>6.2f} "
                      f"{c['max_s']:>6.2f} {c['healthy_median_s']:>8.2f} "
                      f"{'' if usable is None else f'{usable:.2f}':>13}")
        print("(fresh: a new browser profile; returning: one that opened the app at this "
              "address before. healthy: when the server first answered /_stcore/health; "
              "decode panel: the lens's map, sliders and decoded image drawn. plotly-floor: a "
              "page with only a title, a slider and the same 1,000-point map through "
              "st.plotly_chart (the full plotly.js; the app's lens draws its map on a canvas, "
              "its other charts use the light build, app/chart.py); trivial: a title and a "
              "slider.)")
    if report.get("import_s"):
        print("\nImport cost in a fresh interpreter (median s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in report["import_s"].items()))
    print("\nWhere a whole-app rerun spends its time (in-process, median ms):")
    for piece, ms in report["rerun_breakdown_ms"].items():
        print(f"  {ms:8.2f}  {piece}")


if __name__ == "__main__":
    sys.exit(main())
