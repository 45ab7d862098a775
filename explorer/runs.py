"""Finding the run directories the app can open: list, sort newest first, describe.

A run directory is any immediate subfolder of the runs folder with a ``config.json``
(see ``training/rundir.py``). Run folders are untrusted (downloaded, shared): each is
checked by ``training.validate.check_run`` (config.json's schema and limits, the weights'
header against it, latents.npz's arrays; cached by the files' stamps, so a rerun costs a
few ``stat`` calls). A folder that fails is still listed, with its one-line problem
(naming the file, no server path), so the app can say why a run cannot be opened instead
of hiding it or failing the whole listing: no crafted folder breaks the listing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training import rundir, validate


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
    problem: str = ""  # why this run cannot be opened; "" when it can (one line, no path)
    note: str = ""  # an openable run's lesser problem (metrics.jsonl: no training curves)
    imported: bool = False  # made by explorer/adopt.py: no weights, no training history

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
        if self.imported:
            return f"{self.name} — {kind} z={self.latent_dim} · {self.dataset} · imported"
        status = "" if self.status == "complete" else f" · {self.status}"
        return (f"{self.name} — {kind} z={self.latent_dim} · {self.dataset} · "
                f"{self.epochs_completed}/{self.epochs} epochs{status}")


def _problem(exc: rundir.RunDirError) -> str:
    """One line for the run picker: the file (within the run folder) and its problem."""
    name = exc.path.name if exc.run_folder != exc.path else ""
    problem = rundir.redact_paths(exc.problem, exc.run_folder)
    return f"{name}: {problem}" if name and not problem.startswith(name) else problem


def describe_run(path: str | os.PathLike) -> RunEntry:
    """Check one run folder (:func:`training.validate.check_run`: config, the weights'
    header, latents; cached) into a :class:`RunEntry`. Never raises for a bad folder."""
    path = Path(path)
    config_file = path / rundir.CONFIG_FILE
    try:
        modified = config_file.stat().st_mtime
    except OSError:
        modified = 0.0
    try:
        info = rundir.read_config(path)
    except rundir.RunDirError as exc:
        return RunEntry(path=path, modified=modified, problem=_problem(exc))
    problem = note = ""
    hint = f"`python -m training.relatents <runs folder>/{path.name}`"
    try:
        if info.is_imported:
            validate.check_run(path)
        elif not (path / rundir.WEIGHTS_FILE).is_file():
            problem = "no model.safetensors yet (the first epoch has not finished)"
        elif not (path / rundir.LATENTS_FILE).is_file():
            problem = ("no latents.npz yet (the first epoch has not finished)"
                       if info.epochs_completed == 0 and info.status == "training" else
                       "latents.npz is missing (deleted, or not copied with the run); "
                       f"recompute it from the weights with {hint}")
        else:
            validate.check_run(path)
    except rundir.RunDirError as exc:
        problem = _problem(exc)
    except OSError as exc:  # a folder that cannot be read (permissions)
        problem = f"cannot be read: {rundir.describe_os_error(exc)}"
    if not problem and not info.is_imported:
        try:
            validate.check_metrics(path)
        except rundir.RunDirError as exc:
            note = _problem(exc)
    return RunEntry(path=path, modified=modified, status=info.status,
                    dataset=info.config.dataset, model=info.config.model,
                    latent_dim=info.config.latent_dim, epochs_completed=info.epochs_completed,
                    epochs=info.config.epochs, problem=problem, note=note,
                    imported=info.is_imported)


def list_runs(runs_dir: str | os.PathLike) -> list[RunEntry]:
    """Every run directory directly under ``runs_dir``, newest first (by config.json's
    modification time, then name). A missing ``runs_dir`` is an empty list."""
    runs_dir = Path(runs_dir)
    try:
        children = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError:  # the runs folder itself cannot be read
        return []
    entries = [describe_run(p) for p in children if _is_run_folder(p)]
    return sorted(entries, key=lambda e: (-e.modified, e.name))


def _is_run_folder(path: Path) -> bool:
    """A visible subfolder with a config.json (an unreadable one counts: it is listed with
    its problem)."""
    if path.name.startswith("."):
        return False
    try:
        return path.is_dir() and (path / rundir.CONFIG_FILE).exists()
    except OSError:  # e.g. no permission to look inside: listed, with its problem
        return True


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


DEFAULT_RUN_ENV = "VAE_DEFAULT_RUN"  # a teacher's choice of the first run (a folder name)
DEMO_DEFAULT = "demo-vae-z2"  # the 2-D VAE the README shows


def default_run(entries: list[RunEntry], preferred: str | None = None) -> RunEntry | None:
    """The run a new visitor sees first, chosen deliberately, never "whatever was trained
    last" (one student's new run must not become everyone's default): ``preferred`` (the
    teacher's ``VAE_DEFAULT_RUN``) when openable; else the demo 2-D VAE; else the oldest
    complete 2-D VAE (the first one the teacher trained, not a student's newer one); else
    the newest openable run. ``entries`` as :func:`list_runs` returns them."""
    openable = [e for e in entries if e.openable]
    for name in (preferred, DEMO_DEFAULT):
        match = next((e for e in openable if name and e.name == name), None)
        if match is not None:
            return match
    two_d = [e for e in openable if e.model == "vae" and e.latent_dim == 2
             and e.status == "complete"]
    if two_d:
        return min(two_d, key=lambda e: (e.modified, e.name))
    return openable[0] if openable else None
