"""The Chroma vector store: one vector per distinct content, id = the content hash (blake2b of the file's bytes).

Byte-identical files share one vector, and a vector says nothing about where its files are: the catalog does
(root, folder, status). So a moved folder or a copied duplicate writes rows only, never Chroma; a scoped search
filters in the catalog (query/search.py). Inserting thousands of identical vectors into HNSW also cost ~30/s
against ~370/s for distinct ones (benchmarks/bench_stores.py), which a vector per photo paid for every duplicate.

Vectors of different models never mix: each collection holds one model's vectors and records its identity; the
catalog says which collection is active and which one a reindex is filling beside it (stores/generations.py).

HNSW parameters (cosine space), chosen with benchmarks/bench_query.py (100,000 clustered CLIP-like photo
vectors, 1,000 text-like queries, 2 CPU cores). Text queries are the hard case for HNSW: CLIP's modality gap
puts them far from every photo (cosine ~0.3), where the top 10 differ by ~0.02 in score. Recall@10 against
exact search, and the HNSW part of a query (queried back to back; ~1 ms more inside an end-to-end search,
after the text encoder has flushed the CPU caches):

    M 32, ef_construction 200, ef_search  128: 0.86, 1.0 ms    (image-like queries: 0.995)
    M 32, ef_construction 200, ef_search 1024: 0.97, 2.7 ms
    M 32, ef_construction 400, ef_search  768: 0.975, 2.9 ms
    M 48, ef_construction 400, ef_search  512: 0.971, 2.5 ms
    M 48, ef_construction 400, ef_search  768: 0.980-0.984, 3.1 ms
    M 48, ef_construction 400, ef_search 1024: 0.989, 3.7 ms
    M 48, ef_construction 800, ef_search  512: 0.977, 2.9 ms
    M 48, ef_construction 800, ef_search  768: 0.988, 3.5 ms   <- chosen (image-like queries: 0.999)
    M 64, ef_construction 400, ef_search  768: 0.980, 3.4 ms

M 48 costs ~13 MB more per 100,000 photos than M 32; with ef_construction 800 an insert costs ~2 ms of CPU
(3x the old settings), which is negligible next to embedding the photo. M and ef_construction are fixed when
a collection is created (an index built with other values keeps them until it is rebuilt for another model);
ef_search is updated when a store is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from photosearch import matvec
from photosearch.errors import VectorStoreError
from photosearch.stores.vector_cache import VectorCache

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.collection_configuration import CreateHNSWConfiguration
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import GetResult, QueryResult

    from photosearch.config import Config
    from photosearch.stores.vector_file import Snapshot, VectorFile

PREFIX = "vectors_"  # collections keyed by content hash
LEGACY_PREFIX = "photos_"  # collections keyed by photo id, written before content keys (stores/legacy.py)
HNSW: CreateHNSWConfiguration = {"space": "cosine", "max_neighbors": 48, "ef_construction": 800, "ef_search": 768}
MAX_BATCH = 5000  # under Chroma's max batch size for one add, update or delete (5461)
UNKNOWN_ID = "Error finding id"  # Chroma's message for a search filtered to an id it does not hold
FETCH_LIMIT = 1000  # the most uncached vectors a scoped query reads (~55 ms) rather than ask Chroma to filter
# Vectors under which a search scans the vector files, exactly, rather than ask HNSW (recall@10 ~0.986): at 100,000
# the scan takes ~10 ms on 2 cores against 5-11 ms for HNSW's top 10, and ~10 ms against ~25 ms for the
# thousands of matches a date-sorted query with a cutoff reads (HNSW searches again for each further look, a scan
# keeps its scores); and a process that scans never imports chromadb nor loads the HNSW index.
SCAN_BELOW = 150_000

T = TypeVar("T")


class ChromaPlace(Protocol):
    """Where the collections live, as the vector store, a reindex and `status` need it: the data directory's
    embedded Chroma (ChromaDir) or a Chroma server (stores/chroma_server.py, ChromaServer)."""

    def errors(self, doing: str = "read or write") -> AbstractContextManager[None]:
        """Foreign exceptions inside leave as typed errors (stores/boundary.py)."""
        ...

    def describe(self) -> str:
        """Where the vectors are, for `status` (never a credential)."""
        ...

    def call(self, work: Callable[[ClientAPI], T], *, write: bool = False, touching: str | None = None) -> T:
        """Run ``work`` with the client; ``write``: it writes (locked as a write, told to other readers), to the
        collection ``touching`` if it names one. One operation, idempotent: a server's transient fault runs it
        again."""
        ...

    def opened(self) -> bool:
        """Whether this process has the client loaded (a server's always counts as loaded)."""
        ...

    def vector_file(self, name: str) -> VectorFile | None:
        """The flat files that mirror collection ``name`` (stores/vector_file.py); None where there are none."""
        ...

    def collection(self, name: str, create: Mapping[str, str | int] | None) -> Collection:
        """The collection ``name`` (inside ``call``), created with the model's ``create`` metadata if missing."""
        ...

    def forget(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def drop(self, names: Sequence[str]) -> None: ...

    def size_bytes(self) -> int | None:
        """The vectors' size on disk; None where it cannot be known (a server's)."""
        ...

    def written(self) -> int | None:
        """A stamp that changes with every write, read without opening the store; None where there is none."""
        ...


def get_collection(client: ClientAPI, name: str, create: Mapping[str, str | int] | None) -> Collection:
    """The collection ``name``; with ``create`` (the model's identity) made with today's HNSW settings if missing.
    Without it a missing one raises: another process dropped it (a reindex switched), and the caller looks at the
    catalog again."""
    if create is not None:
        return client.get_or_create_collection(
            name, configuration={"hnsw": HNSW}, metadata=dict(create), embedding_function=None
        )
    return client.get_collection(name, embedding_function=None)


def open_vectors(config: Config) -> ChromaPlace:
    """The vectors' place the configuration names: store.vectors' server, else the embedded store in data_dir."""
    store = config.store
    if store.vectors is None:
        from photosearch.stores.chroma_dir import ChromaDir  # it imports this module

        return ChromaDir(config.chroma_dir)
    from photosearch.stores.chroma_server import ChromaServer  # it imports this module

    return ChromaServer(store.vectors, store.tenant, store.database, store.headers)


@dataclass(frozen=True)
class Hit:
    key: str  # the content hash
    score: float  # cosine similarity, 1.0 = same direction


class VectorStore:
    """One model's collection in a ChromaDir or on a ChromaServer: content hash -> vector.

    In the data directory's Chroma the collection's vectors are also in flat files (stores/vector_file.py): while
    they are complete, counts and vector reads come from them, and so do searches in a process that has not
    opened Chroma (a new `photosearch search`), or of a collection small enough that an exact scan is as fast as
    HNSW. Chroma is opened (and the collection created, or its ef_search brought up to date) on first need.
    """

    def __init__(self, chroma: ChromaPlace, name: str, model_info: Mapping[str, str | int] | None = None) -> None:
        """``model_info``: the model's identity, to create the collection with if it is missing; None: it exists."""
        self.chroma = chroma
        self._name = name
        self._model_info = None if model_info is None else dict(model_info)
        self._prepared = model_info is None
        self._prepare_lock = threading.Lock()
        self._file = chroma.vector_file(name)
        self._file_refused = False  # its keys are not content hashes: no files (refresh_file)
        self._cache = VectorCache()  # what queries read, for exact search over narrow scopes (vector_cache.py)
        self._counted: tuple[int, int] | None = None  # (chroma.written() stamp, count): count() costs ~15 ms
        self._last: tuple[bytes, Snapshot, np.ndarray] | None = None  # the last scan's query, files and scores

    @classmethod
    def open(cls, chroma: ChromaPlace, name: str, model_info: Mapping[str, str | int]) -> VectorStore:
        """The collection ``name`` for the model ``model_info`` describes: created (or brought up to date) now, or,
        beside vector files, when Chroma is first used."""
        store = cls(chroma, name, model_info)
        if store._file is None:  # a server: nothing to answer from without it, and a fault should show now
            store._prepare()
        return store

    def _prepare(self) -> None:
        """Create the collection if missing, and give an existing one today's ef_search: once, before Chroma is
        first used. Looks first as a reader: a write (and the reload it causes in every other process) only
        happens when the collection is new or ef_search must change."""
        with self._prepare_lock:
            if self._prepared:
                return
            name, chroma, info = self._name, self.chroma, self._model_info

            def settings(client: ClientAPI) -> dict[str, Any] | None:
                if name not in {c.name for c in client.list_collections()}:
                    return None
                return dict(chroma.collection(name, None).configuration.get("hnsw") or {})

            def create(client: ClientAPI) -> None:
                collection = chroma.collection(name, info)
                # ef_search is the one HNSW setting a built collection can change: an index made with an older
                # default gets today's recall without a reindex (M and ef_construction stay as built).
                if (collection.configuration.get("hnsw") or {}).get("ef_search") != HNSW["ef_search"]:
                    collection.modify(configuration={"hnsw": {"ef_search": HNSW["ef_search"]}})
                chroma.forget(name)  # the loaded index keeps the old value until read afresh

            with chroma.errors("open"):
                hnsw = chroma.call(settings)
                if hnsw is None or hnsw.get("ef_search") != HNSW["ef_search"]:
                    chroma.call(create, write=True, touching=name)
            self._prepared = True

    def _run(self, work: Callable[[Collection], T], write: bool = False) -> T:
        """One operation on this collection (tried again on a server's transient fault: each is idempotent)."""
        self._prepare()
        return self.chroma.call(
            lambda _client: work(self.chroma.collection(self._name, None)), write=write,
            touching=self._name if write else None,
        )  # fmt: skip

    def _snapshot(self) -> Snapshot | None:
        """The vector files, when they hold exactly what the collection holds; None: ask Chroma."""
        return None if self._file is None else self._file.snapshot(self.chroma.written())

    @property
    def name(self) -> str:
        return self._name

    def hnsw(self) -> dict[str, Any]:
        """The collection's HNSW settings as Chroma holds them (M and ef_construction as built)."""
        return self._run(lambda collection: dict(collection.configuration.get("hnsw") or {}))

    def model_info(self) -> dict[str, Any]:
        return self._run(lambda collection: dict(collection.metadata or {}))

    def count(self) -> int:
        """How many vectors the collection holds; asked again only once a write, in any process, is seen (the
        stamp is read first: a write in between makes the next call ask again)."""
        snap = self._snapshot()
        if snap is not None:
            return snap.live
        stamp = self.chroma.written()
        if stamp is not None and self._counted is not None and self._counted[0] == stamp:
            return self._counted[1]
        found = self._run(lambda collection: collection.count())
        self._counted = None if stamp is None else (stamp, found)
        return found

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        self.refresh_file()  # files left incomplete (by a crash, an older photosearch) are rebuilt first, once
        for start in range(0, len(keys), MAX_BATCH):
            self._upsert(list(keys[start : start + MAX_BATCH]), vectors[start : start + MAX_BATCH].astype(np.float32))

    def _upsert(self, ids: list[str], batch: np.ndarray) -> None:  # one batch, one operation, one retry unit
        def write(collection: Collection) -> None:
            collection.upsert(ids=ids, embeddings=batch)
            if self._file is not None:
                self._file.put(ids, batch)

        self._run(write, write=True)

    def vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        snap = self._snapshot()
        if snap is not None:
            return {key: np.array(snap.matrix[row]) for key, row in snap.rows_of(keys).items()}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), MAX_BATCH):
            found.update(self._vectors(list(keys[start : start + MAX_BATCH])))
        return found

    def _vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        got = self._run(lambda collection: collection.get(ids=ids, include=["embeddings"]))
        embeddings = got["embeddings"]
        assert embeddings is not None
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embeddings, strict=True)}

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), MAX_BATCH):
            self._delete(list(keys[start : start + MAX_BATCH]))

    def _delete(self, ids: list[str]) -> None:
        def write(collection: Collection) -> None:
            collection.delete(ids=ids)
            if self._file is not None:
                self._file.remove(ids)

        self._run(write, write=True)

    def all_keys(self) -> set[str]:
        """Every key in the collection, read in pages so a million ids do not come back in one reply."""
        snap = self._snapshot()
        if snap is not None:
            return {key for key in snap.keys.astype("U32").tolist() if key}
        found: set[str] = set()
        offset, page = 0, 20_000
        while True:
            ids = self._keys(offset, page)
            found.update(ids)
            if len(ids) < page:
                return found
            offset += page

    def _keys(self, offset: int, limit: int) -> list[str]:
        return self._run(lambda collection: collection.get(include=[], limit=limit, offset=offset))["ids"]

    def page(self, offset: int, limit: int) -> GetResult:
        """Ids and vectors in Chroma's order, ``limit`` from ``offset`` (an old collection read through)."""
        return self._run(lambda collection: collection.get(include=["embeddings"], limit=limit, offset=offset))

    def refresh_file(self, page: int = 5000) -> int | None:
        """Write the vector files anew when they are not complete (none yet, a crash mid-write, a write by an older
        photosearch): the collection read whole under the shared lock, which keeps writers out. How many vectors
        they hold now; None where there are none (a server) or nothing was to do."""
        file = self._file
        if file is None or self._file_refused or self._snapshot() is not None:
            return None

        def rebuild(_client: ClientAPI) -> int:
            collection = self.chroma.collection(self._name, None)

            def pages() -> Iterator[tuple[list[str], np.ndarray]]:
                offset = 0
                while True:
                    got = collection.get(include=["embeddings"], limit=page, offset=offset)
                    found = got["embeddings"] if got["embeddings"] is not None else []
                    yield got["ids"], np.asarray(found, dtype=np.float32)
                    if len(got["ids"]) < page:
                        return
                    offset += page

            stamp = self.chroma.written()
            assert stamp is not None  # a ChromaDir's (the one place with files)
            return file.rebuild(pages(), stamp)

        self._prepare()
        try:
            with self.chroma.errors("write the vector files of"):
                return self.chroma.call(rebuild)
        except ValueError:  # a key that is not a content hash (never in a content-keyed collection): Chroma only
            self._file_refused = True
            return None

    def query(self, vector: np.ndarray, k: int, among: Sequence[str] | None = None) -> list[Hit]:
        """The k nearest vectors, or the k nearest of the keys ``among``. Exactly when it can be fast: over the
        vector files (a process without Chroma open, or a small collection), or over the cached vectors of a scope
        when at most FETCH_LIMIT of them are not cached yet (or the files have them); else Chroma's HNSW search,
        which filters inside it for ``among`` (~100 ms at 100,000 vectors, however few the keys)."""
        if k <= 0 or (among is not None and not among):
            return []
        if among is not None:
            exact = self._exact(vector, k, among)
            if exact is not None:
                return exact
        else:
            snap = self._scannable()
            if snap is not None:
                return self._scan(snap, vector, k)
        ids = list(among) if among is not None else None
        try:
            result = self._search(vector, k, ids)
        except VectorStoreError as exc:
            # Chroma refuses the whole search when one id has no vector (an indexed row whose vector was lost,
            # until the next run reconciles): search among those that have one.
            if ids is None or UNKNOWN_ID not in str(exc.__cause__):
                raise
            result = self._search(vector, k, sorted(self.vectors(ids)))
        distances = result["distances"]
        assert distances is not None
        return [Hit(i, 1.0 - float(d)) for i, d in zip(result["ids"][0], distances[0], strict=True)]

    def _search(self, vector: np.ndarray, k: int, ids: list[str] | None) -> QueryResult:
        return self._run(lambda collection: collection.query(
            query_embeddings=vector.reshape(1, -1).astype(np.float32), n_results=k, include=["distances"], ids=ids,
        ))  # fmt: skip

    def _scannable(self) -> Snapshot | None:
        snap = self._snapshot()
        return snap if snap is not None and (snap.live < SCAN_BELOW or not self.chroma.opened()) else None

    def _scan(self, snap: Snapshot, vector: np.ndarray, k: int) -> list[Hit]:
        """The k nearest of all the files' vectors, exactly. A search that asks again for more hits (the catalog
        found too few usable) reuses the scores."""
        query = (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
        asked = query.tobytes()
        if self._last is not None and self._last[0] == asked and self._last[1] is snap:
            scores = self._last[2]
        else:
            scores = matvec.scores(snap.matrix, query) / np.maximum(snap.norms, 1e-12)
            scores[snap.dead()] = -np.inf
            self._last = asked, snap, scores
        k = min(k, snap.live)
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.flatnonzero(scores > -np.inf)
        ranked = top[np.argsort(-scores[top], kind="stable")]
        keys = snap.keys[ranked].astype("U32").tolist()
        return [Hit(key, float(scores[row])) for key, row in zip(keys, ranked, strict=True)]

    def _exact(self, vector: np.ndarray, k: int, among: Sequence[str]) -> list[Hit] | None:
        rows = self._cache.rows_of(among)
        missing = [among[int(i)] for i in np.flatnonzero(rows < 0)]
        if len(missing) > FETCH_LIMIT and self._snapshot() is None:
            return None
        if missing:
            found = self.vectors(missing)
            self._cache.add(found)
            rows = self._cache.rows_of(among)
            if any(among[int(i)] in found for i in np.flatnonzero(rows < 0)):
                return None  # the cache is full: what did not fit is Chroma's to search
        return [Hit(key, score) for key, score in self._cache.nearest(vector, k, among, rows)]

    def cached_vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """vectors(), for queries: from the cache where it has them (normalised), the rest read and kept. Not for
        checking what the collection holds (a vector deleted since stays cached): that is vectors()."""
        found = self._cache.get(keys)
        missing = [key for key in keys if key not in found]
        if missing:
            read = self.vectors(missing)
            self._cache.add(read)
            found.update(read)
        return found

    def warm(self, should_stop: Callable[[], bool] = lambda: False, page: int = 5000) -> int:
        """Read the whole collection into the cache (as much as fits), a page at a time: `serve` does, in the
        background, so that filtered queries are exact and fast from then on. From the vector files (written
        anew first if they are not complete); from Chroma where there are none. A collection too large for a scan
        to keep up with HNSW has its HNSW index loaded too (one search). How many vectors are cached."""
        self.refresh_file()
        snap = self._snapshot()
        if snap is not None and snap.live >= SCAN_BELOW and not self.chroma.opened():
            self._search(np.asarray(snap.matrix[int(np.argmin(snap.dead()))]), 1, None)
        offset = 0
        while not should_stop() and not self._cache.full():
            if snap is not None:
                keys = snap.keys[offset : offset + page].astype("U32").tolist()
                block = snap.matrix[offset : offset + page]
                self._cache.add({key: block[i] for i, key in enumerate(keys) if key})
                if offset + page >= len(snap.keys):
                    break
            else:
                got = self.page(offset, page)
                embeddings = got["embeddings"] if got["embeddings"] is not None else []
                self._cache.add(
                    {key: np.asarray(v, dtype=np.float32) for key, v in zip(got["ids"], embeddings, strict=True)}
                )
                if len(got["ids"]) < page:
                    break
            offset += page
        return len(self._cache)
