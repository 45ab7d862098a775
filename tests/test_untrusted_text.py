"""Text from run folders and visitors is shown as text: a folder name, a config field or
a class name that holds Markdown or HTML shows those characters, never a link or an
image (issue: hostile visitors and untrusted run folders)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from explorer.text import md, plot_text
from tests.test_app import APP

SMUGGLED = [
    "![logo](http://attacker.example/x.png)",
    "[Your session expired: log in here](https://attacker.example/login)",
    "<img src=x onerror=alert(1)>",
    "$\\frac{1}{0}$ :material/warning: ~~gone~~ **bold** `code` www.attacker.example",
    "line one\nline two\r\n# heading",
]


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@pytest.mark.parametrize("text", SMUGGLED)
def test_md_keeps_the_characters_and_defuses_the_markup(text):
    shown = md(text)
    assert "\n" not in shown and "\r" not in shown
    assert unescape(shown) == re.sub(r"[\r\n]+", " ", text)
    # no markup character survives unescaped
    for mark in ("![", "](", "<", "$", ":material", "**", "`", "~~", "www."):
        assert mark not in re.sub(r"\\.", "", shown), (mark, shown)


def test_md_bounds_the_length():
    assert len(unescape(md("a" * 10_000))) == 300


def test_plot_text_escapes_plotly_html():
    assert plot_text('<a href="http://x">go</a>') == '&lt;a href="http://x"&gt;go&lt;/a&gt;'
    assert "<br>" not in plot_text("a\nb<br>c")


def test_a_smuggled_folder_name_and_config_show_as_literal_text(tiny_run, tmp_path,
                                                                monkeypatch):
    name = "[log in here](https:attacker.example) ![x](http:evil)"
    runs = tmp_path / "runs"
    run = runs / name
    shutil.copytree(tiny_run, run)
    broken = runs / "<b>[session expired](https:attacker.example)"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    monkeypatch.setenv("VAE_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    texts += [e.value for e in at.error] + [w.value for w in at.warning]
    header = [t for t in texts if "latent space" in t]
    assert header and "log in here" in unescape(header[0])
    assert any("session expired" in unescape(t) for t in texts)  # the broken folder's line
    for text in texts:
        bare = re.sub(r"\\.", "", text)
        assert "](" not in bare and "<b>" not in bare, text
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete"
