"""Training jobs started from the app: ``python -m training`` in its own process.

The app never trains in its own process: :func:`start_job` launches the CLI in a new
process group with ``--threads 1`` (the app stays responsive on a small machine), its
output going to a log file. Progress needs no IPC: :func:`poll_job` reads the run
directory the trainer writes atomically after every epoch (``config.json``'s status and
epochs_completed, ``metrics.jsonl``) plus the process's exit code. :func:`cancel_job`
sends SIGINT to the process group; the trainer stops between batches and keeps the last
finished epoch. A small JSON record per job lets a restarted app find its jobs again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from training.config import DATASETS, MODELS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LIMITS = {"latent_dim": (1, 512), "epochs": (1, 1000), "kl_warmup": (0, 1000)}
MAX_BETA = 1000.0
MAX_RUNNING = 2  # more parallel jobs than this would starve the app on a 2-core machine
FORM_DATASETS = DATASETS  # what the form offers; "folder:PATH" is typed in


@dataclass
class TrainOptions:
    """The options the app's training form exposes (the rest keep the CLI defaults)."""

    name: str
    dataset: str = "mnist5k"
    model: str = "vae"
    latent_dim: int = 2
    beta: float = 1.0
    kl_warmup: int = 0
    epochs: int = 30
    hidden_dim: int | None = None  # None: the CLI default
    seed: int = 0

    def problems(self, runs_dir: str | Path) -> list[str]:
        """Every reason these options cannot start a job, in plain words (empty: fine)."""
        out = []
        if not NAME_PATTERN.match(self.name or ""):
            out.append(f"Run name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                       f"starting with a letter or digit (it becomes a folder name).")
        elif (Path(runs_dir) / self.name).exists():
            out.append(f"Run name {self.name!r}: {Path(runs_dir) / self.name} already exists; "
                       f"pick another name (existing runs are never overwritten).")
        if self.dataset.startswith("folder:"):
            folder = Path(self.dataset[len("folder:"):]).expanduser()
            if not self.dataset[len("folder:"):].strip():
                out.append("Data set folder: give a path, as in folder:./my_images.")
            elif not folder.is_dir():
                out.append(f"Data set folder {str(folder)!r} does not exist or is not a folder.")
        elif self.dataset not in DATASETS:
            out.append(f"Data set {self.dataset!r} is unknown; choose one of "
                       f"{', '.join(DATASETS)} or folder:PATH.")
        if self.model not in MODELS:
            out.append(f"Model {self.model!r} is unknown; choose one of {', '.join(MODELS)}.")
        for key, (low, high) in LIMITS.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                out.append(f"{key.replace('_', ' ').capitalize()} must be a whole number from "
                           f"{low} to {high}, got {value!r}.")
        if not isinstance(self.beta, (int, float)) or not 0 <= self.beta <= MAX_BETA \
                or self.beta != self.beta:
            out.append(f"Beta must be a number from 0 to {MAX_BETA:g}, got {self.beta!r}.")
        if isinstance(self.kl_warmup, int) and isinstance(self.epochs, int) and \
                self.kl_warmup > self.epochs:
            out.append(f"KL warm-up ({self.kl_warmup} epochs) is longer than training "
                       f"({self.epochs} epochs): beta would never reach its value.")
        if self.model == "ae" and (self.beta != 1.0 or self.kl_warmup):
            out.append("A plain autoencoder has no KL term: beta and warm-up do not apply; "
                       "set beta to 1 and warm-up to 0, or choose the VAE.")
        if self.hidden_dim is not None and not (isinstance(self.hidden_dim, int)
                                                and 1 <= self.hidden_dim <= 4096):
            out.append(f"Hidden width must be a whole number from 1 to 4096, "
                       f"got {self.hidden_dim!r}.")
        return out

    def argv(self, run_dir: Path) -> list[str]:
        args = [sys.executable, "-m", "training", "--dataset", self.dataset,
                "--model", self.model, "--latent-dim", str(self.latent_dim),
                "--beta", repr(float(self.beta)), "--kl-warmup", str(self.kl_warmup),
                "--epochs", str(self.epochs), "--seed", str(self.seed), "--threads", "1",
                "--device", "cpu", "--out", str(run_dir)]
        if self.hidden_dim is not None:
            args += ["--hidden-dim", str(self.hidden_dim)]
        return args


@dataclass
class TrainJob:
    """One launched training process (its record is saved as JSON next to its log)."""

    name: str
    run_dir: str
    log_path: str
    pid: int
    argv: list[str]
    epochs: int
    started: float
    cancel_requested: bool = False
    returncode: int | None = None
    _process: Any = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_process"}


@dataclass
class JobStatus:
    """What the progress panel shows."""

    state: str  # starting | training | complete | cancelled | failed
    epochs_completed: int
    epochs: int
    metrics: list[dict[str, Any]]
    message: str  # one line: what happened (the error for a failed job)
    log_tail: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.epochs_completed / max(1, self.epochs))

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "cancelled", "failed")


def jobs_folder(runs_dir: str | Path) -> Path:
    """Logs and job records live in ``<runs_dir>/.jobs`` (hidden from the run list)."""
    return Path(runs_dir) / ".jobs"


def _write_record(job: TrainJob, folder: Path) -> None:
    from training.rundir import atomic_write_text

    atomic_write_text(folder / f"{job.name}.json", json.dumps(job.record(), indent=2))


def start_job(options: TrainOptions, runs_dir: str | Path,
              running: list[TrainJob] | None = None) -> TrainJob:
    """Validate ``options`` and launch the training process. Raises ValueError listing
    every problem (nothing is started then)."""
    runs_dir = Path(runs_dir)
    problems = options.problems(runs_dir)
    active = [j for j in (running or []) if not poll_job(j).finished]
    if len(active) >= MAX_RUNNING:
        problems.append(f"{len(active)} trainings are already running "
                        f"({', '.join(j.name for j in active)}); wait for one to finish or "
                        f"cancel it: more would slow the app down for everyone.")
    if problems:
        raise ValueError("\n".join(problems))
    folder = jobs_folder(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run_dir = runs_dir / options.name
    log_path = folder / f"{options.name}.log"
    argv = options.argv(run_dir)
    # ``python -m training`` finds the installed package; the process runs in the app's
    # working directory, so relative paths (runs folder, folder:PATH, data) mean the same
    # to both.
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    job = TrainJob(name=options.name, run_dir=str(run_dir), log_path=str(log_path),
                   pid=process.pid, argv=argv, epochs=options.epochs, started=time.time(),
                   _process=process)
    _write_record(job, folder)
    return job


def _returncode(job: TrainJob) -> int | None:
    """The exit code when the process has ended, else None."""
    if job.returncode is not None:
        return job.returncode
    if job._process is not None:
        job.returncode = job._process.poll()
        return job.returncode
    # a job found again after an app restart: no handle, only the pid
    with contextlib.suppress(ChildProcessError, OSError):
        pid, status = os.waitpid(job.pid, os.WNOHANG)  # reaps it if it is our child
        if pid == job.pid:
            job.returncode = os.waitstatus_to_exitcode(status)
            return job.returncode
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return -1  # gone; the run directory says how it ended
    except PermissionError:
        pass
    return None


def _log_tail(path: str | Path, lines: int = 12) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _error_line(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        if "error:" in line.lower() or "Error" in line:
            return line.strip()
    return tail.splitlines()[-1].strip() if tail.strip() else "no output"


def poll_job(job: TrainJob) -> JobStatus:
    """Read the run directory and the process state; never raises for a half-written run."""
    from training import rundir

    info = None
    with contextlib.suppress(rundir.RunDirError, OSError):
        info = rundir.read_config(job.run_dir)
    metrics: list[dict[str, Any]] = []
    with contextlib.suppress(rundir.RunDirError, OSError):
        metrics = rundir.read_metrics(job.run_dir)
    done = info.epochs_completed if info else len(metrics)
    code = _returncode(job)
    tail = _log_tail(job.log_path)
    if code is None:
        state = "training" if info is not None else "starting"
        message = (f"epoch {done} of {job.epochs} finished" if info is not None
                   else "loading the data set and building the model")
        return JobStatus(state, done, job.epochs, metrics, message, tail)
    if code == 0 or (info is not None and info.status == "complete"):
        return JobStatus("complete", done, job.epochs, metrics,
                         f"finished: {done} epochs in {job.run_dir}", tail)
    if job.cancel_requested or code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        kept = (f"the last finished epoch ({done}) is kept in {job.run_dir}" if done
                else "no epoch had finished, so nothing was kept")
        return JobStatus("cancelled", done, job.epochs, metrics, f"cancelled: {kept}", tail)
    why = info.message if info is not None and info.message else _error_line(tail)
    return JobStatus("failed", done, job.epochs, metrics,
                     f"training failed (exit code {code}): {why}", tail)


def cancel_job(job: TrainJob) -> bool:
    """Ask the training process group to stop (SIGINT). False if it had already ended."""
    if _returncode(job) is not None:
        return False
    job.cancel_requested = True
    try:
        os.killpg(job.pid, signal.SIGINT)  # the pid leads its own group (start_new_session)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        _write_record(job, Path(job.log_path).parent)
    return True


def wait_job(job: TrainJob, timeout: float) -> JobStatus:
    """Block until the job ends or ``timeout`` seconds pass (tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = poll_job(job)
        if status.finished:
            return status
        time.sleep(0.2)
    return poll_job(job)


def find_jobs(runs_dir: str | Path) -> list[TrainJob]:
    """Job records in ``<runs_dir>/.jobs``, newest first (skipping unreadable ones)."""
    out = []
    for path in sorted(jobs_folder(runs_dir).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(path.read_text(encoding="utf-8"))
            out.append(TrainJob(**{k: data[k] for k in (
                "name", "run_dir", "log_path", "pid", "argv", "epochs", "started")},
                cancel_requested=bool(data.get("cancel_requested", False))))
    return sorted(out, key=lambda j: -j.started)
