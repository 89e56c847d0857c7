"""A photo's facts: what its file says about it (size, format, EXIF). Declared here once; every other view derives
from ``PhotoFacts``.

imaging.py reads them; the catalog's record of a photo is a ``PhotoFacts`` with the row's other columns
(stores/catalog.py), and the catalog's columns are held to these fields by tests (stores/schema.py keeps the SQL
types and indexes; a new fact also needs a migration); a search result carries them (query/result.py) and shows
those marked ``in_results``, which makes the CLI's JSON keys and the HTTP API's result model; the HTTP photo
details show all of them (serving/httpapi.py). tests/test_fields.py checks each view against this declaration.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any

# Field metadata: the fact is part of every search result (CLI --json, the HTTP results), not only of the details.
IN_RESULTS = MappingProxyType({"in_results": True})


@dataclass(frozen=True)
class PhotoFacts:
    """None: not known. A decoded photo always has its width, height and format; the catalog's record of a photo
    never decoded (it could not be read) has none of its facts."""

    width: int | None = field(metadata=IN_RESULTS)  # upright (EXIF orientation applied), full resolution
    height: int | None = field(metadata=IN_RESULTS)
    format: str | None = field(metadata=IN_RESULTS)  # PIL format name; MPO (multi-picture JPEG) is "JPEG"
    # Naive local time unless the EXIF OffsetTime* tag gives the zone; the catalog stores it naive.
    taken_at: datetime | None = field(metadata=IN_RESULTS)
    camera_make: str | None = field(metadata=IN_RESULTS)
    camera_model: str | None = field(metadata=IN_RESULTS)
    gps_lat: float | None = field(metadata=IN_RESULTS)  # signed decimal degrees, both or neither
    gps_lon: float | None = field(metadata=IN_RESULTS)
    orientation: int | None  # raw EXIF orientation 1..8 as stored in the file


FACT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PhotoFacts))
RESULT_FACTS: tuple[str, ...] = tuple(f.name for f in fields(PhotoFacts) if f.metadata.get("in_results"))


def fact_types() -> dict[str, Any]:
    """Each fact's declared type (``int | None``, ...), for the views that are typed too (the HTTP models)."""
    return {name: kind for name, kind in typing.get_type_hints(PhotoFacts).items() if name in FACT_FIELDS}


def fact_values(facts: PhotoFacts, names: Sequence[str] = FACT_FIELDS) -> dict[str, Any]:
    """The facts by name (all, or those named), from a ``PhotoFacts`` or anything that is one (a catalog record)."""
    return {name: getattr(facts, name) for name in names}


def json_values(facts: PhotoFacts, names: Sequence[str] = FACT_FIELDS) -> dict[str, Any]:
    """``fact_values`` as JSON values: dates as ISO 8601 text."""
    values = fact_values(facts, names)
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}


def from_json_values(values: Mapping[str, Any]) -> PhotoFacts:
    """The inverse of ``json_values``: facts from their JSON values (dates from ISO 8601); those not given are None."""
    types = fact_types()
    known = {name: _from_json(types[name], value) for name, value in values.items() if name in types}
    return PhotoFacts(**({name: None for name in FACT_FIELDS} | known))


def _from_json(kind: Any, value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) and datetime in typing.get_args(kind) else value
