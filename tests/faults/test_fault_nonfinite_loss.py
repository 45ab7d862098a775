"""Group 3: a NaN or Inf loss (a huge learning rate, a planted bad batch) stops training
with exit code 1 and a message saying what happened and which checkpoint is the last good
one; that checkpoint is byte-identical to before and still loads and resumes."""

from __future__ import annotations

import json

import pytest
from faultkit import (  # noqa: F401  (fresh_run_fixture: a fixture)
    TINY_ARGS,
    assert_loadable,
    assert_no_temp_files,
    assert_unchanged,
    cli,
    fresh_run_fixture,
    snapshot,
)

from training import data as data_module
from training import rundir


def test_huge_learning_rate_stops_with_exit_1(tmp_path, capsys):
    out = tmp_path / "diverges"
    code, err = cli([*TINY_ARGS, "--epochs", "3", "--lr", "1e30", "--out", str(out)], capsys)

    assert code == 1
    assert "error: training diverged: the loss became nan at epoch 1, batch 2/23" in err
    assert "learning rate too high, or bad data?" in err
    assert "no epoch finished, so there is no checkpoint" in err
    assert "Traceback" not in err
    saved = json.loads((out / rundir.CONFIG_FILE).read_text())
    assert saved["status"] == "failed"
    assert saved["message"].startswith("training diverged")
    assert not (out / rundir.WEIGHTS_FILE).exists()  # no diverged weights saved as "good"
    assert_no_temp_files(out)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_planted_bad_batch_names_the_last_good_checkpoint(bad_value, fresh_run, monkeypatch,
                                                          capsys):
    """Resume a 3-epoch run to 5 epochs with one poisoned training image: epoch 4 fails,
    the epoch-3 files stay exactly as they were, and still load and resume."""
    real_load = data_module.load_dataset

    def poisoned(*args, **kwargs):
        split = real_load(*args, **kwargs)
        split.train_x[7, 0, 4, 4] = bad_value
        return split

    monkeypatch.setattr(data_module, "load_dataset", poisoned)
    before = snapshot(fresh_run)
    weights = fresh_run / rundir.WEIGHTS_FILE

    code, err = cli(["--resume", str(fresh_run), "--epochs", "5", *TINY_ARGS], capsys)

    assert code == 1
    assert "error: training diverged: the loss became" in err
    assert "at epoch 4, batch" in err
    assert f"the last good checkpoint is {weights} (epoch 3)" in err
    assert_unchanged(fresh_run, before, ignore=(rundir.CONFIG_FILE,))
    assert_no_temp_files(fresh_run)
    info = rundir.read_config(fresh_run)
    assert info.status == "failed"
    assert info.epochs_completed == 3
    assert f"last good checkpoint is {weights}" in info.message
    assert_loadable(fresh_run, epochs=3)

    # with the data fixed, the same run continues from that checkpoint
    monkeypatch.setattr(data_module, "load_dataset", real_load)
    code, err = cli(["--resume", str(fresh_run), "--epochs", "4", *TINY_ARGS], capsys)
    assert code == 0, err
    assert_loadable(fresh_run, epochs=4)
    assert rundir.read_config(fresh_run).status == "complete"
