"""A trained run's model through ONNX Runtime: the app encodes, decodes and scores without
PyTorch (``import torch`` would eat most of the main page's cold-start budget).

:func:`load_onnx_model` opens a run's ``encoder.onnx`` and ``decoder.onnx`` (written by
``training/export.py``) after checking that they are intact and were exported from the
run's current ``model.safetensors`` (``onnx.json`` records both SHA-256s), and that their
shapes are those ``config.json`` describes. Before that, everything is validated as
``training/validate.py`` says: config.json's schema and limits, the weights' header
against the model the config describes (names, shapes, float32, a 0-d ``log_sigma``), their
checksum and finiteness, and the size caps of ``onnx.json`` and the ONNX files, all checked
before the files are parsed. :class:`OnnxModel` has the public surface of
``explorer/npmodel.py``'s ``NumpyModel``; its log sigma^2 is clamped inside the graph
exactly as in training. The ELBO terms in NumPy live in ``explorer/nploss.py``.

Sessions run on the CPU with one intra-op and one inter-op thread: a web server holds
many sessions, and these graphs are far too small to gain from a thread pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from explorer.nploss import mean_image, reconstruction_nll
from training.rundir import (
    ONNX_DECODER_FILE,
    ONNX_ENCODER_FILE,
    WEIGHTS_FILE,
    RunDirError,
    RunInfo,
    load_weights,
    read_config,
    read_onnx,
)


@dataclass(eq=False)
class OnnxModel:
    """The encoder and decoder of :class:`training.model.VAE` as ONNX Runtime sessions."""

    info: RunInfo
    encoder: ort.InferenceSession  # x (B, C, H, W) -> mu (B, D) [, logvar (B, D)]
    decoder: ort.InferenceSession  # z (B, D) -> logits (B, C, H, W)
    log_sigma: float  # Gaussian likelihood's pixel log-std (unused for Bernoulli)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.info.image_shape

    @property
    def latent_dim(self) -> int:
        return self.info.config.latent_dim

    @property
    def is_vae(self) -> bool:
        return self.info.config.model == "vae"

    @property
    def arch(self) -> str:
        return self.info.config.arch

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """x (B, C, H, W) -> mu (B, D), logvar (B, D) clamped as in training (None for an AE)."""
        batch = np.ascontiguousarray(x, dtype=np.float32)  # (B, C, H, W)
        outputs = self.encoder.run(None, {"x": batch})
        mu = outputs[0]  # (B, D)
        logvar = outputs[1] if len(outputs) > 1 else None  # (B, D)
        return mu, logvar

    @property
    def decoder_output(self) -> str:
        """What :meth:`decode` returns: ``logits`` (runs trained here), ``probabilities``
        or ``mean`` (an imported run's decoder, ``explorer/adopt.py``)."""
        return self.info.decoder_output

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z (B, D) -> the decoder's output (B, C, H, W): logits unless
        :attr:`decoder_output` says otherwise."""
        codes = np.ascontiguousarray(z, dtype=np.float32)  # (B, D)
        return self.decoder.run(None, {"z": codes})[0]  # (B, C, H, W)

    def mean_image(self, output: np.ndarray) -> np.ndarray:
        """The mean image(s) in [0, 1] from :meth:`decode`'s output (same shape)."""
        return mean_image(output, self.decoder_output)

    def reconstruction_nll(self, logits: np.ndarray, x: np.ndarray) -> np.ndarray:
        """-log p(x|z) per sample in nats under the run's likelihood, from :meth:`decode`'s
        output. Returns (B,)."""
        return reconstruction_nll(logits, x, self.info.config.likelihood, self.log_sigma,
                                  self.decoder_output)


def _session(graph: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no per-session notices in the app's log
    return ort.InferenceSession(graph, sess_options=options,
                                providers=["CPUExecutionProvider"])


def _check_shapes(info: RunInfo, encoder: ort.InferenceSession,
                  decoder: ort.InferenceSession, run_dir: Path) -> None:
    """The graphs' inputs and outputs are those config.json describes (the batch axis free)."""
    image, latent = list(info.image_shape), [info.config.latent_dim]
    expected = {
        "encoder inputs": ([("x", image)], encoder.get_inputs()),
        "encoder outputs": ([("mu", latent)] + ([("logvar", latent)]
                                                if info.config.model == "vae" else []),
                            encoder.get_outputs()),
        "decoder inputs": ([("z", latent)], decoder.get_inputs()),
        "decoder outputs": ([(info.decoder_output, image)], decoder.get_outputs()),
    }
    for role, (want, have) in expected.items():
        found = [(arg.name, list(arg.shape[1:])) for arg in have]
        if found != want:
            raise RunDirError(run_dir, f"the ONNX files do not match the model described in "
                                       f"config.json (another architecture?): {role} are "
                                       f"{found}, expected {want}; re-export with "
                                       f"`python -m training.export {run_dir}`")


def load_onnx_model(run_dir: str | os.PathLike) -> OnnxModel:
    """Open a run for inference: ``config.json``, the verified ``model.safetensors`` (for its
    SHA-256 and log sigma) and the ONNX files exported from exactly those weights.
    Raises :class:`training.rundir.RunDirError` with a one-line message naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(run_dir, "run directory does not exist")
    info = read_config(run_dir)
    if info.imported is not None:  # no weights: the ONNX files are the model
        model_sha = str(info.imported["model_sha256"])
        log_sigma = math.log(info.config.gaussian_sigma)
    else:
        # checked against the config (every name and shape, log_sigma 0-d) before it is read
        tensors, meta = load_weights(run_dir / WEIGHTS_FILE, framework="np", info=info)
        model_sha = meta["weights_sha256"]
        log_sigma = float(tensors["log_sigma"].reshape(()))
    encoder_graph, decoder_graph = read_onnx(run_dir, model_sha)
    try:
        encoder, decoder = _session(encoder_graph), _session(decoder_graph)
    except Exception as exc:  # onnxruntime raises its own error types for invalid graphs
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunDirError(run_dir, f"{ONNX_ENCODER_FILE}/{ONNX_DECODER_FILE} cannot be opened by "
                                   f"ONNX Runtime: {first_line}") from exc
    _check_shapes(info, encoder, decoder, run_dir)
    return OnnxModel(info=info, encoder=encoder, decoder=decoder, log_sigma=log_sigma)
