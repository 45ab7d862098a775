"""The Streamlit user interface: every page, widget and browser component of the app.

Layout, in the order data flows: ``training/`` writes a run directory, ``explorer/`` reads
it and computes (no Streamlit there), this package lays out widgets over ``explorer/``,
and ``streamlit_app.py`` at the repository root lists the pages.

- ``main_page`` — the latent map, decode sliders and ELBO panel;
- ``pages/`` — the lesson pages and the Train page (one file each, widgets only);
- ``shared`` — caches shared by all sessions, the run picker, the start-up hook;
- ``teaching`` — helpers shared by the lesson pages (opening a run, downloads);
- ``chart`` — Plotly charts through a light plotly.js build (``frontend/plotly_chart``);
- ``lens`` — the browser component that decodes z live while a slider or the pointer moves;
- ``launch`` — the ``vae-explorer`` command.
"""
