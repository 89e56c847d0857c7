"""Query benchmark: warm text-query latency, HNSW recall@10 and a cold `photosearch search`, at library scale.

    flock /tmp/photosearch-bench.lock python benchmarks/bench_query.py              # 100,000 photos, both backends
    flock /tmp/photosearch-bench.lock python benchmarks/bench_query.py --backend embedded
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
index is cached under --cache (keyed by N, seed, model and HNSW settings); see query_index.py.

Backends (--backend): the embedded stores of a data directory (SQLite, Chroma's folder), the servers (a
throwaway PostgreSQL catalog and `chroma run`, on loopback: benchmarks/servers.py), or both (the default): the
same vectors and rows in each, queried alternately in one run, so the latency the servers add is measured side
by side. The vectors' build time is printed for each (a cached build: as recorded when it was built).

Measured: warm end-to-end `Library.search` latency (p50/p95, and its parts: text encoding, Chroma query,
catalog join); recall@10 of Chroma's HNSW against exact (numpy) search; the wall time of `photosearch search`
in a new process (the real console script, median of --cold-runs; the page cache is warm, the process is not);
a freshly started `photosearch serve`: when its page answers, and its first search then (serve_start.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import filtered_queries
import numpy as np
import serve_start
from machine import cpu_model, save_random_clip  # benchmarks/machine.py, beside this script
from query_index import build_on_servers, index_key, make_vectors, prepare_embedded, prepare_servers, sqlite_statistics

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("embedded", "servers")

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


# -- measurements ------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def backend_config(data_dir: Path, model: Path, store: dict[str, str] | None = None) -> Any:
    from photosearch.config import Config, ModelConfig, StoreConfig, validated

    store_config = validated(StoreConfig, store or {})
    return Config(data_dir=data_dir, model=ModelConfig(name=str(model)), store=store_config)


def warm_latency(configs: dict[str, Any], texts: list[str]) -> dict[str, dict[str, float]]:
    """Per backend: p50 of the whole `Library.search` and of its parts, p95 of the whole. With two backends the
    queries alternate between them (each text on both, the order swapped every text), so that the load of this
    shared machine, which moves within minutes, weighs on both alike: their difference is what the stores add."""
    from photosearch.library import Library

    names = list(configs)
    # rest: the total less the three parts timed again alone; what else Library.search asks the stores (the roots,
    # the active collection's record), each a round trip to a server.
    parts = {name: {"total": [], "encode": [], "hnsw": [], "catalog": [], "rest": []} for name in names}
    with ExitStack() as stack:
        libraries = {name: stack.enter_context(Library.open(config)) for name, config in configs.items()}
        for library in libraries.values():
            for text in texts[:20]:  # warm-up: first touches of the weights' pages, Chroma's caches, connections
                library.search(text, k=10)
        for i, text in enumerate(texts):
            for name in names if i % 2 == 0 else names[::-1]:
                library = libraries[name]
                encoder, store = library.text_embedder(), library.store()
                t0 = time.perf_counter()
                library.search(text, k=10)
                t1 = time.perf_counter()
                vector = encoder.embed_texts([text])[0]
                t2 = time.perf_counter()
                # A vector of its own (nudged): a scan keeps the last query's scores for a further look, and the
                # search above has just asked for this one's.
                nudged = vector.copy()
                nudged[0] += np.float32(1e-4)
                hits = store.query(nudged, 10)
                t3 = time.perf_counter()
                library.catalog.indexed_by_hash([h.key for h in hits])
                t4 = time.perf_counter()
                timed = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, (t1 - t0) - (t4 - t1))
                for part, seconds in zip(parts[name], timed, strict=True):
                    parts[name][part].append(seconds * 1000)
    results = {}
    for name in names:
        result = {f"{part}_p50_ms": percentile(v, 50) for part, v in parts[name].items()}
        result["p95_ms"] = percentile(parts[name]["total"], 95)
        results[name] = result
    results["torch_imported"] = {"yes": float("torch" in sys.modules or "transformers" in sys.modules)}
    return results


def recall_at_10(config: Any, vectors: np.ndarray, queries: np.ndarray) -> float:
    from photosearch.library import Library

    found = 0
    with Library.open(config) as library:
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


def cold_search(config: Any, text: str, runs: int) -> tuple[float, float]:
    """Median wall seconds and peak RSS (MB) of `photosearch search` in a new process each run. The servers are
    named the way a user would: PHOTOSEARCH_STORE_* in the environment."""
    base, env = serve_start.cli(config)
    cmd = [*base, "search", text, "-k", "10"]
    walls, peaks = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", RUNNER, *cmd], capture_output=True, text=True, check=True,
                             env=env)  # fmt: skip
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
    parser.add_argument("--backend", choices=("embedded", "servers", "both"), default="both",
                        help="the stores in the data directory, throwaway PostgreSQL and Chroma servers, or both "
                        "side by side in one run (default)")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "photosearch-bench-query")
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="ANALYZE the embedded catalog before measuring, as an index run leaves it (see query_index.py)",
    )
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


@contextmanager
def backends(args: argparse.Namespace, model: Path, key: str, vectors: np.ndarray, of: np.ndarray,
             ) -> Iterator[tuple[dict[str, Any], dict[str, dict]]]:  # fmt: skip
    """The Config of each backend asked for, its index built (or found in the cache), and each build's seconds;
    the servers run until the end of the with block."""
    wanted = BACKENDS if args.backend == "both" else (args.backend,)
    configs: dict[str, Any] = {}
    builds: dict[str, dict] = {}
    with ExitStack() as stack:
        if "embedded" in wanted:
            index, builds["embedded"] = prepare_embedded(args.cache, key, model, vectors, of)
            sqlite_statistics(index, args.sqlite_analyze)
            configs["embedded"] = backend_config(index, model)
        if "servers" in wanted:
            from servers import DATABASE, throwaway_servers  # benchmarks/servers.py: tests' pgserver, chromaserver

            folder = prepare_servers(args.cache, key, len(vectors))
            store = stack.enter_context(throwaway_servers(folder / "chroma")).store(DATABASE)
            builds["servers"] = build_on_servers(folder, store, model, vectors, of)
            configs["servers"] = backend_config(folder / "client", model, store)
        yield configs, builds


def run(args: argparse.Namespace) -> None:
    from photosearch.config import ModelConfig
    from photosearch.models.textencoder import load_text_encoder

    texts = query_texts(args.queries)
    model, min_cosine = prepare_model(args.cache, args.smoke, texts)
    encoder = load_text_encoder(ModelConfig(name=str(model)))
    assert encoder is not None
    extra = max(args.recall_queries - len(texts), 0)
    vectors, of, queries = make_vectors(args.n, encoder.embed_texts(texts), extra, args.seed)
    key = index_key(args.n, args.seed, texts, encoder.identity.key())
    with backends(args, model, key, vectors, of) as (configs, builds):
        warm = warm_latency(configs, texts)
        figures: dict[str, dict[str, Any]] = {}
        for name, config in configs.items():
            cold, cold_rss = cold_search(config, texts[0], args.cold_runs)
            build = builds[name]
            figures[name] = {
                "p50_ms": warm[name]["total_p50_ms"], "p95_ms": warm[name]["p95_ms"],
                "encode_p50_ms": warm[name]["encode_p50_ms"], "hnsw_p50_ms": warm[name]["hnsw_p50_ms"],
                "catalog_p50_ms": warm[name]["catalog_p50_ms"], "rest_p50_ms": warm[name]["rest_p50_ms"],
                "recall@10": recall_at_10(config, vectors, queries),
                "cold_search_s": cold, "cold_search_peak_rss_mb": cold_rss,
                "build_vectors_s": build.get("vectors_s"), "build_catalog_s": build.get("catalog_s"),
                "build_cached": bool(build.get("cached")),
            }  # fmt: skip
            measured = texts[:5] if args.smoke else texts  # the smoke run: that it works, in seconds
            figures[name] |= filtered_queries.measure(config, vectors, of, measured, args.seed)
            figures[name] |= serve_start.measure(config, texts, args.cold_runs)
    report(args, model, texts, queries, min_cosine, figures, bool(warm["torch_imported"]["yes"]))


def report(args: argparse.Namespace, model: Path, texts: list[str], queries: np.ndarray, min_cosine: float,
           figures: dict[str, dict[str, Any]], torch_imported: bool) -> None:  # fmt: skip
    from tokenizers import Tokenizer

    from photosearch.stores.vectors import HNSW

    hnsw = f"M={HNSW['max_neighbors']} ef_c={HNSW['ef_construction']} ef_s={HNSW['ef_search']}"
    tokens = [len(e.ids) for e in Tokenizer.from_file(str(model / "tokenizer.json")).encode_batch(texts)]
    first = figures.get("embedded") or figures["servers"]  # the top-level figures: as before the servers came
    result: dict[str, Any] = {
        "n": args.n, "queries": len(texts), "query_tokens_p50": float(np.median(tokens)), **first,
        "recall_queries": len(queries), "text_encoder_min_cosine": min_cosine,
        "torch_imported_by_search": torch_imported, "hnsw": hnsw, "backends": figures,
    }  # fmt: skip
    if len(figures) == 2:
        for part in ("p50_ms", "p95_ms", "hnsw_p50_ms", "catalog_p50_ms", "rest_p50_ms"):
            result[f"servers_added_{part}"] = figures["servers"][part] - figures["embedded"][part]
        result["servers_ratio_p50"] = figures["servers"]["p50_ms"] / figures["embedded"]["p50_ms"]
    for key, value in result.items():
        if key == "backends":
            continue
        print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    for name, values in figures.items():
        print(
            f"{name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        )
    command = "python benchmarks/bench_query.py " + " ".join(sys.argv[1:])
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print(
        "\n| date | machine | N | backend | text query p50 / p95 | HNSW query p50 | catalog join p50 | recall@10 "
        "| cold `photosearch search` | vectors' build | HNSW | command |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in figures.items():
        build = "-" if f["build_vectors_s"] is None else f"{f['build_vectors_s']:.0f} s"
        build += " (cached)" if f["build_cached"] else ""
        print(f"| {datetime.now():%Y-%m-%d} | {machine} | {args.n:,} | {name} "
              f"| {f['p50_ms']:.1f} / {f['p95_ms']:.1f} ms | {f['hnsw_p50_ms']:.1f} ms "
              f"| {f['catalog_p50_ms']:.2f} ms | {f['recall@10']:.4f} "
              f"| {f['cold_search_s']:.2f} s ({f['cold_search_peak_rss_mb']:.0f} MB peak RSS) | {build} | {hnsw} "
              f"| `{command.strip()}` |")  # fmt: skip
    print(
        "\n| date | machine | N | backend | filtered text query p50 (recall@10), filter keeps 100% / 10% / 1% / 0.1% "
        "| date-sorted + cutoff p50 | facets p50 (scan) | timeline page p50 (50 pages deep) | command |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in figures.items():
        shares = " / ".join(f"{f[f'filtered_{s}_p50_ms']:.1f} ms ({f[f'filtered_{s}_recall@10']:.3f})"
                            for s in ("100%", "10%", "1%", "0.1%"))  # fmt: skip
        rest = (f"{f['date_sorted_cutoff_p50_ms']:.1f} ms | {f['facets_p50_ms']:.1f} ms "
                f"({f['facets_scan_p50_ms']:.1f} ms) | {f['browse_first_p50_ms']:.1f} ms "
                f"({f['browse_deep_p50_ms']:.1f} ms)")  # fmt: skip
        print(f"| {datetime.now():%Y-%m-%d} | {machine} | {args.n:,} | {name} | {shares} | {rest} "
              f"| `{command.strip()}` |")  # fmt: skip
    print("\n| date | machine | N | backend | `serve`: its page answers after | its first search then | the second "
          "| command |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in figures.items():
        print(f"| {datetime.now():%Y-%m-%d} | {machine} | {args.n:,} | {name} | {f['serve_page_s']:.2f} s "
              f"| {f['serve_first_query_s']:.3f} s | {f['serve_second_query_s']:.3f} s "
              f"| `{command.strip()}` |")  # fmt: skip
    if len(figures) == 2:
        print(f"\nservers add {result['servers_added_p50_ms']:+.2f} ms p50 ({result['servers_ratio_p50']:.2f}x), "
              f"{result['servers_added_p95_ms']:+.2f} ms p95; "
              f"HNSW query {result['servers_added_hnsw_p50_ms']:+.2f} ms, "
              f"catalog join {result['servers_added_catalog_p50_ms']:+.2f} ms, "
              f"the rest of Library.search {result['servers_added_rest_p50_ms']:+.2f} ms")  # fmt: skip
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
