"""The demo runs a fresh install trains: the default VAE, a plain autoencoder with the
same backbone, a VAE with a larger latent space, and a beta = 4 VAE of that size with KL
warm-up and a deeper decoder (dead dimensions), so the app can contrast them.

``python -m training.demo [--runs-dir runs] [--only NAME ...]`` trains whichever of them
are missing (a complete run directory is never retrained or overwritten; one trained
before ONNX export gets its ONNX files).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import rundir
from training.config import TrainConfig

# name -> overrides of TrainConfig's defaults (which are the demo VAE itself)
DEMO_RUNS: dict[str, dict[str, Any]] = {
    "demo-vae-z2": {},
    "demo-ae-z2": {"model": "ae"},
    "demo-vae-z16": {"latent_dim": 16},
    # beta = 4 with a 10-epoch KL warm-up and the deeper 2 x 512 decoder of the 2-D runs:
    # the rate-distortion lesson's low-rate point, its training curves show the warm-up
    # ramp, and the strong KL pressure on a deep decoder leaves dead dimensions for the
    # latent-health lesson (demo-vae-z16's single wide layer keeps all 16 alive)
    "demo-vae-z16-beta4": {"latent_dim": 16, "beta": 4.0, "kl_warmup": 10,
                           "hidden_layers": 2, "hidden_dim": 512},
}


def demo_config(name: str) -> TrainConfig:
    return TrainConfig(**DEMO_RUNS[name])


def is_complete(run_dir: Path) -> bool:
    try:
        return rundir.read_config(run_dir).status == "complete" and \
            (run_dir / rundir.WEIGHTS_FILE).is_file()
    except rundir.RunDirError:
        return False


def train_demo_runs(runs_dir: str | Path = "runs", only: list[str] | None = None,
                    log: Callable[[str], None] = print,
                    progress: Callable[[str, dict[str, Any]], None] | None = None) -> list[Path]:
    """Train the missing demo runs into ``runs_dir``; returns their directories."""
    from training.export import export_run
    from training.trainer import train

    runs_dir = Path(runs_dir)
    out = []
    for name in only or list(DEMO_RUNS):
        run_dir = runs_dir / name
        out.append(run_dir)
        if is_complete(run_dir):
            exported = export_run(run_dir)  # only when its ONNX files are missing or stale
            log(f"{name}: already trained, kept as it is"
                f"{'; exported its ONNX files' if exported else ''}")
            continue
        resume = (run_dir / rundir.STATE_FILE).is_file()
        log(f"{name}: {'resuming' if resume else 'training'} -> {run_dir}")
        train(demo_config(name), run_dir, resume=resume, log=log,
              progress=functools.partial(progress, name) if progress else None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--only", nargs="+", choices=list(DEMO_RUNS))
    args = parser.parse_args(argv)
    from training.trainer import TrainingStopped

    try:
        train_demo_runs(args.runs_dir, args.only)
    except TrainingStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except rundir.RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
