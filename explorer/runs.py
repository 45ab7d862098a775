"""Finding the run directories the app can open: list, sort newest first, describe.

A run directory is any immediate subfolder of the runs folder with a ``config.json``
(see ``training/rundir.py``). A folder whose config cannot be read is still listed, with
the reason, so the app can say why a run is missing instead of silently hiding it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training import rundir


@dataclass(frozen=True)
class RunEntry:
    """One subfolder of the runs folder, as the run picker shows it."""

    path: Path
    modified: float  # mtime of config.json (seconds since the epoch): newest first
    status: str = ""  # complete | training | interrupted | failed ("" when unreadable)
    dataset: str = ""
    model: str = ""  # vae | ae
    latent_dim: int = 0
    epochs_completed: int = 0
    epochs: int = 0
    problem: str = ""  # why this run cannot be opened; "" when it can

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def openable(self) -> bool:
        return not self.problem

    def label(self) -> str:
        """Short human label: ``demo-vae-z2 — VAE z=2 · mnist5k · 30/30 epochs``."""
        if self.problem:
            return f"{self.name} (cannot open)"
        kind = "VAE" if self.model == "vae" else "AE"
        status = "" if self.status == "complete" else f" · {self.status}"
        return (f"{self.name} — {kind} z={self.latent_dim} · {self.dataset} · "
                f"{self.epochs_completed}/{self.epochs} epochs{status}")


def describe_run(path: str | os.PathLike) -> RunEntry:
    """Read one run's config.json (cheap: no weights) into a :class:`RunEntry`."""
    path = Path(path)
    config_file = path / rundir.CONFIG_FILE
    try:
        modified = config_file.stat().st_mtime
    except OSError:
        modified = 0.0
    try:
        info = rundir.read_config(path)
    except rundir.RunDirError as exc:
        return RunEntry(path=path, modified=modified, problem=exc.problem)
    problem = ""
    if not (path / rundir.WEIGHTS_FILE).is_file():
        problem = "no model.safetensors yet (the first epoch has not finished)"
    elif not (path / rundir.LATENTS_FILE).is_file():
        problem = ("no latents.npz yet (the first epoch has not finished)"
                   if info.epochs_completed == 0 and info.status == "training" else
                   "latents.npz is missing (deleted, or not copied with the run); recompute "
                   f"it from the weights with `python -m training.relatents {path}`")
    return RunEntry(path=path, modified=modified, status=info.status,
                    dataset=info.config.dataset, model=info.config.model,
                    latent_dim=info.config.latent_dim, epochs_completed=info.epochs_completed,
                    epochs=info.config.epochs, problem=problem)


def list_runs(runs_dir: str | os.PathLike) -> list[RunEntry]:
    """Every run directory directly under ``runs_dir``, newest first (by config.json's
    modification time, then name). A missing ``runs_dir`` is an empty list."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    entries = [describe_run(p) for p in runs_dir.iterdir()
               if p.is_dir() and not p.name.startswith(".") and (p / rundir.CONFIG_FILE).exists()]
    return sorted(entries, key=lambda e: (-e.modified, e.name))


def openable_runs(runs_dir: str | os.PathLike) -> list[RunEntry]:
    """The runs the app can open (weights and latents present, config readable)."""
    return [e for e in list_runs(runs_dir) if e.openable]


def file_stamp(run_dir: str | os.PathLike, name: str) -> float:
    """Modification time of one file of a run (0.0 when missing): part of cache keys, so a
    run that is retrained or still training is re-read instead of served stale."""
    try:
        return (Path(run_dir) / name).stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0
