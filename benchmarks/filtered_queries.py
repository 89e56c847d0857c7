"""bench_query.py's measurements of issue 12's queries, on its index: a text query under date filters that keep
100%, 10%, 1% and 0.1% of the photos (p50 of at least SAMPLES queries, and recall@10 against the exact search
among the photos the filter keeps), a date-sorted query with the auto cutoff, the facets (the grouped scan, and
the cached answer), and a timeline page (the first, and one 50 pages deep by cursor). The vectors are read into
memory first, as `serve` does in the background when it starts (stores/vector_cache.py); the time that takes is
recorded too.

The date windows are cut from the generated times taken (query_index.taken_at), each starting at a random photo
and holding the wanted share of them, so the exact answer is known from the vectors alone.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from query_index import taken_at

SHARES = (1.0, 0.1, 0.01, 0.001)
SAMPLES = 60  # queries timed per figure at least: the texts again, each time with a window of its own
PAGE = 60  # a timeline page as the web page asks for it


def _p50(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples), 50))


def _window(text: str, q: np.ndarray, share: float, vectors: np.ndarray, taken: np.ndarray, order: np.ndarray,
            rng: np.random.Generator) -> tuple[Any, list[int]]:  # fmt: skip
    """A text query under a date window holding ``share`` of the photos, from a random photo on; and the exact
    top 10 among the photos it keeps (photo ids are row + 1)."""
    from photosearch.filters import Filters
    from photosearch.query.spec import SearchRequest, Weighted

    size = max(1, int(share * len(vectors)))
    first = int(rng.integers(0, len(vectors) - size + 1))
    lo, hi = taken[order[first]], taken[order[first + size - 1]]
    kept = np.flatnonzero((taken >= lo) & (taken <= hi))
    start, end = lo.astype(object), (hi + np.timedelta64(1, "s")).astype(object)
    request = SearchRequest(texts=(Weighted(text),), filters=Filters(start=start, end=end), k=10)
    return request, (kept[np.argsort(-(vectors[kept] @ q))[:10]] + 1).tolist()


def measure(config: Any, vectors: np.ndarray, of: np.ndarray, texts: list[str], seed: int) -> dict[str, float]:
    from photosearch.library import Library
    from photosearch.query.spec import SearchRequest, Weighted
    from photosearch.stores.catalog_hashes import PhotoScope

    n = len(vectors)
    taken = np.array([taken_at(i + 1, int(of[i])) for i in range(n)], dtype="datetime64[s]")
    order = np.argsort(taken, kind="stable")
    rng = np.random.default_rng(seed)
    figures: dict[str, float] = {}
    with Library.open(config) as library:
        encoder = library.text_embedder()
        texts = texts * -(-SAMPLES // len(texts))
        queries = encoder.embed_texts(texts)
        for text in texts[:10]:  # warm-up
            library.search(text, k=10)
        t0 = time.perf_counter()
        figures["vectors_cached"] = library.warm_vectors()  # what `serve` does in the background once it starts
        figures["vectors_warm_s"] = time.perf_counter() - t0
        for share in SHARES:
            # The exact answers first: numpy's threads, spinning after a product, would slow the next query timed.
            asked = [
                _window(text, q, share, vectors, taken, order, rng) for text, q in zip(texts, queries, strict=True)
            ]
            times, found = [], 0.0
            for request, exact in asked:
                t0 = time.perf_counter()
                results = library.query(request).results
                times.append((time.perf_counter() - t0) * 1000)
                found += len({r.id for r in results} & set(exact)) / len(exact)
            label = f"{share * 100:g}%"
            figures[f"filtered_{label}_p50_ms"] = _p50(times)
            figures[f"filtered_{label}_recall@10"] = found / len(texts)
        times = []
        for text in texts:
            t0 = time.perf_counter()
            library.query(SearchRequest(texts=(Weighted(text),), sort="newest", cutoff="auto", k=30))
            times.append((time.perf_counter() - t0) * 1000)
        figures["date_sorted_cutoff_p50_ms"] = _p50(times)
        scans, cached = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            library.catalog.facet_counts(PhotoScope())
            scans.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            library.facets()
            cached.append((time.perf_counter() - t0) * 1000)
        figures["facets_scan_p50_ms"], figures["facets_p50_ms"] = _p50(scans), _p50(cached)
        firsts, deep = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            page = library.query(SearchRequest(sort="newest", k=PAGE))
            firsts.append((time.perf_counter() - t0) * 1000)
        for _ in range(50):
            page = library.query(SearchRequest(sort="newest", k=PAGE, cursor=page.cursor))
        for _ in range(20):
            t0 = time.perf_counter()
            library.query(SearchRequest(sort="newest", k=PAGE, cursor=page.cursor))
            deep.append((time.perf_counter() - t0) * 1000)
        figures["browse_first_p50_ms"], figures["browse_deep_p50_ms"] = _p50(firsts), _p50(deep)
    return figures
