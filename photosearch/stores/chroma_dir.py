"""The data directory's embedded Chroma (the default: no server), and the vector files kept beside it.

Chroma's embedded client keeps the HNSW graphs in memory and does not notice another process's writes. So every
write holds ``chroma.lock`` exclusively and then touches it; every read holds it shared and, when the lock file's
mtime shows that another process wrote since this one last looked, first reopens the client from disk. A process
that is the only writer (the daemon) never reopens, so it stays warm. One client per directory: Chroma caches its
systems per path, so a second client would share (and on reopening, drop) the first one's.

Each collection's vectors are also kept in flat files (stores/vector_file.py), which a new process searches
without importing Chroma; the writes here keep them complete (``writing``).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from photosearch.errors import VectorStoreError
from photosearch.locking import store_lock
from photosearch.stores.boundary import store_errors
from photosearch.stores.vector_file import VectorFile
from photosearch.stores.vectors import LEGACY_PREFIX, PREFIX, get_collection

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

T = TypeVar("T")
FILES = "vectors"  # the vector files' folder, beside Chroma's in the data directory


class ChromaDir:
    """One Chroma directory in this process: its client, shared by every collection in it, safe across processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_path = directory.with_name(directory.name + ".lock")
        self._files_dir = directory.with_name(FILES)
        self._seen_generation = -1
        self._mutex = threading.RLock()  # one reopen at a time, and no query on a client being replaced
        self._client: ClientAPI | None = None
        self._collections: dict[str, Collection] = {}
        self._files: dict[str, VectorFile] = {}

    def errors(self, doing: str = "read or write") -> AbstractContextManager[None]:
        """What Chroma, sqlite3 or the OS raise in here leaves as a typed error (boundary.py)."""
        failed = f"cannot {doing} the vector store in {self.directory}"
        return store_errors(VectorStoreError, self.directory.parent, failed)

    def _load(self) -> ClientAPI:
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient
        from chromadb.config import Settings

        with self.errors("open"):
            self.directory.mkdir(parents=True, exist_ok=True)
            # Chroma caches one client system per path and process; drop it so the files are read afresh.
            SharedSystemClient.clear_system_cache()
            self._collections = {}
            self._client = chromadb.PersistentClient(
                path=str(self.directory), settings=Settings(anonymized_telemetry=False, allow_reset=False)
            )
            return self._client

    def _generation(self) -> int:
        return self._lock_path.stat().st_mtime_ns if self._lock_path.exists() else 0

    def opened(self) -> bool:
        """Whether this process has Chroma's client (and so, once queried, a collection's HNSW index) loaded."""
        return self._client is not None

    def vector_file(self, name: str) -> VectorFile | None:
        """The files that mirror collection ``name`` (stores/vector_file.py), one object per name; None for a
        collection keyed by photo id (an old library's, before content keys: stores/legacy.py), which has none."""
        return self._file(name) if name.startswith(PREFIX) else None

    def _file(self, name: str) -> VectorFile:
        with self._mutex:
            return self._files.setdefault(name, VectorFile(self._files_dir, name))

    def collection(self, name: str, create: Mapping[str, str | int] | None) -> Collection:
        assert self._client is not None
        found = self._collections.get(name)
        if found is None:
            if create is not None and name.startswith(PREFIX) and not self._exists(name):
                self._file(name).create()  # new: its files are complete from the start (in a write touching it)
            found = get_collection(self._client, name, create)
            self._collections[name] = found
        return found

    def _exists(self, name: str) -> bool:
        assert self._client is not None
        return name in {c.name for c in self._client.list_collections()}

    def forget(self, name: str) -> None:
        """Read the collection afresh on next use (a loaded index keeps settings it was loaded with)."""
        self._collections.pop(name, None)

    @contextmanager
    def reading(self) -> Iterator[ClientAPI]:
        with self.errors(), self._mutex, store_lock(self._lock_path, exclusive=False):
            if self._client is None or self._generation() != self._seen_generation:
                self._load()
                self._seen_generation = self._generation()
            assert self._client is not None
            yield self._client

    @contextmanager
    def writing(self, touching: str | None = None) -> Iterator[ClientAPI]:
        """One write, of collection ``touching`` (its vector files kept complete through it, if they are now)."""
        with self.errors(), self._mutex, store_lock(self._lock_path, exclusive=True):
            if self._client is None or self._generation() != self._seen_generation:
                self._load()
            assert self._client is not None
            before, token = self._generation(), secrets.token_hex(8)
            touched = self.vector_file(touching) if touching is not None else None
            if touched is not None:
                touched.begin(before, token)
            try:
                yield self._client
                os.utime(self._lock_path)  # tell readers in other processes to reload
                self._seen_generation = self._generation()
                self._restamp(before, self._seen_generation, token)
            finally:
                if touched is not None:
                    touched.end()

    def _restamp(self, before: int, after: int, token: str) -> None:
        """Every complete vector file stays complete across this write (the written collection's by its token)."""
        for manifest in self._files_dir.glob("*.json") if self._files_dir.is_dir() else ():
            name = manifest.name.removesuffix(".json")
            (self._files.get(name) or VectorFile(self._files_dir, name)).restamp(before, after, token)

    def call(self, work: Callable[[ClientAPI], T], *, write: bool = False, touching: str | None = None) -> T:
        with self.writing(touching) if write else self.reading() as client:
            return work(client)

    def describe(self) -> str:
        return str(self.directory)

    def written(self) -> int | None:
        """The lock file's mtime: every writer touches it (``writing``), in this process or another."""
        return self._generation()

    def names(self) -> list[str]:
        """The photosearch collections in this directory."""
        with self.reading() as client:
            return [c.name for c in client.list_collections() if c.name.startswith((PREFIX, LEGACY_PREFIX))]

    def drop(self, names: Sequence[str]) -> None:
        if not names:
            return
        with self.writing() as client:
            present = {c.name for c in client.list_collections()}
            for name in names:
                self._collections.pop(name, None)
                if name in present:
                    client.delete_collection(name)
                if name.startswith(PREFIX):
                    self._file(name).drop()

    def size_bytes(self) -> int | None:
        """The size on disk of the vector store and its files (0 if there is none yet), without opening it."""
        total = 0
        for folder in (self.directory, self._files_dir):
            for path in folder.rglob("*") if folder.is_dir() else ():
                try:
                    total += path.stat().st_size if path.is_file() else 0
                except FileNotFoundError:  # SQLite's -journal comes and goes with another process's every write
                    continue
        return total
