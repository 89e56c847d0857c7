"""The vector store: HNSW settings (new collections get them all, existing ones take the current ef_search),
content keys, a search filtered to some keys, and two collections side by side on one client."""

from __future__ import annotations

import numpy as np

import photosearch.stores.vectors as vectorstore
from photosearch.stores.vectors import HNSW, ChromaDir, VectorStore

INFO = {"model": "m", "revision": "r", "dim": 8}


def _hnsw(store: VectorStore) -> dict:
    return store.hnsw()


def test_new_collections_get_the_configured_hnsw(tmp_path):
    store = VectorStore.open(ChromaDir(tmp_path / "chroma"), "vectors_k", INFO)
    got = _hnsw(store)
    assert {key: got[key] for key in HNSW} == HNSW


def test_an_existing_collection_takes_the_current_ef_search(tmp_path, monkeypatch):
    monkeypatch.setattr(vectorstore, "HNSW", {**HNSW, "ef_search": 16, "max_neighbors": 16})
    old = VectorStore.open(ChromaDir(tmp_path / "chroma"), "vectors_k", INFO)
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    old.upsert([f"h{i}" for i in range(1, 21)], vectors)
    assert _hnsw(old)["ef_search"] == 16
    monkeypatch.undo()
    store = VectorStore.open(ChromaDir(tmp_path / "chroma"), "vectors_k", INFO)
    got = _hnsw(store)
    assert got["ef_search"] == HNSW["ef_search"] and got["max_neighbors"] == 16  # M stays as built
    assert store.count() == 20 and store.query(vectors[3], 1)[0].key == "h4"


def test_a_search_among_some_keys_and_two_collections_on_one_client(tmp_path):
    chroma = ChromaDir(tmp_path / "chroma")
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
    second.upsert(["x"], vectors[:1])
    assert (first.count(), second.count()) == (50, 1)
    assert sorted(chroma.names()) == ["vectors_a", "vectors_b"]
    chroma.drop(["vectors_a"])
    assert chroma.names() == ["vectors_b"] and second.count() == 1
    assert VectorStore.open(ChromaDir(tmp_path / "chroma"), "vectors_b", INFO).all_keys() == {"x"}  # on disk
