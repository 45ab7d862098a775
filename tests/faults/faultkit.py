"""Shared helpers of the fault suite: file snapshots, CLI runners, corruptions, and the
``fresh_run`` fixture (import ``fresh_run_fixture`` into a test module to use it; this
folder has no conftest.py, whose module name would shadow ``tests/conftest.py``).

Every fault test asserts two things: the specific error message, and that nothing good
was lost (files byte-identical to a snapshot taken before the fault, still loadable,
no temporary files left behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import rundir

REPO = Path(__file__).resolve().parents[2]

# The command-line twin of tests/conftest.py's TINY config (digits 8x8, one thread).
TINY_ARGS = ["--dataset", "digits", "--hidden-dim", "64", "--hidden-layers", "1",
             "--batch-size", "64", "--lr", "3e-3", "--seed", "0", "--device", "cpu",
             "--threads", "1", "--quiet"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` except a writer's temporary files, name -> bytes."""
    temp = set(rundir.leftover_temp_files(folder))
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())
            if p.is_file() and p not in temp}


def assert_unchanged(folder: Path, before: dict[str, bytes], ignore: tuple[str, ...] = ()) -> None:
    """The folder holds exactly the files of ``before`` (minus ``ignore``), byte for byte."""
    after = snapshot(folder)
    names_after = sorted(set(after) - set(ignore))
    names_before = sorted(set(before) - set(ignore))
    assert names_after == names_before, f"files changed: {names_before} -> {names_after}"
    changed = [n for n in names_before if after[n] != before[n]]
    assert not changed, f"these files were modified: {changed}"


def assert_no_temp_files(folder: Path) -> None:
    left = rundir.leftover_temp_files(folder)
    assert not left, f"temporary files left behind: {[p.name for p in left]}"


def assert_loadable(folder: Path, epochs: int | None = None) -> rundir.LoadedRun:
    """The run opens (config, verified weights), its latents, metrics and training state
    read cleanly, and (optionally) they all agree on the number of finished epochs."""
    run = rundir.load_run(folder)
    rundir.read_latents(folder)
    rows = rundir.read_metrics(folder)
    state = rundir.load_train_state(folder)
    if epochs is not None:
        assert run.info.epochs_completed == epochs
        assert run.weights_meta["epoch"] == str(epochs)
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
        assert state["epoch"] == epochs
    return run


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``python -m training`` in this process: (exit code, stderr)."""
    from training.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return int(code or 0), capsys.readouterr().err


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **extra}
    return env


def run_cli_process(argv: list[str], timeout: float = 180, **env: str
                    ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *argv], cwd=REPO,
                          env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- corruptions

def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def safetensors_data_start(path: Path) -> int:
    """Offset of the first tensor byte: 8-byte header length, JSON header, then data."""
    head = path.read_bytes()[:8]
    return 8 + int.from_bytes(head, "little")


def zip_member_data_offset(path: Path, member_suffix: str) -> int:
    """Offset of the stored (uncompressed) bytes of the first zip member ending with
    ``member_suffix``, e.g. a tensor inside a torch.save file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


@pytest.fixture(name="fresh_run")
def fresh_run_fixture(tiny_run, copy_run) -> Path:
    """A private copy of the 3-epoch tiny run, safe to damage."""
    return copy_run(tiny_run, "victim")
