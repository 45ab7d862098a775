"""Multi-process training: ``torchrun``-style DistributedDataParallel on CPU with gloo.

Two real processes run the unchanged CLI (``python -m torch.distributed.run``); rank 0
alone writes the run directory. For the first test each rank runs the CLI through a small
driver that then saves the rank's final weights, so we can check that the replicas ended
identical. A diverging run must stop on every rank with exit code 1 instead of leaving
one rank waiting for the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import rundir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--hidden-dim", "32", "--hidden-layers", "1", "--latent-dim",
        "3", "--batch-size", "64", "--device", "cpu", "--threads", "1", "--quiet"]


# Each rank: the training CLI, then its model's final weights saved as <dump>/rank<r>.pt.
# The model is caught where the trainer builds it (its VAE class, patched in this process).
DUMP_DRIVER = """
import os, sys
from pathlib import Path
import torch
from training import cli, trainer

class RecordedVAE(trainer.VAE):
    built = []

    @classmethod
    def from_config(cls, config, image_shape):
        model = super().from_config(config, image_shape)
        cls.built.append(model)
        return model

trainer.VAE = RecordedVAE
dump, argv = Path(sys.argv[1]), sys.argv[2:]
code = cli.main(argv)
dump.mkdir(parents=True, exist_ok=True)
torch.save(RecordedVAE.built[-1].state_dict(), dump / f"rank{os.environ['RANK']}.pt")
sys.exit(code)
"""


def torchrun(args: list[str], timeout: float = 240, script: Path | None = None):
    """``python -m training ARGS`` (or ``python SCRIPT ARGS``) in two gloo processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    target = [str(script)] if script else ["-m", "training"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", *target, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_two_gloo_processes_write_one_complete_run_with_identical_replicas(tmp_path):
    out, dump = tmp_path / "run", tmp_path / "dump"
    driver = tmp_path / "dump_driver.py"
    driver.write_text(DUMP_DRIVER)
    done = torchrun([str(dump), *TINY, "--epochs", "2", "--out", str(out)], script=driver)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # the run directory is complete, written once, by rank 0, with its ONNX files
    assert set(rundir.RUN_FILES + rundir.ONNX_FILES) <= {p.name for p in out.iterdir()}
    assert not rundir.leftover_temp_files(out)
    info = rundir.read_config(out)
    assert info.status == "complete" and info.epochs_completed == 2
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]
    assert "tsne" in rundir.read_latents(out)  # latent_dim 3: the final t-SNE was cached

    # both replicas ended with bit-identical weights, and those are the saved ones
    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    loaded = rundir.load_run(out)
    saved = loaded.model.state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)
    assert rundir.onnx_problem(out, loaded.weights_meta["weights_sha256"]) is None

    # each replica took one step per batch of its half of the data (DistributedSampler):
    # 1,438 training images / 2 ranks / batch 64 = 12 steps per epoch, not 23
    state = rundir.load_train_state(out)
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {2 * 12}


def test_a_diverging_ddp_run_stops_on_every_rank_and_names_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    done = torchrun([*TINY, "--epochs", "3", "--lr", "1e30", "--out", str(out)], timeout=240)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert text.count("training diverged") >= 2, text[-3000:]  # both ranks said so
    info = rundir.read_config(out)
    assert info.status == "failed" and "diverged" in (info.message or "")
