"""Query images (`similar` to a file, or to an upload), decoded like any photo: EXIF orientation applied, the
decompression-bomb bound (index.max_image_pixels) held, every bad input an ImageError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from photosearch.errors import ImageError

if TYPE_CHECKING:
    from PIL import Image


def image_file(path: Path, max_pixels: int) -> Image.Image:
    from photosearch.indexing.imaging import decode_photo  # PIL: only for a query that has an image

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read file: {exc.strerror or exc}") from None
    return decode_photo(data, name=str(path), max_pixels=max_pixels).image


def image_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    from photosearch.indexing.imaging import decode_photo

    return decode_photo(data, name=name, max_pixels=max_pixels).image
