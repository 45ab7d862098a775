"""Crafted run folders (untrusted: downloaded or shared) are refused before anything uses
them, each with one line naming the file (``training/validate.py``); the run listing
survives all of them and still offers the good run.

Every case copies the shared tiny runs (``copy_run``) and damages one file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from explorer.compare import rate_points
from explorer.onnx_model import load_onnx_model
from explorer.runs import list_runs, openable_runs
from training import rundir, validate
from training.config import MAX_LATENT_DIM, TrainConfig

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- crafting helpers

def edit_config(run: Path, change) -> None:
    path = run / rundir.CONFIG_FILE
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def edit_latents(run: Path, change) -> None:
    path = run / rundir.LATENTS_FILE
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(path, **arrays)


def edit_metrics(run: Path, line: int, change) -> None:
    path = run / rundir.METRICS_FILE
    rows = [json.loads(s) for s in path.read_text().splitlines()]
    change(rows[line - 1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def edit_weights(run: Path, change) -> None:
    """Change the weights and write them back with a recomputed checksum, as anyone can."""
    tensors, _meta = rundir.load_weights(run / rundir.WEIGHTS_FILE)
    change(tensors)
    rundir.save_weights(run / rundir.WEIGHTS_FILE, tensors, {"epoch": "3", "model": "vae"})


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape``, without any data."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def add_member_claiming(path: Path, name: str, data: bytes, claimed_size: int) -> None:
    """Append a stored zip member whose recorded (uncompressed) size is ``claimed_size``,
    as a deflated run of zeros would record it: the file stays small."""
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name), data)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    struct.pack_into("<I", raw, info.header_offset + 22, claimed_size)  # local header
    central = raw.rfind(b"PK\x01\x02" + raw[info.header_offset + 4:info.header_offset + 6])
    while raw[central + 46:central + 46 + len(name)] != name.encode():
        central = raw.rfind(b"PK\x01\x02", 0, central)
    struct.pack_into("<I", raw, central + 24, claimed_size)  # central directory
    path.write_bytes(bytes(raw))


def refused(call, *args) -> rundir.RunDirError:
    with pytest.raises(rundir.RunDirError) as err:
        call(*args)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return err.value


# --------------------------------------------------------------------------- config.json

def test_config_nested_200000_deep_is_refused_before_parsing(tiny_run, copy_run):
    run = copy_run(tiny_run)
    (run / rundir.CONFIG_FILE).write_text(
        '{"config": ' + "[" * 200_000 + "]" * 200_000 + ', "data": {}}')
    err = refused(rundir.read_config, run)
    assert err.path == run / rundir.CONFIG_FILE
    assert "nested 200,001 levels deep" in err.problem or "nested 200001" in err.problem
    assert err.public.startswith(f"{run.name}/config.json: ")


def test_json_depth_ignores_brackets_in_strings_and_counts_lines_apart():
    assert validate.json_depth(b'{"a": "[[[[[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3
    assert validate.json_depth(b'{"a": "\\"[[[[[[[[[[[["}') == 1
    text = b"]" * 50 + b"\n" + b"[" * 50 + b"]" * 50 + b"\n"
    assert validate.json_depth(text, per_line=True) == 50  # not hidden by the line before
    hidden = b'"\n' + b"[" * 40 + b"\n" + b'"'  # a "string" cannot span lines
    assert validate.json_depth(hidden) >= 40


def test_a_300_mb_config_is_refused_by_its_size_without_reading_it(tiny_run, copy_run,
                                                                   monkeypatch):
    run = copy_run(tiny_run)
    with open(run / rundir.CONFIG_FILE, "r+b") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse: no disk, no time
    reads: list[int] = []
    real_open = open

    def spy_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if str(file).endswith(rundir.CONFIG_FILE):
            real_read = handle.read
            handle.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore
        return handle

    monkeypatch.setattr("builtins.open", spy_open)
    err = refused(rundir.read_config, run)
    assert "config.json is 300.0 MB, more than the 1.0 MB limit" in err.problem
    assert reads == []  # not one byte was read


def test_config_file_just_over_the_cap_is_refused(tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_config(run, lambda raw: raw.update(message="x" * validate.MAX_CONFIG_BYTES))
    assert "more than the 1.0 MB limit" in refused(rundir.read_config, run).problem


def test_config_is_read_once_per_change(tiny_run, copy_run, monkeypatch):
    run = copy_run(tiny_run)
    calls: list[Path] = []
    real = validate.read_capped
    monkeypatch.setattr(validate, "read_capped",
                        lambda path, *a: calls.append(path) or real(path, *a))
    first = rundir.read_config(run)
    first.config.epochs = 99  # callers get their own copy
    assert rundir.read_config(run).config.epochs == 3
    assert len(calls) == 1
    edit_config(run, lambda raw: raw.update(message="changed, and longer than before"))
    assert rundir.read_config(run).message == "changed, and longer than before"
    assert len(calls) == 2
    # a refusal is cached as well: a broken file is not re-parsed on every rerun
    (run / rundir.CONFIG_FILE).write_text("{" * 50)
    for _ in range(3):
        refused(rundir.read_config, run)
    assert len(calls) == 3


@pytest.mark.parametrize("value, shown", [(2.0, "2.0 (a number)"), ("2", "'2' (a string)"),
                                          (True, "True (a boolean)")])
def test_latent_dim_must_be_an_integer(value, shown, tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_config(run, lambda raw: raw["config"].update(latent_dim=value))
    err = refused(rundir.read_config, run)
    assert f"config.latent_dim must be an integer, got {shown}" in err.problem
    refused(load_onnx_model, run)  # the lesson pages' loader too
    refused(rundir.load_run, run)


@pytest.mark.parametrize("section, key, value, message", [
    ("config", "latent_dim", 20_000, "latent_dim 20000 is more than this app can show: "
                                     f"at most {MAX_LATENT_DIM} latent dimensions"),
    ("data", "class_names", [f"c{i}" for i in range(5000)],
     "5,000 classes are more than this app can show: at most 100 classes"),
    ("config", "hidden_layers", 10**6, "config.hidden_layers must be in 0..16"),
    ("config", "latent_dim", 10**7, "latent_dim 10000000 is more than this app can show"),
    ("config", "hidden_dim", 8192, "parameters"),  # in bounds, but 8192 x 8192 x 2 layers
    ("data", "image_shape", [1, -8, 8], "is not 1 or 3 channels"),
    ("data", "num_test", "many", "data.num_test must be an integer"),
    ("config", "lr", float("nan"), "config.lr must be a finite number"),
])
def test_config_schema_refuses_with_a_line(section, key, value, message, tiny_run, copy_run):
    run = copy_run(tiny_run)
    if key == "hidden_dim":
        edit_config(run, lambda raw: raw["config"].update(hidden_layers=3))
    edit_config(run, lambda raw: raw[section].update({key: value}))
    err = refused(rundir.read_config, run)
    assert message in err.problem, err.problem
    assert err.path == run / rundir.CONFIG_FILE


def test_huge_models_are_refused_before_any_allocation(tiny_run, copy_run):
    """``hidden_layers`` 10^6 grew to 4.9 GB, ``latent_dim`` 10^7 asked for 20 GB: under an
    address-space limit of 1 GB above what torch already holds, each is refused with a
    RunDirError instead (the old code died of a MemoryError or took minutes)."""
    runs = []
    for name, change in (("layers", {"hidden_layers": 10**6}), ("latent", {"latent_dim": 10**7}),
                         ("wide", {"hidden_dim": 8192, "hidden_layers": 3})):
        run = copy_run(tiny_run, name)
        edit_config(run, lambda raw, change=change: raw["config"].update(change))
        runs.append(str(run))
    script = textwrap.dedent("""
        import resource, sys
        import torch
        from training import rundir
        from training.trainer import check_resume
        from explorer.onnx_model import load_onnx_model
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
        for run in sys.argv[1:]:
            for load in (rundir.load_run, load_onnx_model, rundir.read_config, check_resume):
                try:
                    load(run)
                except rundir.RunDirError as exc:
                    print("refused:", exc.problem)
                else:
                    print("loaded", run)
    """)
    done = subprocess.run([sys.executable, "-c", script, *runs], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith("refused: ") for line in lines), lines


def test_trainer_refuses_what_the_explorer_could_not_open():
    with pytest.raises(ValueError, match=f"latent-dim must be at most {MAX_LATENT_DIM}"):
        TrainConfig(latent_dim=MAX_LATENT_DIM + 1).validate()
    with pytest.raises(ValueError, match="parameters"):
        TrainConfig(hidden_dim=8192, hidden_layers=4).validate()
    TrainConfig(latent_dim=MAX_LATENT_DIM).validate()


def test_weight_shapes_match_the_model_without_building_it():
    import torch

    from training.model import VAE

    cases = [(dict(latent_dim=2), (1, 8, 8)),
             (dict(latent_dim=5, hidden_layers=3, hidden_dim=7, model="ae"), (3, 8, 8)),
             (dict(arch="conv", latent_dim=4, learn_sigma=True), (3, 16, 20))]
    for options, shape in cases:
        config = TrainConfig(**options)
        with torch.device("meta"):
            model = VAE.from_config(config, shape)
        assert validate.weight_shapes(config, shape) == \
            {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- latents.npz

def test_an_unknown_array_is_never_loaded(tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_latents(run, lambda a: a.update(extra=np.ones(1000, dtype=np.float32)))
    latents = rundir.read_latents(run)
    assert "extra" not in latents
    assert set(latents) <= set(validate.LATENT_ARRAYS)


def test_a_member_claiming_2_5_gb_is_refused_without_allocating(tiny_run, copy_run):
    run = copy_run(tiny_run)
    path = run / rundir.LATENTS_FILE
    claimed = 625_000_000 * 4 + 128  # a 2.5 GB float32 array, as its header declares
    add_member_claiming(path, "zeros.npy", npy_header((625_000_000,)), claimed)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        err = refused(rundir.read_latents, run)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "latents.npz would unpack to 2,384.2 MB, more than the 512.0 MB limit" in err.problem
    assert peak < 50 * 1024 * 1024


def test_a_known_array_whose_header_lies_is_refused_before_loading(tiny_run, copy_run):
    run = copy_run(tiny_run)
    path = run / rundir.LATENTS_FILE
    edit_latents(run, lambda a: a.pop("tsne", None))
    add_member_claiming(path, "tsne.npy", npy_header((400_000_000, 2)), 4096)
    err = refused(rundir.read_latents, run)
    assert "array 'tsne' declares (400000000, 2)" in err.problem


LATENT_CASES = {
    "mismatched lengths": (lambda a: a.update(labels=a["labels"][:-1]),
                           "arrays have different lengths"),
    "inf in mu": (lambda a: a["mu"].__setitem__((3, 1), np.inf),
                  "array 'mu' holds non-finite values"),
    "1-D mu": (lambda a: a.update(mu=a["mu"][:, 0]),
               "array 'mu' has shape (359,), expected (N, 2)"),
    "3-D mu": (lambda a: a.update(mu=a["mu"][:, :, None]),
               "array 'mu' has shape (359, 2, 1), expected (N, 2)"),
    "string labels": (lambda a: a.update(labels=a["labels"].astype(str)),
                      "array 'labels' must hold integers, found <U"),
    "NaN labels": (lambda a: a.update(labels=np.where(a["labels"] == 3, np.nan, a["labels"])),
                   "array 'labels' must hold integers, found float64"),
    "label out of range": (lambda a: a["labels"].__setitem__(0, 10),
                           "array 'labels' holds label 10, outside 0..9"),
    "missing pca_mean": (lambda a: a.pop("pca_mean"), "array 'pca_mean' is missing"),
    "object array": (lambda a: a.update(kl=np.array([object()] * 359)),
                     "holds Python objects"),
}


@pytest.mark.parametrize("case", LATENT_CASES)
def test_crafted_latents_are_refused_with_a_line(case, tiny_run, copy_run):
    run = copy_run(tiny_run)
    change, message = LATENT_CASES[case]
    if case == "object array":
        with np.load(run / rundir.LATENTS_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
        change(arrays)
        np.savez(run / rundir.LATENTS_FILE, **arrays, allow_pickle=True)
    else:
        edit_latents(run, change)
    err = refused(rundir.read_latents, run)
    assert message in err.problem, err.problem
    assert err.path == run / rundir.LATENTS_FILE
    assert str(run.parent) not in err.public


# --------------------------------------------------------------------------- metrics.jsonl

@pytest.mark.parametrize("change, message", [
    (lambda row: row.pop("test_recon"), "line 2 (epoch 2) has no 'test_recon'"),
    (lambda row: row.update(test_kl="12.5"), "line 2 (epoch 2): 'test_kl' is not a finite"),
    (lambda row: row.update(test_loss=float("nan")), "'test_loss' is not a finite number"),
    (lambda row: row.update(epoch="two"), "line 2 has no valid 'epoch'"),
    (lambda row: row.update(kl_per_dim=[1.0]), "'kl_per_dim' is not a list of 2 finite"),
])
def test_a_bad_metrics_row_refuses_the_metrics_naming_the_row(change, message, tiny_run,
                                                              tiny_run_z4, copy_run):
    run = copy_run(tiny_run)
    edit_metrics(run, 2, change)
    err = refused(rundir.read_metrics, run)
    assert message in err.problem, err.problem
    # the Beta page's chart: the bad run is named, the good one is still placed
    points, problems = rate_points([run, tiny_run_z4])
    assert [p.name for p in points] == [tiny_run_z4.name]
    assert len(problems) == 1 and problems[0].startswith(f"{run.name}: ")


def test_metrics_rows_keep_only_known_keys(tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_metrics(run, 1, lambda row: row.update(payload=["x"] * 100))
    rows = rundir.read_metrics(run)
    assert "payload" not in rows[0] and rows[0]["test_recon"] > 0


# --------------------------------------------------------------------------- weights

def test_a_vector_log_sigma_is_refused_by_both_loaders(tiny_run, copy_run):
    import torch

    run = copy_run(tiny_run)
    edit_weights(run, lambda t: t.update(log_sigma=torch.zeros(3)))
    for load in (load_onnx_model, rundir.load_run):
        err = refused(load, run)
        assert "weights do not match the model described in config.json" in err.problem
        assert "log_sigma (3,) != ()" in err.problem


def test_non_finite_weights_are_refused(tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_weights(run, lambda t: t["to_mu.bias"].fill_(float("inf")))
    assert "tensor to_mu.bias holds non-finite values" in refused(load_onnx_model, run).problem


@pytest.mark.parametrize("shape", [[1, 12, 12], [3, 8, 8], [1, 8, 9]])
def test_an_image_shape_that_does_not_fit_the_decoder(shape, tiny_run, copy_run):
    run = copy_run(tiny_run)
    edit_config(run, lambda raw: raw["data"].update(image_shape=shape))
    for load in (load_onnx_model, rundir.load_run, validate.check_run):
        err = refused(load, run)
        assert err.path == run / rundir.WEIGHTS_FILE
        assert "weights do not match the model described in config.json" in err.problem


def test_test_images_of_another_shape_and_wrong_inputs_are_refused(tiny_run):
    from explorer.inference import load_test_images, sample_terms
    from training.data import DataError

    info = rundir.read_config(tiny_run)
    info.image_shape = (1, 16, 16)
    with pytest.raises(DataError, match="has images of shape 1x8x8, this run's model takes"):
        load_test_images(info)
    with pytest.raises(ValueError, match="the model takes"):
        sample_terms(load_onnx_model(tiny_run), np.zeros((1, 16, 16), dtype=np.float32))


# --------------------------------------------------------------------------- the listing

def test_the_listing_survives_every_crafted_folder(tiny_run, copy_run, tmp_path):
    """One good run and one folder per finding: the good run is openable, every bad one is
    listed with its one-line problem naming the file (no server path), nothing raises."""
    import torch

    runs = tmp_path / "runs"
    runs.mkdir()
    good = copy_run(tiny_run, "runs/good")
    bad: dict[str, tuple[Path, str]] = {}

    def make(name: str, problem: str) -> Path:
        run = copy_run(tiny_run, f"runs/{name}")
        bad[name] = (run, problem)
        return run

    (make("nested", "config.json is nested 200,001 levels deep") / rundir.CONFIG_FILE).write_text(
        '{"config": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with open(make("huge-config", "config.json is 300.0 MB") / rundir.CONFIG_FILE,
              "r+b") as fh:
        fh.truncate(300 * 1024 * 1024)
    add_member_claiming(make("bomb", "latents.npz would unpack to 2,384.2 MB")
                        / rundir.LATENTS_FILE, "zeros.npy", npy_header((625_000_000,)),
                        625_000_000 * 4 + 128)
    for case, (change, message) in LATENT_CASES.items():
        if case != "object array":
            edit_latents(make(case.replace(" ", "-"), f"latents.npz: {message}"), change)
    edit_weights(make("vector-log-sigma", "model.safetensors: weights do not match"),
                 lambda t: t.update(log_sigma=torch.zeros(3)))
    edit_config(make("image-shape", "model.safetensors: weights do not match"),
                lambda raw: raw["data"].update(image_shape=[1, 12, 12]))
    edit_config(make("float-latent", "config.json: invalid run config: config.latent_dim "
                                     "must be an integer"),
                lambda raw: raw["config"].update(latent_dim=2.0))
    edit_config(make("many-classes", "config.json: 5,000 classes are more than this app"),
                lambda raw: raw["data"].update(class_names=[str(i) for i in range(5000)]))
    edit_config(make("many-dims", "config.json: invalid run config: latent_dim 20000 is more"),
                lambda raw: raw["config"].update(latent_dim=20_000))
    edit_config(make("many-layers", "config.json: invalid run config: config.hidden_layers"),
                lambda raw: raw["config"].update(hidden_layers=10**6))
    metrics_run = copy_run(tiny_run, "runs/bad-metrics")
    edit_metrics(metrics_run, 2, lambda row: row.pop("test_recon"))

    entries = {e.name: e for e in list_runs(runs)}
    assert set(entries) == {"good", "bad-metrics", *bad}
    assert {e.name for e in openable_runs(runs)} == {"good", "bad-metrics"}
    assert entries["good"].problem == "" and entries["good"].note == ""
    assert "metrics.jsonl: line 2 (epoch 2) has no 'test_recon'" in entries["bad-metrics"].note
    for name, (_run, problem) in bad.items():
        entry = entries[name]
        assert entry.problem.startswith(problem), (name, entry.problem)
        assert "\n" not in entry.problem and str(tmp_path) not in entry.problem
        assert "cannot open" in entry.label()
    assert good.exists()


def test_public_lines_name_only_the_run_folder(tiny_run, copy_run):
    run = copy_run(tiny_run, "shared-run")
    for name in rundir.ONNX_FILES:
        (run / name).unlink()
    err = refused(load_onnx_model, run)
    assert str(run) in str(err)  # the command line keeps the full path ...
    assert err.public.startswith("shared-run: this run has no encoder.onnx")
    assert str(run.parent) not in err.public  # ... a web page gets none
    assert "python -m training.export shared-run" in err.public
    assert os.sep + "tmp" not in err.public


def test_run_files_must_be_regular_files_inside_the_run_folder(tiny_run, copy_run, tmp_path):
    run = copy_run(tiny_run)
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((run / rundir.CONFIG_FILE).read_bytes())
    (run / rundir.CONFIG_FILE).unlink()
    (run / rundir.CONFIG_FILE).symlink_to(outside)
    err = refused(rundir.read_config, run)
    assert "config.json is a link to a file outside the run folder" in err.problem
