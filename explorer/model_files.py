"""Which model file a browser may download, and its bytes: the one gate between the web
and the run folders.

The live-decoding component fetches a run's ``decoder.onnx`` from the app's own server by
a URL that names the run folder, the file and the file's SHA-256. A request is served only
when all of these hold, so no other file on the server can be read through it:

- the file is one of :data:`SERVABLE_FILES`, directly inside a run folder that is an
  immediate child of the runs folder (names checked against a strict pattern, no ``..``,
  no separators);
- it is a regular file (not a symbolic link) of at most :data:`MAX_MODEL_BYTES`;
- its content hashes to the SHA-256 in the URL (the page got that hash from the server
  itself, so a changed or half-written file is never served under an old name).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

MODEL_PREFIX = "/vae-model"  # the URL path under which app/routes.py serves model files
SERVABLE_FILES = frozenset({"decoder.onnx", "encoder.onnx"})
MAX_MODEL_BYTES = 256 * 1024 * 1024  # far above any model the app can show
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
_CACHE_ENTRIES = 16  # verified files kept in memory (one per run a class looks at)


class ModelFileError(LookupError):
    """The request names no servable file; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


def model_url(prefix: str, run_name: str, file: str, sha256: str) -> str:
    """The URL path under which :func:`read_model_file` serves ``file`` of a run."""
    return f"{prefix}/{run_name}/{sha256}/{file}"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def read_model_file(runs_dir: str | os.PathLike, run_name: str, sha256: str, file: str) -> bytes:
    """The bytes of ``runs_dir/run_name/file`` if the request passes every check above,
    else :class:`ModelFileError` (no detail about the server's folders in its message)."""
    if (file not in SERVABLE_FILES or not RUN_NAME.fullmatch(run_name)
            or not SHA256.fullmatch(sha256)):
        raise ModelFileError("no such model file")
    path = Path(runs_dir) / run_name / file
    try:
        info = os.lstat(path)
    except OSError:
        raise ModelFileError("no such model file") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError("no such model file")
    if info.st_size > MAX_MODEL_BYTES:
        raise ModelFileError("model file too large", status=413)
    key = (str(path), info.st_mtime_ns, info.st_size)
    with _cache_lock:
        data = _cache.get(key)
        if data is not None:
            _cache.move_to_end(key)
    if data is None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_MODEL_BYTES + 1)
        except OSError:
            raise ModelFileError("no such model file") from None
        if len(data) > MAX_MODEL_BYTES:
            raise ModelFileError("model file too large", status=413)
        with _cache_lock:
            _cache[key] = data
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelFileError("model file changed", status=409)
    return data
