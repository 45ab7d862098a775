"""Test driver: ``python -m training`` in a child process that pauses at a chosen point,
so a signal sent by the test lands exactly there (during an epoch, or inside a save).

Usage: ``python tests/faults/signal_driver.py [training CLI arguments]`` with

- ``FAULT_PAUSE``  ``batch:N`` pauses before the N-th training batch (counting from 1 over
  the whole run); ``save:FILE:N`` pauses inside the N-th atomic write of FILE (e.g.
  ``save:latents.npz:2`` = the save of epoch 2), after its temporary file was written and
  before it is renamed into place.
- ``FAULT_READY``  a file created (holding the pid) when the pause starts; ``READY.got`` is
  created once the trainer's stop flag was set by a signal.
- ``FAULT_HOLD``   seconds to keep pausing after the first signal (room for a second one).

Only the child process is patched; the project code itself has no test hooks. The tests
also call :func:`install` in-process with a pause that signals its own process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from training import cli, rundir, trainer


def pause() -> None:
    ready = Path(os.environ["FAULT_READY"])
    ready.write_text(str(os.getpid()))
    flag = signal.getsignal(signal.SIGINT).__self__  # the trainer's StopFlag
    deadline = time.monotonic() + 120
    while not flag.signum and time.monotonic() < deadline:
        time.sleep(0.005)
    Path(f"{ready}.got").write_text(str(flag.signum))
    end = time.monotonic() + float(os.environ.get("FAULT_HOLD", "0"))
    while time.monotonic() < end:  # a second SIGINT raises KeyboardInterrupt in here
        time.sleep(0.005)


def install(point: str, on_pause: Callable[[], None] = pause,
            patch: Callable[[object, str, object], None] = setattr) -> None:
    """Make ``on_pause`` run at ``point`` (see the module docstring); ``patch`` sets the
    patched attributes (pytest's ``monkeypatch.setattr`` undoes them after a test)."""
    kind, _, rest = point.partition(":")
    if kind == "batch":
        target = int(rest)
        real_terms = trainer.elbo_terms
        calls = [0]

        def counting_terms(*args, **kwargs):
            if len(args) > 5:  # the training step passes beta and free bits; evaluation not
                calls[0] += 1
                if calls[0] == target:
                    on_pause()
            return real_terms(*args, **kwargs)

        patch(trainer, "elbo_terms", counting_terms)
    elif kind == "save":
        file_name, _, nth = rest.partition(":")
        real_atomic = rundir.atomic_path
        writes = [0]

        @contextlib.contextmanager
        def pausing_atomic(final):
            with real_atomic(final) as tmp:
                yield tmp
                if Path(final).name == file_name:
                    writes[0] += 1
                    if writes[0] == int(nth):
                        on_pause()

        patch(rundir, "atomic_path", pausing_atomic)
    else:
        raise SystemExit(f"bad FAULT_PAUSE {point!r}")


if __name__ == "__main__":
    install(os.environ["FAULT_PAUSE"])
    sys.exit(cli.main(sys.argv[1:]))
