"""The daemon's durable work queue, a table in the catalog: paths that changed and wait to be indexed.

Events are debounced here: a path seen again only pushes its ``due_at`` back, so a file written in many
chunks is one entry, processed once it has been quiet for the debounce time. A file found still being written
goes back with the time it will have settled as its ``due_at``. Being in the catalog database, the queue survives
a crash; the daemon's catch-up scan at start covers anything that was never queued. Writes are one statement per batch
of paths (a copied folder queues thousands at once), and the daemon reads it a chunk at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from photosearch.stores.catalog import Catalog
from photosearch.stores.dialect import greatest, insert_for
from photosearch.stores.schema import QueueEntry


@dataclass(frozen=True)
class Queued:
    path: Path
    moved_from: Path | None
    is_dir: bool
    first_seen: float
    due_at: float


class WorkQueue:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def put(self, items: Iterable[tuple[Path, Path | None, bool]], debounce: float, now: float | None = None) -> None:
        """Queue (path, moved_from, is_dir) items, or push back the due time of paths already queued.

        A move takes over what is queued for its source: run on its own, an earlier edit of the source would find
        the file gone and drop its row and vector, and the move would then embed the file again as a new photo."""
        now = time.time() if now is None else now
        rows = [{"path": str(path), "moved_from": _str(moved_from), "is_dir": is_dir, "first_seen": now,
                 "due_at": now + debounce} for path, moved_from, is_dir in items]  # fmt: skip
        with self._catalog.session() as s, s.begin():
            _supersede_sources(s, rows)
            _upsert(s, rows, push_back=False)

    def finish(self, done: Sequence[Queued], deferred: Iterable[tuple[Path, float]], first_seen: float) -> None:
        """After a run: drop its entries (unless a newer event re-queued them meanwhile: their due_at moved), and
        queue the (path, due_at) files it found still being written, due when they will have settled; a path
        queued meanwhile keeps the later due time. One transaction: a kill in between would lose the deferred
        paths until the next start's catch-up scan. ``first_seen``: when those changes were first seen."""
        with self._catalog.session() as s, s.begin():
            _remove(s, done)
            _upsert(s, _deferred_rows(deferred, first_seen), push_back=True)

    def depth(self) -> int:
        with self._catalog.session() as s:
            return s.scalar(select(func.count()).select_from(QueueEntry)) or 0

    def ready_at(self, batch_size: int, batch_wait: float) -> float | None:
        """When, without further events, a batch will be ready: ``batch_size`` entries due, or one entry due that
        was first seen ``batch_wait`` seconds before. None for an empty queue."""
        with self._catalog.session() as s:
            soonest = func.min(greatest(s, QueueEntry.due_at, QueueEntry.first_seen + batch_wait))
            waited: float | None = s.scalar(select(soonest))
            nth_due = s.scalar(select(QueueEntry.due_at).order_by(QueueEntry.due_at).offset(batch_size - 1).limit(1))
        if waited is None or nth_due is None:
            return waited
        return min(waited, nth_due)

    def due(self, now: float, limit: int) -> list[Queued]:
        with self._catalog.session() as s:
            rows = s.scalars(
                select(QueueEntry).where(QueueEntry.due_at <= now).order_by(QueueEntry.first_seen).limit(limit)
            )
            return [
                Queued(Path(r.path), Path(r.moved_from) if r.moved_from else None, r.is_dir, r.first_seen, r.due_at)
                for r in rows
            ]

    def clear(self) -> None:
        with self._catalog.session() as s, s.begin():
            s.execute(delete(QueueEntry))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _deferred_rows(items: Iterable[tuple[Path, float]], first_seen: float) -> list[dict[str, Any]]:
    return [{"path": str(path), "moved_from": None, "is_dir": False, "first_seen": first_seen, "due_at": due_at}
            for path, due_at in items]  # fmt: skip


def _upsert(s: Session, rows: list[dict[str, Any]], push_back: bool) -> None:
    """Insert rows; a path already queued keeps its first_seen and gets the new due_at (with ``push_back``, the
    later of the two), and keeps being a folder or a move once it was one."""
    if not rows:
        return
    stmt = insert_for(s, QueueEntry)
    new = stmt.excluded
    due_at = greatest(s, QueueEntry.due_at, new.due_at) if push_back else new.due_at
    merged = {"due_at": due_at, "is_dir": QueueEntry.is_dir | new.is_dir,
              "moved_from": func.coalesce(QueueEntry.moved_from, new.moved_from)}  # fmt: skip
    s.execute(stmt.on_conflict_do_update(index_elements=[QueueEntry.path], set_=merged), rows)


def _supersede_sources(s: Session, rows: list[dict[str, Any]]) -> None:
    """Drop the queued entries of the moves' sources (for a folder, everything queued below it too); a source
    that was itself the destination of a queued move hands that hint on (a -> b, then b -> c: c came from a)."""
    sources = {row["moved_from"]: row for row in rows if row["moved_from"]}
    for source, row in sources.items():
        below = QueueEntry.path.startswith(source.rstrip("/") + "/", autoescape=True)
        where = QueueEntry.path == source if not row["is_dir"] else (QueueEntry.path == source) | below
        earlier = s.scalar(select(QueueEntry.moved_from).where(QueueEntry.path == source))
        if earlier:
            row["moved_from"] = earlier
        s.execute(delete(QueueEntry).where(where))


def _remove(s: Session, entries: Sequence[Queued]) -> None:
    if entries:
        stmt = delete(QueueEntry).where(QueueEntry.path == bindparam("p"), QueueEntry.due_at == bindparam("d"))
        s.connection().execute(stmt, [{"p": str(e.path), "d": e.due_at} for e in entries])
