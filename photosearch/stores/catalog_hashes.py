"""The catalog's SQL over content hashes: the key of the vector store (one vector per distinct content).

A vector exists for a hash while at least one ``indexed`` row has it, so these queries answer which vectors a
write leaves without a row, which hashes a reindex still has to embed, and which hashes a scoped search may
meet. Mixed into Catalog (catalog.py), whose conventions hold: every method is one short transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, true, type_coerce, update
from sqlalchemy.orm import Session

from photosearch.filters import Filters
from photosearch.pathtext import to_text
from photosearch.stores.catalog_filters import filter_clause
from photosearch.stores.schema import OsText, Photo, PhotoStatus

if TYPE_CHECKING:
    from photosearch.stores.catalog import PhotoRecord

T = TypeVar("T")

_CHUNK = 500  # stays under SQLite's bound-parameter limit in IN (...) lists
_INDEXED = Photo.status == PhotoStatus.INDEXED
_IN_USE = Photo.status.in_([PhotoStatus.INDEXED, PhotoStatus.PENDING])  # a vector is wanted, or being written


@dataclass(frozen=True)
class PhotoScope:
    """Which indexed photos a search may return: under one folder of one root (``folder`` "" = the whole root)
    or anywhere, passing the ``filters`` (dates, camera, place...), and never in the ``hidden`` roots (missing
    ones, unless the user asks for them)."""

    root_id: int | None = None
    folder: str = ""
    hidden: frozenset[int] = frozenset()
    filters: Filters = field(default_factory=Filters)  # without its folder: root_id and folder say where

    @property
    def selective(self) -> bool:
        """Whether it may leave out much of the library (a folder or a filter), not only a missing root."""
        return self.root_id is not None or bool(self.filters)

    def clause(self) -> ColumnElement[bool]:
        clauses: list[ColumnElement[bool]] = [filter_clause(self.filters)] if self.filters else []
        if self.hidden:
            clauses.append(Photo.root_id.not_in(sorted(self.hidden)))
        if self.root_id is not None:
            clauses.append(Photo.root_id == self.root_id)
        if self.folder:
            # A prefix of the stored form (pathtext.py maps char by char, so lengths agree), without LIKE's escapes.
            prefix = self.folder + "/"
            below = func.substr(Photo.folder, 1, len(to_text(prefix))) == type_coerce(prefix, OsText)
            clauses.append(or_(Photo.folder == self.folder, below))
        return and_(true(), *clauses)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class HashQueries:
    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError  # Catalog's: its sessions map store errors to typed ones (boundary.py)

    def _read(self, work: Callable[[Session], T]) -> T:
        raise NotImplementedError  # Catalog's: a search's reads, one round trip each

    def indexed_hashes(self) -> set[str]:
        """Every hash that has a vector (an indexed row)."""
        with self.session() as s:
            return {h for h in s.scalars(select(Photo.content_hash).where(_INDEXED).distinct()) if h}

    def indexed_hash_count(self, scope: PhotoScope | None = None) -> int:
        query = select(func.count(func.distinct(Photo.content_hash))).where(_INDEXED)
        with self.session() as s:
            return s.scalar(query if scope is None else query.where(scope.clause())) or 0

    def scope_hashes(self, scope: PhotoScope) -> list[str]:
        """The distinct hashes of the indexed photos in scope, in one row joined by the database: 10,000 rows
        through the driver cost ~25 ms, joined ~7 ms. Deduplicated here, not by DISTINCT, which makes SQLite
        sort them all: a date filter's hashes then come straight out of the timeline index."""
        query = select(func.aggregate_strings(Photo.content_hash, ",")).where(_INDEXED, scope.clause())
        joined = self._read(lambda s: s.connection().execute(query).scalar())  # hex digests: no "," in one
        return list(dict.fromkeys(joined.split(","))) if joined else []

    def hashes_of(self, ids: Sequence[int]) -> set[str]:
        return self._hashes(lambda part: select(Photo.content_hash).where(Photo.id.in_(part)), ids)

    def hashes_in_use_at(self, paths: Sequence[str]) -> set[str]:
        """The hashes of the indexed or pending rows at these paths (their vectors may lose their last row)."""
        return self._hashes(lambda part: select(Photo.content_hash).where(_IN_USE, Photo.path.in_(part)), paths)

    def _hashes(self, query: Any, keys: Sequence[Any]) -> set[str]:
        with self.session() as s:
            return {h for part in _chunks(list(keys)) for h in s.scalars(query(part)) if h}

    def orphan_hashes(self, hashes: Iterable[str]) -> list[str]:
        """Of these hashes, those no indexed or pending row has any more: their vectors can go. A pending row's
        vector may be in flight: a worker writes it, then sets the row indexed (stores/index.py), and deleting it
        in between would leave an indexed row without its vector."""
        wanted = sorted(set(hashes))
        kept = self._hashes(lambda part: select(Photo.content_hash).where(_IN_USE, Photo.content_hash.in_(part)),
                            wanted)  # fmt: skip
        return [h for h in wanted if h not in kept]

    def indexed_by_hash(self, hashes: Sequence[str], scope: PhotoScope | None = None) -> dict[str, list[PhotoRecord]]:
        """The indexed rows (as PhotoRecords, by id) of each hash: a search hit is a hash, its results are rows."""
        from photosearch.stores.catalog import record_of  # the one row -> record mapping

        by_hash: dict[str, list[PhotoRecord]] = {}
        for row in self._read(self._indexed_rows(select(Photo.__table__), hashes, scope)):
            by_hash.setdefault(row.content_hash, []).append(record_of(row))
        return by_hash

    def dated_by_hash(self, hashes: Sequence[str], scope: PhotoScope | None = None) -> dict[str, list[Any]]:
        """indexed_by_hash's rows with only their id, date (``dated_at``) and root: enough to rank, cut and sort by
        date a query's matches (up to thousands), whose page alone needs whole records (Catalog.records)."""
        columns = select(Photo.id, Photo.content_hash, Photo.dated_at, Photo.root_id)
        by_hash: dict[str, list[Any]] = {}
        for row in self._read(self._indexed_rows(columns, hashes, scope)):
            by_hash.setdefault(row.content_hash, []).append(row)
        return by_hash

    @staticmethod
    def _indexed_rows(columns: Any, hashes: Sequence[str], scope: PhotoScope | None) -> Callable[[Session], list[Any]]:
        """The indexed rows with these hashes in scope, by id: a read (for _read)."""

        # One statement for every chunk, its hashes an expanding parameter: built and compiled once, not coerced
        # value by value (~10 ms of a query that reads 2,000 hits' rows).
        query = columns.where(_INDEXED, Photo.content_hash.in_(bindparam("hashes", expanding=True)))
        if scope is not None:
            query = query.where(scope.clause())
        query = query.order_by(Photo.id)

        def rows(s: Session) -> list[Any]:
            found: list[Any] = []
            for part in _chunks(list(hashes)):
                found += s.connection().execute(query, {"hashes": part}).all()
            return found

        return rows

    def pending_hashes(self) -> set[str]:
        """Every hash of a pending row (queued work whose vector may be being written)."""
        with self.session() as s:
            query = select(Photo.content_hash).where(Photo.status == PhotoStatus.PENDING).distinct()
            return {h for h in s.scalars(query) if h}

    def set_pending_with_hashes(self, hashes: Sequence[str]) -> None:
        """Indexed rows whose vector is missing go back to the work queue."""
        with self.session() as s, s.begin():
            for part in _chunks(list(hashes)):
                in_part = Photo.content_hash.in_(part)
                s.execute(update(Photo).where(_INDEXED, in_part).values(status=PhotoStatus.PENDING))
