"""Training as a film: each epoch's test-set latent means, stored so the explorer can replay
how the latent space formed.

After every epoch the trainer writes ``frames/epoch-NNNN.npy`` into the run directory: the
posterior means μ of every test image (the rows of ``latents.npz``, same order, so its
``labels`` colour them), shape ``(N, latent_dim)``, as float16. Half precision is plenty
for a picture (3 significant digits) and halves the size: 40 epochs of 10,000 points take
1.6 MB for a 2-D latent space and 12.8 MB for 16-D (10,000 x D x 2 bytes per epoch).

The file is written in the same all-or-nothing group as the epoch's other files, so a
frame exists exactly for the epochs whose checkpoint exists. No 2-D projection is stored:
a latent space of more than two dimensions is shown through one PCA fitted once, on the
newest frame, and applied to every frame (``explorer/film.py``), so frames do not jump
between epochs.

:func:`read_frames` treats the folder as untrusted: file names matched exactly, each file a
regular file whose ``.npy`` header (read before any data) declares exactly ``(N, D)`` of
float16/float32 and whose size fits it, finite values, at most :data:`MAX_FRAMES` frames
loaded (evenly spread over the run when there are more).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.rundir import FRAMES_DIR, atomic_write_bytes

FRAME_NAME = "epoch-{epoch:04d}.npy"
_FRAME_RE = re.compile(r"epoch-(\d{4,5})\.npy")
FRAME_DTYPE = np.float16
FLOAT16_MAX = 65504.0  # larger means would become inf in float16: clipped (never in practice)
MAX_FRAMES = 200  # frames loaded for one film; a longer run shows every k-th epoch


def frame_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(run_dir) / FRAMES_DIR / FRAME_NAME.format(epoch=epoch)


def frame_bytes(mu: np.ndarray) -> bytes:
    """The ``.npy`` bytes of one frame: ``mu`` (N, D) as float16."""
    import io

    frame = np.clip(np.asarray(mu, dtype=np.float32), -FLOAT16_MAX, FLOAT16_MAX)  # (N, D)
    buffer = io.BytesIO()
    np.save(buffer, frame.astype(FRAME_DTYPE), allow_pickle=False)
    return buffer.getvalue()


def write_frame(run_dir: str | os.PathLike, epoch: int, mu: np.ndarray) -> None:
    """Write epoch ``epoch``'s frame atomically (inside the trainer's all-or-nothing group
    it lands together with the epoch's checkpoint)."""
    atomic_write_bytes(frame_path(run_dir, epoch), frame_bytes(mu))


@dataclass
class Frames:
    """The frames of one run: ``epochs`` (E,) ascending, ``mu`` (E, N, D) float32."""
    epochs: np.ndarray
    mu: np.ndarray
    total_epochs: int  # frames on disk (``epochs`` holds at most MAX_FRAMES of them)

    @property
    def shown_every(self) -> int:
        """1 when every stored epoch is loaded, else roughly the step between frames."""
        return max(1, round(self.total_epochs / max(1, len(self.epochs))))


def stored_epochs(run_dir: str | os.PathLike, max_epoch: int) -> list[int]:
    """The epochs 1..max_epoch that have a frame file (names matched exactly; anything else
    in the folder is ignored)."""
    folder = Path(run_dir) / FRAMES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    epochs = []
    try:
        with os.scandir(folder) as entries:
            for i, entry in enumerate(entries):
                if i > 4 * max_epoch + 100:  # a folder stuffed with other files
                    break
                match = _FRAME_RE.fullmatch(entry.name)
                if match and 1 <= int(match.group(1)) <= max_epoch:
                    epochs.append(int(match.group(1)))
    except OSError:
        return []
    return sorted(set(epochs))


def spread(epochs: list[int], limit: int = MAX_FRAMES) -> list[int]:
    """At most ``limit`` of ``epochs``, evenly spread, always keeping the first and last."""
    if len(epochs) <= limit:
        return epochs
    picks = np.linspace(0, len(epochs) - 1, limit).round().astype(int)
    return [epochs[i] for i in sorted(set(picks.tolist()))]


def _read_frame(path: Path, n_points: int, latent_dim: int) -> np.ndarray:
    from training.validate import _error, _npy_header, check_regular

    check_regular(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                shape, dtype, header_len = _npy_header(fh)
            except ValueError as exc:
                raise _error(path, f"{path.name} is not a readable .npy file: {exc}") from exc
            if dtype.hasobject or dtype.kind != "f" or dtype.itemsize not in (2, 4):
                raise _error(path, f"{path.name} must hold float16 or float32 numbers, "
                                   f"found {dtype}")
            if shape != (n_points, latent_dim):
                raise _error(path, f"{path.name} has shape {shape}, expected "
                                   f"({n_points}, {latent_dim}): one row per test point of "
                                   f"latents.npz, one column per latent dimension")
            if size != header_len + n_points * latent_dim * dtype.itemsize:
                raise _error(path, f"{path.name} is truncated or has trailing data")
            data = fh.read(n_points * latent_dim * dtype.itemsize)
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from exc
    frame = np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float32)  # (N, D)
    if not np.isfinite(frame).all():
        raise _error(path, f"{path.name} holds non-finite values (inf or NaN)")
    return frame


def read_frames(run_dir: str | os.PathLike, n_points: int, latent_dim: int,
                max_epoch: int) -> Frames | None:
    """The run's stored frames (None when it has none), each checked as described in the
    module docstring; a bad file raises :class:`training.rundir.RunDirError` naming it."""
    epochs = stored_epochs(run_dir, max_epoch)
    if not epochs:
        return None
    chosen = spread(epochs)
    mu = np.stack([_read_frame(frame_path(run_dir, e), n_points, latent_dim)
                   for e in chosen])  # (E, N, D)
    return Frames(epochs=np.asarray(chosen, dtype=np.int64), mu=mu, total_epochs=len(epochs))
