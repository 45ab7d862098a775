"""The app's pages, in sidebar order, with their titles and URLs (``st.navigation``).

The URLs (``url_path``) are the ones the pages have always had, so links and bookmarks
keep working: ``/`` for the explorer, ``/Compare_AE_vs_VAE`` ... ``/Train`` for the rest.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import main_page, presenter
from app.shared import FAVICON

PAGES_DIR = Path(__file__).resolve().parent / "pages"
# (file in app/pages, sidebar title, URL path, Material icon)
LESSONS = (
    ("compare_ae_vs_vae.py", "Compare AE vs VAE", "Compare_AE_vs_VAE", ":material/compare:"),
    ("reparameterisation.py", "Reparameterisation", "Reparameterisation", ":material/casino:"),
    ("elbo_vs_log_p.py", "ELBO vs log p(x)", "ELBO_vs_log_p", ":material/functions:"),
    ("latent_health.py", "Latent health", "Latent_health", ":material/monitor_heart:"),
    ("beta_and_warmup.py", "β and warm-up", "Beta_and_warmup", ":material/tune:"),
    ("generation.py", "Generation", "Generation", ":material/auto_awesome:"),
)
TRAIN = ("train.py", "Train a new run", "Train", ":material/model_training:")


def explorer_page() -> st.Page:
    """The main page (``/``); also the target of ``st.switch_page`` after training."""
    return st.Page(main_page.render, title="Latent explorer", icon=":material/scatter_plot:",
                   url_path="explorer", default=True)


def _file_page(entry: tuple[str, str, str, str]) -> st.Page:
    file, title, url_path, icon = entry
    return st.Page(PAGES_DIR / file, title=title, url_path=url_path, icon=icon)


def run_pages() -> None:
    """Lay out the navigation and run the page the URL asks for."""
    # a projector link (?present=1) opens with the sidebar folded away: the whole width
    st.set_page_config(page_title="VAE Latent Explorer", page_icon=FAVICON, layout="wide",
                       initial_sidebar_state="collapsed" if presenter.from_url() else "auto")
    pages = {
        "Explore": [explorer_page()],
        "Lessons": [_file_page(entry) for entry in LESSONS],
        "Your own runs": [_file_page(TRAIN)],
    }
    page = st.navigation(pages)
    presenter.sidebar_toggle()
    page.run()
