"""Offline reverse geocoding: the city, region and country nearest a photo's GPS position, for `--place` and the
place facets.

reverse_geocode ships GeoNames' cities of 1,000+ people (~3 MB) and finds the nearest one with a k-d tree; it
never goes online. Loading it takes ~0.8 s, so it is loaded only when a photo with a position has no place yet,
and the lookups run in batches after an index run (``fill``), which also backfills a catalog written before
places were recorded. A position farther than MAX_KM from every such city (open sea, the poles) has no place,
recorded as '' so that it is not looked up again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

MAX_KM = 100.0  # farther from the nearest town than this, a position names no place
EARTH_KM = 6371.0088  # the mean Earth radius
_BATCH = 5000


@dataclass(frozen=True)
class Place:
    city: str
    region: str  # state, province, county's region: what GeoNames calls admin1
    country: str

    def describe(self) -> str:
        return ", ".join(part for part in (self.city, self.region, self.country) if part)


NOWHERE = Place("", "", "")  # looked up, and nothing is near


class PlaceRows(Protocol):
    """The catalog's side of it (stores/catalog_query.py)."""

    def unplaced(self, limit: int) -> list[tuple[int, float, float]]: ...

    def set_places(self, places: Sequence[tuple[int, str, str, str]]) -> None: ...


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The haversine distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def lookup(positions: Sequence[tuple[float, float]]) -> list[Place]:
    """The place of each (lat, lon): its nearest city within MAX_KM, else NOWHERE."""
    if not positions:
        return []
    import reverse_geocode  # ~0.8 s the first time: its k-d tree is built on import of the data

    found = reverse_geocode.search(list(positions))
    places = []
    for (lat, lon), city in zip(positions, found, strict=True):
        near = great_circle_km(lat, lon, float(city["latitude"]), float(city["longitude"])) <= MAX_KM
        places.append(
            Place(str(city.get("city") or ""), str(city.get("state") or ""), str(city.get("country") or ""))
            if near
            else NOWHERE
        )
    return places


def fill(rows: PlaceRows) -> int:
    """Look up every photo that has a position and no place yet; how many were looked up."""
    done = 0
    while batch := rows.unplaced(_BATCH):
        found = lookup([(lat, lon) for _, lat, lon in batch])
        rows.set_places([(i, p.city, p.region, p.country) for (i, _, _), p in zip(batch, found, strict=True)])
        done += len(batch)
    if done:
        log.info("looked up the places of %d photos", done)
    return done
