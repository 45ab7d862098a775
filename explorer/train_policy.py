"""What the teacher allows the Train page to do: one :class:`TrainPolicy`, read from the
environment and the app's script arguments (what follows ``--`` on ``streamlit run``),
the way ``app.shared.runs_dir`` reads ``--runs-dir``.

=========================  ===========================  =====================================
setting                    environment / argument       default
=========================  ===========================  =====================================
browser training on/off    ``VAE_TRAINING=off``,        on
                           ``--no-train``
folder data sets           ``VAE_DATA_ROOT``,           none: only the built-in data sets
                           ``--data-root PATH``
teacher token              ``VAE_TEACHER_TOKEN``        none: nobody cancels others' jobs
jobs running at once       ``VAE_TRAIN_MAX_JOBS``       2 (more wait in a queue)
jobs waiting in the queue  ``VAE_TRAIN_MAX_QUEUED``     8
active jobs per visitor    ``VAE_TRAIN_MAX_PER_VISITOR`` 2 (running + queued; not the teacher)
disk used by all runs      ``VAE_RUNS_DISK_CAP``        2GiB (``500M``, ``1.5G``, bytes ...)
=========================  ===========================  =====================================

Per-job limits are fixed here (:data:`LIMITS`). Everything in this module is plain logic:
no Streamlit, nothing that starts a process.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TRAINING_ENV = "VAE_TRAINING"
NO_TRAIN_ARG = "--no-train"
DATA_ROOT_ENV = "VAE_DATA_ROOT"
DATA_ROOT_ARG = "--data-root"
TEACHER_ENV = "VAE_TEACHER_TOKEN"
MAX_JOBS_ENV = "VAE_TRAIN_MAX_JOBS"
MAX_QUEUED_ENV = "VAE_TRAIN_MAX_QUEUED"
PER_VISITOR_ENV = "VAE_TRAIN_MAX_PER_VISITOR"
DISK_CAP_ENV = "VAE_RUNS_DISK_CAP"

# Per-job limits (inclusive). 100 epochs of the largest model take minutes on one thread,
# and a run folder of it stays near 200 MB (see explorer.jobs.estimate_run_bytes).
LIMITS = {"latent_dim": (1, 64), "epochs": (1, 100), "kl_warmup": (0, 100),
          "hidden_dim": (1, 1024), "hidden_layers": (1, 4)}
MAX_BETA = 1000.0
DEFAULT_MAX_JOBS = 2  # more parallel jobs would starve the app on a 2-core machine
DEFAULT_MAX_QUEUED = 8
DEFAULT_PER_VISITOR = 2
DEFAULT_DISK_CAP = 2 * 1024 ** 3
KEEP_FINISHED = 50  # job records kept after their job ended (newest first) ...
KEEP_DAYS = 7.0  # ... and none older than this

FOLDER_PROBLEM = ("Data set folder {typed!r}: not a folder under the data root. Give the "
                  "name of a folder inside it, as in folder:my_images.")
_OFF_WORDS = {"off", "0", "false", "no", "disabled"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"2GiB"``, ``"500M"``, ``"1.5g"`` or plain bytes -> bytes (binary units).
    Raises ValueError for anything else."""
    match = _SIZE.match(text or "")
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 2GiB, 500M or a number of bytes)")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024 ** power)


def _arg_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _int_env(name: str, default: int, low: int) -> int:
    try:
        return max(low, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


@dataclass(frozen=True)
class TrainPolicy:
    """The server's rules for browser training (immutable; see the module docstring)."""

    enabled: bool = True
    data_root: Path | None = None  # resolved; None: folder data sets are not offered
    teacher_token: str = ""  # "" : no teacher mode
    max_running: int = DEFAULT_MAX_JOBS
    max_queued: int = DEFAULT_MAX_QUEUED
    max_per_visitor: int = DEFAULT_PER_VISITOR
    disk_cap: int = DEFAULT_DISK_CAP  # bytes, for everything under the runs folder
    keep_finished: int = KEEP_FINISHED
    keep_days: float = KEEP_DAYS

    @classmethod
    def from_env(cls, argv: list[str] | None = None) -> TrainPolicy:
        """The policy from ``os.environ`` and the script arguments ``argv`` (default
        ``sys.argv[1:]``). A script argument wins over the environment."""
        args = sys.argv[1:] if argv is None else argv
        enabled = (os.environ.get(TRAINING_ENV, "").strip().lower() not in _OFF_WORDS
                   and NO_TRAIN_ARG not in args)
        root_text = _arg_value(args, DATA_ROOT_ARG) or os.environ.get(DATA_ROOT_ENV, "")
        data_root = None
        if root_text.strip():
            root = Path(root_text).expanduser().resolve()
            data_root = root if root.is_dir() else None  # a missing root offers nothing
        try:
            cap = parse_size(os.environ.get(DISK_CAP_ENV, "")) \
                if os.environ.get(DISK_CAP_ENV, "").strip() else DEFAULT_DISK_CAP
        except ValueError:
            cap = DEFAULT_DISK_CAP
        return cls(enabled=enabled, data_root=data_root,
                   teacher_token=os.environ.get(TEACHER_ENV, ""),
                   max_running=_int_env(MAX_JOBS_ENV, DEFAULT_MAX_JOBS, 1),
                   max_queued=_int_env(MAX_QUEUED_ENV, DEFAULT_MAX_QUEUED, 0),
                   max_per_visitor=_int_env(PER_VISITOR_ENV, DEFAULT_PER_VISITOR, 1),
                   disk_cap=cap)

    def is_teacher(self, token: str) -> bool:
        """Whether ``token`` is the teacher token (constant-time; never with no token set)."""
        import hmac

        if not self.teacher_token or not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.teacher_token.encode("utf-8"))

    def resolve_folder(self, typed: str) -> Path:
        """The folder a ``folder:`` data set names, resolved (``..`` and symlinks followed)
        and checked to lie inside the data root. ``typed`` is taken relative to the root
        (``~`` is not expanded). Raises ValueError with ONE message for every failure
        (outside the root, missing, not a folder, no data root), so a browser learns
        nothing about the server's other folders."""
        problem = ValueError(FOLDER_PROBLEM.format(typed=typed))
        if self.data_root is None or not typed.strip() or "\x00" in typed:
            raise problem
        root = self.data_root
        try:
            path = (root / typed.strip()).resolve(strict=True)
        except (OSError, RuntimeError):
            raise problem from None
        if not (path == root or path.is_relative_to(root)) or not path.is_dir():
            raise problem
        return path

    def links_leaving_root(self, folder: Path, limit: int = 200_000) -> str | None:
        """A problem (one line) when a file or folder under ``folder`` is a symlink leading
        outside the data root (the trainer would read it), or the folder is too large to
        check; None when it is fine."""
        assert self.data_root is not None
        seen = 0
        for top, dirs, files in os.walk(folder, followlinks=False):
            for name in dirs + files:
                seen += 1
                if seen > limit:
                    return (f"the data set folder has more than {limit:,} files and folders; "
                            f"use a smaller one")
                entry = Path(top) / name
                if entry.is_symlink():
                    try:
                        target = entry.resolve(strict=True)
                    except (OSError, RuntimeError):
                        continue  # a dangling link: the trainer skips it
                    if not target.is_relative_to(self.data_root):
                        return ("the data set folder contains links that lead outside the "
                                "data root; remove them or copy the files in")
        return None

    def limits_text(self) -> str:
        """The limits in one sentence, for the page."""
        e, z, h, layers = (LIMITS[k][1] for k in ("epochs", "latent_dim", "hidden_dim",
                                                    "hidden_layers"))
        return (f"up to {e} epochs, {z} latent dimensions, {h} hidden units in up to "
                f"{layers} layers; {self.max_running} job(s) train at once (more wait in a "
                f"queue of {self.max_queued}); runs may use {format_bytes(self.disk_cap)} "
                f"of disk in all")


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # not reached
