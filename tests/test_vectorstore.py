"""The vector store: HNSW settings (new collections get them all, existing ones take the current ef_search),
content keys, a search filtered to some keys, and two collections side by side on one client. Every test runs
against both places the vectors can live: the data directory's embedded Chroma and a real Chroma server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import photosearch.stores.vectors as vectorstore
from photosearch.config import StoreConfig
from photosearch.stores.chroma_server import ChromaServer
from photosearch.stores.vectors import HNSW, ChromaDir, ChromaPlace, VectorStore

INFO = {"model": "m", "revision": "r", "dim": 8}

NewPlace = Callable[[], ChromaPlace]


@pytest.fixture(params=["embedded", "server"])
def new_place(request: pytest.FixtureRequest, tmp_path: Path) -> NewPlace:
    """Opens the test's vector place afresh each call (a new process would): the same folder, or the same
    database on the server."""
    if request.param == "embedded":
        return lambda: ChromaDir(tmp_path / "chroma")
    store: StoreConfig = request.getfixturevalue("chroma_store_config")
    assert store.vectors is not None
    url, database = store.vectors, store.database
    return lambda: ChromaServer(url, database=database)


def _hnsw(store: VectorStore) -> dict:
    return store.hnsw()


def test_new_collections_get_the_configured_hnsw(new_place):
    store = VectorStore.open(new_place(), "vectors_k", INFO)
    got = _hnsw(store)
    assert {key: got[key] for key in HNSW} == HNSW
    assert store.model_info() == INFO


def test_an_existing_collection_takes_the_current_ef_search(new_place, monkeypatch):
    monkeypatch.setattr(vectorstore, "HNSW", {**HNSW, "ef_search": 16, "max_neighbors": 16})
    old = VectorStore.open(new_place(), "vectors_k", INFO)
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    old.upsert([f"h{i}" for i in range(1, 21)], vectors)
    assert _hnsw(old)["ef_search"] == 16
    monkeypatch.undo()
    store = VectorStore.open(new_place(), "vectors_k", INFO)
    got = _hnsw(store)
    assert got["ef_search"] == HNSW["ef_search"] and got["max_neighbors"] == 16  # M stays as built
    assert store.count() == 20 and store.query(vectors[3], 1)[0].key == "h4"


def test_a_search_among_some_keys_and_two_collections_on_one_client(new_place):
    chroma = new_place()
    vectors = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    first = VectorStore.open(chroma, "vectors_a", INFO)
    first.upsert([f"h{i}" for i in range(50)], vectors)
    among = [f"h{i}" for i in range(0, 50, 5)]
    hits = first.query(vectors[7], 3, among=among)
    assert len(hits) == 3 and {h.key for h in hits} <= set(among)  # h7 itself is not among them
    exact = sorted(among, key=lambda k: -float(vectors[int(k[1:])] @ vectors[7] / np.linalg.norm(vectors[int(k[1:])])))
    assert [h.key for h in hits] == exact[:3]
    assert first.query(vectors[7], 3, among=[]) == []

    second = VectorStore.open(chroma, "vectors_b", INFO)  # beside it, on the same client
    second.upsert(["xyz"], vectors[:1])
    assert (first.count(), second.count()) == (50, 1)
    assert sorted(chroma.names()) == ["vectors_a", "vectors_b"]
    chroma.drop(["vectors_a"])
    assert chroma.names() == ["vectors_b"] and second.count() == 1
    assert VectorStore.open(new_place(), "vectors_b", INFO).all_keys() == {"xyz"}  # on disk, or on the server


def test_vectors_read_back_deleted_and_paged(new_place):
    """Reading stored vectors, deleting some, and reading every key in pages, as a reindex does."""
    chroma = new_place()
    store = VectorStore.open(chroma, "vectors_c", INFO)
    vectors = np.random.default_rng(2).standard_normal((30, 8)).astype(np.float32)
    keys = [f"k{i:02}" for i in range(30)]
    store.upsert(keys, vectors)
    store.upsert(keys[:5], vectors[:5])  # again: an upsert by id changes nothing (a retried one neither)
    got = store.vectors(["k03", "k17", "missing"])
    assert set(got) == {"k03", "k17"} and np.allclose(got["k17"], vectors[17], atol=1e-6)
    store.delete([*keys[:10], "missing"])
    assert store.all_keys() == set(keys[10:]) and store.count() == 20
    page = store.page(0, 7)
    assert len(page["ids"]) == 7 and page["embeddings"] is not None and len(page["embeddings"][0]) == 8
    assert chroma.size_bytes() is None or chroma.size_bytes() > 0
    assert chroma.describe()
