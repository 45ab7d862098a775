"""Benchmark: a class of students on one server, or on several replicas behind nginx.

Each student is a websocket session (``tests/faults/st_client.py``, the browser's own
protobuf messages, asyncio) that opens the main page (all students within the first
second) and then "releases a slider" once a second: the message the latent lens sends
(``{"update": {"z": [...], "selected": None, "source": "slider", "event": n, "runtime":
"wasm"}}``: a browser that decodes itself, so the server sends no image; on the lens's
element id, rerunning only the lens's ``st.fragment``), with a new random z each time.
Measured per configuration:

- first page: connect -> the first run's ``script_finished`` (seconds; every session);
- move: send -> the fragment run's ``script_finished`` (ms; p50 / p90 / max);
- errors: exceptions or error boxes in any run, a run that did not finish, a dropped
  websocket, a timeout;
- server memory (psutil RSS summed over every server process: replicas and nginx, at the
  peak) and server CPU seconds per move;
- where students landed (replica counts, from the proxy's ``X-Vae-Replica`` header).

Configurations: 10, 30 and 60 sessions on one ``streamlit run``; 60 and 120 through
``scripts/serve.sh --replicas 2`` (nginx, cookie affinity). Each starts a fresh server
and opens one "teacher" session per replica first (the page a teacher checks before the
class), so the measurement starts from a warm server as a class would.

``--profile``: where the server's time goes for one session's first page and for a
slider release, from cProfile inside the real server (a ``sitecustomize`` wraps
Streamlit's ``ScriptRunner._run_script``: the script thread, which is where the app's own
work runs); plus the server's whole CPU time per first page and per move (psutil), which
also counts the event loop's share (serialising and sending the messages).

    python -m bench.classroom [--only 1x10 1x30 1x60 2x60 2x120] [--seconds 25]
                              [--runs-dir DIR] [--profile] [--no-configs] [--json PATH]
                              [--quiet-below LOAD [--quiet-wait S]]

Writes ``bench/results/classroom.json``; prints a table. The machine's load average is
recorded beside every row: these numbers move with whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import pstats
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, summary
from explorer.server import StreamlitServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def _st_client():
    """``tests/faults/st_client.py`` (the websocket client the fault tests use), loaded
    from its file: the project never edits ``sys.path``."""
    module = sys.modules.get("st_client")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "st_client", ROOT / "tests" / "faults" / "st_client.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["st_client"] = module
        spec.loader.exec_module(module)
    return module


RunResult, Session = _st_client().RunResult, _st_client().Session

RESULTS = RESULTS_DIR / "classroom.json"
CONFIGS = {"1x10": (1, 10), "1x30": (1, 30), "1x60": (1, 60), "2x60": (2, 60),
           "2x120": (2, 120)}
GOAL_FIRST_PAGE_S = 5.0  # every student's first page
GOAL_MOVE_P90_MS = 100.0
FRAGMENT_DONE = 3  # ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
PAGE_DONE = 0  # ForwardMsg.FINISHED_SUCCESSFULLY


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- servers

class Single:
    """One ``streamlit run`` on 127.0.0.1 (``explorer.server.StreamlitServer``)."""

    replicas = 1

    def __init__(self, runs_dir: Path, log_dir: Path):
        self.server = StreamlitServer(env={"VAE_RUNS_DIR": str(runs_dir)},
                                      script_args=["--runs-dir", str(runs_dir)],
                                      log_path=log_dir / "streamlit.log", startup_timeout=180)

    def start(self) -> None:
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.port}/_stcore/stream"

    def replica_headers(self) -> list[dict[str, str]]:
        return [{}]

    def pids(self) -> list[int]:
        return [self.server.proc.pid] if self.server.proc else []

    def stop(self) -> None:
        self.server.stop()


class Proxied:
    """``scripts/serve.sh --replicas N --address 127.0.0.1`` (nginx + N replicas)."""

    def __init__(self, runs_dir: Path, log_dir: Path, replicas: int):
        self.replicas = replicas
        self.runs_dir = runs_dir
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        port = free_port()
        self.out = open(self.log_dir / "serve.out", "w+")
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "serve.sh"), "--replicas", str(self.replicas),
             "--port", str(port), "--address", "127.0.0.1", "--runs-dir", str(self.runs_dir),
             "--log-dir", str(self.log_dir / "serve")],
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHON": sys.executable})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = (self.log_dir / "serve.out").read_text()
            if "serve.sh: ready" in text:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.sh exited {self.proc.returncode}: {text[-2000:]}")
            time.sleep(0.2)
        else:
            raise TimeoutError("serve.sh was not ready within 300 s")
        self.url = f"ws://127.0.0.1:{port}/_stcore/stream"

    def replica_headers(self) -> list[dict[str, str]]:
        return [{"Cookie": f"vae_replica=r{i}"} for i in range(self.replicas)]

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.out.close()


def server_processes(pids: list[int]) -> list:
    import psutil

    found = []
    for pid in pids:
        try:
            top = psutil.Process(pid)
            found += [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return found


def cpu_by_process(pids: list[int]) -> dict[str, float]:
    """CPU seconds of each server process: "replica :PORT", "nginx", or its name."""
    import psutil

    out: dict[str, float] = {}
    for proc in server_processes(pids):
        try:
            cmd = proc.cmdline()
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        if "streamlit" in cmd and "--server.port" in cmd:
            label = f"replica :{cmd[cmd.index('--server.port') + 1]}"
        elif cmd and "nginx" in cmd[0]:
            label = "nginx"
        else:
            label = proc.name()
        out[label] = out.get(label, 0.0) + times.user + times.system
    return out


def sample_servers(pids: list[int]) -> tuple[float, float]:
    """(RSS MB summed over every server process, CPU seconds summed)."""
    import psutil

    rss = cpu = 0.0
    for proc in server_processes(pids):
        try:
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return rss / 2**20, cpu


# --------------------------------------------------------------------------- students

@dataclass
class Student:
    first_page_s: float | None = None
    first_page_bytes: int = 0
    moves_ms: list[float] = field(default_factory=list)
    moves_at: list[float] = field(default_factory=list)  # perf_counter() when each was sent
    move_bytes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    replica: str = ""


def run_problems(run: RunResult, expect: int) -> list[str]:
    problems = [f"exception: {e.splitlines()[0][:200]}" for e in run.exceptions]
    problems += [f"error box: {e[:200]}" for e in run.errors]
    if run.finished != expect:
        problems.append(f"run finished with status {run.finished}, not {expect}")
    return problems


async def student(url: str, delay: float, stop_at: float, seed: int, min_moves: int,
                  headers: dict[str, str] | None = None) -> Student:
    """Open the main page after ``delay`` s, then release a slider once a second until
    ``stop_at`` (at least ``min_moves`` times)."""
    rng = random.Random(seed)
    out = Student()
    await asyncio.sleep(delay)
    started = time.perf_counter()
    try:
        async with Session(url=url, headers=headers, open_timeout=120) as session:
            out.replica = session.response_headers.get("x-vae-replica", "")
            first = await session.rerun(timeout=120)
            out.first_page_s = time.perf_counter() - started
            out.first_page_bytes = first.received
            out.errors += run_problems(first, PAGE_DONE)
            _element, lens = first.lens()
            lo, hi = lens["sliders"]["lo"], lens["sliders"]["hi"]
            next_move = time.perf_counter() + rng.uniform(0.2, 1.0)
            while time.perf_counter() < stop_at or len(out.moves_ms) < min_moves:
                await asyncio.sleep(max(0.0, next_move - time.perf_counter()))
                z = [round(rng.uniform(a, b), 2) for a, b in zip(lo, hi, strict=True)]
                sent = time.perf_counter()
                # a browser whose lens decodes in WebAssembly says so ("runtime": "wasm"),
                # and the server then sends no image of its own (app/main_page.py)
                run = await session.lens_release(first, z, timeout=60, runtime="wasm")
                out.moves_ms.append((time.perf_counter() - sent) * 1000)
                out.moves_at.append(sent)
                out.move_bytes.append(run.received)
                out.errors += run_problems(run, FRAGMENT_DONE)
                next_move = max(next_move + 1.0, time.perf_counter())
    except Exception as exc:  # a dropped websocket, a timeout: an error of this session
        out.errors.append(f"{type(exc).__name__}: {exc}"[:300])
    return out


async def teacher(url: str, headers: dict[str, str]) -> str:
    """The page a teacher opens before the class (warms the replica it lands on)."""
    async with Session(url=url, headers=headers, open_timeout=120) as session:
        first = await session.rerun(timeout=180)
        if run_problems(first, PAGE_DONE):
            raise RuntimeError(f"the teacher's page failed: {run_problems(first, PAGE_DONE)}")
        await session.lens_release(first, [0.0] * len(first.lens()[1]["z"]), timeout=60)
        return session.response_headers.get("x-vae-replica", "")


async def classroom(url: str, sessions: int, seconds: float, pids: list[int],
                    seed: int = 0) -> dict[str, Any]:
    import psutil

    rss_peak, cpu_before = sample_servers(pids)
    by_process_before = cpu_by_process(pids)
    client_before = sum(os.times()[:2])
    machine_before = psutil.cpu_times()
    t0 = time.perf_counter()
    stop_at = t0 + 1.0 + seconds
    rng = random.Random(seed)
    delays = [rng.uniform(0, 1.0) for _ in range(sessions)]  # all open within 1 s
    tasks = [asyncio.create_task(student(url, delay, stop_at, seed * 1000 + k, min_moves=5))
             for k, delay in enumerate(delays)]
    samples: list[tuple[float, float]] = []
    while not all(t.done() for t in tasks):
        rss, _cpu = sample_servers(pids)
        rss_peak = max(rss_peak, rss)
        samples.append((round(time.perf_counter() - t0, 1), round(rss, 1)))
        await asyncio.sleep(0.5)
    students = [t.result() for t in tasks]
    wall = time.perf_counter() - t0
    rss_end, cpu_after = sample_servers(pids)
    machine_after = psutil.cpu_times()
    machine_busy = sum(machine_after) - sum(machine_before) - (
        machine_after.idle - machine_before.idle) - (
        getattr(machine_after, "iowait", 0) - getattr(machine_before, "iowait", 0))
    client_cpu = sum(os.times()[:2]) - client_before
    by_process = {k: round(v - by_process_before.get(k, 0.0), 2)
                  for k, v in cpu_by_process(pids).items()}
    firsts = [s.first_page_s for s in students if s.first_page_s is not None]
    moves = [m for s in students for m in s.moves_ms]
    errors = [e for s in students for e in s.errors]
    replicas: dict[str, int] = {}
    for s in students:
        replicas[s.replica or "-"] = replicas.get(s.replica or "-", 0) + 1
    first_summary = summary(firsts) if firsts else {}
    move_summary = summary(moves) if moves else {}
    # steady state: the moves sent after every first page had arrived
    all_open = max((t0 + d + (s.first_page_s or 0) for s, d in zip(students, delays,
                                                                   strict=True)), default=t0)
    steady = [m for s in students for m, at in zip(s.moves_ms, s.moves_at, strict=True)
              if at >= all_open]
    steady_summary = summary(steady) if steady else {}
    return {
        "sessions": sessions, "seconds": round(wall, 1),
        "first_page_s": {k: round(v, 3) for k, v in first_summary.items()},
        "move_ms": {k: round(v, 1) for k, v in move_summary.items()},
        "move_ms_after_all_first_pages": {k: round(v, 1) for k, v in steady_summary.items()},
        "all_first_pages_done_s": round(all_open - t0, 2),
        "moves": len(moves),
        "errors": len(errors), "error_examples": sorted(set(errors))[:10],
        "sessions_with_errors": sum(1 for s in students if s.errors),
        "rss_peak_mb": round(rss_peak, 1), "rss_end_mb": round(rss_end, 1),
        "server_cpu_s": round(cpu_after - cpu_before, 2),
        "server_cpu_s_by_process": by_process,
        "client_cpu_s": round(client_cpu, 2),
        # everything else on this shared machine meanwhile: CPU seconds of other processes
        # (machine busy time - servers - this client), and time the hypervisor stole
        "other_cpu_s": round(machine_busy - (cpu_after - cpu_before) - client_cpu, 1),
        "steal_s": round(getattr(machine_after, "steal", 0) -
                         getattr(machine_before, "steal", 0), 1),
        "cores": psutil.cpu_count(),
        "first_page_kb": round(sum(s.first_page_bytes for s in students) / 1024 /
                               max(1, len(students)), 1),
        "move_kb": round(sum(sum(s.move_bytes) for s in students) / 1024 / max(1, len(moves)),
                         1),
        "landed_on": replicas, "rss_samples": samples[::4],
    }


def measure_config(name: str, runs_dir: Path, seconds: float, work: Path) -> dict[str, Any]:
    replicas, sessions = CONFIGS[name]
    log_dir = work / name
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Single(runs_dir, log_dir) if replicas == 1 else Proxied(runs_dir, log_dir,
                                                                     replicas)
    load_before = load()
    server.start()
    try:
        landed = [asyncio.run(teacher(server.url, h)) for h in server.replica_headers()]
        time.sleep(2)  # let the warm-up's leftovers settle
        rss_idle, _ = sample_servers(server.pids())
        load_start = load()
        result = asyncio.run(classroom(server.url, sessions, seconds, server.pids()))
    finally:
        server.stop()
    first, move = result["first_page_s"], result["move_ms"]
    met = (result["errors"] == 0 and bool(first) and bool(move)
           and first["max"] <= GOAL_FIRST_PAGE_S and move["p90"] <= GOAL_MOVE_P90_MS)
    return {"name": name, "replicas": replicas, "proxy": "nginx" if replicas > 1 else None,
            **result, "rss_idle_mb": round(rss_idle, 1), "teacher_replicas": landed,
            "loadavg_before": load_before, "loadavg_start": load_start,
            "loadavg_after": load(), "goal_met": met,
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


# --------------------------------------------------------------------------- profile

PROFILE_SITE = textwrap.dedent('''
    """bench/classroom.py --profile: cProfile of every script run in this server, summed
    per kind ("page": a whole-page run, "move": a fragment run), dumped after each run."""
    import cProfile, os, pstats, threading, time

    def _install():
        from streamlit.runtime.scriptrunner import script_runner as sr

        out = os.environ["CLASSROOM_PROFILE_DIR"]
        lock = threading.Lock()
        merged = {}
        seconds = {}
        original = sr.ScriptRunner._run_script

        def _run_script(self, rerun_data):
            kind = "move" if rerun_data.fragment_id_queue else "page"
            reset = os.path.join(out, "reset")
            if os.path.exists(reset):  # the benchmark's warm-up runs are not counted
                with lock:
                    merged.clear()
                    seconds.clear()
                    os.remove(reset)
            profiling = os.path.exists(os.path.join(out, "cprofile"))
            name = kind + ("-profiled" if profiling else "")
            prof = cProfile.Profile() if profiling else None
            start = time.perf_counter()
            cpu = time.thread_time()
            if prof is not None:
                prof.enable()
            try:
                return original(self, rerun_data)
            finally:
                if prof is not None:
                    prof.disable()
                took = time.perf_counter() - start, time.thread_time() - cpu
                with lock:
                    seconds.setdefault(name, []).append(took)
                    with open(os.path.join(out, name + ".times"), "w") as f:
                        f.write("\\n".join(f"{w:.6f} {c:.6f}" for w, c in seconds[name]))
                    if prof is not None:
                        stats = merged.get(kind)
                        if stats is None:
                            merged[kind] = stats = pstats.Stats(prof)
                        else:
                            stats.add(prof)
                        stats.dump_stats(os.path.join(out, kind + ".pstats"))

        sr.ScriptRunner._run_script = _run_script

    _install()
''')


def top_costs(path: Path, runs: int, limit: int = 18) -> list[dict[str, Any]]:
    """The functions with the most cumulative time per run, app code and the Streamlit
    calls it makes (module:function, ms per run)."""
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append({"where": f"{_short(file)}:{line}({func})", "calls_per_run": calls / runs,
                     "cum_ms": cumtime / runs * 1000, "self_ms": tottime / runs * 1000})
    rows.sort(key=lambda r: -r["cum_ms"])
    return [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows[:limit]]


def self_costs(path: Path, runs: int, limit: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    rows = [{"where": f"{_short(f)}:{line}({func})", "self_ms": tt / runs * 1000,
             "calls_per_run": calls / runs}
            for (f, line, func), (_cc, calls, tt, _ct, _c) in stats.stats.items()]
    rows.sort(key=lambda r: -r["self_ms"])
    return [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows[:limit]]


def _short(file: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return re.sub(r".*/lib/python3\.\d+/", "", file)


async def _profile_sessions(url: str, pages: int, moves: int, pids: list[int]
                            ) -> dict[str, Any]:
    """``pages`` sessions one after another (each: first page, then ``moves`` slider
    releases), timing each and the server's CPU for each kind of run."""
    rng = random.Random(1)
    page_cpu = move_cpu = 0.0
    page_s, move_ms = [], []
    for _ in range(pages):
        async with Session(url=url, open_timeout=120) as session:
            _rss, cpu0 = sample_servers(pids)
            t = time.perf_counter()
            first = await session.rerun(timeout=120)
            page_s.append(time.perf_counter() - t)
            await asyncio.sleep(0.3)  # the tail of sending (event loop) lands in this bucket
            _rss, cpu1 = sample_servers(pids)
            page_cpu += cpu1 - cpu0
            lo, hi = first.lens()[1]["sliders"]["lo"], first.lens()[1]["sliders"]["hi"]
            for _ in range(moves):
                _rss, cpu0 = sample_servers(pids)
                t = time.perf_counter()
                await session.lens_release(first, [rng.uniform(a, b) for a, b in zip(lo, hi,
                                                                                    strict=True)],
                                           runtime="wasm")
                move_ms.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.1)
                _rss, cpu1 = sample_servers(pids)
                move_cpu += cpu1 - cpu0
    return {"first_page_s": summary(page_s), "move_ms": summary(move_ms),
            "server_cpu_per_page_ms": page_cpu / pages * 1000,
            "server_cpu_per_move_ms": move_cpu / (pages * moves) * 1000}


def profile(runs_dir: Path, work: Path, pages: int = 6, moves: int = 10) -> dict[str, Any]:
    site = work / "profile-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(PROFILE_SITE)
    out = work / "profile"
    out.mkdir(exist_ok=True)
    load_before = load()
    server = StreamlitServer(
        env={"VAE_RUNS_DIR": str(runs_dir), "CLASSROOM_PROFILE_DIR": str(out),
             "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])},
        script_args=["--runs-dir", str(runs_dir)], log_path=work / "profile.log",
        startup_timeout=180)
    server.start()
    url = f"ws://127.0.0.1:{server.port}/_stcore/stream"
    try:
        asyncio.run(teacher(url, {}))  # warm: not counted below
        time.sleep(2)
        (out / "reset").write_text("")  # only the measured sessions' runs from here on
        # first without cProfile (its overhead roughly doubles Python-heavy code): the
        # script thread's own wall and CPU time per run, and the server's CPU per run
        measured = asyncio.run(_profile_sessions(url, pages, moves, [server.proc.pid]))
        (out / "cprofile").write_text("")
        profiled = asyncio.run(_profile_sessions(url, pages, moves, [server.proc.pid]))
        time.sleep(1)
    finally:
        server.stop()
    result: dict[str, Any] = {"pages": pages, "moves_per_page": moves, **measured,
                              "loadavg_before": load_before, "loadavg_after": load(),
                              "under_cprofile": profiled}
    for kind in ("page", "move"):
        result[kind] = {}
        for name in (kind, kind + "-profiled"):
            pairs = [line.split() for line in (out / f"{name}.times").read_text().splitlines()]
            wall = sorted(float(w) for w, _c in pairs)
            cpu = sorted(float(c) for _w, c in pairs)
            key = "script" if name == kind else "script_under_cprofile"
            result[kind][key] = {"runs": len(wall),
                                 "wall_ms_median": round(wall[len(wall) // 2] * 1000, 1),
                                 "thread_cpu_ms_median": round(cpu[len(cpu) // 2] * 1000, 1)}
        runs = result[kind]["script_under_cprofile"]["runs"]
        result[kind]["top_cumulative"] = top_costs(out / f"{kind}.pstats", runs)
        result[kind]["top_self"] = self_costs(out / f"{kind}.pstats", runs)
    return result


# --------------------------------------------------------------------------- report

def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'config':<22} {'first page s med/max':>20} {'move ms p50/p90/max':>20} "
            f"{'p90 later':>9} {'errors':>6} {'RSS MB':>7} {'CPU/move':>8} {'load':>12} "
            f"{'others':>6} {'goal':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<22} failed: {r['error'][:90]}")
            continue
        f, m = r["first_page_s"], r["move_ms"]
        later = r.get("move_ms_after_all_first_pages", {}).get("p90")
        label = (f"{r['sessions']} on 1 process" if r["replicas"] == 1 else
                 f"{r['sessions']} on {r['replicas']} + nginx")
        per_move = r["server_cpu_s"] / max(1, r["moves"]) * 1000
        moves = f"{m.get('median', 0):.0f}/{m.get('p90', 0):.0f}/{m.get('max', 0):.0f}"
        loads = f"{r['loadavg_start'][0]}→{r['loadavg_after'][0]}"
        # other processes' share of the machine's cores during the run
        others = (f"{r['other_cpu_s'] / r['seconds'] / r['cores']:.0%}"
                  if "other_cpu_s" in r else "?")
        lines.append(
            f"{label:<22} {f.get('median', 0):>9.2f} / {f.get('max', 0):<8.2f} {moves:>20} "
            f"{later if later is not None else float('nan'):>9.0f} {r['errors']:>6} "
            f"{r['rss_peak_mb']:>7.0f} {per_move:>6.0f}ms {loads:>12} "
            f"{others:>6} {'yes' if r['goal_met'] else 'no':>5}")
    return "\n".join(lines)


def wait_for_quiet(below: float | None, at_most: float) -> None:
    """On a shared machine: wait (at most ``at_most`` s) until the 1-minute load average
    is below ``below`` (None: do not wait)."""
    deadline = time.monotonic() + at_most
    while below is not None and os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


def measure(only: list[str] | None = None, seconds: float = 25.0,
            runs_dir: Path | None = None, with_profile: bool = False,
            json_path: Path = RESULTS, quiet_below: float | None = None,
            quiet_wait: float = 300.0) -> dict[str, Any]:
    runs_dir = Path(runs_dir or os.environ.get("VAE_RUNS_DIR") or ROOT / "runs").resolve()
    work = Path(tempfile.mkdtemp(prefix="classroom-"))
    payload: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "runs_dir": str(runs_dir), "seconds_of_moves": seconds,
        "goals": {"first_page_max_s": GOAL_FIRST_PAGE_S, "move_p90_ms": GOAL_MOVE_P90_MS},
        "work_dir": str(work), "rows": []}
    for name in list(CONFIGS) if only is None else only:
        wait_for_quiet(quiet_below, quiet_wait)
        print(f"[classroom] {name} (load {load()}) ...", flush=True)
        try:
            row = measure_config(name, runs_dir, seconds, work)
        except Exception as exc:  # one broken configuration must not hide the others
            row = {"name": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
        payload["rows"].append(row)
        print(table([row]).splitlines()[-1], flush=True)
    if with_profile:
        wait_for_quiet(quiet_below, quiet_wait)
        print(f"[classroom] profile (load {load()}) ...", flush=True)
        payload["profile"] = profile(runs_dir, work)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2))
    return payload


def rows(quick: bool = False) -> tuple[list, dict[str, Any]]:
    """For ``python -m bench``: the configurations (``quick``: 10 and 60 on one process,
    120 on two replicas, 15 s of moves) as table rows, and the raw payload."""
    from bench.common import Row

    only = ["1x10", "1x60", "2x120"] if quick else None
    payload = measure(only, seconds=15.0 if quick else 25.0, with_profile=not quick)
    out = []
    for r in payload["rows"]:
        if "error" in r:
            out.append(Row("classroom", f"classroom {r['name']}", None, "", r["error"][:200]))
            continue
        where = (f"{r['sessions']} sessions, 1 process" if r["replicas"] == 1 else
                 f"{r['sessions']} sessions, {r['replicas']} replicas + nginx")
        f, m = r["first_page_s"], r["move_ms"]
        out.append(Row("classroom", f"first page, {where} (max)", f.get("max"), "s",
                       f"median {f.get('median', 0):.2f} s; {r['errors']} errors; RSS "
                       f"{r['rss_peak_mb']:.0f} MB; load {r['loadavg_start'][0]}",
                       goal=f"≤ {GOAL_FIRST_PAGE_S:g} s",
                       met=f.get("max", 1e9) <= GOAL_FIRST_PAGE_S and not r["errors"]))
        out.append(Row("classroom", f"slider release round trip, {where} (p90)", m.get("p90"),
                       "ms", f"p50 {m.get('median', 0):.0f}, max {m.get('max', 0):.0f} ms, "
                       f"{r['moves']} moves; server CPU "
                       f"{r['server_cpu_s'] / max(1, r['moves']) * 1000:.0f} ms per move",
                       goal=f"≤ {GOAL_MOVE_P90_MS:g} ms",
                       met=m.get("p90", 1e9) <= GOAL_MOVE_P90_MS and not r["errors"]))
    return out, payload


def print_profile(prof: dict[str, Any]) -> None:
    print(f"\nprofile: {prof['pages']} first pages, {prof['pages'] * prof['moves_per_page']} "
          f"moves, one at a time; server CPU per first page "
          f"{prof['server_cpu_per_page_ms']:.0f} ms, per move "
          f"{prof['server_cpu_per_move_ms']:.0f} ms (load {prof['loadavg_before']})")
    for kind in ("page", "move"):
        p = prof[kind]
        plain, profiled = p["script"], p["script_under_cprofile"]
        print(f"\n{kind}: script thread {plain['wall_ms_median']} ms wall, "
              f"{plain['thread_cpu_ms_median']} ms CPU (median of {plain['runs']}); under "
              f"cProfile {profiled['wall_ms_median']} ms; top cumulative (under cProfile):")
        for r in p["top_cumulative"]:
            print(f"  {r['cum_ms']:8.1f} ms  {r['calls_per_run']:6.1f}x  {r['where']}")
        print("  top self time:")
        for r in p["top_self"][:8]:
            print(f"  {r['self_ms']:8.1f} ms  {r['calls_per_run']:6.1f}x  {r['where']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classroom",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations")
    parser.add_argument("--seconds", type=float, default=25.0,
                        help="how long the students move sliders (default 25)")
    parser.add_argument("--runs-dir", type=Path, help="default: $VAE_RUNS_DIR, else ./runs")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one session's first page and moves in the server")
    parser.add_argument("--no-configs", action="store_true", help="only --profile")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--quiet-below", type=float, metavar="LOAD",
                        help="before each configuration, wait until the 1-minute load "
                             "average is below LOAD (a shared machine)")
    parser.add_argument("--quiet-wait", type=float, default=300.0, metavar="S",
                        help="... but at most S seconds (default 300)")
    args = parser.parse_args(argv)
    # Stop the servers on Ctrl-C or SIGTERM (finally blocks), also when started in the
    # background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; load {load()}", flush=True)
    payload = measure([] if args.no_configs else args.only, args.seconds, args.runs_dir,
                      args.profile or args.no_configs, args.json, args.quiet_below,
                      args.quiet_wait)
    if payload.get("rows"):
        print()
        print(table(payload["rows"]))
    if "profile" in payload:
        print_profile(payload["profile"])
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
