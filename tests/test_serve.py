"""Serving a classroom: ``scripts/serve.sh`` (nginx in front of N ``streamlit run``
replicas, sessions kept on their replica by a cookie) and the serving defaults.

- a 2-replica proxy on loopback: 20 sessions, each kept on one replica for all its
  requests (page, websocket, model file, upload), both replicas used; the
  ``X-Vae-Replica`` header nginx adds names the replica, and an upload accepted by
  Streamlit proves it reached the process that holds the session;
- an upload (a PNG through ``/_stcore/upload_file``) and the app's processing of it, and
  the browser's model download, through the proxy;
- a replica killed mid-test: its sessions reconnect (to the other replica), the other
  sessions keep working without a reconnect, serve.sh restarts the dead replica;
- SIGINT or SIGTERM stops every process serve.sh started; bad arguments exit 2 clearly;
- no outbound request at start-up (Streamlit's external-IP look-up), checked with every
  socket connect and DNS look-up of the server process logged and refused.

Needs nginx for the proxy tests (``apt-get install -y nginx``); without it they skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _st_client():
    """``tests/faults/st_client.py``, loaded from its file (no ``sys.path`` edits)."""
    module = sys.modules.get("st_client")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "st_client", ROOT / "tests" / "faults" / "st_client.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["st_client"] = module
        spec.loader.exec_module(module)
    return module


RunResult, Session = _st_client().RunResult, _st_client().Session

SERVE = ROOT / "scripts" / "serve.sh"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian/Ubuntu: apt-get install -y nginx); "
                          "scripts/serve.sh needs it")
SESSIONS = 20
FRAGMENT_DONE = 3  # ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Served:
    """``scripts/serve.sh`` running in its own process group, with its ready line parsed."""

    def __init__(self, runs: Path, log_dir: Path, replicas: int = 2, extra_env=None):
        self.port = free_port()
        self.log_dir = log_dir
        self.out_path = log_dir.parent / f"{log_dir.name}.out"
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(
            ["bash", str(SERVE), "--replicas", str(replicas), "--port", str(self.port),
             "--address", "127.0.0.1", "--runs-dir", str(runs), "--log-dir", str(log_dir)],
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHON": sys.executable, **(extra_env or {})})
        deadline = time.monotonic() + 240
        while "serve.sh: ready" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve.sh did not get ready:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        ready = re.search(r"ready url=\S+ replicas=([0-9,]+)", self.text())
        self.replica_ports = [int(p) for p in ready.group(1).split(",")]
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/_stcore/stream"

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """serve.sh's children: "r0", "r1", ... (by port) and "nginx" (the master)."""
        found = {}
        for pid in children(self.proc.pid):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--server.port" in cmd:
                port = int(cmd[cmd.index(b"--server.port") + 1])
                found[f"r{self.replica_ports.index(port)}"] = pid
            elif cmd and b"nginx" in cmd[0]:  # "nginx: master process /usr/sbin/nginx ..."
                found["nginx"] = pid
        return found

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.out.close()
        return self.proc.returncode


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian/Ubuntu: apt-get install -y nginx)")
    root = tmp_path_factory.mktemp("serve")
    runs = root / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    server = Served(runs, root / "serve")
    server.run_dir = runs / tiny_run.name
    try:
        yield server
    finally:
        pids = server.pids()
        assert server.stop() == 143
        time.sleep(0.5)
        assert [name for name, pid in pids.items() if alive(pid)] == []


# --------------------------------------------------------------------------- a browser

class Browser:
    """What one student's browser does through the proxy: the page (cookies: nginx's
    ``vae_replica``, Streamlit's ``_streamlit_xsrf``), then the websocket with those
    cookies; every response's ``X-Vae-Replica`` is recorded."""

    def __init__(self, server: Served):
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.http, timeout=60)
        self.replicas: list[str] = []

    async def get(self, path: str) -> httpx.Response:
        response = await self.http.get(path)
        self.replicas.append(response.headers.get("x-vae-replica", "?"))
        return response

    async def open(self) -> Session:
        for path in ("/", "/_stcore/health", "/_stcore/host-config"):
            assert (await self.get(path)).status_code == 200, path
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        session = Session(url=self.server.ws, headers={"Cookie": cookie})
        await session.__aenter__()
        self.replicas.append(session.response_headers.get("x-vae-replica", "?"))
        return session

    async def upload(self, session: Session, name: str, data: bytes) -> httpx.Response:
        urls = (await session.upload_file_urls([name]))[0]
        response = await self.http.put(
            urls.upload_url, files={"file": (name, data, "image/png")},
            headers={"X-Xsrftoken": self.http.cookies["_streamlit_xsrf"]})
        self.replicas.append(response.headers.get("x-vae-replica", "?"))
        return response, urls

    async def close(self) -> None:
        await self.http.aclose()


def clean(run: RunResult, status: int = 0) -> RunResult:
    assert run.exceptions == [] and run.errors == [], (run.exceptions, run.errors)
    assert run.finished == status
    return run


def log_prior(run: RunResult) -> float:
    text = " ".join(m for m in run.markdown() if "log p(z) =" in m)
    match = re.search(r"log p\(z\) = (-?[0-9.]+) nats", text)
    assert match, "the lens's log p(z) caption is missing"
    return float(match.group(1))


def digit_png() -> bytes:
    """A dark-on-light drawing of a digit (like a phone photo of paper)."""
    image = np.full((40, 40), 255, np.uint8)
    image[8:32, 18:23] = 0
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- tests

@needs_nginx
@pytest.mark.slow
def test_twenty_sessions_each_stay_on_one_replica(served):
    async def student(k: int) -> tuple[list[str], float]:
        browser = Browser(served)
        session = await browser.open()
        try:
            first = clean(await session.rerun())
            lens = first.lens()[1]
            z = [round(-1.5 + 0.15 * k, 2), 0.5]
            moved = clean(await session.lens_release(first, z), FRAGMENT_DONE)
            expected = -0.5 * (z[0] ** 2 + z[1] ** 2) - np.log(2 * np.pi)
            # the model file the lens downloads, through the proxy, from the same replica
            model = await browser.get(lens["model"]["url"])
            assert model.status_code == 200
            assert hashlib.sha256(model.content).hexdigest() == lens["model"]["sha256"]
            # an upload is accepted only by the process that holds the session
            response, _urls = await browser.upload(session, "x.png", digit_png())
            assert response.status_code in (200, 204), response.text
            return browser.replicas, log_prior(moved) - expected
        finally:
            await session.__aexit__(None, None, None)
            await browser.close()

    async def everyone():
        return await asyncio.gather(*(student(k) for k in range(SESSIONS)))

    results = asyncio.run(everyone())
    per_session = [set(replicas) for replicas, _ in results]
    assert all(len(seen) == 1 for seen in per_session), per_session  # sticky
    landed = [next(iter(seen)) for seen in per_session]
    assert set(landed) == {"r0", "r1"}, landed  # both replicas serve
    assert min(landed.count("r0"), landed.count("r1")) >= SESSIONS // 4, landed
    assert all(abs(error) < 0.006 for _, error in results)  # each saw its own z
    access = (served.log_dir / "nginx-access.log").read_text()
    assert " 101 " in access and "replica=r0" in access and "replica=r1" in access


@needs_nginx
@pytest.mark.slow
def test_upload_and_model_file_through_the_proxy(served):
    async def go():
        browser = Browser(served)
        session = await browser.open()
        try:
            first = clean(await session.rerun())
            lens = first.lens()[1]
            model = await browser.get(lens["model"]["url"])
            assert model.status_code == 200 and len(model.content) > 1000
            assert model.headers["cache-control"].startswith("public")
            data = digit_png()
            response, urls = await browser.upload(session, "drawing.png", data)
            assert response.status_code in (200, 204), response.text
            session.set_uploaded_file(first, "Your image", urls, "drawing.png", len(data))
            processed = clean(await session.rerun())
            # a wrong or missing XSRF token is refused by Streamlit, also behind the proxy
            bad = await browser.http.put(urls.upload_url, files={"file": ("a.png", data)},
                                         headers={"X-Xsrftoken": "2|00|00|0"})
            assert bad.status_code == 403
            # over the app's 10 MB limit: refused (by nginx or Streamlit), never stored
            big = await browser.http.put(
                urls.upload_url, files={"file": ("big.png", b"\0" * (12 * 2**20))},
                headers={"X-Xsrftoken": browser.http.cookies["_streamlit_xsrf"]})
            assert big.status_code == 413
            return processed, browser.replicas
        finally:
            await session.__aexit__(None, None, None)
            await browser.close()

    processed, replicas = asyncio.run(go())
    assert len(set(replicas)) == 1, replicas
    titles = [m for m in processed.markdown() if "Your image" in m]
    assert titles, "the upload was not processed (no ELBO panel for it)"
    captions = " ".join(processed.markdown())
    assert "Converted from 40×40" in captions


@needs_nginx
@pytest.mark.slow
def test_a_killed_replica_costs_only_its_own_sessions_a_reconnect(served):
    async def go():
        sessions = []
        for k in range(6):  # three on each replica, by their cookie
            session = Session(url=served.ws, headers={"Cookie": f"vae_replica=r{k % 2}"})
            await session.__aenter__()
            first = clean(await session.rerun())
            sessions.append((session, first))
        assert [s.response_headers["x-vae-replica"] for s, _ in sessions] == ["r0", "r1"] * 3
        os.kill(served.pids()["r0"], signal.SIGKILL)
        await asyncio.sleep(1.0)
        outcome = []
        for k, (session, first) in enumerate(sessions):
            try:
                clean(await session.lens_release(first, [0.25 * k, -0.5], timeout=30),
                      FRAGMENT_DONE)
                outcome.append("kept")
            except (websockets.ConnectionClosed, ConnectionError, asyncio.TimeoutError):
                outcome.append("lost")
        # those that lost their replica reconnect as a browser does: same cookie
        moved_to = []
        for state in outcome:
            if state == "lost":
                again = Session(url=served.ws, headers={"Cookie": "vae_replica=r0"})
                await again.__aenter__()
                first = clean(await again.rerun())
                clean(await again.lens_release(first, [0.1, 0.1]), FRAGMENT_DONE)
                moved_to.append((again.response_headers.get("x-vae-replica"),
                                 again.response_headers.get("set-cookie", "")))
                await again.__aexit__(None, None, None)
        for session, _ in sessions:
            try:
                await session.__aexit__(None, None, None)
            except Exception:
                pass
        return outcome, moved_to

    outcome, moved_to = asyncio.run(go())
    assert outcome == ["lost", "kept"] * 3, outcome
    # they reconnected to the live replica, and the cookie follows them there (or, had
    # serve.sh already restarted replica 0, to it)
    restarted = "replica 0 ready again" in served.text()
    for replica, cookie in moved_to:
        assert replica == "r1" and "vae_replica=r1" in cookie or \
            (restarted and replica == "r0"), (moved_to, restarted)
    # serve.sh restarts the dead replica; new students reach it again
    deadline = time.monotonic() + 180
    while "replica 0 ready again" not in served.text():
        assert time.monotonic() < deadline, served.text()[-2000:]
        time.sleep(0.5)
    # (nginx retries a failed server after fail_timeout, 5 s: until then, the backup)
    deadline = time.monotonic() + 30
    while True:
        replica = httpx.get(served.http + "/_stcore/health", cookies={"vae_replica": "r0"},
                            timeout=30).headers["x-vae-replica"]
        if replica == "r0" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert replica == "r0"


@needs_nginx
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_serve_sh_stops_everything_it_started(tiny_run, tmp_path, sig):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    server = Served(runs, tmp_path / "serve", replicas=1)
    try:
        pids = server.pids()
        assert set(pids) == {"r0", "nginx"}, pids
        assert httpx.get(server.http + "/_stcore/health", timeout=30).status_code == 200
    finally:
        code = server.stop(sig)
    assert code == (130 if sig == signal.SIGINT else 143)
    time.sleep(0.5)
    assert [name for name, pid in pids.items() if alive(pid)] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.http + "/_stcore/health", timeout=5)
    assert "stopped" in server.text()


def serve_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SERVE), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["--replicas", "two"], "--replicas must be a whole number, not 'two'"),
    (["--replicas", "0"], "--replicas must be at least 1"),
    (["--replicas", str(4 * (os.cpu_count() or 1) + 1)], "more than 4 per CPU core"),
    (["--replicas"], "--replicas needs a value"),
    (["--port", "http"], "--port must be a number from 1 to 65535, not 'http'"),
    (["--port", "70000"], "--port must be a number from 1 to 65535"),
    (["--runs-dir", "/nonexistent/runs"], "runs folder '/nonexistent/runs' does not exist"),
    (["--colour", "blue"], "unknown argument '--colour'"),
])
def test_serve_sh_refuses_bad_arguments(args, message, tmp_path):
    done = serve_sh(*(["--runs-dir", str(tmp_path)] + args))
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr
    assert done.stdout == ""


def test_serve_sh_says_how_to_install_nginx(tmp_path):
    done = serve_sh("--runs-dir", str(tmp_path), env={"NGINX": str(tmp_path / "no-nginx")})
    assert done.returncode == 2
    assert "nginx is not installed" in done.stderr and "apt-get install -y nginx" in done.stderr


def test_serve_sh_refuses_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # NGINX=/bin/true: past the nginx check without nginx, nothing is started
        done = serve_sh("--runs-dir", str(tmp_path), "--address", "127.0.0.1", "--port",
                        str(port), env={"NGINX": shutil.which("true") or "/bin/true"})
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr


def test_serve_sh_help():
    done = serve_sh("--help")
    assert done.returncode == 0 and "--replicas N" in done.stdout


# --------------------------------------------------------------------------- outbound

GUARD = r'''
"""tests/test_serve.py: log and refuse every connect and DNS look-up that would leave
this machine (anything but loopback and numeric addresses)."""
import ipaddress, os, socket

_LOG = os.environ["VAE_NET_LOG"]


def _note(what):
    with open(_LOG, "a") as f:
        f.write(what + "\n")


def _leaves(host):
    if host in (None, "", "localhost"):
        return False
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return True  # a name: a DNS query
    return not (address.is_loopback or address.is_unspecified)


_connect, _connect_ex, _getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                       socket.getaddrinfo)


def connect(self, address):
    if isinstance(address, tuple) and _leaves(address[0]):
        _note(f"connect {address!r}")
        raise OSError(101, "refused by tests/test_serve.py: no outbound connections")
    return _connect(self, address)


def connect_ex(self, address):
    if isinstance(address, tuple) and _leaves(address[0]):
        _note(f"connect_ex {address!r}")
        return 101
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if _leaves(host if not isinstance(host, bytes) else host.decode()):
        _note(f"getaddrinfo {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "refused by tests/test_serve.py")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (connect, connect_ex,
                                                                       getaddrinfo)
_note("guard installed")
'''


@pytest.fixture
def guard(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = {**os.environ, "VAE_NET_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return env, log


def test_the_guard_catches_streamlits_external_ip_lookup(guard):
    """The check below is not vacuous: Streamlit's look-up, run under the same guard, is
    logged and refused."""
    env, log = guard
    subprocess.run([sys.executable, "-c", "from streamlit import net_util; "
                    "print(net_util.get_external_ip())"], env=env, check=True, timeout=60,
                   capture_output=True)
    lines = log.read_text().splitlines()
    assert lines[0] == "guard installed"
    assert any("checkip.amazonaws.com" in line for line in lines[1:]), lines


@pytest.mark.slow
def test_no_outbound_requests_at_start_up(guard, tiny_run, tmp_path):
    """A headless server on every interface (as in a classroom), the repo's config: no
    connect or DNS look-up leaves the machine while it starts and serves a first page."""
    env, log = guard
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    port = free_port()
    out = tmp_path / "streamlit.log"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
             "--server.address", "0.0.0.0", "--server.port", str(port),
             "--server.fileWatcherType", "none", "--", "--runs-dir", str(runs)],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, out.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health",
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.3)

        async def first_page():
            async with Session(port) as session:
                return clean(await session.rerun())

        asyncio.run(first_page())
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    text = out.read_text()
    assert log.read_text().splitlines() == ["guard installed"], log.read_text()
    assert "External URL" not in text and "external IP" not in text, text
    assert "URL: http://localhost:" in text, text  # the configured banner address


def test_config_sets_the_banner_address():
    """``browser.serverAddress`` set: what keeps Streamlit from looking up an external IP
    (and it is what the banner shows); server address and port are Streamlit's defaults."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["serverAddress"] == "localhost"
    assert config["browser"]["gatherUsageStats"] is False
    assert "address" not in config["server"] and "port" not in config["server"]
    assert config["server"]["maxUploadSize"] == 10
    template = (ROOT / "deploy" / "nginx.conf.template").read_text()
    assert "client_max_body_size 11m" in template  # the app's 10 MB plus the envelope


def test_vae_explorer_prints_the_network_address():
    from app.launch import build_command

    command = build_command(["--address", "0.0.0.0"])
    shown = command[command.index("--browser.serverAddress") + 1]
    assert shown not in ("0.0.0.0", "") and not shown.startswith("127.")
    command = build_command(["--address", "127.0.0.1"])
    assert command[command.index("--browser.serverAddress") + 1] == "127.0.0.1"
    assert "--browser.serverAddress" not in build_command([])

