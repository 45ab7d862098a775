"""Training package: data, model, loss, trainer and the run-directory contract.

Entry points: ``python -m training`` (CLI), :func:`training.trainer.train`,
:func:`training.rundir.load_run`. Nothing runs at import time.
"""

__version__ = "0.1.0"
