"""Two costs the app pays that are not in the websocket round trip of ``bench/app_latency.py``:

- the script runner's post-run garbage collection (``runner.postScriptGC``: a full
  ``gc.collect(2)`` after every rerun, i.e. after every slider move) in a process that has
  what the app loads (torch, streamlit, plotly, pandas, the explorer, one run);
- threads that fight: decoding one image (what a slider move computes) while a training job
  runs in a subprocess, as the app's Train page starts it (``--threads 1``), and as a
  careless one would (all cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import Row, summary

ROOT = Path(__file__).resolve().parents[1]

GC_PROBE = r"""
import gc, json, sys, time, statistics
import torch, streamlit, plotly.graph_objects, pandas, numpy
import explorer  # the app's logic package
from training import rundir
from training.config import TrainConfig
from training.trainer import train
run = sys.argv[1]
train(TrainConfig(dataset="digits", latent_dim=2, hidden_dim=64, hidden_layers=1, epochs=1,
                  device="cpu", threads=1), run, log=lambda line: None, show_progress_bar=False)
loaded = rundir.load_run(run)
latents = rundir.read_latents(run)
gc.collect()
times = []
for _ in range(15):
    start = time.perf_counter()
    gc.collect(2)
    times.append(time.perf_counter() - start)
tracked = len(gc.get_objects())
print(json.dumps({"median": statistics.median(times), "max": max(times), "objects": tracked}))
"""


def gc_cost() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        done = subprocess.run([sys.executable, "-c", GC_PROBE, f"{tmp}/run"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"gc probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_latency(seconds: float = 4.0) -> dict[str, float]:
    """Latency of decoding one latent vector with the demo-sized decoder (2-D, 2x512)."""
    from training.model import VAE

    model = VAE((1, 28, 28), latent_dim=2, hidden_dim=512, hidden_layers=2).eval()
    z = torch.zeros(1, 2)
    times = []
    end = time.perf_counter() + seconds
    with torch.no_grad():
        while time.perf_counter() < end:
            start = time.perf_counter()
            torch.sigmoid(model.decode(z))
            times.append(time.perf_counter() - start)
            time.sleep(0.002)  # a slider sends a value every few milliseconds at most
    return summary(times[10:])


def _training_job(threads: int, out: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "training", "--epochs", "200", "--no-tsne", "--quiet",
         "--device", "cpu", "--threads", str(threads), "--out", out],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)})


def measure() -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    gc_stats = gc_cost()
    raw["post_script_gc"] = gc_stats
    rows.append(Row("app", "post-rerun gc.collect(2) (runner.postScriptGC)",
                    1e3 * gc_stats["median"], "ms",
                    f"per rerun, with torch + streamlit + plotly + the explorer loaded "
                    f"({gc_stats['objects']:,} tracked objects); runner.postScriptGC=false "
                    f"saves it"))

    torch.set_num_threads(1)  # the app decodes one image: one thread is plenty
    idle = decode_latency()
    raw["decode_idle"] = idle
    results = {}
    for threads in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
            job = _training_job(threads, f"{tmp}/run")
            try:
                deadline = time.monotonic() + 120
                while not (Path(tmp) / "run" / "config.json").exists():  # wait until training
                    if job.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the training job did not start")
                    time.sleep(0.2)
                results[threads] = decode_latency()
            finally:
                job.terminate()
                job.wait(timeout=30)
    raw["decode_during_training"] = results
    rows.append(Row("app", "decode one image, idle", 1e3 * idle["median"], "ms",
                    f"p90 {1e3 * idle['p90']:.2f} ms (2-D demo decoder, 1 thread)"))
    for threads, label in ((1, "--threads 1 (the app's jobs)"), (2, "--threads 2 (all cores)")):
        stats = results[threads]
        rows.append(Row("app", f"decode one image, training {label} next to it",
                        1e3 * stats["median"], "ms",
                        f"p90 {1e3 * stats['p90']:.2f} ms, worst {1e3 * stats['max']:.1f} ms"))
    return rows, raw
