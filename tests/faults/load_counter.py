"""Counts model loads in a ``streamlit run`` server, for the many-sessions test.

The test puts a ``sitecustomize.py`` that calls :func:`install` on the server's
``PYTHONPATH``; every :func:`training.rundir.load_run` call (the model load) is then
appended as one line to the file named by ``VAE_FAULT_LOAD_LOG``. The app is unchanged.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def install() -> None:
    from training import rundir

    real_load_run = rundir.load_run
    log = Path(os.environ["VAE_FAULT_LOAD_LOG"])
    lock = threading.Lock()

    def counted_load_run(*args, **kwargs):
        with lock, log.open("a") as fh:
            fh.write(f"{time.time():.3f} {threading.current_thread().name} {args[0]}\n")
        return real_load_run(*args, **kwargs)

    rundir.load_run = counted_load_run
