"""Index benchmark: photosearch's indexer against the per-image CLIP loop and against the model alone.

    flock /tmp/photosearch-bench.lock python benchmarks/bench_index.py               # 400 photos, ~2 min
    flock /tmp/photosearch-bench.lock python benchmarks/bench_index.py --photos 1000 --folder ~/Pictures/2023
    python benchmarks/bench_index.py --smoke                                          # tiny, < 60 s, for CI
    flock /tmp/photosearch-bench.lock python benchmarks/bench_index.py --backend servers --workers 1,2
    python benchmarks/bench_index.py --smoke --backend servers

Photos: camera-like 12 MP JPEGs made from real photos (see camera_photos.py), cached under --cache; or the
first --photos JPEGs of --folder. All of them are read once before timing, so every measurement reads from the
page cache. The model is the full CLIP ViT-B/32 architecture (../shared/clip-tokenizer/config.json) with random
weights (seeded, cached) and the real tokenizer and preprocessor files, saved like a downloaded checkpoint:
speed does not depend on the weights' values. The same saved weights serve all three measurements:

  (a) the per-image loop of the CLIP README: PIL open, CLIPProcessor, get_image_features, one photo at a time,
      float32, on the first --reference-photos photos. One step is added to the README's loop:
      ImageOps.exif_transpose, so that its vectors describe the same upright picture as photosearch's.
  (b) photosearch's indexer end to end: Library.index on a fresh data directory (scan, read, hash, decode,
      prepare, embed, catalog and Chroma writes), in a child process whose peak RSS is read from wait4().
      Its rate is taken over the index run with the model already loaded (what a 10,000-photo run sees); the
      rate including the model load is printed too.
  (c) the model alone: get_image_features on ready pixel tensors (batches of the batch size photosearch uses),
      at the precision photosearch chose, in the image tower photosearch loaded.
  (d) the indexer's work before the model alone (read, hash, reduced decode, prepare), in the indexer's decode
      threads. On a CPU the model and the decoding share the same cores, so no pipeline beats the bound
      1 / (1/c + 1/d) photos/s; b/bound says how close photosearch comes to it.

--backend servers measures instead indexers sharing a PostgreSQL catalog and a Chroma server: 1 against 2
worker processes on the same photos, with this model and with a fake one, and the claims' cost per photo
(index_servers.py).

Fidelity: the vectors photosearch stored (read back from Chroma) against (a)'s vectors of the same photos.
Random weights make every photo look alike to the model (different photos have cosines near 0.9), so the
cosine is printed with that baseline beside it, plus the cosine after removing the mean vector (the part that
tells photos apart) and the model-independent pixel difference of the 224x224 input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from camera_photos import camera_photos  # noqa: E402
from machine import cpu_model, save_random_clip  # noqa: E402

REPO = HERE.parent
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "testdata" / "exif-samples"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def make_model(folder: Path, tiny: bool) -> Path:
    return save_random_clip(folder, TINY if tiny else None, projection_dim=16)


def photos_for_run(args: argparse.Namespace) -> list[Path]:
    if args.folder is not None:
        found = sorted(p for p in args.folder.expanduser().rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        if len(found) < args.photos:
            print(f"note: {args.folder} holds {len(found)} JPEGs; using all of them")
        return found[: args.photos]
    size = (640, 480) if args.smoke else (4000, 3000)
    return camera_photos(args.cache, args.photos, SAMPLES, size)


def link_folder(photos: list[Path], folder: Path) -> None:
    """The run's library folder: exactly these photos (hard links where possible, else copies)."""
    folder.mkdir(parents=True)
    for i, photo in enumerate(photos):
        target = folder / f"{i:06d}_{photo.name}"
        try:
            os.link(photo, target)
        except OSError:
            shutil.copy2(photo, target)


def model_config(args: argparse.Namespace, model: Path) -> dict[str, object]:
    return {"name": str(model), "precision": args.precision, "allow_download": False}


# -- (b) photosearch, in a child process ------------------------------------------------------------------------
def index_child(spec: dict[str, str]) -> None:
    """Runs in the child: open a fresh library, load the model, index the folder; prints one JSON line."""
    from photosearch.config import Config, validated
    from photosearch.library import Library

    config = validated(Config, {"data_dir": spec["data_dir"], "model": json.loads(spec["model"])})
    started = time.perf_counter()
    with Library.open(config) as library:
        embedder = library.embedder()  # one-time startup, not part of the rate: the model and a new Chroma store
        library.store()
        loaded = time.perf_counter()
        report = library.index([Path(spec["folder"])])
        done = time.perf_counter()
    precision = getattr(embedder, "precision", None)
    hwm = next((line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:")), "0")  # fmt: skip
    print("CHILD " + json.dumps({
        "load_s": loaded - started, "index_s": done - loaded, "embedded": report.embedded, "failed": report.failed,
        "precision": getattr(precision, "name", "?"), "precision_reason": getattr(precision, "reason", "?"),
        "batch_size": embedder.preferred_batch_size, "vm_hwm_mb": int(hwm) / 1024,
    }))  # fmt: skip


def run_photosearch(args: argparse.Namespace, model: Path, folder: Path, data_dir: Path) -> dict[str, float | str]:
    spec = {"data_dir": str(data_dir), "folder": str(folder), "model": json.dumps(model_config(args, model))}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--index-child", json.dumps(spec)], stdout=out, stderr=err)
        # wait4 on this very child gives its own peak RSS (ru_maxrss), not the largest of all children so far.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"photosearch index run failed ({proc.returncode}):\n{stderr[-4000:]}")
    result: dict[str, float | str] = json.loads(next(line[6:] for line in stdout.splitlines()
                                                     if line.startswith("CHILD ")))  # fmt: skip
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def stored_vectors(args: argparse.Namespace, model: Path, data_dir: Path, paths: list[Path]) -> np.ndarray:
    from photosearch.config import Config, validated
    from photosearch.library import Library

    config = validated(Config, {"data_dir": str(data_dir), "model": model_config(args, model)})
    with Library.open(config) as library:
        ids = [library.catalog.by_path(path).id for path in paths]  # type: ignore[union-attr]
        vectors = library.stores().photo_vectors(ids)
        return np.stack([vectors[i] for i in ids])


# -- (a) the per-image reference loop and (c) the model alone ----------------------------------------------------
def reference_loop(model: Path, paths: list[Path]) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(photos/s, unit vectors, pixel_values) of the CLIP README's loop over ``paths``."""
    import torch
    from PIL import Image, ImageOps
    from transformers import CLIPModel, CLIPProcessor

    clip = CLIPModel.from_pretrained(str(model)).eval()
    processor = CLIPProcessor.from_pretrained(str(model))
    vectors, pixels = [], []
    with torch.inference_mode():  # (warm-up on the first photo, untimed: first calls build kernels)
        clip.get_image_features(**processor(images=Image.open(paths[0]), return_tensors="pt"))
        start = time.perf_counter()
        for path in paths:
            image = ImageOps.exif_transpose(Image.open(path))
            inputs = processor(images=image, return_tensors="pt")
            features = clip.get_image_features(**inputs)
            features = features.pooler_output if hasattr(features, "pooler_output") else features
            vectors.append(torch.nn.functional.normalize(features, dim=-1)[0].numpy())
            pixels.append(inputs["pixel_values"][0].numpy())
        elapsed = time.perf_counter() - start
    return len(paths) / elapsed, np.stack(vectors), pixels


def load_embedder_for(args: argparse.Namespace, model: Path):
    from photosearch.config import ModelConfig, validated
    from photosearch.models.embedder import load_embedder

    return load_embedder(validated(ModelConfig, model_config(args, model)))


def fast_path_input(embedder, path: Path) -> np.ndarray:
    """The 224x224 uint8 input photosearch's indexer makes of a photo (reduced JPEG decode, then prepare)."""
    from photosearch.indexing.examine import DECODE_MARGIN
    from photosearch.indexing.imaging import decode_photo

    min_side = int(np.ceil(DECODE_MARGIN * embedder.input_side))
    photo = decode_photo(path.read_bytes(), name=str(path), max_pixels=10**9, min_side=min_side)
    return np.asarray(embedder.prepare(photo.image, (photo.facts.width, photo.facts.height)))


def model_alone(args: argparse.Namespace, embedder, photos: list[Path]) -> float:
    """Photos/s of the loaded image tower on ready tensors, in batches of the size the indexer uses."""
    import torch

    from photosearch.models.preprocess import pixel_batch

    batch = embedder.preferred_batch_size
    prepared = [fast_path_input(embedder, path) for path in photos[:batch]]
    prepared = (prepared * batch)[:batch]
    ready = pixel_batch(prepared, embedder._preprocess, embedder.device, embedder.precision.dtype)
    rounds = 2 if args.smoke else max(3, min(10, 320 // batch))
    with torch.inference_mode():
        embedder._model.get_image_features(pixel_values=ready)  # warm-up
        start = time.perf_counter()
        for _ in range(rounds):
            embedder._model.get_image_features(pixel_values=ready)
        elapsed = time.perf_counter() - start
    return rounds * batch / elapsed


def decode_alone(embedder, photos: list[Path]) -> float:
    """Photos/s of the indexer's CPU work before the model (read, hash, reduced decode, prepare) on all cores.

    The same calls as examine.examine, in as many threads as it uses. With the model (c) it bounds (b): both
    take every core in turn, so a photo costs at least 1/c + 1/d seconds of the machine."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from photosearch.indexing.examine import decode_workers

    def one(path: Path) -> None:
        hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        fast_path_input(embedder, path)

    sample = photos[: max(8, min(len(photos), 160))]
    with ThreadPoolExecutor(decode_workers()) as pool:
        list(pool.map(one, sample[:4]))  # warm-up
        start = time.perf_counter()
        list(pool.map(one, sample))
        elapsed = time.perf_counter() - start
    return len(sample) / elapsed


def pixel_error(embedder, paths: list[Path], reference_pixels: list[np.ndarray]) -> tuple[float, float]:
    """Mean and 99.9th percentile |difference|, in 8-bit levels, of photosearch's model input vs the processor's."""
    params = embedder._preprocess
    std = np.array(params.std, dtype=np.float32)[:, None, None]
    mean = np.array(params.mean, dtype=np.float32)[:, None, None]
    diffs = []
    for path, expected in zip(paths, reference_pixels, strict=True):
        ours = fast_path_input(embedder, path).transpose(2, 0, 1).astype(np.float32)
        theirs = (expected * std + mean) / params.rescale_factor
        diffs.append(np.abs(ours - theirs))
    stacked = np.stack(diffs)
    return float(stacked.mean()), float(np.percentile(stacked, 99.9))


def fidelity(stored: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosines = np.sum(stored * reference, axis=1)
    others = reference @ reference.T
    off_diagonal = others[~np.eye(len(reference), dtype=bool)]
    centre = reference.mean(axis=0)
    a, b = stored - centre, reference - centre
    centred = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cos_mean": float(cosines.mean()), "cos_min": float(cosines.min()),
            "baseline_other_photos": float(off_diagonal.mean()) if len(off_diagonal) else float("nan"),
            "centred_cos_mean": float(centred.mean()), "centred_cos_min": float(centred.min())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=400, help="photos indexed by photosearch (default 400)")
    parser.add_argument(
        "--reference-photos",
        type=int,
        default=40,
        help="photos through the slow per-image loop, also the fidelity sample (default 40)",
    )
    parser.add_argument("--folder", type=Path, help="use the JPEGs of this folder instead of generated photos")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "photosearch-bench-index",
        help="where generated photos and the model are kept between runs",
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument(
        "--backend",
        choices=("embedded", "servers"),
        default="embedded",
        help="embedded: (a) to (d) in a data directory; servers: workers sharing throwaway "
        "PostgreSQL and Chroma servers, and the claims' cost (index_servers.py)",
    )
    parser.add_argument("--workers", default="1,2", help="servers: the worker counts compared (default 1,2)")
    parser.add_argument("--claim-rows", type=int, default=10_000, help="servers: pending rows claimed (default 10,000)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few small photos: for CI (< 60 s)")
    parser.add_argument("--index-child", help=argparse.SUPPRESS)
    args = parser.parse_args()  # fmt: skip
    if args.index_child:
        index_child(json.loads(args.index_child))
        return
    scratch = tempfile.TemporaryDirectory(prefix="bench-index-")
    try:
        if args.smoke:
            args.photos, args.reference_photos = min(args.photos, 8), min(args.reference_photos, 4)
            args.claim_rows = min(args.claim_rows, 500)
            args.cache = Path(scratch.name) / "cache"
        run(args, Path(scratch.name))
    finally:
        scratch.cleanup()


def run(args: argparse.Namespace, scratch: Path) -> None:
    args.cache.mkdir(parents=True, exist_ok=True)
    model = make_model(args.cache / ("model-clip-tiny-random" if args.smoke else "model-clip-vit-b32-random"),
                       args.smoke)  # fmt: skip
    photos = photos_for_run(args)
    reference_paths = photos[: min(args.reference_photos, len(photos))]
    megabytes = sum(p.stat().st_size for p in photos) / len(photos) / 1e6
    for photo in photos:  # into the page cache: every measurement below reads the same warm files
        photo.read_bytes()
    folder = scratch / "library"
    link_folder(photos, folder)
    run_paths = sorted(folder.iterdir())[: len(reference_paths)]
    if args.backend == "servers":
        from index_servers import report, run_servers

        print(f"photos: {len(photos)} ({megabytes:.1f} MB each on average), model: {model}", flush=True)
        report(args, run_servers(args, model, folder, scratch), f"{cpu_model()}, {os.cpu_count()} cores", megabytes)
        return

    print(f"photos: {len(photos)} ({megabytes:.1f} MB each on average), model: {model}", flush=True)
    embedder = load_embedder_for(args, model)
    precision, batch = embedder.precision.name, embedder.preferred_batch_size
    c_rate = model_alone(args, embedder, photos)
    print(f"(c) model alone, {precision}, batches of {batch}: {c_rate:.1f} photos/s", flush=True)
    d_rate = decode_alone(embedder, photos)
    bound = 1 / (1 / c_rate + 1 / d_rate)
    print(f"(d) read + hash + decode + prepare alone, all cores: {d_rate:.1f} photos/s; with (c) they allow at most "
          f"{bound:.1f} photos/s", flush=True)  # fmt: skip
    b = run_photosearch(args, model, folder, scratch / "data")
    if b["embedded"] != len(photos) or b["failed"]:
        sys.exit(f"photosearch embedded {b['embedded']} of {len(photos)} photos ({b['failed']} failed)")
    b_rate = len(photos) / float(b["index_s"])
    b_total = len(photos) / (float(b["index_s"]) + float(b["load_s"]))
    print(f"(b) photosearch Library.index: {b_rate:.1f} photos/s ({b_total:.1f} including the startup of "
          f"{float(b['load_s']):.1f} s), peak RSS {float(b['peak_rss_mb']):.0f} MB, {b['precision']}: "
          f"{b['precision_reason']}", flush=True)  # fmt: skip
    a_rate, reference, reference_pixels = reference_loop(model, run_paths)
    print(f"(a) per-image reference loop: {a_rate:.2f} photos/s ({len(run_paths)} photos)", flush=True)
    stored = stored_vectors(args, model, scratch / "data", run_paths)
    fid = fidelity(stored, reference)
    pix_mean, pix_p999 = pixel_error(embedder, run_paths, reference_pixels)

    result = {
        "photos": len(photos), "reference_photos": len(run_paths), "photo_mb": megabytes,
        "a_photos_per_s": a_rate, "b_photos_per_s": b_rate, "b_with_load_photos_per_s": b_total,
        "c_photos_per_s": c_rate, "b_over_a": b_rate / a_rate, "b_over_c": b_rate / c_rate,
        "d_photos_per_s": d_rate, "bound_photos_per_s": bound, "b_over_bound": b_rate / bound,
        "peak_rss_mb": b["peak_rss_mb"], "precision": precision, "batch_size": batch,
        **fid, "pixel_diff_mean_levels": pix_mean, "pixel_diff_p99.9_levels": pix_p999,
        "torch_threads_default": _torch_threads(),
    }  # fmt: skip
    print()
    for key, value in result.items():
        print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    command = ("flock /tmp/photosearch-bench.lock python benchmarks/bench_index.py " + " ".join(sys.argv[1:])).strip()
    print(
        "\n| date | machine | photos | (a) per-image loop | (b) photosearch | (c) model alone | (d) decode alone "
        "| bound | b/a | b/c | b/bound | peak RSS (b) | cosine mean / min | precision | command |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {datetime.now():%Y-%m-%d} | {cpu_model()}, {os.cpu_count()} cores | {len(photos)} x "
          f"{megabytes:.1f} MB JPEG (a: {len(run_paths)}) | {a_rate:.2f}/s | {b_rate:.1f}/s | {c_rate:.1f}/s "
          f"| {d_rate:.1f}/s | {bound:.1f}/s | {b_rate / a_rate:.1f}x | {b_rate / c_rate:.0%} | {b_rate / bound:.0%} "
          f"| {float(b['peak_rss_mb']):.0f} MB "
          f"| {fid['cos_mean']:.4f} / {fid['cos_min']:.4f} | {precision} | `{command}` |")  # fmt: skip
    print("RESULT " + json.dumps(result))


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
