"""The ``vae-explorer`` command: serve the app with ``streamlit run streamlit_app.py``.

``vae-explorer [--runs-dir PATH] [--data-root PATH] [--no-train] [--dev] [--port N]
[--address HOST] [STREAMLIT OPTIONS...]``
(``--address``: also the URL the start-up banner prints, the machine's network address
for ``0.0.0.0``; several processes behind nginx: ``scripts/serve.sh``, docs/serving.md)
replaces itself with ``python -m streamlit run <streamlit_app.py> ... -- --runs-dir PATH``.
The settings in ``.streamlit/config.toml`` beside ``streamlit_app.py`` apply (Streamlit
reads the main script's folder), whatever the current folder is.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from pathlib import Path


def app_script() -> Path:
    """The installed ``streamlit_app.py`` (the page list), wherever the package lives."""
    spec = importlib.util.find_spec("streamlit_app")
    if spec is None or spec.origin is None:
        raise SystemExit("vae-explorer: streamlit_app.py is not installed; reinstall the "
                         "project with `pip install -e .` from its folder")
    return Path(spec.origin)


def display_address(address: str) -> str:
    """The address students type for a server listening on ``address``: the machine's
    network address for a wildcard (``0.0.0.0``, ``::``), else ``address`` itself. Finding
    it sends nothing: a UDP socket's ``connect`` only picks the outgoing interface."""
    if address not in ("0.0.0.0", "::", "[::]", ""):
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): never routed anywhere
            return sock.getsockname()[0]
        except OSError:
            return "localhost"


def build_command(argv: list[str] | None = None) -> list[str]:
    """The ``streamlit run`` command line for these ``vae-explorer`` arguments."""
    parser = argparse.ArgumentParser(
        prog="vae-explorer", description="Serve the VAE Latent Explorer app in the browser.",
        epilog="Other options are passed to `streamlit run` (e.g. --server.headless true).")
    parser.add_argument("--runs-dir", default=os.environ.get("VAE_RUNS_DIR") or "runs",
                        help="folder of run directories to explore (default: $VAE_RUNS_DIR "
                             "or ./runs)")
    parser.add_argument("--data-root", help="folder under which the Train page may use image "
                                            "folders as data sets (default: none offered)")
    parser.add_argument("--no-train", action="store_true",
                        help="turn training from the browser off (the Train page says so)")
    parser.add_argument("--dev", action="store_true",
                        help="developer mode: full error details (tracebacks) in the browser, "
                             "and edited source files reloaded")
    parser.add_argument("--port", type=int, help="port to listen on (Streamlit's default 8501)")
    parser.add_argument("--address", help="address to listen on (e.g. 127.0.0.1 for this "
                                          "machine only, 0.0.0.0 for a classroom network)")
    args, streamlit_args = parser.parse_known_args(argv)
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    command = [sys.executable, "-m", "streamlit", "run", str(app_script())]
    if args.port is not None:
        command += ["--server.port", str(args.port)]
    if args.address:
        command += ["--server.address", args.address]
        if not any(arg.startswith("--browser.serverAddress") for arg in streamlit_args):
            # the URL the banner prints (the config's "localhost" is only right for
            # 127.0.0.1); setting it also keeps Streamlit from looking up an external IP
            command += ["--browser.serverAddress", display_address(args.address)]
    if args.dev:  # tracebacks in the browser, and code changes picked up on rerun
        command += ["--client.showErrorDetails", "full", "--server.fileWatcherType", "auto"]
    script_args = ["--runs-dir", str(Path(args.runs_dir).resolve())]
    if args.data_root:
        script_args += ["--data-root", str(Path(args.data_root).expanduser().resolve())]
    if args.no_train:
        script_args.append("--no-train")
    return command + streamlit_args + ["--", *script_args]


def main(argv: list[str] | None = None) -> int:
    command = build_command(argv)
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process
