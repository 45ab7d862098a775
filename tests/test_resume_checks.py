"""``--resume`` checks every entry of ``train_state.pt`` before loading any of it: a
tampered state (its checksum recomputed, which anyone can do) is refused with exit code 2
and one clear line, never a traceback or a crash inside torch. And Ctrl-C during the
final t-SNE stops it and leaves a run labelled for what it is: complete, without the map.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import rundir

REPO = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--dataset", "digits", "--hidden-dim", "64", "--hidden-layers", "1",
             "--batch-size", "64", "--lr", "3e-3", "--seed", "0", "--device", "cpu",
             "--threads", "1", "--quiet"]


def tamper(run: Path, change) -> None:
    """Change the saved training state and save it with a fresh, valid checksum."""
    path = run / rundir.STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    state.pop(rundir.STATE_SHA_KEY)
    change(state)
    rundir.save_train_state(run, state)
    assert rundir.load_train_state(run) is not None  # the checksum is valid again


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def optimizer_state(state: dict) -> dict:
    return state["optimizer"]["state"]


def extra_group(state: dict) -> None:
    groups = state["optimizer"]["param_groups"]
    groups.append(copy.deepcopy(groups[0]))


def set_epoch(value):
    return lambda state: state.update(epoch=value)


TAMPERED = {
    # Adam's first moment of the first weight matrix, wrong-sized: SIGSEGV in adam.step
    "wrong-sized exp_avg": (
        lambda s: optimizer_state(s)[0].update(exp_avg=torch.zeros(3, 3)),
        "optimizer exp_avg of parameter 0 has shape (3, 3), expected (64, 64)"),
    "wrong-dtype exp_avg_sq": (
        lambda s: optimizer_state(s)[1].update(
            exp_avg_sq=optimizer_state(s)[1]["exp_avg_sq"].double()),
        "optimizer exp_avg_sq of parameter 1 has dtype torch.float64, expected torch.float32"),
    "a vector step": (
        lambda s: optimizer_state(s)[2].update(step=torch.ones(4)),
        "optimizer step of parameter 2 has shape (4,), expected ()"),
    "amsgrad state": (
        lambda s: optimizer_state(s)[0].update(max_exp_avg_sq=torch.zeros(64, 64)),
        "optimizer state of parameter 0 must hold step, exp_avg and exp_avg_sq (Adam)"),
    "wrong-size RNG state": (
        lambda s: s.update(rng_torch=s["rng_torch"][:100]),
        "rng_torch (a random-number generator state) has shape (100,), expected (5056,)"),
    "invalid RNG state": (
        lambda s: s.update(rng_shuffle=torch.zeros(5056, dtype=torch.uint8)),
        "rng_shuffle is not a valid random-number generator state"),
    "epoch 'two'": (set_epoch("two"), "epoch must be an integer, got 'two' (a string)"),
    "epoch -3": (set_epoch(-3), "epoch -3 is outside 0..3 (the run's epochs)"),
    "epoch 10**6": (set_epoch(10**6), "epoch 1000000 is outside 0..3"),
    "two parameter groups": (extra_group, "the optimizer has 2 parameter groups, the "
                                          "model's optimizer has 1"),
    "a parameter short": (
        lambda s: s["optimizer"]["param_groups"][0].update(
            params=s["optimizer"]["param_groups"][0]["params"][:-1]),
        "optimizer parameter group 0 lists 9 parameters, the model's has 10"),
    "state for a parameter that does not exist": (
        lambda s: optimizer_state(s).update({10: optimizer_state(s)[0]}),
        "optimizer state for parameter 10, the model has 10 parameters"),
    "non-finite model weights": (
        lambda s: s["model"]["to_mu.bias"].fill_(float("nan")),
        "model tensor to_mu.bias holds non-finite values"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_tampered_state_is_refused_with_exit_2(case, tiny_run, copy_run, capsys, monkeypatch):
    """The CLI's ``main`` in this process (a new Python per case would cost a torch import
    each); the whole command in a process of its own is the test below."""
    from training import cli

    run = copy_run(tiny_run, "victim")
    change, message = TAMPERED[case]
    tamper(run, change)
    before = files(run)
    monkeypatch.setattr(cli, "passive_openmp", lambda: None)  # leave this process's env alone

    with pytest.raises(SystemExit) as stopped:
        cli.main(["--resume", str(run), "--epochs", "4", *TINY_ARGS])

    stderr = capsys.readouterr().err
    assert stopped.value.code == 2, stderr[-3000:]
    assert "usage: python -m training" in stderr
    assert f"error: --resume: {run / rundir.STATE_FILE}: {message}" in stderr, stderr
    assert files(run) == before  # nothing was written


def test_a_tampered_state_stops_the_command_with_exit_2(tiny_run, copy_run):
    """``python -m training --resume`` as a user types it: exit code 2, one line, no
    traceback, nothing written."""
    run = copy_run(tiny_run, "victim")
    change, message = TAMPERED["wrong-sized exp_avg"]
    tamper(run, change)
    before = files(run)

    done = subprocess.run(
        [sys.executable, "-m", "training", "--resume", str(run), "--epochs", "4", *TINY_ARGS],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})

    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    assert "usage: python -m training" in done.stderr
    assert f"error: --resume: {run / rundir.STATE_FILE}: {message}" in done.stderr, done.stderr
    assert files(run) == before  # nothing was written


def test_the_checks_run_inside_train_too(tiny_run, copy_run):
    """A state changed after the CLI's own check (or train() called directly) is refused
    by restore_checkpoint with the same line, before anything is loaded into torch."""
    from training.trainer import make_optimizer, restore_checkpoint

    run = copy_run(tiny_run, "victim")
    tamper(run, TAMPERED["wrong-sized exp_avg"][0])
    model = rundir.build_model(rundir.read_config(run))
    optimizer = make_optimizer(model, rundir.read_config(run).config)
    with pytest.raises(rundir.RunDirError, match=r"exp_avg of parameter 0 has shape \(3, 3\)"):
        restore_checkpoint(run, model, optimizer, torch.Generator(), torch.device("cpu"))
    assert not optimizer.state  # nothing was loaded


# --------------------------------------------------------------------------- Ctrl-C at the end

def _train_z4(out: Path, capsys) -> tuple[int, str]:
    from training.cli import main

    try:
        code = main([*TINY_ARGS, "--latent-dim", "4", "--epochs", "2", "--out", str(out)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_ctrl_c_during_the_final_tsne_stops_it_and_the_run_is_complete(tmp_path, monkeypatch,
                                                                       capsys):
    """SIGINT as the final epoch's t-SNE starts: openTSNE is stopped at its next check
    (the map is not finished), the final epoch is saved without it, the run is labelled
    complete (not interrupted) and says how to add the map, which that command does."""
    import openTSNE

    real_fit = openTSNE.TSNE.fit
    iterations: list[int] = []

    def fit_after_ctrl_c(self, X, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C now
        callbacks = self.callbacks  # count how far the optimisation gets
        self.callbacks = [lambda it, err, emb: iterations.append(it) or any(
            cb(it, err, emb) for cb in ([callbacks] if callable(callbacks) else callbacks or []))]
        return real_fit(self, X, *args, **kwargs)

    monkeypatch.setattr(openTSNE.TSNE, "fit", fit_after_ctrl_c)
    out = tmp_path / "run"
    code, err = _train_z4(out, capsys)

    assert code == 130, err
    assert "Traceback" not in err
    assert "SIGINT received while the final epoch was saved: the run is complete (2/2 " \
           "epochs)" in err
    assert f"python -m training.relatents {out}" in err
    assert iterations and max(iterations) <= 20  # of 500: stopped at the first checks
    info = rundir.read_config(out)
    assert info.status == "complete" and info.epochs_completed == 2
    assert "t-SNE map was skipped" in info.message
    latents = rundir.read_latents(out)
    assert "tsne" not in latents and "pca" in latents
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]
    rundir.load_run(out)
    from explorer.onnx_model import load_onnx_model

    load_onnx_model(out)  # the final save exported the ONNX files too

    monkeypatch.undo()
    from training.relatents import main as relatents

    assert relatents([str(out)]) == 0
    latents = rundir.read_latents(out)
    assert latents["tsne"].shape == (len(latents["mu"]), 2)
    assert np.isfinite(latents["tsne"]).all()
    assert rundir.read_config(out).message == ""


def test_ctrl_c_during_the_final_save_leaves_a_complete_run(tmp_path, monkeypatch, capsys):
    from training import trainer

    real_graphs = trainer.EpochLoop.final_graphs

    def graphs_after_ctrl_c(self):  # the ONNX files of the final, all-or-nothing save
        os.kill(os.getpid(), signal.SIGINT)
        return real_graphs(self)

    monkeypatch.setattr(trainer.EpochLoop, "final_graphs", graphs_after_ctrl_c)
    out = tmp_path / "run"
    code, err = _train_z4(out, capsys)

    assert code == 130, err
    assert "the run is complete (2/2 epochs)" in err and "--resume" not in err
    info = rundir.read_config(out)
    assert info.status == "complete" and info.epochs_completed == 2
    assert "tsne" in rundir.read_latents(out)
