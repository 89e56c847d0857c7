"""imaging: decode bytes to an upright RGB image plus facts, with ImageError for every bad input."""

from __future__ import annotations

import io
import math
import random
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps

from photosearch.errors import ImageError
from photosearch.indexing.imaging import SUPPORTED_EXTENSIONS, DecodedPhoto, PhotoFacts, decode_photo, read_facts

LIMIT = 150_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".heic", ".heif", ".tiff"}


def decode(data: bytes, *, max_pixels: int = LIMIT, min_side: int | None = None) -> DecodedPhoto:
    return decode_photo(data, name="photo.jpg", max_pixels=max_pixels, min_side=min_side)


def thumb(image: Image.Image) -> np.ndarray:
    """32x32 grey, normalised to zero mean and unit spread: compares layout, not exposure (the
    orientation samples' _1 files are brighter than the rest)."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    return (pixels - pixels.mean()) / pixels.std()


def mad(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of the normalised thumbnails: ~0.1 for the same picture, > 0.5 if turned."""
    return float(np.abs(thumb(a) - thumb(b)).mean())


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """Distinct in every direction (red across, green down, a dark block top-left) so flips show."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, 255 - (x + y) / 2], axis=-1).astype(np.uint8)
    pixels[: height // 4, : width // 4] = 0
    return Image.fromarray(pixels)


def jpeg_with_exif(image: Image.Image, exif: Image.Exif) -> bytes:
    return encode(image, "JPEG", exif=exif.tobytes(), quality=90)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG header claiming width x height with no pixel data: cheap to make, fails if decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def samples(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def raw_exif(path: Path) -> Image.Exif:
    with Image.open(path) as image:
        return image.getexif()


# ---------------------------------------------------------------- every real sample


def test_supported_extensions_are_lower_case_with_dot():
    assert {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"} <= SUPPORTED_EXTENSIONS
    assert {".heic", ".heif", ".hif"} <= SUPPORTED_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in SUPPORTED_EXTENSIONS)


def test_every_sample_decodes_and_read_facts_agrees(exif_samples):
    paths = samples(exif_samples)
    assert len(paths) > 90
    for path in paths:
        data = path.read_bytes()
        decoded = decode_photo(data, name=str(path), max_pixels=LIMIT)
        assert decoded.image.mode == "RGB", path
        assert type(decoded.image) is Image.Image, path  # loaded, holds no file or decoder state
        assert decoded.image.size == (decoded.facts.width, decoded.facts.height), path
        assert read_facts(data, name=str(path)) == decoded.facts, path


def test_invalid_and_corrupted_samples_still_decode(exif_samples):
    # jpg/invalid/* carry XMP packets that sent EXIF parsers into loops; their pixel data is intact.
    for path in sorted((exif_samples / "jpg" / "invalid").glob("*.jpg")):
        with Image.open(path) as reference:
            expected = ImageOps.exif_transpose(reference).convert("RGB")
        assert decode(path.read_bytes()).image.tobytes() == expected.tobytes(), path
    # corrupted.jpg's entropy-coded data ends early: libjpeg pads the last rows grey and PIL does not raise,
    # because the file still ends in an EOI marker. The photo is usable, so it decodes.
    decoded = decode((exif_samples / "jpg" / "corrupted.jpg").read_bytes())
    pixels = np.asarray(decoded.image)
    assert decoded.image.size == (3648, 2736)
    assert np.all(pixels[-1] == 128) and pixels[0].std() > 10


def test_malformed_exif_samples_decode(exif_samples):
    for path in sorted((exif_samples / "jpg" / "tests").glob("*.jp*g")):
        with Image.open(path) as reference:
            size = reference.size
        decoded = decode(path.read_bytes())
        assert sorted(decoded.image.size) == sorted(size), path


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize("family", ["landscape", "portrait"])
def test_all_eight_orientations_come_out_upright_and_alike(exif_samples, family):
    folder = exif_samples / "jpg" / "orientation"
    decoded = {n: decode((folder / f"{family}_{n}.jpg").read_bytes()) for n in range(1, 9)}
    upright = decoded[1].image
    for n, photo in decoded.items():
        assert photo.facts.orientation == n
        assert photo.image.size == upright.size == (photo.facts.width, photo.facts.height)
        assert mad(photo.image, upright) < 0.2, n
    # The check can fail: without the transposition the stored pixels are clearly different.
    for n in range(2, 9):
        with Image.open(folder / f"{family}_{n}.jpg") as raw:
            assert mad(raw.convert("RGB").resize(upright.size), upright) > 0.5, n


def test_orientation_matches_pillow_exif_transpose(exif_samples):
    for n in range(1, 9):
        path = exif_samples / "jpg" / "orientation" / f"portrait_{n}.jpg"
        with Image.open(path) as reference:
            expected = ImageOps.exif_transpose(reference).convert("RGB")
        assert decode(path.read_bytes()).image.tobytes() == expected.tobytes(), n


def test_invalid_orientation_value_is_ignored():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 9
    decoded = decode(jpeg_with_exif(gradient(40, 30), exif))
    assert decoded.facts.orientation is None
    assert decoded.image.size == (40, 30)


# ---------------------------------------------------------------- facts from real cameras


def dms_to_degrees(value, ref: str) -> float:
    degrees = sum(Fraction(part.numerator, part.denominator) / 60**i for i, part in enumerate(value))
    return float(-degrees if ref in ("S", "W") else degrees)


@pytest.mark.parametrize(
    ("relative", "lat_sign", "lon_sign"),
    [("jpg/gps/DSCN0010.jpg", 1, 1), ("jpg/Kodak_CX7530.jpg", -1, 1), ("jpg/hdr/iphone_hdr_NO.jpg", 1, -1)],
)
def test_gps_is_signed_decimal_degrees(exif_samples, relative, lat_sign, lon_sign):
    path = exif_samples / relative
    gps = raw_exif(path).get_ifd(ExifTags.IFD.GPSInfo)
    facts = read_facts(path.read_bytes(), name=relative)
    assert facts.gps_lat is not None and facts.gps_lon is not None
    assert facts.gps_lat == pytest.approx(dms_to_degrees(gps[2], gps[1]), abs=1e-9)
    assert facts.gps_lon == pytest.approx(dms_to_degrees(gps[4], gps[3]), abs=1e-9)
    assert math.copysign(1, facts.gps_lat) == lat_sign and math.copysign(1, facts.gps_lon) == lon_sign
    assert 0 < abs(facts.gps_lat) <= 90 and 0 < abs(facts.gps_lon) <= 180


def test_dscn0010_is_in_tuscany(exif_samples):
    facts = read_facts((exif_samples / "jpg/gps/DSCN0010.jpg").read_bytes(), name="DSCN0010.jpg")
    assert 43 < facts.gps_lat < 44 and 11 < facts.gps_lon < 12  # type: ignore[operator]
    assert (facts.camera_make, facts.camera_model) == ("NIKON", "COOLPIX P6000")


def test_canon_make_model_and_original_date(exif_samples):
    facts = read_facts((exif_samples / "jpg" / "Canon_40D.jpg").read_bytes(), name="Canon_40D.jpg")
    assert (facts.camera_make, facts.camera_model) == ("Canon", "Canon EOS 40D")
    # DateTimeOriginal (the shot), not DateTime (2008:07:31, when the file was last edited).
    assert facts.taken_at == datetime(2008, 5, 30, 15, 56, 1)
    assert (facts.width, facts.height, facts.format, facts.orientation) == (100, 68, "JPEG", 1)
    assert facts.gps_lat is None and facts.gps_lon is None


def test_date_falls_back_to_datetime(exif_samples):
    path = exif_samples / "jpg" / "Canon_40D_photoshop_import.jpg"
    assert raw_exif(path).get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) is None
    assert read_facts(path.read_bytes(), name="x").taken_at == datetime(2008, 7, 31, 10, 5, 49)


def test_offset_time_original_gives_a_time_zone(exif_samples):
    phone = read_facts((exif_samples / "jpg/mobile/HMD_Nokia_8.3_5G.jpg").read_bytes(), name="x")
    assert phone.taken_at == datetime(2022, 8, 14, 14, 12, 31, tzinfo=timezone(timedelta(hours=3)))
    assert phone.taken_at.utcoffset() == timedelta(hours=3)  # type: ignore[union-attr]
    iphone = read_facts((exif_samples / "heic/IMG_5195.HEIC").read_bytes(), name="x")
    assert iphone.taken_at is not None and iphone.taken_at.utcoffset() == timedelta(hours=-5)


def test_strings_lose_nul_padding_and_whitespace(exif_samples):
    sony = read_facts((exif_samples / "jpg/exif-org/sony-d700.jpg").read_bytes(), name="x")
    assert raw_exif(exif_samples / "jpg/exif-org/sony-d700.jpg")[ExifTags.Base.Make] == "SONY\x00"
    assert (sony.camera_make, sony.camera_model) == ("SONY", "DSC-D700")
    pentax = read_facts((exif_samples / "jpg/Pentax_K10D.jpg").read_bytes(), name="x")
    assert (pentax.camera_make, pentax.camera_model) == ("PENTAX Corporation", "PENTAX K10D")


def test_no_exif_gives_empty_facts():
    facts = read_facts(encode(gradient(30, 20), "PNG"), name="x.png")
    assert facts == PhotoFacts(30, 20, "PNG", None, None, None, None, None, None)


def test_synthetic_exif_digitized_date_and_nonsense_gps():
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "   "
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeDigitized] = "2020:02:29 23:59:58"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (10.0, 30.0, 0.0)})
    facts = decode(jpeg_with_exif(gradient(40, 30), exif)).facts
    assert facts.camera_make is None
    assert facts.taken_at == datetime(2020, 2, 29, 23, 59, 58)
    assert facts.gps_lat is None and facts.gps_lon is None  # latitude 95 is nonsense, so both go

    gps[2] = (45.0, 30.0, 0.0)
    facts = decode(jpeg_with_exif(gradient(40, 30), exif)).facts
    assert (facts.gps_lat, facts.gps_lon) == (pytest.approx(45.5), pytest.approx(10.5))


# ---------------------------------------------------------------- formats and modes


def test_heic_decodes_upright(exif_samples):
    for path in sorted((exif_samples / "heic").rglob("*")):
        if path.is_file():
            decoded = decode(path.read_bytes())
            assert decoded.facts.format == "HEIF" and decoded.image.mode == "RGB", path
    # Stored rotated with orientation 6: pillow-heif rotates it already, it must not be turned again.
    iphone = decode((exif_samples / "heic/mobile/iphone_13_pro_max.HEIC").read_bytes())
    assert iphone.facts.orientation == 6
    assert iphone.image.size == (iphone.facts.width, iphone.facts.height) == (3024, 4032)
    assert (iphone.facts.camera_make, iphone.facts.camera_model) == ("Apple", "iPhone 13 Pro Max")


def test_tiff_decodes_like_plain_convert(exif_samples):
    paths = sorted((exif_samples / "tiff").glob("*.tiff"))
    assert paths
    for path in paths:
        with Image.open(path) as reference:
            expected = reference.convert("RGB")
        decoded = decode(path.read_bytes())
        assert decoded.facts.format == "TIFF"
        assert decoded.image.tobytes() == expected.tobytes(), path


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue", "green")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(data)
    assert decoded.facts.format == "GIF" and decoded.image.mode == "RGB"
    assert decoded.image.getpixel((8, 8)) == (255, 0, 0)


def test_mpo_is_reported_as_jpeg_and_gives_its_first_frame():
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO"
    decoded = decode(data)
    assert decoded.facts.format == "JPEG"
    red, _, blue = decoded.image.getpixel((32, 24))  # type: ignore[misc]
    assert red > 200 and blue < 50


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"),
     ("L", "WEBP"), ("RGBA", "WEBP"), ("P", "BMP")],
)  # fmt: skip
def test_modes_convert_like_plain_convert_rgb(mode, fmt):
    base = gradient(48, 32)
    if mode == "I;16":
        source = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    elif mode == "RGBA":
        source = base.convert("RGBA")
        source.putalpha(Image.linear_gradient("L").resize(base.size))
    else:
        source = base.convert(mode)
    data = encode(source, fmt)
    with Image.open(io.BytesIO(data)) as reference:
        assert reference.mode == mode or fmt == "WEBP"
        expected = reference.convert("RGB")  # what the reference CLIP processor does
    decoded = decode(data)
    assert decoded.image.mode == "RGB"
    assert decoded.image.tobytes() == expected.tobytes()


# ---------------------------------------------------------------- min_side (JPEG draft)


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(gradient(4000, 3000), "JPEG", quality=90)


def test_min_side_decodes_a_reduced_jpeg(big_jpeg):
    full = decode(big_jpeg)
    assert full.image.size == (4000, 3000)
    small = decode(big_jpeg, min_side=448)
    height = small.image.height
    assert 448 <= height < 3000
    scale = 3000 // height
    assert scale in (2, 4, 8) and small.image.size == (math.ceil(4000 / scale), math.ceil(3000 / scale))
    assert scale == 8 or math.ceil(3000 / (2 * scale)) < 448  # the largest reduction that still fits
    assert (small.facts.width, small.facts.height) == (4000, 3000) and small.facts == full.facts
    assert mad(small.image, full.image) < 2
    assert decode(big_jpeg, min_side=1).image.size == (500, 375)
    assert decode(big_jpeg, min_side=5000).image.size == (4000, 3000)


def test_min_side_picks_the_largest_reduction_with_exact_rounding():
    # 999 // 250 == 3, so asking draft() for 250x250 would only halve; 1/4 gives ceil(999 / 4) == 250.
    data = encode(gradient(999, 999), "JPEG")
    assert decode(data, min_side=250).image.size == (250, 250)
    assert decode(data, min_side=251).image.size == (500, 500)


def test_min_side_keeps_orientation():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    data = jpeg_with_exif(gradient(4000, 3000), exif)
    full = decode(data)
    small = decode(data, min_side=448)
    assert full.image.size == (3000, 4000) and (small.facts.width, small.facts.height) == (3000, 4000)
    assert small.image.size == (750, 1000)
    assert mad(small.image, full.image) < 2
    assert mad(small.image, gradient(4000, 3000).transpose(Image.Transpose.ROTATE_270)) < 3


def test_min_side_is_ignored_for_other_formats():
    assert decode(encode(gradient(800, 600), "PNG"), min_side=100).image.size == (800, 600)


# ---------------------------------------------------------------- bad input


def expect_error(data: bytes, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_photo(data, name="bad.jpg", max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)
    assert caught.value.path == "bad.jpg"
    return caught.value


def test_empty_file():
    assert expect_error(b"").reason == "empty file (0 bytes)"
    with pytest.raises(ImageError, match="empty file"):
        read_facts(b"", name="bad.jpg")


@pytest.mark.parametrize(
    "data",
    [b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", b"hello", b"\xff\xd8", bytes(1000)],
)
def test_not_an_image(data):
    assert expect_error(data).reason == "not an image (unrecognised format)"


def test_formats_outside_the_supported_set_are_refused():
    ppm = encode(gradient(8, 8), "PPM")
    with Image.open(io.BytesIO(ppm)) as check:
        assert check.format == "PPM"  # PIL itself would decode it
    assert expect_error(ppm).reason == "not an image (unrecognised format)"


def test_truncated_jpeg(exif_samples):
    data = (exif_samples / "jpg/hdr/canon_hdr_NO.jpg").read_bytes()
    error = expect_error(data[: len(data) // 2])
    assert error.reason.startswith("truncated or corrupt image data: ") and "truncated" in error.reason
    # The header is intact, so the cheap path still reads the facts.
    assert read_facts(data[: len(data) // 2], name="x").width == 1536


@pytest.mark.filterwarnings("error")
def test_pixel_limit_is_checked_on_the_header_before_decoding():
    # No pixel data at all: an implementation that decoded first would report corruption instead.
    data = png_header_only(20000, 20000)
    assert expect_error(data).reason == (
        "image too large: 20000x20000 = 400000000 pixels exceeds index.max_image_pixels (150000000)"
    )
    assert expect_error(encode(gradient(100, 50), "PNG"), max_pixels=4999).reason.startswith(
        "image too large: 100x50 = 5000 pixels"
    )
    assert decode(encode(gradient(100, 50), "PNG"), max_pixels=5000).image.size == (100, 50)


@pytest.mark.filterwarnings("error")
def test_pil_bomb_guard_does_not_interfere():
    # 400 and 100 Mpx are over PIL's default error and warning thresholds; the caller's limit rules.
    assert read_facts(png_header_only(20000, 20000), name="x").width == 20000
    assert read_facts(png_header_only(10000, 10000), name="x").height == 10000


def test_pil_decompression_bomb_error_maps_to_image_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if other code turned PIL's guard back on
    assert expect_error(encode(gradient(100, 100), "PNG")).reason.startswith("image too large")


@pytest.mark.parametrize(
    ("exception", "reason"),
    [
        (ZeroDivisionError("division by zero"), "truncated or corrupt image data: division by zero"),
        (struct.error("bad buffer"), "truncated or corrupt image data: bad buffer"),
        (IndexError(), "truncated or corrupt image data: IndexError"),
        (MemoryError(), "not enough memory to decode the image"),
    ],
)
def test_decoder_exceptions_become_image_errors(monkeypatch, exception, reason):
    def explode(self):
        raise exception

    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    assert expect_error(encode(gradient(10, 10), "JPEG")).reason == reason


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_swallowed(monkeypatch, exception):
    def interrupt(self):
        raise exception

    monkeypatch.setattr(ImageFile.ImageFile, "load", interrupt)
    with pytest.raises(exception):
        decode(encode(gradient(10, 10), "JPEG"))


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF it skips
def test_mangled_files_raise_only_image_error(exif_samples):
    exif = raw_exif(exif_samples / "jpg/gps/DSCN0010.jpg")
    base = gradient(40, 30)
    originals = [encode(base, fmt) for fmt in ("PNG", "GIF", "BMP", "WEBP")]
    originals += [jpeg_with_exif(base, exif), (exif_samples / "heic/samplefilehub.heif").read_bytes()[:60000]]
    rng = random.Random(20240611)
    outcomes = {"ok": 0, "error": 0}
    for original in originals:
        for _ in range(60):
            data = bytearray(original)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(min(len(data), 2048))] = rng.randrange(256)
            if rng.random() < 0.5:
                data = data[: rng.randrange(1, len(data))]
            try:
                decode(bytes(data), min_side=16)
                read_facts(bytes(data), name="x")
                outcomes["ok"] += 1
            except ImageError:
                outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


# ---------------------------------------------------------------- read_facts and threads


def test_read_facts_does_not_decode_pixels(monkeypatch, exif_samples):
    files = [
        (exif_samples / "jpg/orientation/landscape_6.jpg").read_bytes(),
        (exif_samples / "tiff/BSG1.tiff").read_bytes(),
        encode(gradient(30, 20), "PNG"),  # PIL's PngImageFile.getexif() would load the pixels
        encode(gradient(30, 20), "WEBP"),
    ]
    expected = [decode(data).facts for data in files]
    loads = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        loads.append(self.format)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    assert [read_facts(data, name="x") for data in files] == expected
    assert loads == []
    decode(files[0])
    assert loads and set(loads) == {"JPEG"}  # the counter does see a real decode


def test_concurrent_decodes_match_sequential(exif_samples):
    files = [p.read_bytes() for p in sorted((exif_samples / "jpg/orientation").glob("*.jpg"))]
    files.append((exif_samples / "heic/samplefilehub.heif").read_bytes())
    expected = [decode(data, min_side=100).image.tobytes() for data in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda d: decode(d, min_side=100).image.tobytes(), files * 4))
    assert results == expected * 4


def test_pillow_heif_is_imported_only_for_heif(exif_samples):
    script = (
        "import sys, pathlib\n"
        "from photosearch.indexing.imaging import decode_photo\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "decode_photo((root / 'jpg/Canon_40D.jpg').read_bytes(), name='a', max_pixels=10**8)\n"
        "print('pillow_heif' in sys.modules)\n"
        "decode_photo((root / 'heic/samplefilehub.heif').read_bytes(), name='b', max_pixels=10**8)\n"
        "print('pillow_heif' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(exif_samples)], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]
