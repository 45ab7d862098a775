"""Group 4: SIGINT / SIGTERM during an epoch and during a save. Ctrl-C cases send SIGINT
from outside to a real ``python -m training`` process that ``signal_driver.py`` pauses at
an exact point; the other cases signal the test process itself at the same points.

Each case checks the exit code (130 for SIGINT, 143 for SIGTERM), the message, that the
run directory holds the last finished epoch whole (byte-identical where nothing newer was
complete, loadable, all files agreeing), that no temporary file is left, and that
``--resume`` continues; resumed CPU training reproduces the uninterrupted run's losses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import signal_driver
import torch
from faultkit import (
    TINY_ARGS,
    assert_loadable,
    assert_no_temp_files,
    assert_unchanged,
    cli,
    snapshot,
    subprocess_env,
)

from training import rundir
from training.cli import main as cli_main

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("signal_driver.py")
EPOCHS = 4
BATCHES_PER_EPOCH = 23  # digits: 1,438 training images in batches of 64
LOSS_KEYS = ("train_recon", "train_kl", "train_loss", "train_objective", "test_recon",
             "test_kl", "test_loss", "kl_per_dim", "active_units", "beta", "lr")


class Paused:
    """A training process stopped at its pause point, waiting for our signal."""

    def __init__(self, out: Path, pause: str, hold: float = 0.0):
        self.ready = out.parent / f"{out.name}.ready"
        env = subprocess_env(FAULT_PAUSE=pause, FAULT_READY=str(self.ready),
                             FAULT_HOLD=str(hold))
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), *TINY_ARGS, "--epochs", str(EPOCHS), "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.wait_for(self.ready)

    def wait_for(self, path: Path, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"training exited early: {self.proc.communicate()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"{path.name} never appeared")
            time.sleep(0.02)

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, err


def resume(run_dir: Path, epochs: int = EPOCHS) -> None:
    assert cli_main(["--resume", str(run_dir), "--epochs", str(epochs), "--quiet"]) == 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "uninterrupted"
    assert cli_main([*TINY_ARGS, "--epochs", str(EPOCHS), "--out", str(out)]) == 0
    return out


def assert_same_training(run_dir: Path, reference: Path) -> None:
    rows, ref_rows = rundir.read_metrics(run_dir), rundir.read_metrics(reference)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref_rows]
    for row, ref in zip(rows, ref_rows, strict=True):
        for key in LOSS_KEYS:
            assert row[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), (row["epoch"], key)
    weights, _ = rundir.load_weights(run_dir / rundir.WEIGHTS_FILE)
    ref_weights, _ = rundir.load_weights(reference / rundir.WEIGHTS_FILE)
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-6, atol=1e-6)


def in_process(out: Path, point: str, signum: int, monkeypatch, capsys
               ) -> tuple[int, str, dict[str, bytes], list[Path]]:
    """Train in this process; at ``point`` the process signals itself. Returns the exit
    code, stderr, and the run directory's files and temporary files at that moment."""
    seen: dict = {}

    def on_pause() -> None:
        seen["before"] = snapshot(out)
        seen["temps"] = rundir.leftover_temp_files(out)
        os.kill(os.getpid(), signum)

    signal_driver.install(point, on_pause, monkeypatch.setattr)
    code, err = cli([*TINY_ARGS, "--epochs", str(EPOCHS), "--out", str(out)], capsys)
    return code, err, seen["before"], seen["temps"]


def check_stopped_in_epoch_3(out: Path, before: dict[str, bytes], signum: int, err: str) -> None:
    name = signal.Signals(signum).name
    assert (f"error: {name} received during epoch 3: stopped; the last finished epoch (2) "
            f"is kept in {out}; continue with --resume {out}") in err
    assert "Traceback" not in err
    assert_unchanged(out, before, ignore=(rundir.CONFIG_FILE,))
    assert_no_temp_files(out)
    assert_loadable(out, epochs=2)
    info = rundir.read_config(out)
    assert info.status == "interrupted"
    assert info.message.startswith(f"{name} received during epoch 3")


MID_EPOCH_3 = f"batch:{2 * BATCHES_PER_EPOCH + 5}"  # epoch 3, batch 5


def test_ctrl_c_during_an_epoch_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    """The real thing: SIGINT from outside to a ``python -m training`` process."""
    out = tmp_path / "run"
    run = Paused(out, MID_EPOCH_3)
    before = snapshot(out)  # epochs 1-2 are on disk
    run.send(signal.SIGINT)
    exit_code, err = run.finish()

    assert exit_code == 130, err
    check_stopped_in_epoch_3(out, before, signal.SIGINT, err)
    resume(out)
    assert_loadable(out, epochs=EPOCHS)
    assert rundir.read_config(out).status == "complete"
    assert_same_training(out, uninterrupted)


def test_sigterm_during_an_epoch(tmp_path, uninterrupted, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err, before, _temps = in_process(out, MID_EPOCH_3, signal.SIGTERM, monkeypatch, capsys)
    assert code == 143, err
    check_stopped_in_epoch_3(out, before, signal.SIGTERM, err)
    monkeypatch.undo()
    resume(out)
    assert_same_training(out, uninterrupted)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_save_lets_the_save_finish(signum, code, tmp_path, uninterrupted,
                                                   monkeypatch, capsys):
    out = tmp_path / "run"
    # epoch 2's save: weights written and staged, latents written, nothing renamed yet
    exit_code, err, _before, temps = in_process(out, "save:latents.npz:2", signum,
                                                monkeypatch, capsys)
    assert {p.name.split(".tmp-")[0] for p in temps} == {".model.safetensors", ".latents.npz"}

    name = signal.Signals(signum).name
    assert exit_code == code, err
    assert (f"error: {name} received after epoch 2 was saved; continue with --resume {out}"
            in err)
    assert_no_temp_files(out)
    assert_loadable(out, epochs=2)
    assert rundir.read_config(out).status == "interrupted"

    monkeypatch.undo()
    resume(out)
    assert_same_training(out, uninterrupted)


def test_second_sigint_during_a_save_keeps_the_previous_epoch_whole(tmp_path, uninterrupted):
    """Ctrl-C twice: the second one aborts the save at once; every file of epoch 1 stays
    byte-identical (nothing of the half-saved epoch 2 is renamed into place)."""
    out = tmp_path / "run"
    run = Paused(out, "save:latents.npz:2", hold=60)
    before = snapshot(out)  # epoch 1, complete
    assert rundir.leftover_temp_files(out)  # we really are inside the save
    run.send(signal.SIGINT)
    run.wait_for(Path(f"{run.ready}.got"))
    run.send(signal.SIGINT)
    exit_code, err = run.finish()

    assert exit_code == 130, err
    assert f"error: interrupted; the last finished epoch is kept in {out}" in err
    assert "Traceback" not in err
    assert_unchanged(out, before)
    assert_no_temp_files(out)
    assert_loadable(out, epochs=1)

    resume(out)
    assert_same_training(out, uninterrupted)


def test_sigkill_during_a_save_keeps_the_previous_epoch_and_resume_cleans_up(
        tmp_path, uninterrupted, capsys):
    """A hard kill (or a power cut) mid-save cannot clean up after itself: the previous
    epoch is still whole and loadable, and ``--resume`` removes the stale temporaries."""
    out = tmp_path / "run"
    run = Paused(out, "save:latents.npz:2")
    before = snapshot(out)  # epoch 1, complete
    temps = rundir.leftover_temp_files(out)
    assert len(temps) == 2  # epoch 2's weights and latents, written, not yet renamed
    run.send(signal.SIGKILL)
    exit_code, _err = run.finish()

    assert exit_code == -signal.SIGKILL
    assert_unchanged(out, before)
    assert rundir.leftover_temp_files(out) == temps
    assert_loadable(out, epochs=1)

    assert cli_main(["--resume", str(out), "--epochs", str(EPOCHS)]) == 0
    assert "removed 2 temporary file(s) left by an interrupted save" in capsys.readouterr().out
    assert_no_temp_files(out)
    assert_same_training(out, uninterrupted)
