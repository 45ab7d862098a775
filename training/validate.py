"""One validation of a run folder before anything uses it.

A run folder is untrusted input: one a student downloads or a colleague shares can hold
anything. Every reader in ``training/rundir.py`` (``read_config``, ``read_metrics``,
``read_latents``, ``load_weights``, ``load_run``, ``load_train_state``, ``read_onnx``) and
``explorer/onnx_model.py`` goes through the checks here, in this order:

1. **Size caps per file, by ``stat`` before a byte is parsed** (the ``MAX_*_BYTES`` below).
2. **JSON with a depth limit**: the text is scanned for its nesting depth *before*
   ``json.loads`` (whose recursion would otherwise run first), then parsed.
3. **A schema**: ``config.json`` (exact types: ``latent_dim: 2.0``, ``"2"`` or ``true`` are
   not integers; ranges; bounded sizes; the model's parameter count by formula), every
   ``metrics.jsonl`` row (required keys with finite numbers: a bad row refuses the run's
   metrics with a line naming the row, none is skipped silently), ``latents.npz`` (only the
   known arrays, their shapes, dtypes, lengths and values, from the zip directory and the
   ``.npy`` headers before any array is loaded), ``model.safetensors`` (every tensor's name,
   dtype and shape, from its header, against the model the config describes, computed by
   :func:`weight_shapes` without building it) and ``train_state.pt``
   (:func:`check_train_state`, before anything is loaded into torch).
4. **Limits of what the explorer can show**: ``MAX_LATENT_DIM`` latent dimensions and
   ``MAX_CLASSES`` classes (more would mean thousands of sliders or Plotly traces).

Every failure is a :class:`training.rundir.RunDirError` whose problem is one line naming
the file's problem; its ``public`` property adds the run folder's name and the file name
and no other path (what a web page may show).

Results of reading ``config.json`` and ``metrics.jsonl`` and of :func:`check_run` are
cached process-wide, keyed by each file's (path, mtime_ns, size, inode): a rerun of a page
does not re-read or re-check a file that did not change (:data:`CACHE_MAX_ENTRIES`,
:data:`CACHE_MAX_BYTES`, thread-safe). ``latents.npz`` arrays are not kept here (the app
keeps its own copy); only the verdict of :func:`check_run` is.

NumPy only at import time: torch is imported by :func:`check_train_state` alone.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import re
import stat
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np

from training.config import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_HIDDEN_DIM,
    MAX_HIDDEN_LAYERS,
    MAX_IMAGE_SIDE,
    MAX_LATENT_DIM,
    MAX_THREADS,
    TrainConfig,
)

if TYPE_CHECKING:
    import torch

    from training.adam import Adam
    from training.rundir import RunDirError, RunInfo

KiB = 1024
MiB = 1024 * KiB

# --------------------------------------------------------------------------- caps and limits

# Files, checked with stat() (and again on the open file) before anything is parsed.
MAX_CONFIG_BYTES = 1 * MiB  # a real config.json is about 2 KB (argv, class names included)
MAX_METRICS_BYTES = 20 * MiB  # a row is ~0.5 KB + ~20 bytes per latent dimension
MAX_LATENTS_BYTES = 512 * MiB  # latents.npz: the file, and its members' total unpacked size
MAX_WEIGHTS_BYTES = 256 * MiB  # model.safetensors (64 M float32 parameters)
MAX_ONNX_BYTES = 256 * MiB  # each of encoder.onnx and decoder.onnx (the weights inside)
MAX_ONNX_RECORD_BYTES = 64 * KiB  # onnx.json: two hashes and a few details
MAX_STATE_BYTES = 3 * MAX_WEIGHTS_BYTES + 16 * MiB  # train_state.pt: weights, Adam's two
# moments of the same size, RNG states and pickle framing
MAX_SAFETENSORS_HEADER_BYTES = 1 * MiB  # the JSON header of model.safetensors
MAX_NPZ_MEMBERS = 64  # arrays in latents.npz (this project writes at most 9)
MAX_JSON_DEPTH = 8  # config.json nests 3 deep, a metrics row 2

# What the explorer can show (and the trainer may write; the model's are in config.py).
MAX_CLASSES = 100  # one Plotly trace per class on the latent map
MAX_TEST_POINTS = 100_000  # points on the latent map: rows of latents.npz
MAX_METRICS_ROWS = MAX_EPOCHS
MAX_PARAMETERS = MAX_WEIGHTS_BYTES // 4  # float32 weights
MAX_TEXT = 4096  # characters of one string in config.json (paths, a stop message)
MAX_LIST = 10_000  # items of argv in config.json
MAX_CLASS_NAME = 200  # characters of one class name

RUN_STATUSES = ("training", "complete", "interrupted", "failed")
LATENT_ARRAYS = ("mu", "logvar", "labels", "recon", "kl", "pca", "pca_mean", "pca_components",
                 "tsne")  # everything the code reads from latents.npz; others are ignored

# Process-wide cache of parsed files and verdicts.
CACHE_MAX_ENTRIES = 256
CACHE_MAX_BYTES = 64 * MiB  # the summed size of the cached files' text

T = TypeVar("T")


def _error(path: str | os.PathLike, problem: str) -> RunDirError:
    from training.rundir import RunDirError

    return RunDirError(path, problem)


def _mb(n: int) -> str:
    return f"{n / MiB:,.1f} MB" if n >= MiB else f"{n:,} bytes"


def _show(value: Any, limit: int = 40) -> str:
    """A crafted value, shown safely in one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value),
                                                                        type(value).__name__)


# --------------------------------------------------------------------------- the cache

class _LRU:
    """A small thread-safe LRU cache bounded by entries and by the summed ``weight``."""

    def __init__(self, max_entries: int, max_weight: int):
        self.max_entries, self.max_weight = max_entries, max_weight
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[bool, Any]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            self._items.move_to_end(key)
            return True, item[0]

    def put(self, key: tuple, value: Any, weight: int) -> None:
        if weight > self.max_weight:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while len(self._items) > self.max_entries or self._weight > self.max_weight:
                _key, (_value, w) = self._items.popitem(last=False)
                self._weight -= w

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0


_cache = _LRU(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES)


class _Refused:
    """A cached refusal: raised again as a fresh RunDirError (no traceback piles up)."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem


def clear_cache() -> None:
    _cache.clear()


def file_stamp(path: Path) -> tuple[int, int, int, int] | None:
    """(mtime_ns, size, inode, device) of a file, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from exc
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


def _cached(kind: str, key: tuple, compute: Callable[[], T], weight: int,
            copy_result: bool = True) -> T:
    """``compute()`` once per ``key``; a RunDirError it raises is cached as well. The
    caller gets a deep copy unless ``copy_result`` is False (it only checks, or only
    reads and promises not to change what it gets)."""
    from training.rundir import RunDirError

    full_key = (kind, *key)
    found, value = _cache.get(full_key)
    if not found:
        try:
            value = compute()
        except RunDirError as exc:
            value = _Refused(exc.path, exc.problem)
        _cache.put(full_key, value, weight)
    if isinstance(value, _Refused):
        raise _error(value.path, value.problem)
    # callers may change what they get (the CLI does)
    return copy.deepcopy(value) if copy_result else value


def check_regular(path: Path) -> os.stat_result:
    """``os.stat(path)`` of a regular file (not a FIFO or device, which could block or
    never end), and not a link to a file outside its run folder."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, f"{path.name} is not a regular file")
        if path.is_symlink() and path.resolve().parent != path.parent.resolve():
            raise _error(path, f"{path.name} is a link to a file outside the run folder")
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from exc
    return st


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """The bytes of ``path``, refused by size before reading when larger than ``cap``."""
    check_regular(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > cap:
                raise _error(path, f"{what} is {_mb(size)}, more than the {_mb(cap)} limit "
                                   f"for this file: refused without reading it")
            data = fh.read(cap + 1)
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) > cap:  # grew while we read it
        raise _error(path, f"{what} is more than the {_mb(cap)} limit for this file")
    return data


def check_size(path: Path, cap: int, what: str) -> int:
    """The size of ``path``; a RunDirError when it is larger than ``cap``."""
    size = check_regular(path).st_size
    if size > cap:
        raise _error(path, f"{what} is {_mb(size)}, more than the {_mb(cap)} limit for this "
                           f"file: refused without reading it")
    return size


# --------------------------------------------------------------------------- JSON

# A JSON string on one line (JSON strings cannot hold a raw newline), escapes included.
_JSON_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')


def json_depth(data: bytes, per_line: bool = False) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, strings ignored; with
    ``per_line`` each line counts on its own (JSON Lines). Vectorised: no recursion and
    no Python loop over the characters, so a 20 MB file takes milliseconds."""
    if not data:
        return 0
    chars = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    step = np.zeros(len(chars), dtype=np.int32)
    step[(chars == ord("[")) | (chars == ord("{"))] = 1
    step[(chars == ord("]")) | (chars == ord("}"))] = -1
    depth = np.cumsum(step, dtype=np.int64)
    if per_line:  # subtract the depth reached at the end of the previous line
        ends = np.flatnonzero(chars == ord("\n"))
        if len(ends):
            line = np.searchsorted(ends, np.arange(len(chars)), side="left")  # line number
            base = np.concatenate([[0], depth[ends]])
            depth = depth - base[line]
    return int(depth.max())


def parse_json(data: bytes, path: Path, what: str, per_line: bool = False) -> Any:
    """``data`` parsed as JSON, after its nesting depth was checked; RunDirError otherwise.
    Numbers beyond Python's digit limit and NaN or Infinity are left to the schema."""
    depth = json_depth(data, per_line)
    if depth > MAX_JSON_DEPTH:
        raise _error(path, f"{what} is nested {depth:,} levels deep, more than the "
                           f"{MAX_JSON_DEPTH} allowed: not a file written by this project")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(path, f"not valid JSON (truncated or corrupt): not UTF-8 text at byte "
                           f"{exc.start}") from exc
    if per_line:
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits
        raise _error(path, f"not valid JSON (truncated or corrupt): {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


# --------------------------------------------------------------------------- config.json

_FIELD_KINDS = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
# Inclusive bounds of the integer options (the schema's; TrainConfig.validate() checks the
# same upper bounds for a new run, and the finer rules).
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "latent_dim": (1, MAX_LATENT_DIM), "hidden_dim": (0, MAX_HIDDEN_DIM),
    "hidden_layers": (0, MAX_HIDDEN_LAYERS), "epochs": (1, MAX_EPOCHS),
    "batch_size": (1, MAX_BATCH_SIZE), "image_size": (1, MAX_IMAGE_SIDE), "channels": (1, 3),
    "kl_warmup": (0, MAX_EPOCHS), "threads": (0, MAX_THREADS),
    "seed": (-(2**63), 2**64 - 1), "split_seed": (0, 2**32 - 1),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int_in(value: Any, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def config_section_problem(section: Any) -> str | None:
    """Why ``config.json["config"]`` is not a valid :class:`TrainConfig` dict (types and
    bounds only; :meth:`TrainConfig.validate` does the rest), or None."""
    if not isinstance(section, dict):
        return f"'config' must be an object, got {_type_name(section)}"
    unknown = sorted(str(k) for k in section if k not in _FIELD_KINDS)
    if unknown:
        shown = ", ".join(k[:40] for k in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        return f"unknown config keys: {shown}"
    for name, value in section.items():
        kind = _FIELD_KINDS[name]
        if kind == "bool" and not isinstance(value, bool):
            return f"config.{name} must be true or false, got {_show(value)}"
        if kind == "int":
            if not _is_int(value):
                return f"config.{name} must be an integer, got {_show(value)} " \
                       f"({_type_name(value)})"
            low, high = _INT_BOUNDS.get(name, (-(2**63), 2**63 - 1))
            if name == "latent_dim" and value > high:
                return (f"latent_dim {value} is more than this app can show: at most "
                        f"{MAX_LATENT_DIM} latent dimensions")
            if not low <= value <= high:
                return f"config.{name} must be in {low}..{high}, got {value}"
        if kind == "float" and not _is_number(value):
            return f"config.{name} must be a finite number, got {_show(value)}"
        if kind == "str" and not (isinstance(value, str) and len(value) <= MAX_TEXT):
            return (f"config.{name} must be a string of at most {MAX_TEXT} characters, got "
                    f"{_type_name(value)}")
    return None


def arch_problem(arch: str, image_shape: tuple[int, int, int]) -> str | None:
    """Why ``arch`` cannot handle images of ``image_shape`` (None when it can)."""
    _, height, width = image_shape
    if arch == "conv" and (height < 16 or width < 16 or height % 4 or width % 4):
        return (f"--arch conv needs images of at least 16x16 with sides divisible by 4, "
                f"got {height}x{width}; use --arch mlp for this data set")
    return None


def dataset_image_shape(config: TrainConfig) -> tuple[int, int, int]:
    """The image shape (C, H, W) a data set gives, by its name (no data is loaded)."""
    if config.dataset == "digits":
        return (1, 8, 8)
    if config.dataset.startswith("folder:"):
        return (config.channels, config.image_size, config.image_size)
    return (1, 28, 28)  # mnist5k, mnist, fashion-mnist, kmnist


def weight_shapes(config: TrainConfig, image_shape: tuple[int, int, int]
                  ) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``training.model.VAE(config).state_dict()``, by
    formula: nothing is built or allocated (tests compare it with a meta-device model)."""
    channels, height, width = image_shape
    pixels = channels * height * width
    hidden, layers, latent = config.hidden_dim, config.hidden_layers, config.latent_dim
    shapes: dict[str, tuple[int, ...]] = {"log_sigma": ()}

    def linear(prefix: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}.weight"] = (n_out, n_in)
        shapes[f"{prefix}.bias"] = (n_out,)

    if config.arch == "conv":
        grid = 64 * (height // 4) * (width // 4)
        shapes["encoder.body.0.weight"], shapes["encoder.body.0.bias"] = (32, channels, 4, 4), (32,)
        shapes["encoder.body.2.weight"], shapes["encoder.body.2.bias"] = (64, 32, 4, 4), (64,)
        linear("encoder.body.5", grid, hidden)
        linear("decoder.to_grid.0", latent, hidden)
        linear("decoder.to_grid.2", hidden, grid)
        shapes["decoder.body.0.weight"], shapes["decoder.body.0.bias"] = (64, 32, 4, 4), (32,)
        shapes["decoder.body.2.weight"] = (32, channels, 4, 4)
        shapes["decoder.body.2.bias"] = (channels,)
    else:
        sizes = [pixels] + [hidden] * layers
        for i in range(layers):
            linear(f"encoder.body.0.{2 * i}", sizes[i], sizes[i + 1])
        sizes = [latent] + [hidden] * layers + [pixels]
        for i in range(layers + 1):
            linear(f"decoder.body.{2 * i}", sizes[i], sizes[i + 1])
    linear("to_mu", hidden, latent)
    if config.model == "vae":
        linear("to_logvar", hidden, latent)
    return shapes


def parameter_count(config: TrainConfig, image_shape: tuple[int, int, int]) -> int:
    return sum(math.prod(shape) for shape in weight_shapes(config, image_shape).values())


def model_size_problem(config: TrainConfig,
                       image_shape: tuple[int, int, int] | None = None) -> str | None:
    """Why the model ``config`` describes is too large to build (by formula), or None.
    Call it only on a config whose sizes are within their bounds."""
    shape = image_shape or dataset_image_shape(config)
    if config.hidden_layers > MAX_HIDDEN_LAYERS or config.hidden_dim > MAX_HIDDEN_DIM:
        return "the model is too large"  # validate() names the option
    count = parameter_count(config, shape)
    if count > MAX_PARAMETERS:
        return (f"the model would have {count:,} parameters ({_mb(4 * count)}), more than "
                f"the {MAX_PARAMETERS:,} ({_mb(MAX_WEIGHTS_BYTES)}) allowed")
    return None


def parse_run_config(raw: Any, path: Path) -> RunInfo:
    """A parsed ``config.json`` checked against the schema, as a RunInfo."""
    from training.rundir import FORMAT, FORMAT_VERSION, RunInfo

    def refuse(problem: str) -> RunDirError:
        return _error(path, problem)

    if not isinstance(raw, dict) or "config" not in raw or "data" not in raw:
        raise refuse("missing the 'config' and 'data' sections of a run's config.json")
    if "format" in raw and raw["format"] != FORMAT:
        raise refuse(f"format {_show(raw['format'])} is not {FORMAT!r}: not a run directory "
                     f"written by this project")
    version = raw.get("format_version", 0)
    if not _is_int(version) or version > FORMAT_VERSION or version < 0:
        raise refuse(f"format_version {_show(version)} is newer than this program "
                     f"understands ({FORMAT_VERSION}); upgrade VAE Latent Explorer"
                     if _is_int(version) and version > FORMAT_VERSION else
                     f"format_version must be an integer 0..{FORMAT_VERSION}, "
                     f"got {_show(version)}")
    problem = config_section_problem(raw["config"])
    if problem:
        raise refuse(f"invalid run config: {problem}")
    imported = raw.get("imported")
    if imported is not None:
        problem = imported_section_problem(imported, raw["config"])
        if problem:
            raise refuse(f"invalid imported run: {problem}")
    try:
        config = TrainConfig.from_dict(raw["config"])
        config.validate(imported=imported is not None)
    except (TypeError, ValueError) as exc:
        raise refuse(f"invalid run config: {_first_line(exc)}") from exc

    data = raw["data"]
    if not isinstance(data, dict):
        raise refuse(f"'data' must be an object, got {_type_name(data)}")
    shape = data.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(map(_is_int, shape))):
        raise refuse(f"invalid run config: image_shape must be [C, H, W] (three integers), "
                     f"got {_show(shape)}")
    channels, height, width = shape
    if channels not in (1, 3) or not (1 <= height <= MAX_IMAGE_SIDE
                                      and 1 <= width <= MAX_IMAGE_SIDE):
        raise refuse(f"invalid run config: image_shape {shape} is not 1 or 3 channels of at "
                     f"most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels")
    image_shape = (channels, height, width)
    arch = None if imported is not None else arch_problem(config.arch, image_shape)
    if arch:
        raise refuse(f"invalid run config: {arch}")
    size = None if imported is not None else model_size_problem(config, image_shape)
    if size:
        raise refuse(f"invalid run config: {size}")

    names = data.get("class_names", [])
    if not isinstance(names, list):
        raise refuse(f"class_names must be a list of strings, got {_type_name(names)}")
    if len(names) > MAX_CLASSES:
        raise refuse(f"{len(names):,} classes are more than this app can show: at most "
                     f"{MAX_CLASSES} classes")
    if not all(isinstance(n, str) and len(n) <= MAX_CLASS_NAME for n in names):
        raise refuse(f"class_names must be strings of at most {MAX_CLASS_NAME} characters")
    counts = {k: data.get(k, 0) for k in ("num_train", "num_test")}
    for key, value in counts.items():
        if not _int_in(value, 0, 10**9):
            raise refuse(f"data.{key} must be an integer 0..1000000000, got {_show(value)}")

    status = raw.get("status", "complete")
    if status not in RUN_STATUSES:
        raise refuse(f"status must be one of {', '.join(RUN_STATUSES)}, got {_show(status)}")
    epochs_completed = raw.get("epochs_completed", 0)
    if not _int_in(epochs_completed, 0, MAX_EPOCHS):
        raise refuse(f"epochs_completed must be an integer 0..{MAX_EPOCHS}, "
                     f"got {_show(epochs_completed)}")
    texts = {k: raw.get(k, "") for k in ("created", "message")}
    for key, value in texts.items():
        if not (isinstance(value, str) and len(value) <= MAX_TEXT):
            raise refuse(f"{key} must be a string of at most {MAX_TEXT} characters")
    versions = raw.get("versions", {})
    if not (isinstance(versions, dict) and len(versions) <= 64
            and all(isinstance(v, str) and len(v) <= 200 for v in versions.values())):
        raise refuse("versions must be an object of at most 64 short strings")
    argv = raw.get("argv", [])
    if not (isinstance(argv, list) and len(argv) <= MAX_LIST
            and all(isinstance(a, str) and len(a) <= MAX_TEXT for a in argv)):
        raise refuse(f"argv must be a list of at most {MAX_LIST} strings")
    return RunInfo(config=config, image_shape=image_shape, class_names=list(names),
                   num_train=counts["num_train"], num_test=counts["num_test"], status=status,
                   epochs_completed=epochs_completed, versions=dict(versions),
                   created=texts["created"], message=texts["message"], argv=list(argv),
                   imported=None if imported is None else dict(imported))


IMPORTED_KEYS = {"source": True, "decoder_output": True, "model_sha256": True,
                 "colour_by": False}  # key -> required
_SHA256 = re.compile(r"[0-9a-f]{64}")


def imported_section_problem(section: Any, config: dict[str, Any]) -> str | None:
    """Why ``config.json["imported"]`` (written by ``explorer/adopt.py``) is invalid, or None."""
    from training.rundir import DECODER_OUTPUTS

    if not isinstance(section, dict):
        return f"'imported' must be an object, got {_type_name(section)}"
    unknown = sorted(str(k)[:40] for k in section if k not in IMPORTED_KEYS)
    if unknown:
        return f"unknown keys in 'imported': {', '.join(unknown[:5])}"
    missing = [k for k, required in IMPORTED_KEYS.items() if required and k not in section]
    if missing:
        return f"'imported' lacks {', '.join(missing)}"
    for key in ("source", "colour_by"):
        value = section.get(key, "")
        if not (isinstance(value, str) and len(value) <= MAX_CLASS_NAME):
            return f"imported.{key} must be a string of at most {MAX_CLASS_NAME} characters"
    output = section["decoder_output"]
    if output not in DECODER_OUTPUTS:
        return (f"imported.decoder_output must be one of {', '.join(DECODER_OUTPUTS)}, "
                f"got {_show(output)}")
    if output == "mean" and config.get("likelihood", "bernoulli") != "gaussian":
        return "decoder_output 'mean' goes with a gaussian likelihood; a Bernoulli " \
               "decoder's mean is its probabilities"
    sha = section["model_sha256"]
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "imported.model_sha256 must be a SHA-256 (64 hex digits)"
    return None


def read_config(run_dir: str | os.PathLike) -> RunInfo:
    """``config.json`` of ``run_dir``, size-capped, depth-checked and schema-checked;
    cached by the file's stamp. RunDirError naming the file otherwise."""
    from training.rundir import CONFIG_FILE

    path = Path(run_dir) / CONFIG_FILE
    stamp = file_stamp(path)
    if stamp is None or not path.is_file():
        raise _error(path, "config.json is missing: this is not a run directory "
                           "(train one with `python -m training --out DIR`)")

    def compute() -> RunInfo:
        data = read_capped(path, MAX_CONFIG_BYTES, "config.json")
        return parse_run_config(parse_json(data, path, "config.json"), path)

    return _cached("config", (str(path), stamp), compute, min(stamp[1], MAX_CONFIG_BYTES))


# --------------------------------------------------------------------------- metrics.jsonl

# Every row the trainer writes has these, finite numbers in nats per sample.
METRIC_LOSSES = ("train_recon", "train_kl", "train_loss", "test_recon", "test_kl", "test_loss")
METRIC_OPTIONAL = ("train_objective", "beta", "lr", "seconds")  # finite numbers when present


def check_metrics_row(row: Any, latent_dim: int) -> tuple[dict[str, Any] | None, str | None]:
    """(the row with only its known keys, None) or (None, what is wrong with it)."""
    if not isinstance(row, dict):
        return None, "is not a JSON object"
    epoch = row.get("epoch")
    if not _int_in(epoch, 1, MAX_EPOCHS):
        return None, f"has no valid 'epoch' (an integer 1..{MAX_EPOCHS}), got {_show(epoch)}"
    clean: dict[str, Any] = {"epoch": epoch}
    for key in METRIC_LOSSES:
        if key not in row:
            return None, f"(epoch {epoch}) has no {key!r}"
        if not _is_number(row[key]):
            return None, f"(epoch {epoch}): {key!r} is not a finite number: {_show(row[key])}"
        clean[key] = float(row[key])
    for key in METRIC_OPTIONAL:
        if key in row:
            if not _is_number(row[key]):
                return None, f"(epoch {epoch}): {key!r} is not a finite number: " \
                             f"{_show(row[key])}"
            clean[key] = float(row[key])
    if "kl_per_dim" in row:
        values = row["kl_per_dim"]
        if not (isinstance(values, list) and len(values) == latent_dim
                and all(map(_is_number, values))):
            return None, (f"(epoch {epoch}): 'kl_per_dim' is not a list of {latent_dim} "
                          f"finite numbers")
        clean["kl_per_dim"] = [float(v) for v in values]
    if "active_units" in row:
        if not _int_in(row["active_units"], 0, latent_dim):
            return None, (f"(epoch {epoch}): 'active_units' is not an integer "
                          f"0..{latent_dim}: {_show(row['active_units'])}")
        clean["active_units"] = row["active_units"]
    return clean, None


def check_metrics(run_dir: str | os.PathLike) -> None:
    """:func:`read_metrics`'s checks (cached), without copying the rows: the run list
    calls it for every run on every page."""
    read_metrics(run_dir, copy_result=False)


def read_metrics(run_dir: str | os.PathLike, copy_result: bool = True
                 ) -> list[dict[str, Any]]:
    """Every row of ``metrics.jsonl`` (a missing file is an empty list), each checked:
    a bad row refuses the whole file with a line naming the row (the curves of a run with
    a bad row are not drawn; no row is skipped silently). Rows keep only the known keys."""
    from training.rundir import METRICS_FILE

    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    stamp = file_stamp(path)
    if stamp is None:
        return []
    info = read_config(run_dir)

    def compute() -> list[dict[str, Any]]:
        data = read_capped(path, MAX_METRICS_BYTES, "metrics.jsonl")
        text = parse_json(data, path, "a line of metrics.jsonl", per_line=True)
        rows: list[dict[str, Any]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if len(rows) >= MAX_METRICS_ROWS:
                raise _error(path, f"more than {MAX_METRICS_ROWS:,} rows (one per epoch)")
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise _error(path, f"line {n} is not valid JSON: {_first_line(exc)}") from exc
            row, problem = check_metrics_row(raw, info.config.latent_dim)
            if row is None:
                raise _error(path, f"line {n} {problem}: the training curves cannot be drawn")
            if rows and row["epoch"] <= rows[-1]["epoch"]:
                raise _error(path, f"line {n}: epoch {row['epoch']} does not follow epoch "
                                   f"{rows[-1]['epoch']}")
            rows.append(row)
        return rows

    config_stamp = file_stamp(run_dir / "config.json")
    return _cached("metrics", (str(path), stamp, config_stamp), compute,
                   min(stamp[1], MAX_METRICS_BYTES) * 4, copy_result)


# --------------------------------------------------------------------------- latents.npz

def _latent_schema(info: RunInfo) -> dict[str, tuple[tuple[int | str, ...], str, bool]]:
    """name -> (shape with "N" for the sample axis, "float" | "int", required)."""
    dim = info.config.latent_dim
    schema: dict[str, tuple[tuple[int | str, ...], str, bool]] = {
        "mu": (("N", dim), "float", True), "labels": (("N",), "int", True),
        "recon": (("N",), "float", True), "kl": (("N",), "float", True),
        "pca": (("N", 2), "float", True), "pca_mean": ((dim,), "float", True),
        "pca_components": ((2, dim), "float", True), "tsne": (("N", 2), "float", False),
    }
    if info.config.model == "vae":  # an autoencoder's logvar, if any, is not read
        schema["logvar"] = (("N", dim), "float", True)
    return schema


@contextlib.contextmanager
def _checked_npz(path: Path) -> Iterator[zipfile.ZipFile]:
    """``path`` (a regular file of at most :data:`MAX_LATENTS_BYTES` whose zip directory
    passes :func:`_zip_directory_problem`) as an open ZipFile. Any read error inside the
    ``with`` block becomes one :class:`RunDirError` line naming the file."""
    check_regular(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_LATENTS_BYTES:
                raise _error(path, f"{path.name} is {_mb(size)}, more than the "
                                   f"{_mb(MAX_LATENTS_BYTES)} limit for this file")
            problem = _zip_directory_problem(fh, size)
            if problem:
                raise _error(path, problem)
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                yield zf
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
            NotImplementedError, struct.error) as exc:
        from training.rundir import RunDirError

        if isinstance(exc, RunDirError):
            raise
        raise _error(path, f"not a readable .npz file (truncated or corrupt): "
                           f"{_first_line(exc)}") from exc


def _zip_directory_problem(fh: IO[bytes], size: int) -> str | None:
    """Check the zip's end record before ``zipfile`` reads the central directory, which
    it would otherwise parse whole: at most :data:`MAX_NPZ_MEMBERS` entries, no ZIP64."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return "not a readable .npz file (truncated or corrupt): no zip directory"
    entries, cd_size, cd_offset = struct.unpack("<xxxxxxxxxxHII", tail[at:at + 20])
    if entries > MAX_NPZ_MEMBERS:
        return f"holds {entries:,} arrays, more than the {MAX_NPZ_MEMBERS} allowed"
    zip64 = at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07"
    if zip64 or entries == 0xFFFF or cd_size > 64 * KiB * MAX_NPZ_MEMBERS or cd_offset >= size:
        return "not a readable .npz file: its zip directory is ZIP64 or too large"
    return None


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of a ``.npy`` stream, reading only its header."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(int(s) for s in shape), dtype, fh.tell()


def _latents_manifest(path: Path, zf: zipfile.ZipFile, info: RunInfo
                      ) -> dict[str, tuple[zipfile.ZipInfo, tuple[int, ...], np.dtype]]:
    """The known arrays' zip entries, shapes and dtypes, checked from the zip directory and
    the ``.npy`` headers (no array data is read)."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > MAX_LATENTS_BYTES:
        raise _error(path, f"latents.npz would unpack to {_mb(total)}, more than the "
                           f"{_mb(MAX_LATENTS_BYTES)} limit: refused without loading it")
    schema = _latent_schema(info)
    by_name = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
    manifest: dict[str, tuple[zipfile.ZipInfo, tuple[int, ...], np.dtype]] = {}
    n_rows: dict[str, int] = {}
    for name, (want, kind, required) in schema.items():
        entry = by_name.get(name)
        if entry is None:
            if required:
                raise _error(path, f"array {name!r} is missing")
            continue
        with zf.open(entry) as member:
            try:
                shape, dtype, header_len = _npy_header(member)
            except ValueError as exc:
                raise _error(path, f"not a readable .npz file: array {name!r} has no valid "
                                   f".npy header ({_first_line(exc)})") from exc
        if dtype.hasobject:
            raise _error(path, f"not a readable .npz file: array {name!r} holds Python "
                               f"objects (pickled data is never loaded)")
        expected_bytes = header_len + math.prod(shape) * dtype.itemsize
        if expected_bytes != entry.file_size:
            raise _error(path, f"not a readable .npz file (truncated or corrupt): array "
                               f"{name!r} declares {shape} of {dtype}, which does not fit "
                               f"its {entry.file_size:,} bytes")
        if kind == "float" and not (dtype.kind == "f" and dtype.itemsize in (4, 8)):
            raise _error(path, f"array {name!r} must hold float32 or float64 numbers, "
                               f"found {dtype}")
        if kind == "int" and dtype.kind not in "iu":
            raise _error(path, f"array {name!r} must hold integers, found {dtype}")
        if len(shape) != len(want) or any(w != "N" and s != w
                                           for s, w in zip(shape, want, strict=True)):
            shown = "(" + ", ".join(map(str, want)) + ("," if len(want) == 1 else "") + ")"
            raise _error(path, f"array {name!r} has shape {shape}, expected {shown} for "
                               f"this run ({info.config.latent_dim}-D latent space)")
        if want and want[0] == "N":
            n_rows[name] = shape[0]
        manifest[name] = (entry, shape, dtype)
    lengths = set(n_rows.values())
    if len(lengths) > 1:
        shown = ", ".join(f"{k} {v:,}" for k, v in n_rows.items())
        raise _error(path, f"arrays have different lengths ({shown}): they must all have one "
                           f"row per test image")
    n = n_rows["mu"]
    if not 1 <= n <= MAX_TEST_POINTS:
        raise _error(path, f"holds {n:,} test points; this app shows 1..{MAX_TEST_POINTS:,}")
    return manifest


def _check_latent_values(path: Path, arrays: dict[str, np.ndarray], info: RunInfo) -> None:
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise _error(path, f"array {name!r} holds non-finite values (inf or NaN)")
    labels = arrays["labels"]
    n_classes = len(info.class_names) or MAX_CLASSES
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise _error(path, f"array 'labels' holds label {bad}, outside 0..{n_classes - 1} "
                           f"({len(info.class_names)} classes in config.json)")


def read_latents(run_dir: str | os.PathLike, info: RunInfo | None = None
                 ) -> dict[str, np.ndarray]:
    """The known arrays of ``latents.npz`` (see :data:`LATENT_ARRAYS`), each checked
    against ``config.json`` (read when ``info`` is not given): shapes, dtypes, equal
    lengths from the headers before loading; then finite values and labels in range.
    Unknown arrays are never loaded (their size still counts towards the cap)."""
    from training.rundir import LATENTS_FILE

    run_dir = Path(run_dir)
    path = run_dir / LATENTS_FILE
    if not path.is_file():
        raise _error(path, "latents.npz is missing")
    if info is None:
        info = read_config(run_dir)
    arrays: dict[str, np.ndarray] = {}
    with _checked_npz(path) as zf:
        manifest = _latents_manifest(path, zf, info)
        for name, (entry, _shape, _dtype) in manifest.items():
            with zf.open(entry) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    _check_latent_values(path, arrays, info)
    arrays["labels"] = arrays["labels"].astype(np.int64, copy=False)
    return arrays


# --------------------------------------------------------------------------- images.npz

def _open_images(run_dir: Path, info: RunInfo | None, load: bool
                 ) -> tuple[tuple[int, ...], np.ndarray | None]:
    from training.rundir import IMAGES_FILE

    path = run_dir / IMAGES_FILE
    if not path.is_file():
        raise _error(path, "images.npz is missing (an imported run keeps its images there)")
    if info is None:
        info = read_config(run_dir)
    with _checked_npz(path) as zf:
        entry = next((i for i in zf.infolist() if i.filename == "x.npy"), None)
        if entry is None:
            raise _error(path, "array 'x' is missing")
        if entry.file_size > MAX_LATENTS_BYTES:
            raise _error(path, f"array 'x' would unpack to {_mb(entry.file_size)}, "
                               f"more than the {_mb(MAX_LATENTS_BYTES)} limit")
        with zf.open(entry) as member:
            shape, dtype, header_len = _npy_header(member)
        if dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
            raise _error(path, f"array 'x' must hold uint8 or float32, found {dtype}")
        if header_len + math.prod(shape) * dtype.itemsize != entry.file_size:
            raise _error(path, f"not a readable .npz file (truncated or corrupt): "
                               f"'x' declares {shape} of {dtype}")
        want = tuple(info.image_shape)
        if len(shape) != 4 or tuple(shape[1:]) != want or shape[0] < 1:
            raise _error(path, f"array 'x' has shape {shape}, expected (N, "
                               f"{', '.join(map(str, want))}) for this run")
        if not load:
            return shape, None
        with zf.open(entry) as member:
            x = np.lib.format.read_array(member, allow_pickle=False)
    if x.dtype == np.float32 and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise _error(path, "array 'x' holds values outside [0, 1] (or inf, NaN)")
    return shape, x


def images_header(run_dir: str | os.PathLike, info: RunInfo | None = None
                  ) -> tuple[int, ...]:
    """The shape of an imported run's ``images.npz`` array ``x``, from its header only."""
    return _open_images(Path(run_dir), info, load=False)[0]


def read_images(run_dir: str | os.PathLike, info: RunInfo | None = None) -> np.ndarray:
    """An imported run's ``images.npz`` array ``x`` (N, C, H, W) as stored (uint8 or
    float32), checked: size caps and the header against config.json before loading, then
    its values (float32 in [0, 1])."""
    _, x = _open_images(Path(run_dir), info, load=True)
    assert x is not None
    return x


# --------------------------------------------------------------------------- model.safetensors

_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
                         "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def weights_mismatch(expected: dict[str, tuple[int, ...]],
                     found: dict[str, tuple[int, ...]]) -> str | None:
    """The "missing / unexpected / wrong shapes" line for two name -> shape maps."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = [f"{k} {tuple(found[k])} != {tuple(v)}" for k, v in expected.items()
              if k in found and tuple(found[k]) != tuple(v)]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"unexpected {', '.join(_show(e) for e in extra[:5])}"
                     f"{' ...' if len(extra) > 5 else ''}")
    if shapes:
        parts.append(f"wrong shapes {'; '.join(shapes[:5])}")
    if not parts:
        return None
    return ("weights do not match the model described in config.json (another "
            f"architecture?): {'; '.join(parts)}")


def check_safetensors_header(path: Path, info: RunInfo | None) -> dict[str, str]:
    """Read and check only the header of a safetensors file: size caps, every tensor's
    dtype, shape and byte range (the data exactly covered), and, given ``info``, its
    names and shapes against :func:`weight_shapes`. Returns the header's metadata."""
    bad = "not a valid safetensors file (truncated or corrupt)"
    check_regular(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _error(path, "weights file is empty (0 bytes)")
            if size > MAX_WEIGHTS_BYTES:
                raise _error(path, f"model.safetensors is {_mb(size)}, more than the "
                                   f"{_mb(MAX_WEIGHTS_BYTES)} limit for this file: refused "
                                   f"without reading it")
            head = fh.read(8)
            if len(head) < 8:
                raise _error(path, f"{bad}: {len(head)} bytes")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > MAX_SAFETENSORS_HEADER_BYTES or 8 + header_len > size:
                raise _error(path, f"{bad}: its header claims {header_len:,} bytes")
            raw = fh.read(header_len)
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        header = parse_json(raw, path, "the safetensors header")
    except Exception as exc:
        from training.rundir import RunDirError

        problem = exc.problem if isinstance(exc, RunDirError) else _first_line(exc)
        raise _error(path, f"{bad}: {problem}") from exc
    if not isinstance(header, dict):
        raise _error(path, f"{bad}: the header is not an object")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in metadata.items())):
        raise _error(path, f"{bad}: __metadata__ is not an object of strings")
    data_len = size - 8 - header_len
    ranges: list[tuple[int, int]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as exc:
            raise _error(path, f"{bad}: tensor {_show(name)} has no dtype, shape and "
                               f"data_offsets") from exc
        if dtype not in _SAFETENSORS_ITEMSIZE or not isinstance(shape, list) or \
                not all(_int_in(s, 0, 2**40) for s in shape) or len(shape) > 8 or \
                not (_int_in(begin, 0, data_len) and _int_in(end, begin, data_len)) or \
                end - begin != math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype]:
            raise _error(path, f"{bad}: tensor {_show(name)} has an invalid dtype, shape or "
                               f"byte range")
        ranges.append((begin, end))
        shapes[name], dtypes[name] = tuple(shape), dtype
    ranges.sort()
    position = 0
    for begin, end in ranges:
        if begin != position:
            raise _error(path, f"{bad}: tensor data overlaps or leaves gaps")
        position = end
    if position != data_len:
        raise _error(path, f"{bad}: the header describes {position:,} bytes of tensor data, "
                           f"the file holds {data_len:,}")
    if info is not None:
        mismatch = weights_mismatch(weight_shapes(info.config, info.image_shape), shapes)
        if mismatch:
            raise _error(path, mismatch)
        wrong = sorted(n for n, d in dtypes.items() if d != "F32")
        if wrong:
            raise _error(path, f"weights must be float32; {wrong[0]} is {dtypes[wrong[0]]}")
    return metadata


# --------------------------------------------------------------------------- a whole run

def check_run(run_dir: str | os.PathLike) -> RunInfo:
    """Everything a page needs from a run, checked: ``config.json``, the header of
    ``model.safetensors`` against it, and ``latents.npz`` (shapes and values). Not the
    weights' checksum nor the ONNX files (checked when the run is opened), nor
    ``metrics.jsonl`` (without it a page still works: see :func:`read_metrics`).
    Cached by the files' stamps. Returns the RunInfo; RunDirError naming the file."""
    from training.rundir import CONFIG_FILE, LATENTS_FILE, WEIGHTS_FILE

    run_dir = Path(run_dir)
    info = read_config(run_dir)
    stamps = tuple(file_stamp(run_dir / name) for name in (CONFIG_FILE, WEIGHTS_FILE,
                                                           LATENTS_FILE))

    if info.is_imported:  # no weights: the ONNX files are the model (checked when opened)
        from training.rundir import IMAGES_FILE

        stamps = (*stamps, file_stamp(run_dir / IMAGES_FILE))

    def compute() -> bool:
        if info.is_imported:
            n = len(read_latents(run_dir, info)["mu"])
            images = images_header(run_dir, info)
            if images[0] != n:
                raise _error(run_dir / "images.npz", f"holds {images[0]:,} images, "
                                                     f"latents.npz {n:,} rows: one per image")
            return True
        weights = run_dir / WEIGHTS_FILE
        if stamps[1] is None:
            raise _error(weights, "weights file is missing")
        check_safetensors_header(weights, info)
        read_latents(run_dir, info)
        return True

    _cached("run", (str(run_dir), stamps), compute, 0)
    return info


# --------------------------------------------------------------------------- train_state.pt

def check_train_state(state: dict[str, Any], model: torch.nn.Module,
                      optimizer: Adam, path: Path, max_epoch: int,
                      device: torch.device | None = None) -> dict[str, Any]:
    """Check every entry of a loaded ``train_state.pt`` against the model and optimizer
    built from the run's config, *before* any of it is loaded into them or into torch's
    generators; return the entries to load (tensors copied, contiguous):
    ``epoch`` (an int in 0..``max_epoch``), ``model`` (names, shapes, dtypes, finite),
    ``optimizer`` (one state dict: as many parameter groups with the same parameters,
    Adam's ``step``, ``exp_avg`` and ``exp_avg_sq`` shaped like each parameter; the
    hyperparameters are the fresh optimizer's, so a tampered flag cannot reach torch),
    ``rng_torch`` / ``rng_shuffle`` (valid CPU generator states) and ``rng_cuda``.
    Raises RunDirError naming ``path``."""
    import torch

    def refuse(problem: str) -> RunDirError:
        return _error(path, problem)

    def tensor_problem(value: Any, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
        if not isinstance(value, torch.Tensor):
            return f"is {_type_name(value)}, not a tensor"
        if value.layout != torch.strided or value.is_quantized or value.is_meta:
            return "is not a plain dense tensor"
        if tuple(value.shape) != tuple(shape):
            return f"has shape {tuple(value.shape)}, expected {tuple(shape)}"
        if value.dtype != dtype:
            return f"has dtype {value.dtype}, expected {dtype}"
        return None

    def clone(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone(memory_format=torch.contiguous_format)

    if not isinstance(state, dict):
        raise refuse("not a training state written by this project")
    required = {"epoch", "model", "optimizer", "rng_torch", "rng_shuffle"}
    missing = sorted(required - set(state))
    extra = sorted(str(k) for k in set(state) - required - {"rng_cuda"})
    if missing or extra:
        raise refuse(f"not a training state written by this project: "
                     f"{'missing ' + ', '.join(missing) if missing else ''}"
                     f"{'; ' if missing and extra else ''}"
                     f"{'unexpected ' + _show(', '.join(extra)) if extra else ''}")
    epoch = state["epoch"]
    if not _is_int(epoch):
        raise refuse(f"epoch must be an integer, got {_show(epoch)} ({_type_name(epoch)})")
    if not 0 <= epoch <= max_epoch:
        raise refuse(f"epoch {epoch} is outside 0..{max_epoch} (the run's epochs)")

    # the model's tensors
    tensors = state["model"]
    if not isinstance(tensors, dict):
        raise refuse(f"'model' is {_type_name(tensors)}, not a dict of tensors")
    expected = model.state_dict()
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else () for k, v in
             tensors.items()}
    mismatch = weights_mismatch({k: tuple(v.shape) for k, v in expected.items()}, found)
    if mismatch:
        raise refuse(mismatch)
    clean_model = {}
    for name, want in expected.items():
        problem = tensor_problem(tensors[name], tuple(want.shape), want.dtype)
        if problem:
            raise refuse(f"model tensor {name} {problem}")
        if not torch.isfinite(tensors[name]).all():
            raise refuse(f"model tensor {name} holds non-finite values (inf or NaN)")
        clean_model[name] = clone(tensors[name])

    # the optimizer
    saved = state["optimizer"]
    fresh = optimizer.state_dict()
    if not (isinstance(saved, dict) and set(saved) == {"state", "param_groups"}):
        raise refuse("'optimizer' is not an optimizer state (state, param_groups)")
    groups, fresh_groups = saved["param_groups"], fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        count = len(groups) if isinstance(groups, list) else _show(groups)
        raise refuse(f"the optimizer has {count} parameter groups, the model's optimizer "
                     f"has {len(fresh_groups)}")
    for i, (group, fresh_group) in enumerate(zip(groups, fresh_groups, strict=True)):
        params = group.get("params") if isinstance(group, dict) else None
        if params != fresh_group["params"]:
            n = len(params) if isinstance(params, list) else _show(params)
            raise refuse(f"optimizer parameter group {i} lists {n} parameters, the model's "
                         f"has {len(fresh_group['params'])} (another architecture?)")
    # state_dict() numbers the parameters 0, 1, ... across the groups, in order
    index = dict(enumerate(p for group in optimizer.param_groups for p in group["params"]))
    per_param = saved["state"]
    if not isinstance(per_param, dict):
        raise refuse("optimizer 'state' is not a dict")
    clean_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, entry in per_param.items():
        if not _is_int(key) or key not in index:
            raise refuse(f"optimizer state for parameter {_show(key)}, the model has "
                         f"{len(index)} parameters")
        if not (isinstance(entry, dict) and set(entry) == {"step", "exp_avg", "exp_avg_sq"}):
            keys = sorted(map(str, entry)) if isinstance(entry, dict) else _type_name(entry)
            raise refuse(f"optimizer state of parameter {key} must hold step, exp_avg and "
                         f"exp_avg_sq (Adam), found {_show(keys, 80)}")
        param = index[key]
        for name in ("exp_avg", "exp_avg_sq"):
            problem = tensor_problem(entry[name], tuple(param.shape), param.dtype)
            if problem:
                raise refuse(f"optimizer {name} of parameter {key} {problem}")
            if not torch.isfinite(entry[name]).all():
                raise refuse(f"optimizer {name} of parameter {key} holds non-finite values")
        if (entry["exp_avg_sq"] < 0).any():
            raise refuse(f"optimizer exp_avg_sq of parameter {key} holds negative values")
        step = entry["step"]
        problem = tensor_problem(step, (), torch.float32)
        if problem:
            raise refuse(f"optimizer step of parameter {key} {problem}")
        value = float(step)
        if not (math.isfinite(value) and 0 <= value <= 2**40 and value == int(value)):
            raise refuse(f"optimizer step of parameter {key} is {value}, not a step count")
        clean_state[key] = {name: clone(entry[name]) for name in entry}
    clean_groups = [{**{k: v for k, v in fresh_group.items() if k != "params"},
                     "params": list(fresh_group["params"])} for fresh_group in fresh_groups]

    # the random-number generators: tried on scratch generators first
    clean: dict[str, Any] = {"epoch": epoch, "model": clean_model,
                             "optimizer": {"state": clean_state, "param_groups": clean_groups}}
    cpu_state = torch.get_rng_state()
    for name in ("rng_torch", "rng_shuffle"):
        problem = tensor_problem(state[name], tuple(cpu_state.shape), torch.uint8)
        if problem:
            raise refuse(f"{name} (a random-number generator state) {problem}")
        try:
            torch.Generator().set_state(clone(state[name]))
        except (RuntimeError, ValueError) as exc:
            raise refuse(f"{name} is not a valid random-number generator state: "
                         f"{_first_line(exc)}") from exc
        clean[name] = clone(state[name])
    if "rng_cuda" in state:
        value = state["rng_cuda"]
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8
                and value.dim() == 1 and value.numel() <= 1024):
            raise refuse("rng_cuda is not a CUDA random-number generator state")
        if device is not None and device.type == "cuda":
            want = torch.cuda.get_rng_state(device)
            problem = tensor_problem(value, tuple(want.shape), torch.uint8)
            if problem:
                raise refuse(f"rng_cuda (a random-number generator state) {problem}")
        clean["rng_cuda"] = clone(value)
    return clean
