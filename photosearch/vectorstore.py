"""The Chroma vector store: one vector per indexed photo, id = str(catalog photo id).

Vectors of different models never mix: each model identity gets its own collection, named after the
identity's key, and every other photosearch collection is dropped when a store is opened for a model.

HNSW parameters (cosine space): M (max_neighbors) = 32 and ef_construction = 200 build a graph that keeps
recall@10 high on clustered photo embeddings; ef_search = 128 bounds query work at a few ms per query at
100k photos on a laptop CPU. Raising ef_search buys recall for latency; the benchmarks in benchmarks/
measure both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosearch.errors import VectorStoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.collection_configuration import CreateHNSWConfiguration
    from chromadb.api.models.Collection import Collection

COLLECTION_PREFIX = "photos_"
HNSW: CreateHNSWConfiguration = {"space": "cosine", "max_neighbors": 32, "ef_construction": 200, "ef_search": 128}
MAX_FOLDER_DEPTH = 16  # metadata keys d1..d16 hold a photo's ancestor folders for exact subtree filters


def folder_metadata(root_id: int, folder: str) -> dict[str, Any]:
    """Metadata that lets a query filter to one root, or to any folder (and its subfolders) inside it.

    A photo in "2023/summer/beach" gets d1="2023", d2="2023/summer", d3="2023/summer/beach": a filter on the
    subtree "2023/summer" is then one equality on d2, which Chroma evaluates inside the HNSW search.
    """
    meta: dict[str, Any] = {"root": root_id, "folder": folder}
    parts = [p for p in folder.split("/") if p]
    for depth in range(1, min(len(parts), MAX_FOLDER_DEPTH) + 1):
        meta[f"d{depth}"] = "/".join(parts[:depth])
    return meta


def folder_filter(root_id: int, folder: str) -> dict[str, Any]:
    parts = [p for p in folder.split("/") if p]
    if not parts:
        return {"root": root_id}
    if len(parts) > MAX_FOLDER_DEPTH:
        return {"$and": [{"root": root_id}, {"folder": folder}]}  # deeper than indexed: this folder only
    return {"$and": [{"root": root_id}, {f"d{len(parts)}": "/".join(parts)}]}


@dataclass(frozen=True)
class Hit:
    photo_id: int
    score: float  # cosine similarity, 1.0 = same direction


class VectorStore:
    def __init__(self, client: ClientAPI, collection: Collection) -> None:
        self._client = client
        self._collection = collection

    @classmethod
    def open(cls, directory: Path, model_key: str, model_info: Mapping[str, str | int]) -> VectorStore:
        """Open (or create) the collection of this model and drop the collections of any other model."""
        import chromadb
        from chromadb.config import Settings

        name = COLLECTION_PREFIX + model_key
        try:
            directory.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(
                path=str(directory), settings=Settings(anonymized_telemetry=False, allow_reset=False)
            )
            for existing in client.list_collections():
                if existing.name.startswith(COLLECTION_PREFIX) and existing.name != name:
                    client.delete_collection(existing.name)
            collection = client.get_or_create_collection(
                name,
                configuration={"hnsw": HNSW},
                metadata=dict(model_info),
                embedding_function=None,
            )
        except Exception as exc:  # chromadb raises a zoo of types (sqlite, rust bindings, its own)
            raise VectorStoreError(f"cannot open the vector store in {directory}: {exc}") from exc
        return cls(client, collection)

    @property
    def name(self) -> str:
        return self._collection.name

    def count(self) -> int:
        return self._collection.count()

    def upsert(self, ids: Sequence[int], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]]) -> None:
        if not ids:
            return
        self._collection.upsert(
            ids=[str(i) for i in ids], embeddings=vectors.astype(np.float32), metadatas=list(metadatas)
        )

    def update_metadata(self, ids: Sequence[int], metadatas: Sequence[dict[str, Any]]) -> None:
        if ids:
            self._collection.update(ids=[str(i) for i in ids], metadatas=list(metadatas))

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not ids:
            return {}
        got = self._collection.get(ids=[str(i) for i in ids], include=["embeddings"])
        embeddings = got["embeddings"]
        assert embeddings is not None
        return {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], embeddings, strict=True)}

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            self._collection.delete(ids=[str(i) for i in ids])

    def all_ids(self) -> set[int]:
        """Every id in the collection, read in pages so a million ids do not come back in one reply."""
        found: set[int] = set()
        offset, page = 0, 20_000
        while True:
            got = self._collection.get(include=[], limit=page, offset=offset)
            found.update(int(i) for i in got["ids"])
            if len(got["ids"]) < page:
                return found
            offset += page

    def query(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        if k <= 0:
            return []
        result = self._collection.query(
            query_embeddings=vector.reshape(1, -1).astype(np.float32),
            n_results=k,
            where=where,
            include=["distances"],
        )
        distances = result["distances"]
        assert distances is not None
        return [Hit(int(i), 1.0 - float(d)) for i, d in zip(result["ids"][0], distances[0], strict=True)]
