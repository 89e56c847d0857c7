"""The daemon's durable work queue, a table in the catalog: paths that changed and wait to be indexed.

Events are debounced here: a path seen again only pushes its ``due_at`` back, so a file written in many
chunks is one entry, processed once it has been quiet for the debounce time. Being in SQLite, the queue
survives a crash; the daemon's catch-up scan at start covers anything that was never queued.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select

from photosearch.catalog import Catalog
from photosearch.schema import QueueEntry


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
        """Queue (path, moved_from, is_dir) items, or push back the due time of paths already queued."""
        now = time.time() if now is None else now
        with self._catalog.session() as s, s.begin():
            for path, moved_from, is_dir in items:
                row = s.get(QueueEntry, str(path))
                if row is None:
                    s.add(QueueEntry(path=str(path), moved_from=_str(moved_from), is_dir=is_dir,
                                     first_seen=now, due_at=now + debounce))  # fmt: skip
                else:
                    row.due_at = now + debounce
                    row.is_dir = row.is_dir or is_dir
                    row.moved_from = row.moved_from or _str(moved_from)

    def depth(self) -> int:
        with self._catalog.session() as s:
            return s.scalar(select(func.count()).select_from(QueueEntry)) or 0

    def oldest(self) -> float | None:
        """When the longest-waiting entry was first seen (bounds how long a batch may wait to fill)."""
        with self._catalog.session() as s:
            return s.scalar(select(func.min(QueueEntry.first_seen)))

    def due(self, now: float, limit: int) -> list[Queued]:
        with self._catalog.session() as s:
            rows = s.scalars(
                select(QueueEntry).where(QueueEntry.due_at <= now).order_by(QueueEntry.first_seen).limit(limit)
            )
            return [
                Queued(Path(r.path), Path(r.moved_from) if r.moved_from else None, r.is_dir, r.first_seen, r.due_at)
                for r in rows
            ]

    def remove(self, entries: Sequence[Queued]) -> None:
        """Drop processed entries, unless a newer event re-queued them meanwhile (their due_at moved)."""
        with self._catalog.session() as s, s.begin():
            for entry in entries:
                s.execute(
                    delete(QueueEntry).where(QueueEntry.path == str(entry.path), QueueEntry.due_at == entry.due_at)
                )

    def clear(self) -> None:
        with self._catalog.session() as s, s.begin():
            s.execute(delete(QueueEntry))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
