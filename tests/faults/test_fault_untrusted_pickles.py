"""Group 2: a pickle with a malicious ``__reduce__`` where a checkpoint, a training state
or a latents file is expected is rejected and its code never runs (a marker file it
would create never appears); and no project code can unpickle arbitrary objects."""

from __future__ import annotations

import ast
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from faultkit import (  # noqa: F401  (fresh_run_fixture: a fixture)
    REPO,
    TINY_ARGS,
    assert_no_temp_files,
    assert_unchanged,
    cli,
    fresh_run_fixture,
    snapshot,
)

from training import rundir


class Payload:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def malicious_files(marker: Path) -> dict[str, bytes]:
    """Three containers that would execute the payload if loaded unsafely."""
    raw = pickle.dumps({"epoch": 1, "model": Payload(marker), "optimizer": {}}, protocol=2)
    buf = io.BytesIO()
    torch.save({"epoch": 1, "model": {"w": torch.zeros(2)}, "optimizer": Payload(marker)}, buf)
    npz = io.BytesIO()
    np.savez(npz, mu=np.array([Payload(marker)], dtype=object), labels=np.zeros(1))
    return {"raw-pickle": raw, "torch-zip": buf.getvalue(), "npz-object-array": npz.getvalue()}


def test_payloads_are_live(tmp_path):
    """Control: loading these bytes the unsafe way really does run the code, so the
    marker checks below can fail."""
    marker = tmp_path / "pwned"
    files = malicious_files(marker)
    pickle.loads(files["raw-pickle"])
    assert marker.exists()
    marker.unlink()
    torch.load(io.BytesIO(files["torch-zip"]), weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.load(io.BytesIO(files["npz-object-array"]), allow_pickle=True)["mu"]
    assert marker.exists()


@pytest.mark.parametrize("variant", ["raw-pickle", "torch-zip", "npz-object-array"])
@pytest.mark.parametrize("target", [rundir.STATE_FILE, rundir.WEIGHTS_FILE, rundir.LATENTS_FILE])
def test_malicious_pickle_is_rejected_and_never_runs(target, variant, fresh_run, tmp_path):
    marker = tmp_path / "pwned"
    (fresh_run / target).write_bytes(malicious_files(marker)[variant])
    before = snapshot(fresh_run)

    with pytest.raises(rundir.RunDirError) as err:
        if target == rundir.STATE_FILE:
            rundir.load_train_state(fresh_run)
        elif target == rundir.WEIGHTS_FILE:
            rundir.load_run(fresh_run)
        else:
            rundir.read_latents(fresh_run)

    assert err.value.path == fresh_run / target
    assert not marker.exists(), "the pickled code was executed"
    assert_unchanged(fresh_run, before)


@pytest.mark.parametrize("variant", ["raw-pickle", "torch-zip"])
def test_resume_from_malicious_state_exits_2_without_running_it(variant, fresh_run, tmp_path,
                                                                capsys):
    marker = tmp_path / "pwned"
    state = fresh_run / rundir.STATE_FILE
    state.write_bytes(malicious_files(marker)[variant])
    before = snapshot(fresh_run)

    code, err = cli(["--resume", str(fresh_run), *TINY_ARGS], capsys)

    assert code == 2
    assert f"--resume: {state}: cannot be loaded safely" in err
    assert "it was not executed" in err
    assert not marker.exists(), "the pickled code was executed"
    assert_unchanged(fresh_run, before)
    assert_no_temp_files(fresh_run)
    rundir.load_run(fresh_run)  # the good weights next to it are untouched


# --------------------------------------------------------------------------- static check

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}


AUDITED = "# pickle-ok:"  # on an import line, with a reason: reviewed, own in-memory data only


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Every way ``source`` could unpickle arbitrary objects, as 'file:line: what'. An
    import of a pickle module is allowed only on a line marked ``# pickle-ok: <reason>``
    (e.g. a benchmark timing a round trip of its own data); the loaders never are."""
    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        where = f"{filename}:{line}"
        audited = 0 < line <= len(lines) and AUDITED in lines[line - 1] and \
            len(lines[line - 1].split(AUDITED, 1)[1].strip()) >= 10
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES and not audited:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES and not audited:
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ""
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            flag = kwargs.get("weights_only")
            if name == "load" and owner in ("torch", "serialization") and not (
                    isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
            if name == "read_pickle":
                found.append(f"{where}: read_pickle")
            if name in ("add_safe_globals", "safe_globals"):
                found.append(f"{where}: {name} widens weights_only")
            allow = kwargs.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}: allow_pickle={ast.unparse(allow)}")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}: weights_only={ast.unparse(flag)}")
    return found


def project_sources() -> list[Path]:
    skip = {"tests", ".git", ".venv", "venv", "node_modules", "__pycache__", "runs", "data"}
    return sorted(p for p in REPO.rglob("*.py")
                  if not skip & set(p.relative_to(REPO).parts[:-1]))


def test_scanner_catches_each_unsafe_pattern():
    bad = """
import pickle
from dill import loads
import torch, numpy as np
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
np.load("x.npz", allow_pickle=True)
torch.serialization.add_safe_globals([object])
"""
    found = unsafe_calls(bad)
    assert {int(hit.split(":")[1]) for hit in found} == {2, 3, 5, 6, 7, 8}, found
    assert unsafe_calls("import pickle  # pickle-ok: times a round trip of its own data\n") \
        == []
    assert unsafe_calls("import pickle  # pickle-ok:\n")  # a reason is required
    assert unsafe_calls("import torch  # pickle-ok: no excuse for a loader\n"
                        "torch.load('x.pt')  # pickle-ok: no excuse for a loader\n")
    assert unsafe_calls("import torch\ntorch.load('x', weights_only=True)\n"
                        "import numpy as np\nnp.load('y', allow_pickle=False)\n") == []


def test_no_project_code_can_unpickle_arbitrary_objects():
    files = project_sources()
    assert REPO / "training" / "rundir.py" in files  # the scan really covers the project
    found = [hit for path in files
             for hit in unsafe_calls(path.read_text(encoding="utf-8"),
                                     str(path.relative_to(REPO)))]
    assert found == []
    # and no weights_only=False hidden in strings, configs or shell scripts
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if path.is_file() and path.suffix in {".py", ".sh", ".toml", ".cfg", ".md", ".txt"} \
                and not parts & {"tests", ".git", ".venv", "node_modules"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "weights_only=False" not in text, path
