"""The catalog: library roots, one row per photo file, and facts about the index, in a SQLite file in the data
directory or in a PostgreSQL database (catalog_engine.py connects and migrates).

Opening it applies the Alembic migrations (migrations/) and refuses a catalog written by a newer photosearch.
Every method is one short transaction, so a CLI search can read while an indexer writes (WAL mode on SQLite, a
busy timeout instead of "database is locked"), and a failure leaves nothing half-written. Methods return plain
dataclasses, never live ORM objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Row, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from photosearch.errors import CatalogError, PhotoNotFoundError
from photosearch.facts import PhotoFacts, fact_values
from photosearch.stores import pathmap
from photosearch.stores.boundary import store_errors
from photosearch.stores.catalog_derived import with_derived
from photosearch.stores.catalog_engine import (
    RETRY_DELAYS,
    SCHEMA_HEAD,
    make_engine,
    make_reader,
    migrate,
    migrations_dir,
    parse_url,
    read,
)
from photosearch.stores.catalog_hashes import HashQueries
from photosearch.stores.catalog_meta import MetaKeys
from photosearch.stores.catalog_query import BrowseQueries
from photosearch.stores.catalog_roots import RootChanges
from photosearch.stores.dialect import insert_for
from photosearch.stores.pathmap import PathMap
from photosearch.stores.schema import Photo, PhotoStatus, Root

T = TypeVar("T")

__all__ = ["SCHEMA_HEAD", "Catalog", "FileState", "PhotoRecord", "RootInfo", "migrations_dir", "record_of"]

_CHUNK = 500  # stays under SQLite's bound-parameter limit in IN (...) lists


@dataclass(frozen=True)
class RootInfo:
    id: int
    path: Path
    added_at: datetime
    last_indexed_at: datetime | None


@dataclass(frozen=True)
class FileState:
    """What the indexer needs to decide whether a file changed: cheap to load for a whole root."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    folder: str = ""  # posix path of its parent, relative to its root


@dataclass(frozen=True)
class PhotoRecord(PhotoFacts):
    """A photo's row: its facts (PhotoFacts, all None for a photo never decoded), then where it is and its state."""

    id: int
    root_id: int
    path: Path
    folder: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    error: str | None
    indexed_at: datetime | None
    dated_at: datetime | None = None  # taken_at, else the file's mtime (local time): what date filters read
    place_city: str | None = None  # the place of the GPS position (indexing/places.py); '' where none is near
    place_region: str | None = None
    place_country: str | None = None

    @property
    def facts(self) -> PhotoFacts:
        return PhotoFacts(**fact_values(self))


_RECORD_FIELDS = tuple(f.name for f in fields(PhotoRecord))  # each a column of the same name (tests hold them)


def record_of(row: Photo | Row[Any]) -> PhotoRecord:
    return PhotoRecord(**{name: getattr(row, name) for name in _RECORD_FIELDS} | {"path": Path(row.path)})


def _by_keys(rows: Sequence[dict[str, Any]]) -> Iterator[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """Rows grouped by their set of keys: one executemany statement takes rows of one shape."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    yield from groups.items()


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class Catalog(RootChanges, HashQueries, BrowseQueries, MetaKeys):
    def __init__(self, engine: Engine, data_dir: Path, reader: Engine | None = None) -> None:
        self._engine = engine
        self._reader = reader or engine  # the few reads a search makes (catalog_engine.make_reader)
        self.data_dir = data_dir  # where a SQLite catalog lives, or (PostgreSQL) just the data directory
        # The SQLite file; None on PostgreSQL. Its folder is where a disk-full or read-only failure is looked for.
        self.path = Path(engine.url.database or "") if engine.dialect.name == "sqlite" else None

    @classmethod
    def open(
        cls,
        url: str | Path,
        data_dir: Path | None = None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        paths: Mapping[str, str] | None = None,
    ) -> Catalog:
        """Open (creating and migrating if needed) the catalog at ``url``: a SQLAlchemy URL (sqlite:///file or
        postgresql+psycopg://user:password@host/db), or the Path of a SQLite file. ``data_dir``: the data
        directory (default: the SQLite file's folder). ``retry_delays``: the waits between attempts to reach a
        PostgreSQL server that refuses or is restarting. ``paths``: library folders as stored -> as mounted on
        this machine (pathmap.py)."""
        parsed = parse_url(f"sqlite:///{url}" if isinstance(url, Path) else url)
        if parsed.get_backend_name() == "sqlite":
            file = Path(parsed.database or "")
            data_dir = data_dir or file.parent
            with store_errors(CatalogError, data_dir, f"cannot open the catalog {file}"):
                file.parent.mkdir(parents=True, exist_ok=True)
        data_dir = data_dir or Path.cwd()
        engine = make_engine(parsed, retry_delays)
        reader = make_reader(parsed, engine, retry_delays)
        if paths:
            for dialect in {engine.dialect, reader.dialect}:
                pathmap.install(dialect, PathMap(paths))
        catalog = cls(engine, data_dir, reader)
        try:
            with catalog._errors(f"cannot open the catalog {catalog.describe()}"):
                migrate(engine, catalog.describe())
        except BaseException:
            engine.dispose()
            raise
        return catalog

    @property
    def backend(self) -> str:
        """The catalog database's kind: "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    def describe(self) -> str:
        """Where the catalog is, for `status` and error messages: the SQLite file, or the PostgreSQL URL without its
        password."""
        if self.path is not None:
            return str(self.path)
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()
        if self._reader is not self._engine:
            self._reader.dispose()

    def size_bytes(self) -> int:
        """The catalog's size on disk: the database and SQLite's -wal and -shm files beside it, or what PostgreSQL
        says its database takes."""
        if self.path is None:
            with self._session() as s:
                return int(s.scalar(text("SELECT pg_database_size(current_database())")) or 0)
        files = [self.path.with_name(self.path.name + suffix) for suffix in ("", "-wal", "-shm")]
        return sum(f.stat().st_size for f in files if f.is_file())

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A new session on the catalog database, for modules that own other tables in it (workqueue). Every
        catalog method works in one: what SQLAlchemy, sqlite3 or psycopg raise in it leaves as a typed error
        (boundary.py)."""
        with self._errors(), Session(self._engine, expire_on_commit=False) as session:
            yield session

    def _errors(self, failed: str | None = None) -> AbstractContextManager[None]:
        failed = failed or f"cannot read or write the catalog {self.describe()}"
        server = None if self.path is not None else _server(self._engine)
        return store_errors(CatalogError, self.data_dir, failed, server=server)

    _session = session

    def _read(self, work: Callable[[Session], T]) -> T:
        """Read-only ``work`` through the reader: one round trip a statement on PostgreSQL (catalog_engine.read)."""
        with self._errors():
            return read(self._reader, work)

    # -- roots -----------------------------------------------------------------------------------------
    def add_root(self, path: Path) -> RootInfo:
        """Remember a root (once: another machine adding the same folder at the same moment is no conflict)."""
        with self._session() as s, s.begin():
            s.execute(insert_for(s, Root).values(path=str(path), added_at=_now()).on_conflict_do_nothing())
            row = s.scalars(select(Root).where(Root.path == str(path))).one()
            return RootInfo(row.id, Path(row.path), row.added_at, row.last_indexed_at)

    def roots(self) -> list[RootInfo]:
        rows = self._read(lambda s: s.execute(select(Root.id, Root.path, Root.added_at, Root.last_indexed_at)
                                              .order_by(Root.path)).all())  # fmt: skip
        return [RootInfo(r.id, Path(r.path), r.added_at, r.last_indexed_at) for r in rows]

    def mark_root_indexed(self, root_id: int) -> None:
        with self._session() as s, s.begin():
            s.execute(update(Root).where(Root.id == root_id).values(last_indexed_at=_now()))

    def photo_counts_by_root(self) -> dict[int, int]:
        with self._session() as s:
            return {root_id: n for root_id, n in s.execute(select(Photo.root_id, func.count()).group_by(Photo.root_id))}

    def has_photos(self, root_id: int) -> bool:
        query = select(Photo.id).where(Photo.root_id == root_id).limit(1)
        return self._read(lambda s: s.scalar(query)) is not None

    # -- reads -----------------------------------------------------------------------------------------
    def file_states(self, root_id: int, under: str | None = None) -> dict[str, FileState]:
        """The file state of every photo of a root, or only of the file or folder ``under`` inside it."""
        query = select(Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.content_hash, Photo.status,
                       Photo.folder)  # fmt: skip
        if under is None:
            query = query.where(Photo.root_id == root_id)
        else:
            prefix = under.rstrip("/") + "/"
            # A range on the path index, not LIKE (names may hold % and _) nor substr (a full scan: the daemon asks
            # this once per changed path, thousands of times for a copied folder). The stored form maps char by
            # char (pathtext.py) and SQLite compares text bytewise, so the paths below a folder are exactly those
            # from "<folder>/" up to "<folder>0" ("0" follows "/"). root_id + 0 keeps SQLite on the path index:
            # on root_id's own index it would read every row of the root.
            below = (Photo.path >= prefix) & (Photo.path < prefix[:-1] + "0")
            query = query.where((Photo.path == under) | below, Photo.root_id + 0 == root_id)
        with self._session() as s:
            return {r.path: FileState(*r) for r in s.execute(query)}

    def file_states_at(self, root_id: int, paths: Sequence[str]) -> dict[str, FileState]:
        """The file states of exactly these paths of a root (those the catalog has), a few queries in all."""
        columns = (Photo.id, Photo.path, Photo.size, Photo.mtime_ns, Photo.content_hash, Photo.status, Photo.folder)
        with self._session() as s:
            return {
                r.path: FileState(*r)
                for chunk in _chunks(paths)
                for r in s.execute(select(*columns).where(Photo.path.in_(chunk), Photo.root_id == root_id))
            }

    def update_files(self, changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Set columns of existing rows by id (a move: path, root_id, folder, size, mtime_ns), one statement for
        all the rows that set the same columns."""
        now = _now()
        # Bound names must differ from the column names (SQLAlchemy reserves those for the SET clause).
        params = [{"pid": photo_id, "updated_at": now} | {f"new_{k}": v for k, v in with_derived(values).items()}
                  for photo_id, values in changes]  # fmt: skip
        with self._session() as s, s.begin():
            for keys, group in _by_keys(params):
                values: dict[str, Any] = {key.removeprefix("new_"): bindparam(key) for key in keys if key != "pid"}
                if "new_dated_at" in keys and "new_taken_at" not in keys:  # a new mtime: a time taken stays first
                    values["dated_at"] = func.coalesce(Photo.taken_at, bindparam("new_dated_at"))
                stmt = update(Photo).where(Photo.id == bindparam("pid")).values(values)
                s.connection().execute(stmt, group)

    def indexed_with_hash(self, content_hash: str) -> int | None:
        """An indexed photo with these exact bytes, whose vector can be reused instead of calling the model."""
        with self._session() as s:
            return s.scalar(
                select(Photo.id).where(Photo.content_hash == content_hash, Photo.status == PhotoStatus.INDEXED).limit(1)
            )

    def indexed_ids_at(self, paths: Sequence[str]) -> list[int]:
        """The ids of the indexed rows at these paths (those that have a vector)."""
        with self._session() as s:
            query = select(Photo.id).where(Photo.status == PhotoStatus.INDEXED)
            return [i for part in _chunks(paths) for i in s.scalars(query.where(Photo.path.in_(part)))]

    def get(self, photo_id: int) -> PhotoRecord:
        with self._session() as s:
            row = s.get(Photo, photo_id)
            if row is None:
                raise PhotoNotFoundError(f"no photo with id {photo_id} in the catalog")
            return record_of(row)

    def by_path(self, path: Path) -> PhotoRecord | None:
        with self._session() as s:
            row = s.scalar(select(Photo).where(Photo.path == str(path)))
            return None if row is None else record_of(row)

    def records(self, ids: Iterable[int]) -> dict[int, PhotoRecord]:
        found: dict[int, PhotoRecord] = {}
        # Core rows, not ORM objects: every search joins its hits here, and skipping the session and identity
        # map makes that ~3x cheaper (~0.1 ms for 10 hits).
        with self._errors(), self._engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                for row in conn.execute(select(Photo.__table__).where(Photo.id.in_(chunk))):
                    found[row.id] = record_of(row)
        return found

    def ids_with_status(self, status: PhotoStatus) -> set[int]:
        with self._session() as s:
            return set(s.scalars(select(Photo.id).where(Photo.status == status)))

    def counts(self) -> dict[str, int]:
        rows = self._read(lambda s: s.execute(select(Photo.status, func.count()).group_by(Photo.status)).all())
        counts = {status.value: 0 for status in PhotoStatus}
        counts.update({status: n for status, n in rows})
        return counts

    def indexed_since(self, since: datetime) -> int:
        with self._session() as s:
            return (
                s.scalar(select(func.count()).where(Photo.status == PhotoStatus.INDEXED, Photo.indexed_at >= since))
                or 0
            )

    def failures(self) -> list[tuple[Path, str]]:
        with self._session() as s:
            rows = s.execute(
                select(Photo.path, Photo.error).where(Photo.status == PhotoStatus.FAILED).order_by(Photo.path)
            )
            return [(Path(p), e or "unknown error") for p, e in rows]

    # -- writes ----------------------------------------------------------------------------------------
    def upsert_files(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert or update photo rows keyed by path; return their ids in order.

        Each dict holds at least path, root_id, folder, size, mtime_ns and status; other columns optional. One
        INSERT ... ON CONFLICT (path) DO UPDATE ... RETURNING per chunk of rows with the same keys: a moved or
        copied folder writes thousands of rows, and a round trip per row cost more than the work itself.
        """
        now = _now()
        ids: dict[str, int] = {}
        with self._session() as s, s.begin():
            for keys, group in _by_keys([with_derived(row) | {"updated_at": now} for row in rows]):
                stmt = insert_for(s, Photo)
                changes: dict[str, Any] = {key: stmt.excluded[key] for key in keys if key != "path"}
                if "dated_at" in keys and "taken_at" not in keys:  # a row without facts: a time taken stored stays
                    changes["dated_at"] = func.coalesce(Photo.taken_at, stmt.excluded.dated_at)
                upsert = stmt.on_conflict_do_update(index_elements=[Photo.path], set_=changes).returning(
                    Photo.path, Photo.id
                )
                for chunk in _chunks(group):
                    ids.update((path, photo_id) for path, photo_id in s.execute(upsert, list(chunk)))
        return [ids[str(row["path"])] for row in rows]

    def set_indexed(self, rows: Sequence[tuple[int, str]]) -> list[int]:
        """Set (id, content hash) rows indexed, those that still hold that hash: a row re-queued with new bytes
        meanwhile (another worker's scan) stays pending, for its new vector. The ids set."""
        now = _now()
        done = {"status": PhotoStatus.INDEXED, "error": None, "indexed_at": now, "updated_at": now,
                "claimed_by": None, "claimed_until": None}  # fmt: skip
        stmt = (update(Photo).where(Photo.id == bindparam("pid"), Photo.content_hash == bindparam("digest"))
                .values(done))  # fmt: skip
        with self._session() as s, s.begin():
            s.connection().execute(stmt, [{"pid": i, "digest": h} for i, h in rows])
            if not rows:
                return []
            query = select(Photo.id).where(Photo.status == PhotoStatus.INDEXED)
            return [i for chunk in _chunks([i for i, _ in rows]) for i in s.scalars(query.where(Photo.id.in_(chunk)))]

    def set_status(self, ids: Sequence[int], status: PhotoStatus) -> None:
        with self._session() as s, s.begin():
            for chunk in _chunks(ids):
                s.execute(update(Photo).where(Photo.id.in_(chunk)).values(status=status, updated_at=_now()))

    def delete(self, ids: Sequence[int]) -> None:
        with self._session() as s, s.begin():
            for chunk in _chunks(ids):
                s.execute(delete(Photo).where(Photo.id.in_(chunk)))

    def optimize(self) -> None:
        """Refresh the query planner's statistics after an index run. SQLite: ANALYZE, sampling at most ~1,000 rows
        per index (a few ms at any size); without any, it reads a search's catalog join through the status index:
        ~20 ms instead of ~1 ms at 100,000 photos (benchmarks/RESULTS.md). PostgreSQL: ANALYZE of the photos
        (a sample of 30,000 rows at most), what autovacuum does within a minute or so anyway: until then a new
        library's searches joined in ~6 ms instead of ~2.5 ms."""
        with self._session() as s, s.begin():
            if self.backend == "sqlite":
                s.connection().exec_driver_sql("PRAGMA analysis_limit=1000")
                s.connection().exec_driver_sql("ANALYZE")
            else:
                s.connection().exec_driver_sql("ANALYZE photos")


def _server(engine: Engine) -> str:
    """host:port of a PostgreSQL catalog, for the messages of connection failures (a socket folder for a local one)."""
    url = engine.url
    host = url.host or str(url.query.get("host") or "localhost")
    return host if host.startswith("/") else f"{host}:{url.port or 5432}"
