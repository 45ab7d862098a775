"""The training loop: in-memory batches, Adam, per-epoch evaluation, atomic checkpoints.

:func:`train` takes a :class:`TrainConfig` and a run directory and leaves a complete run
directory behind (see ``training/rundir.py``), the final epoch's save including the ONNX
files (``training/export.py``). Its steps: :func:`setup_distributed`,
:func:`restore_checkpoint` (``--resume``), the epochs of :class:`EpochLoop` (train, check,
evaluate and save each epoch), :func:`teardown_distributed`. It also:

- resumes from ``train_state.pt`` (model, optimizer (``training/adam.py``), RNG and
  shuffling states), so a resumed CPU run reproduces the uninterrupted one;
- turns SIGINT / SIGTERM into a clean stop *between* batches and never inside a save
  (exit codes 130 / 143 are the CLI's job), keeping the last finished epoch on disk. A
  signal during the final epoch's t-SNE stops the t-SNE within a few iterations; the final
  epoch is then saved without it and the run is ``complete`` (every epoch's weights and
  metrics are there; the t-SNE map is an optional cache), its message saying how to add
  the map (``python -m training.relatents``). A signal during the final save leaves a
  complete run too, labelled ``complete``, not ``interrupted``;
- checks ``train_state.pt`` entirely (``training/validate.py``'s ``check_train_state``)
  before any of it is loaded, so a tampered or foreign state is a one-line error;
- stops on a NaN / Inf loss, naming the last good checkpoint;
- runs unchanged under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on
  CUDA), a DistributedSampler with ``set_epoch``, and only rank 0 writing files; ranks
  agree on every stop (signal, non-finite loss), and meet at a barrier before exit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from training import frames, onnx_templates, rundir, validate
from training.adam import Adam
from training.config import TrainConfig
from training.data import DataSplit, load_dataset
from training.export import OnnxGraphs, export_graphs, write_graphs
from training.loss import beta_at, elbo_terms, kl_per_dim
from training.model import VAE
from training.projection import TsneInterrupted

if TYPE_CHECKING:
    from torch.utils.data.distributed import DistributedSampler

EVAL_BATCH = 1000
SYNC_EVERY = 16  # batches between host syncs (loss finite? stop requested?) on GPU / DDP
EARLY_EXPORT_MIN_S = 5.0  # training seconds left after epoch 1 that hide a child's ONNX export
EVAL_SEED_OFFSET = 1_000_003  # evaluation noise comes from its own generator: eval never
# consumes the training RNG, so evaluating (or not) cannot change the training trajectory


class TrainingStopped(Exception):
    """Training stopped early (signal or non-finite loss); ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- signals

@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between batches. A second SIGINT while a
    stop is pending raises KeyboardInterrupt at once (atomic writes still clean up)."""

    signum: int = 0

    def handler(self, signum: int, _frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Install the flag's handler for SIGINT and SIGTERM (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- helpers

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (try --device auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple's MPS backend is not available here")
    return torch.device(name)


def default_threads() -> int:
    """Physical cores visible to this process (hyper-threads slow small matmuls down)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, n)


def _cpu_busy_seconds() -> float | None:
    """Seconds all CPUs of the machine spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
        ticks = [int(v) for v in fields[:8]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks) - idle) / (os.sysconf("SC_CLK_TCK") or 100)


class ThreadGovernor:
    """``--threads 0`` where OpenMP threads spin (torch loaded before ``OMP_WAIT_POLICY``
    could be set to PASSIVE): use the cores *other processes leave free*, re-checked as
    training goes. A parallel region of N threads runs at the pace of its slowest thread, so one
    thread sharing its core with a busy neighbour stalls every matrix multiply (measured:
    5 epochs 21.4 s with 2 threads beside one busy process, 10.4 s with 1). Every ``every``
    seconds of wall time the machine's busy CPU time minus this process's own (both
    threads, spinning included) gives the cores others used; the thread count becomes
    ``cores - round(others)`` (at least 1, at most ``cores``). Linux only; elsewhere the
    count stays at all cores. For the shipped MLP models the result is bit-identical
    whatever the count (checked for 1 vs 2 threads); pass ``--threads N`` to fix it."""

    def __init__(self, cores: int, every: float = 0.5, log: Callable[[str], None] | None = None):
        self.cores = max(1, cores)
        self.every = every
        self.log = log
        self.threads = self.cores
        self.history: list[tuple[float, int]] = []  # (others' cores, threads chosen)
        self._mark = self._sample()
        self._last = self._mark[0]

    @staticmethod
    def _sample() -> tuple[float, float | None, float]:
        return time.perf_counter(), _cpu_busy_seconds(), time.process_time()

    def start(self, probe: float = 0.05) -> int:
        """Measure the neighbours for ``probe`` seconds (idle), set and return the count."""
        self._mark = self._sample()
        time.sleep(probe)
        return self.check(force=True)

    def check(self, force: bool = False) -> int:
        """Re-decide when ``every`` seconds have passed (cheap otherwise: one clock read)."""
        if not force and time.perf_counter() - self._last < self.every:
            return self.threads
        self._last = time.perf_counter()
        mark = self._sample()
        wall = mark[0] - self._mark[0]
        busy0, own0 = self._mark[1], self._mark[2]
        self._mark = mark
        if busy0 is None or mark[1] is None or wall <= 0:
            return self.threads
        others = max(0.0, (mark[1] - busy0) - (mark[2] - own0)) / wall  # cores in use
        threads = int(min(self.cores, max(1, self.cores - math.floor(others + 0.5))))
        self.history.append((round(others, 2), threads))
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    return DistInfo(rank=int(os.environ.get("RANK", 0)),
                    world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


@dataclass
class EvalResult:
    """Per-sample test-set terms (numpy, nats) and latent statistics."""

    mu: np.ndarray  # (N, D)
    logvar: np.ndarray | None  # (N, D), None for an AE
    recon: np.ndarray  # (N,)
    kl: np.ndarray  # (N,)
    kl_per_dim: np.ndarray  # (D,) mean over samples

    @property
    def active_units(self) -> int:
        return count_active_units(self.mu)


def count_active_units(mu: np.ndarray, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies over the data: Var_x[mu_j(x)] > threshold
    (Burda et al. 2015, section 5.2)."""
    return int((np.var(np.asarray(mu, dtype=np.float64), axis=0) > threshold).sum())


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, config: TrainConfig, device: torch.device,
             seed: int) -> EvalResult:
    """Test-set terms with one posterior sample per image from a generator seeded with
    ``seed`` (the same noise every epoch, so epochs are comparable). Eval mode, no grads."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    mus, logvars, recons, kls = [], [], [], []
    for start in range(0, len(x), EVAL_BATCH):
        xb = x[start:start + EVAL_BATCH].to(device, non_blocking=True)  # (B, C, H, W)
        logits, mu, logvar = model(xb, sample=True, generator=generator)
        terms = elbo_terms(logits, xb, mu, logvar, config.likelihood, log_sigma=model.log_sigma)
        mus.append(mu.cpu())
        if logvar is not None:
            logvars.append(logvar.cpu())
        recons.append(terms.recon.cpu())
        kls.append(terms.kl.cpu())
    model.train(was_training)
    mu_all = torch.cat(mus).numpy()
    logvar_all = torch.cat(logvars).numpy() if logvars else None
    if logvar_all is not None:
        per_dim = kl_per_dim(torch.from_numpy(mu_all), torch.from_numpy(logvar_all)).mean(0).numpy()
    else:
        per_dim = np.zeros(mu_all.shape[1], dtype=np.float32)
    return EvalResult(mu=mu_all, logvar=logvar_all, recon=torch.cat(recons).numpy(),
                      kl=torch.cat(kls).numpy(), kl_per_dim=per_dim)


def latent_arrays(result: EvalResult, labels: torch.Tensor, config: TrainConfig,
                  with_tsne: bool, stop_requested: Callable[[], object] | None = None
                  ) -> dict[str, np.ndarray]:
    """What ``latents.npz`` holds for one evaluation. ``stop_requested`` is polled during
    the t-SNE, which raises :class:`training.projection.TsneInterrupted` when it is true."""
    from training.projection import fit_pca, tsne

    pca, pca_mean, pca_components = fit_pca(result.mu)
    arrays: dict[str, np.ndarray] = {
        "mu": result.mu.astype(np.float32), "labels": labels.numpy().astype(np.int64),
        "recon": result.recon.astype(np.float32), "kl": result.kl.astype(np.float32),
        "pca": pca, "pca_mean": pca_mean, "pca_components": pca_components}
    if result.logvar is not None:
        arrays["logvar"] = result.logvar.astype(np.float32)
    if with_tsne and config.latent_dim > 2 and len(result.mu) >= 5:
        arrays["tsne"] = tsne(result.mu, config.tsne_perplexity, seed=config.seed,
                              n_jobs=max(1, torch.get_num_threads()),
                              stop_requested=stop_requested)
    return arrays


def as_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A data set's tensor (data sets load as NumPy arrays only when asked to)."""
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(values)


def lr_at(epoch_progress: float, config: TrainConfig) -> float:
    """Linear warm-up from lr * lr_final_fraction to lr over ``lr_warmup`` epochs, then
    cosine decay back down to lr * lr_final_fraction by the end of the run."""
    low = config.lr * config.lr_final_fraction
    warmup = min(config.lr_warmup, 0.5 * config.epochs)
    if warmup > 0 and epoch_progress < warmup:
        return low + (config.lr - low) * max(0.0, epoch_progress) / warmup
    frac = min(1.0, (epoch_progress - warmup) / max(1e-9, max(1, config.epochs) - warmup))
    return low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * frac))


def _finite_weights(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def make_optimizer(model: nn.Module, config: TrainConfig) -> Adam:
    """Adam over the model's parameters (``training/adam.py``: ``torch.optim.Adam``'s
    update in its fused kernel, without importing ``torch._dynamo``): the one optimizer of
    :func:`train` and of the benchmarks, which time the same code path."""
    return Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _all_max(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise maximum of ``values`` over all DDP ranks (a collective: every rank must
    call it at the same point). Returns a CPU tensor."""
    import torch.distributed as tdist

    values = values.to(device)
    tdist.all_reduce(values, op=tdist.ReduceOp.MAX)
    return values.cpu()


@dataclass
class EpochResult:
    """What one pass of :func:`train_epoch` did."""

    sums: torch.Tensor  # (3,) float64, CPU: recon, kl, objective summed over samples, nats
    lr: float  # learning rate of the last batch run
    batches: int  # batches run (fewer than planned after a stop request or a divergence)
    diverged: str | None = None  # "nan at epoch 3, batch 7/32": the loss stopped being finite
    stop_signum: int = 0  # a stop was requested (signal number; agreed on by all DDP ranks)


def train_epoch(train_model: nn.Module, model: VAE, optimizer: Adam,
                train_x: torch.Tensor, order: torch.Tensor, config: TrainConfig, epoch: int,
                stop_requested: Callable[[], int] = lambda: 0,
                on_batch: Callable[[], Any] | None = None, sync_every: int = 1,
                dist_enabled: bool = False) -> EpochResult:
    """One epoch of optimizer steps over ``train_x[order]``, batch by batch: the inner loop
    of :func:`train`, also what ``bench/throughput.py`` times.

    Batches are index slices of the in-memory tensor ``train_x`` (no DataLoader, no
    per-sample ``__getitem__``). Loss sums stay on the device; the host reads them only every
    ``sync_every`` batches and after the last (1 = every batch: on the CPU that costs
    nothing, and a non-finite loss is caught *before* its step). At each such check the loss
    must be finite and ``stop_requested()`` (a signal number, 0 for none) is consulted; under
    DDP (``dist_enabled``) both answers are agreed on by all ranks in one small all-reduce,
    so every rank stops after the same batch and none waits forever for a departed peer.
    ``train_model`` is ``model`` or its DistributedDataParallel wrapper.
    """
    device = train_x.device
    n_batches = math.ceil(len(order) / config.batch_size)
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    sums = torch.zeros(3, dtype=acc_dtype, device=device)  # recon, kl, objective (summed)
    lr = optimizer.param_groups[0]["lr"]
    last_check = 0
    for b in range(n_batches):
        progress_epochs = epoch - 1 + b / n_batches
        lr = lr_at(progress_epochs, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        beta = beta_at(progress_epochs, config.beta, config.kl_warmup)
        idx = order[b * config.batch_size:(b + 1) * config.batch_size]
        xb = train_x.index_select(0, idx)  # (B, C, H, W); faster than train_x[idx]
        logits, mu, logvar = train_model(xb)
        terms = elbo_terms(logits, xb, mu, logvar, config.likelihood, beta,
                           config.free_bits, model.log_sigma)
        loss = terms.objective.mean()
        with torch.no_grad():
            sums += torch.stack([terms.recon.sum(), terms.kl.sum(),
                                 terms.objective.sum()]).to(acc_dtype)
        if (b + 1) % sync_every == 0 or b + 1 == n_batches:
            bad = float(not bool(torch.isfinite(sums).all()))  # the host sync
            signum = float(stop_requested())
            if dist_enabled:
                bad, signum = _all_max(torch.tensor([bad, signum]), device).tolist()
            if bad:
                where = (f"epoch {epoch}, batch {b + 1}/{n_batches}" if b == last_check
                         else f"epoch {epoch}, between batches {last_check + 1} and {b + 1} "
                              f"of {n_batches}")
                value = loss.item() if not math.isfinite(loss.item()) else sums[2].item()
                return EpochResult(sums.cpu().double(), lr, b, diverged=f"{value} at {where}")
            if signum:
                optimizer.zero_grad(set_to_none=True)
                return EpochResult(sums.cpu().double(), lr, b, stop_signum=int(signum))
            last_check = b + 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_batch is not None:
            on_batch()
    return EpochResult(sums.cpu().double(), lr, n_batches)


# --------------------------------------------------------------------------- train()'s steps

def setup_distributed(config: TrainConfig) -> tuple[DistInfo, torch.device, bool]:
    """Pick the device, join the ``torchrun`` process group when there is one, and set the
    CPU threads (split between ranks). Returns (dist, device, owns_group): ``owns_group``
    when this call started the group, and so must end it."""
    dist = dist_info_from_env()
    owns_group = False
    device = resolve_device(config.device)
    if dist.enabled:
        import torch.distributed as tdist

        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        owns_group = not tdist.is_initialized()
        if owns_group:
            tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        threads = config.threads or default_threads()
        if dist.enabled:
            threads = max(1, threads // dist.world_size)
        torch.set_num_threads(threads)
    return dist, device, owns_group


def teardown_distributed(dist: DistInfo, owns_group: bool) -> None:
    """Wait for every rank (rank 0 may still be writing the final epoch and its t-SNE and
    ONNX files), then leave the process group if :func:`setup_distributed` started it."""
    if not dist.enabled:
        return
    import torch.distributed as tdist

    tdist.barrier()
    if owns_group:
        tdist.destroy_process_group()


def checked_train_state(run_dir: Path, model: VAE, optimizer: Adam,
                        device: torch.device | None = None) -> dict[str, Any]:
    """``train_state.pt`` of ``run_dir`` (size-capped, loaded with ``weights_only=True``,
    checksum verified), every entry checked against ``model`` and ``optimizer`` (built
    from the run's config) by :func:`training.validate.check_train_state`, which also
    bounds the epoch by the run's saved ``epochs``. Nothing is loaded into torch yet.
    Raises :class:`rundir.RunDirError` naming the file."""
    saved = rundir.read_config(run_dir)
    state = rundir.load_train_state(run_dir)
    return validate.check_train_state(
        state, model, optimizer, run_dir / rundir.STATE_FILE,
        max_epoch=max(saved.config.epochs, saved.epochs_completed), device=device)


def check_resume(run_dir: Path) -> rundir.RunInfo:
    """Everything ``--resume`` will read, checked before anything is written or loaded:
    config.json, train_state.pt (against a CPU model and optimizer built from the config;
    the model's size is bounded by formula before it is built) and metrics.jsonl. Returns
    the run's info; raises :class:`rundir.RunDirError` (one line naming the file)."""
    info = rundir.read_config(run_dir)
    if info.is_imported:
        raise rundir.RunDirError(run_dir, "this run was imported (explorer/adopt.py): it has "
                                          "no training history to resume")
    try:
        model = rundir.build_model(info)
    except ValueError as exc:
        raise rundir.RunDirError(run_dir / rundir.CONFIG_FILE,
                                 f"cannot build the model: {exc}") from exc
    checked_train_state(run_dir, model, make_optimizer(model, info.config))
    rundir.read_metrics(run_dir)
    return info


def restore_checkpoint(run_dir: Path, model: VAE, optimizer: Adam,
                       shuffle_gen: torch.Generator, device: torch.device
                       ) -> tuple[int, list[dict[str, Any]]]:
    """``--resume``: load model, optimizer and RNG states from ``train_state.pt``, each
    checked first (:func:`checked_train_state`). Returns the epoch it holds and the
    metrics rows up to that epoch."""
    state = checked_train_state(run_dir, model, optimizer, device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_torch"])
    shuffle_gen.set_state(state["rng_shuffle"])
    if device.type == "cuda" and "rng_cuda" in state:
        try:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        except RuntimeError as exc:
            raise rundir.RunDirError(run_dir / rundir.STATE_FILE,
                                     f"rng_cuda is not a valid CUDA generator state: "
                                     f"{exc}") from exc
    start_epoch = state["epoch"]
    metrics = [m for m in rundir.read_metrics(run_dir) if m["epoch"] <= start_epoch]
    return start_epoch, metrics


def new_run_info(config: TrainConfig, data: DataSplit, run_dir: Path, start_epoch: int,
                 resume: bool) -> rundir.RunInfo:
    """``config.json``'s contents as training starts (a resumed run keeps its creation time)."""
    info = rundir.RunInfo(
        config=config, image_shape=data.image_shape, class_names=data.class_names,
        num_train=len(data.train_x), num_test=len(data.test_x), status="training",
        epochs_completed=start_epoch, versions=rundir.versions(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        argv=rundir.command_line(),
    )
    if resume:
        with contextlib.suppress(rundir.RunDirError):
            info.created = rundir.read_config(run_dir).created or info.created
    return info


def wrap_for_ddp(model: VAE, n_train: int, config: TrainConfig, dist: DistInfo,
                 device: torch.device) -> tuple[nn.Module, DistributedSampler[int] | None]:
    """The module the training step calls (``model`` or its DistributedDataParallel wrapper)
    and, under DDP, the DistributedSampler that splits the epoch's order between ranks."""
    if not dist.enabled:
        return model, None
    import inspect

    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    # the only buffer (the fixed log-sigma) never changes: no broadcast per forward; a
    # learned sigma unused by the bernoulli likelihood gets no gradient: tell DDP so
    new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync: dict[str, Any] = ({"forward_sync_buffers": False}  # torch >= 2.15's name
                                      if new_name else {"broadcast_buffers": False})
    train_model = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=config.learn_sigma and config.likelihood != "gaussian",
        **no_buffer_sync)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(n_train),  # type: ignore[arg-type]  # any sized sequence: it only takes len()
        num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=config.seed)
    return train_model, sampler


def export_onnx_or_warn(model: VAE, run_dir: Path) -> OnnxGraphs | None:
    """``training.export.export_graphs(model)``, or None after a one-line warning on stderr
    when the export fails: the epoch's weights, the source of truth, are saved regardless,
    and ``python -m training.export`` can retry."""
    try:
        return export_graphs(model)
    except Exception as exc:  # the exporter's error types vary; training must not be lost
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(f"warning: ONNX export failed ({type(exc).__name__}: {first_line}); the weights "
              f"are saved; retry with `python -m training.export {run_dir}`",
              file=sys.stderr, flush=True)
        return None


def _export_template_main() -> None:
    """Child process of :class:`EarlyExport`: read ``{"config", "image_shape", "out"}`` as
    JSON on stdin, export a freshly initialised model of that architecture, write
    ``encoder.onnx``, ``decoder.onnx`` and ``details.json`` into ``out``."""
    import json

    torch.set_num_threads(1)
    job = json.loads(sys.stdin.read())
    config = TrainConfig.from_dict(job["config"])
    model = VAE.from_config(config, tuple(job["image_shape"]))
    graphs = export_graphs(model)
    out = Path(job["out"])
    (out / "encoder.onnx").write_bytes(graphs.encoder)
    (out / "decoder.onnx").write_bytes(graphs.decoder)
    (out / "details.json").write_text(json.dumps(graphs.details))


class EarlyExport:
    """The final epoch's ONNX export, started as training starts. The ONNX graphs depend
    on the architecture only, so a child process exports a freshly initialised model of the
    same configuration (on the core the trainer leaves it: the thread governor counts the
    child as another process) while the epochs run; the final save then swaps the final
    weights into those graphs (``onnx_templates.fill``, milliseconds) instead of exporting
    (seconds: torch.onnx's dynamo exporter) and keeps the child's graphs as the
    architecture's template for later runs (``training/onnx_templates.py``). Anything
    unexpected (the child failed, or its graphs do not reproduce the model) falls back to
    exporting in process."""

    def __init__(self, config: TrainConfig, image_shape: tuple[int, int, int]):
        import json
        import subprocess
        import tempfile

        self.tmp = tempfile.TemporaryDirectory(prefix="vae-onnx-")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1"}
        with open(Path(self.tmp.name) / "stderr.txt", "wb") as errors:  # never a full pipe
            self.proc = subprocess.Popen(
                [sys.executable, "-c",
                 "from training.trainer import _export_template_main as m; m()"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        job = {"config": config.to_dict(), "image_shape": list(image_shape), "out": self.tmp.name}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job).encode())
        self.proc.stdin.close()

    def template(self, timeout: float = 120.0) -> OnnxGraphs | None:
        """The child's graphs (a freshly initialised model's weights inside), or None."""
        import json
        import subprocess

        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            return None
        if code != 0:
            return None
        out = Path(self.tmp.name)
        try:
            return OnnxGraphs(encoder=(out / "encoder.onnx").read_bytes(),
                              decoder=(out / "decoder.onnx").read_bytes(),
                              details=json.loads((out / "details.json").read_text()))
        except (OSError, ValueError):  # a damaged template: export in process instead
            return None

    def close(self) -> None:
        """Stop the child if it still runs (training stopped early) and remove its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


@dataclass
class EpochLoop:
    """The epochs of one :func:`train` call: train, check, evaluate and save, stop cleanly.

    Every rank runs :meth:`run`; only rank 0 (``dist.is_main``) evaluates and writes."""

    config: TrainConfig
    run_dir: Path
    data: DataSplit
    dist: DistInfo
    device: torch.device
    owns_group: bool
    model: VAE
    train_model: nn.Module  # model, or its DistributedDataParallel wrapper
    optimizer: Adam
    shuffle_gen: torch.Generator
    sampler: DistributedSampler[int] | None  # under DDP: this rank's share of each epoch
    info: rundir.RunInfo
    metrics: list[dict[str, Any]]
    log: Callable[[str], None]
    progress: Callable[[dict[str, Any]], None] | None
    show_progress_bar: bool
    last_good: Path | None  # the newest weights on disk
    flag: StopFlag = field(default_factory=StopFlag)
    tsne_skipped: bool = False  # a signal stopped the final epoch's t-SNE
    train_x: torch.Tensor = field(init=False)  # (N, C, H, W) on the device: batches are slices
    sync_every: int = field(init=False)  # batches between host syncs
    governor: ThreadGovernor | None = field(init=False)  # --threads 0 on the CPU: free cores
    early_export: EarlyExport | None = None  # the final ONNX export, begun in a child process
    template_key: str = field(init=False)  # the architecture's key in training/onnx_templates
    template: OnnxGraphs | None = field(init=False)  # its graphs kept by an earlier run

    def __post_init__(self) -> None:
        self.train_x = as_tensor(self.data.train_x).to(self.device)
        # host syncs: every batch on the CPU alone (free there, and exact about where a loss
        # went non-finite); every SYNC_EVERY batches on an accelerator (keeps its queue
        # full) or under DDP
        self.sync_every = SYNC_EVERY if (self.device.type != "cpu" or self.dist.enabled) else 1
        self.governor = None
        self.template_key = onnx_templates.template_key(self.config, self.data.image_shape)
        self.template = onnx_templates.load(self.template_key) if self.dist.is_main else None
        # With sleeping OpenMP threads (the CLI's and the demo set's OMP_WAIT_POLICY=PASSIVE)
        # all cores do better beside a busy neighbour than the governor's fewer threads
        # (2-D demo run beside a spinning process, load ~5: 49.9 s with 2 passive threads,
        # 60.4 s with the governor); spinning threads (torch imported before the policy could
        # be set, as in a notebook or the app's own process) collapse there: govern those.
        passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
        if self.device.type == "cpu" and self.config.threads == 0 and not self.dist.enabled \
                and not passive:
            self.governor = ThreadGovernor(default_threads())
            self.governor.start()

    def maybe_export_early(self, epochs_left: int, epoch_seconds: float) -> None:
        """After this call's first epoch: start :class:`EarlyExport` when the epochs left
        will take long enough to hide it (``EARLY_EXPORT_MIN_S``; a child costs a torch
        import, which tiny runs would only wait for) and a core is there for it: not with
        --threads 1 (the app's jobs and the demo workers: the user gave this run one
        core), never under DDP (its ranks use the cores)."""
        if self.template is None and self.dist.is_main and not self.dist.enabled \
                and default_threads() >= 2 \
                and self.config.threads != 1 \
                and epochs_left * epoch_seconds >= EARLY_EXPORT_MIN_S \
                and os.environ.get("VAE_EARLY_EXPORT", "1") != "0":
            with contextlib.suppress(OSError):
                self.early_export = EarlyExport(self.config, self.data.image_shape)

    def run(self, first_epoch: int) -> None:
        try:
            with stop_on_signals(self.flag):
                for epoch in range(first_epoch, self.config.epochs + 1):
                    t0 = time.perf_counter()
                    done, n_seen = self.train_one_epoch(epoch)
                    self.check_epoch(epoch, done)
                    if epoch == first_epoch:
                        self.maybe_export_early(self.config.epochs - epoch,
                                                time.perf_counter() - t0)
                    if self.dist.is_main:
                        self.save_epoch(epoch, done, n_seen, t0)
                    self.agree_on_stop(epoch)
        finally:
            if self.early_export is not None:
                self.early_export.close()

    def final_graphs(self) -> OnnxGraphs | None:
        """The final epoch's ONNX graphs: the final weights swapped into a template (an
        earlier run's, else the early export's, then kept for later runs), each checked
        against the torch model; else an export now (also kept as the template)."""
        if self.template is not None:
            graphs = onnx_templates.fill(self.template, self.model)
            if graphs is not None:
                return graphs
        child = self.early_export.template() if self.early_export is not None else None
        if child is not None:
            graphs = onnx_templates.fill(child, self.model)
            if graphs is not None:
                onnx_templates.store(self.template_key, child)
                return graphs
        graphs = export_onnx_or_warn(self.model, self.run_dir)
        if graphs is not None:
            onnx_templates.store(self.template_key, graphs)
        return graphs

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, shuffled. (N,) on the device."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return torch.tensor(list(self.sampler), device=self.device)
        return torch.randperm(len(self.train_x), generator=self.shuffle_gen).to(self.device)

    def train_one_epoch(self, epoch: int) -> tuple[EpochResult, int]:
        """One pass of :func:`train_epoch` (with a progress bar on a terminal). Returns what
        it did and how many samples it was given."""
        self.model.train()
        order = self.epoch_order(epoch)  # (N,)
        bar = None
        if self.show_progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=math.ceil(len(order) / self.config.batch_size),
                       desc=f"epoch {epoch}/{self.config.epochs}", leave=False)
        hooks = [h for h in (bar.update if bar is not None else None,
                             self.governor.check if self.governor is not None else None) if h]
        done = train_epoch(self.train_model, self.model, self.optimizer, self.train_x, order,
                           self.config, epoch, stop_requested=lambda: self.flag.signum,
                           on_batch=(lambda: [h() for h in hooks]) if hooks else None,
                           sync_every=self.sync_every, dist_enabled=self.dist.enabled)
        if bar is not None:
            bar.close()
        return done, len(order)

    def check_epoch(self, epoch: int, done: EpochResult) -> None:
        """Raise :class:`TrainingStopped` when the epoch diverged, was stopped by a signal,
        or left non-finite weights; the last finished epoch stays on disk as it was."""
        if done.diverged:
            good = (f"the last good checkpoint is {self.last_good} (epoch {epoch - 1})"
                    if self.last_good else "no epoch finished, so there is no checkpoint")
            raise self.stopped(f"training diverged: the loss became {done.diverged} "
                               f"(learning rate too high, or bad data?); {good}", 1)
        if done.stop_signum:
            self.flag.signum = self.flag.signum or done.stop_signum
            name = signal.Signals(self.flag.signum).name
            kept = (f"the last finished epoch ({epoch - 1}) is kept in {self.run_dir}"
                    if self.last_good else "no epoch had finished, so nothing was saved")
            raise self.stopped(f"{name} received during epoch {epoch}: stopped; {kept}; "
                               f"continue with --resume {self.run_dir}", self.flag.exit_code)
        if not _finite_weights(self.model):
            raise self.stopped(f"training diverged: non-finite weights after epoch {epoch}; "
                               f"the last good checkpoint is {self.last_good}", 1)

    def save_epoch(self, epoch: int, done: EpochResult, n_seen: int, t0: float) -> None:
        """Rank 0: evaluate on the test set, then write the epoch's files as one
        all-or-nothing group; the final epoch's group also holds the ONNX files."""
        config, run_dir = self.config, self.run_dir
        result = evaluate(self.model, as_tensor(self.data.test_x), config, self.device,
                          config.seed + EVAL_SEED_OFFSET)
        train_recon, train_kl, train_obj = (done.sums / n_seen).tolist()
        row = {
            "epoch": epoch,
            "train_recon": train_recon, "train_kl": train_kl,
            "train_loss": train_recon + train_kl, "train_objective": train_obj,
            "test_recon": float(result.recon.mean()), "test_kl": float(result.kl.mean()),
            "test_loss": float(result.recon.mean() + result.kl.mean()),
            "kl_per_dim": [float(v) for v in result.kl_per_dim],
            "active_units": result.active_units,
            "beta": beta_at(epoch, config.beta, config.kl_warmup), "lr": done.lr,
            "seconds": time.perf_counter() - t0,
        }
        self.metrics.append(row)
        final = epoch == config.epochs
        tensors = self.model.state_dict()
        labels = as_tensor(self.data.test_y)
        try:
            arrays = latent_arrays(result, labels, config, with_tsne=final and config.tsne,
                                   stop_requested=lambda: self.flag.signum)
        except TsneInterrupted:  # Ctrl-C during the t-SNE: save the epoch without it
            arrays = latent_arrays(result, labels, config, with_tsne=False)
            self.tsne_skipped = True
        state = {"epoch": epoch, "model": tensors, "optimizer": self.optimizer.state_dict(),
                 "rng_torch": torch.get_rng_state(), "rng_shuffle": self.shuffle_gen.get_state()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        onnx_graphs = self.final_graphs() if final else None
        self.info.epochs_completed = epoch
        self.info.status = "complete" if final else "training"
        if final:
            self.info.message = self.tsne_note() if self.tsne_skipped else ""
        with rundir.all_or_nothing():  # disk full: the previous epoch stays, whole
            weights_sha = rundir.save_weights(run_dir / rundir.WEIGHTS_FILE, tensors,
                                              {"epoch": str(epoch), "model": config.model})
            rundir.write_latents(run_dir, arrays)
            frames.write_frame(run_dir, epoch, result.mu)  # the film: frames.py
            rundir.write_metrics(run_dir, self.metrics)
            rundir.save_train_state(run_dir, state)
            rundir.write_config(run_dir, self.info)
            if onnx_graphs is not None:
                write_graphs(run_dir, onnx_graphs, weights_sha, epoch)
        self.last_good = run_dir / rundir.WEIGHTS_FILE
        self.log(f"epoch {epoch:3d}/{config.epochs}  train recon {train_recon:7.2f} "
                 f"kl {train_kl:6.2f} -elbo {train_recon + train_kl:7.2f} | test recon "
                 f"{row['test_recon']:7.2f} kl {row['test_kl']:6.2f} -elbo "
                 f"{row['test_loss']:7.2f} nats/sample | active {row['active_units']}/"
                 f"{config.latent_dim} | {row['seconds']:.1f}s")
        if self.progress is not None:
            self.progress(row)

    def agree_on_stop(self, epoch: int) -> None:
        """After the epoch is saved: every rank stops after the same epoch, or none does."""
        if self.dist.enabled:
            self.flag.signum = int(_all_max(torch.tensor([float(self.flag.signum)]),
                                            self.device)[0])
            self.last_good = self.run_dir / rundir.WEIGHTS_FILE  # rank 0 saved it
        if self.flag.signum:  # arrived during evaluation or the save: the epoch is on disk
            name = signal.Signals(self.flag.signum).name
            if epoch == self.config.epochs:  # the last one: nothing is left to resume
                note = f"; {self.tsne_note()}" if self.tsne_skipped else ""
                raise self.stopped(f"{name} received while the final epoch was saved: the "
                                   f"run is complete ({epoch}/{epoch} epochs) in "
                                   f"{self.run_dir}{note}", self.flag.exit_code,
                                   status="complete")
            raise self.stopped(f"{name} received after epoch {epoch} was saved; continue "
                               f"with --resume {self.run_dir}", self.flag.exit_code)

    def tsne_note(self) -> str:
        return (f"its t-SNE map was skipped (stopped by a signal); add it with "
                f"`python -m training.relatents {self.run_dir}`")

    def stopped(self, message: str, code: int, status: str | None = None) -> TrainingStopped:
        """Record why the run stopped in config.json (rank 0) and leave the process group
        (all ranks agreed to stop here, see :func:`train_epoch`). ``status`` defaults to
        ``interrupted`` (a signal) or ``failed`` (exit code 1)."""
        if self.dist.is_main:
            self.info.status = status or ("interrupted" if code != 1 else "failed")
            self.info.message = message
            with contextlib.suppress(OSError):
                rundir.write_config(self.run_dir, self.info)
        if self.dist.enabled and self.owns_group:
            import torch.distributed as tdist

            tdist.destroy_process_group()
        return TrainingStopped(message, code)


def finish_complete_run(model: VAE, run_dir: Path, info: rundir.RunInfo) -> None:
    """A resumed run that already had all its epochs: mark it complete, and export its
    ONNX files if they are missing or stale (the model holds the saved epoch's weights)."""
    info.status = "complete"
    rundir.write_config(run_dir, info)
    weights_sha = rundir.weights_sha256(model.state_dict())
    if rundir.onnx_problem(run_dir, weights_sha) is not None:
        onnx_graphs = export_onnx_or_warn(model, run_dir)
        if onnx_graphs is not None:
            write_graphs(run_dir, onnx_graphs, weights_sha, info.epochs_completed)


# --------------------------------------------------------------------------- train()

@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    status: str = "complete"


def train(config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
          data: DataSplit | None = None, log: Callable[[str], None] | None = None,
          progress: Callable[[dict[str, Any]], None] | None = None,
          show_progress_bar: bool | None = None) -> TrainResult:
    """Train ``config`` into ``run_dir`` (created if needed). With ``resume``, continue from
    the run directory's ``train_state.pt`` up to ``config.epochs``.

    ``log`` receives one line per epoch; ``progress`` receives a dict after every epoch
    (used by the app's progress bar). Raises :class:`TrainingStopped` on a signal or a
    non-finite loss, after the last good epoch is safely on disk.
    """
    config.validate()
    log = log or (lambda line: print(line, flush=True))
    run_dir = Path(run_dir)
    dist, device, owns_group = setup_distributed(config)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size,
                            config.channels, config.split_seed, config.test_fraction)
    torch.manual_seed(config.seed)
    model = VAE.from_config(config, data.image_shape).to(device)
    optimizer = make_optimizer(model, config)
    shuffle_gen = torch.Generator().manual_seed(config.seed)

    metrics: list[dict[str, Any]]
    start_epoch, metrics = 0, []
    if resume:
        start_epoch, metrics = restore_checkpoint(run_dir, model, optimizer, shuffle_gen, device)
        if start_epoch >= config.epochs:
            log(f"resume: {run_dir} already has {start_epoch} epochs (asked for {config.epochs})")
    info = new_run_info(config, data, run_dir, start_epoch, resume)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, info)

    train_model, sampler = wrap_for_ddp(model, len(data.train_x), config, dist, device)
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty() and dist.is_main
    loop = EpochLoop(
        config=config, run_dir=run_dir, data=data, dist=dist, device=device,
        owns_group=owns_group, model=model, train_model=train_model, optimizer=optimizer,
        shuffle_gen=shuffle_gen, sampler=sampler, info=info, metrics=metrics, log=log,
        progress=progress, show_progress_bar=show_progress_bar,
        last_good=run_dir / rundir.WEIGHTS_FILE if start_epoch > 0 else None)
    loop.run(first_epoch=start_epoch + 1)

    teardown_distributed(dist, owns_group)
    if dist.is_main and start_epoch >= config.epochs and (run_dir / rundir.CONFIG_FILE).exists():
        finish_complete_run(model, run_dir, info)
    return TrainResult(run_dir=run_dir, metrics=metrics)
