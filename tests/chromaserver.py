"""A real Chroma server for tests: `chroma run` (the CLI installed beside this Python) on a free loopback port.

PHOTOSEARCH_TEST_CHROMA=http://host:port uses a server that is already running instead (then stop() and
restart() refuse: the fault tests need a server of their own).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ENV = "PHOTOSEARCH_TEST_CHROMA"
START_WITHIN = 30.0  # seconds; `chroma run` listens after ~1 s on an idle machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chroma_cli() -> Path:
    cli = Path(sys.executable).with_name("chroma")
    assert cli.is_file(), f"the chroma CLI is missing beside {sys.executable}: install chromadb in this venv"
    return cli


class ChromaServer:
    """`chroma run --path PATH --port PORT --host 127.0.0.1`, waited for by its heartbeat."""

    def __init__(self, path: Path, port: int | None = None, external: str | None = None) -> None:
        self.path = path
        self.port = port or free_port()
        self.external = external
        self.url = external.rstrip("/") if external else f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = path.with_name(path.name + ".log")

    @classmethod
    def from_env(cls, path: Path) -> ChromaServer:
        server = cls(path, external=os.environ.get(ENV) or None)
        if server.external:
            server.wait()
        else:
            server.start()
        return server

    def start(self) -> None:
        assert not self.external, f"{ENV} names a server these tests do not run"
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(chroma_cli()), "run", "--path", str(self.path), "--port", str(self.port), "--host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.wait()

    def wait(self) -> None:
        """Until GET /api/v2/heartbeat answers; a failure says why, with the end of the server's log."""
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
        raise AssertionError(f"the Chroma server at {self.url} did not start within {START_WITHIN} s:\n{tail}")

    def stop(self, kill: bool = False) -> None:
        """SIGKILL (a crash, for the fault tests) or SIGTERM, and wait for the process to end."""
        assert not self.external, f"{ENV} names a server these tests do not run"
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """The same path and port again (its collections are on disk)."""
        self.stop()
        self.start()
