"""Row 1: training throughput, samples per second, measured side by side.

- the project's trainer: :func:`training.trainer.train_epoch` (the real inner loop of
  ``train``) with :func:`training.trainer.make_optimizer`, on the default MLP 784-400-20,
  batch 128, data in memory;
- the reference loop (``bench/reference.py``, the PyTorch VAE example);
- the machine's limit: measured single-precision matrix-multiply FLOP/s (2048 x 2048) divided
  by the model's FLOPs per sample (counted from its Linear layers, see
  :func:`model_flops_per_sample`).

Epochs of the two loops alternate, so a busy neighbour slows both alike; the best epoch of
each is reported (the least disturbed), with the median next to it in the JSON.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from bench import reference
from bench.common import NOT_MEASURED_GPU, Row, summary

MODEL = dict(latent_dim=20, hidden_dim=400, hidden_layers=1)  # the PyTorch example's sizes
BATCH = 128
THREADS = 2


def matmul_flops(device: torch.device, n: int = 2048, repeats: int = 7,
                 min_seconds: float = 0.25) -> dict[str, float]:
    """Best and median FLOP/s of ``n x n`` float32 matrix products (2 n^3 FLOPs each)."""
    torch.backends.cuda.matmul.allow_tf32 = False  # single precision, not TF32
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        torch.mm(a, b, out=out)
    sync()
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync()
    reps = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync()
        rates.append(2.0 * n**3 * reps / (time.perf_counter() - start))
    stats = summary(rates)
    return {"best": stats["max"], "median": stats["median"], "n": n}


def model_flops_per_sample(model: nn.Module, first_layer: nn.Linear) -> dict[str, float]:
    """FLOPs of one training sample through the model's Linear layers (biases and
    element-wise work ignored, as usual): forward 2*in*out per layer; backward 2*in*out for
    the weight gradient of every layer plus 2*in*out for the input gradient of every layer
    but ``first_layer`` (its input is the data, which needs no gradient)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    forward = sum(2 * m.in_features * m.out_features for m in linears)
    backward = forward + sum(2 * m.in_features * m.out_features for m in linears
                             if m is not first_layer)
    return {"forward": float(forward), "backward": float(backward),
            "total": float(forward + backward)}


def matmul_only_rate(model: nn.Module, first_layer: nn.Linear, device: torch.device,
                     batch: int = BATCH, repeats: int = 7) -> float:
    """Samples/s of a training step stripped to its matrix multiplies: for every Linear,
    forward ``x @ W.T + b`` (addmm), weight gradient ``g.T @ x`` and, except for the first
    layer, input gradient ``g @ W``, at the step's own shapes. The ceiling for this model
    at this batch size on this machine, whatever the rest of the step does."""
    shapes = [(m.in_features, m.out_features, m is first_layer)
              for m in model.modules() if isinstance(m, nn.Linear)]
    work = []
    for n_in, n_out, first in shapes:
        x = torch.randn(batch, n_in, device=device)
        w = torch.randn(n_out, n_in, device=device)
        b = torch.randn(n_out, device=device)
        g = torch.randn(batch, n_out, device=device)
        work.append((x, w, b, g, first))

    def step() -> None:
        for x, w, b, g, first in work:
            torch.addmm(b, x, w.t())
            g.t().mm(x)
            if not first:
                g.mm(w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(5):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            step()
        best = min(best, (time.perf_counter() - start) / 20)
    return batch / best


def _project(data, device: torch.device):
    from training.config import TrainConfig
    from training.model import VAE
    from training.trainer import make_optimizer, train_epoch

    config = TrainConfig(**MODEL, batch_size=BATCH, device=device.type, threads=THREADS,
                         epochs=1_000)  # many epochs: the cosine schedule stays near its top
    torch.manual_seed(0)
    model = VAE.from_config(config, data.image_shape).to(device)
    optimizer = make_optimizer(model, config)
    train_x = data.train_x.to(device)
    generator = torch.Generator().manual_seed(0)
    sync_every = 1 if device.type == "cpu" else 16  # what train() uses
    epoch = [0]

    def run_epoch() -> int:
        epoch[0] += 1
        order = torch.randperm(len(train_x), generator=generator).to(device)
        done = train_epoch(model, model, optimizer, train_x, order, config, epoch[0],
                           sync_every=sync_every)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        assert done.diverged is None and done.batches > 0
        return len(order)

    return model, run_epoch


def _reference(data, device: torch.device):
    model, optimizer, loader = reference.make(data.train_x, data.train_y, device)

    def run_epoch() -> int:
        reference.train_epoch(model, optimizer, loader, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(loader.dataset)

    return model, run_epoch


def profile_project_step(data, device: torch.device, steps: int = 30) -> dict[str, Any]:
    """Where a project training step spends its time (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    _, run_epoch = _project(data, device)
    run_epoch()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_epoch()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    by_op = sorted(((e.key, e.self_cpu_time_total / total) for e in events),
                   key=lambda kv: -kv[1])
    matmul = sum(share for name, share in by_op if name in ("aten::mm", "aten::addmm",
                                                            "aten::bmm", "aten::matmul"))
    optim = sum(share for name, share in by_op if "adam" in name.lower())
    return {"matmul_share": matmul, "adam_share": optim,
            "top_ops": [(name, round(share, 4)) for name, share in by_op[:12]]}


def measure(device: torch.device, rounds: int = 6) -> tuple[list[Row], dict[str, Any]]:
    """The throughput rows for one device (CPU: 2 threads)."""
    from training.data import load_dataset

    if device.type == "cpu":
        torch.set_num_threads(THREADS)
    data = load_dataset("mnist5k")
    limit = matmul_flops(device)
    project_model, project_epoch = _project(data, device)
    _, reference_epoch = _reference(data, device)
    first = next(m for m in project_model.encoder.modules() if isinstance(m, nn.Linear))
    flops = model_flops_per_sample(project_model, first)
    rates: dict[str, list[float]] = {"project": [], "reference": []}
    project_epoch(), reference_epoch()  # warm-up: allocator, kernels, caches
    for _ in range(rounds):
        for name, run in (("reference", reference_epoch), ("project", project_epoch)):
            start = time.perf_counter()
            n = run()
            rates[name].append(n / (time.perf_counter() - start))
    project, ref = summary(rates["project"]), summary(rates["reference"])
    limit_rate = limit["best"] / flops["total"]
    ceiling = matmul_only_rate(project_model, first, device)
    speedup = project["max"] / ref["max"]
    fraction = project["max"] / limit_rate
    where = "CPU, 2 threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    section = "training" if device.type == "cpu" else "gpu"
    rows = [
        Row(section, f"project trainer ({where})", project["max"], "samples/s",
            f"train_epoch, 784-400-20, batch {BATCH}, tensors in memory; best of {rounds} "
            f"epochs (median {project['median']:,.0f})"),
        Row(section, "reference loop (PyTorch VAE example)", ref["max"], "samples/s",
            f"DataLoader over TensorDataset, batch {BATCH}, BCE on sigmoid; best of {rounds} "
            f"(median {ref['median']:,.0f})"),
        Row(section, "machine limit", limit_rate, "samples/s",
            f"{limit['best'] / 1e9:.0f} GFLOP/s sgemm {limit['n']}² / "
            f"{flops['total'] / 1e6:.2f} MFLOP per sample (fwd {flops['forward'] / 1e6:.2f} "
            f"+ bwd {flops['backward'] / 1e6:.2f})"),
        Row(section, "project ÷ reference", speedup, "×",
            f"median ÷ median {project['median'] / ref['median']:.2f}×", goal="≥ 1.5×",
            met=speedup >= 1.5),
        Row(section, "project ÷ machine limit", 100 * fraction, "%",
            f"at batch {BATCH}; median {100 * project['median'] / limit_rate:.0f} %",
            goal="≥ 60 %", met=fraction >= 0.6),
        Row(section, "the step's matrix multiplies alone", ceiling, "samples/s",
            f"{100 * ceiling / limit_rate:.0f} % of the limit: the 14 products of one step at "
            f"batch {BATCH}, nothing else (the ceiling at these shapes)"),
    ]
    raw = {"device": str(device), "project": project, "reference": ref, "matmul": limit,
           "matmul_only_rate": ceiling,
           "flops_per_sample": flops, "rates": rates}
    if device.type == "cpu":
        prof = profile_project_step(data, device)
        raw["profile"] = prof
        rows.append(Row(section, "project step: share in matrix multiplies", 100 *
                        prof["matmul_share"], "%",
                        f"torch.profiler self time; Adam {100 * prof['adam_share']:.0f} %, the "
                        f"rest element-wise ops and dispatch"))
    return rows, raw


def gpu_rows() -> tuple[list[Row], dict[str, Any]]:
    if not torch.cuda.is_available():
        return [Row("gpu", "throughput and time to quality on a GPU", None, "",
                    NOT_MEASURED_GPU)], {}
    return measure(torch.device("cuda"))
