"""ONNX graphs kept between runs: one exported template per architecture, new weights
swapped in.

Exporting with ``torch.onnx.export(dynamo=True)`` costs seconds (the exporter's imports
and tables), far more than training the demo model's last epochs. But a model's ONNX
graphs depend only on its architecture, never on its weights, so the first run of an
architecture keeps its exported graphs here, and every later run of the same architecture
takes them, swaps its final weights in (:func:`fill`: :func:`swap_weights`, milliseconds,
then :func:`check_against_torch`, the result numerically against the torch model) before
anything is written. A template that is missing, damaged, foreign or that does not
reproduce the model is simply not used: the run exports as before.

Where: ``$VAE_CACHE_DIR/onnx-templates/``; ``VAE_CACHE_DIR`` defaults to
``$XDG_CACHE_HOME/vae-latent-explorer`` (``~/.cache/vae-latent-explorer``). ``VAE_CACHE_DIR``
set to an empty string turns the cache off. Each template is three files named after
:func:`template_key`, a SHA-256 of the architecture, the versions of torch, onnx and
onnxscript, and the source of ``training/model.py`` and ``training/export.py``: a change
to any of them means a new export. The ``KEEP`` most recently used templates (at most
``KEEP_BYTES`` in all) are kept, the others removed when a new one is stored. Deleting the
folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training import rundir, validate
from training.export import OnnxGraphs
from training.validate import MAX_ONNX_BYTES, MAX_ONNX_RECORD_BYTES

if TYPE_CHECKING:
    from training.config import TrainConfig

FOLDER = "onnx-templates"
CHECK_BATCH = 4  # inputs of the numerical check (a batch > 1 exercises the dynamic axis)
CHECK_ATOL = 1e-4  # ONNX Runtime vs torch, float32 CPU kernels: far below a visible pixel
KEEP = 24  # templates kept; storing one more removes the least recently used ones ...
KEEP_BYTES = 1024**3  # ... as do templates beyond this many bytes in all (the newest stays)


def cache_dir() -> Path | None:
    """The template folder, or None when ``VAE_CACHE_DIR`` is set to an empty string."""
    root = os.environ.get("VAE_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "vae-latent-explorer")
    return Path(root) / FOLDER if root.strip() else None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def template_key(config: TrainConfig, image_shape: tuple[int, ...]) -> str:
    """What the exported graphs depend on, hashed: the architecture, the exporter's
    versions and the code that builds and exports the model."""
    code = hashlib.sha256()
    for name in ("model.py", "export.py"):
        code.update((Path(__file__).with_name(name)).read_bytes())
    key = {"image_shape": list(image_shape), "model": config.model, "arch": config.arch,
           "latent_dim": config.latent_dim, "hidden_dim": config.hidden_dim,
           "hidden_layers": config.hidden_layers, "learn_sigma": config.learn_sigma,
           "torch": torch.__version__, "onnx": _version("onnx"),
           "onnxscript": _version("onnxscript"), "code": code.hexdigest()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _paths(folder: Path, key: str) -> dict[str, Path]:
    return {"encoder": folder / f"{key}.encoder.onnx", "decoder": folder / f"{key}.decoder.onnx",
            "details": folder / f"{key}.json"}


def _read_capped(path: Path, cap: int) -> bytes | None:
    """A regular file's bytes (``validate.read_capped``), or None where it refuses it."""
    try:
        return validate.read_capped(path, cap, "an ONNX template file")
    except rundir.RunDirError:
        return None


def load(key: str) -> OnnxGraphs | None:
    """The template stored under ``key``, or None (absent, unreadable, too large, or its
    record is not what :func:`store` writes). Its graphs are checked when used."""
    folder = cache_dir()
    if folder is None:
        return None
    paths = _paths(folder, key)
    encoder = _read_capped(paths["encoder"], MAX_ONNX_BYTES)
    decoder = _read_capped(paths["decoder"], MAX_ONNX_BYTES)
    record = _read_capped(paths["details"], MAX_ONNX_RECORD_BYTES)
    if encoder is None or decoder is None or record is None:
        return None
    try:
        details = json.loads(record)
    except ValueError:
        return None
    if not (isinstance(details, dict) and details.get("key") == key
            and details.get("encoder_sha256") == hashlib.sha256(encoder).hexdigest()
            and details.get("decoder_sha256") == hashlib.sha256(decoder).hexdigest()
            and isinstance(details.get("export"), dict)):
        return None
    with contextlib.suppress(OSError):  # most recently used: kept longest by _prune
        os.utime(paths["details"])
    return OnnxGraphs(encoder=encoder, decoder=decoder, details=details["export"])


def store(key: str, graphs: OnnxGraphs) -> bool:
    """Keep ``graphs`` as the template of ``key`` (each file written atomically, the record
    last, naming both files' SHA-256). False, silently, when the folder is not writable:
    the cache only saves time."""
    folder = cache_dir()
    if folder is None:
        return False
    paths = _paths(folder, key)
    record = {"key": key, "encoder_sha256": hashlib.sha256(graphs.encoder).hexdigest(),
              "decoder_sha256": hashlib.sha256(graphs.decoder).hexdigest(),
              "export": graphs.details}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_bytes(paths["encoder"], graphs.encoder)
        rundir.atomic_write_bytes(paths["decoder"], graphs.decoder)
        rundir.atomic_write_bytes(paths["details"], json.dumps(record).encode())
    except OSError:
        return False
    _prune(folder)
    return True


def _prune(folder: Path) -> None:
    """Keep the ``KEEP`` most recently used templates (a record's mtime: written by
    :func:`store`, touched by :func:`load`) within ``KEEP_BYTES`` in all, the newest one
    always; remove the files of the others."""
    try:
        records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for rank, record in enumerate(records):
            paths = _paths(folder, record.name[:-len(".json")]).values()
            total += sum(p.stat().st_size for p in paths if p.exists())
            if rank >= KEEP or (rank > 0 and total > KEEP_BYTES):
                for path in paths:
                    path.unlink(missing_ok=True)
    except OSError:  # another process pruned first, or the folder went away
        pass


def fill(template: OnnxGraphs, model: torch.nn.Module) -> OnnxGraphs | None:
    """``template`` with ``model``'s weights swapped in, when it holds exactly them and
    then reproduces the model (:func:`swap_weights`, :func:`check_against_torch`); else
    None (export anew)."""
    graphs = swap_weights(template, model)
    if graphs is None or check_against_torch(graphs, model) is not None:
        return None
    return graphs


def swap_weights(graphs: OnnxGraphs, model: torch.nn.Module) -> OnnxGraphs | None:
    """``graphs`` (exported from any model of ``model``'s architecture) with ``model``'s
    weights in place of theirs, or None when they do not match exactly: every initializer
    named ``vae.<key>`` must be the state_dict's ``<key>`` with the same shape and dtype,
    and every parameter of ``model`` must be used. The exported graph's structure depends
    on the architecture only (the exporter names weights after the module's parameters)."""
    import onnx
    from onnx import numpy_helper

    params = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    wanted = {k for k, _ in model.named_parameters()} - {"log_sigma"}  # not in the graphs
    used: set[str] = set()
    out = []
    for blob in (graphs.encoder, graphs.decoder):
        proto = onnx.load_from_string(blob)
        for init in proto.graph.initializer:
            if not init.name.startswith("vae."):
                continue
            key = init.name[len("vae."):]
            tensor = params.get(key)
            if tensor is None or tuple(init.dims) != tuple(tensor.shape) \
                    or init.data_type != onnx.TensorProto.FLOAT or tensor.dtype != torch.float32:
                return None
            init.CopyFrom(numpy_helper.from_array(tensor.numpy(), init.name))
            used.add(key)
        out.append(proto.SerializeToString())
    if not wanted <= used:  # a parameter the graphs do not hold: not this architecture
        return None
    return OnnxGraphs(encoder=out[0], decoder=out[1], details=dict(graphs.details))


def check_against_torch(graphs: OnnxGraphs, model: torch.nn.Module) -> str | None:
    """Run both graphs with ONNX Runtime on a fixed batch and compare with ``model`` (its
    ``encode`` and ``decode``, in eval mode, on the CPU); None when every output agrees
    within ``CHECK_ATOL``, else what differs."""
    import copy

    import onnxruntime as ort

    vae: Any = copy.deepcopy(model).cpu().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(CHECK_BATCH, *vae.image_shape, generator=gen)  # (B, C, H, W)
    z = torch.randn(CHECK_BATCH, vae.latent_dim, generator=gen)  # (B, D)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        wanted = {"encoder": [t.numpy() for t in (mu, logvar) if t is not None],
                  "decoder": [vae.decode(z).numpy()]}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        for role, blob, feed in (("encoder", graphs.encoder, x), ("decoder", graphs.decoder, z)):
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: feed.numpy()})
            if len(got) != len(wanted[role]):
                return f"the {role} has {len(got)} outputs, the model {len(wanted[role])}"
            for a, b in zip(got, wanted[role], strict=True):
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=CHECK_ATOL):
                    return f"the {role}'s outputs differ from the model's"
    except Exception as exc:  # ONNX Runtime's errors vary: any of them means "not usable"
        return f"ONNX Runtime cannot run the {role}: {type(exc).__name__}"
    return None
