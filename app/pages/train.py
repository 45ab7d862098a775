"""Train from the app: a form with the main options starts ``python -m training`` in a
separate process (or queues it while the server's training slots are busy); a progress
bar and live loss curves follow the one job shown (an ``st.fragment`` that re-reads that
job's record every second, nothing else); when it finishes, the visitor's new run opens.

What a browser may do is the server's :class:`~explorer.train_policy.TrainPolicy`: built-in
data sets or folders under the teacher's data root, capped sizes, a queue, a disk cap,
and cancelling only the jobs this session started (or any, with the teacher token)."""

from __future__ import annotations

import datetime as dt
import secrets

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
    LaunchError,
    Redactor,
    TrainJob,
    TrainOptions,
    cancel_job,
    job_state,
    list_jobs,
    load_job,
    may_cancel,
    poll_job,
    queue_position,
    runs_disk_usage,
    schedule,
    submit,
)
from explorer.text import md
from explorer.train_policy import TrainPolicy, format_bytes

JOBS_KEY = "_train_jobs_opened"  # names of finished jobs whose run was already opened
TOKEN_KEY = "_train_session_token"  # this session's secret: it owns the jobs it starts
TEACHER_KEY = "_train_teacher"  # True once the teacher token was entered in this session
FOLLOW_KEY = "_train_follow"
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
        st.error("Training was not started:\n\n" + "\n".join(
            f"- {line}" for line in str(exc).splitlines()))
        return
    except LaunchError as exc:
        st.error(md(exc))
        return
    except OSError as exc:
        st.error(f"Training could not be started: {exc.strerror or type(exc).__name__}.")
        return
    st.session_state[FOLLOW_KEY] = job.name
    if job.state == "queued":
        place, total = queue_position(runs, job.name)
        st.info(f"**{md(job.name)}** waits in the queue (place {place} of {total}): "
                f"{policy.max_running} job(s) are training. It starts by itself when one "
                f"finishes; you can keep exploring other pages.")
    else:
        st.success(f"Started **{md(job.name)}** (1 CPU thread). You can keep exploring other "
                   f"pages; come back here to follow it.")


def _cancel(job: TrainJob, token: str, teacher: bool) -> None:
    done = cancel_job(job, token, teacher)
    st.session_state[CANCEL_FAILED_KEY] = None if done else job.name


@st.fragment(run_every=1.0)
def job_panel(runs: str, name: str, policy: TrainPolicy, token: str, teacher: bool) -> None:
    """One job, re-read every second: its record, run folder and log, nothing else."""
    job = load_job(runs, name)
    if job is None:
        st.caption(f"The record of {md(name)} is gone (old records are pruned).")
        return
    status = poll_job(job, policy.data_root)
    mine = may_cancel(job, token)
    if status.state == "queued":
        place, total = queue_position(runs, name)
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
    if status.metrics:
        last = status.metrics[-1]
        st.caption(f"Epoch {last['epoch']}: test recon {last['test_recon']:.2f}, KL "
                   f"{last['test_kl']:.2f}, −ELBO {last['test_loss']:.2f} nats per sample; "
                   f"active units {last.get('active_units', '?')}.")
        st.plotly_chart(figures.training_curves_figure(status.metrics, height=280),
                        key=f"live_curves_{job.name}")
    c1, c2, _ = st.columns([1, 1, 3])
    if not status.finished and (mine or teacher):
        c1.button("Cancel", icon=":material/stop_circle:", key=f"cancel_{job.name}",
                  on_click=_cancel, args=(job, token, teacher),
                  help="Training stops between batches; finished epochs are kept")
    if st.session_state.get(CANCEL_FAILED_KEY) == job.name:
        st.warning("This job was not started by this app process (or the app was "
                   "restarted since), so it cannot be cancelled from here.")
    if status.state in ("failed", "stopped"):
        st.error(status.message)
    if status.state in ("complete", "cancelled") and status.epochs_completed > 0:
        opened = st.session_state.setdefault(JOBS_KEY, [])
        if status.state == "complete" and mine and job.name not in opened:
            opened.append(job.name)  # open the visitor's own run once, automatically
            st.session_state[app_shared.RUN_KEY] = job.run_dir
            st.toast(f"{md(job.name)} finished: it is now the selected run on every page.",
                     icon=":material/check_circle:")
        if c2.button("Open in the explorer", key=f"open_{job.name}", type="primary"):
            st.session_state[app_shared.RUN_KEY] = job.run_dir
            st.switch_page(explorer_page())
    with st.expander("Command and log", expanded=status.state in ("failed", "stopped")):
        redact = Redactor(runs, policy.data_root)
        st.code(redact(" ".join(["python"] + job.argv[1:])), language="bash", wrap_lines=True)
        st.code(status.log_tail or "(no output yet)", wrap_lines=True)


def _adopt_pick() -> None:
    st.session_state[FOLLOW_KEY] = st.session_state["_train_pick"]


def jobs_section(runs: str, jobs: list[TrainJob], policy: TrainPolicy, token: str,
                 teacher: bool) -> None:
    if not jobs:
        st.caption("No training started from the app yet.")
        return
    states = {j.name: job_state(j) for j in jobs}
    queued = sorted((j for j in jobs if states[j.name] == "queued"), key=lambda j: j.created)
    training = [j.name for j in jobs if states[j.name] == "running"]
    st.caption(f"Training now: {md(', '.join(training)) or 'none'} · Queue: "
               + (" · ".join(f"{i}. {md(j.name)}" for i, j in enumerate(queued, 1)) or "empty"))
    names = [j.name for j in jobs]
    by_name = {j.name: j for j in jobs}
    follow = st.session_state.get(FOLLOW_KEY)
    if follow not in by_name:
        own = [j.name for j in jobs if may_cancel(j, token)]
        follow = own[0] if own else names[0]
    st.session_state[FOLLOW_KEY] = st.session_state["_train_pick"] = follow
    choice = st.selectbox(
        "Training job", names, key="_train_pick", on_change=_adopt_pick,
        format_func=lambda n: f"{n} ({STATE_WORDS.get(states[n], '?')}"
                              f"{', yours' if may_cancel(by_name[n], token) else ''})")
    job_panel(runs, choice, policy, token, teacher)


def main() -> None:
    ui.page_header("Train a new run",
                   "Trains in a **separate process** (`python -m training`, one CPU thread), "
                   "so the app stays responsive: explore other pages while it runs. Progress "
                   "comes from the run folder the trainer writes after every epoch.")
    runs = str(app_shared.runs_dir())
    picked = app_shared.pick_run()
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
    jobs_section(runs, list_jobs(runs), policy, token, teacher)


main()
