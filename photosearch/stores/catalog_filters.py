"""Filters (photosearch/filters.py) as SQL on the photos table: one clause that every filtered read adds, so
a search, a timeline and the facets narrow alike. Each part is plain SQL on both backends (SQLite's math
functions and PostgreSQL's), so the catalog, not Python, decides which rows pass and pages over them.
"""

from __future__ import annotations

import math

from sqlalchemy import ColumnElement, and_, func, or_, true

from photosearch.filters import Filters, Near
from photosearch.stores.dialect import fold
from photosearch.stores.schema import Photo

EARTH_KM = 6371.0088


def filter_clause(filters: Filters) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if filters.start is not None:
        parts.append(Photo.dated_at >= filters.start)
    if filters.end is not None:
        parts.append(Photo.dated_at < filters.end)
    if filters.camera:
        parts.append(_camera(filters.camera))
    if filters.near is not None:
        parts.append(_near(filters.near))
    if filters.place:
        parts.append(_place(filters.place))
    if filters.location is not None:
        parts.append(Photo.gps_lat.is_not(None) if filters.location else Photo.gps_lat.is_(None))
    if filters.formats:
        parts.append(Photo.format.in_(sorted(set(filters.formats))))
    if filters.orientation:
        parts.append(_orientation(filters.orientation))
    return and_(true(), *parts)


def _camera(text: str) -> ColumnElement[bool]:
    """ILIKE (case-insensitive in both databases, without a function call per row: SQLite folds ASCII letters
    only); "canon eos 5d" names make and model together; autoescape: a % or _ in the text is that character."""
    needle = text.strip()
    make, model = func.coalesce(Photo.camera_make, ""), func.coalesce(Photo.camera_model, "")
    return or_(make.icontains(needle, autoescape=True), model.icontains(needle, autoescape=True),
               (make + " " + model).icontains(needle, autoescape=True))  # fmt: skip


def _near(near: Near) -> ColumnElement[bool]:
    """Within near.km of the point on a sphere (haversine), after a bounding box that the comparison of two plain
    columns answers cheaply: the trigonometry runs only for the photos inside it."""
    dlat = math.degrees(near.km / EARTH_KM)
    coslat = math.cos(math.radians(near.lat))
    dlon = 180.0 if coslat < 1e-6 or dlat >= 90 else min(180.0, dlat / coslat)
    box = [Photo.gps_lat.between(near.lat - dlat, near.lat + dlat)]
    if dlon < 180.0 and near.lon - dlon >= -180.0 and near.lon + dlon <= 180.0:  # a box across ±180° is skipped
        box.append(Photo.gps_lon.between(near.lon - dlon, near.lon + dlon))
    lat1, lat2 = math.radians(near.lat), func.radians(Photo.gps_lat)
    sin_dlat = func.sin((func.radians(Photo.gps_lat) - lat1) * 0.5)
    sin_dlon = func.sin((func.radians(Photo.gps_lon) - math.radians(near.lon)) * 0.5)
    a = sin_dlat * sin_dlat + math.cos(lat1) * func.cos(lat2) * sin_dlon * sin_dlon
    # asin is monotonic: 2R·asin(√a) <= km  <=>  a <= sin²(km / 2R)
    bound = math.sin(min(math.pi / 2, near.km / (2 * EARTH_KM))) ** 2
    return and_(Photo.gps_lat.is_not(None), *box, a <= bound)


def _place(name: str) -> ColumnElement[bool]:
    columns = (Photo.place_city, Photo.place_region, Photo.place_country)
    parts = [part.strip().casefold() for part in name.split(",") if part.strip()]
    return and_(true(), *(or_(*(fold(column) == part for column in columns)) for part in parts))


def _orientation(which: str) -> ColumnElement[bool]:
    if which == "landscape":
        return Photo.width > Photo.height
    if which == "portrait":
        return Photo.height > Photo.width
    return Photo.width == Photo.height
