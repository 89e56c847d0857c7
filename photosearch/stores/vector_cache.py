"""The vectors a process has read from one collection, kept in memory for exact search over a narrow scope.

Why: Chroma's search filtered to a list of ids costs ~100 ms at 100,000 vectors whatever the list's length (0.1%
of the library or 10%), while the dot products of 10,000 cached vectors take ~2 ms. And a cached entry never goes
stale: a collection holds one model's vector per content hash, and the same bytes give the same vector. Which
hashes count (indexed, in scope) is the catalog's to say, so a vector deleted from the collection may stay here
unseen: the cache answers only for the hashes the caller names.

Bounded by MAX_BYTES; once full, what does not fit is read from Chroma every time (VectorStore falls back to its
filtered search). Thread-safe: `serve` fills it in the background while queries read it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter

import numpy as np

from photosearch import matvec

MAX_BYTES = 256 * 2**20  # 131,072 vectors of 512 floats: the 100,000 of bench_query's library fit


class VectorCache:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)  # unit rows; grown by doubling
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def rows_of(self, keys: Sequence[str]) -> np.ndarray:
        """Each key's row, -1 where it is not cached (one C-level pass: a scope can hold 10,000 keys; itemgetter
        is 1.5x faster than a get per key, when all are cached, as they are once `serve` has warmed the cache)."""
        if len(keys) > 1:
            try:
                return np.array(itemgetter(*keys)(self._rows), dtype=np.int64)
            except KeyError:
                pass
        return np.fromiter(map(self._rows.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def full(self) -> bool:
        return bool(self._matrix.size) and len(self._rows) >= self._capacity(self._matrix.shape[1])

    def add(self, found: Mapping[str, np.ndarray]) -> None:
        """Keep these vectors (normalised), as many as fit."""
        if not found:
            return
        with self._lock:
            fresh = [(key, vector) for key, vector in found.items() if key not in self._rows]
            if not fresh:
                return
            dim = len(fresh[0][1])
            room = self._capacity(dim) - len(self._rows)
            fresh = fresh[: max(0, room)]
            if not fresh:
                return
            block = np.stack([vector for _, vector in fresh]).astype(np.float32)
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            self._grow(len(self._rows) + len(block), dim)
            start = len(self._rows)
            self._matrix[start : start + len(block)] = block
            self._rows.update((key, start + i) for i, (key, _) in enumerate(fresh))

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of these keys (normalised copies); keys not cached are left out."""
        with self._lock:
            return {key: self._matrix[row].copy() for key in keys if (row := self._rows.get(key)) is not None}

    def nearest(self, vector: np.ndarray, k: int, keys: Sequence[str], rows: np.ndarray) -> list[tuple[str, float]]:
        """The k of ``keys`` nearest to ``vector`` by cosine, best first; ``rows``: theirs (rows_of), and those
        not cached (-1) are left out."""
        query = (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
        cached = np.flatnonzero(rows >= 0)
        if not len(cached) or k <= 0:
            return []
        cached = cached[np.argsort(rows[cached], kind="stable")]  # the rows in memory order: gathered 20% faster
        with self._lock:
            scores = matvec.scores(np.take(self._matrix, rows[cached], axis=0), query)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        ranked = top[np.argsort(-scores[top], kind="stable")]
        return [(keys[cached[i]], float(scores[i])) for i in ranked]

    def _capacity(self, dim: int) -> int:
        return self._max_bytes // (4 * max(1, dim))

    def _grow(self, needed: int, dim: int) -> None:
        rows, have = self._matrix.shape if self._matrix.size else (0, dim)
        if needed <= rows and have == dim:
            return
        grown = np.zeros((min(self._capacity(dim), max(needed, 2 * rows, 1024)), dim), dtype=np.float32)
        if self._rows:
            grown[: len(self._rows)] = self._matrix[: len(self._rows)]
        self._matrix = grown
