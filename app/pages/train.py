"""Train from the app: a form with the main options starts ``python -m training`` in a
separate process; a progress bar and live loss curves follow it (an ``st.fragment`` that
reruns every second, nothing else); when it finishes, the new run opens. The user can
keep exploring other pages meanwhile."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app import shared as app_shared
from app import teaching as ui
from app.navigation import explorer_page
from explorer import figures
from explorer.jobs import (
    FORM_DATASETS,
    LIMITS,
    MAX_BETA,
    TrainOptions,
    cancel_job,
    find_jobs,
    poll_job,
    start_job,
)

JOBS_KEY = "_train_jobs_opened"  # names of finished jobs whose run was already opened
STATE_WORDS = {"starting": "starting", "training": "training", "complete": "done",
               "cancelled": "cancelled", "failed": "failed"}


@st.cache_resource(show_spinner=False)
def job_registry() -> dict[str, list]:
    """Jobs started by this app process, per runs folder, with their process handles
    (shared by all sessions, so any tab can follow or cancel them)."""
    return {}


def known_jobs(runs: str) -> list:
    """This process's jobs plus those recorded on disk by an earlier app process."""
    registry = job_registry().setdefault(runs, [])
    names = {j.name for j in registry}
    return registry + [j for j in find_jobs(runs) if j.name not in names]


def default_name(dataset: str, model: str, latent_dim: int, beta: float) -> str:
    stamp = dt.datetime.now().strftime("%H%M%S")
    beta_part = "" if model == "ae" or beta == 1 else f"-b{beta:g}"
    return f"{dataset}-{model}-z{latent_dim}{beta_part}-{stamp}".replace("/", "_")


def training_form(runs: str) -> None:
    with st.form("train_form", border=True):
        c1, c2, c3 = st.columns(3)
        dataset = c1.selectbox("Data set", list(FORM_DATASETS) + ["folder:…"], key="tf_dataset",
                               help="mnist5k: 5,000 real MNIST digits, no download. "
                                    "mnist / fashion-mnist / kmnist need their files in data/.")
        folder = c1.text_input("Folder (for folder:…)", key="tf_folder",
                               placeholder="./my_images (one subfolder per class)")
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
    if not submitted:
        return
    ds = f"folder:{folder.strip()}" if dataset == "folder:…" else dataset
    options = TrainOptions(
        name=name.strip() or default_name("folder" if ds.startswith("folder:") else ds, model,
                                          int(latent_dim), float(beta)),
        dataset=ds, model=model, latent_dim=int(latent_dim), beta=float(beta),
        kl_warmup=int(warmup), epochs=int(epochs))
    registry = job_registry().setdefault(runs, [])
    try:
        job = start_job(options, runs, running=known_jobs(runs))
    except ValueError as exc:
        st.error("Training was not started:\n\n" + "\n".join(
            f"- {line}" for line in str(exc).splitlines()))
        return
    except OSError as exc:
        st.error(f"Training could not be started: {exc}")
        return
    registry.append(job)
    st.session_state["_train_follow"] = job.name
    st.success(f"Started **{job.name}** (process {job.pid}, 1 CPU thread). You can keep "
               f"exploring other pages; come back here to follow it.")


@st.fragment(run_every=1.0)
def progress_panel(runs: str) -> None:
    jobs = known_jobs(runs)
    if not jobs:
        st.caption("No training started from the app yet.")
        return
    names = [j.name for j in jobs]
    follow = st.session_state.get("_train_follow")
    index = names.index(follow) if follow in names else 0
    states = {j.name: poll_job(j).state for j in jobs}
    choice = st.selectbox("Training job", names, index=index, key="_train_pick",
                          format_func=lambda n: f"{n} ({STATE_WORDS.get(states[n], '?')})")
    st.session_state["_train_follow"] = choice
    job = jobs[names.index(choice)]
    status = poll_job(job)
    label = {"starting": "Starting: " + status.message,
             "training": f"Training: {status.message}",
             "complete": status.message, "cancelled": status.message,
             "failed": status.message}[status.state]
    st.progress(status.fraction, text=label)
    if status.metrics:
        last = status.metrics[-1]
        st.caption(f"Epoch {last['epoch']}: test recon {last['test_recon']:.2f}, KL "
                   f"{last['test_kl']:.2f}, −ELBO {last['test_loss']:.2f} nats per sample; "
                   f"active units {last.get('active_units', '?')}.")
        st.plotly_chart(figures.training_curves_figure(status.metrics, height=280),
                        key=f"live_curves_{job.name}")
    c1, c2, _ = st.columns([1, 1, 3])
    if not status.finished:
        if c1.button("Cancel", icon=":material/stop_circle:", key=f"cancel_{job.name}",
                     help="Sends SIGINT: training stops between batches; finished epochs "
                          "are kept"):
            cancel_job(job)
            st.rerun(scope="fragment")
    if status.state == "failed":
        st.error(status.message)
        with st.expander("Log (last lines)", expanded=True):
            st.code(status.log_tail or "(empty)")
    if status.state in ("complete", "cancelled") and status.epochs_completed > 0:
        opened = st.session_state.setdefault(JOBS_KEY, [])
        if status.state == "complete" and job.name not in opened:
            opened.append(job.name)  # open it once, automatically
            st.session_state[app_shared.RUN_KEY] = job.run_dir
            st.toast(f"{job.name} finished: it is now the selected run on every page.",
                     icon=":material/check_circle:")
        if c2.button("Open in the explorer", key=f"open_{job.name}", type="primary"):
            st.session_state[app_shared.RUN_KEY] = job.run_dir
            st.switch_page(explorer_page())
    with st.expander("Command and log"):
        st.code(" ".join(job.argv[1:]), language="bash")
        st.code(status.log_tail or "(no output yet)")


def main() -> None:
    ui.page_header("Train a new run",
                   "Trains in a **separate process** (`python -m training`, one CPU thread), "
                   "so the app stays responsive: explore other pages while it runs. Progress "
                   "comes from the run folder the trainer writes after every epoch.")
    runs = str(app_shared.runs_dir())
    app_shared.pick_run()
    st.sidebar.caption(ui.UNITS_NOTE)
    training_form(runs)
    st.subheader("Progress")
    progress_panel(runs)


main()
