"""Row 2: time to quality, seconds of training until the test negative ELBO on ``mnist5k``
(latent 20) is at or below 120 nats per sample.

- the project: ``training.trainer.train`` with ``TrainConfig()``'s own defaults (whatever
  they are when this runs) and ``latent_dim=20``; no t-SNE (an output, not training);
- the reference: the PyTorch VAE example (``bench/reference.py``): 784-400-20, batch 128,
  Adam 1e-3, its DataLoader.

Both start from the same in-memory tensors and are evaluated after every epoch on the same
1,000 test images (one posterior sample per image). The clock runs from the start of
training to the end of the first epoch whose evaluation is at or below the target, and
**includes** each side's per-epoch evaluation (and, for the project, its checkpoint writes:
the real ``train`` saves every epoch). Data loading is excluded for both.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from bench import reference
from bench.common import Row

TARGET = 120.0  # nats per sample, test -ELBO
LATENT_DIM = 20


class _Reached(Exception):
    pass


def train_to(config, data, target: float, max_seconds: float) -> dict[str, Any]:
    """``training.trainer.train(config)`` (in this process, with its per-epoch evaluation
    and checkpoints) until the test -ELBO is at or below ``target`` or ``max_seconds``
    have passed: ``seconds`` and ``epoch`` where it got there (None if it did not),
    ``curve`` (epoch, seconds, test loss) and the whole ``elapsed`` time."""
    from training.trainer import train

    curve: list[tuple[int, float, float]] = []
    reached: dict[str, Any] = {}
    start = time.perf_counter()

    def progress(row: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - start
        curve.append((row["epoch"], elapsed, row["test_loss"]))
        if row["test_loss"] <= target:
            reached.update(seconds=elapsed, epoch=row["epoch"])
            raise _Reached
        if elapsed > max_seconds:
            raise _Reached

    with tempfile.TemporaryDirectory(prefix="bench-ttq-") as tmp:
        try:
            train(config, f"{tmp}/run", data=data, log=lambda line: None, progress=progress,
                  show_progress_bar=False)
        except _Reached:
            pass
    return {"seconds": reached.get("seconds"), "epoch": reached.get("epoch"), "curve": curve,
            "elapsed": time.perf_counter() - start}


def project_time(data, device: torch.device, max_seconds: float) -> dict[str, Any]:
    from training.config import TrainConfig

    # constructed, not replace()d: TrainConfig picks its architecture from latent_dim
    config = TrainConfig(dataset="mnist5k", latent_dim=LATENT_DIM, tsne=False,
                         device=device.type)
    done = train_to(config, data, TARGET, max_seconds)
    settings = (f"{config.hidden_layers}×{config.hidden_dim} MLP, batch {config.batch_size}, "
                f"lr {config.lr:g} cosine over {config.epochs} epochs")
    return {**done, "best": min(c[2] for c in done["curve"]), "settings": settings}


def reference_time(data, device: torch.device, max_seconds: float,
                   max_epochs: int = 200) -> dict[str, Any]:
    model, optimizer, loader = reference.make(data.train_x, data.train_y, device)
    curve: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        reference.train_epoch(model, optimizer, loader, device)
        loss = reference.test_loss(model, data.test_x, device)
        elapsed = time.perf_counter() - start
        curve.append((epoch, elapsed, loss))
        if loss <= TARGET:
            return {"seconds": elapsed, "epoch": epoch, "best": loss, "curve": curve,
                    "settings": "1×400 MLP, batch 128, lr 0.001", "elapsed": elapsed}
        if elapsed > max_seconds:
            break
    return {"seconds": None, "epoch": None, "best": min(c[2] for c in curve), "curve": curve,
            "settings": "1×400 MLP, batch 128, lr 0.001", "elapsed": time.perf_counter() - start}


def measure(device: torch.device, max_seconds: float = 150.0) -> tuple[list[Row], dict[str, Any]]:
    from training.data import load_dataset

    if device.type == "cpu":
        torch.set_num_threads(2)
    data = load_dataset("mnist5k")
    # the first optimizer built in a process pays ~1.5 s of torch.optim imports: not training
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    project = project_time(data, device, max_seconds)
    ref = reference_time(data, device, max_seconds)
    section = "quality" if device.type == "cpu" else "gpu"
    where = "" if device.type == "cpu" else f" ({torch.cuda.get_device_name(device)})"

    def describe(result: dict[str, Any]) -> str:
        if result["seconds"] is None:
            return (f"{result['settings']}: not reached in {result['elapsed']:.0f} s "
                    f"(best {result['best']:.1f} nats)")
        return f"{result['settings']}: epoch {result['epoch']}"

    speedup = (ref["seconds"] / project["seconds"]
               if project["seconds"] and ref["seconds"] else None)
    if project["seconds"] and not ref["seconds"]:
        speedup_note = f"reference never got there: ≥ {ref['elapsed'] / project['seconds']:.1f}×"
        lower = ref["elapsed"] / project["seconds"]
    else:
        speedup_note, lower = "incl. per-epoch evaluation (and the project's checkpoints)", None
    rows = [
        Row(section, f"project to ≤ {TARGET:.0f} nats{where}", project["seconds"], "s",
            describe(project)),
        Row(section, f"reference to ≤ {TARGET:.0f} nats{where}", ref["seconds"], "s",
            describe(ref)),
        Row(section, "reference ÷ project (time to quality)", speedup or lower, "×",
            speedup_note, goal="≥ 2×",
            met=None if (speedup or lower) is None else (speedup or lower) >= 2.0),
    ]
    return rows, {"project": project, "reference": ref, "target": TARGET}
