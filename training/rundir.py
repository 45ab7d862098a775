"""The run directory: the contract between the trainer and everything that reads a run.

Files (all written atomically: a temporary file in the same folder, fsync, then
``os.replace``; a crash leaves either the old file or the new one, never half of one):

- ``config.json``       format version, the :class:`TrainConfig`, the data description
                        (image shape, class names, sizes), library versions, status.
- ``model.safetensors`` weights only, with the SHA-256 of the tensor data in its header.
- ``metrics.jsonl``     one JSON object per finished epoch, nats per sample.
- ``latents.npz``       test-set ``mu``, ``logvar`` (VAE only), ``labels``, per-sample
                        ``recon`` and ``kl``, 2-D ``pca`` (+ ``pca_mean``, ``pca_components``)
                        and, for latent_dim > 2, ``tsne``.
- ``train_state.pt``    model + optimizer + RNG states + epoch for ``--resume``; a plain
                        dict of tensors and numbers, loaded with ``weights_only=True``.
- ``encoder.onnx``,     the model for readers without PyTorch (``training/export.py``),
  ``decoder.onnx``      written with the final epoch (or by ``python -m training.export``);
- ``onnx.json``         which weights (their SHA-256) they were exported from and each
                        file's own SHA-256: stale or modified ONNX files are refused.
                        ``model.safetensors`` stays the source of truth.

Nothing here ever unpickles arbitrary objects: safetensors for weights, JSON for text,
``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)`` for the rest.

PyTorch is imported by the functions that need it, not by this module: the app's main
page reads config, metrics, latents, (as NumPy arrays) weights and the ONNX files without
it, because ``import torch`` alone would eat most of its cold-start budget.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from training.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from training.model import VAE

FORMAT = "vae-latent-explorer/run"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
LATENTS_FILE = "latents.npz"
STATE_FILE = "train_state.pt"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, LATENTS_FILE, STATE_FILE)  # every epoch
ONNX_ENCODER_FILE = "encoder.onnx"
ONNX_DECODER_FILE = "decoder.onnx"
ONNX_RECORD_FILE = "onnx.json"
ONNX_FILES = (ONNX_ENCODER_FILE, ONNX_DECODER_FILE, ONNX_RECORD_FILE)  # the final epoch
ONNX_FORMAT = "vae-latent-explorer/onnx"
TMP_MARK = ".tmp-"  # temporary files are named .<final name>.tmp-<random>


class RunDirError(ValueError):
    """A run directory (or one file in it) cannot be used; the message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --------------------------------------------------------------------------- atomic writes

_staging = threading.local()  # .renames: list of (tmp, final) while all_or_nothing() is open


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync it and rename it over
    ``final``, on any exception (KeyboardInterrupt, ENOSPC, ...) delete it and re-raise.
    Inside :func:`all_or_nothing` the rename waits until the whole group was written."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; give the file the usual mode
    staged = getattr(_staging, "renames", None)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if staged is not None:
            staged.append((tmp, final))
            return
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Group several atomic writes (one epoch's files): every file is written and fsynced
    to its temporary name first and renamed into place only when all of them succeeded.
    On any exception (disk full, a second Ctrl-C) every temporary file is deleted and the
    previous files stay exactly as they were."""
    if getattr(_staging, "renames", None) is not None:  # nested: the outer group commits
        yield
        return
    renames: list[tuple[Path, Path]] = []
    _staging.renames = renames
    try:
        yield
    except BaseException:
        for tmp, _final in renames:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    finally:
        _staging.renames = None
    folders = {final.parent for _tmp, final in renames}
    try:
        while renames:
            os.replace(*renames[0])  # needs no new space: a full disk cannot fail it
            renames.pop(0)
    except BaseException:
        for tmp, _final in renames:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    for folder in folders:
        _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def leftover_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Temporary files a killed writer could have left (there should be none)."""
    return sorted(p for p in Path(run_dir).glob(f".*{TMP_MARK}*"))


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- weights

def _tensor_bytes(t: torch.Tensor | np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype name as torch spells it, shape, raw bytes) of a torch tensor or NumPy array,
    so the same weights hash the same whichever framework read them."""
    if isinstance(t, np.ndarray):
        arr = np.asarray(t, order="C")  # not ascontiguousarray: that makes 0-d arrays 1-d
        return f"torch.{arr.dtype.name}", tuple(arr.shape), arr.tobytes()
    import torch

    t = t.detach().cpu().contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return str(t.dtype), tuple(t.shape), data


def weights_sha256(tensors: dict[str, torch.Tensor] | dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, data = _tensor_bytes(tensors[name])
        digest.update(f"{name}|{dtype}|{shape}|".encode())
        digest.update(data)
    return digest.hexdigest()


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically, with the weights' SHA-256 in its header."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    sha = weights_sha256(tensors)
    meta = {"format": FORMAT, "weights_sha256": sha, **(metadata or {})}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return sha


@overload
def load_weights(path: str | os.PathLike, framework: Literal["pt"] = "pt"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]: ...


@overload
def load_weights(path: str | os.PathLike, framework: Literal["np"]
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]: ...


def load_weights(path: str | os.PathLike, framework: str = "pt"
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Read and verify a safetensors file as torch tensors (``framework="pt"``) or NumPy
    arrays (``"np"``, no torch import). Raises :class:`RunDirError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunDirError(path, "weights file is missing")
    if path.stat().st_size == 0:
        raise RunDirError(path, "weights file is empty (0 bytes)")
    try:
        with safe_open(str(path), framework=framework, device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for every corruption
        raise RunDirError(
            path, f"not a valid safetensors file (truncated or corrupt): {exc}") from exc
    expected = metadata.get("weights_sha256")
    if expected is None:
        raise RunDirError(path, "no weights_sha256 in the header: not written by this project, "
                                "its integrity cannot be checked")
    actual = weights_sha256(tensors)
    if actual != expected:
        raise RunDirError(path, f"checksum mismatch: the tensor data is corrupt (header says "
                                f"sha256 {expected[:12]}..., data hashes to {actual[:12]}...)")
    return tensors, metadata


# --------------------------------------------------------------------------- config.json

def versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("safetensors", "scikit-learn", "openTSNE"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


@dataclass
class RunInfo:
    """Parsed ``config.json``."""

    config: TrainConfig
    image_shape: tuple[int, int, int]
    class_names: list[str]
    num_train: int = 0
    num_test: int = 0
    status: str = "training"  # training | complete | interrupted | failed
    epochs_completed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    message: str = ""  # why a run stopped, when it did not complete
    argv: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "data": {"image_shape": list(self.image_shape), "class_names": self.class_names,
                     "num_train": self.num_train, "num_test": self.num_test},
            "status": self.status, "epochs_completed": self.epochs_completed,
            "message": self.message, "created": self.created, "versions": self.versions,
            "argv": self.argv,
        }


def write_config(run_dir: str | os.PathLike, info: RunInfo) -> None:
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(info.to_json(), indent=2) + "\n")


def read_config(run_dir: str | os.PathLike) -> RunInfo:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(path, "config.json is missing: this is not a run directory "
                                "(train one with `python -m training --out DIR`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(path, f"not valid JSON (truncated or corrupt): {exc}") from exc
    if not isinstance(raw, dict) or "config" not in raw or "data" not in raw:
        raise RunDirError(path, "missing the 'config' and 'data' sections of a run's config.json")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(path, f"format_version {version!r} is newer than this program "
                                f"understands ({FORMAT_VERSION}); upgrade VAE Latent Explorer")
    try:
        config = TrainConfig.from_dict(raw["config"])
        config.validate()
        data = raw["data"]
        shape = tuple(int(s) for s in data["image_shape"])
        if len(shape) != 3:
            raise ValueError(f"image_shape must be [C, H, W], got {list(shape)}")
        return RunInfo(
            config=config, image_shape=(shape[0], shape[1], shape[2]),
            class_names=[str(c) for c in data.get("class_names", [])],
            num_train=int(data.get("num_train", 0)), num_test=int(data.get("num_test", 0)),
            status=str(raw.get("status", "complete")),
            epochs_completed=int(raw.get("epochs_completed", 0)),
            versions=dict(raw.get("versions", {})), created=str(raw.get("created", "")),
            message=str(raw.get("message", "")), argv=list(raw.get("argv", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(path, f"invalid run config: {exc}") from exc


# --------------------------------------------------------------------------- metrics

def write_metrics(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write_text(Path(run_dir) / METRICS_FILE, text)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All epochs' metrics; a missing file is an empty list, a corrupt line an error."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(path, f"line {n} is not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise RunDirError(path, f"line {n} is not a JSON object")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- latents

def write_latents(run_dir: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(Path(run_dir) / LATENTS_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # the stub fears allow_pickle=<array>


def read_latents(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(run_dir) / LATENTS_FILE
    if not path.is_file():
        raise RunDirError(path, "latents.npz is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/ValueError/OSError for truncated or foreign files
        raise RunDirError(path, f"not a readable .npz file (truncated or corrupt): {exc}") from exc
    for key in ("mu", "labels", "recon", "kl", "pca"):
        if key not in arrays:
            raise RunDirError(path, f"array {key!r} is missing")
    return arrays


# --------------------------------------------------------------------------- train state

STATE_SHA_KEY = "state_sha256"


def state_sha256(state: Any) -> str:
    """SHA-256 over a nested structure of dicts, lists, tensors and numbers (every tensor's
    dtype, shape and bytes; keys in sorted order), ignoring the ``state_sha256`` entry.
    torch's zip format does not check its CRCs on load, so a flipped bit would go unnoticed."""
    import torch

    digest = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            dtype, shape, data = _tensor_bytes(obj)
            digest.update(f"T|{dtype}|{shape}|".encode())
            digest.update(data)
        elif isinstance(obj, dict):
            digest.update(f"D{len(obj)}|".encode())
            for key in sorted(obj, key=repr):
                if key == STATE_SHA_KEY:
                    continue
                digest.update(f"{key!r}=".encode())
                feed(obj[key])
        elif isinstance(obj, (list, tuple)):
            digest.update(f"L{len(obj)}|".encode())
            for item in obj:
                feed(item)
        else:
            digest.update(f"{type(obj).__name__}:{obj!r}|".encode())

    feed(state)
    return digest.hexdigest()


def save_train_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``train_state.pt`` atomically, with the SHA-256 of its contents inside."""
    import torch

    state = {**state, STATE_SHA_KEY: state_sha256(state)}
    buffer = io.BytesIO()  # serialise in memory: torch's own writer turns a full disk into
    torch.save(state, buffer)  # a RuntimeError; a plain write raises OSError(ENOSPC)
    atomic_write_bytes(Path(run_dir) / STATE_FILE, buffer.getvalue())


def load_train_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Load ``train_state.pt`` with ``weights_only=True``: a pickle that tries to build any
    object other than tensors and plain containers is rejected, its code never runs.
    The stored SHA-256 is verified, so corrupt tensor data is an error, not a bad resume."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise RunDirError(path, "train_state.pt is missing: nothing to resume from")
    if path.stat().st_size == 0:
        raise RunDirError(path, "train_state.pt is empty (0 bytes)")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirError(path, f"cannot be loaded safely (corrupt, or contains objects other "
                                f"than tensors; it was not executed): {exc}") from exc
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer"} <= set(state):
        raise RunDirError(path, "not a training state written by this project")
    expected = state.pop(STATE_SHA_KEY, None)
    if not isinstance(expected, str):
        raise RunDirError(path, "no state_sha256 inside: not written by this version of the "
                                "project, its integrity cannot be checked")
    actual = state_sha256(state)
    if actual != expected:
        raise RunDirError(path, f"checksum mismatch: the saved training state is corrupt "
                                f"(stored sha256 {expected[:12]}..., data hashes to "
                                f"{actual[:12]}...)")
    return state


# --------------------------------------------------------------------------- ONNX files

def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_onnx(run_dir: str | os.PathLike, encoder: bytes, decoder: bytes, weights_sha: str,
               details: dict[str, Any] | None = None) -> None:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``onnx.json`` as one all-or-nothing
    group. ``weights_sha`` is the ``weights_sha256`` of the weights they were exported from;
    ``details`` (exporter, opset, epoch) is stored as it is."""
    run_dir = Path(run_dir)
    record = {
        "format": ONNX_FORMAT, "format_version": FORMAT_VERSION, "weights_sha256": weights_sha,
        "files": {ONNX_ENCODER_FILE: {"sha256": file_sha256(encoder), "bytes": len(encoder)},
                  ONNX_DECODER_FILE: {"sha256": file_sha256(decoder), "bytes": len(decoder)}},
        **(details or {}),
    }
    with all_or_nothing():
        atomic_write_bytes(run_dir / ONNX_ENCODER_FILE, encoder)
        atomic_write_bytes(run_dir / ONNX_DECODER_FILE, decoder)
        atomic_write_text(run_dir / ONNX_RECORD_FILE, json.dumps(record, indent=2) + "\n")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RunDirError(path, f"cannot be read: {describe_os_error(exc)}") from exc


def _export_hint(run_dir: Path) -> str:
    return f"run `python -m training.export {run_dir}`"


def read_onnx_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``onnx.json``, checked for its shape only (not against any file). Raises
    :class:`RunDirError` when the run has no ONNX files or the record is unreadable."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in ONNX_FILES):
        raise RunDirError(run_dir, f"this run has no {ONNX_ENCODER_FILE}/{ONNX_DECODER_FILE} "
                                   f"(trained before ONNX export, or stopped before its last "
                                   f"epoch): {_export_hint(run_dir)}")
    path = run_dir / ONNX_RECORD_FILE
    try:
        record = json.loads(_read_bytes(path).decode("utf-8"))
        files = record["files"]
        for name in (ONNX_ENCODER_FILE, ONNX_DECODER_FILE):
            if not isinstance(files[name]["sha256"], str):
                raise TypeError(f"{name}'s sha256 is not a string")
        if not isinstance(record["weights_sha256"], str):
            raise TypeError("weights_sha256 is not a string")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunDirError(path, f"not a valid ONNX record (truncated or corrupt: "
                                f"{type(exc).__name__}: {exc}): {_export_hint(run_dir)}") from exc
    if record.get("format") != ONNX_FORMAT:
        raise RunDirError(path, f"not an ONNX record written by this project: "
                                f"{_export_hint(run_dir)}")
    return record


def read_onnx(run_dir: str | os.PathLike, weights_sha: str) -> tuple[bytes, bytes]:
    """The bytes of ``encoder.onnx`` and ``decoder.onnx``, verified: both match the SHA-256
    that ``onnx.json`` recorded, and were exported from the weights whose ``weights_sha256``
    is ``weights_sha`` (those of ``model.safetensors``). Else :class:`RunDirError`, one line
    saying what is wrong and how to re-export."""
    run_dir = Path(run_dir)
    record = read_onnx_record(run_dir)
    if record["weights_sha256"] != weights_sha:
        raise RunDirError(run_dir, f"{ONNX_ENCODER_FILE}/{ONNX_DECODER_FILE} are stale: exported "
                                   f"from other weights (epoch {record.get('epoch', '?')}) than "
                                   f"{WEIGHTS_FILE} now holds: {_export_hint(run_dir)}")
    graphs = []
    for name in (ONNX_ENCODER_FILE, ONNX_DECODER_FILE):
        path = run_dir / name
        data = _read_bytes(path)
        expected = record["files"][name]["sha256"]
        actual = file_sha256(data)
        if actual != expected:
            raise RunDirError(path, f"checksum mismatch: the file is corrupt or was modified "
                                    f"({ONNX_RECORD_FILE} says sha256 {expected[:12]}..., the "
                                    f"file hashes to {actual[:12]}...): {_export_hint(run_dir)}")
        graphs.append(data)
    return graphs[0], graphs[1]


def onnx_problem(run_dir: str | os.PathLike, weights_sha: str) -> str | None:
    """None when the run's ONNX files are present, intact and exported from the weights
    with ``weights_sha``; else the reason they cannot be used."""
    try:
        read_onnx(run_dir, weights_sha)
    except RunDirError as exc:
        return exc.problem
    return None


# --------------------------------------------------------------------------- loading a run

@dataclass
class LoadedRun:
    path: Path
    info: RunInfo
    model: VAE
    weights_meta: dict[str, str]

    @property
    def config(self) -> TrainConfig:
        return self.info.config


def build_model(info: RunInfo) -> VAE:
    from training.model import VAE

    return VAE.from_config(info.config, info.image_shape)


def load_state_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                    source: Path) -> None:
    """Copy ``tensors`` into ``model``, or raise naming every missing, extra or misshaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in tensors and tensors[k].shape != v.shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {'; '.join(shapes[:5])}")
        raise RunDirError(source, "weights do not match the model described in config.json "
                                  f"(another architecture?): {'; '.join(parts)}")
    model.load_state_dict(tensors)


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Open a run directory: parse config.json, rebuild the model, load and verify the
    weights, return the model in eval mode. Raises :class:`RunDirError` naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(run_dir, "run directory does not exist")
    info = read_config(run_dir)
    try:
        model = build_model(info)
    except ValueError as exc:
        raise RunDirError(run_dir / CONFIG_FILE, f"cannot build the model: {exc}") from exc
    tensors, meta = load_weights(run_dir / WEIGHTS_FILE)
    load_state_into(model, tensors, run_dir / WEIGHTS_FILE)
    model.to(device).eval()
    return LoadedRun(path=run_dir, info=info, model=model, weights_meta=meta)


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]

