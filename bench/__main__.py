"""``python -m bench``: run every benchmark, print one table, write it as JSON.

Sections (in this order, each measured side by side with what it is compared with):
training throughput (``bench/throughput.py``), time to quality (``bench/quality.py``),
t-SNE and placement (``bench/projection_speed.py``), app costs (``bench/app_runtime.py``
and the websocket round trips of ``bench/app_latency.py``), live decoding in the browser
(the latent lens beside the release -> rerun path, ``bench/live_decoding.py``), and the
same training rows on a GPU when there is one. The JSON goes to
``bench/results/latest.json``; ``--markdown`` also prints the table as the README shows
it. A section that fails becomes a row saying so; the others still run. Not part of the
tests' pass/fail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import (
    NOT_MEASURED_GPU,
    RESULTS_DIR,
    Row,
    machine,
    machine_load,
    rows_to_json,
    table_markdown,
    table_text,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("training", "speed", "quality", "projection", "app", "live", "gpu", "classroom")
APP_LATENCY_JSON = RESULTS_DIR / "app_latency.json"
LIVE_DECODING_JSON = RESULTS_DIR / "live_decoding.json"


def _latency_rows(payload: dict[str, Any]) -> list[Row]:
    """Rows from ``bench/app_latency.py``'s report: per variant, the slider-to-image round
    trip over the websocket (median, p90), bytes per move, cold start, server memory."""
    rows: list[Row] = []
    goal_ms = payload.get("goal_p90_ms")
    for name, result in payload.get("variants", {}).items():
        moves = result.get("moves", {})
        if "median_ms" in moves:
            p90 = moves.get("p90_ms")
            finished = moves.get("finished_median_ms", 0)
            rows.append(Row("app", f"slider → image, seen by the browser, {name} (median)",
                            moves["median_ms"], "ms",
                            f"p90 {p90:.0f} ms; script finished {finished:.0f} ms; "
                            f"{payload.get('moves', '?')} moves, the browser's websocket frame "
                            f"timestamps (CDP), which include its main thread's rendering",
                            goal=f"p90 ≤ {goal_ms:.0f} ms" if goal_ms else "",
                            met=(p90 <= goal_ms) if (goal_ms and p90 is not None) else None))
        replayed = result.get("replayed_moves", {})
        if "median_ms" in replayed:
            p90 = replayed.get("p90_ms")
            rows.append(Row("app", f"slider → image, server round trip, {name} (median)",
                            replayed["median_ms"], "ms",
                            f"p90 {p90:.1f} ms; the browser's own frames replayed from a "
                            f"Python websocket client (no browser main thread in the way)",
                            goal=f"p90 ≤ {goal_ms:.0f} ms" if goal_ms else "",
                            met=(p90 <= goal_ms) if (goal_ms and p90 is not None) else None))
        if name != "app":  # the other variants: their round trip is the comparison
            continue
        if "bytes_per_move" in moves:
            rows.append(Row("app", f"bytes sent per slider move, {name}",
                            moves["bytes_per_move"] / 1024, "KB", "websocket frames + media"))
        if "first_image_s" in result:
            rows.append(Row("app", f"server start → decoded image, {name}",
                            result["first_image_s"], "s", "one start, fresh headless Chromium"))
        for key, label in (("rss_1_session_mb", "1 session"), ("rss_10_sessions_mb",
                                                                "10 sessions")):
            if key in result:
                rows.append(Row("app", f"server resident memory, {label}, {name}",
                                result[key], "MB", "psutil RSS of the streamlit process"))
        if "full_reruns" in result:
            full = result["full_reruns"]
            rows.append(Row("app", f"whole-app rerun, {name} (image arrives, median)",
                            full.get("image_median_ms"), "ms",
                            f"script finished {full.get('median_ms', 0):.0f} ms, p90 "
                            f"{full.get('p90_ms', 0):.0f} ms"))
    goal_s = payload.get("cold_start_goal_s")
    for name, by_browser in payload.get("cold_start", {}).items():
        for browser, c in by_browser.items():
            rows.append(Row("app", f"cold start to first page ready, {name}, {browser} browser",
                            c["median_s"], "s",
                            f"median of {len(c['runs_s'])} server starts (min {c['min_s']:.2f}, "
                            f"max {c['max_s']:.2f}); server healthy at "
                            f"{c['healthy_median_s']:.2f} s"
                            + (f"; sliders and decoded image at {c['usable_median_s']:.2f} s"
                               if "usable_median_s" in c else ""),
                            goal=f"< {goal_s:g} s" if goal_s and name == "app" else "",
                            met=c["median_s"] < goal_s if goal_s and name == "app" else None))
    for name, seconds in payload.get("import_s", {}).items():
        rows.append(Row("app", f"import {name}", seconds, "s", "fresh interpreter, median of 3"))
    for item in payload.get("rows", []):  # a flat format, should the script switch to it
        rows.append(Row("app", str(item.get("name", "?")), item.get("value"),
                        str(item.get("unit", "")), str(item.get("detail", ""))))
    return rows


def _app_latency_rows(timeout: float) -> tuple[list[Row], dict[str, Any]]:
    """Run ``bench/app_latency.py`` (its own process: it starts Streamlit servers and a
    headless Chromium) and turn ``bench/results/app_latency.json`` into rows."""
    script = ROOT / "bench" / "app_latency.py"
    if not script.exists():
        return [Row("app", "websocket round trips", None, "", "bench/app_latency.py missing")], {}
    started = time.time()
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, tail = done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = "timeout", [f"still running after {timeout:.0f} s"]
    if code != 0 or not APP_LATENCY_JSON.exists() or APP_LATENCY_JSON.stat().st_mtime < started:
        return [Row("app", "websocket round trips", None, "",
                    f"bench/app_latency.py failed ({code}): {(tail or ['?'])[0][:150]}")], {}
    payload = json.loads(APP_LATENCY_JSON.read_text())
    return _latency_rows(payload), payload


def _live_decoding_rows(quick: bool, timeout: float) -> tuple[list[Row], dict[str, Any]]:
    """Run ``bench/live_decoding.py`` (its own process: Streamlit servers and a headless
    Chromium) and turn ``bench/results/live_decoding.json`` into rows."""
    from bench import live_decoding

    cmd = [sys.executable, "-m", "bench.live_decoding"]
    if quick:
        cmd += ["--moves", "100", "--releases", "10", "--loads", "3"]
    started = time.time()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, tail = done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = "timeout", [f"still running after {timeout:.0f} s"]
    if code != 0 or not LIVE_DECODING_JSON.exists() \
            or LIVE_DECODING_JSON.stat().st_mtime < started:
        return [Row("live", "live decoding in the browser", None, "",
                    f"bench/live_decoding.py failed ({code}): {(tail or ['?'])[0][:150]}")], {}
    payload = json.loads(LIVE_DECODING_JSON.read_text())
    return live_decoding.rows(payload), payload


def run_section(name: str, args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    import torch

    if name == "training":
        from bench import throughput

        return throughput.measure(torch.device("cpu"), rounds=3 if args.quick else 6)
    if name == "speed":  # issue 17: whole runs to their bars, busy core, time to quality
        from bench import training_speed

        return training_speed.measure(repeats=1 if args.quick else 2)
    if name == "quality":
        from bench import quality

        return quality.measure(torch.device("cpu"), max_seconds=60 if args.quick else 150)
    if name == "projection":
        from bench import projection_speed

        return projection_speed.measure(sklearn_sizes=(5000,) if args.quick else (5000, 20000))
    if name == "app":
        from bench import app_runtime

        rows, raw = app_runtime.measure()
        # 4 variants driven by a browser, then 4 pages x 2 browsers x 5 cold starts: ~7 min
        more, payload = _app_latency_rows(timeout=900)
        return more + rows, {"runtime": raw, "app_latency": payload}
    if name == "live":
        return _live_decoding_rows(args.quick, timeout=600)
    if name == "gpu":
        if not torch.cuda.is_available():
            return [Row("gpu", "training throughput on a GPU", None, "", NOT_MEASURED_GPU),
                    Row("gpu", "time to quality on a GPU", None, "", NOT_MEASURED_GPU)], {}
        from bench import quality, throughput

        rows, raw = throughput.measure(torch.device("cuda"))
        more, raw_quality = quality.measure(torch.device("cuda"))
        return rows + more, {"throughput": raw, "quality": raw_quality}
    if name == "classroom":  # 10-120 websocket students, one process and nginx + 2 replicas
        from bench import classroom

        return classroom.rows(quick=args.quick)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, no scikit-learn t-SNE of 20,000 (about 3 minutes)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "latest.json",
                        help="where to write the results")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the table in Markdown, as the README shows it")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"GPU: {info['gpu'] or 'none'}", flush=True)
    load_before = machine_load()
    print(f"load before: {load_before}", flush=True)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for name in args.only:
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            section_rows, section_raw = run_section(name, args)
        except Exception as exc:  # a broken section must not hide the others
            traceback.print_exc()
            section_rows = [Row(name, f"{name} benchmark", None, "",
                                f"failed: {type(exc).__name__}: {exc}"[:200])]
            section_raw = {"error": traceback.format_exc()}
        rows += section_rows
        raw[name] = section_raw
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
    load_after = machine_load()
    total = time.perf_counter() - start

    print()
    print(table_text(rows))
    print(f"\ntotal {total:.0f} s; load before {load_before.get('loadavg_1m')}, after "
          f"{load_after.get('loadavg_1m')} (1-min load average on {info['cores']} cores)")
    payload = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info, "load_before": load_before, "load_after": load_after,
        "seconds": total, "argv": sys.argv[1:], "rows": rows_to_json(rows), "raw": raw,
    }
    write_json(args.json, payload)
    print(f"written: {args.json}")
    if args.markdown:
        print()
        print(table_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
