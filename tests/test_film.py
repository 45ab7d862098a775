"""Training as a film: the trainer's per-epoch frames (training/frames.py), their checks as
untrusted input, the film figure (explorer/film.py), the default run, and the URL's
``?run=&sample=`` round trip in the app (AppTest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.film import film_figure, film_subset, fit_projection, load_film, make_film
from explorer.runs import RunEntry, default_run
from training import frames, rundir

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def film_of(run: Path):
    info = rundir.read_config(run)
    return load_film(run, rundir.read_latents(run), info.config.latent_dim,
                     info.epochs_completed, info.class_names)


# --------------------------------------------------------------------------- stored frames

@pytest.mark.parametrize("fixture", ["tiny_run", "tiny_run_z4", "tiny_ae_run"])
def test_training_stores_one_float16_frame_per_epoch(fixture, request):
    run = request.getfixturevalue(fixture)
    info = rundir.read_config(run)
    latents = rundir.read_latents(run)
    files = sorted((run / "frames").iterdir())
    assert [f.name for f in files] == [f"epoch-{e:04d}.npy" for e in range(1, 4)]
    stored = [np.load(f, allow_pickle=False) for f in files]
    assert all(a.dtype == np.float16 and a.shape == latents["mu"].shape for a in stored)
    # the last frame is the final epoch's mu (latents.npz), to float16 precision
    np.testing.assert_allclose(stored[-1], latents["mu"], rtol=2e-3, atol=2e-3)
    assert not np.allclose(stored[0], stored[-1], atol=1e-2)  # the codes moved
    got = frames.read_frames(run, len(latents["mu"]), info.config.latent_dim, 3)
    assert got is not None and got.epochs.tolist() == [1, 2, 3] and got.total_epochs == 3
    np.testing.assert_array_equal(got.mu[1], stored[1].astype(np.float32))


def test_frames_of_epochs_not_completed_and_other_names_are_ignored(tiny_run, copy_run):
    run = copy_run(tiny_run)
    (run / "frames" / "epoch-0009.npy").write_bytes(b"junk")  # beyond epochs_completed
    (run / "frames" / "notes.txt").write_text("hello")
    (run / "frames" / "epoch-1.npy").write_bytes(b"junk")  # not the naming scheme
    assert frames.stored_epochs(run, 3) == [1, 2, 3]


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=True)


@pytest.mark.parametrize("damage, expected", [
    (lambda p, n, d: _save(p, np.zeros((n, d + 1), np.float16)), "has shape"),
    (lambda p, n, d: _save(p, np.zeros((n - 1, d), np.float16)), "has shape"),
    (lambda p, n, d: _save(p, np.zeros((n, d), np.int16)), "float16 or float32"),
    (lambda p, n, d: _save(p, np.array([object()] * n * d).reshape(n, d)), "float16 or float32"),
    (lambda p, n, d: _save(p, np.full((n, d), np.nan, np.float16)), "non-finite"),
    (lambda p, n, d: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
    (lambda p, n, d: p.write_bytes(p.read_bytes() + b"extra"), "trailing data"),
    (lambda p, n, d: p.write_bytes(b"not a numpy file at all"), "not a readable .npy"),
])
def test_a_bad_frame_is_refused_with_one_line_naming_it(tiny_run, copy_run, damage, expected):
    run = copy_run(tiny_run)
    n, d = rundir.read_latents(run)["mu"].shape
    damage(run / "frames" / "epoch-0002.npy", n, d)
    with pytest.raises(rundir.RunDirError) as caught:
        film_of(run)
    assert expected in caught.value.problem
    assert caught.value.public.startswith(f"{run.name}/frames/epoch-0002.npy: ")
    assert str(run.parent) not in caught.value.public  # no server path for a web page


def test_a_frame_linked_outside_the_run_folder_is_refused(tiny_run, copy_run, tmp_path):
    run = copy_run(tiny_run)
    outside = tmp_path / "secret.npy"
    shutil.copy(run / "frames" / "epoch-0001.npy", outside)
    (run / "frames" / "epoch-0001.npy").unlink()
    (run / "frames" / "epoch-0001.npy").symlink_to(outside)
    with pytest.raises(rundir.RunDirError, match="outside the run folder"):
        film_of(run)


def test_a_long_run_loads_at_most_max_frames_spread_evenly():
    picked = frames.spread(list(range(1, 1001)), limit=200)
    assert len(picked) == 200 and picked[0] == 1 and picked[-1] == 1000
    assert np.diff(picked).max() <= 6
    assert frames.spread([1, 2, 3]) == [1, 2, 3]


def test_float16_frames_clip_instead_of_overflowing(tmp_path):
    frames.write_frame(tmp_path, 1, np.array([[1e6, -1e6]], np.float32))
    stored = np.load(tmp_path / "frames" / "epoch-0001.npy")
    assert np.isfinite(stored).all() and stored[0, 0] == np.float16(frames.FLOAT16_MAX)


# --------------------------------------------------------------------------- the film

def test_a_2d_film_draws_the_stored_coordinates_of_every_epoch(tiny_run):
    film = film_of(tiny_run)
    assert film is not None and film.projection == "raw"
    fig = film_figure(film, rundir.read_metrics(tiny_run))
    assert [f.name for f in fig.frames] == ["1", "2", "3"]
    for frame, epoch in zip(fig.frames, (1, 2, 3), strict=True):
        stored = np.load(tiny_run / "frames" / f"epoch-{epoch:04d}.npy").astype(np.float32)
        map_traces = [t for t in frame.data if t.customdata is not None]
        assert sum(len(t.x) for t in map_traces) == len(stored)
        for trace in map_traces:
            rows = np.asarray(trace.customdata)
            np.testing.assert_allclose(trace.x, stored[rows, 0], atol=1e-4)
            np.testing.assert_allclose(trace.y, stored[rows, 1], atol=1e-4)
            assert isinstance(trace.x, tuple)  # lists, not base64: frames need plain arrays
        marker = frame.data[-1]  # the shown epoch on the KL panel
        assert list(marker.x) == [epoch, epoch]
    assert fig.layout.sliders[0].active == 2  # opens on the final epoch


def test_a_larger_latent_space_uses_one_pca_fitted_on_the_last_frame(tiny_run_z4):
    film = film_of(tiny_run_z4)
    assert film.projection == "pca" and "fitted once on epoch 3" in film.note
    mu = np.stack([np.load(tiny_run_z4 / "frames" / f"epoch-{e:04d}.npy").astype(np.float32)
                   for e in (1, 2, 3)])
    mean, components = fit_projection(mu[-1])
    np.testing.assert_allclose(film.xy, (mu - mean) @ components.T, rtol=1e-4, atol=1e-5)
    # one projection for all frames: the last frame's coordinates are its own PCA
    centred = film.xy[-1] - film.xy[-1].mean(0)
    assert abs(np.corrcoef(centred.T)[0, 1]) < 1e-3  # principal axes are uncorrelated


def test_the_film_subset_is_fixed_and_bounded():
    assert film_subset(10).tolist() == list(range(10))
    a, b = film_subset(50_000), film_subset(50_000)
    assert len(a) == 2_000 and np.array_equal(a, b) and np.all(np.diff(a) > 0)


def test_make_film_of_one_dimension_adds_a_zero_axis():
    fr = frames.Frames(epochs=np.array([1, 2]), mu=np.ones((2, 5, 1), np.float32),
                       total_epochs=2)
    film = make_film(fr, np.zeros(5, int), ["a"])
    assert film.xy.shape == (2, 5, 2) and not film.xy[:, :, 1].any()


# --------------------------------------------------------------------------- default run

def entry(name: str, modified: float, model: str = "vae", dim: int = 2,
          status: str = "complete", problem: str = "") -> RunEntry:
    return RunEntry(path=Path("/runs") / name, modified=modified, status=status, model=model,
                    latent_dim=dim, problem=problem)


def test_the_default_run_is_chosen_deliberately_not_the_newest():
    demo = entry("demo-vae-z2", 1)
    student = entry("alice-z2", 9)  # newer, also 2-D
    newest = [entry("beta4", 10, dim=16), student, entry("demo-ae-z2", 2, model="ae"), demo]
    assert default_run(newest).name == "demo-vae-z2"
    assert default_run(newest, preferred="beta4").name == "beta4"  # the teacher's choice
    assert default_run(newest, preferred="missing").name == "demo-vae-z2"
    no_demo = [entry("beta4", 10, dim=16), student, entry("first-z2", 3)]
    assert default_run(no_demo).name == "first-z2"  # the oldest complete 2-D VAE
    only_big = [entry("beta4", 10, dim=16), entry("ae", 11, model="ae")]
    assert default_run(only_big).name == "beta4"  # else the newest
    broken = [entry("demo-vae-z2", 1, problem="bad"), entry("z16", 5, dim=16)]
    assert default_run(broken).name == "z16"
    assert default_run([]) is None


# --------------------------------------------------------------------------- the URL

@pytest.fixture
def two_runs(tiny_run, tiny_run_z4, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run, folder / tiny_run.name)
    shutil.copytree(tiny_run_z4, folder / tiny_run_z4.name)  # newer: copied second
    return folder


def open_app(runs: Path, monkeypatch, **params: str) -> AppTest:
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=90)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_url_restores_the_run_and_the_sample(two_runs, monkeypatch):
    at = open_app(two_runs, monkeypatch)
    # a fresh visitor gets the oldest complete 2-D VAE, not the newest (4-D) run
    assert at.selectbox[0].value == str(two_runs / "digits-vae-z2")
    assert at.query_params["run"] == "digits-vae-z2"
    at.number_input(key="sample_index").set_value(42).run()
    assert at.query_params["sample"] == "42"
    at.selectbox[0].set_value(str(two_runs / "digits-vae-z4")).run()
    assert at.query_params["run"] == "digits-vae-z4"
    at.number_input(key="sample_index").set_value(17).run()
    # "reload": a new session with the URL the browser now shows
    again = open_app(two_runs, monkeypatch, run="digits-vae-z4", sample="17")
    assert again.selectbox[0].value == str(two_runs / "digits-vae-z4")
    assert again.number_input(key="sample_index").value == 17
    assert "sample 17" in again.tabs[0].label


@pytest.mark.parametrize("params", [{"run": "../../etc"}, {"run": "nope", "sample": "-3"},
                                    {"sample": "999999"}, {"sample": "1e3"}])
def test_a_bad_url_falls_back_to_the_default(two_runs, monkeypatch, params):
    at = open_app(two_runs, monkeypatch, **params)
    assert at.selectbox[0].value == str(two_runs / "digits-vae-z2")
    assert at.number_input(key="sample_index").value == 0


def test_a_new_run_does_not_change_an_open_session(two_runs, tiny_run, monkeypatch):
    at = open_app(two_runs, monkeypatch)
    before = at.selectbox[0].value
    shutil.copytree(tiny_run, two_runs / "zz-student-run")  # someone trains a new run
    at.run()
    assert at.selectbox[0].value == before
    fresh = open_app(two_runs, monkeypatch)  # and a new visitor still gets the default
    assert fresh.selectbox[0].value == str(two_runs / "digits-vae-z2")
