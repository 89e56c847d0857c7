"""A SearchRequest answered: which photos, in which order, on which page, each marked relevant or not.

    no query              a timeline: the photos in scope by date (newest or oldest first), paged by cursor
    relevance, no cutoff  the best k matches (as `search` always gave)
    relevance, a cutoff   the best matches that pass it; with ``rest`` the others after them (relevant: false)
    by date, a cutoff     the matches that pass it, sorted by date (at most MAX_RELEVANT of them); with ``rest``
                          the others after them in relevance order
    by date, cutoff none  the timeline of the scope, each photo scored against the query

The cutoff ``auto`` is query/cutoff.py's; a score is a flat cutoff. Every page of one request is cut from the
same ranked list, so paging with offset neither repeats nor skips a photo while the library stays as it is.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from photosearch import matvec
from photosearch.query import cutoff
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.search import MAX_K, Match, Searcher
from photosearch.query.spec import SearchRequest, decode_cursor, encode_cursor
from photosearch.stores.catalog_hashes import PhotoScope

MAX_RELEVANT = 2000  # the most matches a date-sorted query sorts (the best ones, when more pass the cutoff)
FIRST_LOOK = 100  # the matches read to place the auto cutoff (more while all of them pass)


class Answerer:
    def __init__(self, searcher: Searcher, samples: cutoff.SampleCache, default_k: int) -> None:
        self._searcher = searcher
        self._samples = samples
        self._default_k = default_k

    def answer(
        self, request: SearchRequest, vector: np.ndarray | None, scope: PhotoScope, exclude: frozenset[int]
    ) -> SearchPage:
        k = self._default_k if request.k is None else request.k
        if vector is None or (request.order != "relevance" and request.threshold_rule == "none"):
            return self._timeline(request, k, scope, vector)
        want = min(MAX_K, request.offset + k + 1)  # one more: whether another page follows
        rule = request.threshold_rule
        if rule == "none":
            hits = self._searcher.by_vector(vector, want, scope, exclude)
            return _page([replace(r, relevant=True) for r in hits], request.offset, k, None)
        by_date = request.order != "relevance"
        ranked, limit = self._ranked(vector, scope, exclude, rule, want, by_date)
        relevant = [m for m in ranked if m.score >= limit]
        rest = [m for m in ranked if m.score < limit]
        if by_date:
            relevant = _by_date(relevant, newest=request.order == "newest")
        chosen = relevant + (rest if request.rest else [])
        page = chosen[request.offset : request.offset + k]
        results = [replace(r, relevant=r.score is not None and r.score >= limit)
                   for r in self._searcher.results(page, request.offset + 1)]  # fmt: skip
        return SearchPage(results, len(chosen) > request.offset + k, None, limit)

    def _ranked(
        self, vector: np.ndarray, scope: PhotoScope, exclude: frozenset[int], rule: str | float, want: int,
        by_date: bool,
    ) -> tuple[list[Match], float]:  # fmt: skip
        """The best matches, enough of them to place the cutoff and to fill the page (all that pass it when
        sorting by date, up to MAX_RELEVANT); and the cutoff's score."""
        fetch = max(want, FIRST_LOOK if rule == "auto" else want)
        sampled = self._sampled(vector) if rule == "auto" else None
        noise = None if sampled is None else cutoff.noise_of(sampled) if len(sampled) else cutoff.Noise(0.0, 1.0)
        n = self._searcher.size_of(scope) if noise is not None else 0
        while True:
            hits = self._searcher.matches(vector, min(fetch, MAX_RELEVANT), scope, exclude, bound=MAX_RELEVANT)
            scores = [m.score for m in hits]
            if noise is not None:
                limit, all_passed = cutoff.threshold(noise, scores, n)
            else:
                limit = float(rule)
                all_passed = bool(scores) and scores[-1] >= limit
            exhausted = len(hits) < min(fetch, MAX_RELEVANT) or fetch >= MAX_RELEVANT
            if exhausted or not ((by_date or noise is not None) and all_passed):
                return hits, limit
            # All passed: look further, as far as the sample says that many photos score above the cutoff (each
            # look is a search of its own: HNSW does not resume one).
            expected = 0 if sampled is None or not len(sampled) else n * float(np.mean(sampled >= limit))
            fetch = max(4 * fetch, math.ceil(1.5 * expected))

    def _sampled(self, vector: np.ndarray) -> np.ndarray:
        """The query's scores of the library's sample (query/cutoff.py): where its unrelated photos score."""
        searcher = self._searcher
        sample = self._samples.get(searcher.collection, searcher.vector_count(), searcher.sample)
        return matvec.scores(sample, vector) if len(sample) else np.zeros(0, dtype=np.float32)

    def _timeline(self, request: SearchRequest, k: int, scope: PhotoScope, vector: np.ndarray | None) -> SearchPage:
        newest = request.order != "oldest"
        after = decode_cursor(request.cursor) if request.cursor else None
        if request.offset and after is None:  # offset paging of a timeline: read through (bounded by MAX_K)
            results, _ = self._searcher.browse(scope, min(MAX_K, request.offset), newest, None)
            after = (results[-1].date, results[-1].id) if len(results) == request.offset else None
            if after is None:
                return SearchPage([], False, None, None)
        results, position = self._searcher.browse(scope, k, newest, after, vector)
        results = [replace(r, rank=request.offset + i, relevant=None if vector is None else True)
                   for i, r in enumerate(results, 1)]  # fmt: skip
        cursor = encode_cursor(*position) if position is not None else None
        return SearchPage(results, position is not None, cursor, None)


def _by_date(matches: list[Match], newest: bool) -> list[Match]:
    """By date and id, as a timeline orders them; undated photos last in either order."""
    dated = sorted((m for m in matches if m.date is not None), key=lambda m: (m.date, m.id), reverse=newest)
    return dated + sorted((m for m in matches if m.date is None), key=lambda m: m.id, reverse=newest)


def _page(chosen: list[SearchResult], offset: int, k: int, limit: float | None) -> SearchPage:
    page = [replace(r, rank=rank) for rank, r in enumerate(chosen[offset : offset + k], offset + 1)]
    return SearchPage(page, len(chosen) > offset + k, None, limit)
