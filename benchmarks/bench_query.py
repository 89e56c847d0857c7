"""Query benchmark: warm text-query latency, HNSW recall@10 and a cold `photosearch search`, at library scale.

    flock /tmp/photosearch-bench.lock python benchmarks/bench_query.py              # 100,000 photos
    flock /tmp/photosearch-bench.lock python benchmarks/bench_query.py --n 1000000
    python benchmarks/bench_query.py --smoke                                         # tiny, < 60 s, for CI

The model is the full CLIP ViT-B/32 architecture (../shared/clip-tokenizer/config.json) with random weights
and the real tokenizer, saved like a downloaded checkpoint; the timings do not depend on the weights' values.
A worker process (the only one that imports torch) builds it and checks photosearch's ONNX Runtime text encoder
against transformers' get_text_features on the query texts.

The index is written straight through photosearch's Catalog and VectorStore instead of embedding N images:
vectors with the structure of CLIP photo embeddings (a shared direction, a few hundred clusters of Zipf-like
sizes and varied spread, bursts of near-duplicates), and text queries that land near clusters across a
modality gap (a text vector's cosine to its photos is about 0.3, as with CLIP). Each query text owns a
cluster aligned with its own encoded vector, so the end-to-end queries search a realistic neighbourhood;
recall is measured on those texts plus more text-like query vectors (--recall-queries in all). The built
index is cached under --cache (keyed by N, seed, model and HNSW settings).

Measured: warm end-to-end `Library.search` latency (p50/p95, and its parts: text encoding, Chroma query,
catalog join); recall@10 of Chroma's HNSW against exact (numpy) search; the wall time of `photosearch search`
in a new process (the real console script, median of --cold-runs; the page cache is warm, the process is not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from machine import cpu_model, save_random_clip  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 4  # bump when the generated index changes (4: content keys), so cached ones are rebuilt

SUBJECTS = ["a dog", "two cats", "a child", "an old man", "a red car", "a bicycle", "a birthday cake", "a sailboat",
            "my grandmother", "a horse", "fireworks", "a snowman", "a wedding couple", "a tent", "a lighthouse",
            "a plate of pasta", "a mountain goat", "a bride", "a football team", "a yellow kayak"]  # fmt: skip
SCENES = ["on the beach", "in the snow", "at night", "in a kitchen", "under a tree", "at the lake", "in the city",
          "in the rain", "at sunset", "in a garden", "on a mountain trail", "at a concert", "in the desert",
          "by the fireplace", "in a museum"]  # fmt: skip
STYLES = ["", "close-up of ", "black and white photo of ", "blurry picture of ", "old photo of "]


def query_texts(count: int) -> list[str]:
    """Distinct, realistic queries (6 to 15 tokens, 11 in the middle), the same for every run."""
    combos = [f"{style}{subject} {scene}" for style in STYLES for subject in SUBJECTS for scene in SCENES]
    picked = np.random.default_rng(7).permutation(len(combos))[:count]
    return [combos[i] for i in picked]


# -- the model (worker process: the only place torch and transformers are imported) ------------------------------
def model_worker(folder: Path, tiny: bool, texts: list[str]) -> None:
    import torch
    from transformers import CLIPModel

    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder

    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    save_random_clip(folder, small if tiny else None, projection_dim=64)
    model = CLIPModel.from_pretrained(str(folder)).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        reference = torch.nn.functional.normalize(model.get_text_features(**batch).pooler_output, dim=-1).numpy()
    encoder = load_text_encoder(ModelConfig(name=str(folder)))
    assert encoder is not None, "the text encoder does not cover the benchmark model"
    cosines = (encoder.embed_texts(texts) * reference).sum(axis=1)
    print(json.dumps({"min_cosine": float(cosines.min())}))


def prepare_model(cache: Path, tiny: bool, texts: list[str]) -> tuple[Path, float]:
    folder = cache / ("model-clip-tiny-random" if tiny else "model-clip-vit-b32-random")
    cache.mkdir(parents=True, exist_ok=True)
    texts_file = cache / "query-texts.json"
    texts_file.write_text(json.dumps(texts))
    cmd = [sys.executable, __file__, "--model-worker", str(folder), "--texts", str(texts_file)]
    out = subprocess.run(cmd + (["--smoke"] if tiny else []), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"model worker failed:\n{out.stderr[-3000:]}")
    return folder, json.loads(out.stdout.strip().splitlines()[-1])["min_cosine"]


# -- the vectors -------------------------------------------------------------------------------------------------
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


def content_key(photo_id: int) -> str:
    """The synthetic photo's content hash (the vector store's key): its id in hex, as long as a blake2b digest."""
    return f"{photo_id:032x}"


def build_index(folder: Path, model: Path, vectors: np.ndarray, of: np.ndarray) -> None:
    """Catalog rows (status indexed) and Chroma vectors, written through photosearch's own stores."""
    from sqlalchemy import insert

    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder
    from photosearch.stores import generations
    from photosearch.stores.catalog import Catalog
    from photosearch.stores.schema import Photo, PhotoStatus
    from photosearch.stores.vectors import ChromaDir, VectorStore

    encoder = load_text_encoder(ModelConfig(name=str(model)))
    assert encoder is not None
    identity = encoder.identity
    shutil.rmtree(folder, ignore_errors=True)  # a build that was interrupted
    (folder / "photos").mkdir(parents=True)
    # The catalog's photos are synthetic: the root holds no files. An empty root whose catalog has photos reads
    # as an unmounted drive, and its photos would be left out of every search (offline), so mark it mounted.
    (folder / "photos" / "MOUNTED").touch()
    catalog = Catalog.open(folder / "catalog.sqlite3")
    root = catalog.add_root(folder / "photos")
    generation = generations.record_active(catalog, identity)
    store = VectorStore.open(ChromaDir(folder / "chroma"), generation.collection, identity.to_dict())
    start, now = datetime(2012, 1, 1), datetime.now().replace(microsecond=0)
    step = 5000
    for first in range(0, len(vectors), step):
        ids = list(range(first + 1, min(first + step, len(vectors)) + 1))
        rows = []
        for photo_id in ids:
            event = int(of[photo_id - 1])
            taken = start + timedelta(days=event % 4000, seconds=photo_id % 86400)
            folder_name = f"{taken.year}/event-{event:04d}"
            path = f"{root.path}/{folder_name}/IMG_{photo_id:07d}.jpg"
            rows.append({"id": photo_id, "root_id": root.id, "path": path, "folder": folder_name,
                         "size": 2_000_000 + photo_id, "mtime_ns": photo_id, "status": PhotoStatus.INDEXED,
                         "content_hash": content_key(photo_id),
                         "width": 4032, "height": 3024, "format": "JPEG", "taken_at": taken, "camera_make": "Apple",
                         "camera_model": "iPhone 12", "indexed_at": now, "updated_at": now})  # fmt: skip
        with catalog.session() as s, s.begin():
            s.execute(insert(Photo), rows)
        store.upsert([content_key(i) for i in ids], vectors[ids[0] - 1 : ids[-1]])
        print(f"\r  indexed {ids[-1]:,} / {len(vectors):,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    assert store.count() == len(vectors)
    catalog.close()
    (folder / "complete").touch()


def prepare_index(cache: Path, model: Path, n: int, seed: int, texts: list[str], extra: int):
    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder
    from photosearch.stores.vectors import HNSW

    encoder = load_text_encoder(ModelConfig(name=str(model)))
    assert encoder is not None
    text_vectors = encoder.embed_texts(texts)
    vectors, of, queries = make_vectors(n, text_vectors, extra, seed)
    key = hashlib.sha256(json.dumps([GENERATOR_VERSION, n, seed, texts, encoder.identity.key(), HNSW],
                                    sort_keys=True).encode()).hexdigest()[:12]  # fmt: skip
    folder = cache / f"index-{n}-{key}"
    if not (folder / "complete").is_file():
        print(f"building the {n:,}-photo index in {folder} (cached for later runs)", file=sys.stderr)
        started = time.perf_counter()
        build_index(folder, model, vectors, of)
        print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder, vectors, queries


# -- measurements ------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def warm_latency(index: Path, model: Path, texts: list[str]) -> dict[str, float]:
    from photosearch.config import Config, ModelConfig
    from photosearch.library import Library

    config = Config(data_dir=index, model=ModelConfig(name=str(model)))
    parts: dict[str, list[float]] = {"total": [], "encode": [], "hnsw": [], "catalog": []}
    with Library.open(config) as library:
        for text in texts[:20]:  # warm-up: first touches of the weights' pages, Chroma's caches
            library.search(text, k=10)
        encoder, store = library.text_embedder(), library.store()
        for text in texts:
            t0 = time.perf_counter()
            library.search(text, k=10)
            t1 = time.perf_counter()
            vector = encoder.embed_texts([text])[0]
            t2 = time.perf_counter()
            hits = store.query(vector, 10)
            t3 = time.perf_counter()
            library.catalog.indexed_by_hash([h.key for h in hits])
            t4 = time.perf_counter()
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                parts[name].append(seconds * 1000)
    result = {f"{name}_p50_ms": percentile(v, 50) for name, v in parts.items()}
    result["p95_ms"] = percentile(parts["total"], 95)
    result["torch_imported"] = float("torch" in sys.modules or "transformers" in sys.modules)
    return result


def recall_at_10(index: Path, model: Path, vectors: np.ndarray, queries: np.ndarray) -> float:
    from photosearch.config import Config, ModelConfig
    from photosearch.library import Library

    found = 0
    with Library.open(Config(data_dir=index, model=ModelConfig(name=str(model)))) as library:
        store = library.store()
        for start in range(0, len(queries), 256):
            batch = queries[start : start + 256]
            scores = batch @ vectors.T
            exact = np.argpartition(-scores, 10, axis=1)[:, :10] + 1  # photo ids are row + 1
            for query, truth in zip(batch, exact, strict=True):
                found += len({int(h.key, 16) for h in store.query(query, 10)} & set(truth.tolist()))
    return found / (10 * len(queries))


# Runs one command and reports its wall time and peak RSS. A small process of its own starts it: a child forked
# from this big benchmark process would report this process's peak RSS as its own (Linux keeps the high-water
# mark across exec).
RUNNER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - started
print(json.dumps({"wall": wall, "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "rc": done.returncode, "lines": len(done.stdout.splitlines()), "stderr": done.stderr[-2000:]}))
"""


def cold_search(index: Path, model: Path, text: str, runs: int) -> tuple[float, float]:
    """Median wall seconds and peak RSS (MB) of `photosearch search` in a new process each run."""
    exe = Path(sys.executable).with_name("photosearch")
    cmd = [str(exe), "--data-dir", str(index), "--model", str(model), "search", text, "-k", "10"]
    walls, peaks = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", RUNNER, *cmd], capture_output=True, text=True, check=True)
        run = json.loads(out.stdout)
        if run["rc"] != 0 or run["lines"] != 10:
            sys.exit(f"`{' '.join(cmd)}` failed ({run['rc']}): {run['stderr']}")
        walls.append(run["wall"])
        peaks.append(run["rss_kb"] / 1024)
    return float(np.median(walls)), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="photos in the index (default 100,000)")
    parser.add_argument("--queries", type=int, default=200, help="text queries timed end to end (default 200)")
    parser.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@10 (default 1000)")
    parser.add_argument("--cold-runs", type=int, default=5, help="new-process searches timed (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "photosearch-bench-query")
    parser.add_argument("--smoke", action="store_true", help="tiny model and index, a few queries: for CI")
    parser.add_argument("--model-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_worker:
        model_worker(args.model_worker, args.smoke, json.loads(args.texts.read_text()))
        return
    scratch = None
    if args.smoke:
        args.n, args.queries, args.recall_queries, args.cold_runs = 2000, 20, 100, 2
        scratch = tempfile.TemporaryDirectory(prefix="bench-query-smoke-")
        args.cache = Path(scratch.name)
    try:
        run(args)
    finally:
        if scratch is not None:
            scratch.cleanup()


def run(args: argparse.Namespace) -> None:
    texts = query_texts(args.queries)
    model, min_cosine = prepare_model(args.cache, args.smoke, texts)
    index, vectors, queries = prepare_index(
        args.cache, model, args.n, args.seed, texts, max(args.recall_queries - len(texts), 0)
    )
    warm = warm_latency(index, model, texts)
    recall = recall_at_10(index, model, vectors, queries)
    cold, cold_rss = cold_search(index, model, texts[0], args.cold_runs)
    from tokenizers import Tokenizer

    from photosearch.stores.vectors import HNSW

    hnsw = f"M={HNSW['max_neighbors']} ef_c={HNSW['ef_construction']} ef_s={HNSW['ef_search']}"
    tokens = [len(e.ids) for e in Tokenizer.from_file(str(model / "tokenizer.json")).encode_batch(texts)]
    result = {
        "n": args.n, "queries": len(texts), "query_tokens_p50": float(np.median(tokens)),
        "p50_ms": warm["total_p50_ms"], "p95_ms": warm["p95_ms"],
        "encode_p50_ms": warm["encode_p50_ms"], "hnsw_p50_ms": warm["hnsw_p50_ms"],
        "catalog_p50_ms": warm["catalog_p50_ms"], "recall@10": recall, "recall_queries": len(queries),
        "cold_search_s": cold, "cold_search_peak_rss_mb": cold_rss, "text_encoder_min_cosine": min_cosine,
        "torch_imported_by_search": bool(warm["torch_imported"]), "hnsw": hnsw,
    }  # fmt: skip
    for key, value in result.items():
        print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    command = "python benchmarks/bench_query.py " + " ".join(sys.argv[1:])
    print("\n| date | machine | N | text query p50 / p95 | recall@10 | cold `photosearch search` | HNSW | command |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {datetime.now():%Y-%m-%d} | {cpu_model()}, {os.cpu_count()} cores | {args.n:,} "
          f"| {result['p50_ms']:.1f} / {result['p95_ms']:.1f} ms | {recall:.4f} | {cold:.2f} s "
          f"({cold_rss:.0f} MB peak RSS) | {hnsw} | `{command.strip()}` |")  # fmt: skip
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
