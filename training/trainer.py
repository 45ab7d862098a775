"""The training loop: in-memory batches, Adam, per-epoch evaluation, atomic checkpoints.

:func:`train` takes a :class:`TrainConfig` and a run directory and leaves a complete run
directory behind (see ``training/rundir.py``). It also:

- resumes from ``train_state.pt`` (model, optimizer, RNG and shuffling states), so a
  resumed CPU run reproduces the uninterrupted one;
- turns SIGINT / SIGTERM into a clean stop *between* batches and never inside a save
  (exit codes 130 / 143 are the CLI's job), keeping the last finished epoch on disk;
- stops on a NaN / Inf loss, naming the last good checkpoint;
- runs unchanged under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on
  CUDA), a DistributedSampler with ``set_epoch``, and only rank 0 writing files; ranks
  agree on every stop (signal, non-finite loss), and meet at a barrier before exit. With
  ``VAE_DDP_DUMP_DIR`` set, each rank also saves its final weights there as ``rank<r>.pt``
  (a testing aid: ``tests/test_ddp.py`` checks the replicas are identical).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import rundir
from training.config import TrainConfig
from training.data import DataSplit, load_dataset
from training.loss import beta_at, elbo_terms, kl_per_dim
from training.model import VAE

EVAL_BATCH = 1000
SYNC_EVERY = 16  # batches between host syncs (loss finite? stop requested?) on GPU / DDP
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
def stop_on_signals(flag: StopFlag):
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
                  with_tsne: bool) -> dict[str, np.ndarray]:
    """What ``latents.npz`` holds for one evaluation."""
    from training.projection import fit_pca, tsne

    pca, pca_mean, pca_components = fit_pca(result.mu)
    arrays = {"mu": result.mu.astype(np.float32), "labels": labels.numpy().astype(np.int64),
              "recon": result.recon.astype(np.float32), "kl": result.kl.astype(np.float32),
              "pca": pca, "pca_mean": pca_mean, "pca_components": pca_components}
    if result.logvar is not None:
        arrays["logvar"] = result.logvar.astype(np.float32)
    if with_tsne and config.latent_dim > 2 and len(result.mu) >= 5:
        arrays["tsne"] = tsne(result.mu, config.tsne_perplexity, seed=config.seed,
                              n_jobs=max(1, torch.get_num_threads()))
    return arrays


def lr_at(epoch_progress: float, config: TrainConfig) -> float:
    """Cosine decay from lr to lr * lr_final_fraction over the run."""
    frac = min(1.0, epoch_progress / max(1, config.epochs))
    low = config.lr * config.lr_final_fraction
    return low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * frac))


def _finite_weights(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model's parameters: the one optimizer of :func:`train` (and of the
    benchmarks, which time the same code path).

    Fused Adam (one kernel over all parameters) on CPU and CUDA: on the CPU it cuts a
    784-400-20 training step by about a quarter against the default per-tensor ``foreach``
    Adam (``bench/throughput.py``); the same update rule. Falls back where unsupported."""
    params = list(model.parameters())
    device_type = params[0].device.type if params else "cpu"
    if device_type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                    fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch without fused CPU Adam
            pass
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


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


def train_epoch(train_model: nn.Module, model: VAE, optimizer: torch.optim.Optimizer,
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
        xb = train_x.index_select(0, idx)  # (B, C, H, W); twice as fast as train_x[idx]
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


# --------------------------------------------------------------------------- the loop

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
    dist = dist_info_from_env()
    owns_group = False  # did train() start the process group (and so must end it)?
    log = log or (lambda line: print(line, flush=True))
    run_dir = Path(run_dir)
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

    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size,
                            config.channels, config.split_seed, config.test_fraction)
    torch.manual_seed(config.seed)
    model = VAE.from_config(config, data.image_shape).to(device)
    optimizer = make_optimizer(model, config)
    shuffle_gen = torch.Generator().manual_seed(config.seed)

    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        state = rundir.load_train_state(run_dir)
        rundir.load_state_into(model, state["model"], run_dir / rundir.STATE_FILE)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"])
        shuffle_gen.set_state(state["rng_shuffle"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start_epoch = int(state["epoch"])
        metrics = [m for m in rundir.read_metrics(run_dir) if m.get("epoch", 0) <= start_epoch]
        if start_epoch >= config.epochs:
            log(f"resume: {run_dir} already has {start_epoch} epochs (asked for {config.epochs})")

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
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, info)

    train_model: nn.Module = model
    sampler = None
    if dist.enabled:
        import inspect

        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        # the only buffer (the fixed log-sigma) never changes: no broadcast per forward; a
        # learned sigma unused by the bernoulli likelihood gets no gradient: tell DDP so
        no_buffer_sync = ({"forward_sync_buffers": False}  # torch >= 2.15's name
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel)
                          .parameters else {"broadcast_buffers": False})
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.learn_sigma and config.likelihood != "gaussian",
            **no_buffer_sync)
        sampler = DistributedSampler(range(len(data.train_x)), num_replicas=dist.world_size,
                                     rank=dist.rank, shuffle=True, seed=config.seed)

    train_x = data.train_x.to(device)  # in memory (on the device): batches are index slices
    # host syncs: every batch on the CPU alone (free there, and exact about where a loss went
    # non-finite); every SYNC_EVERY batches on an accelerator (keeps its queue full) or DDP
    sync_every = SYNC_EVERY if (device.type != "cpu" or dist.enabled) else 1
    n_train = len(train_x)
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty() and dist.is_main
    flag = StopFlag()
    last_good = run_dir / rundir.WEIGHTS_FILE if start_epoch > 0 else None

    def stopped(message: str, code: int) -> TrainingStopped:
        if dist.is_main:
            info.status = "interrupted" if code != 1 else "failed"
            info.message = message
            with contextlib.suppress(OSError):
                rundir.write_config(run_dir, info)
        if dist.enabled and owns_group:  # all ranks agreed to stop here (see train_epoch)
            import torch.distributed as tdist

            tdist.destroy_process_group()
        return TrainingStopped(message, code)

    with stop_on_signals(flag):
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler), device=device)
            else:
                order = torch.randperm(n_train, generator=shuffle_gen).to(device)
            n_batches = math.ceil(len(order) / config.batch_size)
            bar = None
            if show_progress_bar:
                from tqdm import tqdm

                bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{config.epochs}", leave=False)
            done = train_epoch(train_model, model, optimizer, train_x, order, config, epoch,
                               stop_requested=lambda: flag.signum,
                               on_batch=bar.update if bar is not None else None,
                               sync_every=sync_every, dist_enabled=dist.enabled)
            if bar is not None:
                bar.close()
            sums, lr = done.sums, done.lr
            if done.diverged:
                good = (f"the last good checkpoint is {last_good} (epoch {epoch - 1})"
                        if last_good else "no epoch finished, so there is no checkpoint")
                raise stopped(f"training diverged: the loss became {done.diverged} "
                              f"(learning rate too high, or bad data?); {good}", 1)
            if done.stop_signum:
                flag.signum = flag.signum or done.stop_signum
                name = signal.Signals(flag.signum).name
                kept = (f"the last finished epoch ({epoch - 1}) is kept in {run_dir}"
                        if last_good else "no epoch had finished, so nothing was saved")
                raise stopped(f"{name} received during epoch {epoch}: stopped; {kept}; "
                              f"continue with --resume {run_dir}", flag.exit_code)
            if not _finite_weights(model):
                raise stopped(f"training diverged: non-finite weights after epoch {epoch}; "
                              f"the last good checkpoint is {last_good}", 1)

            if dist.is_main:
                n_seen = len(order)
                result = evaluate(model, data.test_x, config, device,
                                  config.seed + EVAL_SEED_OFFSET)
                train_recon, train_kl, train_obj = (sums / n_seen).tolist()
                row = {
                    "epoch": epoch,
                    "train_recon": train_recon, "train_kl": train_kl,
                    "train_loss": train_recon + train_kl, "train_objective": train_obj,
                    "test_recon": float(result.recon.mean()), "test_kl": float(result.kl.mean()),
                    "test_loss": float(result.recon.mean() + result.kl.mean()),
                    "kl_per_dim": [float(v) for v in result.kl_per_dim],
                    "active_units": result.active_units,
                    "beta": beta_at(epoch, config.beta, config.kl_warmup), "lr": lr,
                    "seconds": time.perf_counter() - t0,
                }
                metrics.append(row)
                final = epoch == config.epochs
                tensors = model.state_dict()
                arrays = latent_arrays(result, data.test_y, config,
                                       with_tsne=final and config.tsne)
                state = {"epoch": epoch, "model": tensors, "optimizer": optimizer.state_dict(),
                         "rng_torch": torch.get_rng_state(), "rng_shuffle": shuffle_gen.get_state()}
                if device.type == "cuda":
                    state["rng_cuda"] = torch.cuda.get_rng_state(device)
                info.epochs_completed = epoch
                info.status = "complete" if final else "training"
                with rundir.all_or_nothing():  # disk full: the previous epoch stays, whole
                    rundir.save_weights(run_dir / rundir.WEIGHTS_FILE, tensors,
                                        {"epoch": str(epoch), "model": config.model})
                    rundir.write_latents(run_dir, arrays)
                    rundir.write_metrics(run_dir, metrics)
                    rundir.save_train_state(run_dir, state)
                    rundir.write_config(run_dir, info)
                last_good = run_dir / rundir.WEIGHTS_FILE
                row_seconds = row["seconds"]
                log(f"epoch {epoch:3d}/{config.epochs}  train recon {train_recon:7.2f} "
                    f"kl {train_kl:6.2f} -elbo {train_recon + train_kl:7.2f} | test recon "
                    f"{row['test_recon']:7.2f} kl {row['test_kl']:6.2f} -elbo "
                    f"{row['test_loss']:7.2f} nats/sample | active {row['active_units']}/"
                    f"{config.latent_dim} | {row_seconds:.1f}s")
                if progress is not None:
                    progress(row)
            if dist.enabled:  # every rank stops after the same epoch, or none does
                flag.signum = int(_all_max(torch.tensor([float(flag.signum)]), device)[0])
                last_good = run_dir / rundir.WEIGHTS_FILE  # rank 0 saved it (all ranks' word)
            if flag.signum:  # arrived during evaluation or the save: the epoch is on disk
                name = signal.Signals(flag.signum).name
                raise stopped(f"{name} received after epoch {epoch} was saved; continue with "
                              f"--resume {run_dir}", flag.exit_code)

    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()  # rank 0 may still be writing the final epoch (and its t-SNE)
        dump = os.environ.get("VAE_DDP_DUMP_DIR")
        if dump:  # testing aid: each rank's final weights, to prove the replicas agree
            Path(dump).mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), Path(dump) / f"rank{dist.rank}.pt")
        if owns_group:
            tdist.destroy_process_group()
    if dist.is_main and start_epoch >= config.epochs and (run_dir / rundir.CONFIG_FILE).exists():
        info.status = "complete"
        rundir.write_config(run_dir, info)
    return TrainResult(run_dir=run_dir, metrics=metrics)
