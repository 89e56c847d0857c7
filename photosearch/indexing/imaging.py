"""Image decoding: the bytes of one file in, an upright RGB PIL image plus the photo's facts out.

Every failure caused by the input (empty, not an image, truncated, corrupt, too large) surfaces as
``ImageError(name, reason)``; nothing else escapes for bad data. Malformed EXIF never fails a decode: the
affected facts are ``None`` and the pixels still decode. Safe to call from several threads at once.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

# The plugins are imported explicitly so Image.open never has to run Image.init() (which imports every
# plugin) on first use, and so the isinstance checks below have their classes.
from PIL import (
    BmpImagePlugin,  # noqa: F401  (registers BMP)
    ExifTags,
    GifImagePlugin,  # noqa: F401  (registers GIF)
    Image,
    JpegImagePlugin,
    PngImagePlugin,  # noqa: F401  (registers PNG)
    TiffImagePlugin,  # noqa: F401  (registers TIFF)
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401  (registers WEBP)
)

from photosearch.errors import ImageError
from photosearch.facts import PhotoFacts as PhotoFacts  # re-exported: what decoding gives
from photosearch.indexing.extensions import SUPPORTED_EXTENSIONS as SUPPORTED_EXTENSIONS  # re-exported

# PIL's decompression-bomb guard is a process-wide global: MAX_IMAGE_PIXELS is read by Image.open and again
# while GIF/TIFF/MPO frames load, warning above it and raising above twice it. Changing it per call would
# race between threads, and warnings.catch_warnings (to hide the warning) is process-wide and not
# thread-safe either. So it is switched off once, here, and _check_pixels enforces the caller's
# index.max_image_pixels on the header size before any pixel is decoded. Should other code turn PIL's
# guard back on, its DecompressionBombError still maps to the same "image too large" ImageError.
Image.MAX_IMAGE_PIXELS = None

# Only these decoders ever see a file. Besides matching SUPPORTED_EXTENSIONS this keeps hostile or
# misnamed files away from exotic plugins (EPS would even start Ghostscript).
_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
_HEIF_FORMATS = ("HEIF",)

# EXIF orientation -> the transposition that makes the image upright (the table ImageOps.exif_transpose
# uses). 5..8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# (date tag, its UTC-offset tag), in order of preference.
_DATE_TAGS = (
    (ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),
    (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),
    (ExifTags.Base.DateTime, ExifTags.Base.OffsetTime),
)
_DATE_RE = re.compile(r"(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?")
_OFFSET_RE = re.compile(r"([+-])(\d{1,2}):?(\d{2})")

T = TypeVar("T")


@dataclass(frozen=True)
class DecodedPhoto:
    image: Image.Image  # mode "RGB", upright, fully loaded, independent of the input bytes
    facts: PhotoFacts
    size: tuple[int, int]  # upright, full resolution (``image`` is smaller when decoded at a reduced scale)


def decode_photo(data: bytes, *, name: str, max_pixels: int, min_side: int | None = None) -> DecodedPhoto:
    """Decode ``data`` to an upright RGB image; ``min_side`` lets JPEGs decode at 1/2, 1/4 or 1/8 size."""
    with _decoding(name):
        image = _open(data, name)
        _check_pixels(image, name, max_pixels)
        facts, orientation = _facts(image)  # before draft(), which shrinks image.size
        size = _upright_size(image.size, orientation)
        if min_side is not None:
            _draft(image, min_side)
        image.load()
        return DecodedPhoto(image=_upright_rgb(image, orientation), facts=facts, size=size)


def read_facts(data: bytes, *, name: str) -> PhotoFacts:
    """The photo's facts from its header and EXIF alone; no pixel is decoded and no size limit applies."""
    with _decoding(name):
        return _facts(_open(data, name))[0]


@contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Turn whatever a decoder raises on malformed data (OSError, SyntaxError, ValueError, struct.error,
    IndexError, ZeroDivisionError, ...) into ImageError. KeyboardInterrupt and SystemExit pass through."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large: {_one_line(exc)}") from exc
    except MemoryError as exc:
        raise ImageError(name, "not enough memory to decode the image") from exc
    except Exception as exc:
        raise ImageError(name, f"truncated or corrupt image data: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    formats = _FORMATS
    if data[4:8] == b"ftyp":  # an ISO-BMFF container (HEIF/HEIC); its first box is "ftyp"
        _register_heif(name)
        formats = _HEIF_FORMATS
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (unrecognised format)") from None


_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif(name: str) -> None:
    """Import pillow-heif and register its opener once, on the first HEIF-looking file (it is not cheap to
    import and most libraries hold none). The lock keeps concurrent first calls from registering twice."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if not _heif_registered:
            try:
                import pillow_heif
            except ImportError:
                raise ImageError(name, "HEIF image, but pillow-heif is not installed") from None
            pillow_heif.register_heif_opener()
            _heif_registered = True


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"image too large: {width}x{height} = {width * height} pixels "
            f"exceeds index.max_image_pixels ({max_pixels})",
        )


def _draft(image: Image.Image, min_side: int) -> None:
    """Let libjpeg scale the DCT by the largest of 1/8, 1/4, 1/2 that keeps the shorter side >= min_side.

    draft() picks the largest of 8/4/2/1 not above min(w // req_w, h // req_h); requesting
    (w // scale, h // scale) makes that exactly ``scale``, since w // (w // s) lies in [s, 2s).
    The decoded size is then ceil(w / scale) x ceil(h / scale).
    """
    if not isinstance(image, JpegImagePlugin.JpegImageFile):
        return
    width, height = image.size
    short = min(width, height)
    for scale in (8, 4, 2):
        if short >= scale and -(-short // scale) >= min_side:
            image.draft("RGB", (width // scale, height // scale))
            return


def _upright_rgb(image: Image.Image, orientation: int | None) -> Image.Image:
    """Apply the orientation, then plain convert("RGB") (what the reference CLIP processor does), so the
    result is always a new, independent image."""
    method = _TRANSPOSE.get(orientation or 1)
    upright = image.transpose(method) if method is not None else image
    if upright.mode == "RGB" and upright is not image:
        return upright
    return upright.convert("RGB")


def _facts(image: Image.Image) -> tuple[PhotoFacts, int | None]:
    """The facts, plus the orientation still to apply to the pixels."""
    exif = _safely(lambda: Image.Image.getexif(image)) or Image.Exif()
    sub_ifd: Mapping[int, Any] = _safely(lambda: exif.get_ifd(ExifTags.IFD.Exif)) or {}
    gps: Mapping[int, Any] = _safely(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo)) or {}
    orientation = _safely(lambda: _orientation(exif.get(ExifTags.Base.Orientation)))
    width, height = _upright_size(image.size, orientation)
    lat, lon = _safely(lambda: _gps(gps)) or (None, None)
    facts = PhotoFacts(
        width=width,
        height=height,
        format="JPEG" if image.format == "MPO" else image.format or "unknown",
        taken_at=_safely(lambda: _taken_at(exif, sub_ifd)),
        camera_make=_safely(lambda: _text(exif.get(ExifTags.Base.Make))),
        camera_model=_safely(lambda: _text(exif.get(ExifTags.Base.Model))),
        gps_lat=lat,
        gps_lon=lon,
        # pillow-heif has already rotated HEIF pixels and reset the EXIF tag to 1; it keeps the original.
        orientation=_orientation(image.info.get("original_orientation")) or orientation,
    )
    return facts, orientation


def _upright_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _safely(compute: Callable[[], T]) -> T | None:
    """Malformed EXIF raises all sorts of things on access; a fact that cannot be read is just absent."""
    try:
        return compute()
    except Exception:
        return None


def _orientation(value: object) -> int | None:
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _text(value: object) -> str | None:
    """EXIF ASCII is NUL-terminated and often space-padded; some writers store it as bytes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.split("\x00", 1)[0].strip() or None


def _taken_at(exif: Mapping[int, Any], sub_ifd: Mapping[int, Any]) -> datetime | None:
    for date_tag, offset_tag in _DATE_TAGS:
        # The dates belong in the Exif sub-IFD (DateTime in IFD0), but writers misplace them.
        found = _datetime(_text(sub_ifd.get(date_tag) or exif.get(date_tag)))
        if found is not None:
            zone = _zone(_text(sub_ifd.get(offset_tag) or exif.get(offset_tag)))
            return found.replace(tzinfo=zone) if zone is not None else found
    return None


def _datetime(text: str | None) -> datetime | None:
    match = _DATE_RE.match(text or "")
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups("0"))
    try:  # "0000:00:00 00:00:00" and other placeholders are not dates
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _zone(text: str | None) -> timezone | None:
    match = _OFFSET_RE.fullmatch(text or "")
    if match is None:
        return None
    sign = -1 if match[1] == "-" else 1
    try:
        return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))
    except ValueError:  # |offset| >= 24h
        return None


def _gps(gps: Mapping[int, Any]) -> tuple[float | None, float | None]:
    lat = _coordinate(gps.get(2), _text(gps.get(1)), "N", "S", 90.0)
    lon = _coordinate(gps.get(4), _text(gps.get(3)), "E", "W", 180.0)
    return (lat, lon) if lat is not None and lon is not None else (None, None)


def _coordinate(value: object, ref: str | None, positive: str, negative: str, limit: float) -> float | None:
    """(degrees, minutes, seconds) rationals, or fewer parts, to signed decimal degrees; None if nonsense."""
    if ref is None or ref.upper() not in (positive, negative):
        return None
    parts = value if isinstance(value, tuple | list) else (value,)
    numbers = [float(part) for part in parts]  # a 0/0 rational gives nan, rejected below
    if not 1 <= len(numbers) <= 3 or not all(math.isfinite(n) and n >= 0 for n in numbers):
        return None
    degrees = sum(n / 60.0**i for i, n in enumerate(numbers))
    if degrees > limit:
        return None
    return -degrees if ref.upper() == negative else degrees
