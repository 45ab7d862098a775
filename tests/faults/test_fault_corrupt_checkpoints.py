"""Group 1: damaged checkpoints (empty, truncated, random bytes, another architecture, one
flipped byte in the tensor data) give a clear error naming the file, in the library, the
CLI (``--resume``) and the app, and nothing on disk is changed by the attempt."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from faultkit import (  # noqa: F401  (fresh_run_fixture: a fixture)
    TINY_ARGS,
    assert_loadable,
    assert_no_temp_files,
    assert_unchanged,
    cli,
    flip_byte,
    fresh_run_fixture,
    safetensors_data_start,
    snapshot,
    zip_member_data_offset,
)

from training import rundir

KINDS = ("empty", "truncated", "random", "other-architecture", "flipped-byte")


def damage(path: Path, kind: str, donor_run: Path) -> None:
    """Damage one checkpoint file in place, the way ``kind`` says."""
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "other-architecture":  # a valid file from a run with latent_dim 4
        shutil.copyfile(donor_run / path.name, path)
    elif kind == "flipped-byte":
        if path.name == rundir.WEIGHTS_FILE:
            offset = safetensors_data_start(path) + 1000
        else:  # a tensor inside the torch zip: data/1 is the first weight matrix
            offset = zip_member_data_offset(path, "/data/1") + 1000
        flip_byte(path, offset)
    else:
        raise ValueError(kind)
    assert path.read_bytes() != data


WEIGHTS_PROBLEM = {
    "empty": "weights file is empty (0 bytes)",
    "truncated": "not a valid safetensors file (truncated or corrupt)",
    "random": "not a valid safetensors file (truncated or corrupt)",
    "other-architecture": "weights do not match the model described in config.json "
                          "(another architecture?)",
    "flipped-byte": "checksum mismatch: the tensor data is corrupt",
}

STATE_PROBLEM = {
    "empty": "train_state.pt is empty (0 bytes)",
    "truncated": "cannot be loaded safely (corrupt",
    "random": "cannot be loaded safely (corrupt",
    "other-architecture": "weights do not match the model described in config.json "
                          "(another architecture?)",
    "flipped-byte": "checksum mismatch: the saved training state is corrupt",
}


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_weights_are_refused_naming_the_file(kind, fresh_run, tiny_run_z4):
    weights = fresh_run / rundir.WEIGHTS_FILE
    damage(weights, kind, tiny_run_z4)
    before = snapshot(fresh_run)

    with pytest.raises(rundir.RunDirError) as err:
        rundir.load_run(fresh_run)

    assert err.value.path == weights
    assert str(err.value).startswith(f"{weights}: ")
    assert WEIGHTS_PROBLEM[kind] in str(err.value)
    assert_unchanged(fresh_run, before)  # reading never writes
    # every other file of the run is still good
    rundir.read_config(fresh_run)
    rundir.read_latents(fresh_run)
    assert rundir.load_train_state(fresh_run)["epoch"] == 3


@pytest.mark.parametrize("kind", KINDS)
def test_resume_from_damaged_state_is_an_argparse_error(kind, fresh_run, tiny_run_z4, capsys):
    state = fresh_run / rundir.STATE_FILE
    damage(state, kind, tiny_run_z4)
    before = snapshot(fresh_run)

    code, err = cli(["--resume", str(fresh_run), "--epochs", "4", *TINY_ARGS], capsys)

    assert code == 2
    assert "usage: python -m training" in err
    assert f"error: --resume: {state}: " in err
    assert STATE_PROBLEM[kind] in err
    assert "Traceback" not in err
    assert_unchanged(fresh_run, before)
    assert_no_temp_files(fresh_run)
    rundir.load_run(fresh_run)  # the weights were never touched and still load


def test_state_checksum_covers_the_optimizer_and_rng(fresh_run):
    """A flipped byte anywhere in the saved tensors, not just the model, is caught."""
    import zipfile

    state = fresh_run / rundir.STATE_FILE
    with zipfile.ZipFile(state) as zf:
        tensors = [i.filename for i in zf.infolist() if "/data/" in i.filename]
    last = max(tensors, key=lambda name: int(name.rsplit("/", 1)[1]))  # an RNG state
    flip_byte(state, zip_member_data_offset(state, last) + 7)
    with pytest.raises(rundir.RunDirError, match="checksum mismatch"):
        rundir.load_train_state(fresh_run)


def test_damaged_config_and_latents_name_their_file(fresh_run):
    config = fresh_run / rundir.CONFIG_FILE
    good_config = config.read_bytes()
    config.write_bytes(good_config[:100])
    with pytest.raises(rundir.RunDirError, match=r"config\.json: not valid JSON") as err:
        rundir.load_run(fresh_run)
    assert err.value.path == config
    config.write_bytes(good_config)

    latents = fresh_run / rundir.LATENTS_FILE
    latents.write_bytes(latents.read_bytes()[:500])
    with pytest.raises(rundir.RunDirError, match=r"latents\.npz: not a readable \.npz") as err:
        rundir.read_latents(fresh_run)
    assert err.value.path == latents
    rundir.load_run(fresh_run)  # weights and config are unaffected


def test_resume_with_corrupt_metrics_is_a_clear_error(fresh_run, capsys):
    metrics = fresh_run / rundir.METRICS_FILE
    metrics.write_bytes(metrics.read_bytes() + b'{"epoch": 4, "train_lo\n')
    before = snapshot(fresh_run)

    code, err = cli(["--resume", str(fresh_run), "--epochs", "4", *TINY_ARGS], capsys)

    assert code in (1, 2)
    assert f"{metrics}: line 4 is not valid JSON" in err
    assert "Traceback" not in err
    assert_unchanged(fresh_run, before)
    assert_no_temp_files(fresh_run)


def test_undamaged_copy_still_resumes(fresh_run, capsys):
    """Control: the same command on an intact copy succeeds (the errors above are real)."""
    code, err = cli(["--resume", str(fresh_run), "--epochs", "4", *TINY_ARGS], capsys)
    assert code == 0, err
    assert_loadable(fresh_run, epochs=4)
    assert_no_temp_files(fresh_run)
