"""The catalog's reads for browsing and for the query layer's statistics, and the places' writes: mixed into
Catalog (catalog.py), whose conventions hold (every method one short transaction, records not ORM objects).

A timeline page is a keyset range of the (dated_at, id) index: the page after a photo is the photos dated
before it (or at the same time with a smaller id), so a page never repeats or skips a photo when others are
indexed meanwhile, and costs the same on page 1 and page 1,000. Photos without any date (an mtime no calendar
holds) come last, by id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from photosearch.stores.catalog_hashes import PhotoScope
from photosearch.stores.schema import Photo, PhotoStatus

T = TypeVar("T")

Position = tuple[datetime | None, int]  # (dated_at, id) of the last photo of a page


def _after(position: Position, newest: bool) -> ColumnElement[bool]:
    dated, photo_id = position
    if dated is None:  # among the undated, which come last in either order
        return and_(Photo.dated_at.is_(None), Photo.id < photo_id if newest else Photo.id > photo_id)
    later = Photo.dated_at < dated if newest else Photo.dated_at > dated
    same = and_(Photo.dated_at == dated, Photo.id < photo_id if newest else Photo.id > photo_id)
    return or_(later, same, Photo.dated_at.is_(None))


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
        query = query.order_by(Photo.dated_at.is_(None), dated, ident).limit(limit)
        return [record_of(row) for row in self._read(lambda s: s.connection().execute(query).all())]

    def count_in(self, scope: PhotoScope) -> int:
        """How many indexed photos are in scope."""
        query = select(func.count()).select_from(Photo).where(Photo.status == PhotoStatus.INDEXED, scope.clause())
        return int(self._read(lambda s: s.scalar(query)) or 0)

    def sample_hashes(self, n: int) -> list[str]:
        """Up to ``n`` distinct hashes of indexed photos, chosen at random: a sample of the library's vectors."""
        query = (
            select(Photo.content_hash)
            .where(Photo.status == PhotoStatus.INDEXED, Photo.content_hash.is_not(None))
            .group_by(Photo.content_hash)
            .order_by(func.random())
            .limit(n)
        )
        return [h for h in self._read(lambda s: list(s.scalars(query))) if h]

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
