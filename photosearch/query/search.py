"""The query layer: a text or an example image in, the top-k indexed photos out.

A vector hit is a content hash; the catalog turns it into the indexed photos with those bytes that the scope
admits (folder, missing roots), so a vector orphaned by an interrupted run is never shown (stores/index.py).
A narrow scope is handed to Chroma as the list of its hashes, which it filters inside the HNSW search; a wide
one filters the hits, asking Chroma for more while that leaves fewer than k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from photosearch.errors import InvalidQueryError
from photosearch.filters import Filters
from photosearch.models.protocols import TextEmbedder as TextEmbedder  # re-exported: what a Searcher is given
from photosearch.pathtext import display
from photosearch.query.limits import MAX_K as MAX_K  # re-exported: the query layer's limit
from photosearch.query.result import SearchResult as SearchResult  # re-exported: what a search gives
from photosearch.stores.catalog import Catalog, PhotoRecord, RootInfo
from photosearch.stores.catalog_hashes import PhotoScope as PhotoScope
from photosearch.stores.catalog_query import Position
from photosearch.stores.schema import PhotoStatus  # re-exported: what a search is scoped by
from photosearch.stores.vectors import Hit, VectorStore

WIDE = 8  # a scope holding at least 1/WIDE of the vectors filters the hits; a narrower one goes to Chroma


class Row(Protocol):
    """A catalog row of a hit: a whole record (PhotoRecord) or a few columns of it (Catalog.dated_by_hash)."""

    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=Row)


@dataclass(frozen=True)
class Match:
    """A photo a query matched, before its record is read: enough to rank it, cut it and sort it by date."""

    id: int
    score: float
    date: datetime | None  # the catalog's dated_at: what date order and date filters read
    offline: bool  # its library folder is missing


def resolve_folder(roots: Sequence[RootInfo], folder: Path) -> tuple[int, str]:
    """Map a folder path (absolute, or relative to the current directory) to (root id, path inside root)."""
    try:
        target = folder.expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL bytes, unknown ~user, symlink loops
        raise InvalidQueryError(f"{str(folder)!r} is not a usable folder path: {exc}") from None
    for root in sorted(roots, key=lambda r: len(str(r.path)), reverse=True):
        root_path = root.path.resolve()
        if target == root_path or root_path in target.parents:
            rel = target.relative_to(root_path).as_posix()
            return root.id, "" if rel == "." else rel
    raise InvalidQueryError(f"{display(folder)} is not inside any library root (see `photosearch status`)")


def _check_k(k: int, bound: int = MAX_K) -> None:
    if not 1 <= k <= bound:
        raise InvalidQueryError(f"k must be between 1 and {bound}, got {k}")


class Searcher:
    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        embedder: Callable[[], TextEmbedder],
        offline_roots: frozenset[int] = frozenset(),
        include_offline: bool = False,
    ) -> None:
        """``offline_roots``: the ids of missing library roots, whose photos are left out unless include_offline."""
        self._catalog = catalog
        self._store = store
        self._embedder = embedder
        self._offline = offline_roots
        self._hidden = frozenset() if include_offline else offline_roots

    def by_vector(
        self,
        vector: np.ndarray,
        k: int,
        scope: PhotoScope | None = None,
        exclude: frozenset[int] = frozenset(),
        bound: int = MAX_K,
    ) -> list[SearchResult]:
        """The k indexed photos nearest to ``vector``, best first (fewer only when fewer exist).

        A hit whose hash has no indexed row in scope (pending after an interrupted run, failed, removed with the
        vector left behind, elsewhere, or in ``exclude``) gives nothing; while that leaves fewer than k, Chroma
        is asked again for more (see _grown) until k are found or Chroma has no more. When every hit is usable
        (the common case) it is one Chroma query and one catalog query. ``bound``: the largest k allowed (the
        query layer's own reads may look further than a user's query).
        """
        found = self._nearest(vector, k, scope, exclude, bound, self._catalog.indexed_by_hash)
        return [_result(rank, r, score, r.root_id in self._offline) for rank, (r, score) in enumerate(found, 1)]

    def matches(
        self,
        vector: np.ndarray,
        k: int,
        scope: PhotoScope | None = None,
        exclude: frozenset[int] = frozenset(),
        bound: int = MAX_K,
    ) -> list[Match]:
        """by_vector's photos as Matches: the cutoff and the date order look at hundreds or thousands of them, and
        building their whole records (paths, facts) cost more than the rest of such a query. ``results`` reads
        the records of the page shown."""
        found = self._nearest(vector, k, scope, exclude, bound, self._catalog.dated_by_hash)
        return [Match(row.id, score, row.dated_at, row.root_id in self._offline) for row, score in found]

    def results(self, matches: Sequence[Match], first_rank: int = 1) -> list[SearchResult]:
        """The search results of these matches, ranked from ``first_rank`` (a photo removed since is left out)."""
        records = self._catalog.records([m.id for m in matches])
        chosen = [(m, records[m.id]) for m in matches if m.id in records]
        return [_result(rank, r, m.score, m.offline) for rank, (m, r) in enumerate(chosen, first_rank)]

    def _nearest(
        self, vector: np.ndarray, k: int, scope: PhotoScope | None, exclude: frozenset[int], bound: int,
        rows_of: Callable[[list[str], PhotoScope], Mapping[str, list[R]]],
    ) -> list[tuple[R, float]]:  # fmt: skip
        """by_vector's search, with the rows of the hits read by ``rows_of`` (whole records, or fewer columns)."""
        _check_k(k, bound)
        scope = self.visible(scope)
        among = self._among(scope)
        fetch = k + len(exclude)
        rows: dict[str, list[R]] = {}
        bounds: tuple[int, int] | None = None  # (vectors the query can reach, indexed rows), read once if needed
        while True:
            hits = self._store.query(vector, fetch, among)
            rows.update(rows_of([h.key for h in hits if h.key not in rows], scope))
            found = _usable(hits, rows, k, exclude)
            if len(found) == k or len(hits) < fetch:  # enough, or nothing more to ask for
                return found
            if bounds is None:
                reach = len(among) if among is not None else self._store.count()
                bounds = reach, self._catalog.counts()[PhotoStatus.INDEXED.value]
            if fetch >= bounds[0] or sum(map(len, rows.values())) >= bounds[1]:  # all read, or no other row
                return found
            fetch = min(bounds[0], _grown(fetch, len(found), k))

    def _among(self, scope: PhotoScope) -> list[str] | None:
        """The hashes of a scope (a folder, filters) that holds few of the vectors, for Chroma to filter inside
        its search; None to filter the hits instead. Missing roots alone are filtered from the hits: counting
        them would cost every search of a library with an unplugged disk a catalog scan."""
        wide = -(-self._store.count() // WIDE)  # photos, not distinct contents: a count, not a sort of the hashes
        if not scope.selective or self._catalog.count_in(scope, at_most=wide) >= wide:
            return None
        return self._catalog.scope_hashes(scope)

    def visible(self, scope: PhotoScope | None) -> PhotoScope:
        """The scope with the missing roots hidden (unless the searcher includes them)."""
        scope = scope or PhotoScope()
        return replace(scope, hidden=scope.hidden | self._hidden)

    def browse(
        self, scope: PhotoScope, k: int, newest: bool, after: Position | None, vector: np.ndarray | None = None
    ) -> tuple[list[SearchResult], Position | None]:
        """A timeline page: k photos in scope by date after ``after``, scored against ``vector`` if given (their
        stored vectors: one store read); and the position the next page starts after (None: no more)."""
        records = self._catalog.browse(self.visible(scope), k + 1, newest, after)
        page = records[:k]
        stored: dict[str, np.ndarray] = {}
        if vector is not None:
            stored = self._store.cached_vectors(sorted({r.content_hash for r in page if r.content_hash}))
        results = []
        for rank, r in enumerate(page, 1):
            found = stored.get(r.content_hash or "")
            score = float(found @ vector) if found is not None and vector is not None else None
            results.append(_result(rank, r, score, r.root_id in self._offline))
        return results, ((page[-1].dated_at, page[-1].id) if len(records) > k else None)

    def sample(self, n: int) -> np.ndarray:
        """Up to n of the library's vectors, at random (query/cutoff.py)."""
        found = self._store.cached_vectors(self._catalog.sample_hashes(n))
        return np.stack(list(found.values())) if found else np.zeros((0, 0), dtype=np.float32)

    def size_of(self, scope: PhotoScope) -> int:
        """About how many photos the scope holds: counted when it is a folder or filters (missing roots hidden);
        else the number of vectors (distinct contents, known without a catalog scan: counting 100,000 rows takes
        ~16 ms, more than the rest of a date-sorted query), which a missing root's photos are still part of."""
        if scope.selective:
            return self._catalog.count_in(self.visible(scope))
        return self._store.count()

    @property
    def collection(self) -> str:
        return self._store.name

    def vector_count(self) -> int:
        return self._store.count()

    def stored_vector(self, record: PhotoRecord) -> np.ndarray | None:
        if record.content_hash is None:
            return None
        return self._store.cached_vectors([record.content_hash]).get(record.content_hash)


def folder_scope(roots: Sequence[RootInfo], folder: Path | None, filters: Filters | None = None) -> PhotoScope:
    """The scope of a folder (None: everywhere) and the filters the catalog applies."""
    in_sql = filters.in_sql() if filters is not None else Filters()
    if folder is None:
        return PhotoScope(filters=in_sql)
    root_id, inside = resolve_folder(roots, folder)
    return PhotoScope(root_id=root_id, folder=inside, filters=in_sql)


def _usable(
    hits: Sequence[Hit], rows: Mapping[str, Sequence[R]], k: int, exclude: frozenset[int]
) -> list[tuple[R, float]]:
    """The first k rows of the hits, in the hits' order, with their hits' scores; ``exclude``d ids left out."""
    found: list[tuple[R, float]] = []
    for hit in hits:
        for row in rows.get(hit.key, ()):
            if row.id in exclude:
                continue
            found.append((row, hit.score))
            if len(found) == k:
                return found
    return found


def _grown(fetched: int, usable: int, k: int) -> int:
    """The next fetch after ``fetched`` hits gave ``usable`` results: as many as that share of usable hits says k
    need, and a quarter more, but at least twice and at most eight times the last fetch (a few rounds reach
    any collection size, and a share measured on few hits cannot ask for the whole collection at once)."""
    wanted = math.ceil(fetched * k * 1.25 / usable) if usable else 8 * fetched
    return min(8 * fetched, max(2 * fetched, wanted))


def _result(rank: int, record: PhotoRecord, score: float | None, offline: bool) -> SearchResult:
    source = "taken" if record.taken_at is not None else "file" if record.dated_at is not None else None
    return SearchResult(rank=rank, id=record.id, path=record.path, score=score, folder=record.folder,
                        facts=record.facts, size=record.size, date=record.dated_at, date_source=source,
                        place=_place(record), offline=offline)  # fmt: skip


def _place(record: PhotoRecord) -> str | None:
    parts = [p for p in (record.place_city, record.place_region, record.place_country) if p]
    return ", ".join(dict.fromkeys(parts)) or None
