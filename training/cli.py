"""Command line: ``python -m training [options]`` -> a run directory.

Every bad argument is reported argparse-style (usage line + message, exit code 2)
*before* anything is written. A signal stops training with exit code 130 (SIGINT) or
143 (SIGTERM), a diverged run with 1; the last finished epoch stays on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import sys
from pathlib import Path

from training import rundir
from training.config import ARCHS, DATASETS, DEVICES, LIKELIHOODS, MODELS, TrainConfig

DEFAULTS = TrainConfig()


def _dataset_name(value: str) -> str:
    if value in DATASETS:
        return value
    if value.startswith("folder:"):
        path = Path(value[len("folder:"):]).expanduser()
        if not value[len("folder:"):]:
            raise argparse.ArgumentTypeError("folder: needs a path, as in folder:./my_images")
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"folder {str(path)!r} does not exist or is not a "
                                             "directory")
        return value
    raise argparse.ArgumentTypeError(
        f"unknown dataset {value!r} (choose from {', '.join(DATASETS)}, or folder:PATH)")


def _int_at_least(low: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {number}")
        return number
    parse.__name__ = f"integer >= {low}"
    return parse


def _float_at_least(low: float, strict: bool = False):
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")) or \
                (number <= low if strict else number < low):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if strict else 'at least'} {low}, got {value}")
        return number
    parse.__name__ = "number"
    return parse


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a VAE (or a plain autoencoder) and write a run directory "
                    "that the explorer app opens. Losses are in nats per sample.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", type=_dataset_name, default=d.dataset,
                   help=f"{' | '.join(DATASETS)} | folder:PATH")
    g.add_argument("--data-dir", default=d.data_dir, help="where torchvision data sets live")
    g.add_argument("--download", action="store_true", help="allow downloading torchvision sets")
    g.add_argument("--image-size", type=_int_at_least(4), default=d.image_size,
                   help="folder: data sets are resized to this square size")
    g.add_argument("--channels", type=int, choices=(1, 3), default=d.channels,
                   help="folder: data sets: 1 = grayscale, 3 = RGB")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=d.model)
    g.add_argument("--arch", choices=ARCHS, default=d.arch)
    g.add_argument("--latent-dim", type=_int_at_least(1), default=d.latent_dim)
    g.add_argument("--hidden-dim", type=_int_at_least(1), default=0,
                   help="width of each hidden layer (default: 512 with 2 layers, else 1024)")
    g.add_argument("--hidden-layers", type=_int_at_least(1), default=0,
                   help="hidden layers (default: 2 for latent dim <= 2, else 1)")
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=d.likelihood)
    g.add_argument("--gaussian-sigma", type=_float_at_least(0, strict=True),
                   default=d.gaussian_sigma, help="fixed pixel std of the gaussian likelihood")
    g.add_argument("--learn-sigma", action="store_true", help="learn the gaussian sigma")
    g = p.add_argument_group("objective")
    g.add_argument("--beta", type=_float_at_least(0), default=d.beta, help="KL weight")
    g.add_argument("--kl-warmup", type=_int_at_least(0), default=d.kl_warmup,
                   help="epochs of linear KL warm-up")
    g.add_argument("--free-bits", type=_float_at_least(0), default=d.free_bits,
                   help="per-dimension KL floor, nats")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_int_at_least(1), default=0,
                   help="epochs (default: 8 for latent dim <= 2, else 12)")
    g.add_argument("--batch-size", type=_int_at_least(1), default=d.batch_size)
    g.add_argument("--lr", type=_float_at_least(0, strict=True), default=d.lr,
                   help="peak learning rate (cosine decay to lr * lr-final-fraction)")
    g.add_argument("--lr-warmup", type=_float_at_least(0), default=d.lr_warmup,
                   help="epochs of linear learning-rate warm-up (at most half the run)")
    g.add_argument("--lr-final-fraction", type=_float_at_least(0, strict=True),
                   default=d.lr_final_fraction, help="final lr as a fraction of --lr")
    g.add_argument("--weight-decay", type=_float_at_least(0), default=d.weight_decay)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", choices=DEVICES, default=d.device)
    g.add_argument("--threads", type=_int_at_least(0), default=d.threads,
                   help="CPU threads (0 = all cores, their OpenMP threads sleeping when "
                        "idle; where they spin, the cores other processes leave free)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="run directory (default: runs/<dataset>-<model>-z<dim>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue this run directory from its last finished epoch "
                        "(its saved config is used; --epochs may raise the total)")
    g.add_argument("--no-tsne", action="store_true", help="skip the cached t-SNE projection")
    g.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name)}
    values["tsne"] = not args.no_tsne
    return TrainConfig(**values)


def default_out(config: TrainConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.dataset.replace("folder:", "folder-").replace("/", "_").strip("._-") or "run"
    return Path("runs") / f"{name}-{config.model}-z{config.latent_dim}-{stamp}"


def passive_openmp() -> None:
    """OpenMP threads that sleep when idle instead of spinning (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user chose otherwise; only effective before torch (libgomp) is loaded. With
    spinning threads a busy neighbour stalls every parallel region: 2-D demo epochs took
    0.9-6.9 s with the default policy at load 3 on 2 cores, 0.8-1.4 s passive (best
    epochs equal: 0.90 vs 0.97 s)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    passive_openmp()
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    epochs_given = any(a == "--epochs" or a.startswith("--epochs=") for a in argv_list)

    from training.data import DataError, load_dataset
    from training.trainer import TrainingStopped, check_resume, resolve_device, train

    if args.resume:
        out = Path(args.resume)
        try:  # fail now (exit 2), before touching anything: every tensor of the state
            info = check_resume(out)  # is checked against the model the config describes
        except (rundir.RunDirError, ValueError) as exc:
            parser.error(f"--resume: {exc}")
        config = info.config
        if epochs_given:
            config.epochs = args.epochs
    else:
        config = config_from_args(args)
        out = Path(args.out) if args.out else default_out(config)
        if out.exists() and not out.is_dir():
            parser.error(f"--out {out}: is a file, not a folder; give the name of a new "
                         f"folder for the run")
        if out.exists() and any(out.iterdir()):
            parser.error(f"--out {out}: already exists and is not empty; choose a new "
                         f"directory, or continue it with --resume {out}")
    try:
        config.validate()
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        from training.model import check_arch

        data = load_dataset(config.dataset, config.data_dir, config.download, config.image_size,
                            config.channels, config.split_seed, config.test_fraction)
        check_arch(config.arch, data.image_shape)
    except (DataError, ValueError) as exc:
        parser.error(str(exc))

    # under torchrun only rank 0 speaks (the trainer already logs epochs on rank 0 alone)
    quiet = args.quiet or int(os.environ.get("RANK", "0")) != 0
    log = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
    log(f"training {config.model} ({config.arch}, latent {config.latent_dim}) on "
        f"{config.dataset}: {len(data.train_x)} train / {len(data.test_x)} test images "
        f"{'x'.join(map(str, data.image_shape))} -> {out}")
    if args.resume:  # a hard kill (SIGKILL, power loss) mid-save can leave temporary files
        stale = rundir.leftover_temp_files(out)
        for tmp in stale:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if stale:
            log(f"removed {len(stale)} temporary file(s) left by an interrupted save: "
                f"{', '.join(p.name for p in stale)}")
    try:
        train(config, out, resume=bool(args.resume), data=data, log=log)
    except TrainingStopped as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted; the last finished epoch is kept in {out}", file=sys.stderr)
        return 130
    except rundir.RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        message = (f"could not write the run directory {out}: {rundir.describe_os_error(exc)} "
                   f"({exc}); files already there were left as they were")
        print(f"error: {message}", file=sys.stderr)
        with contextlib.suppress(OSError, rundir.RunDirError):  # best effort on a full disk
            info = rundir.read_config(out)
            info.status, info.message = "failed", message
            rundir.write_config(out, info)
        return 1
    log(f"done: {out}")
    return 0
