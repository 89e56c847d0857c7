"""What a search or a timeline may be narrowed to: declared here once, parsed from the user's words by
query/spec.py, turned into SQL by stores/catalog_filters.py. Cheap to import (no numpy, no SQL).

All filters combine with AND; None (or empty) is no filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# The --type names and the format the catalog records for each (PIL's name; MPO is recorded as JPEG).
TYPES: dict[str, str] = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "heic": "HEIF", "heif": "HEIF",
                         "webp": "WEBP", "gif": "GIF", "tiff": "TIFF", "tif": "TIFF", "bmp": "BMP"}  # fmt: skip
ORIENTATIONS = ("landscape", "portrait", "square")  # of the upright image: wider, taller, or as wide as tall
DEFAULT_WITHIN_KM = 5.0


@dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    km: float = DEFAULT_WITHIN_KM  # the great-circle distance from (lat, lon), inclusive


@dataclass(frozen=True)
class Filters:
    # A photo's date: its time taken, else (dated by its file, and saying so) its file's mtime; [start, end).
    start: datetime | None = None
    end: datetime | None = None
    camera: str | None = None  # a case-insensitive part of the make or the model
    near: Near | None = None
    place: str | None = None  # a city, region or country; "Paris, France": each part names one of them
    location: bool | None = None  # True: only photos with a GPS position; False: only those without
    formats: tuple[str, ...] = ()  # catalog format names (TYPES' values): any of them
    orientation: str | None = None  # one of ORIENTATIONS
    folder: Path | None = None  # photos under this folder (inside a library folder)

    def __bool__(self) -> bool:
        return self != Filters()

    def in_sql(self) -> Filters:
        """The filters the catalog applies (all but the folder, which the query layer resolves to a root)."""
        return Filters(self.start, self.end, self.camera, self.near, self.place, self.location, self.formats,
                       self.orientation)  # fmt: skip
