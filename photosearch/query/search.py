"""The query layer: a text or an example image in, the top-k indexed photos out.

Vector hits from Chroma are joined with the catalog, and only rows whose status is ``indexed`` are returned,
so a vector orphaned by an interrupted run is never shown (see indexer.py for the write order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from photosearch.errors import InvalidQueryError
from photosearch.models.protocols import TextEmbedder as TextEmbedder  # re-exported: what a Searcher is given
from photosearch.query.limits import MAX_K as MAX_K  # re-exported: the query layer's limit
from photosearch.query.result import SearchResult as SearchResult  # re-exported: what a search gives
from photosearch.stores.catalog import Catalog, PhotoRecord, RootInfo
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import Hit, VectorStore, excluding_roots, folder_filter


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
    raise InvalidQueryError(f"{folder} is not inside any library root (see `photosearch status`)")


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k must be between 1 and {MAX_K}, got {k}")


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

    def by_text(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[SearchResult]:
        if not query.strip():
            raise InvalidQueryError("the search text is empty")
        _check_k(k)
        vector = self._embedder().embed_texts([query])[0]
        return self.by_vector(vector, k, where)

    def by_vector(
        self,
        vector: np.ndarray,
        k: int,
        where: dict[str, Any] | None = None,
        exclude: frozenset[int] = frozenset(),
    ) -> list[SearchResult]:
        """The k indexed photos nearest to ``vector``, best first (fewer only when fewer exist).

        Chroma's nearest vectors can belong to rows that are not ``indexed`` (pending after an interrupted run,
        failed, or removed with the vector left behind) or to ``exclude``. Those are skipped, and while that
        leaves fewer than k, Chroma is asked again for more (see _grown) until k are found, Chroma has no more,
        or every indexed row has been seen. When every hit is usable (the common case) it is one Chroma query.
        """
        _check_k(k)
        where = excluding_roots(where, self._hidden)
        fetch = k + len(exclude)
        records: dict[int, PhotoRecord] = {}
        bounds: tuple[int, int] | None = None  # (vectors in the collection, indexed rows), read once if needed
        while True:
            hits = self._store.query(vector, fetch, where)
            records.update(self._catalog.records([h.photo_id for h in hits if h.photo_id not in records]))
            results = self._usable(hits, records, k, exclude)
            if len(results) == k or len(hits) < fetch:  # enough, or nothing more matches ``where``
                return results
            if bounds is None:
                bounds = self._store.count(), self._catalog.counts()[PhotoStatus.INDEXED.value]
            seen = sum(1 for h in hits if (r := records.get(h.photo_id)) and r.status == PhotoStatus.INDEXED)
            if fetch >= bounds[0] or seen >= bounds[1]:  # no vector left unread, or none of them indexed
                return results
            fetch = min(bounds[0], _grown(fetch, len(results), k))

    def _usable(
        self, hits: Sequence[Hit], records: dict[int, PhotoRecord], k: int, exclude: frozenset[int]
    ) -> list[SearchResult]:
        results: list[SearchResult] = []
        for hit in hits:
            record = records.get(hit.photo_id)
            if record is None or record.status != PhotoStatus.INDEXED or hit.photo_id in exclude:
                continue
            if record.root_id in self._hidden:  # its vector's metadata ran ahead of the row (see roots.py)
                continue
            results.append(_result(len(results) + 1, record, hit.score, record.root_id in self._offline))
            if len(results) == k:
                break
        return results

    def stored_vector(self, photo_id: int) -> np.ndarray | None:
        return self._store.vectors([photo_id]).get(photo_id)


def folder_where(roots: Sequence[RootInfo], folder: Path | None) -> dict[str, Any] | None:
    if folder is None:
        return None
    return folder_filter(*resolve_folder(roots, folder))


def _grown(fetched: int, usable: int, k: int) -> int:
    """The next fetch after ``fetched`` hits gave ``usable`` results: as many as that share of usable hits says k
    need, and a quarter more, but at least twice and at most eight times the last fetch (a few rounds reach
    any collection size, and a share measured on few hits cannot ask for the whole collection at once)."""
    wanted = math.ceil(fetched * k * 1.25 / usable) if usable else 8 * fetched
    return min(8 * fetched, max(2 * fetched, wanted))


def _result(rank: int, record: PhotoRecord, score: float, offline: bool) -> SearchResult:
    return SearchResult(rank=rank, id=record.id, path=record.path, score=score, folder=record.folder,
                        facts=record.facts, offline=offline)  # fmt: skip
