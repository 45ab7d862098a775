"""Recompute a run's ``latents.npz`` from its verified weights and its test set.

``python -m training.relatents RUN_DIR`` repairs a run directory whose ``latents.npz`` was
deleted, not copied along, or is corrupt. It evaluates the test set exactly as the trainer
does after an epoch (same split, same evaluation noise, same PCA and t-SNE settings), so
the file it writes matches the one training wrote for these weights. Nothing else in the
run directory changes (but for config.json's note that a signal skipped the t-SNE map,
cleared once the map is there); the file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from training import rundir


def recompute_latents(run_dir: str | os.PathLike,
                      with_tsne: bool | None = None) -> dict[str, np.ndarray]:
    """Evaluate the run's model on its test set and write ``latents.npz``; returns the
    arrays. ``with_tsne`` defaults to the run's own ``tsne`` setting. Raises
    :class:`training.rundir.RunDirError` (bad run) or :class:`training.data.DataError`."""
    from training.data import load_dataset
    from training.trainer import EVAL_SEED_OFFSET, as_tensor, evaluate, latent_arrays

    run = rundir.load_run(run_dir)
    config = run.info.config
    data = load_dataset(config.dataset, config.data_dir, False, config.image_size,
                        config.channels, config.split_seed, config.test_fraction)
    if tuple(data.image_shape) != tuple(run.info.image_shape):
        raise rundir.RunDirError(Path(run_dir) / rundir.CONFIG_FILE,
                                 f"the data set now has images of shape {data.image_shape}, "
                                 f"the run was trained on {run.info.image_shape}")
    result = evaluate(run.model, as_tensor(data.test_x), config, torch.device("cpu"),
                      config.seed + EVAL_SEED_OFFSET)
    arrays = latent_arrays(result, as_tensor(data.test_y), config,
                           with_tsne=config.tsne if with_tsne is None else with_tsne)
    rundir.write_latents(run_dir, arrays)
    info = run.info
    if "tsne" in arrays and "t-SNE map was skipped" in info.message:  # the trainer's note
        info.message = ""
        rundir.write_config(run_dir, info)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.relatents",
        description="Recompute latents.npz of a run directory from its weights and test set.")
    parser.add_argument("run_dir", help="the run directory to repair")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE projection")
    args = parser.parse_args(argv)
    from training.data import DataError

    try:
        recompute_latents(args.run_dir, with_tsne=False if args.no_tsne else None)
    except (rundir.RunDirError, DataError) as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"error: could not write {Path(args.run_dir) / rundir.LATENTS_FILE}: "
              f"{rundir.describe_os_error(exc)}", file=sys.stderr)
        return 1
    print(f"wrote {Path(args.run_dir) / rundir.LATENTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
