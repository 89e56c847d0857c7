"""bench_query.py's index: the generated vectors and catalog rows, and their builds in the embedded stores and on
the servers, each cached under --cache.

Both backends get the same vectors and the same catalog rows (ids, paths relative to a root, dates, hashes),
written through photosearch's own Catalog and VectorStore, so that a side-by-side run compares the stores and
nothing else. The HNSW graphs are built twice (one per backend) with the same settings and insertion order.

Cache: the embedded index is a data directory (SQLite catalog and Chroma folder); the server one is the Chroma
server's data path (``chroma run --path``), under the same key. A PostgreSQL catalog is not cached: its rows are
rewritten every run into a new throwaway server (~1 s per 10,000 rows), and the collection's name is a function of
the model alone (generations.record_active), so the rebuilt catalog finds the cached vectors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 5  # bump when the generated index changes (5: dated_at), so cached ones are rebuilt
START = datetime(2012, 1, 1)
STEP = 5000  # rows and vectors per write (under Chroma's largest batch)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_vectors(n: int, text_vectors: np.ndarray, extra_queries: int, seed: int):
    """(photo vectors, cluster of each photo, recall query vectors): see the module docstring.

    Cosines as with real CLIP ViT-B/32: ~0.45 between unrelated photos, ~0.8 inside a cluster, ~0.95 inside a
    burst; ~0.75 between unrelated texts (a shared "text" direction: the modality gap), ~0.17 between a text
    and an unrelated photo and ~0.3 between a text and the photos it describes. What ranks photos for a text is
    the text's residual (its vector minus the shared text direction): each cluster has such a residual, and a
    query text's own residual for the cluster it owns.
    """
    rng = np.random.default_rng(seed)
    dim = text_vectors.shape[1]
    text_mean = unit(text_vectors.mean(axis=0))
    residual = unit(text_vectors - (text_vectors @ text_mean)[:, None] * text_mean)
    shared = unit(0.27 * text_mean + 0.96 * unit(rng.standard_normal(dim)))  # the photo cone, off the text one
    clusters = int(np.clip(n // 250, 8, 4000))
    topics = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    owned = min(len(text_vectors), clusters)
    topics[:owned] = residual[:owned]
    directions = unit(0.6 * topics + 0.8 * unit(rng.standard_normal((clusters, dim), dtype=np.float32)))
    sizes = 1 / np.arange(1, clusters + 1) ** 0.8  # a few big events, a long tail of small ones
    of = rng.choice(clusters, size=n, p=rng.permutation(sizes / sizes.sum())).astype(np.int32)
    spread = rng.uniform(0.35, 0.6, clusters).astype(np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        part = of[start : start + 100_000]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        vectors[start : start + len(part)] = unit(0.67 * shared + 0.6 * directions[part] + spread[part, None] * noise)
    # Bursts: a quarter of the photos are near-copies of another photo of the same event.
    copies = rng.choice(n, size=n // 4, replace=False)
    sources = rng.choice(n, size=n // 4)
    of[copies] = of[sources]
    noise = rng.standard_normal((len(copies), dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    vectors[copies] = unit(vectors[sources] + 0.3 * noise)
    # More queries for recall, made like the texts: the shared text direction plus a paraphrase of the residual
    # of a cluster picked by size.
    picked = of[rng.integers(0, n, extra_queries)]
    noise = unit(rng.standard_normal((extra_queries, dim), dtype=np.float32))
    synthetic = unit(0.93 * text_mean + 0.37 * unit(topics[picked] + 0.5 * noise))
    return vectors, of, np.concatenate([text_vectors, synthetic]).astype(np.float32)


def taken_at(photo_id: int, event: int) -> datetime:
    """The synthetic photo's time taken: its event's day (over ~11 years), its id's second of that day."""
    return START + timedelta(days=event % 4000, seconds=photo_id % 86400)


def content_key(photo_id: int) -> str:
    """The synthetic photo's content hash (the vector store's key): its id in hex, as long as a blake2b digest."""
    return f"{photo_id:032x}"


def index_key(n: int, seed: int, texts: list[str], model_key: str) -> str:
    from photosearch.stores.vectors import HNSW

    return hashlib.sha256(json.dumps([GENERATOR_VERSION, n, seed, texts, model_key, HNSW],
                                     sort_keys=True).encode()).hexdigest()[:12]  # fmt: skip


def write_index(catalog: Any, store: Any | None, root: Path, vectors: np.ndarray, of: np.ndarray) -> dict[str, float]:
    """Catalog rows (status indexed) under ``root`` and, unless ``store`` is None, their vectors: seconds of each."""
    from sqlalchemy import insert

    from photosearch.stores.schema import Photo, PhotoStatus

    root_row = catalog.add_root(root)
    now = datetime.now().replace(microsecond=0)
    seconds = {"catalog_s": 0.0, "vectors_s": 0.0}
    for first in range(0, len(vectors), STEP):
        ids = list(range(first + 1, min(first + STEP, len(vectors)) + 1))
        rows = []
        for photo_id in ids:
            event = int(of[photo_id - 1])
            taken = taken_at(photo_id, event)
            folder_name = f"{taken.year}/event-{event:04d}"
            path = f"{root_row.path}/{folder_name}/IMG_{photo_id:07d}.jpg"
            rows.append({"id": photo_id, "root_id": root_row.id, "path": path, "folder": folder_name,
                         "size": 2_000_000 + photo_id, "mtime_ns": photo_id, "status": PhotoStatus.INDEXED,
                         "content_hash": content_key(photo_id),
                         "width": 4032, "height": 3024, "format": "JPEG", "taken_at": taken, "dated_at": taken,
                         "camera_make": "Apple",
                         "camera_model": "iPhone 12", "indexed_at": now, "updated_at": now})  # fmt: skip
        t0 = time.perf_counter()
        with catalog.session() as s, s.begin():
            s.execute(insert(Photo), rows)
        t1 = time.perf_counter()
        if store is not None:
            store.upsert([content_key(i) for i in ids], vectors[ids[0] - 1 : ids[-1]])
        seconds["catalog_s"] += t1 - t0
        seconds["vectors_s"] += time.perf_counter() - t1
        print(f"\r  written {ids[-1]:,} / {len(vectors):,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if store is not None:
        assert store.count() == len(vectors)
    return seconds


def mounted_root(folder: Path) -> Path:
    """The catalog's (empty) library folder. Its photos are synthetic: an empty root whose catalog has photos reads
    as an unmounted drive, and its photos would be left out of every search (offline), so mark it mounted."""
    root = folder / "photos"
    root.mkdir(parents=True, exist_ok=True)
    (root / "MOUNTED").touch()
    return root


def prepare_embedded(cache: Path, key: str, model: Path, vectors: np.ndarray, of: np.ndarray) -> tuple[Path, dict]:
    """The embedded data directory (built unless cached) and its build's seconds (as recorded when built)."""
    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder
    from photosearch.stores import generations
    from photosearch.stores.catalog import Catalog
    from photosearch.stores.chroma_dir import ChromaDir
    from photosearch.stores.vectors import VectorStore

    folder = cache / f"index-{len(vectors)}-{key}"
    marker = folder / "complete"
    if not marker.is_file():
        print(
            f"building the {len(vectors):,}-photo embedded index in {folder} (cached for later runs)", file=sys.stderr
        )
        shutil.rmtree(folder, ignore_errors=True)  # a build that was interrupted
        encoder = load_text_encoder(ModelConfig(name=str(model)))
        assert encoder is not None
        catalog = Catalog.open(folder / "catalog.sqlite3")
        generation = generations.record_active(catalog, encoder.identity)
        store = VectorStore.open(ChromaDir(folder / "chroma"), generation.collection, encoder.identity.to_dict())
        built = write_index(catalog, store, mounted_root(folder), vectors, of)
        catalog.close()
        marker.write_text(json.dumps(built | {"date": f"{datetime.now():%Y-%m-%d}"}))
        print(f"  built in {built['catalog_s'] + built['vectors_s']:.0f} s", file=sys.stderr)
        return folder, built
    text = marker.read_text()  # empty in caches from before the build times were recorded
    return folder, (json.loads(text) if text else {}) | {"cached": True}


def sqlite_statistics(folder: Path, analyzed: bool) -> None:
    """Give the embedded catalog SQLite's planner statistics (ANALYZE, as an index run leaves it: Catalog.optimize),
    or none (as the rows are written here, without an index run). Without them, at 100,000 rows the planner reads
    the catalog join (status = indexed AND content_hash IN ...) through the status index, every indexed row,
    ~20 ms; with them, the hash index, ~0.02 ms. (The servers' catalog gets its ANALYZE in build_on_servers.)
    Set either way on every run, so the cached index never carries one run's choice into the next."""
    import sqlite3

    connection = sqlite3.connect(folder / "catalog.sqlite3")
    try:
        if analyzed:
            connection.execute("ANALYZE")
        elif connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            connection.execute("DELETE FROM sqlite_stat1")
        connection.commit()
    finally:
        connection.close()


def prepare_servers(cache: Path, key: str, n: int) -> Path:
    """The Chroma server's cached data path for this index; an unfinished one is removed (start it afresh)."""
    folder = cache / f"server-{n}-{key}"
    if not (folder / "complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def build_on_servers(folder: Path, store_table: dict[str, str], model: Path, vectors: np.ndarray,
                     of: np.ndarray) -> dict:  # fmt: skip
    """Write the catalog rows into the (new) PostgreSQL catalog, and the vectors into the Chroma server unless its
    cached data path has them: the seconds of each (the vectors' as recorded when they were built)."""
    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder
    from photosearch.stores import generations
    from photosearch.stores.catalog import Catalog
    from photosearch.stores.chroma_server import ChromaServer
    from photosearch.stores.vectors import VectorStore

    encoder = load_text_encoder(ModelConfig(name=str(model)))
    assert encoder is not None
    marker = folder / "complete"
    cached = marker.is_file()
    catalog = Catalog.open(store_table["catalog"], folder / "client")
    generation = generations.record_active(catalog, encoder.identity)
    store = None
    if not cached:
        print(f"building the {len(vectors):,}-photo index on the servers, Chroma's data in {folder} (cached)",
              file=sys.stderr)  # fmt: skip
        chroma = ChromaServer(store_table["vectors"], database=store_table["database"])
        store = VectorStore.open(chroma, generation.collection, encoder.identity.to_dict())
    built = write_index(catalog, store, mounted_root(folder), vectors, of)
    catalog.optimize()  # the statistics an index run leaves (ANALYZE): the rows were written without one
    catalog.close()
    if cached:
        return json.loads(marker.read_text()) | {"catalog_s": built["catalog_s"], "cached": True}
    marker.write_text(json.dumps(built | {"date": f"{datetime.now():%Y-%m-%d}"}))
    print(f"  built in {built['catalog_s'] + built['vectors_s']:.0f} s", file=sys.stderr)
    return built
