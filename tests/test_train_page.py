"""The Train page follows this session's jobs (AppTest): a new job is shown the moment it
is submitted, even over a finished one; jobs are listed newest first; a running or
queued job of this session has a Cancel button that cancels it; the message that a
finished run is now the selected run comes in the same page run as the sidebar showing
it; one visitor's job never changes another visitor's run or panel; and a running
job's latent map is redrawn after every epoch.

Jobs run a stand-in for the trainer: a process that waits for its release file, then
copies the shared tiny run into its run folder (a complete, openable run) and exits 0.
Every process a test starts is killed at its end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import jobs
from tests.test_train_page_security import (
    PAGE,
    SLOW,
    child_of,
    page,
    shown_text,
    start_from_form,
)
from training import rundir

FINISHER = ("import os, shutil, sys, time\n"
            "src, dst, release = sys.argv[1:4]\n"
            "while not os.path.exists(release):\n"
            "    time.sleep(0.05)\n"
            "shutil.copytree(src, dst, dirs_exist_ok=True)\n")
RUN_PICK = "_run_pick"  # the sidebar's run selector
SELECTED = "is now the selected run"


@pytest.fixture
def runs(tmp_path, tiny_run) -> Path:
    """A runs folder holding one openable run, ``digits-vae-z2`` (a link to the tiny run)."""
    path = tmp_path / "runs"
    path.mkdir()
    (path / tiny_run.name).symlink_to(tiny_run, target_is_directory=True)
    return path


@pytest.fixture
def release(tmp_path, tiny_run, monkeypatch):
    """Jobs run FINISHER; ``release(name)`` lets job ``name`` finish as a complete run."""
    folder = tmp_path / "release"
    folder.mkdir()
    monkeypatch.setattr(jobs.TrainOptions, "argv", lambda self, run_dir: [
        sys.executable, "-c", FINISHER, str(tiny_run), str(run_dir),
        str(folder / Path(run_dir).name)])

    def let_finish(name: str, runs: Path) -> None:
        (folder / name).touch()
        status = jobs.wait_job(jobs.load_job(runs, name), timeout=60)
        assert status.state == "complete", (status.message, status.log_tail)
    return let_finish


@pytest.fixture
def cleanup(tmp_path):
    """Kills, at the end, every job child the app launched under tmp_path."""
    yield
    base = os.path.realpath(tmp_path)
    for folder in tmp_path.rglob(".jobs"):
        with jobs.server_lock(folder.parent):
            for record in folder.glob("*.json"):
                record.unlink()
    with jobs._CHILDREN_LOCK:
        children = [c for (runs, _), c in jobs._CHILDREN.items() if runs.startswith(base)]
    for child in children:
        with contextlib.suppress(OSError):
            os.killpg(child.popen.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            child.popen.wait(timeout=30)


def job_selector(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Training job")


def followed(at: AppTest) -> tuple[str, list[str]]:
    """(the job the panel shows, the selector's jobs in order)."""
    pick = job_selector(at)
    return pick.value, list(pick.options)


def progress(at: AppTest) -> str:
    return " | ".join(p.proto.text for p in at.get("progress"))


def cancel_buttons(at: AppTest) -> list:
    return [b for b in at.button if b.label == "Cancel"]


def toasts(at: AppTest) -> str:
    return " | ".join(t.value for t in at.toast)


def map_titles(at: AppTest) -> list[str]:
    """The titles of the panel's charts (the live map's says its epoch)."""
    titles = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec).get("layout", {})
        titles += [a.get("text", "") for a in layout.get("annotations", [])]
    return titles


def sidebar_run(at: AppTest) -> str:
    return at.selectbox(key=RUN_PICK).value


def test_a_new_job_is_followed_at_once_even_over_a_finished_one(
        monkeypatch, runs, release, cleanup):
    at = page(monkeypatch, runs)
    start_from_form(at, "first")
    assert followed(at) == ("first", ["first (yours)"])
    release("first", runs)
    at.run()
    assert "finished" in progress(at) and not cancel_buttons(at)
    start_from_form(at, "second")  # the finished panel of "first" was on show
    # the same page run shows the new job, newest first, with its Cancel button
    assert followed(at) == ("second", ["second (yours)", "first (yours)"])
    assert progress(at).startswith("Starting"), progress(at)
    assert len(cancel_buttons(at)) == 1
    assert "Training now: second" in shown_text(at)
    start_from_form(at, "third")
    assert followed(at) == ("third", ["third (yours)", "second (yours)", "first (yours)"])
    # choosing an older job shows it, and it stays shown on the next refresh
    job_selector(at).set_value("first").run()
    assert followed(at)[0] == "first" and "finished" in progress(at)
    at.run()
    assert followed(at)[0] == "first"


def test_cancel_stops_this_sessions_running_and_queued_jobs(monkeypatch, runs, release,
                                                            cleanup):
    at = page(monkeypatch, runs, VAE_TRAIN_MAX_JOBS="1")
    start_from_form(at, "running-one")
    start_from_form(at, "waiting-one")
    assert followed(at)[0] == "waiting-one"
    assert progress(at).startswith("Waiting in the queue: place 1 of 1"), progress(at)
    cancel_buttons(at)[0].click().run()  # a queued job leaves the queue
    assert not at.exception, at.exception
    assert jobs.poll_job(jobs.load_job(runs, "waiting-one")).state == "cancelled"
    assert "cancelled before it started" in progress(at) and not cancel_buttons(at)
    job_selector(at).set_value("running-one").run()
    assert progress(at).startswith("Starting"), progress(at)
    cancel_buttons(at)[0].click().run()  # a running one is signalled
    child_of(runs, "running-one").wait(timeout=30)
    assert jobs.wait_job(jobs.load_job(runs, "running-one"), 30).state == "cancelled"
    at.run()
    assert progress(at).startswith("cancelled"), progress(at)
    assert not cancel_buttons(at)


def test_the_selected_run_message_comes_with_the_sidebar_showing_it(
        monkeypatch, runs, release, cleanup):
    at = page(monkeypatch, runs)
    old = str(runs / "digits-vae-z2")
    assert sidebar_run(at) == old
    start_from_form(at, "fresh")
    release("fresh", runs)
    at.run()
    assert not at.exception, at.exception
    # one page run: the message, the session's choice and the sidebar agree
    assert SELECTED in toasts(at), toasts(at)
    assert "fresh finished" in toasts(at)
    assert at.session_state["run_dir"] == str(runs / "fresh")
    assert sidebar_run(at) == str(runs / "fresh")
    assert "latent map, epochs 1-3" in map_titles(at), map_titles(at)
    at.run()  # said once; the choice stays
    assert SELECTED not in toasts(at)
    assert sidebar_run(at) == str(runs / "fresh")
    # a run chosen afterwards is kept: the finished job does not take the sidebar back
    at.selectbox(key=RUN_PICK).set_value(old).run()
    at.run()
    assert sidebar_run(at) == old and at.session_state["run_dir"] == old


def test_one_visitors_job_changes_nothing_in_another_visitors_view(
        monkeypatch, runs, release, cleanup):
    other = page(monkeypatch, runs)
    old = str(runs / "digits-vae-z2")
    start_from_form(other, "theirs")  # the other visitor follows a job of their own
    student = AppTest.from_file(PAGE, default_timeout=120).run()
    assert followed(student)[0] == "theirs"  # nothing of their own: the newest job
    assert not cancel_buttons(student)
    start_from_form(student, "mine")
    assert followed(student) == ("mine", ["mine (yours)", "theirs"])
    other.run()
    assert followed(other) == ("theirs", ["mine", "theirs (yours)"])  # not switched
    release("mine", runs)
    other.run()
    assert followed(other)[0] == "theirs"
    assert SELECTED not in toasts(other) and "mine" not in toasts(other)
    assert other.session_state["run_dir"] == old and sidebar_run(other) == old
    student.run()
    assert SELECTED in toasts(student)
    assert sidebar_run(student) == str(runs / "mine")
    other.run()
    assert other.session_state["run_dir"] == old and sidebar_run(other) == old


def test_the_map_of_a_running_job_is_redrawn_after_every_epoch(monkeypatch, runs, tiny_run,
                                                                cleanup):
    monkeypatch.setattr(jobs.TrainOptions, "argv", lambda self, run_dir: list(SLOW))
    at = page(monkeypatch, runs)
    start_from_form(at, "live", epochs=3)
    assert not [t for t in map_titles(at) if "latent map" in t]  # no epoch yet
    run = runs / "live"

    def epochs_written(n: int) -> None:
        """The run folder as the trainer leaves it after epoch n (of the tiny run's 3)."""
        shutil.copytree(tiny_run, run, dirs_exist_ok=True)
        info = rundir.read_config(run)
        info.epochs_completed, info.status = n, "training"
        rundir.write_config(run, info)
        lines = (run / "metrics.jsonl").read_text().splitlines()[:n]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        for frame in (run / "frames").glob("epoch-*.npy"):
            if int(frame.stem.split("-")[1]) > n:
                frame.unlink()
    epochs_written(1)
    at.run()
    assert progress(at).startswith("Training: epoch 1 of 3"), progress(at)
    assert "latent map after epoch 1" in map_titles(at), map_titles(at)
    epochs_written(2)
    at.run()
    assert "latent map, epochs 1-2" in map_titles(at), map_titles(at)
    assert len(cancel_buttons(at)) == 1
