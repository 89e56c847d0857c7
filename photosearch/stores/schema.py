"""The catalog's tables as SQLAlchemy 2 ORM classes.

The schema itself is owned by the Alembic migrations in migrations/; these classes must describe the same
tables (tests compare them with the migrated database).
"""

from __future__ import annotations

import os
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from photosearch.pathtext import from_text, to_text
from photosearch.stores import pathmap


class PhotoStatus(StrEnum):
    PENDING = "pending"  # known on disk, vector not written yet (the durable work queue)
    INDEXED = "indexed"  # its vector is in Chroma under its content hash (shared by byte-identical files)
    FAILED = "failed"  # could not be read or decoded; ``error`` says why


class OsText(TypeDecorator[str]):
    """Text that may hold file names the OS gave us: stored losslessly whatever their bytes (pathtext.py).

    Being the column's type, it applies to every value bound against the column (inserts, updates, ``==``);
    a value compared through a SQL function must be wrapped in ``type_coerce(value, OsText)``.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # COLLATE "C" on PostgreSQL: text compares by code point there as in SQLite, so the prefix ranges on paths
        # (Catalog.file_states: "a/" <= path < "a0") hold, and the path index serves them (migration 0003).
        return Text(collation="C") if dialect.name == "postgresql" else Text()

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else to_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else from_text(value)


class PathText(OsText):
    """An absolute path in the catalog: OsText, stored as the machine that added its library folder sees it and
    read as this machine mounts it (pathmap.py; config ``store.paths``)."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        paths = pathmap.of(dialect)
        if value is not None and paths is not None:
            value = paths.to_stored(os.fspath(value))
        return super().process_bind_param(value, dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        text = super().process_result_value(value, dialect)
        paths = pathmap.of(dialect)
        return paths.to_local(text) if text is not None and paths is not None else text


# A file's size and its mtime in nanoseconds pass 2**31 (SQLite's INTEGER takes 64 bits; PostgreSQL's does not).
BigInt = Integer().with_variant(BigInteger(), "postgresql")


class Base(DeclarativeBase):
    pass


class Root(Base):
    __tablename__ = "roots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(PathText, unique=True)
    added_at: Mapped[datetime] = mapped_column(DateTime)
    last_indexed_at: Mapped[datetime | None] = mapped_column(DateTime)


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int] = mapped_column(ForeignKey("roots.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(PathText, unique=True)
    folder: Mapped[str] = mapped_column(OsText, index=True)  # posix path of the parent, relative to the root
    size: Mapped[int] = mapped_column(BigInt)
    mtime_ns: Mapped[int] = mapped_column(BigInt)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(OsText)  # reasons name the file
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[int | None] = mapped_column(Integer)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    # The time taken, else the file's mtime (local): what date filters and the timeline read (migration 0005).
    dated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The GPS position's place (indexing/places.py): NULL until looked up, '' where none is near.
    place_city: Mapped[str | None] = mapped_column(Text)
    place_region: Mapped[str | None] = mapped_column(Text)
    place_country: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(128))  # the worker embedding this pending row (claims.py)
    claimed_until: Mapped[float | None] = mapped_column(Float)  # epoch seconds, the catalog's clock


# Led by status, as every search reads only indexed photos (migration 0005): a timeline page is one range of
# the first, which also covers a date filter's hashes; GET /api/facets groups each of the others from its index.
Index("ix_photos_timeline", Photo.status, Photo.dated_at, Photo.id, Photo.content_hash)
Index("ix_photos_camera", Photo.status, Photo.camera_make, Photo.camera_model)
Index("ix_photos_place", Photo.status, Photo.place_country, Photo.place_region, Photo.place_city)
Index("ix_photos_format", Photo.status, Photo.format, Photo.gps_lat)


class Meta(Base):
    """Key/value facts about the index as a whole: the model it was built with, the run journal."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class QueueEntry(Base):
    """A path the daemon saw change and has not processed yet: the durable, de-duplicated work queue.

    One row per path (a later event for the same path only moves ``due_at``), so the queue is bounded by the
    number of distinct paths that changed, not by the number of events.
    """

    __tablename__ = "queue"

    path: Mapped[str] = mapped_column(PathText, primary_key=True)
    moved_from: Mapped[str | None] = mapped_column(PathText)
    is_dir: Mapped[bool] = mapped_column(Boolean)
    first_seen: Mapped[float] = mapped_column(Float)  # epoch seconds of the first event: bounds the wait
    due_at: Mapped[float] = mapped_column(Float, index=True)  # last event + debounce


class Lease(Base):
    """A named lock that expires unless renewed: one scanner per root, one row per running worker (claims.py)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
