"""The folder layout is the architecture, and these checks keep it so:
``training/`` -> run directory -> ``explorer/`` -> ``app/`` -> ``streamlit_app.py``.

- ``training/`` imports neither ``explorer``, ``app`` nor Streamlit;
- ``explorer/`` never imports Streamlit nor ``app``;
- no page file builds a figure (no plotly import in ``app/pages/``);
- the only UI file at the repository root is ``streamlit_app.py``;
- nothing edits ``sys.path`` (the project is installed with pip).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_DIRS = ("training", "explorer", "app", "bench", "tests", "scripts")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports, any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offending_imports(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path in python_files(folder) for module in sorted(imported_modules(path))
            if module.split(".")[0] in forbidden]


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("training", ("explorer", "app", "streamlit", "streamlit_app")),
    ("explorer", ("app", "streamlit", "streamlit_app")),
])
def test_lower_layers_never_import_upper_ones(folder, forbidden):
    assert python_files(folder), f"{folder}/ has no Python files"
    assert offending_imports(folder, forbidden) == []


def test_the_check_sees_imports_at_any_depth(tmp_path):
    """The import check must catch a lazy import inside a function (no false pass)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import streamlit as st\n    from app.shared import x\n")
    assert imported_modules(sample) == {"streamlit", "app.shared"}


def test_pages_only_lay_out_widgets():
    pages = python_files("app/pages")
    assert len(pages) >= 7
    builds_figures = [f"{path.relative_to(ROOT)} imports {module}" for path in pages
                      for module in imported_modules(path) if module.split(".")[0] == "plotly"]
    assert builds_figures == [], "figures belong in explorer/, pages only lay out widgets"


def test_only_streamlit_app_at_the_root():
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["streamlit_app.py"]
    # A pages/ folder beside the main script (even an empty one, left by the old layout in
    # a checkout that was pulled, not cloned) switches Streamlit to its folder-based page
    # list until st.navigation runs: a new server's first visitor to a lesson URL then
    # gets a "Page not found" dialog. The pages live in app/pages/.
    assert not (ROOT / "pages").exists(), "remove the stale pages/ folder at the root"


def sys_path_edits(path: Path) -> list[int]:
    """Lines of ``path`` that change ``sys.path`` (a call on it, or an assignment to it)."""
    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and is_sys_path(node.func.value)):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(is_sys_path(t) for t in targets):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_sys_path_edits(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nsys.path.insert(0, '.')\nsys.path += ['x']\n")
    assert sys_path_edits(sample) == [2, 3]  # the check itself finds both kinds
    edits = [f"{path.relative_to(ROOT)}:{line}" for folder in PROJECT_DIRS
             for path in python_files(folder) for line in sys_path_edits(path)]
    edits += [f"streamlit_app.py:{line}" for line in sys_path_edits(ROOT / "streamlit_app.py")]
    assert edits == []


def test_vae_explorer_builds_the_streamlit_command(tmp_path):
    from app.launch import build_command

    command = build_command(["--runs-dir", str(tmp_path), "--port", "8600", "--no-train",
                             "--data-root", str(tmp_path), "--server.headless", "true"])
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[4].endswith("streamlit_app.py") and Path(command[4]).is_file()
    cut = command.index("--")
    assert command[5:cut] == ["--server.port", "8600", "--server.headless", "true"]
    assert command[cut + 1:] == ["--runs-dir", str(tmp_path.resolve()), "--data-root",
                                 str(tmp_path.resolve()), "--no-train"]
    with pytest.raises(SystemExit):
        build_command(["--port", "70000"])
    dev = build_command(["--dev"])
    assert dev[dev.index("--client.showErrorDetails") + 1] == "full"
    assert dev[dev.index("--server.fileWatcherType") + 1] == "auto"  # a server: "none"


def test_students_never_see_tracebacks():
    """``.streamlit/config.toml`` beside streamlit_app.py (Streamlit reads it wherever the
    app is started from) shows an exception's type only, no message, trace or path."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] in ("type", "none")
