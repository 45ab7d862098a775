"""Group 7: bad command-line arguments are argparse-style errors (usage line, a message
saying what is wrong, exit code 2) and nothing is written: no run directory, no
``runs/`` folder, an existing run directory left byte-identical."""

from __future__ import annotations

import pytest
from faultkit import (  # noqa: F401  (fresh_run_fixture: a fixture)
    TINY_ARGS,
    assert_unchanged,
    cli,
    fresh_run_fixture,
    run_cli_process,
    snapshot,
)

BAD = {
    "unknown-dataset": (["--dataset", "cifar100"],
                        "argument --dataset: unknown dataset 'cifar100' (choose from mnist5k, "
                        "digits, mnist, fashion-mnist, kmnist, or folder:PATH)"),
    "negative-epochs": (["--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
    "zero-epochs": (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    "latent-dim-0": (["--latent-dim", "0"], "argument --latent-dim: must be at least 1, got 0"),
    "latent-dim-text": (["--latent-dim", "two"],
                        "argument --latent-dim: expected an integer, got 'two'"),
    "missing-folder": (["--dataset", "folder:/no/such/folder"],
                       "argument --dataset: folder '/no/such/folder' does not exist"),
    "empty-folder-name": (["--dataset", "folder:"], "folder: needs a path"),
    "nan-lr": (["--lr", "nan"], "argument --lr: must be greater than 0, got nan"),
    "negative-beta": (["--beta", "-1"], "argument --beta: must be at least 0, got -1"),
    "unknown-option": (["--epoks", "3"], "unrecognized arguments"),
    "bad-arch": (["--arch", "transformer"], "argument --arch: invalid choice: 'transformer'"),
    "conv-on-8x8": (["--arch", "conv"], "conv"),
    "missing-torchvision-data": (["--dataset", "mnist", "--data-dir", "nowhere"], "nowhere"),
    "resume-missing-dir": (["--resume", "no-such-run"],
                           "--resume: no-such-run/config.json: config.json is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_is_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    args, message = BAD[case]
    monkeypatch.chdir(tmp_path)  # the default --out is runs/... under the working directory

    code, err = cli([*TINY_ARGS, *args], capsys)

    assert code == 2
    assert err.startswith("usage: python -m training")
    assert "error: " in err
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "something was written"


def test_out_pointing_at_an_existing_run_is_refused(fresh_run, capsys):
    before = snapshot(fresh_run)
    code, err = cli([*TINY_ARGS, "--out", str(fresh_run)], capsys)
    assert code == 2
    assert f"--out {fresh_run}: already exists and is not empty" in err
    assert f"--resume {fresh_run}" in err  # says how to continue it instead
    assert_unchanged(fresh_run, before)


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8 not really")
    before = snapshot(folder)
    code, err = cli(["--resume", str(folder)], capsys)
    assert code == 2
    assert "config.json is missing: this is not a run directory" in err
    assert_unchanged(folder, before)


def test_real_process_exit_status_is_2(tmp_path):
    """The same through ``python -m training`` in a child process (the real exit status)."""
    out = tmp_path / "never"
    proc = run_cli_process([*TINY_ARGS, "--latent-dim", "0", "--out", str(out)])
    assert proc.returncode == 2
    assert "error: argument --latent-dim: must be at least 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
