"""Store benchmark: what moving and duplicating photos costs when no model call is needed.

    flock /tmp/photosearch-bench.lock python benchmarks/bench_stores.py                # 100,000 photos
    python benchmarks/bench_stores.py --photos 20000 --duplicates 5000
    python benchmarks/bench_stores.py --smoke                                          # tiny, for CI

The model is an embedder at the Embedder protocol that makes a 512-dimensional unit vector (CLIP ViT-B/32's
size) from each photo's pixels: what is measured is the indexer and the stores, not a model. Photos are tiny
distinct JPEGs in folders of 1,000, all read once before timing (the page cache holds them).

  (1) index: the photos indexed from scratch (for reference: the HNSW inserts of unique vectors).
  (2) folder move, no hints: the library folder's subfolders renamed, then `index`, as after a reorganisation
      done while the daemon was not running. Every file is read and hashed; no model call.
  (3) folder move, hinted: the same as the daemon sees it (a rename event per folder): nothing is read.
  (4) duplicates: --duplicates byte-identical copies (hard links) of one photo added, then `index`.
  (5) side by side, at the Index: --side moves written one at a time and in one batch, and as many duplicate
      copies likewise, on the same store; the ratio is what batching buys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from machine import cpu_model  # noqa: E402

from photosearch.config import Config, ModelConfig  # noqa: E402
from photosearch.indexing.planner import Scope  # noqa: E402
from photosearch.library import Library  # noqa: E402
from photosearch.models.embedder import ModelIdentity  # noqa: E402
from photosearch.stores.catalog import FileState  # noqa: E402
from photosearch.stores.index import Location  # noqa: E402

DIM = 512
PER_FOLDER = 1000


class PixelEmbedder:
    """Vectors from pixels (deterministic, distinct per photo), at the Embedder protocol."""

    identity = ModelIdentity(name="bench/pixel-embedder", revision="1", dim=DIM)
    preferred_batch_size = 256
    input_side = 16
    on_cpu = True

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.blake2b(p.tobytes(), digest_size=8).digest()) for p in prepared]
        vectors = np.stack([np.random.default_rng(s).standard_normal(DIM) for s in seeds]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_prepared([self.prepare(image) for image in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_prepared([np.frombuffer(t.encode(), dtype=np.uint8) for t in texts])


def make_photos(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = root / f"f{i // PER_FOLDER:04d}" / f"p{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def read_all(root: Path) -> None:
    for path in root.rglob("*.jpg"):
        path.read_bytes()


def timed(step: str, count: int, run) -> dict[str, float]:
    start = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"{step}: {count} in {seconds:.1f} s = {rate:,.0f}/s  ({report.summary() if report else ''})", flush=True)
    return {f"{step}_per_s": rate, f"{step}_s": seconds}


def rename_folders(lib: Path, old: str, new: str) -> dict[Path, Path]:
    moves = {}
    for folder in sorted(lib.glob(f"{old}*")):
        target = lib / folder.name.replace(old, new, 1)
        folder.rename(target)
        moves[target] = folder
    return moves


def side_by_side(library: Library, n: int) -> dict[str, float]:
    """Index.move and Index.copy one photo per call against one call for all, on the same store."""
    index = library.stores()
    records = sorted(library.catalog.records(sorted(library.catalog.ids_with_status("indexed"))[:n]).values(),
                     key=lambda r: r.id)  # fmt: skip
    here = [Location(r.path, r.root_id, r.folder, r.size, r.mtime_ns) for r in records]
    away = [Location(loc.path, loc.root_id, "elsewhere", loc.size, loc.mtime_ns) for loc in here]

    def states(folders: list[Location]) -> list[FileState]:
        return [FileState(r.id, str(r.path), r.size, r.mtime_ns, r.content_hash, r.status, loc.folder)
                for r, loc in zip(records, folders, strict=True)]  # fmt: skip

    start = time.perf_counter()
    for move in zip(states(here), away, strict=True):
        index.move([move])
    one = n / (time.perf_counter() - start)
    start = time.perf_counter()
    index.move(list(zip(states(away), here, strict=True)))
    batched = n / (time.perf_counter() - start)
    source = records[0].id
    copies = [(Location(loc.path.with_name("copy-" + loc.path.name), loc.root_id, loc.folder, loc.size, 0), source)
              for loc in here[1 : 1 + n // 10]]  # fmt: skip
    start = time.perf_counter()
    for copy in copies[: len(copies) // 2]:
        index.copy([copy])
    copy_one = (len(copies) // 2) / (time.perf_counter() - start)
    start = time.perf_counter()
    index.copy(copies[len(copies) // 2 :])
    copy_batched = (len(copies) - len(copies) // 2) / (time.perf_counter() - start)
    print(f"side by side, {n} moves: one per call {one:,.0f}/s, batched {batched:,.0f}/s = {batched / one:.1f}x")
    print(f"side by side, {len(copies)} copies: one per call {copy_one:,.0f}/s, batched {copy_batched:,.0f}/s")
    return {"move_one_per_s": one, "move_batched_per_s": batched, "move_batched_over_one": batched / one,
            "copy_one_per_s": copy_one, "copy_batched_per_s": copy_batched}  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, float]:
    lib, data = work / "lib", work / "data"
    make_photos(lib, args.photos)
    read_all(lib)
    config = Config(data_dir=data, model=ModelConfig(name=PixelEmbedder.identity.name, batch_size=256))
    result: dict[str, float] = {"photos": args.photos, "duplicates": args.duplicates}
    embedder = PixelEmbedder()
    with Library.open(config, embedder_factory=lambda _c: embedder) as library:
        result |= timed("index", args.photos, lambda: library.index([lib]))
        rename_folders(lib, "f", "g")
        result |= timed("move_unhinted", args.photos, library.index)
        moves = rename_folders(lib, "g", "h")
        result |= timed("move_hinted", args.photos, lambda: library.index_changes(Scope(list(moves), moves)))
        twin = lib / "dups"
        twin.mkdir()
        original = next(lib.rglob("p000000.jpg"))
        for i in range(args.duplicates):
            os.link(original, twin / f"d{i:06d}.jpg")
        result |= timed("duplicates", args.duplicates, library.index)
        result |= side_by_side(library, args.side)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--duplicates", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=2000, help="moves for the side-by-side comparison")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.photos, args.duplicates, args.side = 1500, 200, 200
    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(result))
    command = "bench_stores.py --smoke" if args.smoke else f"bench_stores.py --photos {args.photos}"
    print(
        f"| {datetime.now():%Y-%m-%d} | {cpu_model()}, {os.cpu_count()} CPUs | {command} | "
        f"{result['move_unhinted_per_s']:,.0f}/s | {result['move_hinted_per_s']:,.0f}/s | "
        f"{result['duplicates_per_s']:,.0f}/s | {result['move_batched_over_one']:.1f}x |"
    )


if __name__ == "__main__":
    main()
