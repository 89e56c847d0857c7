"""A collection's vectors in two flat files beside Chroma's folder: what a new process searches without Chroma.

Why: a `photosearch search` in a new process spent ~0.9 s importing chromadb and then read the collection's HNSW
file (244 MB at 100,000 photos), for a query that an exact scan of the vectors answers in ~20 ms. So each
collection in the data directory's Chroma keeps its vectors also here, where numpy maps them without a copy:

    vectors/NAME.json         the manifest {"generation", "rows", "live", "dim", "stamp", "writing"}, replaced whole
    vectors/NAME.GEN.keys     rows x 32 bytes: each row's content hash (ASCII hex); zeros once deleted
    vectors/NAME.GEN.f32      rows x dim float32: the vectors, as written to Chroma
    vectors/NAME.GEN.norm     rows float32: their lengths, so that a scan scores by cosine as Chroma does

The files are used only while they hold exactly what the collection holds, which rests on ``chroma.lock``: every
write to the data directory's Chroma holds it exclusively and then touches it (ChromaDir.writing), so its mtime
changes with every write, and the manifest's ``stamp`` is the mtime at which the files were last complete.
 * A write to the collection goes through VectorStore, which changes the files in the same turn of the lock.
   Before anything changes, the stamp is cleared and the write's token recorded (``begin``); once the files hold
   the change and the lock is touched, the token's manifest takes the new mtime (``restamp``). A crash in between
   leaves the stamp cleared, and no later write has that token: the files are not used until rebuilt.
 * A write to another collection (a reindex's) carries every complete manifest's stamp over to the new mtime.
 * Whatever writes Chroma some other way (an older photosearch) touches the lock without restamping: the files
   stop matching, and Chroma answers until they are rebuilt (``rebuild``, from the collection read whole under
   the shared lock, which keeps writers out).
A deleted vector's key is zeroed; a vector written again for a key already present is written over in place (the
same content embedded again: a vector of the same photo). Once most rows are deleted the live ones are written to
a new generation of files; the manifest names its generation, so a reader never mixes two. Readers take no lock:
they read the mtime first and then the manifest, and a write in between makes the two disagree.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

KEY = np.dtype("S32")  # a content hash: blake2b, 16 bytes, in hex
KINDS = ("keys", "f32", "norm")  # the files of a generation, one row each per vector
COMPACT_AFTER = 4096  # deleted rows tolerated before the live ones are written anew (and more than the live)


@dataclass(frozen=True)
class Manifest:
    generation: str
    rows: int  # rows in the files, deleted ones included
    live: int  # rows with a key: the collection's count
    dim: int  # 0 until the first vector
    stamp: int | None  # chroma.lock's mtime at which the files were complete; None: not usable
    writing: str | None = None  # the token of the write under way (begin)


class Snapshot:
    """The files as one manifest describes them: keys and vectors mapped read-only, looked up by key on demand."""

    def __init__(self, keys: np.ndarray, matrix: np.ndarray, norms: np.ndarray, live: int) -> None:
        self.keys = keys  # (rows,) KEY; b"" where deleted
        self.matrix = matrix  # (rows, dim) float32, as written
        self.norms = norms  # (rows,) float32: each row's length
        self.live = live
        self._dead: np.ndarray | None = None
        self._rows: dict[str, int] | None = None

    def dead(self) -> np.ndarray:
        """The rows whose vector was deleted (a mask)."""
        if self._dead is None:
            self._dead = self.keys == b""
        return self._dead

    def rows_of(self, keys: Sequence[str]) -> dict[str, int]:
        """The rows of those of ``keys`` that have one."""
        if self._rows is None:  # ~30 ms for 100,000 keys: only when a caller looks keys up
            self._rows = {key: row for row, key in enumerate(self.keys.astype("U32").tolist()) if key}
        return {key: row for key in keys if (row := self._rows.get(key)) is not None}


class VectorFile:
    """One collection's files. The writing methods are called with chroma.lock held exclusively (ChromaDir)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self._token: str | None = None  # the write under way in this process (begin)
        self._kept = False  # whether this write keeps the files complete
        self._index: tuple[Manifest, dict[str, int]] | None = None  # a writer's key -> row, as of a manifest
        self._mapped: tuple[Manifest, Snapshot] | None = None  # a reader's last snapshot

    # -- reading ----------------------------------------------------------------------------------------------
    def manifest(self) -> Manifest | None:
        try:
            return Manifest(**json.loads(self._manifest_path().read_text()))
        except (FileNotFoundError, ValueError, TypeError):  # none yet, or not one of ours: as good as none
            return None

    def snapshot(self, stamp: int | None) -> Snapshot | None:
        """The files, if complete at ``stamp`` (chroma.lock's mtime, read before this call); else None. The same
        object while the manifest is the same (not only the stamp: two writes within one tick of the file
        system's clock can leave the mtime as it was)."""
        found = self.manifest()
        if stamp is None or found is None or found.stamp != stamp:
            return None
        if self._mapped is not None and self._mapped[0] == found:
            return self._mapped[1]
        try:
            self._mapped = found, self._map(found)
        except (FileNotFoundError, ValueError):  # replaced by a new generation since the manifest was read
            return None
        return self._mapped[1]

    def _map(self, m: Manifest) -> Snapshot:
        if m.rows == 0:
            empty = np.zeros(0, dtype=np.float32)
            return Snapshot(np.zeros(0, dtype=KEY), np.zeros((0, max(m.dim, 1)), dtype=np.float32), empty, 0)
        keys = np.memmap(self._path(m, "keys"), dtype=KEY, mode="r", shape=(m.rows,))
        matrix = np.memmap(self._path(m, "f32"), dtype=np.float32, mode="r", shape=(m.rows, m.dim))
        norms = np.memmap(self._path(m, "norm"), dtype=np.float32, mode="r", shape=(m.rows,))
        return Snapshot(keys, matrix, norms, m.live)

    # -- writing (chroma.lock held exclusively) ----------------------------------------------------------------
    def begin(self, before: int, token: str) -> None:
        """A write to the collection starts: the files stay complete through it only if they are now."""
        self._token, self._kept = token, False
        found = self.manifest()
        if found is not None and found.stamp == before:
            self._write_manifest(replace(found, stamp=None, writing=token))
            self._kept = True

    def end(self) -> None:
        self._token, self._kept = None, False

    def create(self) -> None:
        """The write under way creates the collection: its (empty) files are complete from the start. (Files of
        an earlier collection of this name, or of a creation that failed, are left over: they go.)"""
        if self._token is None:
            return
        old = self.manifest()
        self._write_manifest(Manifest(secrets.token_hex(4), 0, 0, 0, None, self._token))
        self._remove_generation(old)
        self._kept = True

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """The collection upserted these (one per key, in order)."""
        if not self._kept or not len(keys):
            return
        m, index = self._writer_index()
        try:
            columns = _columns(keys, vectors)
        except ValueError:
            self._abandon(m)
            return
        dim = columns["f32"].shape[1]
        if m.dim and dim != m.dim:  # cannot be: a collection holds one model's vectors
            self._abandon(m)
            return
        m = replace(m, dim=dim)
        last = {key: i for i, key in enumerate(keys)}  # a key twice in one batch: its last vector, as Chroma keeps
        again = [(i, row) for key, i in last.items() if (row := index.get(key)) is not None]
        fresh = [i for key, i in last.items() if key not in index]
        for kind, values in columns.items():
            width = values[0].nbytes  # bytes per row
            with open(self._path(m, kind), "r+b" if m.rows else "wb") as handle:
                for i, row in again:  # the same content written again: over its row
                    _write_at(handle, row * width, values[i].tobytes())
                _write_at(handle, m.rows * width, values[fresh].tobytes(), sync=True)
        index.update((keys[i], m.rows + n) for n, i in enumerate(fresh))
        self._set(replace(m, rows=m.rows + len(fresh), live=m.live + len(fresh)), index)

    def remove(self, keys: Iterable[str]) -> None:
        """The collection deleted these (those it did not hold are ignored)."""
        if not self._kept:
            return
        m, index = self._writer_index()
        rows = sorted(row for key in keys if (row := index.pop(key, None)) is not None)
        if not rows:
            return
        with open(self._path(m, "keys"), "r+b") as names:
            for n, row in enumerate(rows, 1):
                _write_at(names, row * KEY.itemsize, bytes(KEY.itemsize), sync=n == len(rows))
        m = replace(m, live=m.live - len(rows))
        if m.rows - m.live > max(COMPACT_AFTER, m.live):
            m, index = self._compact(m, index)
        self._set(m, index)

    def restamp(self, before: int, after: int, token: str) -> None:
        """After a write (chroma.lock touched): complete files take the new mtime, as do the write's own."""
        found = self.manifest()
        if found is not None and (found.stamp == before or found.writing == token):
            self._write_manifest(replace(found, stamp=after, writing=None))

    def rebuild(self, pages: Iterable[tuple[Sequence[str], np.ndarray]], stamp: int) -> int:
        """Write the files anew from the collection's pages (read under the shared lock, at ``stamp``): how many."""
        m = Manifest(secrets.token_hex(4), 0, 0, 0, None)
        self.folder.mkdir(parents=True, exist_ok=True)
        handles = {kind: open(self._path(m, kind), "wb") for kind in KINDS}  # noqa: SIM115 (closed below)
        try:
            for keys, vectors in pages:
                if len(keys):
                    columns = _columns(keys, vectors)
                    for kind, values in columns.items():
                        handles[kind].write(values.tobytes())
                    m = replace(m, rows=m.rows + len(keys), live=m.live + len(keys), dim=columns["f32"].shape[1])
            for handle in handles.values():
                _write_at(handle, handle.tell(), b"", sync=True)
        except BaseException:
            self._remove_generation(m)  # half written: no manifest names it
            raise
        finally:
            for handle in handles.values():
                handle.close()
        old = self.manifest()
        self._write_manifest(replace(m, stamp=stamp))
        self._remove_generation(old)
        return m.live

    def drop(self) -> None:
        """The collection was dropped: its files go."""
        found = self.manifest()
        self._manifest_path().unlink(missing_ok=True)
        self._remove_generation(found)
        self._index = None

    # -- internals --------------------------------------------------------------------------------------------
    def _writer_index(self) -> tuple[Manifest, dict[str, int]]:
        """The manifest and key -> row, read again when another process wrote since this one last did."""
        found = self.manifest()
        assert found is not None  # kept: begin or create found or wrote one
        if self._index is None or _shape(self._index[0]) != _shape(found):
            snap = self._map(found)
            keys = snap.keys.astype("U32").tolist()
            self._index = found, {key: row for row, key in enumerate(keys) if key}
        return found, self._index[1]

    def _abandon(self, m: Manifest) -> None:
        """This write cannot be kept in the files: they are not used (Chroma answers) until rebuilt."""
        self._write_manifest(replace(m, stamp=None, writing=None))
        self._kept = False

    def _set(self, m: Manifest, index: dict[str, int]) -> None:
        self._write_manifest(m)
        self._index = m, index

    def _compact(self, m: Manifest, index: dict[str, int]) -> tuple[Manifest, dict[str, int]]:
        snap = self._map(m)
        live = np.flatnonzero(~snap.dead())
        fresh = replace(m, generation=secrets.token_hex(4), rows=len(live), live=len(live))
        for kind, values in (("keys", snap.keys), ("f32", snap.matrix), ("norm", snap.norms)):
            with open(self._path(fresh, kind), "wb") as handle:
                _write_at(handle, 0, np.asarray(values[live]).tobytes(), sync=True)
        self._write_manifest(fresh)  # the switch; the old generation's files go after it
        self._remove_generation(m)
        keys = np.asarray(snap.keys[live]).astype("U32").tolist()
        return fresh, {key: row for row, key in enumerate(keys)}

    def _write_manifest(self, m: Manifest) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self._manifest_path().with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(m)))
        os.replace(temporary, self._manifest_path())

    def _remove_generation(self, m: Manifest | None) -> None:
        if m is None:
            return
        for kind in KINDS:
            self._path(m, kind).unlink(missing_ok=True)

    def _manifest_path(self) -> Path:
        return self.folder / f"{self.name}.json"

    def _path(self, m: Manifest, kind: str) -> Path:
        return self.folder / f"{self.name}.{m.generation}.{kind}"


def _shape(m: Manifest) -> tuple[str, int, int]:
    """What changes when the rows do: another process's write since, if it differs from what this one saw."""
    return m.generation, m.rows, m.live


def _write_at(handle: BinaryIO, offset: int, data: bytes, sync: bool = False) -> None:
    handle.seek(offset)
    handle.write(data)
    if sync:  # the data on disk before the manifest that counts it (a power cut must not leave rows of zeros)
        handle.flush()
        os.fsync(handle.fileno())


def _columns(keys: Sequence[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """A batch's rows of each file. ValueError for a key that is not a content hash (32 characters of ASCII): the
    files hold only content-keyed collections."""
    if any(len(key) != KEY.itemsize or not key.isascii() for key in keys):
        raise ValueError("not a content hash")
    block = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), -1)
    norms = np.linalg.norm(block, axis=1).astype(np.float32)
    return {"keys": np.array(list(keys), dtype=KEY), "f32": block, "norm": norms}
