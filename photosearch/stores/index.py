"""The Index: the catalog and the vector collection of one library, written together in a safe order.

Chroma and the catalog cannot share a transaction, so every write goes in an order that any interruption
survives, and only this module knows it:

  * add (embedded, or a vector copied from byte-identical content): rows set to ``pending`` (committed) ->
    vectors upserted under the row ids -> rows set to ``indexed``. A crash in between leaves pending rows, which
    the next run processes again; the upsert is idempotent, so no vector is ever duplicated.
  * move: the vectors' metadata first, then the rows. Stopped in between, the next run finds the old row
    missing and the file new, and moves it again.
  * remove, or a file turned unreadable: the rows go (or are set to ``failed``) first, then the vectors.
    Searches only return vectors whose row is ``indexed``, so a vector left behind is never shown.
  * the run journal (meta ``run_state``) is set before the first write and cleared after the last. A run that
    finds it set, or finds the two stores' counts disagreeing, reconciles first: vectors without an indexed row
    are deleted, indexed rows without a vector go back to pending. After that the stores agree exactly.

Every operation takes a batch, and costs a few statements and store calls whatever its size: moving or
copying a folder of thousands of photos must not be one round trip per photo to either store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from photosearch.facts import PhotoFacts, fact_values
from photosearch.stores.catalog import Catalog, FileState
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore, folder_metadata, folder_update

JOURNAL_KEY = "run_state"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """Where a photo file is, as the catalog records it."""

    path: Path
    root_id: int
    folder: str  # posix path of its parent, relative to the root
    size: int
    mtime_ns: int

    def row(self) -> dict[str, Any]:
        return {"path": str(self.path), "root_id": self.root_id, "folder": self.folder, "size": self.size,
                "mtime_ns": self.mtime_ns}  # fmt: skip


@dataclass(frozen=True)
class NewPhoto:
    """A photo read and decoded: where it is, its bytes' hash and its facts (as stored: the time taken naive)."""

    location: Location
    content_hash: str
    facts: PhotoFacts


def vector_metadata(root_id: int, folder: str, taken_at: datetime | None) -> dict[str, Any]:
    meta = folder_metadata(root_id, folder)
    if taken_at is not None:
        meta["taken_at"] = int(taken_at.timestamp())
    return meta


@contextmanager
def journal(catalog: Catalog, what: str) -> Iterator[None]:
    """Mark the stores as being written for the block; left set when it raises, so the next run checks. Also for
    the writes of whole roots (indexing/roots.py), which take the same order."""
    catalog.set_meta({JOURNAL_KEY: f"{what} pid={os.getpid()}"})
    yield
    catalog.set_meta({JOURNAL_KEY: None})


class Index:
    """One library's catalog and vector collection. The collection is opened on first use (``vectors``):
    a run that only finds unchanged files never imports Chroma."""

    def __init__(self, catalog: Catalog, vectors: Callable[[], VectorStore]) -> None:
        self.catalog = catalog
        self._vectors = vectors

    # -- the run journal -------------------------------------------------------------------------------
    def journal(self, what: str) -> AbstractContextManager[None]:
        return journal(self.catalog, what)

    def reconcile_if_needed(self) -> bool:
        indexed_count = self.catalog.counts()[PhotoStatus.INDEXED.value]
        if self.catalog.get_meta(JOURNAL_KEY) is None and self._vectors().count() == indexed_count:
            return False
        self.reconcile()
        return True

    def reconcile(self) -> None:
        """Make the collection hold exactly one vector per indexed row (see the module docstring)."""
        indexed = self.catalog.ids_with_status(PhotoStatus.INDEXED)
        stored = self._vectors().all_ids()
        log.warning(
            "the last run did not finish: reconciling (%d orphan vectors, %d rows without a vector)",
            len(stored - indexed), len(indexed - stored),
        )  # fmt: skip
        self._vectors().delete(sorted(stored - indexed))
        self.catalog.set_status(sorted(indexed - stored), PhotoStatus.PENDING)

    # -- writes ----------------------------------------------------------------------------------------
    def add(self, photos: Sequence[NewPhoto], embed: Callable[[], np.ndarray]) -> list[int]:
        """Rows pending -> ``embed()`` (one vector per photo, in order) -> vectors -> rows indexed."""
        if not photos:
            return []
        rows = [{**p.location.row(), **fact_values(p.facts), "content_hash": p.content_hash,
                 "status": PhotoStatus.PENDING, "error": None} for p in photos]  # fmt: skip
        ids = self.catalog.upsert_files(rows)
        vectors = embed()
        metas = [vector_metadata(p.location.root_id, p.location.folder, p.facts.taken_at) for p in photos]
        self._vectors().upsert(ids, vectors, metas)
        self.catalog.set_indexed(ids)
        return ids

    def copy(self, copies: Sequence[tuple[Location, int]]) -> list[int]:
        """Byte-identical duplicates, (location, id of an indexed photo with the same bytes): each gets its own
        row with the source's facts and a copy of its vector, without the model."""
        if not copies:
            return []
        sources = sorted({source for _, source in copies})
        records = self.catalog.records(sources)
        vectors = self._vectors().vectors(sources)
        usable = [(loc, src) for loc, src in copies if src in records and src in vectors]
        if len(usable) < len(copies):  # only after a store was changed behind our back: the next run adds them
            log.warning("%d duplicates not copied: their source vanished meanwhile", len(copies) - len(usable))
        rows = []
        for loc, src in usable:
            record = records[src]
            rows.append({**loc.row(), **fact_values(record), "content_hash": record.content_hash,
                         "status": PhotoStatus.PENDING, "error": None})  # fmt: skip
        ids = self.catalog.upsert_files(rows)
        if ids:
            stacked = np.stack([vectors[src] for _, src in usable])
            metas = [vector_metadata(loc.root_id, loc.folder, records[src].taken_at) for loc, src in usable]
            self._vectors().upsert(ids, stacked, metas)
            self.catalog.set_indexed(ids)
        return ids

    def move(self, moves: Sequence[tuple[FileState, Location]]) -> None:
        """Indexed photos whose files moved keep their rows and vectors: metadata first, then the rows."""
        if not moves:
            return
        metas = [folder_update(loc.root_id, loc.folder, old.folder) for old, loc in moves]
        self._vectors().update_metadata([old.id for old, _ in moves], metas)
        self.catalog.update_files([(old.id, loc.row()) for old, loc in moves])

    def touch(self, files: Sequence[tuple[int, Location]]) -> None:
        """Indexed files with a new mtime but the same bytes: the rows follow, the vectors stay."""
        self.catalog.update_files([(photo_id, loc.row()) for photo_id, loc in files])

    def fail(self, failures: Sequence[tuple[Location, str | None, str]]) -> None:
        """(location, content hash, reason): rows set to failed first, then any vector they had is dropped."""
        if not failures:
            return
        rows = [{**loc.row(), "status": PhotoStatus.FAILED, "error": reason, "content_hash": digest}
                for loc, digest, reason in failures]  # fmt: skip
        had_vectors = self.catalog.indexed_ids_at([row["path"] for row in rows])
        self.catalog.upsert_files(rows)
        self._vectors().delete(had_vectors)  # a failed row must not keep a (now wrong) vector in search results

    def remove(self, ids: Sequence[int]) -> None:
        """Photos gone from disk: rows first, then vectors."""
        if not ids:
            return
        self.catalog.delete(ids)
        self._vectors().delete(ids)

    # -- reads for the indexer -------------------------------------------------------------------------
    def indexed_with_hash(self, content_hash: str) -> int | None:
        return self.catalog.indexed_with_hash(content_hash)
