"""Every page of the app beside the crafted run folders of the security report: one runs
folder holds one good run and one folder per finding (mismatched latents.npz lengths, inf
in mu, 1-D and 3-D mu, string and NaN labels, a missing metrics.jsonl and a string metric,
a vector log_sigma, an image shape that does not fit the decoder, ``latent_dim: 2.0``, a
config.json nested 200,000 deep, a metrics.jsonl row without test_recon).

Each page runs once with the good run selected, and (pages with the run picker) once with
each crafted run that the listing calls openable (a damaged metrics.jsonl costs the curves,
not the run). Asserted on every run: no exception element; each crafted folder is named in
at most one line (exactly one where the page shows it: the sidebar's "cannot be opened"
list, or the warning of a page that needs its damaged file), with its problem and no server
path; the good run still works.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import lens
from test_run_validation import LATENT_CASES, edit_config, edit_latents, edit_metrics, edit_weights

from explorer.runs import list_runs
from training import rundir

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
PAGES = ["streamlit_app.py"] + sorted(f"app/pages/{p.name}"
                                      for p in (ROOT / "app" / "pages").glob("*.py"))
PICKER = "_run_pick"  # app_shared.pick_run's selectbox
GOOD = "good-run"
TIMEOUT = 120


def _latents(case: str) -> Callable[[Path], None]:
    return lambda run: edit_latents(run, LATENT_CASES[case][0])


def _nested(run: Path) -> None:
    (run / rundir.CONFIG_FILE).write_text(
        '{"config": ' + "[" * 200_000 + "]" * 200_000 + ', "data": {}}')


# name -> (how to craft it from a copy of the good run, what a line naming it must say
#          (one of), whether the listing offers it: a damaged metrics.jsonl costs the
#          curves only; the Beta page, which needs the metrics of every run, says so too)
CRAFTED: dict[str, tuple[Callable[[Path], None], tuple[str, ...], bool]] = {
    "lengths-mismatch": (_latents("mismatched lengths"),
                         ("latents.npz: arrays have different lengths",), False),
    "mu-inf": (_latents("inf in mu"), ("latents.npz: array 'mu' holds non-finite values",),
               False),
    "mu-1d": (_latents("1-D mu"),
              ("latents.npz: array 'mu' has shape (359,), expected (N, 2)",), False),
    "mu-3d": (_latents("3-D mu"), ("latents.npz: array 'mu' has shape (359, 2, 1)",), False),
    "labels-str": (_latents("string labels"),
                   ("latents.npz: array 'labels' must hold integers, found <U",), False),
    "labels-nan": (_latents("NaN labels"),
                   ("latents.npz: array 'labels' must hold integers, found float64",), False),
    "metrics-gone": (lambda run: (run / rundir.METRICS_FILE).unlink(),
                     ("metrics-gone/metrics.jsonl is missing or empty",
                      "metrics-gone: no finished epoch yet: nothing to place on the chart"),
                     True),
    "metrics-str": (lambda run: edit_metrics(run, 2, lambda row: row.update(test_kl="12.5")),
                    ("line 2 (epoch 2): 'test_kl' is not a finite number",), True),
    "log-sigma-vector": (lambda run: edit_weights(
        run, lambda t: t.update(log_sigma=torch.zeros(3))),
        ("model.safetensors: weights do not match the model described in config.json",),
        False),
    "shape-unfit": (lambda run: edit_config(
        run, lambda raw: raw["data"].update(image_shape=[1, 12, 12])),
        ("model.safetensors: weights do not match the model described in config.json",),
        False),
    "latent-dim-float": (lambda run: edit_config(
        run, lambda raw: raw["config"].update(latent_dim=2.0)),
        ("config.json: invalid run config: config.latent_dim must be an integer, got 2.0",),
        False),
    "config-deep": (_nested, ("config.json is nested 200,001 levels deep",), False),
    "row-no-recon": (lambda run: edit_metrics(run, 2, lambda row: row.pop("test_recon")),
                     ("line 2 (epoch 2) has no 'test_recon'",), True),
}
OPENABLE = [name for name, (_, _, openable) in CRAFTED.items() if openable]
REFUSED = [name for name, (_, _, openable) in CRAFTED.items() if not openable]
# no name contains another, so "names the folder" is a plain substring test
assert not [(a, b) for a in [*CRAFTED, GOOD] for b in [*CRAFTED, GOOD] if a != b and a in b]


@pytest.fixture(scope="module")
def crafted_runs(tiny_run, tmp_path_factory) -> Path:
    """One runs folder: the good run and every crafted folder (built once per module)."""
    runs = tmp_path_factory.mktemp("crafted-runs")
    shutil.copytree(tiny_run, runs / GOOD)
    for name, (craft, _, _) in CRAFTED.items():
        shutil.copytree(tiny_run, runs / name)
        craft(runs / name)
    entries = {e.name: e for e in list_runs(runs)}  # the premise: what the listing says
    assert set(entries) == {GOOD, *CRAFTED}
    assert {n for n, e in entries.items() if e.openable} == {GOOD, *OPENABLE}
    return runs


def plain(text: str) -> str:
    """An element's text without the Markdown escapes ``explorer.text.md`` adds."""
    return re.sub(r"\\(.)", r"\1", text)


def lines(at: AppTest) -> list[str]:
    """Every line that can name a problem: errors, warnings, infos and captions (the
    sidebar's "cannot be opened" list is captions), Markdown escapes removed."""
    found = [*at.error, *at.warning, *at.info, *at.caption]
    return [plain(str(e.value)) for e in found]


def assert_clean_lines(at: AppTest, runs: Path) -> None:
    """No exception; a refused crafted folder named in exactly one line (the sidebar's
    list of folders that cannot be opened: ``**name**: file: problem``), an openable one
    in at most one (where the page needs its damaged file), each with its problem; no
    line shows a server path."""
    assert not at.exception, [e.value for e in at.exception]
    shown = lines(at)
    for text in shown:
        for path in (str(runs), str(runs.parent), "/tmp/", "/root", str(Path.home()) + "/"):
            assert path not in text, (path, text)
    for name, (_, problems, openable) in CRAFTED.items():
        named = [t for t in shown if name in t]
        assert len(named) <= 1 if openable else len(named) == 1, (name, named)
        for text in named:
            assert "\n" not in text and any(p in text for p in problems), (name, text)
            assert openable or text.startswith(f"**{name}**: "), (name, text)


def assert_good_run_works(at: AppTest, page: str) -> None:
    """The page shows what it is for, on the good run, without an error."""
    assert not at.error, [e.value for e in at.error]
    if page == "streamlit_app.py":
        assert at.title[0].value == "VAE Latent Explorer"
        assert len(lens(at)["z"]) == 2
        assert any(m.label == "ELBO" for m in at.metric)
        assert at.selectbox(key=PICKER).value.endswith(f"/{GOOD}")
    elif page.endswith("compare_ae_vs_vae.py"):
        assert len(at.get("plotly_chart")) == 2  # both runs' latent maps
    elif page.endswith("beta_and_warmup.py"):
        assert GOOD in list(at.dataframe[0].value["run"])  # placed on the chart
        assert at.get("plotly_chart")
    elif page.endswith("train.py"):
        assert at.title[0].value == "Train a new run"
    elif page.endswith("reparameterisation.py"):
        assert list(at.dataframe[0].value.columns)[:2] == ["μ", "σ"]
    elif page.endswith("elbo_vs_log_p.py"):
        assert any(m.label == "ELBO (nats)" for m in at.metric)
    elif page.endswith("latent_health.py"):
        assert any(m.label == "Active units" for m in at.metric)
        assert at.get("download_button")  # the run summary could be built
    elif page.endswith("generation.py"):
        assert at.get("image")
    else:
        raise AssertionError(f"{page}: say what this page shows on a good run")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_beside_the_crafted_runs(page, crafted_runs, monkeypatch):
    monkeypatch.setenv("VAE_RUNS_DIR", str(crafted_runs))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    at.session_state["run_dir"] = str(crafted_runs / GOOD)
    at.run()
    assert_clean_lines(at, crafted_runs)
    assert_good_run_works(at, page)
    pickers = [s for s in at.selectbox if s.key == PICKER]
    if page == "streamlit_app.py":  # a refused folder cannot be chosen, even by a crafted
        for name in REFUSED:  # session state: the picker falls back to an openable run
            at.session_state["run_dir"] = str(crafted_runs / name)
            at.run()
            assert at.session_state["run_dir"] != str(crafted_runs / name)
            assert_clean_lines(at, crafted_runs)
    if not pickers:  # a page over all runs at once: no run is selected
        return
    offered = pickers[0].options  # labels: "<name> — VAE z=2 · digits · 3/3 epochs"
    assert sorted(o.split(" ")[0] for o in offered) == sorted([GOOD, *OPENABLE]), offered
    for name in OPENABLE:  # the listing offers it: the page opens it, or says why not
        at.session_state["run_dir"] = str(crafted_runs / name)
        at.run()
        assert at.selectbox(key=PICKER).value == str(crafted_runs / name)
        assert_clean_lines(at, crafted_runs)
        if page == "streamlit_app.py":  # the explorer works, without the curves
            assert len(lens(at)["z"]) == 2 and not at.error
            (warning,) = [plain(w.value) for w in at.warning]
            assert warning.startswith(f"The training curves cannot be shown: {name}/"), warning
    at.session_state["run_dir"] = str(crafted_runs / GOOD)
    at.run()
    assert_clean_lines(at, crafted_runs)
    assert_good_run_works(at, page)


def test_the_crafted_folders_are_what_the_report_describes(crafted_runs):
    """The builders really craft the findings (a control for the test above)."""
    with np.load(crafted_runs / "mu-inf" / rundir.LATENTS_FILE) as npz:
        assert np.isinf(npz["mu"]).any()
    with np.load(crafted_runs / "labels-nan" / rundir.LATENTS_FILE) as npz:
        assert np.isnan(npz["labels"]).any()
    raw = json.loads((crafted_runs / "latent-dim-float" / rundir.CONFIG_FILE).read_text())
    assert raw["config"]["latent_dim"] == 2.0 and isinstance(raw["config"]["latent_dim"], float)
    assert (crafted_runs / "config-deep" / rundir.CONFIG_FILE).stat().st_size > 400_000
    assert not (crafted_runs / "metrics-gone" / rundir.METRICS_FILE).exists()
    rows = (crafted_runs / "row-no-recon" / rundir.METRICS_FILE).read_text().splitlines()
    assert "test_recon" not in json.loads(rows[1]) and "test_recon" in json.loads(rows[0])
