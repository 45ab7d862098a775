"""ONNX export: a run's model as ``encoder.onnx`` and ``decoder.onnx``, which
``explorer/onnx_model.py`` (and the browser) run with ONNX Runtime, without PyTorch.

- ``encoder.onnx``: ``x`` (B, C, H, W) float32 -> ``mu`` (B, D) and, for a VAE, ``logvar``
  (B, D), clamped to [LOGVAR_MIN, LOGVAR_MAX] inside the graph exactly as in training.
- ``decoder.onnx``: ``z`` (B, D) float32 -> ``logits`` (B, C, H, W); sigmoid gives the mean image.

B is a dynamic axis named ``batch``. Each file is self-contained (weights inside, no
external ``.data`` file) and passes ``onnx.checker``'s full check. ``onnx.json`` records
the SHA-256 of the weights they were exported from and of each file (``rundir.write_onnx``),
so a reader refuses stale or modified ONNX files; ``model.safetensors`` stays the source
of truth for training and ``--resume``.

How: one ``torch.onnx.export(dynamo=True)`` of a module computing ``encode(x)`` and
``decode(z)`` side by side, split into the two graphs with ``onnx.utils.Extractor``. One
trace instead of two halves the cost, most of which, for models this small, is the
exporter building its operator tables anew on every call. The legacy TorchScript exporter
(``dynamo=False``) is much faster but deprecated since torch 2.9, and this project does not
pin torch, so it is not used.

When: even so the export takes seconds, not milliseconds, so the trainer exports once, in
the final epoch's all-or-nothing save, never at each checkpoint. A run stopped early
(signal, divergence) keeps exactly the files of its last finished epoch, and so has no
current ONNX files; neither do runs trained before this module. For those:

    python -m training.export RUN_DIR [RUN_DIR ...]

which exits 0 when every run was exported (or already was), 2 for a run directory it
cannot use, 1 when an export or a write failed, with one line per problem.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from training import rundir

if TYPE_CHECKING:
    import onnx

    from training.model import VAE

SAMPLE_BATCH = 2  # the traced batch size; torch.export would specialise a batch of 0 or 1
BATCH_AXIS = "batch"


@dataclass
class OnnxGraphs:
    """The serialized ONNX files of one model, and what ``onnx.json`` says about them."""

    encoder: bytes
    decoder: bytes
    details: dict[str, Any] = field(default_factory=dict)  # exporter, torch, opset


class EncodeAndDecode(nn.Module):
    """``encode(x)`` and ``decode(z)`` in one forward pass: one trace gives both graphs."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.vae.encode(x)  # (B, D), (B, D) clamped or None
        logits = self.vae.decode(z)  # (B', C, H, W)
        return (mu, logits) if logvar is None else (mu, logvar, logits)


def _name_batch_axis(model: onnx.ModelProto, traced_names: set[str]) -> None:
    """Rename the traced batch dimensions (one per input) to ``batch`` everywhere."""
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in traced_names:
                dim.dim_param = BATCH_AXIS


def export_graphs(model: VAE) -> OnnxGraphs:
    """Trace a CPU copy of ``model`` (in eval mode; ``model`` itself is not touched, nor
    the global RNG) and return its encoder and decoder as serialized ONNX models."""
    import onnx
    from onnx.utils import Extractor

    vae = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    sample_x = torch.zeros(SAMPLE_BATCH, *vae.image_shape)  # (B, C, H, W)
    sample_z = torch.zeros(SAMPLE_BATCH, vae.latent_dim)  # (B, D)
    encoder_outputs = ["mu", "logvar"] if vae.is_vae else ["mu"]
    batch_x, batch_z = torch.export.Dim("batch_x"), torch.export.Dim("batch_z")
    with torch.random.fork_rng(devices=[]):
        program = torch.onnx.export(
            EncodeAndDecode(vae).eval(), (sample_x, sample_z), dynamo=True,
            input_names=["x", "z"], output_names=[*encoder_outputs, "logits"],
            dynamic_shapes=({0: batch_x}, {0: batch_z}),
            external_data=False, optimize=True, verbose=False)
    assert program is not None  # dynamo=True always returns the ONNXProgram
    both = program.model_proto
    extractor = Extractor(both)
    graphs = {"encoder": extractor.extract_model(["x"], encoder_outputs),
              "decoder": extractor.extract_model(["z"], ["logits"])}
    serialized = {}
    for role, graph in graphs.items():
        _name_batch_axis(graph, {"batch_x", "batch_z"})
        graph.producer_name, graph.producer_version = both.producer_name, both.producer_version
        graph.doc_string = f"VAE Latent Explorer {role}: see training/export.py"
        onnx.checker.check_model(graph, full_check=True)
        if graph.ByteSize() >= 2**31:
            raise ValueError(f"the {role} is too large for a self-contained ONNX file (2 GB)")
        serialized[role] = graph.SerializeToString()
    details = {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
               "onnx": onnx.__version__,
               "opset": max((o.version for o in both.opset_import if o.domain in ("", "ai.onnx")),
                            default=0)}
    return OnnxGraphs(encoder=serialized["encoder"], decoder=serialized["decoder"],
                      details=details)


def write_graphs(run_dir: str | Path, graphs: OnnxGraphs, weights_sha: str,
                 epoch: int | str | None) -> None:
    """Write ``graphs`` into ``run_dir`` as exported from the weights ``weights_sha``."""
    details = {**graphs.details, "epoch": int(epoch) if epoch is not None else None}
    rundir.write_onnx(run_dir, graphs.encoder, graphs.decoder, weights_sha, details)


def export_run(run_dir: str | Path, force: bool = False) -> bool:
    """Export a run directory's verified ``model.safetensors`` to ONNX. Returns False when
    its ONNX files were already current (nothing written, unless ``force``).
    Raises :class:`rundir.RunDirError` for a run it cannot open."""
    run_dir = Path(run_dir)
    loaded = rundir.load_run(run_dir)
    weights_sha = loaded.weights_meta["weights_sha256"]
    if not force and rundir.onnx_problem(run_dir, weights_sha) is None:
        return False
    write_graphs(run_dir, export_graphs(loaded.model), weights_sha,
                 loaded.weights_meta.get("epoch"))
    return True


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Write encoder.onnx, decoder.onnx and onnx.json into run directories "
                    "(for runs trained before ONNX export, or stopped before their last epoch).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--force", action="store_true",
                        help="export even when the ONNX files are already current")
    args = parser.parse_args(argv)
    status = 0
    for run_dir in map(Path, args.run_dirs):
        try:
            done = export_run(run_dir, force=args.force)
        except rundir.RunDirError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)
            status = max(status, 2)
            continue
        except KeyboardInterrupt:
            print(f"error: interrupted while exporting {run_dir}; its files are as they were",
                  file=sys.stderr, flush=True)
            return 130
        except OSError as exc:
            print(f"error: {run_dir}: could not write the ONNX files: "
                  f"{rundir.describe_os_error(exc)}; files already there were left as they were",
                  file=sys.stderr, flush=True)
            status = max(status, 1)
            continue
        except Exception as exc:  # the exporter's own errors: one line, not its report
            print(f"error: {run_dir}: ONNX export failed: {type(exc).__name__}: "
                  f"{_one_line(exc)}", file=sys.stderr, flush=True)
            status = max(status, 1)
            continue
        names = f"{rundir.ONNX_ENCODER_FILE}, {rundir.ONNX_DECODER_FILE}"
        print(f"{run_dir}: {'exported ' + names if done else names + ' already current'}",
              flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
