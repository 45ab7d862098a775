"""Counts model loads in a ``streamlit run`` server, for the many-sessions test.

The test puts a ``sitecustomize.py`` that calls :func:`install` on the server's
``PYTHONPATH``; every model load (:func:`explorer.onnx_model.load_onnx_model`, the main
page's, and :func:`training.rundir.load_run`, the teaching pages') is then appended as one
line to the file named by ``VAE_FAULT_LOAD_LOG``, with the loading thread's name. The app
is unchanged.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def install() -> None:
    from explorer import onnx_model
    from training import rundir

    log = Path(os.environ["VAE_FAULT_LOAD_LOG"])
    lock = threading.Lock()

    def counted(real):
        def load(*args, **kwargs):
            with lock, log.open("a") as fh:
                fh.write(f"{time.time():.3f} {threading.current_thread().name} {args[0]}\n")
            return real(*args, **kwargs)
        return load

    # before app_shared imports them by name (this runs at interpreter start)
    onnx_model.load_onnx_model = counted(onnx_model.load_onnx_model)
    rundir.load_run = counted(rundir.load_run)
