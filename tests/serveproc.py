"""A real `photosearch serve` process for tests: a free loopback port, a clean environment, started once it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import Counted, make_config, make_photo, stores_env

from photosearch.library import Library


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No user config, no PHOTOSEARCH_* of the developer's shell; the stores of the backend under test."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")} | stores_env()
    return {**clean, "XDG_CONFIG_HOME": str(home / "xdg"), "HF_HOME": str(home / "hf"), **extra}


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/status", timeout=2)
    except OSError:
        return False
    return True


def start_serve(cmd: list[str], env: dict[str, str], log_path: Path, port: int) -> subprocess.Popen[bytes]:
    """`photosearch serve` started (``cmd`` without the port), once its API answers (within 60 s)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not answers(f"http://127.0.0.1:{port}"):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"the server did not answer within 60 s: {log_path.read_text()}"
        time.sleep(0.2)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM, and its exit status once it has stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def serve_library(
    base: Path, model_dir: Path, env: dict[str, str]
) -> tuple[list[str], Path, subprocess.Popen[bytes], int]:
    """Eight photos in base/lib, indexed in this process (the server is what is tested), then served by
    `photosearch serve` on a free port (the CLI's command is without a subcommand)."""
    root = base / "lib"
    for i in range(8):
        make_photo(root / f"p{i}.jpg", seed=i)
    with Library.open(make_config(base / "data", model_dir), embedder_factory=Counted()) as library:
        library.index([root])
    cli = [sys.executable, "-m", "photosearch", "--data-dir", str(base / "data"), "--model", str(model_dir)]
    port = free_port()
    proc = start_serve([*cli, "serve"], env, base / "serve.log", port)
    # The page answers once a search is ready: the text encoder and the vector store are loaded, one answered.
    assert "ready to search" in (base / "serve.log").read_text()
    return cli, root, proc, port


def run_ok(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A CLI command that must succeed (within 120 s), its output as text."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result
