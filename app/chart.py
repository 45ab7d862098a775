"""The main page's Plotly charts, drawn with a light plotly.js build (Streamlit layer).

:func:`plotly_chart` is ``st.plotly_chart`` for the figures the main page shows on its
first screen (the latent map, the KL bars, the training curves). When every trace is one
the light build draws (scatter, bar, pie), the figure goes to the component in
``frontend/plotly_chart/``: an iframe with ``plotly-basic.min.js`` (plotly.js 4.1.1, MIT,
1.2 MB). Otherwise (WebGL maps of more than ``figures.WEBGL_MIN_POINTS`` points), or when
that folder is incomplete, or when the installed Plotly speaks another major version of
plotly.js, it falls back to ``st.plotly_chart``.

Why: ``st.plotly_chart`` makes the browser load Streamlit's full 4.7 MB plotly.js, which
this 2-core machine's headless Chromium takes 1.8-2.2 s to evaluate and 0.5-0.63 s more
to draw a 1,000-point WebGL scatter with: most of the gap between the page and its 5 s
cold-start goal (``bench/app_latency.py`` measures both). The light build evaluates in
0.33-0.53 s and draws the same map as SVG in 0.36-0.57 s (about what WebGL takes: the
saving is the evaluation).

A click on a point calls ``on_select`` with the chart's state in
``st.session_state[key]``: ``{"selection": {"points": [...], ...}, "event": n}``, the
shape of ``st.plotly_chart``'s selection state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

ASSETS = Path(__file__).resolve().parent / "frontend" / "plotly_chart"
LIBRARY = "plotly-basic.min.js"
LIGHT_TRACE_TYPES = frozenset({"scatter", "bar", "pie"})  # what plotly-basic draws
DEFAULT_HEIGHT = 450  # plotly.js's own default
# What st.plotly_chart's theme gives a figure, for the figures drawn here: it replaces
# their template (Streamlit's, the default once streamlit is imported, only carries
# placeholder colours that Streamlit's own frontend fills in). Axes that make room for
# their labels, light grid lines, grey tick labels, a white hover box.
_AXIS = {"automargin": True, "gridcolor": "#e6eaf1", "linecolor": "#e6eaf1",
         "zerolinecolor": "#d5dae4", "ticks": "", "title": {"standoff": 12},
         "tickfont": {"color": "#808495"}}
TEMPLATE: dict[str, Any] = {"layout": {
    "xaxis": _AXIS, "yaxis": _AXIS, "hovermode": "closest", "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "white", "colorway": ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2"],
    "hoverlabel": {"bgcolor": "white", "bordercolor": "#e6eaf1", "font": {"color": "#31333f"}},
}}
_TEMPLATE_JSON = json.dumps(TEMPLATE)
# presenter mode (app/presenter.py): the same, with text a projector's back row can read
_PRESENTER_TEMPLATE_JSON = json.dumps({"layout": {**TEMPLATE["layout"], "font": {"size": 16}}})


def bundled_plotly_version(path: Path = ASSETS / LIBRARY) -> str | None:
    """The plotly.js version in the vendored bundle's header, or None if it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(200)
    except OSError:
        return None
    match = re.search(r"plotly\.js \(basic - minified\) v(\d+\.\d+\.\d+)", head)
    return match.group(1) if match else None


def _python_plotly_js_version() -> str:
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def light_build_usable() -> bool:
    """The component's files are all there and draw what the installed Plotly writes (the
    same major version of plotly.js: figure JSON changes between majors)."""
    bundled = bundled_plotly_version()
    if bundled is None or not all((ASSETS / name).is_file()
                                  for name in ("index.html", "chart.js")):
        return False
    return bundled.split(".")[0] == _python_plotly_js_version().split(".")[0]


def fits_light_build(fig: go.Figure) -> bool:
    """Every trace of ``fig`` is one plotly-basic draws (no WebGL, no maps, no 3-D)."""
    return all(trace.type in LIGHT_TRACE_TYPES for trace in fig.data)


PreparedChart = tuple[go.Figure, str]  # a figure and its JSON, made once


def prepare(fig: go.Figure) -> PreparedChart:
    """``fig`` with its JSON made once: for figures cached and shared by every session
    (``fig.to_json()`` costs milliseconds of validation per call). Read-only. A plain
    tuple, not a class: a cached value must survive Streamlit re-importing this module."""
    return fig, fig.to_json()


def plotly_chart(fig: go.Figure | PreparedChart, key: str,
                 on_select: Callable[[], None] | None = None,
                 config: dict[str, Any] | None = None) -> None:
    """Draw ``fig`` or a :func:`prepare`d one (light build when it fits, else
    ``st.plotly_chart``). ``on_select`` runs when a point is clicked; the chart's state is
    then in ``st.session_state[key]``."""
    spec = None
    if isinstance(fig, tuple):
        fig, spec = fig
    config = {"displaylogo": False, **(config or {})}
    if not (fits_light_build(fig) and _light_build_checked()):
        kwargs: dict[str, Any] = {}
        if on_select is not None:
            kwargs = {"on_select": on_select, "selection_mode": "points"}
        st.plotly_chart(fig, key=key, config=config, **kwargs)
        return
    import streamlit.components.v1 as components

    # Declared on every call: registering the same name and folder again is a no-op, and
    # it must happen inside a script run (a declaration at import time is not registered).
    component = components.declare_component("plotly_chart", path=str(ASSETS))
    height = int(fig.layout.height or DEFAULT_HEIGHT)
    # Strings and ints only: Streamlit checks every other argument for being a dataframe,
    # and that check imports pandas (0.65 s of the first page on this machine).
    from app import presenter

    template = _PRESENTER_TEMPLATE_JSON if presenter.is_on() else _TEMPLATE_JSON
    component(spec=spec or fig.to_json(), template=template, config=json.dumps(config),
              height=height, key=key, default=None, on_change=on_select)


@st.cache_resource(show_spinner=False)
def _light_build_checked() -> bool:
    usable = light_build_usable()
    if not usable:
        import logging

        logging.getLogger(__name__).warning(
            "frontend/plotly_chart is incomplete or its plotly.js (%s) is not the major "
            "version the installed plotly writes (%s): charts use st.plotly_chart",
            bundled_plotly_version(), _python_plotly_js_version())
    return usable
