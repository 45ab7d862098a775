"""The demo runs a fresh install trains: the default VAE, a plain autoencoder with the
same backbone, a VAE with a larger latent space, and a beta = 4 VAE of that size with KL
warm-up and a deeper decoder (dead dimensions), so the app can contrast them.

``python -m training.demo [--runs-dir runs] [--only NAME ...] [--jobs N]`` trains whichever
of them are missing (a complete run directory is never retrained or overwritten; one
trained before ONNX export gets its ONNX files). It prints "run k of n" as each run starts
and, after every epoch, how long is left: measured epoch times so far, scaled by each
remaining run's size (its weights per sample), plus the measured fixed cost of a run
(start-up, evaluation, saving, ONNX export). ``--jobs`` runs that many at once in worker
processes, each on one thread (default: one per core).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training import rundir
from training.config import TrainConfig

# name -> overrides of TrainConfig's defaults (which are the demo VAE itself)
DEMO_RUNS: dict[str, dict[str, Any]] = {
    "demo-vae-z2": {},
    "demo-ae-z2": {"model": "ae"},
    "demo-vae-z16": {"latent_dim": 16},
    # beta = 4 with a KL warm-up over the first half of the run and the deeper 2 x 512
    # decoder of the 2-D runs: the rate-distortion lesson's low-rate point, its training
    # curves show the warm-up ramp, and the strong KL pressure on a deep decoder leaves dead
    # dimensions for the latent-health lesson (demo-vae-z16's single wide layer keeps all
    # 16 alive)
    "demo-vae-z16-beta4": {"latent_dim": 16, "beta": 4.0, "kl_warmup": 6,
                           "hidden_layers": 2, "hidden_dim": 512},
}
FIXED_COST_GUESS_S = 4.0  # per run, until one has been measured: start-up, saves, ONNX export


def demo_config(name: str) -> TrainConfig:
    return TrainConfig(**DEMO_RUNS[name])


def is_complete(run_dir: Path) -> bool:
    try:
        return rundir.read_config(run_dir).status == "complete" and \
            (run_dir / rundir.WEIGHTS_FILE).is_file()
    except rundir.RunDirError:
        return False


def size_per_sample(config: TrainConfig, image_shape: tuple[int, int, int] = (1, 28, 28)
                    ) -> float:
    """Weights of the model: its multiply-adds per sample for an MLP, the unit in which the
    time left is scaled from one run to another."""
    pixels = math.prod(image_shape)
    hidden = [config.hidden_dim] * config.hidden_layers
    encoder = [pixels, *hidden]
    decoder = [config.latent_dim, *hidden, pixels]
    heads = hidden[-1] * config.latent_dim * (2 if config.model == "vae" else 1)
    return float(sum(a * b for a, b in zip(encoder[:-1], encoder[1:], strict=False))
                 + sum(a * b for a, b in zip(decoder[:-1], decoder[1:], strict=False)) + heads)


@dataclass
class TimeLeft:
    """An honest estimate of the time the remaining demo runs need, from what was measured:
    seconds per epoch per unit of model size (mean over every epoch finished so far) and
    the fixed cost of a run (wall time minus its epochs' time, once one has finished)."""

    plan: dict[str, TrainConfig]
    jobs: int = 1
    epoch_seconds: float = 0.0  # sum of measured epoch times ...
    epoch_units: float = 0.0  # ... and of their sizes (size_per_sample per epoch)
    fixed: list[float] = field(default_factory=list)  # measured per-run fixed costs
    done_epochs: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def epoch_done(self, name: str, row: dict[str, Any]) -> None:
        self.done_epochs[name] = int(row["epoch"])
        self.epoch_seconds += float(row["seconds"])
        self.epoch_units += size_per_sample(self.plan[name])

    def run_done(self, name: str, wall: float, epoch_seconds: float) -> None:
        self.finished.add(name)
        self.fixed.append(max(0.0, wall - epoch_seconds))

    def seconds_left(self) -> float | None:
        if self.epoch_units == 0:
            return None
        per_unit = self.epoch_seconds / self.epoch_units
        fixed = sum(self.fixed) / len(self.fixed) if self.fixed else FIXED_COST_GUESS_S
        total = 0.0
        for name, config in self.plan.items():
            if name in self.finished:
                continue
            epochs_left = config.epochs - self.done_epochs.get(name, 0)
            total += epochs_left * size_per_sample(config) * per_unit + fixed
        return total / max(1, min(self.jobs, len(self.plan) - len(self.finished)))

    def describe(self) -> str:
        left = self.seconds_left()
        if left is None:
            return "time left: measuring the first epoch"
        return f"about {fmt_seconds(left)} left"


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def default_jobs() -> int:
    """One worker per core. Each worker trains on one thread, and a one-thread process never
    waits at an OpenMP barrier for a thread that shares its core with a neighbour, so a busy
    machine slows the workers down in proportion, without the collapse that a two-thread
    process suffers there."""
    from training.trainer import default_threads

    return default_threads()


def _epoch_line(total: int, index: dict[str, int], left: TimeLeft, name: str,
                row: dict[str, Any], epochs: int) -> str:
    loss = row.get("test_loss")
    return (f"run {index[name]} of {total} ({name}): epoch {row['epoch']}/{epochs}, test "
            f"-elbo {loss:.1f} nats | {left.describe()}")


def _train_one(name: str, run_dir: str, threads: int, queue: Any) -> None:
    """Worker process: train one demo run, reporting every epoch on ``queue``."""
    from training.trainer import TrainingStopped, train

    config = demo_config(name)
    config.threads = threads
    resume = (Path(run_dir) / rundir.STATE_FILE).is_file()
    try:
        train(config, run_dir, resume=resume, log=lambda line: None,
              progress=lambda row: queue.put(("epoch", name, row)), show_progress_bar=False)
    except TrainingStopped as exc:
        queue.put(("stopped", name, {"message": str(exc), "code": exc.exit_code}))
        return
    except KeyboardInterrupt:
        queue.put(("stopped", name, {"message": "interrupted", "code": 130}))
        return
    except Exception as exc:  # reported by the parent, one line
        queue.put(("stopped", name, {"message": f"{type(exc).__name__}: {exc}", "code": 1}))
        return
    queue.put(("done", name, {}))


def train_demo_runs(runs_dir: str | Path = "runs", only: list[str] | None = None,
                    log: Callable[[str], None] = print,
                    progress: Callable[[str, dict[str, Any]], None] | None = None,
                    jobs: int = 1) -> list[Path]:
    """Train the missing demo runs into ``runs_dir``; returns their directories. ``jobs``
    above 1 trains that many at once in worker processes (one thread each)."""
    from training.export import export_run

    runs_dir = Path(runs_dir)
    names = only or list(DEMO_RUNS)
    out = [runs_dir / name for name in names]
    todo: list[str] = []
    for name in names:
        run_dir = runs_dir / name
        if is_complete(run_dir):
            exported = export_run(run_dir)  # only when its ONNX files are missing or stale
            log(f"{name}: already trained, kept as it is"
                f"{'; exported its ONNX files' if exported else ''}")
        else:
            todo.append(name)
    if not todo:
        return out
    jobs = max(1, min(jobs, len(todo)))
    left = TimeLeft({name: demo_config(name) for name in todo}, jobs=jobs)
    index = {name: i + 1 for i, name in enumerate(todo)}
    if jobs == 1:
        _train_in_process(todo, runs_dir, left, index, log, progress)
    else:
        _train_in_workers(todo, runs_dir, left, index, log, progress, jobs)
    return out


def _train_in_process(todo: list[str], runs_dir: Path, left: TimeLeft, index: dict[str, int],
                      log: Callable[[str], None],
                      progress: Callable[[str, dict[str, Any]], None] | None) -> None:
    from training.trainer import train

    for name in todo:
        run_dir = runs_dir / name
        resume = (run_dir / rundir.STATE_FILE).is_file()
        log(f"run {index[name]} of {len(todo)}: {name}, "
            f"{'resuming' if resume else 'training'} -> {run_dir} | {left.describe()}")
        config = demo_config(name)
        seconds: list[float] = []

        def on_epoch(row: dict[str, Any], name: str = name, config: TrainConfig = config,
                     seconds: list[float] = seconds) -> None:
            left.epoch_done(name, row)
            seconds.append(float(row["seconds"]))
            log(_epoch_line(len(todo), index, left, name, row, config.epochs))
            if progress is not None:
                progress(name, row)

        start = time.perf_counter()
        train(config, run_dir, resume=resume, log=lambda line: None, progress=on_epoch,
              show_progress_bar=False)
        left.run_done(name, time.perf_counter() - start, sum(seconds))


def _train_in_workers(todo: list[str], runs_dir: Path, left: TimeLeft, index: dict[str, int],
                      log: Callable[[str], None],
                      progress: Callable[[str, dict[str, Any]], None] | None,
                      jobs: int) -> None:
    """``jobs`` spawned processes, one thread each, fed the runs largest first (the longest
    run starts at once, so the last to finish is a short one)."""
    import multiprocessing as mp
    import queue as queue_module

    from training.trainer import TrainingStopped

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    pending = sorted(todo, key=lambda n: -size_per_sample(left.plan[n]) * left.plan[n].epochs)
    running: dict[str, tuple[Any, float, list[float]]] = {}
    failure: tuple[str, str, int] | None = None

    def start_next() -> None:
        name = pending.pop(0)
        run_dir = runs_dir / name
        resume = (run_dir / rundir.STATE_FILE).is_file()
        log(f"run {index[name]} of {len(todo)}: {name}, "
            f"{'resuming' if resume else 'training'} -> {run_dir} "
            f"({jobs} at once) | {left.describe()}")
        proc = ctx.Process(target=_train_one, args=(name, str(run_dir), 1, messages),
                           daemon=True)
        proc.start()
        running[name] = (proc, time.perf_counter(), [])

    try:
        while pending and len(running) < jobs:
            start_next()
        while running:
            try:
                kind, name, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                for name, (proc, _, _) in list(running.items()):
                    if not proc.is_alive() and proc.exitcode not in (0, None):
                        running.pop(name)
                        failure = failure or (name, f"worker exited with {proc.exitcode}", 1)
                continue
            if kind == "epoch":
                left.epoch_done(name, payload)
                running[name][2].append(float(payload["seconds"]))
                log(_epoch_line(len(todo), index, left, name, payload, left.plan[name].epochs))
                if progress is not None:
                    progress(name, payload)
                continue
            proc, started, seconds = running.pop(name)
            proc.join()
            if kind == "stopped":
                failure = failure or (name, payload["message"], int(payload["code"]))
                continue
            left.run_done(name, time.perf_counter() - started, sum(seconds))
            if pending and failure is None:
                start_next()
    except KeyboardInterrupt:  # the workers got the same SIGINT: they save and stop
        for proc, _, _ in running.values():
            proc.join()
        raise
    if failure is not None:
        name, message, code = failure
        raise TrainingStopped(f"{name}: {message}", code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--only", nargs="+", choices=list(DEMO_RUNS))
    parser.add_argument("--jobs", type=int, default=0,
                        help="runs trained at once, one thread each (0 = one per core)")
    args = parser.parse_args(argv)
    from training.cli import passive_openmp

    passive_openmp()  # before torch loads; the spawned workers inherit it
    from training.trainer import TrainingStopped

    jobs = args.jobs if args.jobs > 0 else default_jobs()
    started = time.perf_counter()
    try:
        train_demo_runs(args.runs_dir, args.only, log=lambda line: print(line, flush=True),
                        jobs=jobs)
    except TrainingStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; each run keeps its last finished epoch (run the same "
              "command again to continue)", file=sys.stderr)
        return 130
    except rundir.RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"demo runs ready in {args.runs_dir} ({fmt_seconds(time.perf_counter() - started)})",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
