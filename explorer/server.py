"""Starting and stopping a real ``streamlit run`` server on a free localhost port, for the
browser tests and the latency benchmark (the app itself never imports this).

:class:`StreamlitServer` is a context manager: it picks a free port, starts the server
with its own process group, waits for ``/_stcore/health``, and on exit terminates the
whole group (then kills it if it lingers), so no server outlives a test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``streamlit run script`` on 127.0.0.1:<free port> (or ``port``); ``url`` once started."""

    def __init__(self, script: str | os.PathLike = "streamlit_app.py",
                 env: dict[str, str] | None = None, args: list[str] | None = None,
                 script_args: list[str] | None = None, cwd: str | os.PathLike = ROOT,
                 log_path: str | os.PathLike | None = None, startup_timeout: float = 60.0,
                 port: int = 0):
        self.script = str(script)
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.script_args = script_args or []
        self.cwd = Path(cwd)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.fixed_port = port  # 0: a free port per start
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self._log: BinaryIO | None = None  # the log file while running

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StreamlitServer:
        self.port = self.fixed_port or free_port()
        cmd = [sys.executable, "-m", "streamlit", "run", self.script,
               "--server.headless", "true", "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", *self.args]
        if self.script_args:
            cmd += ["--", *self.script_args]
        self._log = open(self.log_path, "wb") if self.log_path else None
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env,
                                     stdout=subprocess.DEVNULL if self._log is None else self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self) -> float:
        """Block until ``/_stcore/health`` answers ok; returns seconds since start."""
        deadline = self.started_at + self.startup_timeout
        while time.perf_counter() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.proc.returncode} before "
                                   f"it was healthy (log: {self.log_path})")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - self.started_at
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"streamlit was not healthy within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        self._log = None

    def __enter__(self) -> StreamlitServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
