"""What every benchmark shares: the result row, timing helpers, the machine description,
and the one table (text for the terminal, Markdown for the README, JSON on disk)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NOT_MEASURED_GPU = "not measured: no GPU in this session"


@dataclass
class Row:
    """One line of the table. ``value`` None means not measured (``detail`` says why)."""

    section: str  # training | quality | projection | app | gpu
    name: str
    value: float | None
    unit: str
    detail: str = ""  # how it was measured, what it is compared with
    goal: str = ""  # the target from issue 5, if any
    met: bool | None = None  # whether the goal was met (None: no goal, or not measured)
    extra: dict[str, Any] = field(default_factory=dict)  # raw numbers for the JSON only


def fmt(value: float | None, unit: str = "") -> str:
    """A number with about three significant digits (and thousands separators)."""
    if value is None:
        return "—"
    if value == 0:
        text = "0"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def summary(samples: list[float]) -> dict[str, float]:
    """min, median, p90 and max of a list of timings (seconds or anything)."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"min": ordered[0], "median": statistics.median(ordered), "p90": p90,
            "max": ordered[-1], "n": len(ordered)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_load(sample_seconds: float = 1.0) -> dict[str, Any]:
    """What else the machine is doing: load average and the busiest other processes."""
    info: dict[str, Any] = {}
    if hasattr(os, "getloadavg"):
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    try:
        import psutil
    except ImportError:
        return info
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != me]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(sample_seconds)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 5:
            cmd = " ".join(p.info.get("cmdline") or [p.info.get("name") or "?"])
            busy.append((pct, cmd[:80]))
    busy.sort(reverse=True)
    info["other_cpu_percent"] = round(sum(p for p, _ in busy), 1)
    info["busiest_others"] = [f"{p:.0f}% {c}" for p, c in busy[:5]]
    return info


def machine() -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    info = {
        "cpu": cpu_model(), "cores": cores, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def table_text(rows: list[Row]) -> str:
    """The table for the terminal: section, measurement, value, goal, how."""
    header = ("section", "measurement", "value", "goal", "how / compared with")
    lines = [(r.section, r.name, fmt(r.value, r.unit) if r.value is not None else "—",
              (r.goal + (" ✓" if r.met else " ✗" if r.met is False else "")).strip(),
              r.detail) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    widths[-1] = min(widths[-1], 70)

    def line(cells) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line("-" * w for w in widths)]
    out += [line(cells) for cells in lines]
    return "\n".join(out)


def table_markdown(rows: list[Row]) -> str:
    out = ["| | measurement | value | goal | how / compared with |", "|---|---|---|---|---|"]
    for r in rows:
        goal = (r.goal + (" ✅" if r.met else " ❌" if r.met is False else "")).strip()
        value = f"**{fmt(r.value, r.unit)}**" if r.value is not None else "—"
        out.append(f"| {r.section} | {r.name} | {value} | {goal} | {r.detail} |")
    return "\n".join(out)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic: a half-written results file never replaces a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def rows_to_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
