"""Training jobs started from the app: ``python -m training`` in its own process.

The app never trains in its own process: a job launches the CLI in a new process group
with ``--threads 1``, its output going to a log file. Progress needs no IPC:
:func:`poll_job` reads the run directory the trainer writes atomically after every epoch.

Everything a browser sends and everything on disk is untrusted, so:

- **One lock, one queue.** :func:`submit` checks the limits of a :class:`TrainPolicy`
  (per-job sizes, jobs at once, queue length, jobs per visitor, disk used by all runs) and
  claims the run folder (``os.mkdir``: of two same-name Starts one wins) under an
  ``fcntl.flock`` on ``<runs>/.jobs/.lock``, which holds across threads and app processes
  alike. Jobs beyond the concurrency limit wait as ``queued`` records; :func:`schedule`
  starts the oldest when a slot frees (a thread per launched child does so when it ends).
- **Records are written only by the app** (``<runs>/.jobs/<name>.json``) and read
  defensively: a record whose JSON or types are wrong is ignored with one log line. A
  record stores the owner (a hash of the session's token), the child's pid and start time
  (``/proc/<pid>/stat`` field 22) and, once it ended, its exit status.
- **Only our own children are signalled.** Every launched ``Popen`` is kept in a
  process-wide registry; :func:`cancel_job` sends SIGINT only to a registry child whose
  pid and start time match the record, and only for its owner or the teacher. A record
  read from disk naming any other pid is never signalled.
- **Logs come only from files the app created**: ``<runs>/.jobs/<name>.log``, derived
  from the validated job name, opened with ``O_NOFOLLOW``; what reaches the browser has
  the server's folders replaced by ``<runs>``, ``<data>``, ``<python>``, ``<app>``, ``~``.
- A job whose process vanished without an exit status (app and trainer both killed)
  reads "stopped unexpectedly", with the ``--resume`` command that continues it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.train_policy import LIMITS, MAX_BETA, TrainPolicy, format_bytes
from training.config import DATASETS, MODELS

__all__ = ["LIMITS", "MAX_BETA", "FORM_DATASETS", "TrainOptions", "TrainJob", "JobStatus",
           "JobRefused", "LaunchError", "submit", "start_job", "schedule", "poll_job",
           "cancel_job", "may_cancel", "list_jobs", "find_jobs", "load_job", "wait_job",
           "prune_jobs", "runs_disk_usage", "job_state", "estimate_run_bytes", "owner_id",
           "Redactor", "queue_position"]

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FORM_DATASETS = DATASETS  # built-in sets; folder data sets only under the data root
LOCK_FILE = ".lock"
RECORD_VERSION = 2
MAX_RECORD_BYTES = 64 * 1024
STATES = ("queued", "running", "ended")
FINISHED = ("complete", "cancelled", "failed", "stopped")
RESUME_COMMAND = "python -m training --resume {run}"
SECRET_ENV = ("VAE_TEACHER_TOKEN",)  # not passed on to the trainer


class JobRefused(ValueError):
    """The job was not started: one reason per line, in plain words."""


class LaunchError(RuntimeError):
    """The process could not be started (nothing is left running)."""


# --------------------------------------------------------------------------- options

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
    hidden_layers: int | None = None  # None: the CLI default
    seed: int = 0

    def problems(self, runs_dir: str | Path, policy: TrainPolicy | None = None) -> list[str]:
        """Every reason these options cannot start a job, in plain words (empty: fine)."""
        policy = policy or TrainPolicy()
        out = []
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            out.append(f"Run name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                       f"starting with a letter or digit (it becomes a folder name).")
        elif _name_taken(Path(runs_dir), self.name):
            out.append(_taken_message(self.name))
        if not isinstance(self.dataset, str):
            out.append(f"Data set {self.dataset!r} is unknown.")
        elif self.dataset.startswith("folder:"):
            if policy.data_root is None:
                out.append("Folder data sets are not offered on this server; choose one of "
                           f"{', '.join(DATASETS)}.")
            else:
                try:
                    policy.resolve_folder(self.dataset[len("folder:"):])
                except ValueError as exc:
                    out.append(str(exc))
        elif self.dataset not in DATASETS:
            out.append(f"Data set {self.dataset!r} is unknown; choose one of "
                       f"{', '.join(DATASETS)}"
                       f"{' or a folder:NAME under the data root' if policy.data_root else ''}.")
        if self.model not in MODELS:
            out.append(f"Model {self.model!r} is unknown; choose one of {', '.join(MODELS)}.")
        for key, (low, high) in LIMITS.items():
            value = getattr(self, key)
            if value is None and key in ("hidden_dim", "hidden_layers"):
                continue
            if not _is_int(value) or not low <= value <= high:
                out.append(f"{key.replace('_', ' ').capitalize()} must be a whole number from "
                           f"{low} to {high}, got {value!r}.")
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or \
                not 0 <= self.beta <= MAX_BETA or self.beta != self.beta:
            out.append(f"Beta must be a number from 0 to {MAX_BETA:g}, got {self.beta!r}.")
        if _is_int(self.kl_warmup) and _is_int(self.epochs) and self.kl_warmup > self.epochs:
            out.append(f"KL warm-up ({self.kl_warmup} epochs) is longer than training "
                       f"({self.epochs} epochs): beta would never reach its value.")
        if self.model == "ae" and (self.beta != 1.0 or self.kl_warmup):
            out.append("A plain autoencoder has no KL term: beta and warm-up do not apply; "
                       "set beta to 1 and warm-up to 0, or choose the VAE.")
        if not _is_int(self.seed) or not 0 <= self.seed < 2 ** 31:
            out.append(f"Seed must be a whole number from 0 to {2 ** 31 - 1}, got {self.seed!r}.")
        return out

    def resolved(self, policy: TrainPolicy) -> TrainOptions:
        """These options with a folder data set as its resolved absolute path (call after
        :meth:`problems` found none)."""
        if not self.dataset.startswith("folder:"):
            return dataclasses.replace(self)
        folder = policy.resolve_folder(self.dataset[len("folder:"):])
        return dataclasses.replace(self, dataset=f"folder:{folder}")

    def argv(self, run_dir: Path | str) -> list[str]:
        args = [sys.executable, "-m", "training", "--dataset", self.dataset,
                "--model", self.model, "--latent-dim", str(self.latent_dim),
                "--beta", repr(float(self.beta)), "--kl-warmup", str(self.kl_warmup),
                "--epochs", str(self.epochs), "--seed", str(self.seed), "--threads", "1",
                "--device", "cpu", "--out", str(run_dir)]
        if self.hidden_dim is not None:
            args += ["--hidden-dim", str(self.hidden_dim)]
        if self.hidden_layers is not None:
            args += ["--hidden-layers", str(self.hidden_layers)]
        return args

    @classmethod
    def from_record(cls, data: Any) -> TrainOptions:
        """Options from a record's ``options`` (untrusted): ValueError unless every field
        has its type."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("options must be an object with a name")
        kinds: dict[str, tuple[type, ...]] = {
            "name": (str,), "dataset": (str,), "model": (str,), "latent_dim": (int,),
            "beta": (int, float), "kl_warmup": (int,), "epochs": (int,),
            "hidden_dim": (int, type(None)), "hidden_layers": (int, type(None)),
            "seed": (int,)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in kinds or not isinstance(value, kinds[key]) or isinstance(value, bool):
                raise ValueError(f"options.{key}: unexpected {value!r}")
            values[key] = value
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _taken_message(name: str) -> str:
    return (f"Run name {name!r}: a run named {name!r} already exists (or is being trained); "
            f"pick another name (existing runs are never overwritten).")


def _name_taken(runs_dir: Path, name: str) -> bool:
    run = runs_dir / name
    return run.exists() or run.is_symlink() or (jobs_folder(runs_dir) / f"{name}.json").exists()


def estimate_run_bytes(options: TrainOptions) -> int:
    """About how much disk a finished run of these options takes: weights (4 bytes a
    parameter), the optimiser state (3x), the ONNX files (1x), latents and slack."""
    image = 64 if options.dataset == "digits" else 28 * 28
    layers = options.hidden_layers or (2 if options.latent_dim <= 2 else 1)
    hidden = options.hidden_dim or (512 if layers >= 2 else 1024)
    z = options.latent_dim
    encoder = image * hidden + (layers - 1) * hidden * hidden + hidden * 2 * z
    decoder = z * hidden + (layers - 1) * hidden * hidden + hidden * image
    return 26 * (encoder + decoder) + 4 * 1024 ** 2


# --------------------------------------------------------------------------- records

def jobs_folder(runs_dir: str | Path) -> Path:
    """Logs and job records live in ``<runs_dir>/.jobs`` (hidden from the run list)."""
    return Path(runs_dir) / ".jobs"


def owner_id(token: str) -> str:
    """What a record stores for a session token (never the token itself); "" for none."""
    if not token:
        return ""
    return hashlib.sha256(b"vae-explorer-job-owner\x00" + token.encode("utf-8")).hexdigest()


@dataclass
class TrainJob:
    """One job: its record in ``<runs>/.jobs/<name>.json``. ``run_dir``, ``log_path`` and
    ``argv`` are derived from the validated name and options, never read from disk."""

    name: str
    runs_dir: str
    options: dict[str, Any]
    owner: str = ""
    state: str = "queued"  # queued | running | ended
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    pid_start: int | None = None  # the process's start time, clock ticks after boot
    returncode: int | None = None
    cancel_requested: bool = False
    error: str = ""  # why it could not be started

    @property
    def epochs(self) -> int:
        return int(self.options.get("epochs", 1))

    @property
    def run_dir(self) -> str:
        return str(Path(self.runs_dir) / self.name)

    @property
    def log_path(self) -> Path:
        return jobs_folder(self.runs_dir) / f"{self.name}.log"

    @property
    def record_path(self) -> Path:
        return jobs_folder(self.runs_dir) / f"{self.name}.json"

    @property
    def argv(self) -> list[str]:
        return TrainOptions.from_record(self.options).argv(self.run_dir)

    def record(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "runs_dir"}
        data["version"] = RECORD_VERSION
        return data


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "options": (dict,), "owner": (str,), "state": (str,),
    "created": (int, float), "started": (int, float, type(None)),
    "ended": (int, float, type(None)), "pid": (int, type(None)),
    "pid_start": (int, type(None)), "returncode": (int, type(None)),
    "cancel_requested": (bool,), "error": (str,)}
_warned: set[tuple[str, int, int]] = set()


def _parse_record(data: Any, name: str, runs_dir: Path) -> TrainJob:
    """A record from disk, every field checked: ValueError names the first bad one."""
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        raise ValueError("not a job record of this app version")
    values: dict[str, Any] = {}
    for key, kinds in _RECORD_TYPES.items():
        value = data.get(key)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError(f"{key}: unexpected {value!r}")
        values[key] = value
    if values["name"] != name or values["state"] not in STATES:
        raise ValueError("name or state does not fit")
    if values["pid"] is not None and values["pid"] <= 1:
        raise ValueError(f"pid: unexpected {values['pid']!r}")
    if values["owner"] and not re.fullmatch(r"[0-9a-f]{64}", values["owner"]):
        raise ValueError("owner: not an owner id")
    options = TrainOptions.from_record(values["options"])
    if options.name != name or not _is_int(options.epochs) or options.epochs < 1:
        raise ValueError("options do not fit the record")
    return TrainJob(runs_dir=str(runs_dir), **values)


def _read_small_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes (no symlinks, FIFOs or devices; at most ``limit`` bytes)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def _load(runs_dir: Path, name: str) -> TrainJob | None:
    if jobs_folder(runs_dir).is_symlink():
        return None  # records and logs are read only from the folder the app made
    path = jobs_folder(runs_dir) / f"{name}.json"
    try:
        data = json.loads(_read_small_file(path, MAX_RECORD_BYTES).decode("utf-8"))
        return _parse_record(data, name, runs_dir)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        with contextlib.suppress(OSError):
            st = path.lstat()
            key = (str(path), st.st_mtime_ns, st.st_size)
            if key not in _warned:
                _warned.add(key)
                log.warning("ignoring job record %s: %s", path.name, exc)
        return None


def load_job(runs_dir: str | Path, name: str) -> TrainJob | None:
    """The record of job ``name`` (one file read), None when missing or invalid."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return None
    return _load(Path(runs_dir), name)


def _record_names(runs_dir: Path) -> list[str]:
    if jobs_folder(runs_dir).is_symlink():
        return []
    try:
        entries = list(os.scandir(jobs_folder(runs_dir)))
    except OSError:
        return []
    return sorted(e.name[:-5] for e in entries
                  if e.name.endswith(".json") and NAME_PATTERN.match(e.name[:-5]))


def list_jobs(runs_dir: str | Path) -> list[TrainJob]:
    """Valid job records in ``<runs_dir>/.jobs``, newest first (bad ones are skipped with
    one log line each)."""
    runs = Path(runs_dir)
    jobs = [j for j in (_load(runs, n) for n in _record_names(runs)) if j is not None]
    return sorted(jobs, key=lambda j: (-j.created, j.name))


find_jobs = list_jobs  # the older name


def _write_record(job: TrainJob) -> None:
    from training.rundir import atomic_write_text

    atomic_write_text(job.record_path, json.dumps(job.record(), indent=2))


def _jobs_dir(runs_dir: Path) -> Path:
    """``<runs>/.jobs``, created if needed; refused when it is a symlink or not a folder."""
    folder = jobs_folder(runs_dir)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise LaunchError(f"{folder.name} in the runs folder is not a plain folder; "
                          f"the teacher must remove it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def server_lock(runs_dir: str | Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``<runs>/.jobs/.lock``: serialises check-and-launch
    across threads (each call opens its own descriptor) and app processes."""
    folder = _jobs_dir(Path(runs_dir))
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- processes

@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    pid_start: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)


_CHILDREN: dict[tuple[str, str], _Child] = {}  # (real runs path, name) -> our own child
_CHILDREN_LOCK = threading.Lock()


def _key(runs_dir: str | Path, name: str) -> tuple[str, str]:
    return os.path.realpath(runs_dir), name


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks after boot), None when
    the process does not exist, is a zombie, or there is no /proc."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    fields_after = text[text.rfind(")") + 2:].split()  # field 3 onwards
    if len(fields_after) < 20 or fields_after[0] in ("Z", "X"):
        return None
    try:
        return int(fields_after[19])
    except ValueError:
        return None


def _our_child(job: TrainJob) -> _Child | None:
    """The registry child this record describes: same pid, same start time."""
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(_key(job.runs_dir, job.name))
    if child is None or job.pid is None or child.popen.pid != job.pid:
        return None
    if child.pid_start is not None and job.pid_start != child.pid_start:
        return None
    return child


def _process_state(job: TrainJob) -> tuple[str, int | None]:
    """("queued" | "running" | "ended" | "lost", exit code). "lost": the record says
    running but its process is gone without an exit status (or its pid now belongs to
    another process)."""
    if job.state != "running":
        return job.state, job.returncode
    child = _our_child(job)
    if child is not None:
        with child.lock:
            code = child.popen.poll()
        if code is None:
            return "running", None
        job.returncode = code
        return "ended", code
    if job.pid is not None and job.pid_start is not None and \
            process_start_time(job.pid) == job.pid_start:
        return "running", None  # launched by another app process (or an earlier one)
    return "lost", None


def job_state(job: TrainJob) -> str:
    """"queued", "running", "ended" or "lost" (its process vanished without an exit
    status): the record's state checked against the process it names."""
    return _process_state(job)[0]


def _reap(runs_dir: Path, name: str, child: _Child, policy: TrainPolicy) -> None:
    """Thread body: wait for the child, record its exit status, start queued jobs."""
    pid = child.popen.pid
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # wait; do not reap yet
    except ChildProcessError:
        pass  # already reaped by a poll
    except (OSError, AttributeError):  # no waitid: poll, never blocking under the lock
        while True:
            with child.lock:
                if child.popen.poll() is not None:
                    break
            time.sleep(0.5)
    with child.lock:  # reap while cancel_job cannot be signalling this pid
        code = child.popen.wait()
    try:
        with server_lock(runs_dir):
            job = _load(runs_dir, name)
            if job is not None and job.state == "running" and job.pid == pid:
                job.state, job.returncode, job.ended = "ended", code, time.time()
                _write_record(job)
            _schedule_locked(runs_dir, policy)
    except Exception as exc:  # a full disk: the status is still known in this process
        log.warning("job %s ended (exit %s) but its record was not updated: %s",
                    name, code, exc)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        popen.kill()
    popen.wait()


def _launch_locked(job: TrainJob, policy: TrainPolicy) -> None:
    """Start a queued job's process (the server lock is held). On any failure nothing is
    left running and LaunchError says why in plain words."""
    runs = Path(job.runs_dir)
    options = TrainOptions.from_record(job.options)
    if options.dataset.startswith("folder:"):
        try:  # the folder may have changed (into a link leading out) since it was queued
            policy.resolve_folder(options.dataset[len("folder:"):])
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    run_dir = Path(job.run_dir)
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise LaunchError(f"the run folder of {job.name!r} is no longer the folder the app "
                          f"made for it")
    popen: subprocess.Popen[bytes] | None = None
    fd = -1
    try:
        with contextlib.suppress(FileNotFoundError):
            job.log_path.unlink()  # an old log (or a planted link) of that name
        fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        # ``python -m training`` finds the installed package; it runs in the app's working
        # directory, so the built-in data sets' relative paths mean the same to both.
        popen = subprocess.Popen(options.argv(run_dir), stdout=fd, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=_child_env(),
                                 start_new_session=True, close_fds=True)
        child = _Child(popen, process_start_time(popen.pid))
        job.state, job.pid, job.pid_start = "running", popen.pid, child.pid_start
        job.started = time.time()
        _write_record(job)  # a full disk fails here: the child is killed below
        with _CHILDREN_LOCK:
            _CHILDREN[_key(runs, job.name)] = child
        threading.Thread(target=_reap, args=(runs, job.name, child, policy),
                         name=f"vae-job-{job.name}", daemon=True).start()
    except (OSError, RuntimeError) as exc:
        if popen is not None:
            _kill_group(popen)
            with _CHILDREN_LOCK:
                if (c := _CHILDREN.get(_key(runs, job.name))) is not None and c.popen is popen:
                    del _CHILDREN[_key(runs, job.name)]
        why = _describe(exc)
        raise LaunchError(f"Training {job.name!r} could not be started: {why}.") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the server's disk is full (ask the teacher to free some space)"
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            return "the server cannot start more processes right now; try again later"
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def _mark_not_started(job: TrainJob, message: str) -> None:
    """A job that could not start: record why (or drop the record if even that fails),
    and give back its empty run folder."""
    job.state, job.ended, job.error, job.pid, job.pid_start = "ended", time.time(), \
        message, None, None
    try:
        _write_record(job)
    except OSError:
        with contextlib.suppress(OSError):
            job.record_path.unlink()
    with contextlib.suppress(OSError):
        Path(job.run_dir).rmdir()  # only when empty


def _schedule_locked(runs_dir: Path, policy: TrainPolicy) -> dict[str, str]:
    """Start the oldest queued jobs while slots are free. Returns {name: error} for jobs
    that could not start."""
    jobs = list_jobs(runs_dir)
    running = sum(1 for j in jobs if _process_state(j)[0] == "running")
    errors = {}
    for job in sorted((j for j in jobs if j.state == "queued"), key=lambda j: j.created):
        if running >= policy.max_running:
            break
        try:
            _launch_locked(job, policy)
            running += 1
        except LaunchError as exc:
            errors[job.name] = str(exc)
            _mark_not_started(job, str(exc))
    return errors


def schedule(runs_dir: str | Path, policy: TrainPolicy) -> dict[str, str]:
    """Start queued jobs while fewer than ``policy.max_running`` run (any app process may
    call it; the lock makes that safe). Returns {name: error} for jobs that failed."""
    with server_lock(runs_dir):
        return _schedule_locked(Path(runs_dir), policy)


# --------------------------------------------------------------------------- disk

def tree_bytes(path: str | Path) -> int:
    """Disk used under ``path`` (symlinks not followed)."""
    total = 0
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def runs_disk_usage(runs_dir: str | Path) -> int:
    return tree_bytes(runs_dir)


# --------------------------------------------------------------------------- submit

def submit(options: TrainOptions, runs_dir: str | Path, policy: TrainPolicy,
           owner_token: str = "", teacher: bool = False) -> TrainJob:
    """Validate ``options`` against ``policy``, claim the run folder and start the job, or
    queue it when ``policy.max_running`` jobs run already. Raises JobRefused (one reason
    a line; nothing is claimed) or LaunchError (nothing is left running)."""
    runs = Path(runs_dir)
    if not policy.enabled:
        raise JobRefused("Training from the browser is turned off on this server.")
    problems = options.problems(runs, policy)
    if problems:
        raise JobRefused("\n".join(problems))
    options = options.resolved(policy)
    if options.dataset.startswith("folder:") and policy.data_root is not None:
        problem = policy.links_leaving_root(Path(options.dataset[len("folder:"):]))
        if problem:
            raise JobRefused(f"Data set folder: {problem}.")
    owner = owner_id(owner_token)
    runs.mkdir(parents=True, exist_ok=True)
    with server_lock(runs):
        prune_jobs(runs, policy, locked=True)
        jobs = list_jobs(runs)
        states = {j.name: _process_state(j)[0] for j in jobs}
        running = [j for j in jobs if states[j.name] == "running"]
        queued = [j for j in jobs if states[j.name] == "queued"]
        refusals = []
        mine = [j for j in running + queued if owner and hmac.compare_digest(j.owner, owner)]
        if not teacher and len(mine) >= policy.max_per_visitor:
            refusals.append(f"You have {len(mine)} job(s) running or waiting "
                            f"({', '.join(j.name for j in mine)}); the limit is "
                            f"{policy.max_per_visitor} per visitor. Wait for one to finish "
                            f"or cancel it.")
        elif len(running) >= policy.max_running and len(queued) >= policy.max_queued:
            refusals.append(f"{len(running)} jobs are running and {len(queued)} are waiting, "
                            f"the most this server allows; try again when one finishes.")
        if not refusals:
            used = runs_disk_usage(runs)
            pending = sum(max(0, estimate_run_bytes(TrainOptions.from_record(j.options))
                              - tree_bytes(j.run_dir)) for j in running + queued)
            need = estimate_run_bytes(options)
            if used + pending + need > policy.disk_cap:
                refusals.append(
                    f"Not enough room for another run: runs use {format_bytes(used)}"
                    f"{f' (+{format_bytes(pending)} for jobs under way)' if pending else ''} "
                    f"of the {format_bytes(policy.disk_cap)} this server allows, and this "
                    f"one needs about {format_bytes(need)}. Ask the teacher to delete old "
                    f"runs, or choose a smaller model.")
        if refusals:
            raise JobRefused("\n".join(refusals))
        if (jobs_folder(runs) / f"{options.name}.json").exists():
            raise JobRefused(_taken_message(options.name))
        try:
            os.mkdir(runs / options.name)  # the claim: of two same-name Starts one wins
        except FileExistsError:
            raise JobRefused(_taken_message(options.name)) from None
        except OSError as exc:
            raise LaunchError(f"Training {options.name!r} could not be started: "
                              f"{_describe(exc)}.") from None
        job = TrainJob(name=options.name, runs_dir=str(runs),
                       options=dataclasses.asdict(options), owner=owner, created=time.time())
        try:
            _write_record(job)
        except OSError as exc:
            with contextlib.suppress(OSError):
                Path(job.run_dir).rmdir()
            raise LaunchError(f"Training {job.name!r} could not be started: "
                              f"{_describe(exc)}.") from None
        errors = _schedule_locked(runs, policy)
        if job.name in errors:
            raise LaunchError(errors[job.name])
        return _load(runs, job.name) or job


def start_job(options: TrainOptions, runs_dir: str | Path, running: Any = None, *,
              policy: TrainPolicy | None = None, owner_token: str = "") -> TrainJob:
    """:func:`submit` with the policy of this environment (``running`` is ignored: the
    records on disk say what runs). Raises ValueError (JobRefused) listing every problem."""
    return submit(options, runs_dir, policy or TrainPolicy.from_env([]), owner_token)


def queue_position(runs_dir: str | Path, name: str) -> tuple[int, int]:
    """(1-based place of job ``name`` in the queue, queue length); (0, n) if not queued."""
    queued = sorted((j for j in list_jobs(runs_dir) if j.state == "queued"),
                    key=lambda j: j.created)
    names = [j.name for j in queued]
    return (names.index(name) + 1 if name in names else 0), len(names)


# --------------------------------------------------------------------------- prune

def prune_jobs(runs_dir: str | Path, policy: TrainPolicy, locked: bool = False,
               now: float | None = None) -> list[str]:
    """Drop the records (and logs) of ended jobs beyond the newest ``keep_finished`` or
    older than ``keep_days``, and unreadable records and stray logs older than that.
    Returns the names dropped."""
    if not locked:
        with server_lock(runs_dir):
            return prune_jobs(runs_dir, policy, locked=True, now=now)
    runs = Path(runs_dir)
    folder = jobs_folder(runs)
    now = time.time() if now is None else now
    horizon = now - policy.keep_days * 86400
    valid = {j.name: j for j in list_jobs(runs)}
    done = []
    for job in valid.values():
        state = _process_state(job)[0]
        if state in ("ended", "lost"):
            done.append((job.ended or job.started or job.created, job.name))
    done.sort(reverse=True)
    drop = {name for i, (when, name) in enumerate(done)
            if i >= policy.keep_finished or when < horizon}
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            stem, _, ext = entry.name.rpartition(".")
            if ext not in ("json", "log") or not NAME_PATTERN.match(stem) or stem in valid:
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < horizon:
                    drop.add(stem)  # an unreadable record or a log without one
    for name in drop:
        for suffix in (".json", ".log"):
            with contextlib.suppress(OSError):
                (folder / f"{name}{suffix}").unlink()
    return sorted(drop)


# --------------------------------------------------------------------------- status

@dataclass
class JobStatus:
    """What the progress panel shows."""

    state: str  # queued | starting | training | complete | cancelled | failed | stopped
    epochs_completed: int
    epochs: int
    metrics: list[dict[str, Any]]
    message: str  # one line: what happened (the error for a failed job); paths redacted
    log_tail: str  # paths redacted

    @property
    def fraction(self) -> float:
        return min(1.0, self.epochs_completed / max(1, self.epochs))

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class Redactor:
    """Replaces the server's folders in text shown to a browser: the runs folder by
    ``<runs>``, the data root by ``<data>``, the app's source by ``<app>``, Python's prefix
    by ``<python>``, the home folder by ``~``."""

    def __init__(self, runs_dir: str | Path, data_root: str | Path | None = None):
        pairs: list[tuple[str, str]] = []

        def add(path: str | Path | None, label: str) -> None:
            if not path:
                return
            for form in {os.path.abspath(path), os.path.realpath(path)}:
                if len(form) > 1:
                    pairs.append((form.rstrip("/"), label))
        add(runs_dir, "<runs>")
        add(data_root, "<data>")
        add(Path(__file__).resolve().parents[1], "<app>")
        for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
            add(prefix, "<python>")
        add(os.path.expanduser("~"), "~")
        pairs.sort(key=lambda p: -len(p[0]))
        self._pattern = re.compile("|".join(f"{re.escape(p)}(?=/|$|[^\\w.-])"
                                            for p, _ in pairs)) if pairs else None
        self._labels = dict(pairs)

    def __call__(self, text: str) -> str:
        if not self._pattern or not text:
            return text
        return self._pattern.sub(lambda m: self._labels[m.group(0)], text)


def _log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log the app created (a regular file, not followed if a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, max(0, size - 8192), os.SEEK_SET)
        text = os.read(fd, 8192).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
    return "\n".join(text.strip().splitlines()[-lines:])


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:.*)?$")


def error_line(tail: str) -> str | None:
    """The trainer's own error line in a log: ``error: ...`` (the CLI), ``...: error: ...``
    (argparse) or a traceback's last line; None when there is none (a normal log line is
    never taken for one)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error:") or ": error: " in line:
            return line
    if any(line.startswith("Traceback") for line in lines):
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line):
                return line
    return None


def resume_hint(job: TrainJob, redact: Redactor) -> str:
    return RESUME_COMMAND.format(run=redact(job.run_dir))


def poll_job(job: TrainJob, data_root: str | Path | None = None) -> JobStatus:
    """Read the run directory, the log and the process state; never raises for a
    half-written run. Paths in the message and log are redacted (``data_root``: default
    the one this server's policy names)."""
    from training import rundir

    if data_root is None:
        data_root = TrainPolicy.from_env().data_root
    redact = Redactor(job.runs_dir, data_root)
    state, code = _process_state(job)
    if state == "queued":
        return JobStatus("queued", 0, job.epochs, [], "waiting in the queue for a free slot",
                         "")
    info = None
    with contextlib.suppress(rundir.RunDirError, OSError, ValueError):
        info = rundir.read_config(job.run_dir)
    metrics: list[dict[str, Any]] = []
    with contextlib.suppress(rundir.RunDirError, OSError, ValueError):
        metrics = rundir.read_metrics(job.run_dir)
    done = info.epochs_completed if info else len(metrics)
    tail = redact(_log_tail(job.log_path))
    where = redact(job.run_dir)
    if state == "running":
        if info is not None:
            return JobStatus("training", done, job.epochs, metrics,
                             f"epoch {done} of {job.epochs} finished", tail)
        return JobStatus("starting", done, job.epochs, metrics,
                         "loading the data set and building the model", tail)
    if state == "ended" and code is None and job.error:
        return JobStatus("failed", 0, job.epochs, [], redact(job.error), tail)
    kept = (f"the last finished epoch ({done}) is kept in {where}" if done
            else "no epoch had finished, so nothing was kept")
    if code == 0 or (info is not None and info.status == "complete"):
        return JobStatus("complete", done, job.epochs, metrics,
                         f"finished: {done} epochs in {where}", tail)
    if state == "ended" and code is None:  # cancelled while it was waiting
        return JobStatus("cancelled", 0, job.epochs, [], "cancelled before it started", tail)
    if job.cancel_requested or code in (130, 143, -signal.SIGINT, -signal.SIGTERM) or \
            (state == "lost" and info is not None and info.status == "interrupted"):
        return JobStatus("cancelled", done, job.epochs, metrics, f"cancelled: {kept}", tail)
    again = (f"continue it with: {resume_hint(job, redact)}" if done
             else "no epoch had finished; start it again")
    if state == "lost":
        return JobStatus("stopped", done, job.epochs, metrics,
                         f"stopped unexpectedly (its process ended without an exit status, "
                         f"e.g. the server was restarted) after {done} of {job.epochs} "
                         f"epochs; {again}", tail)
    assert code is not None
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return JobStatus("stopped", done, job.epochs, metrics,
                         f"stopped unexpectedly by signal {name} after {done} of "
                         f"{job.epochs} epochs; {again}", tail)
    why = (info.message if info is not None and info.status == "failed" and info.message
           else error_line(tail) or "it printed no error message (see the log)")
    return JobStatus("failed", done, job.epochs, metrics,
                     f"training failed (exit code {code}): {redact(why)}", tail)


# --------------------------------------------------------------------------- cancel

def may_cancel(job: TrainJob, owner_token: str = "", teacher: bool = False) -> bool:
    """The teacher may cancel any job; a visitor only the jobs their session started."""
    if teacher:
        return True
    return hmac.compare_digest(job.owner, owner_id(owner_token))


def cancel_job(job: TrainJob, owner_token: str = "", teacher: bool = False) -> bool:
    """Cancel a job: a queued one leaves the queue; a running one gets SIGINT (it stops
    between batches and keeps the last finished epoch) -- only when it is a child this app
    process launched, with the pid and start time its record names. False when not allowed
    or nothing was done."""
    if not may_cancel(job, owner_token, teacher):
        return False
    runs = Path(job.runs_dir)
    with server_lock(runs):
        fresh = _load(runs, job.name)
        if fresh is None or fresh.owner != job.owner or fresh.created != job.created:
            return False
        if fresh.state == "queued":
            fresh.state, fresh.ended, fresh.cancel_requested = "ended", time.time(), True
            _write_record(fresh)
            with contextlib.suppress(OSError):
                Path(fresh.run_dir).rmdir()
            job.state, job.cancel_requested = "ended", True
            return True
        if fresh.state != "running":
            return False
        child = _our_child(fresh)
        if child is None or fresh.pid is None:
            return False  # never signal a pid this process did not launch
        with child.lock:  # the child cannot be reaped (its pid reused) while we hold this
            if child.popen.poll() is not None:
                return False
            if child.pid_start is not None and process_start_time(fresh.pid) != child.pid_start:
                return False
            fresh.cancel_requested = True
            with contextlib.suppress(OSError):
                _write_record(fresh)
            try:
                os.killpg(child.popen.pid, signal.SIGINT)  # it leads its own group
            except ProcessLookupError:
                return False
    job.cancel_requested = True
    return True


def wait_job(job: TrainJob, timeout: float, data_root: str | Path | None = None) -> JobStatus:
    """Block until the job ends or ``timeout`` seconds pass (tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = load_job(job.runs_dir, job.name) or job
        status = poll_job(fresh, data_root)
        if status.finished:
            job.returncode = fresh.returncode if fresh.returncode is not None else \
                job.returncode
            return status
        time.sleep(0.2)
    return poll_job(load_job(job.runs_dir, job.name) or job, data_root)
