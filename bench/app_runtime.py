"""Two costs the app pays that are not in the websocket round trip of ``bench/app_latency.py``:

- the script runner's post-run garbage collection (``runner.postScriptGC``: a full
  ``gc.collect(2)`` after every rerun, i.e. after every slider move) in a process that has
  what the main page loads (streamlit, plotly, the explorer, one run as an ONNX Runtime model), and
  after a teaching page has also loaded torch and pandas;
- threads that fight: decoding one image with the main page's ONNX Runtime model (what a slider
  move computes) while a training job runs in a subprocess, as the app's Train page starts
  it (``--threads 1``), and as a careless one would (all cores).
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

import numpy as np

from bench.common import Row, summary

ROOT = Path(__file__).resolve().parents[1]

GC_PROBE = r"""
import gc, json, sys, time, statistics
import streamlit, plotly.graph_objects, numpy
import app.main_page, explorer.inference, explorer.live  # the main page's modules
from explorer.onnx_model import load_onnx_model
from training import rundir
run, teaching = sys.argv[1], sys.argv[2] == "teaching"
model = load_onnx_model(run)
latents = rundir.read_latents(run)
if teaching:  # a teaching page has been opened: torch, pandas and the torch model too
    import pandas, torch
    loaded = rundir.load_run(run)
gc.collect()
times = []
for _ in range(15):
    start = time.perf_counter()
    gc.collect(2)
    times.append(time.perf_counter() - start)
tracked = len(gc.get_objects())
print(json.dumps({"median": statistics.median(times), "max": max(times), "objects": tracked}))
"""


def demo_sized_run(folder: str) -> str:
    """A demo-sized model (2-D latent, 2x512, untrained) written as a run directory, with
    its ONNX export."""
    from training import rundir
    from training.config import TrainConfig
    from training.model import VAE

    config = TrainConfig(latent_dim=2, hidden_dim=512, hidden_layers=2)
    model = VAE.from_config(config, (1, 28, 28))
    rundir.write_config(folder, rundir.RunInfo(config=config, image_shape=(1, 28, 28),
                                               class_names=[str(i) for i in range(10)]))
    rundir.save_weights(Path(folder) / rundir.WEIGHTS_FILE, model.state_dict())
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((1000, 2)).astype(np.float32)  # (N, D) like a test set's
    rundir.write_latents(folder, {"mu": mu, "logvar": np.full_like(mu, -2.0),
                                  "labels": rng.integers(0, 10, 1000), "pca": mu,
                                  "pca_mean": np.zeros(2, np.float32),  # pca = (mu - 0) @ I
                                  "pca_components": np.eye(2, dtype=np.float32),
                                  "recon": rng.uniform(80, 200, 1000),
                                  "kl": rng.uniform(2, 9, 1000)})
    from training.export import export_run

    export_run(folder)  # encoder.onnx, decoder.onnx: the main page runs the model from them
    return folder


def gc_cost(teaching: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        done = subprocess.run([sys.executable, "-c", GC_PROBE, demo_sized_run(tmp),
                               "teaching" if teaching else "main"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"gc probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_latency(run: str, seconds: float = 4.0) -> dict[str, float]:
    """Latency of decoding one latent vector as the main page does (ONNX Runtime model of the
    demo-sized decoder, 2-D, 2x512: ``explorer.inference.decode_mean``)."""
    from explorer.inference import decode_mean
    from explorer.onnx_model import load_onnx_model

    model = load_onnx_model(run)
    z = np.zeros(2, dtype=np.float32)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        decode_mean(model, z)
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
    for teaching, label in ((False, "main page"), (True, "after a teaching page (+ torch)")):
        gc_stats = gc_cost(teaching)
        raw["post_script_gc" + ("_teaching" if teaching else "")] = gc_stats
        rows.append(Row("app", f"post-rerun gc.collect(2) (runner.postScriptGC), {label}",
                        1e3 * gc_stats["median"], "ms",
                        f"per rerun ({gc_stats['objects']:,} tracked objects); "
                        f"runner.postScriptGC=false saves it"))

    demo = tempfile.TemporaryDirectory(prefix="bench-decode-")
    run = demo_sized_run(demo.name)
    idle = decode_latency(run)
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
                results[threads] = decode_latency(run)
            finally:
                job.terminate()
                job.wait(timeout=30)
    raw["decode_during_training"] = results
    demo.cleanup()
    rows.append(Row("app", "decode one image, idle", 1e3 * idle["median"], "ms",
                    f"p90 {1e3 * idle['p90']:.2f} ms (2-D demo decoder, ONNX Runtime, as the app)"))
    for threads, label in ((1, "--threads 1 (the app's jobs)"), (2, "--threads 2 (all cores)")):
        stats = results[threads]
        rows.append(Row("app", f"decode one image, training {label} next to it",
                        1e3 * stats["median"], "ms",
                        f"p90 {1e3 * stats['p90']:.2f} ms, worst {1e3 * stats['max']:.1f} ms"))
    return rows, raw
