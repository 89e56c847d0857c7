"""Thumbnails made on demand, upright (EXIF orientation applied), cached on disk by content hash.

The cache key is the photo's content hash and the size, so an edited photo gets a new thumbnail and a moved
one keeps its old one; files are written to a temporary name and renamed, so a reader never sees half a file.
Also the one place that decides whether a catalog path may be served at all (``servable_path``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from photosearch.errors import ImageError, PhotoNotFoundError
from photosearch.indexing.imaging import decode_photo
from photosearch.stores.catalog import PhotoRecord


def servable_path(record: PhotoRecord, roots: Sequence[Path]) -> Path:
    """The file behind a catalog row, if it really lies inside a library root.

    Only catalog ids reach this point (no request parameter is ever a path), and the resolved path must
    still be inside a resolved root: a symlink in the library that points elsewhere is not followed out.
    """
    real = record.path.resolve()
    if not any(real == root.resolve() or root.resolve() in real.parents for root in roots):
        raise PhotoNotFoundError(f"photo {record.id} is not inside a library folder")
    if not real.is_file():
        raise PhotoNotFoundError(f"photo {record.id} is no longer on disk")
    return real


def thumbnail(record: PhotoRecord, roots: Sequence[Path], size: int, cache_dir: Path, max_pixels: int) -> Path:
    """Path of a JPEG at most ``size`` pixels on its longest side, made now if not cached."""
    key = record.content_hash or f"id{record.id}-{record.size}-{record.mtime_ns}"
    cached = cache_dir / key[:2] / f"{key}-{size}.jpg"
    if cached.is_file():
        return cached
    source = servable_path(record, roots)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ImageError(str(source), f"cannot read file: {exc.strerror or exc}") from None
    image = decode_photo(data, name=str(source), max_pixels=max_pixels, min_side=size).image
    image.thumbnail((size, size))
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="JPEG", quality=85, optimize=True)
        os.replace(tmp, cached)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return cached
