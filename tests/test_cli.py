"""The command line: defaults, argparse-style errors (exit 2, nothing written), and clear
load errors for a broken run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training import rundir
from training.cli import build_parser, config_from_args, main
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_no_arguments_means_the_demo_config():
    args = build_parser().parse_args([])
    config = config_from_args(args)
    assert config == TrainConfig()
    assert (config.dataset, config.model, config.latent_dim) == ("mnist5k", "vae", 2)


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--epochs", "-3"], "must be at least 1, got -3"),
    (["--latent-dim", "0"], "must be at least 1, got 0"),
    (["--lr", "nan"], "must be greater than 0"),
    (["--dataset", "folder:/no/such/folder"], "does not exist"),
    (["--model", "gan"], "invalid choice: 'gan'"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m training" in err and message in err
    assert not out.exists()


def test_missing_torchvision_files_exit_2_naming_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--out", str(out)])
    assert info.value.code == 2
    assert str((tmp_path / "d" / "MNIST" / "raw").resolve()) in capsys.readouterr().err
    assert not out.exists()


def test_existing_run_is_never_overwritten(tiny_run, capsys):
    def files() -> dict[str, bytes]:  # every file, also in subfolders (frames/)
        return {str(p.relative_to(tiny_run)): p.read_bytes()
                for p in sorted(tiny_run.rglob("*")) if p.is_file()}

    before = files()
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "digits", "--out", str(tiny_run)])
    assert info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert before == files()


def test_cli_trains_and_resumes_end_to_end(tmp_path):
    out = tmp_path / "cli-run"
    common = [sys.executable, "-m", "training", "--dataset", "digits", "--hidden-dim", "32",
              "--threads", "1", "--quiet"]
    done = subprocess.run([*common, "--epochs", "2", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rundir.read_config(out).epochs_completed == 2
    again = subprocess.run([*common, "--resume", str(out), "--epochs", "3"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = rundir.read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rundir.read_config(out).status == "complete"


def test_load_run_errors_name_the_file_and_the_problem(tiny_run, copy_run, tmp_path):
    with pytest.raises(rundir.RunDirError, match="run directory does not exist"):
        rundir.load_run(tmp_path / "nothing")

    run = copy_run(tiny_run, "no-config")
    (run / "config.json").unlink()
    with pytest.raises(rundir.RunDirError, match=r"config\.json.*missing"):
        rundir.load_run(run)

    run = copy_run(tiny_run, "bad-json")
    (run / "config.json").write_text("{ not json")
    with pytest.raises(rundir.RunDirError, match=r"config\.json: not valid JSON"):
        rundir.load_run(run)

    run = copy_run(tiny_run, "no-weights")
    (run / "model.safetensors").unlink()
    with pytest.raises(rundir.RunDirError, match=r"model\.safetensors: weights file is missing"):
        rundir.load_run(run)

    run = copy_run(tiny_run, "truncated")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(rundir.RunDirError, match=r"model\.safetensors: not a valid safetensors"):
        rundir.load_run(run)

    run = copy_run(tiny_run, "flipped")
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data, after the header
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(rundir.RunDirError, match="checksum mismatch"):
        rundir.load_run(run)

    run = copy_run(tiny_run, "other-arch")
    raw = json.loads((run / "config.json").read_text())
    raw["config"]["hidden_dim"] = 99
    (run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(rundir.RunDirError, match=r"model\.safetensors: weights do not match"):
        rundir.load_run(run)
