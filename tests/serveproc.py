"""A real `photosearch serve` process for tests: a free loopback port, a clean environment, started once it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from helpers import stores_env


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
