"""The vector files beside the embedded Chroma (stores/vector_file.py): they hold exactly what the collection holds
whenever they are used, a new process searches them without opening Chroma, and whatever leaves them behind (a
write cut short, a write that bypassed them) makes Chroma answer until they are written anew."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from helpers import HashEmbedder, hash_config, make_photo

from photosearch.library import Library
from photosearch.locking import store_lock
from photosearch.stores import vector_file
from photosearch.stores.chroma_dir import ChromaDir
from photosearch.stores.vectors import VectorStore

INFO = {"model": "m", "revision": "r", "dim": 8}
NAME = "vectors_t"


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + n)]


def _in_chroma(chroma: ChromaDir, name: str = NAME) -> dict[str, np.ndarray]:
    """What the collection holds, asked of Chroma itself."""
    got = chroma.call(lambda client: client.get_collection(name).get(include=["embeddings"]))
    return {key: np.asarray(v, dtype=np.float32) for key, v in zip(got["ids"], got["embeddings"], strict=True)}


def _in_files(chroma: ChromaDir, name: str = NAME) -> dict[str, np.ndarray] | None:
    file = chroma.vector_file(name)
    assert file is not None
    snap = file.snapshot(chroma.written())
    if snap is None:
        return None
    keys = snap.keys.astype("U32").tolist()
    return {key: np.array(snap.matrix[row]) for row, key in enumerate(keys) if key}


def _same(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray]) -> bool:
    return a is not None and set(a) == set(b) and all(np.allclose(a[k], b[k], atol=1e-6) for k in b)


def _top(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    return sorted(vectors, key=lambda key: -float(vectors[key] @ query / np.linalg.norm(vectors[key])))[:k]


def test_the_files_follow_every_write_and_a_new_process_searches_them_without_chroma(tmp_path: Path):
    rng = np.random.default_rng(1)
    chroma = ChromaDir(tmp_path / "chroma")
    store = VectorStore.open(chroma, NAME, INFO)
    vectors = 3 * rng.standard_normal((300, 8)).astype(np.float32)  # not unit: the scan scores by cosine
    keys = _keys(300)
    store.upsert(keys, vectors)
    store.delete(keys[:40])
    store.upsert(keys[10:20], vectors[10:20])  # deleted ones back
    store.upsert(keys[100:110], vectors[200:210])  # present ones written again (as a re-embedding would)
    assert _same(_in_files(chroma), _in_chroma(chroma))

    reader = ChromaDir(tmp_path / "chroma")  # a new process
    fresh = VectorStore.open(reader, NAME, INFO)
    query = rng.standard_normal(8).astype(np.float32)
    query /= np.linalg.norm(query)
    hits = fresh.query(query, 10)
    truth = _in_chroma(chroma)
    assert [h.key for h in hits] == _top(truth, query, 10)
    assert hits[0].score == pytest.approx(float(truth[hits[0].key] @ query / np.linalg.norm(truth[hits[0].key])))
    assert fresh.count() == len(truth) == 270 and fresh.all_keys() == set(truth)
    got = fresh.vectors([keys[105], keys[5]])  # one present, one deleted
    assert set(got) == {keys[105]} and np.allclose(got[keys[105]], vectors[205], atol=1e-6)
    assert not reader.opened(), "the files answered: Chroma was never opened"


def test_a_write_to_another_collection_keeps_them_and_a_dropped_collection_takes_its_files(tmp_path: Path):
    chroma = ChromaDir(tmp_path / "chroma")
    rng = np.random.default_rng(2)
    store = VectorStore.open(chroma, NAME, INFO)
    store.upsert(_keys(20), rng.standard_normal((20, 8)).astype(np.float32))
    other = VectorStore.open(chroma, "vectors_other", INFO)  # a reindex's collection, beside it
    other.upsert(_keys(5), rng.standard_normal((5, 8)).astype(np.float32))
    assert _same(_in_files(chroma), _in_chroma(chroma))
    assert _same(_in_files(chroma, "vectors_other"), _in_chroma(chroma, "vectors_other"))
    chroma.drop(["vectors_other"])
    assert not list((tmp_path / "vectors").glob("vectors_other*"))
    assert _same(_in_files(chroma), _in_chroma(chroma))  # the drop was a write too: these stay usable


def test_a_write_cut_short_leaves_them_unused_until_the_next_write_rebuilds_them(tmp_path: Path):
    chroma = ChromaDir(tmp_path / "chroma")
    rng = np.random.default_rng(3)
    store = VectorStore.open(chroma, NAME, INFO)
    store.upsert(_keys(30), rng.standard_normal((30, 8)).astype(np.float32))
    file = chroma.vector_file(NAME)
    assert file is not None
    # What a process killed inside a write leaves: the manifest cleared for a write whose token no one will finish.
    written = chroma.written()
    assert written is not None
    file.begin(written, "killed")
    file.end()
    assert _in_files(chroma) is None
    # A search in a new process still finds everything: Chroma answers.
    reader = ChromaDir(tmp_path / "chroma")
    query = rng.standard_normal(8).astype(np.float32)
    assert [h.key for h in VectorStore.open(reader, NAME, INFO).query(query, 5)] == _top(_in_chroma(chroma), query, 5)
    assert reader.opened()
    store.upsert(_keys(3, 100), rng.standard_normal((3, 8)).astype(np.float32))  # the next write: rebuilt first
    assert _same(_in_files(chroma), _in_chroma(chroma)) and len(_in_chroma(chroma)) == 33


def test_a_write_that_bypasses_them_is_seen_and_refresh_file_rebuilds_them(tmp_path: Path):
    """An older photosearch writes Chroma and touches chroma.lock, knowing nothing of the files."""
    chroma = ChromaDir(tmp_path / "chroma")
    rng = np.random.default_rng(4)
    store = VectorStore.open(chroma, NAME, INFO)
    store.upsert(_keys(30), rng.standard_normal((30, 8)).astype(np.float32))
    target = rng.standard_normal(8).astype(np.float32)

    lock = tmp_path / "chroma.lock"
    with store_lock(lock, exclusive=True):  # a plain Chroma write, as the code before the files did it
        client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
        client.get_collection(NAME).upsert(ids=[f"{999:032x}"], embeddings=target[None, :])
        os.utime(lock)
    assert _in_files(chroma) is None
    reader = ChromaDir(tmp_path / "chroma")
    assert VectorStore.open(reader, NAME, INFO).query(target / np.linalg.norm(target), 1)[0].key == f"{999:032x}"
    assert store.refresh_file() == 31
    assert _same(_in_files(chroma), _in_chroma(chroma))
    assert store.refresh_file() is None  # complete: nothing to do


def test_mostly_deleted_files_are_written_anew_and_a_reader_of_the_old_ones_still_answers(tmp_path: Path):
    chroma = ChromaDir(tmp_path / "chroma")
    rng = np.random.default_rng(5)
    n = vector_file.COMPACT_AFTER + 500
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    store = VectorStore.open(chroma, NAME, INFO)
    store.upsert(_keys(n), vectors)
    file = chroma.vector_file(NAME)
    assert file is not None
    before = file.manifest()
    reader_dir = ChromaDir(tmp_path / "chroma")
    reader_file = reader_dir.vector_file(NAME)
    assert reader_file is not None and before is not None
    old = reader_file.snapshot(reader_dir.written())  # mapped before the compaction
    assert old is not None and old.live == n
    store.delete(_keys(n - 100))
    after = file.manifest()
    assert after is not None and after.generation != before.generation and after.rows == after.live == 100
    assert _same(_in_files(chroma), _in_chroma(chroma))
    assert sorted(p.name.split(".")[1] for p in (tmp_path / "vectors").glob("*.f32")) == [after.generation]
    assert np.allclose(old.matrix[n - 1], vectors[n - 1])  # the old files are gone, their mapping still reads
    new = reader_file.snapshot(reader_dir.written())
    assert new is not None and new.live == 100 and new is not old


def test_two_writes_within_one_clock_tick_are_both_seen_by_a_reader(tmp_path: Path):
    """chroma.lock's mtime comes from a coarse clock: two writes can leave it as it was. The reader's snapshot is
    held to the manifest, not the mtime alone."""
    chroma = ChromaDir(tmp_path / "chroma")
    rng = np.random.default_rng(6)
    store = VectorStore.open(chroma, NAME, INFO)
    store.upsert(_keys(10), rng.standard_normal((10, 8)).astype(np.float32))
    reader = VectorStore.open(ChromaDir(tmp_path / "chroma"), NAME, INFO)
    assert reader.count() == 10
    lock = tmp_path / "chroma.lock"
    stamp = lock.stat().st_mtime_ns
    store.upsert(_keys(5, 50), rng.standard_normal((5, 8)).astype(np.float32))
    os.utime(lock, ns=(stamp, stamp))  # the second write within the first one's tick
    manifest = tmp_path / "vectors" / f"{NAME}.json"  # as the write's restamp would have left it
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "stamp": stamp}))
    assert reader.count() == 15 and len(reader.query(np.ones(8, dtype=np.float32), 20)) == 15


def test_keys_that_are_not_content_hashes_leave_chroma_to_answer(tmp_path: Path):
    """Only content hashes fit the files' key column: any other key is refused there, not truncated."""
    chroma = ChromaDir(tmp_path / "chroma")
    store = VectorStore.open(chroma, NAME, INFO)
    vectors = np.eye(8, dtype=np.float32)[:3]
    store.upsert(["short", f"{'x' * 40}", f"{1:032x}"], vectors)
    assert _in_files(chroma) is None
    fresh = VectorStore.open(ChromaDir(tmp_path / "chroma"), NAME, INFO)
    assert fresh.query(vectors[1], 1)[0].key == "x" * 40 and fresh.count() == 3


def test_an_index_run_writes_the_files_of_a_library_from_before_them_and_search_needs_no_chroma(tmp_path: Path):
    """A library indexed before the files existed (none in its data directory): the next `index` run, even with
    nothing to do, writes them; from then on a new process's search reads them, exact, and never opens Chroma."""
    photos = tmp_path / "photos"
    for i in range(6):
        make_photo(photos / f"p{i}.jpg", seed=i)
    embedder = HashEmbedder()
    config = hash_config(tmp_path / "data")
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        library.index([photos])
    shutil.rmtree(tmp_path / "data" / "vectors")
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        report = library.index([photos])
        assert report.unchanged == 6 and (tmp_path / "data" / "vectors").is_dir()
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        query = embedder.embed_texts(["anything"])[0]
        hits = library.store().query(query, 6)
        assert not library.store().chroma.opened(), "the files answered"
        vectors = library.store().vectors(sorted(library.catalog.indexed_hashes()))
        assert [h.key for h in hits] == _top(vectors, query, 6)
        assert [r.path.name for r in library.search("anything", k=3)] == [
            library.catalog.get(library.catalog.indexed_with_hash(h.key) or 0).path.name for h in hits[:3]
        ]
