"""The library's queries: a SearchRequest (query/spec.py) turned into its query vector and scope and answered
(query/answer.py). The Library builds one and hands its search, similar and query calls to it.

An example image is an indexed photo's stored vector (no model call; the photo is left out of the results), or
an image file or upload embedded by the model. Uploads (POST /api/uploads) are embedded once and kept here by a
random reference for a while, so a page can refine "more like this upload" without sending it again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from photosearch.errors import InvalidQueryError, PhotoNotFoundError
from photosearch.filters import Filters
from photosearch.indexing.roots import offline_roots
from photosearch.models.protocols import Embedder, TextEmbedder
from photosearch.query.answer import Answerer
from photosearch.query.compose import compose
from photosearch.query.cutoff import SampleCache
from photosearch.query.facets import facets
from photosearch.query.images import image_bytes, image_file
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.search import Searcher, folder_scope
from photosearch.query.spec import Example, SearchRequest, Weighted
from photosearch.query.warmup import load_side_by_side
from photosearch.stores.catalog import Catalog, PhotoRecord, RootInfo
from photosearch.stores.catalog_hashes import PhotoScope
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore

UPLOADS = 64  # uploads kept (the oldest goes first)
UPLOAD_TTL = 3600.0  # seconds an upload is kept


@dataclass(frozen=True)
class QueryWiring:
    """What the queries need of the library, as the Library wires it."""

    catalog: Catalog
    store: Callable[[], VectorStore]
    store_opened: Callable[[], bool]
    text_embedder: Callable[[], TextEmbedder]
    text_loaded: Callable[[], bool]
    embedder: Callable[[], Embedder]
    default_k: int
    max_pixels: int


class QueryRunner:
    def __init__(self, wiring: QueryWiring) -> None:
        self._w = wiring
        self._samples = SampleCache()
        self._uploads: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._facets: tuple[tuple[object, ...], dict[str, Any]] | None = None  # (stamp, the library's facets)

    def query(self, request: SearchRequest) -> SearchPage:
        request.check()
        roots = self._w.catalog.roots()
        scope = folder_scope(roots, request.filters.folder, request.filters)
        if request.texts and not self._w.text_loaded() and not self._w.store_opened():
            load_side_by_side(self._w.text_embedder, self._w.store)  # the first search of a process (warmup.py)
        searcher = self._searcher(request.include_offline, roots)
        vector, exclude = self._vector(request, searcher)
        return Answerer(searcher, self._samples, self._w.default_k).answer(request, vector, scope, exclude)

    def warm(self) -> None:
        """Answer one query as the page asks it (cutoff auto), so that the next one finds the text encoder and
        the vector store loaded, Chroma's HNSW index read and the cutoff's sample drawn."""
        self.query(SearchRequest(texts=(Weighted("a photo"),), cutoff="auto", k=1))

    def facets(self, filters: Filters, include_offline: bool = False) -> dict[str, Any]:
        """The values present among the photos the filters keep, with counts (query/facets.py). The whole
        library's are kept until the catalog's facts change (Catalog.facts_stamp: a few index lookups), as the
        page asks for them with every visit and they take a grouped scan of four indexes."""
        catalog = self._w.catalog
        scope = self._searcher_scope(filters, include_offline)
        if filters:
            return facets(catalog.facet_counts(scope))
        key = (scope.hidden, catalog.facts_stamp())
        with self._lock:
            if self._facets is not None and self._facets[0] == key:
                return self._facets[1]
        found = facets(catalog.facet_counts(scope))
        with self._lock:
            self._facets = (key, found)
        return found

    def _searcher_scope(self, filters: Filters, include_offline: bool) -> PhotoScope:
        catalog = self._w.catalog
        roots = catalog.roots()
        scope = folder_scope(roots, filters.folder, filters)
        hidden = frozenset() if include_offline else offline_roots(catalog, roots)
        return replace(scope, hidden=scope.hidden | hidden)

    def search(self, query: str, k: int | None, folder: Path | None, include_offline: bool) -> list[SearchResult]:
        if not query.strip():
            raise InvalidQueryError("the search text is empty")
        request = SearchRequest(texts=(Weighted(query),), filters=Filters(folder=folder), k=k,
                                include_offline=include_offline)  # fmt: skip
        return self.query(request).results

    def similar(self, photo: Path, k: int | None, folder: Path | None, include_offline: bool) -> list[SearchResult]:
        request = SearchRequest(examples=(Example(path=photo),), filters=Filters(folder=folder), k=k,
                                include_offline=include_offline)  # fmt: skip
        return self.query(request).results

    def similar_to_image(self, data: bytes, name: str, k: int | None, folder: Path | None,
                         include_offline: bool) -> list[SearchResult]:  # fmt: skip
        request = SearchRequest(examples=(Example(upload=self.upload(data, name)),), filters=Filters(folder=folder),
                                k=k, include_offline=include_offline)  # fmt: skip
        return self.query(request).results

    def upload(self, data: bytes, name: str) -> str:
        """Embed an image given as bytes and keep its vector: the reference an Example.upload names."""
        vector = self._w.embedder().embed_images([image_bytes(data, name, self._w.max_pixels)])[0]
        reference = "u" + secrets.token_urlsafe(12)
        with self._lock:
            self._uploads[reference] = (time.monotonic(), vector)
            while len(self._uploads) > UPLOADS:
                self._uploads.popitem(last=False)
        return reference

    def _uploaded(self, reference: str) -> np.ndarray:
        with self._lock:
            found = self._uploads.get(reference)
            if found is None or time.monotonic() - found[0] > UPLOAD_TTL:
                self._uploads.pop(reference, None)
                raise InvalidQueryError(f"no upload {reference!r} here (uploads are kept an hour): upload it again")
            return found[1]

    def _searcher(self, include_offline: bool, roots: Sequence[RootInfo]) -> Searcher:
        catalog = self._w.catalog
        offline = offline_roots(catalog, roots)  # their photos are left out unless include_offline
        return Searcher(catalog, self._w.store(), self._w.text_embedder, offline, include_offline)

    def _vector(self, request: SearchRequest, searcher: Searcher) -> tuple[np.ndarray | None, frozenset[int]]:
        """The query vector (compose.py) and the example photos to leave out; None without a query."""
        if not request.has_query:
            return None, frozenset()
        texts = [w.text for w in (*request.texts, *request.negatives)]
        encoded = self._w.text_embedder().embed_texts(texts) if texts else np.zeros((0, 0))
        positives = [(encoded[i], w.weight) for i, w in enumerate(request.texts)]
        negatives = [(encoded[len(request.texts) + i], w.weight) for i, w in enumerate(request.negatives)]
        exclude: set[int] = set()
        for example in request.examples:
            vector, photo_id = self._example(example, searcher)
            positives.append((vector, example.weight))
            exclude |= {photo_id} if photo_id is not None else set()
        for example in request.unlike:
            vector, photo_id = self._example(example, searcher)
            negatives.append((vector, example.weight))
            exclude |= {photo_id} if photo_id is not None else set()
        return compose(positives, negatives), frozenset(exclude)

    def _example(self, example: Example, searcher: Searcher) -> tuple[np.ndarray, int | None]:
        if example.upload is not None:
            return self._uploaded(example.upload), None
        if example.photo_id is not None:
            record = self._w.catalog.get(example.photo_id)
            vector = searcher.stored_vector(record) if record.status == PhotoStatus.INDEXED else None
            if vector is None:
                raise PhotoNotFoundError(f"photo {example.photo_id} is not indexed ({record.status}): no vector to use")
            return vector, record.id
        assert example.path is not None
        return self._file_example(example.path.expanduser().absolute(), searcher)

    def _file_example(self, path: Path, searcher: Searcher) -> tuple[np.ndarray, int | None]:
        """An indexed photo's stored vector, else the file's, embedded; and the photo's catalog id, to leave out."""
        record = _record_at(self._w.catalog, (path, path.resolve()))
        if record is not None and record.status == PhotoStatus.INDEXED:
            vector = searcher.stored_vector(record)
            if vector is not None:
                return vector, record.id
        image = image_file(path, self._w.max_pixels)
        return self._w.embedder().embed_images([image])[0], record.id if record is not None else None


def _record_at(catalog: Catalog, paths: Sequence[Path]) -> PhotoRecord | None:
    for path in paths:
        found = catalog.by_path(path)
        if found is not None:
            return found
    return None
