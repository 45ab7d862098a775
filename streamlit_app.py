"""VAE Latent Explorer: the page list and the server's start-up hook, nothing else.

``streamlit run streamlit_app.py [-- --runs-dir PATH]`` (or ``vae-explorer``) serves it.
Each page lives in ``app/`` (the main page in ``app/main_page.py``, the lessons and the
Train page in ``app/pages/``); their logic lives in ``explorer/``. ``streamlit run``
finds the ``st.App`` below: its lifespan loads the newest run before a browser asks,
and its routes serve the model files the browser decodes with (``app/routes.py``).
"""

from __future__ import annotations

import streamlit as st

from app.navigation import run_pages
from app.routes import routes
from app.shared import lifespan

if __name__ == "__main__":  # a script run: once per session and interaction
    run_pages()
else:  # imported by `streamlit run streamlit_app.py`, which serves the ASGI app found here
    server = st.App(__file__, lifespan=lifespan, routes=routes())
