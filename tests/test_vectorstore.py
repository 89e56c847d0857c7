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
from photosearch.stores.chroma_dir import ChromaDir
from photosearch.stores.chroma_server import ChromaServer
from photosearch.stores.vectors import HNSW, ChromaPlace, VectorStore

INFO = {"model": "m", "revision": "r", "dim": 8}


def _key(i: int) -> str:
    """A content hash's shape (32 hex digits), as every key of a collection is."""
    return f"{i:032x}"


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
    old.upsert([_key(i) for i in range(1, 21)], vectors)
    assert _hnsw(old)["ef_search"] == 16
    monkeypatch.undo()
    store = VectorStore.open(new_place(), "vectors_k", INFO)
    got = _hnsw(store)
    assert got["ef_search"] == HNSW["ef_search"] and got["max_neighbors"] == 16  # M stays as built
    assert store.count() == 20 and store.query(vectors[3], 1)[0].key == _key(4)


def test_a_search_among_some_keys_and_two_collections_on_one_client(new_place):
    chroma = new_place()
    vectors = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    first = VectorStore.open(chroma, "vectors_a", INFO)
    first.upsert([_key(i) for i in range(50)], vectors)
    among = [_key(i) for i in range(0, 50, 5)]
    hits = first.query(vectors[7], 3, among=among)
    assert len(hits) == 3 and {h.key for h in hits} <= set(among)  # h7 itself is not among them
    exact = sorted(among, key=lambda k: -float(vectors[int(k, 16)] @ vectors[7] / np.linalg.norm(vectors[int(k, 16)])))
    assert [h.key for h in hits] == exact[:3]
    assert first.query(vectors[7], 3, among=[]) == []

    second = VectorStore.open(chroma, "vectors_b", INFO)  # beside it, on the same client
    second.upsert([_key(999)], vectors[:1])
    assert (first.count(), second.count()) == (50, 1)
    assert sorted(chroma.names()) == ["vectors_a", "vectors_b"]
    chroma.drop(["vectors_a"])
    assert chroma.names() == ["vectors_b"] and second.count() == 1
    assert VectorStore.open(new_place(), "vectors_b", INFO).all_keys() == {_key(999)}  # on disk, or on the server


def test_vectors_read_back_deleted_and_paged(new_place):
    """Reading stored vectors, deleting some, and reading every key in pages, as a reindex does."""
    chroma = new_place()
    store = VectorStore.open(chroma, "vectors_c", INFO)
    vectors = np.random.default_rng(2).standard_normal((30, 8)).astype(np.float32)
    keys = [_key(i) for i in range(30)]
    store.upsert(keys, vectors)
    store.upsert(keys[:5], vectors[:5])  # again: an upsert by id changes nothing (a retried one neither)
    got = store.vectors([keys[3], keys[17], _key(99)])
    assert set(got) == {keys[3], keys[17]} and np.allclose(got[keys[17]], vectors[17], atol=1e-6)
    store.delete([*keys[:10], _key(99)])
    assert store.all_keys() == set(keys[10:]) and store.count() == 20
    page = store.page(0, 7)
    assert len(page["ids"]) == 7 and page["embeddings"] is not None and len(page["embeddings"][0]) == 8
    assert chroma.size_bytes() is None or chroma.size_bytes() > 0
    assert chroma.describe()


def _exact_top(vectors: np.ndarray, keys: list[str], among: list[str], query: np.ndarray, k: int) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = {key: i for i, key in enumerate(keys)}
    return sorted(among, key=lambda key: -float(unit[index[key]] @ query))[:k]


def test_a_narrow_scope_is_searched_exactly_from_the_cache_and_a_wide_one_by_chroma(new_place):
    """A scope with at most FETCH_LIMIT uncached keys is read into the cache and searched exactly; a larger one
    goes to Chroma's filtered search until warm() has read the collection, unless the vector files (embedded
    Chroma) have them: read from there into the cache. Which one answered shows in a vector
    rewritten behind the cache's back (which a content hash's vector never is): the cache keeps what it read."""
    rng = np.random.default_rng(3)
    n = vectorstore.FETCH_LIMIT + 500
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    keys = [_key(i) for i in range(n)]
    VectorStore.open(new_place(), "vectors_d", INFO).upsert(keys, vectors)
    query = rng.standard_normal(8).astype(np.float32)
    query /= np.linalg.norm(query)
    wide = keys[: vectorstore.FETCH_LIMIT + 300]
    narrow = keys[::10]
    moved = _exact_top(vectors, keys, narrow, query, 1)[0]
    old = vectors[int(moved, 16)] / np.linalg.norm(vectors[int(moved, 16)])

    store = VectorStore.open(new_place(), "vectors_d", INFO)
    hits = store.query(query, 5, narrow)
    assert [h.key for h in hits] == _exact_top(vectors, keys, narrow, query, 5) and hits[0].key == moved
    assert hits[0].score == pytest.approx(float(old @ query), abs=1e-5)
    VectorStore.open(new_place(), "vectors_d", INFO).upsert([moved], -query[None, :])  # another process
    assert store.query(query, 1, narrow)[0].key == moved  # the cache answered
    wide_hits = {h.key for h in store.query(query, 5, wide)}
    if store.chroma.vector_file("vectors_d") is None:
        assert moved not in wide_hits  # too many uncached: Chroma answered
    else:  # the vector files hold them all: read into the cache, which keeps what it read before
        assert moved in wide_hits
    assert moved not in {h.key for h in VectorStore.open(new_place(), "vectors_d", INFO).query(query, 5, narrow)}
    lost = wide[-1]  # an indexed row's vector lost: Chroma refuses a search filtered to its id; the others answer
    VectorStore.open(new_place(), "vectors_d", INFO).delete([lost])
    assert len(VectorStore.open(new_place(), "vectors_d", INFO).query(query, 5, wide)) == 5

    warm = VectorStore.open(new_place(), "vectors_d", INFO)
    vectors[int(moved, 16)] = -query
    assert warm.warm(page=400) == n - 1
    held = [key for key in wide if key != lost]
    hits = warm.query(query, 5, held)
    assert [h.key for h in hits] == _exact_top(vectors, keys, held, query, 5)
    assert np.allclose(warm.cached_vectors([moved])[moved], -query, atol=1e-6)


def test_the_cache_keeps_what_fits_and_answers_only_for_what_it_holds():
    from photosearch.stores.vector_cache import VectorCache

    cache = VectorCache(max_bytes=4 * 8 * 100)  # 100 vectors of 8 floats
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((150, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(150)]
    cache.add(dict(zip(keys[:60], vectors[:60], strict=True)))
    cache.add(dict(zip(keys[40:], vectors[40:], strict=True)))  # 40 more fit of the 90 new ones
    assert len(cache) == 100 and cache.full()
    rows = cache.rows_of(keys)
    assert (rows[:100] >= 0).all() and (rows[100:] == -1).all()
    query = vectors[7] / np.linalg.norm(vectors[7])
    found = cache.nearest(query, 3, keys, rows)
    assert [key for key, _ in found] == _exact_top(vectors, keys, keys[:100], query, 3) and found[0][0] == "k7"
    assert found[0][1] == pytest.approx(1.0, abs=1e-6)
    assert cache.rows_of(keys[99::-1]).tolist() == rows[99::-1].tolist()  # all cached: one lookup of them all
    assert cache.rows_of(["k3"]).tolist() == [rows[3]] and cache.rows_of(["k120"]).tolist() == [-1]
    shuffled = [keys[i] for i in rng.permutation(150)]  # nearest reads the rows in memory order, answers alike
    assert cache.nearest(query, 3, shuffled, cache.rows_of(shuffled)) == found
    assert set(cache.get(["k1", "k120"])) == {"k1"}
    assert cache.nearest(query, 3, ["k120"], cache.rows_of(["k120"])) == []
