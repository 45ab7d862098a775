"""Train from the app: a form with the main options starts ``python -m training`` in a
separate process (or queues it while the server's training slots are busy). Below it, an
``st.fragment`` re-reads the job records every second: every job, newest first, and the
panel of the one this session follows (a progress bar, Cancel for its own running or
queued job, the newest epoch's latent map beside the test curves, the log).

The session follows the job it started last, from the page run in which it was
submitted, and the job chosen in the selector; one visitor's job never changes what
another follows or which run they have open. When this session's own job completes,
its run becomes the selected run of this session only, and the message saying so is
shown in the page run whose sidebar shows that run.

What a browser may do is the server's :class:`~explorer.train_policy.TrainPolicy`: built-in
data sets or folders under the teacher's data root, capped sizes, a queue, a disk cap,
and cancelling only the jobs this session started (or any, with the teacher token)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from pathlib import Path
from typing import Any

import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from app.navigation import explorer_page
from explorer import figures
from explorer.jobs import (
    FORM_DATASETS,
    LIMITS,
    MAX_BETA,
    JobRefused,
    JobStatus,
    LaunchError,
    Redactor,
    TrainJob,
    TrainOptions,
    cancel_job,
    job_state,
    list_jobs,
    may_cancel,
    poll_job,
    queue_position,
    runs_disk_usage,
    schedule,
    submit,
)
from explorer.runs import describe_run, file_stamp
from explorer.text import md
from explorer.train_policy import TrainPolicy, format_bytes
from training import rundir

JOBS_KEY = "_train_jobs_opened"  # names of finished jobs whose run was already opened
TOKEN_KEY = "_train_session_token"  # this session's secret: it owns the jobs it starts
TEACHER_KEY = "_train_teacher"  # True once the teacher token was entered in this session
FOLLOW_KEY = "_train_follow"  # the job the panel shows (the one started or chosen last)
PICK_KEY = "_train_pick"  # the job selector's key: PICK_KEY + "_" + its generation
PICK_GEN_KEY = "_train_pick_gen"  # bumped when the page, not the visitor, changes the job
SELECTED_KEY = "_train_selected"  # (job, run, time): a run just selected; said once shown
CANCEL_FAILED_KEY = "_train_cancel_failed"  # the job a Cancel could not stop
FOLDER_OPTION = "folder:…"
OFF_MESSAGE = "Training from the browser is turned off on this server."
STATE_WORDS = {"queued": "waiting", "running": "training", "ended": "ended",
               "lost": "stopped"}


def session_token() -> str:
    """An unguessable token per browser session; job records store only its hash."""
    if not isinstance(st.session_state.get(TOKEN_KEY), str):
        st.session_state[TOKEN_KEY] = secrets.token_urlsafe(32)
    return st.session_state[TOKEN_KEY]


def _check_teacher_token(policy: TrainPolicy) -> None:
    entered = st.session_state.get("_teacher_input") or ""
    st.session_state[TEACHER_KEY] = policy.is_teacher(entered)
    st.session_state["_teacher_wrong"] = bool(entered) and not st.session_state[TEACHER_KEY]
    st.session_state["_teacher_input"] = ""  # the token is not kept in the session


def teacher_sidebar(policy: TrainPolicy) -> bool:
    """The teacher token field (only when the server has one). True in teacher mode."""
    if not policy.teacher_token:
        return False
    if st.session_state.get(TEACHER_KEY):
        st.sidebar.caption("**Teacher mode**: you can cancel any training job.")
        if st.sidebar.button("Leave teacher mode", key="_teacher_leave"):
            st.session_state[TEACHER_KEY] = False
            st.rerun()
        return True
    st.sidebar.text_input("Teacher token", type="password", key="_teacher_input",
                          on_change=_check_teacher_token, args=(policy,),
                          help="Lets you cancel any visitor's training job.")
    if st.session_state.get("_teacher_wrong"):
        st.sidebar.error("That is not the teacher token.")
    return False


def default_name(dataset: str, model: str, latent_dim: int, beta: float) -> str:
    stamp = dt.datetime.now().strftime("%H%M%S")
    beta_part = "" if model == "ae" or beta == 1 else f"-b{beta:g}"
    return f"{dataset}-{model}-z{latent_dim}{beta_part}-{stamp}".replace("/", "_")


def training_form(runs: str, policy: TrainPolicy, token: str, teacher: bool) -> None:
    """The form; on submit, the job is started (or queued) and followed by this session's
    jobs panel from this very run on."""
    datasets = list(FORM_DATASETS) + ([FOLDER_OPTION] if policy.data_root else [])
    with st.form("train_form", border=True):
        c1, c2, c3 = st.columns(3)
        dataset = c1.selectbox("Data set", datasets, key="tf_dataset",
                               help="mnist5k: 5,000 real MNIST digits, no download; digits: "
                                    "8x8 digits, trains in seconds. mnist / fashion-mnist / "
                                    "kmnist need their files in data/."
                                    + (" folder:…: a folder under the teacher's data folder "
                                       "(one subfolder per class)." if policy.data_root
                                       else ""))
        folder = ""
        if policy.data_root:
            folder = c1.text_input("Folder (for folder:…)", key="tf_folder",
                                   placeholder="a folder in the data folder, e.g. my_images",
                                   help="A folder inside the data folder the teacher set up")
        hidden = c1.number_input("Hidden width (0 = automatic)", 0, LIMITS["hidden_dim"][1],
                                 value=0, key="tf_hidden")
        layers = c1.number_input("Hidden layers (0 = automatic)", 0,
                                 LIMITS["hidden_layers"][1], value=0, key="tf_layers")
        model = c2.radio("Model", ["vae", "ae"], key="tf_model", horizontal=True,
                         format_func=lambda m: {"vae": "VAE", "ae": "plain autoencoder"}[m])
        latent_dim = c2.number_input("Latent dimensions", *LIMITS["latent_dim"], value=2,
                                     key="tf_latent")
        epochs = c2.number_input("Epochs", *LIMITS["epochs"], value=30, key="tf_epochs")
        beta = c3.number_input("β (KL weight)", 0.0, MAX_BETA, 1.0, 0.5, key="tf_beta",
                               help="1 = the true ELBO; >1 = β-VAE")
        warmup = c3.number_input("KL warm-up (epochs)", *LIMITS["kl_warmup"], value=0,
                                 key="tf_warmup", help="β ramps linearly from 0 over this many "
                                                       "epochs")
        name = c3.text_input("Run name (blank: automatic)", key="tf_name",
                             placeholder="e.g. mnist5k-vae-z2-b4")
        submitted = st.form_submit_button("Start training", type="primary")
        st.caption(f"Limits on this server: {policy.limits_text()} (now "
                   f"{format_bytes(runs_disk_usage(runs))} used).")
    # Always one element here, message or not, so the jobs panel below keeps its place in
    # the page (a fragment is known by its place: a shifted one would leave a stale copy).
    notice = st.container()
    if not submitted:
        return
    ds = f"folder:{folder.strip()}" if dataset == FOLDER_OPTION else dataset
    options = TrainOptions(
        name=name.strip() or default_name("folder" if ds.startswith("folder:") else ds, model,
                                          int(latent_dim), float(beta)),
        dataset=ds, model=model, latent_dim=int(latent_dim), beta=float(beta),
        kl_warmup=int(warmup), epochs=int(epochs), hidden_dim=int(hidden) or None,
        hidden_layers=int(layers) or None)
    try:
        job = submit(options, runs, policy, token, teacher)
    except JobRefused as exc:
        notice.error("Training was not started:\n\n" + "\n".join(
            f"- {line}" for line in str(exc).splitlines()))
        return
    except LaunchError as exc:
        notice.error(md(exc))
        return
    except OSError as exc:
        notice.error(f"Training could not be started: {exc.strerror or type(exc).__name__}.")
        return
    st.session_state[FOLLOW_KEY] = job.name  # the panel switches to it in this run
    _new_selector()
    if job.state == "queued":
        place, total = queue_position(runs, job.name)
        notice.info(f"**{md(job.name)}** waits in the queue (place {place} of {total}): "
                    f"{policy.max_running} job(s) are training. It starts by itself when one "
                    f"finishes; you can keep exploring other pages.")
    else:
        notice.success(f"Started **{md(job.name)}** (1 CPU thread). You can keep exploring "
                       f"other pages; come back here to follow it.")


def _cancel(job: TrainJob, token: str, teacher: bool) -> None:
    done = cancel_job(job, token, teacher)
    st.session_state[CANCEL_FAILED_KEY] = None if done else job.name


def _adopt_pick(key: str) -> None:
    st.session_state[FOLLOW_KEY] = st.session_state[key]


def _new_selector() -> None:
    """A new job selector (a new key) for a job the page chose: the browser may still send
    the old selector's value in a request it made before it saw the new job (a refresh
    of the panel), and that stale value must not take the panel back."""
    st.session_state[PICK_GEN_KEY] = int(st.session_state.get(PICK_GEN_KEY, 0)) + 1


def followed_job(jobs: list[TrainJob], token: str) -> str:
    """The job the panel shows: the one this session chose or started last (kept while its
    record exists), else this session's newest job, else the newest job of anyone."""
    names = [j.name for j in jobs]
    follow = st.session_state.get(FOLLOW_KEY)
    if follow in names:
        return follow
    own = [j.name for j in jobs if may_cancel(j, token)]
    return own[0] if own else names[0]


def _open_finished_run(job: TrainJob, status: JobStatus, mine: bool) -> None:
    """Select this session's own run once it finished, and only once (a visitor who picks
    another run afterwards keeps it). The sidebar's run selector was drawn before this
    panel, so a full rerun draws it again with the new run, and the message saying so is
    shown by :func:`main` only once the selector shows that run."""
    if not (mine and status.state == "complete" and status.epochs_completed > 0):
        return
    opened = st.session_state.setdefault(JOBS_KEY, [])
    if job.name in opened or not describe_run(job.run_dir).openable:
        return  # not yet openable (its last files are being written): the next tick
    opened.append(job.name)
    st.session_state[app_shared.RUN_KEY] = job.run_dir
    st.session_state[SELECTED_KEY] = (job.name, job.run_dir, time.time())
    st.rerun()  # the whole page, sidebar included


@st.cache_resource(show_spinner=False, max_entries=8)
def _live_map(run_dir: str, epochs_completed: int, stamp: tuple[float, float]) -> Any:
    """The newest epoch's latent map (explorer.film, one frame) beside the test curves, or
    None when the run stores no frames. Shared by every session watching the job, built
    once per epoch. Raises RunDirError, OSError or ValueError for unreadable files."""
    from explorer.film import film_figure, load_film

    info = rundir.read_config(run_dir)
    latents = rundir.read_latents(run_dir, info)
    metrics = rundir.read_metrics(run_dir)
    film = load_film(run_dir, latents, info.config.latent_dim, info.epochs_completed,
                     info.class_names)
    if film is None:
        return None
    newest = dataclasses.replace(film, epochs=film.epochs[-1:], xy=film.xy[-1:])
    epoch = int(newest.epochs[0])
    if len(film.epochs) >= 2:  # the film so far: opens on the newest epoch, ▶ and a slider
        figure = film_figure(film, metrics, height=480)
        figure.update_layout(margin=dict(t=95), legend=dict(y=1.12))
        # the slider below the map names the epoch shown; the title holds for every frame
        figure.layout.annotations[0].text = f"latent map, epochs 1-{epoch}"
    else:
        figure = film_figure(newest, metrics, height=440)
        figure.layout.updatemenus, figure.layout.sliders = (), ()  # one frame: nothing to play
        figure.frames = ()
        figure.update_xaxes(showticklabels=False, row=1, col=2)  # the epochs are read below
        figure.update_layout(margin=dict(t=95), legend=dict(y=1.12))  # clear of the titles
        figure.layout.annotations[0].text = f"latent map after epoch {epoch}"
    note = newest.note if newest.projection == "raw" else (
        f"Axes: the first two principal components of the {info.config.latent_dim}-D means "
        f"after epoch {epoch}, the newest (the same axes for every epoch shown).")
    return figure, note


def live_map(job: TrainJob, status: JobStatus) -> None:
    """The map of the newest finished epoch and the curves, refreshed with the panel."""
    try:
        built = _live_map(job.run_dir, status.epochs_completed,
                          (file_stamp(job.run_dir, rundir.CONFIG_FILE),
                           file_stamp(job.run_dir, rundir.LATENTS_FILE)))
    except (rundir.RunDirError, OSError, ValueError, KeyError, IndexError):
        built = None  # written as we read, or damaged: the curves alone this time
    if built is None:
        st.plotly_chart(figures.training_curves_figure(status.metrics, height=280),
                        key=f"live_curves_{job.name}")
        return
    figure, note = built
    st.plotly_chart(figure, key=f"live_map_{job.name}")
    st.caption(f"The test images' latent means after the newest finished epoch, "
               f"redrawn after every epoch; ▶ and the epoch slider replay the epochs so far. "
               f"{md(note)}")


def job_panel(runs: str, job: TrainJob, policy: TrainPolicy, token: str,
              teacher: bool) -> None:
    """One job: its record, run folder and log."""
    status = poll_job(job, policy.data_root)
    mine = may_cancel(job, token)
    _open_finished_run(job, status, mine)
    if status.state == "queued":
        place, total = queue_position(runs, job.name)
        st.progress(0.0, text=f"Waiting in the queue: place {place} of {total}. It starts "
                              f"when one of the {policy.max_running} training slot(s) frees.")
        try:
            schedule(runs, policy)  # a slot may have freed in another app process
        except (OSError, LaunchError):
            pass
    else:
        label = {"starting": "Starting: " + status.message,
                 "training": f"Training: {status.message}",
                 "failed": "Failed (see below)",
                 "stopped": f"Stopped after {status.epochs_completed} of {status.epochs} "
                            f"epochs (see below)"}.get(status.state, status.message)
        st.progress(status.fraction, text=label)
    if not mine and not status.finished:
        st.caption("Started by another visitor: " + (
            "as the teacher, you may cancel it." if teacher
            else "you can follow it; only they or the teacher can cancel it."))
    buttons = st.container(horizontal=True)
    if not status.finished and (mine or teacher):
        buttons.button("Cancel", icon=":material/stop_circle:", key=f"cancel_{job.name}",
                       on_click=_cancel, args=(job, token, teacher),
                       help="Training stops between batches; finished epochs are kept"
                       if status.state != "queued" else "The job leaves the queue")
    if st.session_state.get(CANCEL_FAILED_KEY) == job.name:
        st.warning("This job was not started by this app process (or the app was "
                   "restarted since), so it cannot be cancelled from here.")
    if status.state in ("failed", "stopped"):
        st.error(status.message)
    if status.state in ("complete", "cancelled") and status.epochs_completed > 0:
        if buttons.button("Open in the explorer", key=f"open_{job.name}", type="primary"):
            st.session_state[app_shared.RUN_KEY] = job.run_dir
            st.switch_page(explorer_page())
    if status.metrics:
        last = status.metrics[-1]
        st.caption(f"Epoch {last['epoch']}: test recon {last['test_recon']:.2f}, KL "
                   f"{last['test_kl']:.2f}, −ELBO {last['test_loss']:.2f} nats per sample; "
                   f"active units {last.get('active_units', '?')}.")
        live_map(job, status)
    with st.expander("Command and log", expanded=status.state in ("failed", "stopped")):
        redact = Redactor(runs, policy.data_root)
        st.code(redact(" ".join(["python"] + job.argv[1:])), language="bash", wrap_lines=True)
        st.code(status.log_tail or "(no output yet)", wrap_lines=True)


@st.fragment(run_every=1.0)
def jobs_section(runs: str, policy: TrainPolicy, token: str, teacher: bool) -> None:
    """Every job, newest first, and the panel of the followed one, re-read every second.
    What is followed lives in the session (not in this fragment's arguments), so every
    run of the fragment, however old its call, shows the job this session chose or
    started last."""
    jobs = sorted(list_jobs(runs), key=lambda j: (-j.created, j.name))  # newest first
    if not jobs:
        st.caption("No training started from the app yet.")
        return
    states = {j.name: job_state(j) for j in jobs}
    queued = sorted((j for j in jobs if states[j.name] == "queued"), key=lambda j: j.created)
    training = [j.name for j in jobs if states[j.name] == "running"]
    st.caption(f"Training now: {md(', '.join(training)) or 'none'} · Queue: "
               + (" · ".join(f"{i}. {md(j.name)}" for i, j in enumerate(queued, 1)) or "empty"))
    by_name = {j.name: j for j in jobs}
    follow = followed_job(jobs, token)
    st.session_state[FOLLOW_KEY] = follow
    key = f"{PICK_KEY}_{int(st.session_state.get(PICK_GEN_KEY, 0))}"
    if st.session_state.get(key, follow) != follow:  # e.g. the followed record was pruned
        _new_selector()
        key = f"{PICK_KEY}_{int(st.session_state[PICK_GEN_KEY])}"
    # The labels never change while a job lives (no state in them): the browser sends the
    # label back, and a label that changed under it would read as another choice.
    own = {n for n, j in by_name.items() if may_cancel(j, token)}
    names = list(by_name)
    st.selectbox("Training job", names, index=names.index(follow), key=key,
                 on_change=_adopt_pick, args=(key,),
                 format_func=lambda n: f"{n} (yours)" if n in own else n,
                 help="Every job started from the app, newest first")
    job_panel(runs, by_name[follow], policy, token, teacher)


def show_selected_message(picked: Path | None) -> None:
    """The message that a finished job's run is now the selected run, shown in the run
    whose sidebar selector shows it (never before)."""
    pending = st.session_state.pop(SELECTED_KEY, None)
    if not (isinstance(pending, tuple) and len(pending) == 3):
        return
    name, run_dir, when = pending
    if time.time() - when > 60:
        return  # the visitor left the page meanwhile: old news
    if picked is not None and str(picked) == run_dir:
        st.toast(f"{md(name)} finished: it is now the selected run on every page.",
                 icon=":material/check_circle:")
    else:
        st.toast(f"{md(name)} finished; choose it in the sidebar's run list to open it.",
                 icon=":material/check_circle:")


def main() -> None:
    ui.page_header("Train a new run",
                   "Trains in a **separate process** (`python -m training`, one CPU thread), "
                   "so the app stays responsive: explore other pages while it runs. Progress "
                   "comes from the run folder the trainer writes after every epoch.")
    runs = str(app_shared.runs_dir())
    picked = app_shared.pick_run()
    show_selected_message(picked)
    if picked is not None and app_shared.is_imported(picked):
        st.caption(f"**{md(picked.name)}** was imported: it has no training history, so it "
                   f"cannot be resumed; train a new run below.")
    st.sidebar.caption(ui.UNITS_NOTE)
    policy = TrainPolicy.from_env()
    if not policy.enabled:
        st.info(OFF_MESSAGE)
        return
    teacher = teacher_sidebar(policy)
    token = session_token()
    if any(j.state == "queued" for j in list_jobs(runs)):
        try:
            schedule(runs, policy)  # e.g. after a restart, with slots free
        except (OSError, LaunchError):
            pass
    training_form(runs, policy, token, teacher)
    st.subheader("Jobs")
    jobs_section(runs, policy, token, teacher)


main()
