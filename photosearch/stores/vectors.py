"""The Chroma vector store: one vector per indexed photo, id = str(catalog photo id).

Vectors of different models never mix: each model identity gets its own collection, named after the
identity's key, and every other photosearch collection is dropped when a store is opened for a model.

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

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosearch.errors import VectorStoreError
from photosearch.locking import store_lock
from photosearch.pathtext import to_text
from photosearch.stores.boundary import store_errors

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.collection_configuration import CreateHNSWConfiguration
    from chromadb.api.models.Collection import Collection

COLLECTION_PREFIX = "photos_"
HNSW: CreateHNSWConfiguration = {"space": "cosine", "max_neighbors": 48, "ef_construction": 800, "ef_search": 768}
MAX_BATCH = 5000  # under Chroma's max batch size for one add, update or delete (5461)
MAX_FOLDER_DEPTH = 16  # metadata keys d1..d16 hold a photo's ancestor folders for exact subtree filters


def folder_metadata(root_id: int, folder: str) -> dict[str, Any]:
    """Metadata that lets a query filter to one root, or to any folder (and its subfolders) inside it.

    A photo in "2023/summer/beach" gets d1="2023", d2="2023/summer", d3="2023/summer/beach": a filter on the
    subtree "2023/summer" is then one equality on d2, which Chroma evaluates inside the HNSW search.
    """
    folder = to_text(folder)  # Chroma stores UTF-8 only; folder names may not be (pathtext.py)
    meta: dict[str, Any] = {"root": root_id, "folder": folder}
    parts = [p for p in folder.split("/") if p]
    for depth in range(1, min(len(parts), MAX_FOLDER_DEPTH) + 1):
        meta[f"d{depth}"] = "/".join(parts[:depth])
    return meta


def folder_update(root_id: int, folder: str, old_folder: str) -> dict[str, Any]:
    """The metadata change that moves a vector from ``old_folder`` to ``folder``: Chroma merges an update into the
    metadata it has, so the ancestor keys deeper than the new folder are cleared (None deletes a key), or the photo
    would still match a subtree filter on its old folder. Only the keys the old folder had are cleared: each key
    in an update costs (18 keys per vector update 2,755/s against 4,428/s for 3). Other keys (taken_at) stay."""
    meta = folder_metadata(root_id, folder)
    old_depth = min(len([p for p in to_text(old_folder).split("/") if p]), MAX_FOLDER_DEPTH)
    return {f"d{depth}": None for depth in range(1, old_depth + 1) if f"d{depth}" not in meta} | meta


def folder_filter(root_id: int, folder: str) -> dict[str, Any]:
    folder = to_text(folder)
    parts = [p for p in folder.split("/") if p]
    if not parts:
        return {"root": root_id}
    if len(parts) > MAX_FOLDER_DEPTH:
        return {"$and": [{"root": root_id}, {"folder": folder}]}  # deeper than indexed: this folder only
    return {"$and": [{"root": root_id}, {f"d{len(parts)}": "/".join(parts)}]}


def excluding_roots(where: dict[str, Any] | None, root_ids: frozenset[int]) -> dict[str, Any] | None:
    """``where``, narrowed to vectors outside the given roots (evaluated inside the HNSW search, so k still come)."""
    if not root_ids:
        return where
    clause: dict[str, Any] = {"root": {"$nin": sorted(root_ids)}}
    return clause if where is None else {"$and": [where, clause]}


@dataclass(frozen=True)
class Hit:
    photo_id: int
    score: float  # cosine similarity, 1.0 = same direction


class VectorStore:
    """The current model's Chroma collection, safe to use from several processes.

    Chroma's embedded client keeps the HNSW graph in memory and does not notice another process's writes.
    So every write holds ``chroma.lock`` exclusively and then touches it; every read holds it shared and,
    when the lock file's mtime shows that another process wrote since this one last looked, first reopens
    the client from disk. A process that is the only writer (the daemon) never reopens, so it stays warm.
    """

    def __init__(self, directory: Path, name: str, model_info: Mapping[str, str | int]) -> None:
        self._directory = directory
        self._name = name
        self._model_info = dict(model_info)
        self._lock_path = directory.with_name(directory.name + ".lock")
        self._seen_generation = -1
        self._mutex = threading.RLock()  # one reopen at a time, and no query on a client being replaced
        self._client: ClientAPI | None = None
        self._collection: Collection | None = None

    @classmethod
    def open(cls, directory: Path, model_key: str, model_info: Mapping[str, str | int]) -> VectorStore:
        """Open (or create) the collection of this model and drop the collections of any other model."""
        store = cls(directory, COLLECTION_PREFIX + model_key, model_info)
        with store._errors("open"):
            directory.mkdir(parents=True, exist_ok=True)
            # Look first under the shared lock: a write (and the reload it causes in every other process)
            # only happens when another model's collection must go or ef_search must change.
            with store._reading() as collection:
                client = store._client
                assert client is not None
                stale = [c.name for c in client.list_collections()
                         if c.name.startswith(COLLECTION_PREFIX) and c.name != store._name]  # fmt: skip
                ef_ok = (collection.configuration.get("hnsw") or {}).get("ef_search") == HNSW["ef_search"]
            if stale or not ef_ok:
                with store._writing() as collection:
                    assert store._client is not None  # reloaded by _writing if another process wrote
                    for name in stale:
                        store._client.delete_collection(name)
                    # ef_search is the one HNSW setting a built collection can change: an index made with an
                    # older default gets today's recall without a reindex (M and ef_construction stay as built).
                    if not ef_ok:
                        collection.modify(configuration={"hnsw": {"ef_search": HNSW["ef_search"]}})
                        store._collection = None  # the loaded index keeps the old value until read afresh
        return store

    def _errors(self, doing: str = "read or write") -> AbstractContextManager[None]:
        """What Chroma, sqlite3 or the OS raise in here leaves as a typed error (boundary.py)."""
        failed = f"cannot {doing} the vector store in {self._directory}"
        return store_errors(VectorStoreError, self._directory.parent, failed)

    def _load(self) -> None:
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient
        from chromadb.config import Settings

        with self._errors("open"):
            # Chroma caches one client system per path and process; drop it so the files are read afresh.
            SharedSystemClient.clear_system_cache()
            self._client = chromadb.PersistentClient(
                path=str(self._directory), settings=Settings(anonymized_telemetry=False, allow_reset=False)
            )
            self._collection = self._client.get_or_create_collection(
                self._name, configuration={"hnsw": HNSW}, metadata=self._model_info, embedding_function=None
            )

    def _generation(self) -> int:
        return self._lock_path.stat().st_mtime_ns

    @contextmanager
    def _reading(self) -> Iterator[Collection]:
        with self._errors(), self._mutex, store_lock(self._lock_path, exclusive=False):
            if self._collection is None or self._generation() != self._seen_generation:
                self._load()
                self._seen_generation = self._generation()
            assert self._collection is not None
            yield self._collection

    @contextmanager
    def _writing(self) -> Iterator[Collection]:
        with self._errors(), self._mutex, store_lock(self._lock_path, exclusive=True):
            if self._collection is None or self._generation() != self._seen_generation:
                self._load()
            assert self._collection is not None
            yield self._collection
            os.utime(self._lock_path)  # tell readers in other processes to reload
            self._seen_generation = self._generation()

    @staticmethod
    def size_bytes(directory: Path) -> int:
        """The size on disk of the vector store in ``directory`` (0 if there is none yet), without opening it."""
        if directory.is_file():
            return directory.stat().st_size
        return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0

    @property
    def name(self) -> str:
        return self._name

    def hnsw(self) -> dict[str, Any]:
        """The collection's HNSW settings as Chroma holds them (M and ef_construction as built)."""
        with self._reading() as collection:
            return dict(collection.configuration.get("hnsw") or {})

    def collection_names(self) -> list[str]:
        with self._reading():
            assert self._client is not None
            return [c.name for c in self._client.list_collections()]

    def count(self) -> int:
        with self._reading() as collection:
            return collection.count()

    def upsert(self, ids: Sequence[int], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            end = start + MAX_BATCH
            with self._writing() as collection:
                collection.upsert(ids=[str(i) for i in ids[start:end]], metadatas=list(metadatas[start:end]),
                                  embeddings=vectors[start:end].astype(np.float32))  # fmt: skip

    def update_metadata(self, ids: Sequence[int], metadatas: Sequence[dict[str, Any]]) -> None:
        """Set metadata keys of existing vectors; keys not given keep their values (Chroma merges them)."""
        # Chroma refuses an update of more than its max batch size (5461) in one call; a moved folder can hold more.
        for start in range(0, len(ids), MAX_BATCH):
            with self._writing() as collection:
                collection.update(ids=[str(i) for i in ids[start : start + MAX_BATCH]],
                                  metadatas=list(metadatas[start : start + MAX_BATCH]))  # fmt: skip

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not ids:
            return {}
        with self._reading() as collection:
            got = collection.get(ids=[str(i) for i in ids], include=["embeddings"])
        embeddings = got["embeddings"]
        assert embeddings is not None
        return {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embeddings, strict=True)}

    def delete(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            with self._writing() as collection:
                collection.delete(ids=[str(i) for i in ids[start : start + MAX_BATCH]])

    def all_ids(self) -> set[int]:
        """Every id in the collection, read in pages so a million ids do not come back in one reply."""
        found: set[int] = set()
        offset, page = 0, 20_000
        while True:
            with self._reading() as collection:
                got = collection.get(include=[], limit=page, offset=offset)
            found.update(int(i) for i in got["ids"])
            if len(got["ids"]) < page:
                return found
            offset += page

    def query(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        if k <= 0:
            return []
        with self._reading() as collection:
            result = collection.query(
                query_embeddings=vector.reshape(1, -1).astype(np.float32), n_results=k, where=where,
                include=["distances"],
            )  # fmt: skip
        distances = result["distances"]
        assert distances is not None
        return [Hit(int(i), 1.0 - float(d)) for i, d in zip(result["ids"][0], distances[0], strict=True)]
