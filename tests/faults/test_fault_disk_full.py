"""Group 5: the disk fills up while a run is being saved. The CLI says "no space left on
device" and exits 1; every file of the last finished epoch stays byte-identical and
loadable (an epoch's files are renamed into place only when all of them were written),
and no temporary file is left behind.

Two ways: a patched file write that raises ``ENOSPC`` half-way through one chosen file,
and a real, tiny tmpfs (mounted in a private user + mount namespace, skipped where the
system does not allow that).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import (  # noqa: F401  (fresh_run_fixture: a fixture)
    TINY_ARGS,
    assert_loadable,
    assert_no_temp_files,
    assert_unchanged,
    cli,
    fresh_run_fixture,
    snapshot,
    subprocess_env,
)

from training import rundir


class FullDiskFile:
    """A writable file that accepts ``budget`` bytes, then raises ENOSPC like a full disk."""

    def __init__(self, fh, budget: int):
        self._fh = fh
        self._budget = budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._budget:
            self._fh.write(data[: self._budget])
            self._budget = 0
            raise OSError(errno.ENOSPC, "No space left on device", self._fh.name)
        self._budget -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


def fill_disk_while_writing(monkeypatch, file_name: str) -> list[str]:
    """Make every write of ``file_name`` (through the run directory's writers) run out of
    space after half of its bytes; returns the list of temp files that hit it."""
    hits: list[str] = []

    def full_open(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)  # noqa: SIM115
        if "w" in mode and Path(path).name.startswith(f".{file_name}{rundir.TMP_MARK}"):
            hits.append(Path(path).name)
            return FullDiskFile(fh, budget=512)
        return fh

    monkeypatch.setattr(rundir, "open", full_open, raising=False)
    return hits


@pytest.mark.parametrize("file_name", [rundir.WEIGHTS_FILE, rundir.LATENTS_FILE,
                                       rundir.METRICS_FILE, rundir.STATE_FILE,
                                       rundir.CONFIG_FILE])
def test_enospc_while_saving_keeps_the_previous_epoch(file_name, fresh_run, monkeypatch,
                                                      capsys):
    before = snapshot(fresh_run)
    hits = fill_disk_while_writing(monkeypatch, file_name)

    code, err = cli(["--resume", str(fresh_run), "--epochs", "5", *TINY_ARGS], capsys)

    assert hits, f"{file_name} was never written"
    assert code == 1
    assert f"error: could not write the run directory {fresh_run}: no space left on device" in err
    assert "files already there were left as they were" in err
    assert "Traceback" not in err
    # config.json is rewritten (status "training") when a resume starts; all else is as before
    assert_unchanged(fresh_run, before, ignore=(rundir.CONFIG_FILE,))
    assert_no_temp_files(fresh_run)
    monkeypatch.undo()
    assert_loadable(fresh_run, epochs=3)
    if file_name == rundir.CONFIG_FILE:  # the very first write failed: nothing changed at all
        assert_unchanged(fresh_run, before)
    else:  # config.json says why the run stopped (it fitted on the "disk")
        info = rundir.read_config(fresh_run)
        assert info.status == "failed"
        assert "no space left on device" in info.message

    code, err = cli(["--resume", str(fresh_run), "--epochs", "4", *TINY_ARGS], capsys)
    assert code == 0, err  # with space again, the run simply continues
    assert_loadable(fresh_run, epochs=4)


# --------------------------------------------------------------------------- a real full disk

INSIDE = r"""
import os, shutil, subprocess, sys
mnt, src, keep_free, outside = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
run = os.path.join(mnt, "run")
shutil.copytree(src, run)
st = os.statvfs(mnt)
with open(os.path.join(mnt, "filler"), "wb") as fh:
    fh.write(b"\0" * (st.f_bavail * st.f_frsize - keep_free))
proc = subprocess.run([sys.executable, "-m", "training", "--resume", run, "--epochs", "4",
                       "--quiet"], capture_output=True, text=True)
open(os.path.join(outside, "rc"), "w").write(str(proc.returncode))
open(os.path.join(outside, "stderr"), "w").write(proc.stderr)
shutil.copytree(run, os.path.join(outside, "after"))
"""


def namespaces_allowed() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
def test_real_tmpfs_running_out_of_space(fresh_run, tmp_path):
    if not namespaces_allowed():
        pytest.skip("cannot mount a private tmpfs here (no user namespaces)")
    mnt, outside = tmp_path / "small-disk", tmp_path / "outside"
    mnt.mkdir()
    outside.mkdir()
    before = snapshot(fresh_run)
    # 16 KiB left: config.json fits, the 36 KB weights file of the next epoch does not
    script = (f'mount -t tmpfs -o size=1m tmpfs "{mnt}" && exec "{sys.executable}" -c "$0" '
              f'"{mnt}" "{fresh_run}" 16384 "{outside}"')
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           script, INSIDE], env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = (outside / "stderr").read_text()
    after = outside / "after"

    assert (outside / "rc").read_text() == "1", err
    assert "no space left on device" in err
    assert "Traceback" not in err
    assert_unchanged(after, before, ignore=(rundir.CONFIG_FILE,))
    assert_no_temp_files(after)
    assert_loadable(after, epochs=3)
