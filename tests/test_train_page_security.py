"""The Train page under attack: everything a browser sends and every file in the runs
folder (job records included) is untrusted. Logic-level tests of explorer.jobs and
explorer.train_policy, and AppTest runs of app/pages/train.py.

Jobs that must stay alive for a while run a stand-in command (a Python loop that waits
for a signal) instead of the trainer; every process a test starts is killed at its end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import jobs
from explorer.jobs import JobRefused, LaunchError, TrainOptions
from explorer.train_policy import FOLDER_PROBLEM, TrainPolicy
from training import rundir

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app" / "pages" / "train.py")
TEACHER = "teacher-secret-token-123"
SLOW = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
TINY = dict(dataset="digits", epochs=1, hidden_dim=16)


def tiny(name: str, **extra) -> TrainOptions:
    return TrainOptions(name=name, **{**TINY, **extra})


@pytest.fixture
def runs(tmp_path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A data root with one class folder, an empty folder, and a link that leads out."""
    root = tmp_path / "data"
    (root / "faces" / "a").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "private" / "secret-class").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path / "private", target_is_directory=True)
    return root


@pytest.fixture
def cleanup(tmp_path):
    """Kills, at the end, every process the test started: ``cleanup.append(popen)`` for
    its own, and every job child the app launched under tmp_path (records are dropped
    first, under the server lock, so no queued job starts meanwhile)."""
    started: list[subprocess.Popen] = []
    yield started
    base = os.path.realpath(tmp_path)
    for folder in tmp_path.rglob(".jobs"):
        with jobs.server_lock(folder.parent):
            for record in folder.glob("*.json"):
                record.unlink()
    with jobs._CHILDREN_LOCK:
        children = [c for (runs, _), c in jobs._CHILDREN.items() if runs.startswith(base)]
    for popen in started + [c.popen for c in children]:
        with contextlib.suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            popen.kill()
        popen.wait(timeout=30)


@pytest.fixture
def slow_jobs(monkeypatch):
    """Jobs run SLOW instead of the trainer: they stay alive until signalled."""
    monkeypatch.setattr(jobs.TrainOptions, "argv", lambda self, run_dir: list(SLOW))


def child_of(runs: Path, name: str) -> subprocess.Popen:
    return jobs._CHILDREN[jobs._key(runs, name)].popen


def page(monkeypatch, runs: Path, **env) -> AppTest:
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    for key in ("VAE_DATA_ROOT", "VAE_TRAINING", "VAE_TEACHER_TOKEN", "VAE_RUNS_DISK_CAP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(PAGE, default_timeout=120).run()


def start_from_form(at: AppTest, name: str, dataset: str = "digits", folder: str = "",
                    epochs: int = 1) -> AppTest:
    at.selectbox(key="tf_dataset").set_value(dataset)
    if folder:
        at.text_input(key="tf_folder").set_value(folder)
    at.text_input(key="tf_name").set_value(name)
    at.number_input(key="tf_epochs").set_value(epochs)
    at.number_input(key="tf_hidden").set_value(16)
    submit = next(b for b in at.button if b.label == "Start training")
    submit.click().run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def shown_text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success",
                                  "code") for e in at.get(kind)]
    parts += [p.proto.text for p in at.get("progress")]
    return "\n".join(str(p) for p in parts)


# --------------------------------------------------------------------------- data root

BAD_FOLDERS = ["/etc", "~", "../private", "escape", "escape/secret-class", "nope",
               "notes.txt", "faces/../../private"]


def test_folders_outside_the_data_root_are_refused_with_one_message(data_root, tmp_path):
    policy = TrainPolicy(data_root=data_root.resolve())
    assert policy.resolve_folder("faces") == (data_root / "faces").resolve()
    assert policy.resolve_folder(str(data_root / "faces")) == (data_root / "faces").resolve()
    for typed in BAD_FOLDERS + [f"{data_root}/../private", str(tmp_path / "private")]:
        with pytest.raises(ValueError) as caught:
            policy.resolve_folder(typed)
        assert str(caught.value) == FOLDER_PROBLEM.format(typed=typed), typed
    # no data root: no folder data set at all
    for typed in ("faces", str(data_root / "faces")):
        problems = tiny("x", dataset=f"folder:{typed}").problems(tmp_path, TrainPolicy())
        assert any("not offered" in p for p in problems)


def test_a_link_inside_a_data_set_folder_that_leads_out_is_refused(data_root, runs, tmp_path):
    (data_root / "faces" / "a" / "stolen").symlink_to(tmp_path / "private")
    policy = TrainPolicy(data_root=data_root.resolve())
    with pytest.raises(JobRefused, match="links that lead outside"):
        jobs.submit(tiny("linked", dataset="folder:faces"), runs, policy)
    assert not (runs / "linked").exists() and jobs.list_jobs(runs) == []


def test_train_page_cannot_read_a_private_folder(monkeypatch, runs, data_root, tmp_path):
    at = page(monkeypatch, runs, VAE_DATA_ROOT=str(data_root))
    messages = {}
    for i, typed in enumerate(BAD_FOLDERS + [f"{data_root}/../private",
                                             str(tmp_path / "no-such-folder")]):
        start_from_form(at, f"steal-{i}", dataset="folder:…", folder=typed)
        text = errors(at)
        assert "not a folder under the data root" in text, (typed, text)
        messages[typed] = text.replace(repr(typed), "TYPED")
        assert "secret-class" not in shown_text(at).replace(typed, "")  # no labels leak
        assert str(tmp_path) not in text.replace(repr(typed), "")  # only the input echoed
    # no existence oracle: an existing and a missing folder outside read the same
    assert messages["/etc"] == messages[str(tmp_path / "no-such-folder")]
    assert len(set(messages.values())) == 1
    assert jobs.list_jobs(runs) == [] and not any(p.name.startswith("steal") for p in
                                                  runs.iterdir())


def test_without_a_data_root_no_folder_data_set_is_offered(monkeypatch, runs):
    at = page(monkeypatch, runs)
    assert not at.exception, at.exception
    assert not any(o.startswith("folder") for o in at.selectbox(key="tf_dataset").options)
    assert not [t for t in at.text_input if t.key == "tf_folder"]


def test_failure_reason_is_the_trainer_error_with_paths_hidden(runs, data_root, cleanup):
    policy = TrainPolicy(data_root=data_root.resolve())
    job = jobs.submit(tiny("no-images", dataset="folder:empty"), runs, policy, "me")
    status = jobs.wait_job(job, timeout=180, data_root=policy.data_root)
    assert status.state == "failed", status
    assert "exit code 2" in status.message and "no images" in status.message
    assert "<data>/empty" in status.message + status.log_tail
    for text in (status.message, status.log_tail):
        assert str(data_root) not in text and str(runs) not in text
        assert str(data_root.resolve()) not in text and str(runs.resolve()) not in text
    # a normal log line is never taken for the failure reason
    assert jobs.error_line("epoch 3/9 train recon error 1.0\ndone") is None
    assert jobs.error_line("x\npython -m training: error: bad --out") == \
        "python -m training: error: bad --out"


# --------------------------------------------------------------------------- records

def forged_record(runs: Path, name: str, pid: int, pid_start: int | None,
                  owner: str = "") -> Path:
    """A record an attacker planted, in this app's format plus the old format's fields
    (``log_path``, ``run_dir``, ``argv``)."""
    folder = runs / ".jobs"
    folder.mkdir(exist_ok=True)
    record = {"version": jobs.RECORD_VERSION, "name": name, "state": "running",
              "owner": owner, "options": {"name": name, "dataset": "digits", "epochs": 5},
              "created": time.time(), "started": time.time(), "ended": None, "pid": pid,
              "pid_start": pid_start, "returncode": None, "cancel_requested": False,
              "error": "", "log_path": "/etc/passwd", "run_dir": str(runs / name),
              "argv": ["x"], "epochs": 5}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def test_a_forged_record_neither_leaks_a_file_nor_signals_a_process(runs, cleanup):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    cleanup.append(victim)
    forged_record(runs, "forged", victim.pid, jobs.process_start_time(victim.pid))
    (runs / ".jobs" / "forged.log").symlink_to("/etc/passwd")  # even the derived log path
    job = jobs.load_job(runs, "forged")
    assert job is not None and job.log_path == runs / ".jobs" / "forged.log"
    status = jobs.poll_job(job)
    assert "root:" not in status.log_tail and "root:" not in status.message
    assert jobs.cancel_job(job, teacher=True) is False
    assert jobs.cancel_job(job, "") is False
    assert victim.poll() is None  # still alive: never signalled


def test_train_page_with_a_forged_record(monkeypatch, runs, cleanup):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    cleanup.append(victim)
    forged_record(runs, "forged", victim.pid, jobs.process_start_time(victim.pid))
    at = page(monkeypatch, runs, VAE_TEACHER_TOKEN=TEACHER)
    at.text_input(key="_teacher_input").set_value(TEACHER).run()
    assert not at.exception, at.exception
    assert "root:" not in shown_text(at)
    cancel = [b for b in at.button if b.label == "Cancel"]
    assert cancel, "the teacher sees Cancel"
    cancel[0].click().run()
    assert not at.exception, at.exception
    assert "root:" not in shown_text(at)
    assert "cannot be cancelled from here" in shown_text(at)
    assert victim.poll() is None  # the unrelated process is alive


def test_a_reused_or_dead_pid_reads_stopped_unexpectedly_with_the_resume_hint(
        runs, tiny_run, cleanup):
    import shutil

    shutil.copytree(tiny_run, runs / "halfway")
    info = rundir.read_config(runs / "halfway")
    info.status, info.epochs_completed = "training", 2
    rundir.write_config(runs / "halfway", info)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    cleanup.append(other)
    # the pid now belongs to another process: its start time differs
    forged_record(runs, "halfway", other.pid, (jobs.process_start_time(other.pid) or 0) + 7)
    status = jobs.poll_job(jobs.load_job(runs, "halfway"))
    assert status.state == "stopped" and status.finished
    assert "stopped unexpectedly" in status.message
    assert "python -m training --resume <runs>/halfway" in status.message
    assert jobs.cancel_job(jobs.load_job(runs, "halfway"), teacher=True) is False
    assert other.poll() is None
    # a pid that is gone
    other.kill()
    other.wait()
    forged_record(runs, "halfway", other.pid, None)
    assert jobs.poll_job(jobs.load_job(runs, "halfway")).state == "stopped"


def test_bad_records_are_ignored_with_one_line(runs, caplog, monkeypatch):
    folder = runs / ".jobs"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    (folder / "typed.json").write_text(json.dumps({"version": jobs.RECORD_VERSION,
                                                   "name": "typed", "pid": "1; rm -rf /"}))
    (folder / "list.json").write_text("[1, 2]")
    with caplog.at_level("WARNING", logger="explorer.jobs"):
        assert jobs.list_jobs(runs) == []
        assert jobs.list_jobs(runs) == []  # warned once per file, not per poll
    assert len([r for r in caplog.records if "ignoring job record" in r.message]) == 3
    at = page(monkeypatch, runs)
    assert not at.exception, at.exception


def test_old_records_are_pruned(runs):
    policy = TrainPolicy(keep_finished=50, keep_days=7)
    folder = runs / ".jobs"
    folder.mkdir()
    now = time.time()
    for i in range(60):
        job = jobs.TrainJob(name=f"old-{i:02d}", runs_dir=str(runs),
                            options={"name": f"old-{i:02d}", "epochs": 1}, state="ended",
                            created=now - 3600 + i, ended=now - 3600 + i, returncode=0)
        jobs._write_record(job)
        job.log_path.write_text("log")
    ancient = jobs.TrainJob(name="ancient", runs_dir=str(runs),
                            options={"name": "ancient", "epochs": 1}, state="ended",
                            created=now - 9 * 86400, ended=now - 9 * 86400, returncode=0)
    jobs._write_record(ancient)
    queued = jobs.TrainJob(name="waiting", runs_dir=str(runs),
                           options={"name": "waiting", "epochs": 1}, created=now - 9 * 86400)
    jobs._write_record(queued)
    jobs.prune_jobs(runs, policy)
    names = {j.name for j in jobs.list_jobs(runs)}
    assert names == {f"old-{i:02d}" for i in range(10, 60)} | {"waiting"}
    assert not (folder / "old-00.log").exists() and (folder / "old-59.log").exists()
    assert not (folder / "ancient.json").exists()


# --------------------------------------------------------------------------- races, limits

def test_six_concurrent_starts_respect_the_limit(runs, slow_jobs, cleanup):
    policy = TrainPolicy(max_running=2, max_queued=8)
    barrier = threading.Barrier(6)
    results: dict[int, object] = {}

    def start(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs.submit(tiny(f"race-{i}"), runs, policy, f"visitor-{i}")
        except Exception as exc:
            results[i] = exc
    threads = [threading.Thread(target=start, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = sorted(r.state if isinstance(r, jobs.TrainJob) else type(r).__name__
                    for r in results.values())
    assert states == ["queued"] * 4 + ["running"] * 2, results
    alive = [j for j in jobs.list_jobs(runs) if j.state == "running"]
    assert len(alive) == 2 and all(child_of(runs, j.name).poll() is None for j in alive)
    assert [jobs.queue_position(runs, j.name)[1] for j in alive] == [4, 4]
    # one running job ends: the oldest queued one takes its slot, no more
    first = alive[0]
    assert jobs.cancel_job(first, f"visitor-{first.name.split('-')[1]}")
    child_of(runs, first.name).wait(timeout=60)
    for _ in range(300):  # the reaper thread records the end and starts the next job
        running = [j for j in jobs.list_jobs(runs) if j.state == "running"]
        if len(running) == 2 and first.name not in {j.name for j in running}:
            break
        time.sleep(0.1)
    assert len(running) == 2 and first.name not in {j.name for j in running}
    assert jobs.queue_position(runs, "x")[1] == 3


def test_two_starts_of_one_name_give_one_run_and_one_refusal(runs, slow_jobs, cleanup):
    policy = TrainPolicy()
    barrier = threading.Barrier(2)
    results: list[object] = []

    def start(token: str) -> None:
        barrier.wait()
        try:
            results.append(jobs.submit(tiny("same"), runs, policy, token))
        except Exception as exc:
            results.append(exc)
    threads = [threading.Thread(target=start, args=(t,)) for t in ("tab-1", "tab-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if isinstance(r, jobs.TrainJob)]
    refused = [r for r in results if isinstance(r, JobRefused)]
    assert len(started) == 1 and len(refused) == 1, results
    assert "'same'" in str(refused[0]) and "already exists" in str(refused[0])
    assert [j.name for j in jobs.list_jobs(runs)] == ["same"]
    assert sorted(p.name for p in (runs / ".jobs").iterdir()) == [".lock", "same.json",
                                                                   "same.log"]


def test_only_the_owner_or_the_teacher_can_cancel(runs, slow_jobs, cleanup):
    policy = TrainPolicy(teacher_token=TEACHER)
    mine = jobs.submit(tiny("mine"), runs, policy, "owner-token")
    theirs = jobs.submit(tiny("theirs"), runs, policy, "owner-token-2")
    assert jobs.cancel_job(mine, "someone-else") is False
    assert jobs.cancel_job(mine, "") is False
    assert child_of(runs, "mine").poll() is None
    assert not policy.is_teacher("wrong") and not TrainPolicy().is_teacher("")
    assert jobs.cancel_job(mine, "owner-token") is True
    assert jobs.cancel_job(theirs, "someone-else", teacher=policy.is_teacher(TEACHER)) is True
    for name in ("mine", "theirs"):
        child_of(runs, name).wait(timeout=60)
        assert jobs.wait_job(jobs.load_job(runs, name), 60).state == "cancelled"


def test_train_page_another_session_cannot_cancel_but_the_teacher_can(
        monkeypatch, runs, slow_jobs, cleanup):
    owner = page(monkeypatch, runs, VAE_TEACHER_TOKEN=TEACHER)
    start_from_form(owner, "owned")
    assert "Started **owned**" in " ".join(s.value for s in owner.success)
    assert [b.label for b in owner.button if b.label == "Cancel"] == ["Cancel"]
    other = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not other.exception, other.exception
    assert "Started by another visitor" in shown_text(other)
    assert not [b for b in other.button if b.label == "Cancel"]
    other.text_input(key="_teacher_input").set_value("not-the-token").run()
    assert "not the teacher token" in errors(other)
    assert not [b for b in other.button if b.label == "Cancel"]
    other.text_input(key="_teacher_input").set_value(TEACHER).run()
    assert "Teacher mode" in shown_text(other)
    next(b for b in other.button if b.label == "Cancel").click().run()
    assert not other.exception, other.exception
    assert child_of(runs, "owned").wait(timeout=60) is not None
    assert jobs.wait_job(jobs.load_job(runs, "owned"), 60).state == "cancelled"


def test_queue_beyond_the_limit_and_per_visitor_cap(runs, slow_jobs, cleanup):
    policy = TrainPolicy(max_running=1, max_queued=1, max_per_visitor=2)
    assert jobs.submit(tiny("q1"), runs, policy, "a").state == "running"
    assert jobs.submit(tiny("q2"), runs, policy, "a").state == "queued"
    with pytest.raises(JobRefused, match="limit is 2 per visitor"):
        jobs.submit(tiny("q3"), runs, policy, "a")
    with pytest.raises(JobRefused, match="try again when one finishes"):
        jobs.submit(tiny("q4"), runs, policy, "b")
    assert jobs.cancel_job(jobs.load_job(runs, "q2"), "a")  # leaves the queue
    assert not (runs / "q2").exists()
    assert jobs.poll_job(jobs.load_job(runs, "q2")).message == "cancelled before it started"


def test_sizes_are_capped(runs):
    big = TrainOptions(name="huge", dataset="digits", epochs=1000, latent_dim=512,
                       hidden_dim=4096, hidden_layers=9)
    text = "\n".join(big.problems(runs, TrainPolicy()))
    for part in ("Epochs must be a whole number from 1 to 100",
                 "Latent dim must be a whole number from 1 to 64",
                 "Hidden dim must be a whole number from 1 to 1024",
                 "Hidden layers must be a whole number from 1 to 4"):
        assert part in text
    with pytest.raises(JobRefused):
        jobs.submit(big, runs, TrainPolicy())
    assert jobs.list_jobs(runs) == []


def test_a_start_beyond_the_disk_cap_is_refused(runs, monkeypatch):
    (runs / "old-run").mkdir()
    (runs / "old-run" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    with pytest.raises(JobRefused, match="Not enough room for another run"):
        jobs.submit(tiny("one-more"), runs, TrainPolicy(disk_cap=5 * 1024 * 1024))
    assert not (runs / "one-more").exists() and jobs.list_jobs(runs) == []
    at = page(monkeypatch, runs, VAE_RUNS_DISK_CAP="5M")
    start_from_form(at, "from-page")
    assert "Not enough room for another run" in errors(at)
    assert "5.0 MiB" in errors(at)
    assert not (runs / "from-page").exists()


def test_training_switched_off_shows_no_form(monkeypatch, runs):
    at = page(monkeypatch, runs, VAE_TRAINING="off")
    assert not at.exception, at.exception
    assert [i.value for i in at.info] == ["Training from the browser is turned off on this "
                                          "server."]
    assert not at.button and not [s for s in at.selectbox if s.key == "tf_dataset"]
    assert not TrainPolicy.from_env(["--runs-dir", "x", "--no-train"]).enabled
    with pytest.raises(JobRefused, match="turned off"):
        jobs.submit(tiny("nope"), runs, TrainPolicy(enabled=False))


def test_a_launch_that_fails_leaves_no_process_behind(runs, slow_jobs, monkeypatch,
                                                      cleanup):
    launched: list[subprocess.Popen] = []
    real_popen, real_write = subprocess.Popen, jobs._write_record

    def popen(*args, **kwargs):
        launched.append(real_popen(*args, **kwargs))
        cleanup.append(launched[-1])
        return launched[-1]

    def write(job):
        if job.state == "running":
            raise OSError(28, "No space left on device")
        real_write(job)
    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    monkeypatch.setattr(jobs, "_write_record", write)
    with pytest.raises(LaunchError, match="disk is full"):
        jobs.submit(tiny("full-disk"), runs, TrainPolicy(), "me")
    assert len(launched) == 1 and launched[0].poll() is not None  # killed and reaped
    assert jobs._key(runs, "full-disk") not in jobs._CHILDREN
    assert not (runs / "full-disk").exists()
    status = jobs.poll_job(jobs.load_job(runs, "full-disk"))
    assert status.state == "failed" and "could not be started" in status.message


def test_cli_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    from training.cli import main

    target = tmp_path / "a-file"
    target.write_text("not a run")
    with pytest.raises(SystemExit) as caught:
        main(["--dataset", "digits", "--out", str(target)])
    assert caught.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after the usage lines
    assert "is a file, not a folder" in message and "--resume" not in message
