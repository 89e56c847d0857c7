"""The catalog's reads for browsing and for the query layer's statistics, and the places' writes: mixed into
Catalog (catalog.py), whose conventions hold (every method one short transaction, records not ORM objects).

A timeline page is a keyset range of the (status, dated_at, id) index: the page after a photo is the photos
dated before it (or at the same time with a smaller id), so a page never repeats or skips a photo when others
are indexed meanwhile, and costs the same on page 1 and page 1,000. Every row has a dated_at (catalog.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, func, select, tuple_, update
from sqlalchemy.orm import Session

from photosearch.stores.catalog_hashes import PhotoScope
from photosearch.stores.dialect import year_month
from photosearch.stores.schema import Photo, PhotoStatus

T = TypeVar("T")

Position = tuple[datetime | None, int]  # (dated_at, id) of the last photo of a page


def _after(position: Position, newest: bool) -> ColumnElement[bool]:
    dated, photo_id = position
    if dated is None:  # a row from before every row had a date: by id
        return Photo.id < photo_id if newest else Photo.id > photo_id
    # A row-value comparison, which both databases answer from the index as one range.
    return (
        tuple_(Photo.dated_at, Photo.id) < (dated, photo_id)
        if newest
        else tuple_(Photo.dated_at, Photo.id) > (dated, photo_id)
    )


class BrowseQueries:
    def _read(self, work: Callable[[Session], T]) -> T:
        raise NotImplementedError  # Catalog's

    def session(self) -> Any:
        raise NotImplementedError  # Catalog's

    def browse(self, scope: PhotoScope, limit: int, newest: bool = True, after: Position | None = None) -> list[Any]:
        """Up to ``limit`` indexed photos in scope in date order (newest or oldest first), after ``after``."""
        from photosearch.stores.catalog import record_of

        query: Select[Any] = select(Photo.__table__).where(Photo.status == PhotoStatus.INDEXED, scope.clause())
        if after is not None:
            query = query.where(_after(after, newest))
        dated = Photo.dated_at.desc() if newest else Photo.dated_at.asc()
        ident = Photo.id.desc() if newest else Photo.id.asc()
        query = query.order_by(dated, ident).limit(limit)
        return [record_of(row) for row in self._read(lambda s: s.connection().execute(query).all())]

    def count_in(self, scope: PhotoScope, at_most: int | None = None) -> int:
        """How many indexed photos are in scope; counting stops at ``at_most`` (100,000 rows take ~16 ms to
        count, the first 12,500 ~3.5 ms: enough to tell that a scope is wide)."""
        rows = select(Photo.id).where(Photo.status == PhotoStatus.INDEXED, scope.clause())
        if at_most is not None:
            rows = rows.limit(at_most)
        query = select(func.count()).select_from(rows.subquery())
        return int(self._read(lambda s: s.scalar(query)) or 0)

    def sample_hashes(self, n: int) -> list[str]:
        """About ``n`` distinct hashes of indexed photos, at random: a sample of the library's vectors. Random ids
        looked up by primary key (twice as many as wanted: ids of removed, pending or failed rows give none), not
        ORDER BY random(), which reads and sorts the whole table."""
        top = int(self._read(lambda s: s.scalar(select(func.max(Photo.id)))) or 0)
        ids = list(range(1, top + 1)) if top <= 2 * n else random.sample(range(1, top + 1), 2 * n)
        query = select(Photo.content_hash).where(Photo.status == PhotoStatus.INDEXED, Photo.content_hash.is_not(None))

        def hashes(s: Session) -> list[str]:
            chunks = (ids[i : i + 500] for i in range(0, len(ids), 500))
            return [h for chunk in chunks for h in s.scalars(query.where(Photo.id.in_(chunk))) if h]

        found = list(dict.fromkeys(self._read(hashes)))
        random.shuffle(found)
        return found[:n]

    def facet_counts(self, scope: PhotoScope) -> dict[str, list[tuple[Any, ...]]]:
        """The indexed photos in scope counted by each facet: cameras (make, model, n), months (YYYY-MM, n), places
        (country, region, city, n), formats (format, has a position, n). Each one grouped scan of its index
        (schema.py), all in one read; query/facets.py shapes them."""
        has_gps = Photo.gps_lat.is_not(None)
        groups = {"cameras": (Photo.camera_make, Photo.camera_model), "months": (year_month(Photo.dated_at),),
                  "places": (Photo.place_country, Photo.place_region, Photo.place_city),
                  "formats": (Photo.format, has_gps)}  # fmt: skip
        where = (Photo.status == PhotoStatus.INDEXED, scope.clause())

        def counts(s: Session) -> dict[str, list[tuple[Any, ...]]]:
            return {name: [tuple(row) for row in s.execute(select(*keys, func.count()).where(*where).group_by(*keys))]
                    for name, keys in groups.items()}  # fmt: skip

        return self._read(counts)

    def facts_stamp(self) -> tuple[object, ...]:
        """What changes whenever the facets could: the rows by status, the newest row and the newest indexing,
        and how many places were looked up. Index lookups only (a cache key, not a scan)."""
        indexed = Photo.status == PhotoStatus.INDEXED
        queries = (
            select(Photo.status, func.count()).group_by(Photo.status),
            select(func.max(Photo.id)),
            select(func.max(Photo.indexed_at)),
            select(func.count()).where(indexed, Photo.place_country.is_not(None)),
        )
        return self._read(lambda s: tuple(tuple(map(tuple, s.execute(q).all())) for q in queries))

    # -- places ----------------------------------------------------------------------------------------
    def unplaced(self, limit: int) -> list[tuple[int, float, float]]:
        """Photos with a GPS position whose place was not looked up yet: (id, lat, lon)."""
        query = (
            select(Photo.id, Photo.gps_lat, Photo.gps_lon)
            .where(Photo.gps_lat.is_not(None), Photo.gps_lon.is_not(None), Photo.place_country.is_(None))
            .order_by(Photo.id)
            .limit(limit)
        )
        with self.session() as s:
            return [(int(i), float(lat), float(lon)) for i, lat, lon in s.execute(query)]

    def set_places(self, places: Sequence[tuple[int, str, str, str]]) -> None:
        """(id, city, region, country) of looked-up photos; '' for each where no place is near."""
        stmt = (
            update(Photo)
            .where(Photo.id == bindparam("pid"))
            .values(place_city=bindparam("city"), place_region=bindparam("region"), place_country=bindparam("country"))
        )
        rows = [{"pid": i, "city": city, "region": region, "country": country} for i, city, region, country in places]
        if rows:
            with self.session() as s, s.begin():
                s.connection().execute(stmt, rows)
