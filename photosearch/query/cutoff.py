"""The relevance cutoff `auto`: which of a query's matches are relevant, decided from how that query scores the
library as a whole.

Why not a flat score: CLIP's cosines depend on the query. The best match of one text may score 0.24 and the
unrelated photos of another 0.26 (the modality gap and each text's own offset), so any one number is too strict
for some queries and lets noise through for others. What does carry over between queries is how far a photo
stands out from *that query's* scores of everything else.

So: the query is scored against a random sample of the library's vectors (SAMPLE of them, all of a smaller
library), which gives the location and spread of its unrelated photos' scores: the median and the MAD (robust:
a relevant set of up to a third of the sample does not move them). A score s then has a z = (s - median) / sigma and,
if the unrelated scores were normal, n·P(Z > z) unrelated photos of the n in scope would score above it by chance.
Walking down the best matches, the cutoff is the lowest score at which that expected number of chance photos is
at most ALPHA of the photos above it (the Benjamini-Hochberg rule for the false discovery rate), and never below
Z_FLOOR (a small library, where n·P(Z > z) is small for any z, would otherwise pass nearly everything).

It adapts to the query (median, sigma), to the library's size (n: among 100,000 photos, chance reaches further up
than among 1,000) and to how many photos match (a big relevant set lowers the cutoff: many photos far above the
noise are unlikely to be chance). benchmarks/bench_cutoff.py measures its precision and recall on planted
relevant sets of known size, and the flat score that would have been best for each, in RESULTS.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.1  # the share of the photos above the cutoff that may be there by chance
Z_FLOOR = 3.0  # a relevant photo stands at least this many spreads above the query's unrelated photos
SAMPLE = 2048  # vectors scored to learn a query's distribution (all of a smaller library)
REFRESH = 0.1  # a sample is drawn again when the library's size changed by this share
MAX_AGE = 600.0  # or after this many seconds


@dataclass(frozen=True)
class Noise:
    """Where a query's unrelated photos score: location and spread (robust estimates)."""

    median: float
    sigma: float

    def z(self, score: float) -> float:
        return (score - self.median) / self.sigma


def noise_of(scores: np.ndarray) -> Noise:
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median)))
    spread = 1.4826 * mad if mad > 0 else float(np.std(scores))
    return Noise(median, max(spread, 1e-4))


def chance_above(noise: Noise, score: float, n: int) -> float:
    """How many of n unrelated photos would score above ``score`` (a normal tail)."""
    return n * 0.5 * math.erfc(noise.z(score) / math.sqrt(2))


def threshold(noise: Noise, best: Sequence[float], n: int) -> tuple[float, bool]:
    """The auto cutoff from the best scores (descending) of n photos: (the score, whether every one of ``best``
    passed, so that more matches should be looked at before the cutoff is known). With none relevant, a score
    above the best."""
    passed = -1
    for rank, score in enumerate(best, 1):
        if noise.z(score) < Z_FLOOR:
            break
        if chance_above(noise, score, n) <= ALPHA * rank:
            passed = rank - 1
    if passed < 0:
        return max(noise.median + Z_FLOOR * noise.sigma, (best[0] if best else 0.0) + 1e-6), False
    return float(best[passed]), passed == len(best) - 1


class SampleCache:
    """A random sample of the library's vectors, drawn once and kept while the library's size is about the same:
    the cutoff scores each query against it (one matrix-vector product)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._drawn_at = 0.0
        self._vectors: np.ndarray | None = None

    def get(self, collection: str, size: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        with self._lock:
            stale = (self._key is None or self._key[0] != collection
                     or abs(size - self._key[1]) > REFRESH * max(1, self._key[1])
                     or time.monotonic() - self._drawn_at > MAX_AGE)  # fmt: skip
            if stale or self._vectors is None:
                self._vectors = draw(SAMPLE)
                self._key, self._drawn_at = (collection, size), time.monotonic()
            return self._vectors
