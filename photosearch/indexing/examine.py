"""The per-file work of an index run, done in the decode threads: read, hash, and decode and prepare the photo
for the model only when no stored vector can be reused for its bytes."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from photosearch.errors import ImageError
from photosearch.facts import PhotoFacts
from photosearch.indexing.planner import Work
from photosearch.models.protocols import Embedder
from photosearch.stores.index import Location
from photosearch.stores.schema import PhotoStatus

DECODE_MARGIN = 1.5  # JPEGs decode at a reduced scale down to this times the model's input side


@dataclass(frozen=True)
class Outcome:
    work: Work
    digest: str | None = None
    facts: PhotoFacts | None = None  # decoded: its prepared pixels go to the model
    pixels: np.ndarray | None = None  # the model's input (embedder.prepare), ~150 KB; the decoded image is gone
    error: str | None = None  # could not be read or decoded
    vanished: bool = False  # deleted between the scan and the read
    queued: bool = False  # needs the model, left to whichever worker claims it (shared stores, queue_only)


def location(work: Work) -> Location:
    f = work.file
    return Location(f.path, work.root.id, work.folder, f.size, f.mtime_ns)


def examine(
    work: Work, reusable: Callable[[str], bool], embedder: Callable[[], Embedder], max_pixels: int, decode: bool = True
) -> Outcome:
    """Read and hash a file; decode and prepare it only when no existing vector can be reused for its bytes.

    All but the catalog lookup releases the GIL. The first photo to decode loads the model (once, locked). Without
    ``decode`` a photo that needs the model is only hashed (``queued``): a shared library's scan leaves the
    decoding to the worker that claims it."""
    from photosearch.indexing.imaging import decode_photo  # PIL and the decoders: a run with nothing new needs none

    try:
        data = work.file.path.read_bytes()
    except FileNotFoundError:
        return Outcome(work, vanished=True)
    except OSError as exc:
        return Outcome(work, error=f"cannot read file: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if same_bytes_indexed(work, digest):
        return Outcome(work, digest)  # touched, same bytes: keep the vector
    if reusable(digest):
        return Outcome(work, digest)  # a move or a duplicate: the model is not needed
    if failed_before(work, digest):
        # The bytes that failed last run: they most likely fail again, which must not cost every run of a library
        # with one broken file a model load (nor, on shared stores, a trip through the queue). Decodable now (a
        # decoder installed since, a larger max_pixels), it goes on.
        try:
            decode_photo(data, name=str(work.file.path), max_pixels=max_pixels, min_side=1)
        except ImageError as exc:
            return Outcome(work, digest, error=exc.reason)
    if not decode:
        return Outcome(work, digest, queued=True)
    model = embedder()
    try:
        # JPEGs decode at the reduced DCT scale that keeps the shorter side >= 1.5x the model's input side
        # (1/8 of a 12 MP photo: 375 px for CLIP's 224). That halves the decode; the entropy decoding left
        # (~25 ms for 4 MB) is the floor. The margin leaves the anti-aliasing to the final bicubic resize:
        # with the DCT scaling alone doing it (decodes just above 224 px), photos differ from a full decode
        # by 2-5 levels on average, against 0.2 with it (exif samples; see benchmarks/bench_index.py).
        min_side = math.ceil(DECODE_MARGIN * model.input_side)
        photo = decode_photo(data, name=str(work.file.path), max_pixels=max_pixels, min_side=min_side)
    except ImageError as exc:
        return Outcome(work, digest, error=exc.reason)
    pixels = model.prepare(photo.image, photo.size)
    return Outcome(work, digest, facts=photo.facts, pixels=pixels)


def failed_before(work: Work, digest: str) -> bool:
    state = work.state
    return state is not None and state.status == PhotoStatus.FAILED and state.content_hash == digest


def same_bytes_indexed(work: Work, digest: str | None) -> bool:
    state = work.state
    return state is not None and state.status == PhotoStatus.INDEXED and state.content_hash == digest


def decode_workers() -> int:
    """One decode thread per CPU this process may use (capped): they share the cores with the model."""
    try:
        cpus = len(os.sched_getaffinity(0))  # honours taskset and cgroup cpusets, unlike os.cpu_count()
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))
