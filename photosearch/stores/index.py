"""The Index: the catalog and the vector collection of one library, written together in a safe order.

The collection holds one vector per distinct content (key: the content hash); the catalog holds the rows (one
per file: where it is, its facts, its status). A vector is needed while at least one ``indexed`` row has its
hash. Chroma and the catalog cannot share a transaction, so every write goes in an order that any interruption
survives, and only this module knows it:

  * add (embedded photos): rows set to ``pending`` (committed) -> vectors upserted under their hashes -> rows
    set to ``indexed``. A crash in between leaves pending rows, which the next run processes again; the upsert
    is idempotent, so no vector is ever duplicated.
  * copy (byte-identical to an indexed photo), move, touch: rows only. The hash's vector is there already, and
    a vector says nothing about where its files are, so these never touch Chroma.
  * remove, or a file turned unreadable or changed: the rows go (or change) first, then the vectors that no
    indexed row has any more. Search expands a hash to its indexed rows, so a vector left behind is never shown.
  * the run journal (meta ``run_state``) is set before the first write and cleared after the last. A run that
    finds it set, or finds the collection's count and the indexed hashes disagreeing, reconciles first: vectors
    without an indexed row are deleted, indexed rows without a vector go back to pending.

Every operation takes a batch, and costs a few statements and store calls whatever its size: moving or
copying a folder of thousands of photos must not be one round trip per photo to either store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from photosearch.facts import PhotoFacts, fact_values
from photosearch.stores.catalog import Catalog, FileState, RootInfo
from photosearch.stores.catalog_hashes import PhotoScope
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import ChromaPlace, VectorStore

JOURNAL_KEY = "run_state"
AGREED_KEY = "counts_agreed"  # "<the vector store's write stamp> <indexed hashes>" when the counts last agreed
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

    def __init__(self, catalog: Catalog, vectors: Callable[[], VectorStore], place: ChromaPlace) -> None:
        """``vectors``: the active collection, opened on first call; ``place``: where it is (its write stamp)."""
        self.catalog = catalog
        self._vectors = vectors
        self._place = place

    # -- the run journal -------------------------------------------------------------------------------
    def journal(self, what: str) -> AbstractContextManager[None]:
        return journal(self.catalog, what)

    def counts_agree(self) -> bool:
        """One vector per indexed content: cheap (two counts), and what a lost or orphan vector breaks. Without
        opening the vector store while neither it (its write stamp) nor the indexed hashes changed since the
        counts last agreed: a run with nothing to do then needs no Chroma client."""
        stamp = self._place.written()  # read first: a write after it changes the stamp, so it is checked again
        hashes = self.catalog.indexed_hash_count()
        seen = f"{stamp} {hashes}"
        if stamp is not None and self.catalog.get_meta(AGREED_KEY) == seen:
            return True
        agree = self._vectors().count() == hashes
        if agree and stamp is not None:
            self.catalog.set_meta({AGREED_KEY: seen})
        return agree

    def reconcile_if_needed(self) -> bool:
        if self.catalog.get_meta(JOURNAL_KEY) is None and self.counts_agree():
            return False
        self.reconcile()
        return True

    def reconcile(self) -> None:
        """Make the collection hold exactly the vectors of the indexed hashes (see the module docstring)."""
        indexed = self.catalog.indexed_hashes()
        stored = self._vectors().all_keys()
        log.warning(
            "the last run did not finish: reconciling (%d orphan vectors, %d hashes without a vector)",
            len(stored - indexed), len(indexed - stored),
        )  # fmt: skip
        self._vectors().delete(sorted(stored - indexed))
        self.catalog.set_pending_with_hashes(sorted(indexed - stored))

    def sweep(self) -> tuple[int, int]:
        """reconcile() for shared stores, where other workers write meanwhile: after a worker died mid-write.
        The vectors are listed before the rows, so a vector being written now has a pending row by the time the
        rows are read, and stays; only vectors that no indexed or pending row has go. Indexed rows without a
        vector go back to pending (checked twice: a photo removed meanwhile took its vector with it).
        (orphan vectors deleted, rows queued again)."""
        stored = self._vectors().all_keys()
        orphans = self.catalog.orphan_hashes(stored - self.catalog.indexed_hashes() - self.catalog.pending_hashes())
        self._vectors().delete(orphans)
        lost = self.catalog.indexed_hashes() - stored
        lost -= set(self._vectors().vectors(sorted(lost)))
        self.catalog.set_pending_with_hashes(sorted(lost))
        return len(orphans), len(lost)

    # -- writes ----------------------------------------------------------------------------------------
    def add(self, photos: Sequence[NewPhoto], embed: Callable[[], np.ndarray]) -> list[int]:
        """Rows pending -> ``embed()`` (one vector per photo, in order) -> vectors -> rows indexed."""
        if not photos:
            return []
        replaced = self.catalog.hashes_in_use_at([str(p.location.path) for p in photos])  # edited files' old bytes
        rows = [{**p.location.row(), **fact_values(p.facts), "content_hash": p.content_hash,
                 "status": PhotoStatus.PENDING, "error": None} for p in photos]  # fmt: skip
        ids = self.catalog.upsert_files(rows)
        by_hash = dict(zip((p.content_hash for p in photos), embed(), strict=True))  # twins in a batch: one vector
        self._vectors().upsert(list(by_hash), np.stack(list(by_hash.values())))
        self.catalog.set_indexed(list(zip(ids, (p.content_hash for p in photos), strict=True)))
        self._drop_orphans(replaced)
        return ids

    def enqueue(self, queued: Sequence[tuple[Location, str]]) -> None:
        """(location, content hash) of new or changed photos that need the model: rows pending, for any worker to
        claim (stores/claims.py); an edited file's old vector goes if no indexed or pending row keeps it."""
        if not queued:
            return
        replaced = self.catalog.hashes_in_use_at([str(loc.path) for loc, _ in queued])
        # A claim on a row stays: its worker may be embedding it now. Were the bytes changed, that worker's write
        # does not set the row indexed (the hash differs), and the row is claimed again once it gives it back.
        rows = [{**loc.row(), "content_hash": digest, "status": PhotoStatus.PENDING, "error": None}
                for loc, digest in queued]  # fmt: skip
        self.catalog.upsert_files(rows)
        self._drop_orphans(replaced)

    def copy(self, copies: Sequence[tuple[Location, int]]) -> list[int]:
        """Byte-identical duplicates, (location, id of an indexed photo with the same bytes): each gets its own
        row with the source's facts, indexed at once: the source's vector is theirs too."""
        if not copies:
            return []
        records = self.catalog.records(sorted({source for _, source in copies}))
        usable = [(loc, records[src]) for loc, src in copies if src in records]
        if len(usable) < len(copies):  # only after a store was changed behind our back: the next run adds them
            log.warning("%d duplicates not copied: their source vanished meanwhile", len(copies) - len(usable))
        replaced = self.catalog.hashes_in_use_at([str(loc.path) for loc, _ in usable])
        now = datetime.now().replace(microsecond=0)
        indexed = {"status": PhotoStatus.INDEXED, "error": None, "indexed_at": now}
        rows = [{**loc.row(), **fact_values(r), "content_hash": r.content_hash, **indexed} for loc, r in usable]
        ids = self.catalog.upsert_files(rows)
        self._drop_orphans(replaced)
        return ids

    def move(self, moves: Sequence[tuple[FileState, Location]]) -> None:
        """Indexed photos whose files moved keep their rows (and so their vector): the rows follow the files."""
        self.catalog.update_files([(old.id, loc.row()) for old, loc in moves])

    def touch(self, files: Sequence[tuple[int, Location]]) -> None:
        """Indexed files with a new mtime but the same bytes: the rows follow, the vectors stay."""
        self.catalog.update_files([(photo_id, loc.row()) for photo_id, loc in files])

    def fail(self, failures: Sequence[tuple[Location, str | None, str]]) -> None:
        """(location, content hash, reason): rows set to failed first, then vectors no indexed row has any more."""
        if not failures:
            return
        rows = [{**loc.row(), "status": PhotoStatus.FAILED, "error": reason, "content_hash": digest}
                for loc, digest, reason in failures]  # fmt: skip
        had = self.catalog.hashes_in_use_at([row["path"] for row in rows])
        self.catalog.upsert_files(rows)
        self._drop_orphans(had)  # a failed row must not keep a (now wrong) vector in search results

    def remove(self, ids: Sequence[int]) -> None:
        """Photos gone from disk: rows first, then the vectors no indexed row has any more."""
        if not ids:
            return
        hashes = self.catalog.hashes_of(ids)
        self.catalog.delete(ids)
        self._drop_orphans(hashes)

    def remove_root(self, root_id: int) -> int:
        """A forgotten root: its rows (one transaction), then the vectors no other photo has. How many rows went."""
        hashes = self.catalog.scope_hashes(PhotoScope(root_id=root_id))
        removed = len(self.catalog.remove_root(root_id))
        self._drop_orphans(hashes)
        return removed

    def merge_roots(self, root: RootInfo, into: RootInfo, drop: Sequence[int]) -> None:
        """A missing root folded into the root its photos turned up in; ``drop``: its rows that are there twice."""
        hashes = self.catalog.hashes_of(drop)
        self.catalog.merge_root(root, into, drop)
        self._drop_orphans(hashes)

    def requeue(self, ids: Sequence[int]) -> None:
        """Indexed rows whose files changed under a reindex: back to pending (the next run embeds them afresh)."""
        hashes = self.catalog.hashes_of(ids)
        self.catalog.set_status(ids, PhotoStatus.PENDING)
        self._drop_orphans(hashes)

    def _drop_orphans(self, hashes: Iterable[str]) -> None:
        orphans = self.catalog.orphan_hashes(hashes)
        if orphans:
            self._vectors().delete(orphans)

    # -- reads -----------------------------------------------------------------------------------------
    def indexed_with_hash(self, content_hash: str) -> int | None:
        return self.catalog.indexed_with_hash(content_hash)

    def vector_count(self) -> int:
        return self._vectors().count()

    def photo_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The vectors of these indexed photos, by photo id (byte-identical photos share theirs)."""
        records = self.catalog.records(ids)
        hashes = {r.id: r.content_hash for r in records.values() if r.status == PhotoStatus.INDEXED and r.content_hash}
        stored = self._vectors().vectors(sorted(set(hashes.values())))
        return {i: stored[h] for i, h in hashes.items() if h in stored}

    def agree(self) -> bool:
        """Whether the collection holds exactly the indexed hashes' vectors (what reconcile restores)."""
        return self._vectors().all_keys() == self.catalog.indexed_hashes()
