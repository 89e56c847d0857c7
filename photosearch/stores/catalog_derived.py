"""The photo columns the catalog derives from others whenever a row is written (catalog.py's upserts and updates):
``dated_at`` from the time taken or the file's mtime, and the place cleared when a new GPS position comes (the
next run looks it up: indexing/places.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def file_time(mtime_ns: int) -> datetime:
    """A file's mtime as the catalog dates a photo without its time taken: naive local time, to the second (the
    epoch for an mtime no calendar holds: every photo has a date, which keeps timeline pages one index range)."""
    try:
        return datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0)
    except (OverflowError, OSError, ValueError):
        return datetime(1970, 1, 1)


_PLACE = ("place_city", "place_region", "place_country")


def with_derived(row: dict[str, Any]) -> dict[str, Any]:
    """A row to write with the columns derived from it: dated_at from its time taken or mtime, and its place
    cleared when it brings a GPS position (looked up again: places.py)."""
    derived = dict(row)
    taken, mtime_ns = row.get("taken_at"), row.get("mtime_ns")
    if taken is not None or mtime_ns is not None:
        derived["dated_at"] = taken if taken is not None else file_time(mtime_ns) if mtime_ns is not None else None
    if "gps_lat" in row:
        derived |= dict.fromkeys(_PLACE)
    return derived
