"""The vector store's HNSW settings: new collections get them all, existing ones take the current ef_search."""

from __future__ import annotations

import numpy as np

import photosearch.stores.vectors as vectorstore
from photosearch.stores.vectors import HNSW, VectorStore, folder_metadata

INFO = {"model": "m", "revision": "r", "dim": 8}


def _hnsw(store: VectorStore) -> dict:
    return store.hnsw()


def test_new_collections_get_the_configured_hnsw(tmp_path):
    store = VectorStore.open(tmp_path / "chroma", "k", INFO)
    got = _hnsw(store)
    assert {key: got[key] for key in HNSW} == HNSW


def test_an_existing_collection_takes_the_current_ef_search(tmp_path, monkeypatch):
    monkeypatch.setattr(vectorstore, "HNSW", {**HNSW, "ef_search": 16, "max_neighbors": 16})
    old = VectorStore.open(tmp_path / "chroma", "k", INFO)
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    old.upsert(list(range(1, 21)), vectors, [folder_metadata(1, "")] * 20)
    assert _hnsw(old)["ef_search"] == 16
    monkeypatch.undo()
    store = VectorStore.open(tmp_path / "chroma", "k", INFO)
    got = _hnsw(store)
    assert got["ef_search"] == HNSW["ef_search"] and got["max_neighbors"] == 16  # M stays as built
    assert store.count() == 20 and store.query(vectors[3], 1)[0].photo_id == 4
