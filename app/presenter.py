"""Presenter mode: the app on a classroom projector (widgets and CSS only).

A sidebar toggle on every page, kept in the URL (``?present=1``, so the teacher's bookmark
opens in it). When on: larger text everywhere (the page's root font size, which
Streamlit's rem-based sizes follow), larger chart text (``app/chart.py`` reads
:func:`is_on`), larger text on the latent lens, and a page opened with ``?present=1``
starts with the sidebar collapsed, leaving a 1024x768 projector the whole width. It works
in the light and the dark theme (it changes sizes, never colours).
"""

from __future__ import annotations

import streamlit as st

KEY = "_presenter"
PARAM = "present"
ROOT_FONT_PX = 19  # Streamlit's default is 16 px: about 1.2x, readable from the back row

_CSS = f"""<style>
html {{ font-size: {ROOT_FONT_PX}px !important; }}
/* the lens draws in a shadow root: page CSS reaches it only through inherited variables */
:root {{ --lens-font-size: 17px; --lens-canvas-font-scale: 1.3; }}
[data-testid="stCaptionContainer"] {{ font-size: 0.95rem !important; }}
</style>"""


def from_url() -> bool:
    return st.query_params.get(PARAM) == "1"


def is_on() -> bool:
    """Presenter mode in this session (the chart component sizes its text by it)."""
    return bool(st.session_state.get(KEY, False))


def sidebar_toggle() -> None:
    """The toggle (first thing in the sidebar under the pages), and its CSS when on."""
    if KEY not in st.session_state:
        st.session_state[KEY] = from_url()
    on = st.sidebar.toggle("Presenter mode", key=KEY,
                           help="Larger text and charts for a projector (the setting stays in "
                                "the page's URL). Light or dark: ⋮ menu → Settings.")
    if on != from_url():  # the URL follows the toggle (a page switch may also drop it)
        if on:
            st.query_params[PARAM] = "1"
        else:
            st.query_params.pop(PARAM, None)
    if on:
        st.html(_CSS)
