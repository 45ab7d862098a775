"""Explore your own VAE: turn any trained encoder/decoder plus a set of images into a run
directory that every page of the app opens like a run trained here.

From PyTorch (a notebook)::

    from explorer.adopt import adopt
    adopt(model, images, labels=None, out="runs/mine", likelihood="bernoulli",
          decoder_output="logits")

``model`` is any ``nn.Module`` with ``encode(x) -> (mu, logvar)`` and ``decode(z)`` (or pass
``encoder=`` and ``decoder=`` callables); ``images`` (N, C, H, W) in [0, 1]. Both halves are
exported to self-contained ONNX files (``torch.onnx.export(dynamo=True)``, as
``training/export.py`` does), the images are encoded with those files (the run's truth is
what the app will run), and the folder gets ``config.json`` (with an ``imported`` section:
source, ``decoder_output``, the model's SHA-256), ``encoder.onnx``, ``decoder.onnx``,
``onnx.json``, ``latents.npz`` (mu, logvar, labels, per-sample recon and KL from one
seeded posterior sample, PCA, t-SNE when the latent size is above 2) and ``images.npz``.

From files: ``python -m explorer.adopt --encoder e.onnx --decoder d.onnx --images x.npy
--out runs/mine`` (or the ``vae-adopt`` console script); ``--images`` takes a ``.npy`` /
``.npz`` array, an image folder (subfolders are classes) or one of our data set names
(its test split). ``--pythae DIR`` reads a saved pythae VAE with its built-in MLP
architecture (``model_config.json`` + ``model.pt``, loaded with ``weights_only=True``);
custom pythae architectures are cloudpickle files, which are refused (loading them runs
code).

Decoder outputs (``decoder_output``): ``logits`` (sigmoid gives the mean image),
``probabilities`` (the Bernoulli means) or ``mean`` (a Gaussian's mean, with ``sigma``, the
pixel standard deviation). Every ELBO term is nats per sample, as everywhere.

Without labels the map is coloured by ``attribute`` (one number per image) when given,
else by reconstruction error, in bins whose names say so (the legend). Every problem is an
:class:`AdoptError` (one line) raised before anything is written; a half-written folder is
removed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import shutil
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import rundir, validate
from training.config import DATASETS, LIKELIHOODS, MAX_LATENT_DIM, TrainConfig

KINDS = ("vae", "ae")
BATCH = 256
SEED = 0  # the per-sample recon term's posterior sample
COLOUR_BINS = 5
MAX_ATTRIBUTE_CLASSES = 12  # an attribute with at most this many integer values: classes
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class AdoptError(ValueError):
    """Why a model or its images cannot become a run (one line; nothing was written)."""


# --------------------------------------------------------------------------- images

def as_images(images: Any, what: str = "images") -> np.ndarray:
    """Images as float32 (N, C, H, W) in [0, 1]: accepts (N, H, W), (N, H, W, C) with C in
    {1, 3}, uint8 (divided by 255), numpy arrays or torch tensors."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype == object or x.dtype.kind not in "fiub":
        raise AdoptError(f"{what} must be a numeric array, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise AdoptError(f"{what} must be shaped (N, C, H, W) with 1 or 3 channels, got "
                         f"{tuple(x.shape)}")
    if len(x) == 0:
        raise AdoptError(f"{what}: the image set is empty; give at least one image")
    if len(x) > validate.MAX_TEST_POINTS:
        raise AdoptError(f"{what}: {len(x):,} images, the explorer shows at most "
                         f"{validate.MAX_TEST_POINTS:,}; pass a subset")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise AdoptError(f"{what} hold NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise AdoptError(f"{what} must be in [0, 1] (got {x.min():g}..{x.max():g}); "
                         f"divide 8-bit pixels by 255")
    return x


def load_image_source(source: str, image_shape: tuple[int, int, int] | None = None,
                      data_dir: str = "data"
                      ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, str]:
    """(images, labels or None, class names or None, a name) from a ``.npy``/``.npz`` file,
    an image folder (resized to ``image_shape``; subfolders are classes) or a data set
    name (its test split)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, image_shape) + (f"folder:{path.name}",)
    if path.suffix == ".npy" and path.is_file():
        return as_images(np.load(path, allow_pickle=False), str(path)), None, None, path.stem
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            key = next((k for k in ("x", "images", "X") if k in names), names[0] if names else None)
            if key is None:
                raise AdoptError(f"{path}: holds no arrays")
            x = as_images(npz[key], f"{path}:{key}")
            label_key = next((k for k in ("labels", "y") if k in names), None)
            labels = None if label_key is None else np.asarray(npz[label_key])
        return x, labels, None, path.stem
    if source in DATASETS:
        from training.data import DataError, load_dataset

        try:
            data = load_dataset(source, data_dir, False, numpy=True)
        except DataError as exc:
            raise AdoptError(str(exc)) from exc
        return as_images(data.test_x, source), np.asarray(data.test_y), \
            list(data.class_names), source
    raise AdoptError(f"--images {source}: not a .npy/.npz file, an image folder, or one of "
                     f"the data sets {', '.join(DATASETS)}")


def _load_folder(root: Path, image_shape: tuple[int, int, int] | None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AdoptError(f"{root}: the image set is empty (no {', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "."
               for p in files]
    names = sorted(set(classes))
    arrays = []
    for file in files:
        try:
            with Image.open(file) as img:
                if image_shape is None:
                    image_shape = (1 if img.mode in ("L", "1", "P") else 3, img.height,
                                   img.width)
                channels, height, width = image_shape
                resized = img.convert("L" if channels == 1 else "RGB").resize(
                    (width, height), Image.Resampling.BILINEAR)
                arr = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        except (UnidentifiedImageError, OSError) as exc:
            raise AdoptError(f"cannot read image {file}: {exc}") from exc
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    labels = np.array([names.index(c) for c in classes], dtype=np.int64)
    return as_images(np.stack(arrays), str(root)), labels, names


# --------------------------------------------------------------------------- colours

def colour_classes(labels: Any, class_names: Sequence[str] | None, attribute: Any,
                   attribute_name: str, recon: np.ndarray
                   ) -> tuple[np.ndarray, list[str], str]:
    """(labels (N,), class names, what colours the map): the labels when given, else the
    attribute (its values as classes when few integers, else quantile bins), else the
    reconstruction error in quantile bins. The names say which, so the legend does."""
    n = len(recon)
    if labels is not None:
        y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
        if y.shape != (n,) or y.dtype.kind not in "iub" or (n and y.min() < 0):
            raise AdoptError(f"labels must be {n} non-negative integers, one per image, got "
                             f"shape {y.shape} of {y.dtype}")
        count = int(y.max()) + 1
        names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
        if count > len(names) or len(names) > validate.MAX_CLASSES:
            raise AdoptError(f"{max(count, len(names))} classes: the explorer shows at most "
                             f"{validate.MAX_CLASSES} (and each label needs a class name)")
        return y.astype(np.int64), [str(s)[:validate.MAX_CLASS_NAME] for s in names], "labels"
    if attribute is not None:
        values = np.asarray(attribute.detach().cpu().numpy() if hasattr(attribute, "detach")
                            else attribute, dtype=np.float64)
        if values.shape != (n,) or not np.isfinite(values).all():
            raise AdoptError(f"attribute must be {n} finite numbers, one per image, got "
                             f"shape {values.shape}")
        unique = np.unique(values)
        if len(unique) <= MAX_ATTRIBUTE_CLASSES and np.all(unique == np.round(unique)):
            y = np.searchsorted(unique, values)
            return y, [f"{attribute_name} = {v:g}" for v in unique], f"attribute {attribute_name}"
        return (*_bins(values, attribute_name, ""), f"attribute {attribute_name}")
    return (*_bins(recon, "reconstruction error", " nats"), "reconstruction error")


def _bins(values: np.ndarray, name: str, unit: str) -> tuple[np.ndarray, list[str]]:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, COLOUR_BINS + 1)))
    if len(edges) < 2:
        return np.zeros(len(values), np.int64), [f"{name} {values[0]:.3g}{unit}"]
    y = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    names = [f"{name} {lo:.3g}–{hi:.3g}{unit}" for lo, hi in zip(edges[:-1], edges[1:],
                                                                  strict=True)]
    return y.astype(np.int64), names


# --------------------------------------------------------------------------- ONNX

def _rename(model: Any, mapping: dict[str, str]) -> None:
    """Rename graph inputs/outputs (and every reference to them) in an ONNX model."""
    graph = model.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    for old, new in mapping.items():
        if old != new and new in taken:
            raise AdoptError(f"the ONNX graph already has a tensor named {new!r} besides its "
                             f"input/output {old!r}; rename it before importing")
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def onnx_file(path: str | Path, role: str, kind: str, decoder_output: str) -> bytes:
    """A user's ONNX encoder or decoder as self-contained bytes, its input and outputs
    renamed to the names this project uses (x -> mu[, logvar]; z -> ``decoder_output``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise AdoptError(f"--{role} {path}: no such file")
    try:
        model = onnx.load(str(path))  # external data, if any, is read into the model
    except Exception as exc:
        raise AdoptError(f"--{role} {path}: not a readable ONNX file: "
                         f"{_first_line(exc)}") from exc
    inputs = [i.name for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    outputs = [o.name for o in model.graph.output]
    if len(inputs) != 1:
        raise AdoptError(f"--{role} {path}: the graph takes {len(inputs)} inputs; it must "
                         f"take one ({'the images' if role == 'encoder' else 'z'})")
    if role == "encoder":
        want = ["mu", "logvar"] if kind == "vae" else ["mu"]
        if len(outputs) != len(want):
            raise AdoptError(f"--encoder {path}: the encoder returns {len(outputs)} "
                             f"tensor(s); a {'VAE' if kind == 'vae' else 'plain autoencoder'}"
                             f"'s encoder must return {' and '.join(want)}"
                             + (" (use --model ae for a plain autoencoder)"
                                if kind == "vae" and len(outputs) == 1 else ""))
        mapping = {inputs[0]: "x", **dict(zip(outputs, want, strict=True))}
    else:
        if len(outputs) != 1:
            raise AdoptError(f"--decoder {path}: the decoder returns {len(outputs)} tensors; "
                             f"it must return one (the {decoder_output})")
        mapping = {inputs[0]: "z", outputs[0]: decoder_output}
    _rename(model, mapping)
    data = model.SerializeToString()
    if len(data) > validate.MAX_ONNX_BYTES:
        raise AdoptError(f"--{role} {path}: {len(data):,} bytes, more than the "
                         f"{validate.MAX_ONNX_BYTES:,} a run may hold")
    return data


def export_halves(encode: Callable, decode: Callable, owner: Any, image_shape: Sequence[int],
                  latent_dim: int, kind: str, decoder_output: str) -> tuple[bytes, bytes]:
    """Export ``encode``/``decode`` (with ``owner``, the module(s) holding their weights) as
    two self-contained ONNX graphs, the way ``training/export.py`` exports our models."""
    import onnx
    import torch
    from onnx.utils import Extractor

    from training.export import SAMPLE_BATCH, _name_batch_axis

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.owners = torch.nn.ModuleList(m for m in owner if isinstance(m, torch.nn.Module))

        def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
            mu, logvar = _posterior(encode(x), kind)
            out = decode(z)
            return (mu, out) if logvar is None else (mu, logvar, out)

    encoder_outputs = ["mu", "logvar"] if kind == "vae" else ["mu"]
    batch_x, batch_z = torch.export.Dim("batch_x"), torch.export.Dim("batch_z")
    sample = (torch.zeros(SAMPLE_BATCH, *image_shape), torch.zeros(SAMPLE_BATCH, latent_dim))
    try:
        with torch.random.fork_rng(devices=[]):
            program = torch.onnx.export(
                Both().eval(), sample, dynamo=True,
                input_names=["x", "z"], output_names=[*encoder_outputs, decoder_output],
                dynamic_shapes=({0: batch_x}, {0: batch_z}),
                external_data=False, optimize=True, verbose=False)
    except AdoptError:
        raise
    except Exception as exc:
        raise AdoptError(f"ONNX export of the model failed ({type(exc).__name__}: "
                         f"{_first_line(exc)}); export encoder.onnx and decoder.onnx yourself "
                         f"and use `python -m explorer.adopt --encoder ... --decoder ...`"
                         ) from exc
    assert program is not None
    both = program.model_proto
    extractor = Extractor(both)
    graphs = [extractor.extract_model(["x"], encoder_outputs),
              extractor.extract_model(["z"], [decoder_output])]
    serialized = []
    for graph in graphs:
        _name_batch_axis(graph, {"batch_x", "batch_z"})
        graph.doc_string = "VAE Latent Explorer: imported by explorer/adopt.py"
        onnx.checker.check_model(graph, full_check=True)
        serialized.append(graph.SerializeToString())
    return serialized[0], serialized[1]


def _posterior(result: Any, kind: str) -> tuple[Any, Any]:
    """(mu, logvar or None) from what an encoder returned; AdoptError when it is not that."""
    import torch

    if kind == "ae":
        if isinstance(result, torch.Tensor):
            return result, None
        if isinstance(result, (tuple, list)) and len(result) in (1, 2) \
                and isinstance(result[0], torch.Tensor):
            return result[0], None
    elif isinstance(result, (tuple, list)) and len(result) == 2 \
            and all(isinstance(t, torch.Tensor) for t in result):
        return result[0], result[1]
    if kind == "vae" and isinstance(result, torch.Tensor):
        raise AdoptError("the encoder returns one tensor; a VAE's encode(x) must return "
                         "(mu, logvar) (pass kind='ae' for a plain autoencoder)")
    raise AdoptError(f"the encoder returns {type(result).__name__}"
                     f"{f' of {len(result)}' if isinstance(result, (tuple, list)) else ''}; "
                     f"encode(x) must return "
                     f"{'(mu, logvar)' if kind == 'vae' else 'mu'} as tensors")


# --------------------------------------------------------------------------- the run

def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise AdoptError(f"{out} exists and is not a folder")
    if (out / rundir.CONFIG_FILE).exists():
        raise AdoptError(f"{out} already holds a run (config.json); choose a new folder "
                         f"or delete it first")
    if out.is_dir() and any(out.iterdir()):
        raise AdoptError(f"{out} is not empty; choose a new folder for the run")


def _check_settings(kind: str, likelihood: str, decoder_output: str, sigma: float) -> None:
    if kind not in KINDS:
        raise AdoptError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if likelihood not in LIKELIHOODS:
        raise AdoptError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got "
                         f"{likelihood!r}")
    if decoder_output not in rundir.DECODER_OUTPUTS:
        raise AdoptError(f"decoder_output must be one of {', '.join(rundir.DECODER_OUTPUTS)}, "
                         f"got {decoder_output!r}")
    if decoder_output == "mean" and likelihood != "gaussian":
        raise AdoptError("decoder_output='mean' is a Gaussian's mean: use "
                         "likelihood='gaussian' (a Bernoulli decoder's mean is "
                         "decoder_output='probabilities')")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise AdoptError(f"sigma must be a positive number, got {sigma!r}")


def _session(graph: bytes, role: str) -> Any:
    from explorer.onnx_model import _session as make_session

    try:
        return make_session(graph)
    except Exception as exc:
        raise AdoptError(f"the {role} cannot be opened by ONNX Runtime: "
                         f"{_first_line(exc)}") from exc


def _evaluate(encoder: Any, decoder: Any, x: np.ndarray, kind: str, likelihood: str,
              decoder_output: str, sigma: float) -> dict[str, np.ndarray]:
    """Encode every image, decode one seeded posterior sample each: mu, logvar, recon, kl.
    AdoptError for shapes that do not match the images, NaN or out-of-range outputs."""
    from explorer.nploss import kl_per_dim, reconstruction_nll

    rng = np.random.default_rng(SEED)
    mus, logvars, recons = [], [], []
    for start in range(0, len(x), BATCH):
        xb = x[start:start + BATCH]
        try:
            outputs = encoder.run(None, {"x": xb})
        except Exception as exc:
            raise AdoptError(f"the encoder cannot take images of shape "
                             f"{tuple(x.shape[1:])} (batches of them): "
                             f"{_first_line(exc)}") from exc
        mu = outputs[0]
        logvar = outputs[1] if kind == "vae" else None
        for name, value in (("mu", mu), ("logvar", logvar)):
            if value is None:
                continue
            if value.ndim != 2 or value.shape[0] != len(xb):
                raise AdoptError(f"the encoder's {name} has shape {tuple(value.shape)} for "
                                 f"{len(xb)} images; it must be (N, latent size)")
            if not np.isfinite(value).all():
                bad = start + int(np.argwhere(~np.isfinite(value))[0][0])
                raise AdoptError(f"the encoder returns NaN or infinite {name} (image {bad})")
        if logvar is not None and logvar.shape != mu.shape:
            raise AdoptError(f"the encoder's mu {tuple(mu.shape)} and logvar "
                             f"{tuple(logvar.shape)} differ in shape")
        if not 1 <= mu.shape[1] <= MAX_LATENT_DIM:
            raise AdoptError(f"latent size {mu.shape[1]}: the explorer shows 1.."
                             f"{MAX_LATENT_DIM} dimensions")
        z = mu if logvar is None else (
            mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape).astype(np.float32))
        try:
            out = decoder.run(None, {"z": np.ascontiguousarray(z, dtype=np.float32)})[0]
        except Exception as exc:
            raise AdoptError(f"the decoder cannot take codes of shape (N, {mu.shape[1]}) "
                             f"(the encoder's): {_first_line(exc)}") from exc
        if tuple(out.shape) != tuple(xb.shape):
            raise AdoptError(f"the decoder returns shape {tuple(out.shape)} for "
                             f"{len(xb)} images of shape {tuple(xb.shape[1:])}: its output "
                             f"must have the images' shape (N, C, H, W)")
        if not np.isfinite(out).all():
            raise AdoptError("the decoder returns NaN or infinite values")
        if decoder_output == "probabilities" and (out.min() < -1e-6 or out.max() > 1 + 1e-6):
            raise AdoptError(f"decoder_output='probabilities' but the decoder returns values "
                             f"in {out.min():.3g}..{out.max():.3g}, outside [0, 1]: are they "
                             f"logits? (decoder_output='logits')")
        mus.append(mu)
        if logvar is not None:
            logvars.append(logvar)
        recons.append(reconstruction_nll(out, xb, likelihood, math.log(sigma), decoder_output))
    mu_all = np.concatenate(mus).astype(np.float32)
    result = {"mu": mu_all, "recon": np.concatenate(recons).astype(np.float32)}
    if logvars:
        result["logvar"] = np.concatenate(logvars).astype(np.float32)
        result["kl"] = kl_per_dim(mu_all, result["logvar"]).sum(axis=1).astype(np.float32)
    else:
        result["kl"] = np.zeros(len(mu_all), np.float32)
    if not (np.isfinite(result["recon"]).all() and np.isfinite(result["kl"]).all()):
        raise AdoptError("the ELBO terms are not finite (NaN or inf): check likelihood, "
                         "decoder_output and sigma")
    return result


def adopt_onnx(encoder_graph: bytes, decoder_graph: bytes, images: Any, out: str | Path, *,
               labels: Any = None, class_names: Sequence[str] | None = None,
               attribute: Any = None, attribute_name: str = "attribute",
               likelihood: str = "bernoulli", decoder_output: str = "logits",
               sigma: float = 0.1, kind: str = "vae", source: str = "onnx",
               dataset: str = "imported", tsne: bool = True) -> Path:
    """Write a run into ``out`` from serialized ONNX graphs whose input and outputs are
    named as this project names them (``x`` -> ``mu``[, ``logvar``]; ``z`` ->
    ``decoder_output``). Returns the run folder. AdoptError, nothing written, for any
    problem."""
    out = Path(out)
    _check_settings(kind, likelihood, decoder_output, sigma)
    _check_out(out)
    x = as_images(images)
    encoder, decoder = _session(encoder_graph, "encoder"), _session(decoder_graph, "decoder")
    names = [i.name for i in encoder.get_inputs()], [o.name for o in encoder.get_outputs()]
    if names[0] != ["x"] or names[1][:1] != ["mu"]:
        raise AdoptError(f"the encoder's input/outputs are {names}; expected x -> mu, logvar")
    if kind == "vae" and len(names[1]) != 2:
        raise AdoptError("the encoder returns one tensor; a VAE's encoder must return "
                         "(mu, logvar) (kind='ae' for a plain autoencoder)")
    terms = _evaluate(encoder, decoder, x, kind, likelihood, decoder_output, sigma)
    y, names_, colour_by = colour_classes(labels, class_names, attribute, attribute_name,
                                          terms["recon"])
    from training.projection import fit_pca
    from training.projection import tsne as run_tsne

    mu = terms["mu"]
    latent_dim = mu.shape[1]
    pca, pca_mean, pca_components = fit_pca(mu)
    arrays: dict[str, np.ndarray] = {**terms, "labels": y, "pca": pca, "pca_mean": pca_mean,
                                     "pca_components": pca_components}
    config = TrainConfig(dataset=dataset[:200] or "imported", model=kind,
                         latent_dim=latent_dim, likelihood=likelihood,
                         gaussian_sigma=float(sigma), epochs=1, tsne=tsne)
    if tsne and latent_dim > 2 and len(mu) >= 5:
        arrays["tsne"] = run_tsne(mu, min(config.tsne_perplexity, (len(mu) - 1) / 3), seed=0)
    model_sha = hashlib.sha256(hashlib.sha256(encoder_graph).digest()
                               + hashlib.sha256(decoder_graph).digest()).hexdigest()
    imported = {"source": source[:200], "decoder_output": decoder_output,
                "model_sha256": model_sha, "colour_by": colour_by}
    try:
        config.validate(imported=True)
    except ValueError as exc:
        raise AdoptError(str(exc)) from exc
    info = rundir.RunInfo(config=config, image_shape=(x.shape[1], x.shape[2], x.shape[3]),
                          class_names=names_, num_test=len(x), status="complete",
                          created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), versions=_versions(),
                          argv=rundir.command_line(), imported=imported)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with rundir.all_or_nothing():
            rundir.write_onnx(out, encoder_graph, decoder_graph, model_sha,
                              {"exporter": source})
            rundir.write_latents(out, arrays)
            rundir.write_images(out, x)
            rundir.write_config(out, info)
        from explorer.onnx_model import load_onnx_model

        validate.check_run(out)
        load_onnx_model(out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for name in (*rundir.ONNX_FILES, rundir.LATENTS_FILE, rundir.IMAGES_FILE,
                         rundir.CONFIG_FILE):
                with contextlib.suppress(OSError):
                    (out / name).unlink()
        raise
    return out


def _versions() -> dict[str, str]:
    import platform

    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__}


def adopt(model: Any = None, images: Any = None, labels: Any = None,
          out: str | Path = "runs/mine", *, likelihood: str = "bernoulli",
          decoder_output: str = "logits", sigma: float = 0.1, kind: str = "vae",
          encoder: Callable | None = None, decoder: Callable | None = None,
          class_names: Sequence[str] | None = None, attribute: Any = None,
          attribute_name: str = "attribute", dataset: str = "imported",
          tsne: bool = True, source: str = "pytorch") -> Path:
    """Turn a PyTorch VAE (``model.encode(x) -> (mu, logvar)``, ``model.decode(z)``; or the
    callables ``encoder`` and ``decoder``) and ``images`` (N, C, H, W) in [0, 1] into the
    run folder ``out``, which the app opens like a run trained here. ``kind="ae"`` for a
    plain autoencoder (``encode(x) -> mu``). See the module docstring. Returns ``out``."""
    import torch

    _check_settings(kind, likelihood, decoder_output, sigma)
    out = Path(out)
    _check_out(out)
    x = as_images(images)
    if model is not None:
        if encoder is not None or decoder is not None:
            raise AdoptError("pass either model or encoder= and decoder=, not both")
        if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode",
                                                                              None))):
            raise AdoptError(f"{type(model).__name__} has no encode(x) and decode(z); pass "
                             f"encoder= and decoder= callables instead")
        encode, decode, owners = model.encode, model.decode, [model]
    elif encoder is not None and decoder is not None:
        encode, decode, owners = encoder, decoder, [encoder, decoder]
    else:
        raise AdoptError("give the model (with encode and decode), or encoder= and decoder=")
    modes = [(m, m.training) for m in owners if isinstance(m, torch.nn.Module)]
    try:
        for m, _ in modes:
            m.eval()
        probe = torch.from_numpy(x[:min(len(x), 4)])
        try:
            with torch.no_grad():
                mu, _logvar = _posterior(encode(probe), kind)
        except AdoptError:
            raise
        except Exception as exc:
            raise AdoptError(f"the encoder cannot take the images, shaped "
                             f"{tuple(x.shape[1:])}: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
        if mu.ndim != 2 or mu.shape[0] != len(probe):
            raise AdoptError(f"the encoder's mu has shape {tuple(mu.shape)} for {len(probe)} "
                             f"images; it must be (N, latent size)")
        try:
            with torch.no_grad():
                decoded = decode(mu)
        except Exception as exc:
            raise AdoptError(f"the decoder cannot take the encoder's codes, shaped "
                             f"{tuple(mu.shape)}: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
        if not isinstance(decoded, torch.Tensor) or tuple(decoded.shape) != tuple(probe.shape):
            shape = tuple(decoded.shape) if isinstance(decoded, torch.Tensor) else \
                type(decoded).__name__
            raise AdoptError(f"the decoder returns {shape} for {len(probe)} images of shape "
                             f"{tuple(x.shape[1:])}: its output must have the images' shape")
        encoder_graph, decoder_graph = export_halves(encode, decode, owners, x.shape[1:],
                                                     int(mu.shape[1]), kind, decoder_output)
    finally:
        for m, was_training in modes:
            m.train(was_training)
    return adopt_onnx(encoder_graph, decoder_graph, x, out, labels=labels,
                      class_names=class_names, attribute=attribute,
                      attribute_name=attribute_name, likelihood=likelihood,
                      decoder_output=decoder_output, sigma=sigma, kind=kind, source=source,
                      dataset=dataset, tsne=tsne)


# --------------------------------------------------------------------------- pythae

PYTHAE_VAES = ("VAEConfig", "BetaVAEConfig")
PYTHAE_REFUSAL = ("pythae saved a custom {part} as {file}, a cloudpickle file: loading it "
                  "would run code from the file, so it is refused. Export the model to ONNX "
                  "instead (torch.onnx.export of model.encoder / model.decoder, or "
                  "explorer.adopt.adopt(encoder=..., decoder=...) in the notebook that has "
                  "the classes) and use `python -m explorer.adopt --encoder e.onnx "
                  "--decoder d.onnx`")


def load_pythae(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """A saved pythae VAE with its built-in MLP architecture (``model_config.json`` and
    ``model.pt``, read with ``weights_only=True``) as a torch module with ``encode`` and
    ``decode``, and the :func:`adopt` settings its loss implies."""
    import json

    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise AdoptError(f"{folder}: not a folder (a saved pythae model is one)")
    for part in ("encoder", "decoder"):
        if (folder / f"{part}.pkl").exists():
            raise AdoptError(PYTHAE_REFUSAL.format(part=part, file=f"{part}.pkl"))
    config_path = folder / "model_config.json"
    if not config_path.is_file():
        raise AdoptError(f"{folder}: no model_config.json, not a saved pythae model")
    try:
        config = json.loads(validate.read_capped(config_path, validate.MAX_CONFIG_BYTES,
                                                 "model_config.json"))
    except (ValueError, rundir.RunDirError) as exc:
        raise AdoptError(f"{config_path}: not readable JSON: {_first_line(exc)}") from exc
    if not isinstance(config, dict):
        raise AdoptError(f"{config_path}: not a pythae model config")
    for part in ("encoder", "decoder"):
        if config.get(f"uses_default_{part}", True) is not True:
            raise AdoptError(PYTHAE_REFUSAL.format(part=part, file=f"{part}.pkl"))
    if config.get("name") not in PYTHAE_VAES:
        raise AdoptError(f"{config_path}: a {config.get('name')!r}; only pythae's "
                         f"{' and '.join(PYTHAE_VAES)} with the built-in MLP are read here "
                         f"(export others to ONNX)")
    shape = config.get("input_dim")
    latent = config.get("latent_dim")
    if not (isinstance(shape, list) and len(shape) in (2, 3)
            and all(isinstance(s, int) and s > 0 for s in shape)):
        raise AdoptError(f"{config_path}: input_dim {shape!r} is not (C, H, W) or (H, W)")
    image_shape = tuple(shape) if len(shape) == 3 else (1, *shape)
    if image_shape[0] not in (1, 3) or not (isinstance(latent, int) and 1 <= latent
                                            <= MAX_LATENT_DIM):
        raise AdoptError(f"{config_path}: input_dim {shape} / latent_dim {latent!r} not "
                         f"supported (1 or 3 channels, 1..{MAX_LATENT_DIM} latent dims)")
    loss = config.get("reconstruction_loss", "mse")
    if loss not in ("mse", "bce"):
        raise AdoptError(f"{config_path}: reconstruction_loss {loss!r} is not mse or bce")
    weights_path = folder / "model.pt"
    if not weights_path.is_file():
        raise AdoptError(f"{folder}: no model.pt (the weights)")
    validate.check_size(weights_path, validate.MAX_WEIGHTS_BYTES, "model.pt")
    try:
        saved = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = saved["model_state_dict"]
    except Exception as exc:
        raise AdoptError(f"{weights_path}: cannot be loaded safely (weights_only=True: "
                         f"tensors only; nothing was executed): {_first_line(exc)}") from exc
    model = _pythae_module()(image_shape, latent)
    wanted = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()
             if isinstance(v, torch.Tensor) and k.split(".")[0] in ("encoder", "decoder")}
    mismatch = validate.weights_mismatch({k: tuple(v) for k, v in wanted.items()}, found)
    if mismatch:
        raise AdoptError(f"{weights_path}: not pythae's built-in MLP VAE: {mismatch}")
    model.load_state_dict({k: state[k] for k in wanted})
    settings = ({"likelihood": "bernoulli", "decoder_output": "probabilities"} if loss == "bce"
                else {"likelihood": "gaussian", "decoder_output": "mean", "sigma": 1.0})
    return model.eval(), {**settings, "source": f"pythae {config['name']}"}


def _pythae_module() -> Any:
    import torch
    from torch import nn

    class PythaeMLPVAE(nn.Module):
        """pythae's ``Encoder_VAE_MLP`` + ``Decoder_AE_MLP`` (same parameter names): one
        hidden layer of 512 each way, a sigmoid at the end."""

        def __init__(self, image_shape: tuple[int, int, int], latent_dim: int):
            super().__init__()
            pixels = math.prod(image_shape)
            self.image_shape = image_shape
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList([nn.Sequential(nn.Linear(pixels, 512),
                                                               nn.ReLU())])
            self.encoder.embedding = nn.Linear(512, latent_dim)
            self.encoder.log_var = nn.Linear(512, latent_dim)
            self.decoder = nn.Module()
            self.decoder.layers = nn.ModuleList([
                nn.Sequential(nn.Linear(latent_dim, 512), nn.ReLU()),
                nn.Sequential(nn.Linear(512, pixels), nn.Sigmoid())])

        def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            enc: Any = self.encoder
            h = enc.layers[0](x.flatten(1))
            return enc.embedding(h), enc.log_var(h)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            dec: Any = self.decoder
            out = dec.layers[1](dec.layers[0](z))
            return out.reshape(z.shape[0], *self.image_shape)

    return PythaeMLPVAE


def __getattr__(name: str) -> Any:  # PythaeMLPVAE is built on first use: torch is lazy
    if name == "PythaeMLPVAE":
        return _pythae_module()
    raise AttributeError(name)


def adopt_pythae(folder: str | Path, images: Any, out: str | Path, **kwargs: Any) -> Path:
    """:func:`adopt` for a saved pythae VAE folder (see :func:`load_pythae`)."""
    model, settings = load_pythae(folder)
    return adopt(model, images, out=out, **{**settings, **kwargs})


# --------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explorer.adopt",
        description="Turn a trained encoder/decoder (ONNX files or a saved pythae VAE) and "
                    "a set of images into a run folder the explorer opens.")
    model = parser.add_argument_group("the model (ONNX pair or pythae folder)")
    model.add_argument("--encoder", help="encoder.onnx: images (N, C, H, W) -> mu, logvar")
    model.add_argument("--decoder", help="decoder.onnx: z (N, D) -> images (N, C, H, W)")
    model.add_argument("--pythae", metavar="DIR", help="a saved pythae VAE folder")
    parser.add_argument("--images", required=True,
                        help=".npy/.npz array (N, C, H, W) in [0, 1] or uint8, an image "
                             f"folder, or a data set name ({', '.join(DATASETS)})")
    parser.add_argument("--labels", help=".npy of integer labels, one per image")
    parser.add_argument("--attribute", help=".npy of numbers to colour the map by")
    parser.add_argument("--attribute-name", default="attribute")
    parser.add_argument("--out", required=True, help="the new run folder")
    parser.add_argument("--model", choices=KINDS, default="vae", dest="kind")
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default=None)
    parser.add_argument("--decoder-output", choices=rundir.DECODER_OUTPUTS, default=None)
    parser.add_argument("--sigma", type=float, default=None,
                        help="the Gaussian likelihood's pixel standard deviation (0.1)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--no-tsne", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.pythae and (args.encoder or args.decoder):
            raise AdoptError("give --pythae or --encoder/--decoder, not both")
        if not args.pythae and not (args.encoder and args.decoder):
            raise AdoptError("give --encoder and --decoder (ONNX files) or --pythae DIR")
        settings: dict[str, Any] = {}
        image_shape = None
        pythae_model = None
        if args.pythae:
            pythae_model, settings = load_pythae(args.pythae)
            image_shape = pythae_model.image_shape
        else:
            image_shape = _onnx_image_shape(args.encoder)
        for key in ("likelihood", "decoder_output", "sigma"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)
        settings.setdefault("likelihood", "bernoulli")
        settings.setdefault("decoder_output", "logits")
        settings.setdefault("sigma", 0.1)
        x, labels, class_names, name = load_image_source(args.images, image_shape,
                                                         args.data_dir)
        if args.labels:
            labels, class_names = np.load(args.labels, allow_pickle=False), None
        attribute = np.load(args.attribute, allow_pickle=False) if args.attribute else None
        if args.limit is not None:
            x = x[:args.limit]
            labels = None if labels is None else labels[:args.limit]
            attribute = None if attribute is None else attribute[:args.limit]
        common = dict(labels=labels, class_names=class_names, attribute=attribute,
                      attribute_name=args.attribute_name, kind=args.kind, dataset=name,
                      tsne=not args.no_tsne)
        if pythae_model is not None:
            out = adopt(pythae_model, x, out=args.out, **common, **settings)
        else:
            _check_out(Path(args.out))
            encoder = onnx_file(args.encoder, "encoder", args.kind, settings["decoder_output"])
            decoder = onnx_file(args.decoder, "decoder", args.kind, settings["decoder_output"])
            out = adopt_onnx(encoder, decoder, x, args.out, source="onnx", **common,
                             **settings)
    except (AdoptError, rundir.RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {rundir.describe_os_error(exc)}",
              file=sys.stderr)
        return 1
    print(f"{out}: imported; open it with `vae-explorer -- --runs-dir {Path(out).parent}`")
    return 0


def _onnx_image_shape(path: str) -> tuple[int, int, int] | None:
    """The encoder's input shape (C, H, W) when the file states it, for resizing a folder."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return None  # onnx_file() reports the problem
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        return None
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim[1:]]
    return (dims[0], dims[1], dims[2]) if len(dims) == 3 and all(dims) else None


class _CallableModule(types.ModuleType):
    """``import explorer.adopt; explorer.adopt(model, images, ...)`` works too."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return adopt(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
