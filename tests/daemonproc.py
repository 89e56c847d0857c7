"""A real `photosearch watch` process for tests, and ways to look at its catalog from outside."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

FAST = {
    "PHOTOSEARCH_WATCH_DEBOUNCE": "0.2",
    "PHOTOSEARCH_WATCH_SETTLE": "0.6",
    "PHOTOSEARCH_WATCH_BATCH_WAIT": "0.2",
    "PHOTOSEARCH_WATCH_POLLING_INTERVAL": "0.3",
    "PHOTOSEARCH_MODEL_BATCH_SIZE": "4",
}


class Daemon:
    """A `photosearch watch` process and ways to look at its catalog from outside."""

    def __init__(self, data: Path, model: Path, env: dict[str, str]) -> None:
        self.data, self.model, self.env = data, model, env
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "photosearch", "--data-dir", str(self.data), "--model", str(self.model), *args]

    def start(self) -> Daemon:
        """Start `watch` and wait until it holds the writer lock (it has started up, not just been spawned)."""
        self.output = (self.data.parent / "daemon-output.txt").open("a")  # a file: a full pipe would block it
        self.proc = subprocess.Popen(self.cli("watch"), env=self.env, stdout=self.output, stderr=subprocess.STDOUT)
        lock = self.data / "writer.lock"
        self.wait_for(lambda: lock.exists() and f'"pid": {self.proc.pid},' in lock.read_text(), what="the lock")
        return self

    def sql(self, query: str) -> list[tuple]:
        """The catalog as another process sees it (the data directory's SQLite file, or the PostgreSQL database
        of the process's PHOTOSEARCH_STORE_CATALOG), read with SQL of our own; [] before it has its tables."""
        url = self.env.get("PHOTOSEARCH_STORE_CATALOG") or f"sqlite:///{self.data / 'catalog.sqlite3'}"
        if url.startswith("sqlite") and not (self.data / "catalog.sqlite3").exists():
            return []
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(query))]
        except (OperationalError, ProgrammingError):
            return []
        finally:
            engine.dispose()

    def indexed_paths(self) -> set[str]:
        return {p for (p,) in self.sql("select path from photos where status = 'indexed'")}

    def idle(self) -> bool:
        queue = self.sql("select count(*) from queue")
        pending = self.sql("select count(*) from photos where status = 'pending'")
        return bool(queue) and queue[0][0] == 0 and pending[0][0] == 0

    def wait_for(self, condition, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc is None or self.proc.poll() is None, f"daemon exited: {self.printed()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def settle(self, expected: set[str], timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.idle() and self.indexed_paths() == expected, timeout, f"indexed == {expected}")

    def printed(self) -> str:
        return (self.data.parent / "daemon-output.txt").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        return self.proc.returncode, self.printed(), time.monotonic() - started

    def log(self) -> str:
        return (self.data / "logs" / "photosearch.log").read_text()
