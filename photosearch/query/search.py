"""The query layer: a text or an example image in, the top-k indexed photos out.

Vector hits from Chroma are joined with the catalog, and only rows whose status is ``indexed`` are returned,
so a vector orphaned by an interrupted run is never shown (see indexer.py for the write order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from photosearch.errors import InvalidQueryError
from photosearch.models.embedder import ModelIdentity
from photosearch.pathtext import display
from photosearch.stores.catalog import Catalog, PhotoRecord, RootInfo
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore, excluding_roots, folder_filter

MAX_K = 1000


@dataclass(frozen=True)
class SearchResult:
    rank: int
    id: int
    path: Path
    score: float
    folder: str
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    offline: bool = False  # its library folder is missing (unmounted, or moved without `photosearch roots move`)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"], data["folder"] = display(self.path), display(self.folder)  # JSON and terminals: no raw bytes
        data["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        data["score"] = round(self.score, 6)
        return data


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


class TextEmbedder(Protocol):
    """What a text query needs: any Embedder, or the torch-free text encoder (textencoder.py)."""

    @property
    def identity(self) -> ModelIdentity: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


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
        _check_k(k)
        hits = self._store.query(vector, k + len(exclude), excluding_roots(where, self._hidden))
        records = self._catalog.records(hit.photo_id for hit in hits)
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


def _result(rank: int, record: PhotoRecord, score: float, offline: bool) -> SearchResult:
    return SearchResult(
        rank=rank, id=record.id, path=record.path, score=score, folder=record.folder, width=record.width,
        height=record.height, taken_at=record.taken_at, camera_make=record.camera_make,
        camera_model=record.camera_model, offline=offline,
    )  # fmt: skip
