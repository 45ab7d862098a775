"""Reproduce the README's results table: train the default model on mnist5k with latent
dim 20 and 2, timing each whole CLI run (start-up, data, training, evaluation, saving),
and print test negative ELBO in nats per sample as a Markdown table.

    python scripts/quality.py [--out-root runs/quality]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {20: 115.0, 2: 157.0}  # issue 2's bars (the PyTorch example reaches 118.2 / ~166)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-root", default="runs/quality")
    args = parser.parse_args()
    root = Path(args.out_root)
    rows = []
    for latent_dim, target in TARGETS.items():
        out = root / f"mnist5k-vae-z{latent_dim}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "training", "--latent-dim", str(latent_dim),
                        "--out", str(out), "--quiet"], check=True)
        seconds = time.perf_counter() - t0
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        rows.append((latent_dim, last["epoch"], last["test_recon"], last["test_kl"],
                     last["test_loss"], target, seconds, last["active_units"]))
    print(f"machine: {platform.machine()}, {platform.python_version()}, "
          f"{__import__('os').cpu_count()} cores")
    print("| latent dim | epochs | test recon | test KL | test −ELBO | target | wall time (s) "
          "| active units |")
    print("|---|---|---|---|---|---|---|---|")
    for d, ep, rec, kl, loss, target, sec, au in rows:
        mark = "✅" if loss <= target and sec < 60 else "❌"
        print(f"| {d} | {ep} | {rec:.1f} | {kl:.1f} | **{loss:.1f}** | ≤ {target:.0f} {mark} "
              f"| {sec:.1f} | {au}/{d} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
