"""Text from files and visitors shown as text, never as markup.

Streamlit renders Markdown (and some HTML, LaTeX ``$...$`` and ``:icon:`` shortcodes) in
``st.markdown``, ``st.caption``, ``st.error`` and friends. A run folder's name, its
``config.json`` fields, an upload's file name or a class name come from untrusted hands:
:func:`md` escapes them so they show literally (no image loaded from an attacker's server,
no "log in here" link under the title).
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation character. Escaped: everything
# that can start markup, including Streamlit's extensions ($ for LaTeX, : for icons and
# URL schemes, ~ for strike-through) and "." (GFM turns a bare www.host.tld into a link).
# Left alone, for readable names: - , ' / % ; ? = " (inert inside a line, and line
# breaks are removed, so no list or heading can start).
_PUNCTUATION = re.compile(r"""([!#$&()*+.:<>@\[\\\]^_`{|}~])""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def md(text: object, max_chars: int = 300) -> str:
    """``text`` as Markdown that displays exactly those characters: every ASCII punctuation
    mark backslash-escaped, line breaks and control characters turned into one space, and
    at most ``max_chars`` characters (an ellipsis marks a cut)."""
    plain = _CONTROL.sub(" ", str(text))
    if len(plain) > max_chars:
        plain = plain[: max_chars - 1] + "…"
    return _PUNCTUATION.sub(r"\\\1", plain)


def plot_text(text: object, max_chars: int = 80) -> str:
    """``text`` for a Plotly label (legend, hover, annotation): plotly.js renders a few HTML
    tags there (``<a href>``, ``<b>``, ``<br>``, ``<span style>``), so ``<``, ``>`` and
    ``&`` are escaped; line breaks become spaces; at most ``max_chars`` characters."""
    import html

    plain = _CONTROL.sub(" ", str(text))
    if len(plain) > max_chars:
        plain = plain[: max_chars - 1] + "…"
    return html.escape(plain, quote=False)
