"""The relevance cutoff `auto` (query/cutoff.py) on planted relevant sets: precision and recall, beside the best
flat score chosen with hindsight.

No real weights can be had here, so the library is built at the Embedder protocol: a fake embedder maps each
query text to a chosen vector, and the photos' vectors are planted (written through the library's own Index, as
an index run writes them) with CLIP-like geometry: every photo in a shared cone (cosine ~0.45 between unrelated
photos), texts off it (the modality gap). Each planted query owns a set of photos of known size (5 to 15% of the
library) whose vectors lean towards it; queries differ in how far their unrelated photos score (the offset that
makes a flat cutoff fail: one query's noise scores above another's matches) and in how clearly their set stands
out. Queries that own nothing ("absent") measure false positives alone.

    python benchmarks/bench_cutoff.py [--n 20000] [--smoke]

It prints per query: the set's size, auto's precision and recall, and the date-sorted answer's check (the
relevant photos, by date); then the totals against the single flat cutoff that would have been best over all
queries. RESULT {...} is the summary (tests/test_benchmarks.py reads it).

To repeat it with a real model: index a folder whose photos you have labelled (a file per label listing the
photos), run `photosearch search LABEL --cutoff auto --sort newest --json -k 1000` for each label, and count
the listed photos among the `relevant` results (precision) and the results among the listed (recall).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from photosearch.config import Config, ModelConfig
from photosearch.facts import PhotoFacts
from photosearch.library import Library
from photosearch.models.identity import ModelIdentity
from photosearch.models.protocols import ImageModel, TextModel
from photosearch.query.spec import SearchRequest, Weighted
from photosearch.stores.index import Location, NewPhoto

DIM = 512
# (name, share of the library, how far its unrelated photos score: offset, how clearly its set stands out)
QUERIES = [("tiny-clear", 5, 0.10, 1.0), ("tiny-faint", 8, 0.30, 0.7), ("small-low", 0.002, -0.05, 0.8),
           ("small-high", 0.003, 0.35, 0.8), ("mid", 0.015, 0.15, 0.8), ("mid-faint", 0.025, 0.25, 0.6),
           ("big", 0.05, 0.05, 0.7), ("huge", 0.15, 0.20, 0.7), ("absent-low", 0, 0.0, 0.0),
           ("absent-high", 0, 0.40, 0.0)]  # fmt: skip


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class PlantedEmbedder(ImageModel, TextModel):
    """Texts to chosen vectors (the Embedder protocol); photos are never embedded here (their vectors are planted)."""

    identity = ModelIdentity(name="bench/planted-cutoff", revision="1", dim=DIM)
    preferred_batch_size = 64
    input_side = 16
    on_cpu = True

    def __init__(self, texts: dict[str, np.ndarray]) -> None:
        self.texts = texts

    def prepare(self, image, source_size=None):  # type: ignore[no-untyped-def]
        raise AssertionError("the planted library embeds no photo")

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        raise AssertionError("the planted library embeds no photo")

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.texts[t] for t in texts])


def plant(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, set[int]]]:
    """(photo vectors, query vectors by text, planted members by text: photo indexes)."""
    rng = np.random.default_rng(seed)
    shared, text_dir = unit(rng.standard_normal(DIM)), unit(rng.standard_normal(DIM))
    background = unit(rng.standard_normal((max(8, n // 200), DIM)))  # unrelated photos' own topics
    of = rng.integers(0, len(background), n)
    photos = 0.55 * shared + 0.45 * background[of] + 0.65 * rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    texts: dict[str, np.ndarray] = {}
    members: dict[str, set[int]] = {}
    free = rng.permutation(n)
    taken = 0
    for name, share, offset, strength in QUERIES:
        size = int(share * n) if share < 1 else int(share)
        topic = unit(rng.standard_normal(DIM))
        chosen = free[taken : taken + size]
        taken += size
        lean = strength * rng.uniform(0.7, 1.3, size)[:, None]
        photos[chosen] = photos[chosen] + 0.45 * lean * topic
        members[name] = {int(i) for i in chosen}
        texts[name] = unit(text_dir + (0.15 + offset) * 2.2 * shared + 1.1 * topic)
    return unit(photos), texts, members


def build(folder: Path, vectors: np.ndarray, texts: dict[str, np.ndarray]) -> Library:
    config = Config(data_dir=folder / "data", model=ModelConfig(name=PlantedEmbedder.identity.name))
    library = Library.open(config, embedder_factory=lambda _config: PlantedEmbedder(texts))
    root = folder / "photos"
    root.mkdir(parents=True)
    info = library.add_roots([root])[0]
    start = datetime(2015, 1, 1)
    index = library.stores()
    for first in range(0, len(vectors), 5000):
        batch = range(first, min(len(vectors), first + 5000))
        photos = [NewPhoto(Location(root / f"p{i:06d}.jpg", info.id, "", 1000, 1), f"{i:064x}",
                           PhotoFacts(64, 48, "JPEG", start + timedelta(hours=7 * ((i * 7919) % len(vectors))),
                                      None, None, None, None, None)) for i in batch]  # fmt: skip
        index.add(photos, lambda batch=batch: vectors[list(batch)])
    library.catalog.optimize()
    return library


def answer(library: Library, text: str, sort: str) -> list:
    """Every photo the query's auto cutoff keeps, paged through."""
    found, offset = [], 0
    while True:
        request = SearchRequest(
            texts=(Weighted(text),), sort=sort, cutoff="auto", k=1000, offset=offset, include_offline=True
        )  # the planted photos have no files
        page = library.query(request)
        found += page.results
        if not page.more:
            return found
        offset += 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="2,000 photos: that it works, in seconds")
    args = parser.parse_args()
    n = 2000 if args.smoke else args.n
    vectors, texts, members = plant(n, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-cutoff-") as tmp:
        library = build(Path(tmp), vectors, texts)
        rows = {Path(r.path).name: r.id for r in library.catalog.records(range(1, n + 1)).values()}
        ids = [rows[f"p{i:06d}.jpg"] for i in range(n)]
        print(f"{n} planted photos, {DIM} dimensions")
        print(
            f"{'query':<12} {'set':>6} {'found':>6} {'precision':>9} {'recall':>7} {'noise μ':>8} {'set μ':>7}  by date"
        )
        totals = {"tp": 0, "fp": 0, "fn": 0}
        all_scores = []
        for name, *_ in QUERIES:
            planted = {ids[i] for i in members[name]}
            scores = vectors @ texts[name]
            all_scores.append((scores, {i for i in members[name]}))
            results = answer(library, name, "newest")
            kept = {r.id for r in results}
            tp, fp, fn = len(kept & planted), len(kept - planted), len(planted - kept)
            totals = {"tp": totals["tp"] + tp, "fp": totals["fp"] + fp, "fn": totals["fn"] + fn}
            dates = [r.date for r in results]
            in_order = dates == sorted(dates, reverse=True) and all(r.relevant for r in results)
            noise = np.delete(scores, list(members[name])) if members[name] else scores
            set_mean = float(scores[list(members[name])].mean()) if members[name] else float("nan")
            precision = tp / len(kept) if kept else 1.0
            recall = tp / len(planted) if planted else 1.0
            print(f"{name:<12} {len(planted):>6} {len(kept):>6} {precision:>9.3f} {recall:>7.3f} "
                  f"{noise.mean():>8.3f} {set_mean:>7.3f}  {'ok' if in_order else 'WRONG ORDER'}")  # fmt: skip
            if not in_order:
                raise SystemExit(f"{name}: the date-sorted answer is not the relevant photos by date")
        library.close()
    precision = totals["tp"] / max(1, totals["tp"] + totals["fp"])
    recall = totals["tp"] / max(1, totals["tp"] + totals["fn"])
    flat = best_flat(all_scores)
    print(f"auto:                     precision {precision:.3f}  recall {recall:.3f}  F1 {f1(precision, recall):.3f}")
    print(f"best flat cutoff {flat[0]:.3f}:  precision {flat[1]:.3f}  recall {flat[2]:.3f}  F1 {flat[3]:.3f}"
          " (chosen with hindsight over all queries)")  # fmt: skip
    summary = {"n": n, "precision": round(precision, 4), "recall": round(recall, 4),
               "f1": round(f1(precision, recall), 4), "best_flat": [round(x, 4) for x in flat]}  # fmt: skip
    print("RESULT " + json.dumps(summary))


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def best_flat(per_query: list[tuple[np.ndarray, set[int]]]) -> tuple[float, float, float, float]:
    """The single score cutoff with the best F1 over all queries: (score, precision, recall, F1)."""
    best = (0.0, 0.0, 0.0, -1.0)
    for cut in np.arange(-0.2, 0.9, 0.0025):
        tp = fp = fn = 0
        for scores, planted in per_query:
            above = set(np.flatnonzero(scores >= cut).tolist())
            tp, fp, fn = tp + len(above & planted), fp + len(above - planted), fn + len(planted - above)
        p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
        if f1(p, r) > best[3]:
            best = (float(cut), p, r, f1(p, r))
    return best


if __name__ == "__main__":
    main()
