"""Fixtures of the fault and bad-input suite (helpers live in ``faultkit.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fresh_run(tiny_run, copy_run) -> Path:
    """A private copy of the 3-epoch tiny run, safe to damage."""
    return copy_run(tiny_run, "victim")
