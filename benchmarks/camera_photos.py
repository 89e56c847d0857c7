"""Camera-like 12-megapixel JPEGs for the index benchmark, made from the real photos in ../shared/testdata.

Decode time follows the entropy-coded data, so the test photos must be as "busy" as camera files: a real photo
(cropped, flipped, colour-shifted so no two are alike) is upscaled to 4000x3000 and given sensor grain (luma and
weaker chroma noise), then saved at quality 92. That lands at 3-5 MB per file, like a 12 MP camera JPEG; upscaled
photos without grain would be far smoother and decode several times faster than real ones. Portrait shots are
stored the way cameras store them: landscape pixels plus an EXIF orientation (6 or 8), so the decoder's rotation
is exercised; a few are upside down (3). Half use 4:2:2 chroma subsampling (typical of cameras), half 4:2:0
(typical of phones). Everything is seeded: photo i is the same file on every machine.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

VERSION = 1  # bump when the recipe changes: cached folders of another version are not reused
SIZE = (4000, 3000)
QUALITY = 92
GRAIN_LUMA = 5.0  # standard deviation in 8-bit levels: a mid-ISO sensor after the camera's noise reduction
GRAIN_CHROMA = 2.0
CAMERAS = (("Canon", "Canon EOS 90D"), ("NIKON CORPORATION", "NIKON D7500"), ("Apple", "iPhone 13"),
           ("SONY", "ILCE-6400"), ("FUJIFILM", "X-T30"), ("samsung", "SM-G991B"))  # fmt: skip


def source_photos(samples: Path) -> list[Path]:
    """The real photos big enough to look like photos once upscaled (not the tiny thumbnails or broken files)."""
    found = []
    for path in sorted((samples / "jpg").rglob("*.jpg")):
        if "invalid" in path.parts or path.name == "corrupted.jpg":
            continue
        try:
            with Image.open(path) as image:
                if min(image.size) >= 360:
                    found.append(path)
        except OSError:
            continue
    if not found:
        raise SystemExit(f"no source photos under {samples}")
    return found


def make_photo(index: int, sources: list[Path], out: Path, size: tuple[int, int] = SIZE) -> Path:
    rng = np.random.default_rng(1000 + index)
    with Image.open(sources[index % len(sources)]) as opened:
        source = ImageOps.exif_transpose(opened).convert("RGB")
    portrait = rng.random() < 0.3
    width, height = (size[1], size[0]) if portrait else size
    # A random crop of 70-100% with the target aspect, so each photo is a distinct view of its source.
    aspect = width / height
    scale = rng.uniform(0.7, 1.0)
    crop_w = min(source.width, int(source.height * aspect)) * scale
    crop_h = crop_w / aspect
    left = rng.uniform(0, source.width - crop_w)
    top = rng.uniform(0, source.height - crop_h)
    view = source.crop((int(left), int(top), int(left + crop_w), int(top + crop_h)))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    big = np.asarray(view.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    big *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # white balance / exposure shift
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * GRAIN_LUMA
    big += noise
    big += rng.standard_normal((height, width, 3), dtype=np.float32) * GRAIN_CHROMA
    image = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
    orientation = 1
    if portrait:  # stored landscape, as the sensor saw it; EXIF says how to turn it upright
        orientation = 6 if rng.random() < 0.7 else 8
        image = image.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    elif rng.random() < 0.05:
        orientation = 3
        image = image.transpose(Image.Transpose.ROTATE_180)
    make, model = CAMERAS[index % len(CAMERAS)]
    taken = datetime(2021, 1, 1) + timedelta(minutes=int(rng.integers(0, 3 * 365 * 24 * 60)))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = make, model, orientation
    exif[0x0132] = taken.strftime("%Y:%m:%d %H:%M:%S")
    exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal in the Exif IFD
    path = out / f"IMG_{index:05d}.jpg"
    tmp = path.with_suffix(".tmp")
    image.save(tmp, "JPEG", quality=QUALITY, exif=exif, subsampling=1 if index % 2 else 2)
    tmp.rename(path)  # a run killed mid-write leaves no half photo behind in the cache
    return path


def camera_photos(cache: Path, count: int, samples: Path, size: tuple[int, int] = SIZE) -> list[Path]:
    """The first ``count`` photos of the cached set, making the ones that are missing (in 2 processes)."""
    folder = cache / f"camera-{size[0]}x{size[1]}-v{VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IMG_{i:05d}.jpg" for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing:
        print(f"making {len(missing)} camera-like photos in {folder} (cached for later runs)", flush=True)
        sources = source_photos(samples)
        workers = max(1, min(2, os.cpu_count() or 1))
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(make_photo, missing, [sources] * len(missing), [folder] * len(missing),
                          [size] * len(missing), chunksize=4))  # fmt: skip
    return paths
