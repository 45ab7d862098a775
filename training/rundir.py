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

An *imported* run (``explorer/adopt.py``: someone else's encoder and decoder) has no
``model.safetensors``, ``metrics.jsonl`` or ``train_state.pt``: its ``config.json`` holds
an ``imported`` section (where it came from, the decoder's output kind, the SHA-256 that
``onnx.json`` records in place of the weights'), the ONNX files are the model, and
``images.npz`` holds the images (``x``, (N, C, H, W), uint8 or float32 in [0, 1]) that
``latents.npz`` was computed from, in its order.

Nothing here ever unpickles arbitrary objects: safetensors for weights, JSON for text,
``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)`` for the rest.

A run folder is untrusted input (downloaded, shared): every reader below validates it
first, through ``training/validate.py`` (size caps before parsing, a schema for each file,
the weights checked against the config before any model is built; see there for the caps
and limits). Every failure is a :class:`RunDirError`: one line naming the file.

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
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from training import validate
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
IMAGES_FILE = "images.npz"  # an imported run's test images
FRAMES_DIR = "frames"  # the per-epoch film, training/frames.py
DECODER_OUTPUTS = ("logits", "probabilities", "mean")  # what a decoder returns
TMP_MARK = ".tmp-"  # temporary files are named .<final name>.tmp-<random>
_RUN_FILE_NAMES = frozenset((*RUN_FILES, *ONNX_FILES, IMAGES_FILE))


MAX_PROBLEM_CHARS = 600  # a library's error text can be long: one line, bounded


class RunDirError(ValueError):
    """A run directory (or one file in it) cannot be used; the message names the file.

    ``str(exc)`` is ``"<path as given>: <problem>"`` (for the command line, whose user owns
    the path); ``problem`` is always one line; :attr:`public` names only the run folder
    and the file, for a web page (no server path)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        problem = " ".join(str(problem).splitlines()).strip()
        if len(problem) > MAX_PROBLEM_CHARS:
            problem = problem[:MAX_PROBLEM_CHARS] + "..."
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    @property
    def run_folder(self) -> Path:
        """The run folder the error is about (``path`` itself, or the folder of its file)."""
        if self.path.parent.name == FRAMES_DIR:  # frames/epoch-NNNN.npy
            return self.path.parent.parent
        return self.path.parent if self.path.name in _RUN_FILE_NAMES else self.path

    @property
    def where(self) -> str:
        """``"<run folder name>/<file>"`` or ``"<run folder name>"``: no server path."""
        folder = self.run_folder
        if folder == self.path:
            return folder.name
        return f"{folder.name}/{self.path.relative_to(folder).as_posix()}"

    @property
    def public(self) -> str:
        """The one line a web page may show: :attr:`where` and the problem, with any path
        in the problem (a hint naming the run folder) cut to its last part."""
        return f"{self.where}: {redact_paths(self.problem, self.run_folder)}"


def redact_paths(text: str, run_folder: Path | None = None) -> str:
    """``text`` with the run folder's path replaced by its name and any other absolute
    path by its last component."""
    if run_folder is not None and str(run_folder) not in ("", ".", os.sep):
        text = text.replace(str(run_folder), run_folder.name)
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), text)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s/'\"`:;,()]+)+/([^\s/'\"`:;,()]+)")


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
def load_weights(path: str | os.PathLike, framework: Literal["pt"] = "pt",
                 info: RunInfo | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]: ...


@overload
def load_weights(path: str | os.PathLike, framework: Literal["np"],
                 info: RunInfo | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]: ...


def load_weights(path: str | os.PathLike, framework: str = "pt", info: RunInfo | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Read and verify a safetensors file as torch tensors (``framework="pt"``) or NumPy
    arrays (``"np"``, no torch import). Its header is checked first (size caps, byte
    ranges and, given ``info``, every tensor's name, shape and dtype against the model
    ``info`` describes), then the data's SHA-256 and finiteness. Raises
    :class:`RunDirError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunDirError(path, "weights file is missing")
    validate.check_safetensors_header(path, info)
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
    for name, tensor in tensors.items():
        finite = np.isfinite(tensor).all() if isinstance(tensor, np.ndarray) else \
            bool(tensor.isfinite().all())
        if not finite:
            raise RunDirError(path, f"tensor {name} holds non-finite values (inf or NaN)")
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
    # explorer/adopt.py's record for an imported run (None for a run trained here): source,
    # decoder_output (one of DECODER_OUTPUTS), model_sha256, colour_by
    imported: dict[str, Any] | None = None

    @property
    def is_imported(self) -> bool:
        return self.imported is not None

    @property
    def decoder_output(self) -> str:
        """What the decoder returns: ``logits`` (every run trained here), ``probabilities``
        or ``mean`` (the Gaussian's mean, in pixel units)."""
        return str((self.imported or {}).get("decoder_output", "logits"))

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.imported is None else {"imported": dict(self.imported)}
        return {**extra,
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
    """``config.json`` of a run, validated (``training/validate.py``: at most
    ``MAX_CONFIG_BYTES``, nesting depth checked before parsing, a schema with exact types
    and bounds) and cached by the file's stamp; a fresh copy each call."""
    return validate.read_config(run_dir)


# --------------------------------------------------------------------------- metrics

def write_metrics(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write_text(Path(run_dir) / METRICS_FILE, text)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All epochs' metrics; a missing file is an empty list. Every row is checked (required
    losses, finite numbers; ``training/validate.py``): a bad row refuses the file with a
    :class:`RunDirError` naming the line. Cached by the file's stamp."""
    return validate.read_metrics(run_dir)


# --------------------------------------------------------------------------- latents

def write_latents(run_dir: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(Path(run_dir) / LATENTS_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # the stub fears allow_pickle=<array>


def read_latents(run_dir: str | os.PathLike, info: RunInfo | None = None
                 ) -> dict[str, np.ndarray]:
    """The known arrays of ``latents.npz``, checked against the run's config (shapes,
    dtypes, equal lengths and the total size from the zip directory and the ``.npy``
    headers before anything is loaded; then finite values and labels in range). Unknown
    arrays are never loaded. See ``training/validate.py``."""
    return validate.read_latents(run_dir, info)


def images_as_stored(x: np.ndarray) -> np.ndarray:
    """How ``images.npz`` keeps images (N, C, H, W) in [0, 1]: as uint8 when that is exact
    (``uint8 / 255`` gives the same float32 values back), else as float32."""
    x = np.asarray(x, dtype=np.float32)
    as_bytes = np.rint(x * 255.0).clip(0, 255).astype(np.uint8)
    return as_bytes if np.array_equal(stored_images_as_float(as_bytes), x) else x


def stored_images_as_float(x: np.ndarray) -> np.ndarray:
    """``images.npz``'s ``x`` as float32 in [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return np.asarray(x, dtype=np.float32)


def write_images(run_dir: str | os.PathLike, x: np.ndarray) -> None:
    """An imported run's images (N, C, H, W) in [0, 1] as ``images.npz`` (compressed)."""
    with atomic_path(Path(run_dir) / IMAGES_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, x=images_as_stored(x))


def read_images(run_dir: str | os.PathLike, info: RunInfo | None = None) -> np.ndarray:
    """An imported run's images (N, C, H, W) float32 in [0, 1], checked (size caps, the
    ``.npy`` header against config.json's image shape, finite values in [0, 1])."""
    return stored_images_as_float(validate.read_images(run_dir, info))


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
    if validate.check_size(path, validate.MAX_STATE_BYTES, "train_state.pt") == 0:
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


def _read_bytes(path: Path, cap: int) -> bytes:
    return validate.read_capped(path, cap, path.name)


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
        record = validate.parse_json(_read_bytes(path, validate.MAX_ONNX_RECORD_BYTES), path,
                                     ONNX_RECORD_FILE)
        files = record["files"]
        for name in (ONNX_ENCODER_FILE, ONNX_DECODER_FILE):
            if not isinstance(files[name]["sha256"], str):
                raise TypeError(f"{name}'s sha256 is not a string")
        if not isinstance(record["weights_sha256"], str):
            raise TypeError("weights_sha256 is not a string")
    except RunDirError as exc:
        raise RunDirError(path, f"{exc.problem}: {_export_hint(run_dir)}") from exc
    except (KeyError, TypeError) as exc:
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
        data = _read_bytes(path, validate.MAX_ONNX_BYTES)
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
    """The torch model ``info`` describes (random weights). Refuses (ValueError) a model
    larger than ``validate.MAX_PARAMETERS``, by formula, before allocating anything."""
    from training.model import VAE

    problem = validate.model_size_problem(info.config, info.image_shape)
    if problem:
        raise ValueError(problem)
    return VAE.from_config(info.config, info.image_shape)


def load_state_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                    source: Path) -> None:
    """Copy ``tensors`` into ``model``, or raise naming every missing, extra or misshaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mismatch = validate.weights_mismatch(expected, {k: tuple(v.shape) for k, v in tensors.items()})
    if mismatch:
        raise RunDirError(source, mismatch)
    model.load_state_dict(tensors)


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Open a run directory: parse config.json, load and verify the weights against it,
    rebuild the model, return it in eval mode. Raises :class:`RunDirError` naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(run_dir, "run directory does not exist")
    info = read_config(run_dir)
    # the weights first: their header is checked against the config before a model exists
    tensors, meta = load_weights(run_dir / WEIGHTS_FILE, info=info)
    try:
        model = build_model(info)
    except ValueError as exc:
        raise RunDirError(run_dir / CONFIG_FILE, f"cannot build the model: {exc}") from exc
    load_state_into(model, tensors, run_dir / WEIGHTS_FILE)
    model.to(device).eval()
    return LoadedRun(path=run_dir, info=info, model=model, weights_meta=meta)


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]

