"""Cross-process locks on the data directory, with flock(2).

* The writer lock: one process at a time writes the index (the `watch` daemon, or an `index`/`reindex` run).
  It holds an exclusive flock on ``writer.lock`` and writes its pid, role and start time into it. The kernel
  drops an flock when its process dies, however it dies, so a lock left by a killed process is simply free:
  taking over a stale lock needs no guessing about pids.
* The store lock: Chroma's embedded client is not safe across processes (a reader beside a writer fails with
  "Error finding id"). Writes to Chroma take ``chroma.lock`` exclusively, reads take it shared; see
  vectorstore.py for how readers then reload what the writer changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from photosearch.errors import LibraryBusyError, StoreError, WriterBusyError
from photosearch.stores.boundary import store_errors

WRITER_LOCK = "writer.lock"
DAEMON_ROLE = "watch"  # the watch daemon's role in the lock file


@dataclass(frozen=True)
class LockHolder:
    pid: int
    role: str  # "watch", "index" or "reindex"
    since: datetime


class WriterLock:
    def __init__(self, handle: IO[str], holder: LockHolder) -> None:
        self._handle = handle
        self.holder = holder

    @classmethod
    def acquire(cls, data_dir: Path, role: str) -> WriterLock:
        """Take the lock or raise WriterBusyError naming the process that has it. A data directory that cannot
        be written (full, read-only) fails here first: a typed error says so (stores/boundary.py)."""
        with store_errors(StoreError, data_dir, f"cannot take the writer lock in {data_dir}"):
            data_dir.mkdir(parents=True, exist_ok=True)
            handle = (data_dir / WRITER_LOCK).open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(handle)
                handle.close()
                raise WriterBusyError(holder) from None
            holder = LockHolder(os.getpid(), role, datetime.now().replace(microsecond=0))
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"pid": holder.pid, "role": role, "since": holder.since.isoformat()}))
                handle.flush()
            except OSError:
                with suppress(OSError):  # closing flushes again, and fails the same way
                    handle.close()  # the flock goes with it
                raise
        return cls(handle, holder)

    def release(self) -> None:
        if not self._handle.closed:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Writer:
    """One library's side of the writer lock: taken once for nested blocks (re-entrant), and one write at a time
    among the threads that share the library (in `serve`, the daemon thread and the HTTP requests)."""

    def __init__(self, data_dir: Path, lock_file: bool = True) -> None:
        self._data_dir = data_dir
        # False for shared stores: their writers split the work, not take turns. The watch daemon takes the file all
        # the same, as this data directory's one daemon: status names it, a second one is refused.
        self._lock_file = lock_file
        self._held: WriterLock | None = None
        self._turn = threading.RLock()

    @contextmanager
    def holding(self, role: str) -> Iterator[None]:
        """Hold the data directory's writer lock for the block; within one already held, nothing more."""
        if self._held is not None or not (self._lock_file or role == DAEMON_ROLE):
            yield
            return
        self._held = WriterLock.acquire(self._data_dir, role)
        try:
            yield
        finally:
            self._held.release()
            self._held = None

    @contextmanager
    def turn(self, role: str, wait: float | None = None) -> Iterator[None]:
        """The writer lock, and this process's writing threads one at a time. ``wait``: seconds to give up after."""
        if not self._turn.acquire(timeout=-1 if wait is None else wait):
            raise LibraryBusyError("the watch daemon is indexing: try again when `photosearch status` shows it idle")
        try:
            with self.holding(role):
                yield
        finally:
            self._turn.release()


def current_holder(data_dir: Path) -> LockHolder | None:
    """Who holds the writer lock now, or None when nobody does (a dead holder's file content is ignored)."""
    path = data_dir / WRITER_LOCK
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def _read(handle: IO[str]) -> LockHolder:
    handle.seek(0)
    try:
        data = json.loads(handle.read())
        return LockHolder(int(data["pid"]), str(data["role"]), datetime.fromisoformat(data["since"]))
    except (ValueError, KeyError, TypeError):
        return LockHolder(0, "unknown", datetime.now())  # being written this very moment


@contextmanager
def store_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """Hold the Chroma lock for one read (shared) or one write (exclusive)."""
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
