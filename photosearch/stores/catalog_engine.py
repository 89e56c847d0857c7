"""The catalog's database connection: a SQLite file in the data directory or a PostgreSQL server, its engine, and
the Alembic migrations applied on open (refusing a catalog written by a newer photosearch).

SQLite gets WAL and a busy timeout (a CLI search reads while an indexer writes). PostgreSQL gets pool_pre_ping
(a connection the server dropped is noticed at checkout, not mid-query) and a connect that retries a server that
refuses or is restarting, with backoff: a new connection has no transaction yet, so retrying it is always safe.
A query that fails mid-transaction is not retried: it raises (boundary.py), and as every catalog method is one
transaction, nothing is half-written; the indexer resumes on its next run. The few reads of a search go through a
reader of their own (make_reader, read): one round trip each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from photosearch.errors import CatalogError, CatalogTooNewError
from photosearch.stores.boundary import pg_fault
from photosearch.stores.dialect import FOLD_COLLATION, remember_fold_collation

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between connection attempts to a PostgreSQL server that is away
RETRY_BUDGET = 10.0  # seconds of retrying at most, whatever the delays
CONNECT_TIMEOUT = 5  # seconds per attempt: a host that drops packets would otherwise hang for minutes
_MIGRATION_LOCK = 0x70686F74  # pg_advisory_xact_lock key: two processes opening a blank catalog migrate in turn

# The newest migration's revision. A catalog already there is opened without importing Alembic (~0.2 s of a cold
# `photosearch search`); tests hold this to Alembic's own head, so a new migration cannot forget it.
SCHEMA_HEAD = "0005"

NEEDS_PSYCOPG = "the PostgreSQL catalog needs psycopg: pip install 'photosearch[postgres]'"


def parse_url(url: str) -> URL:
    """The catalog URL, with PostgreSQL's driver made psycopg 3 (SQLAlchemy's default for postgresql:// is
    psycopg2, which photosearch does not install)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(f"store.catalog is not a database URL: {exc}") from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise CatalogError(
            f"store.catalog must be a sqlite:/// or postgresql+psycopg:// URL, not {parsed.drivername}://"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_catalog_url(url: str) -> str:
    """A catalog URL as it may be shown: the password as ***."""
    return parse_url(url).render_as_string(hide_password=True)


def make_engine(url: URL, retry_delays: Sequence[float] = RETRY_DELAYS) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if url.drivername != "postgresql+psycopg":
        raise CatalogError(f"store.catalog: photosearch talks to PostgreSQL through psycopg 3, not {url.drivername}")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy would import it too, with a less helpful error)
    except ImportError as exc:
        raise CatalogError(NEEDS_PSYCOPG) from exc
    return _pg_engine(url, retry_delays, pool_pre_ping=True)


def _pg_engine(url: URL, retry_delays: Sequence[float], **options: Any) -> Engine:
    """A PostgreSQL engine whose connect has a timeout and retries a server that refuses or is restarting."""
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT}
    engine = create_engine(url, connect_args=connect_args, **options)
    event.listen(engine, "do_connect", _retrying_connect(tuple(retry_delays)))
    event.listen(engine, "first_connect", _finds_fold_collation(engine))
    return engine


def _finds_fold_collation(engine: Engine) -> Callable[[Any, Any], None]:
    """On the first connection: whether the server has ICU's root collation, whose lower() folds all of Unicode
    whatever the database's LC_CTYPE (in a C-locale database, lower() folds ASCII only); dialect.fold uses it
    where there is one (the engine's dialect remembers it, as SQLAlchemy's own first-connect checks do)."""

    def find(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_collation WHERE collname = %s", (FOLD_COLLATION,))
            found = cursor.fetchone() is not None
        dbapi_connection.rollback()  # the check's transaction; the connection goes on as if new
        remember_fold_collation(engine.dialect, FOLD_COLLATION if found else None)

    return find


def make_reader(url: URL, engine: Engine, retry_delays: Sequence[float] = RETRY_DELAYS) -> Engine:
    """The engine of the reads a search makes (``read``). On PostgreSQL: autocommit connections from a pool of
    their own, without pre-ping, so such a read is one round trip instead of four (ping, BEGIN, the query,
    ROLLBACK: ~3 ms a query on 2 cores, where each waits for the server's process to be scheduled). SQLite: the
    engine itself (no round trips)."""
    if engine.dialect.name == "sqlite":
        return engine
    return _pg_engine(url, retry_delays, isolation_level="AUTOCOMMIT")


def read(reader: Engine, work: Callable[[Session], T]) -> T:
    """Run read-only ``work`` on the reader (outside a transaction on PostgreSQL: each statement sees what is
    committed when it runs). A pooled connection that the server dropped since (a restart) fails it once; the
    pool then drops its connections, and the work runs again on a new one."""
    try:
        with Session(reader) as session:
            return work(session)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with Session(reader) as session:
        return work(session)


def _retrying_connect(delays: tuple[float, ...]) -> Any:
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + RETRY_BUDGET
        for delay in (*delays, None):
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:
                fault = pg_fault(exc)
                if delay is None or fault is None or not fault.transient or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    return connect


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (searches) never block the writer (the indexer) and vice versa.
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only power loss can drop the last commits,
    # and the run journal makes the next run converge anyway.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()
    # SQLite's lower() folds ASCII only: "Île-de-France" would not match "île-de-france" (catalog_filters.fold).
    dbapi_connection.create_function("casefold", 1, _casefold, deterministic=True)


def _casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def migrate(engine: Engine, described: str) -> None:
    """Bring the catalog to SCHEMA_HEAD; ``described``: the catalog as the refusal of a newer one names it."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":  # a cheap look at sqlite_master, for the cold-start path
            has_version = (
                conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).first()
                is not None
            )
        else:
            has_version = inspect(conn).has_table("alembic_version")
        current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() if has_version else None
    if current == SCHEMA_HEAD:
        return
    _migrate_with_alembic(engine, described)


def migrations_dir() -> Path:
    """The Alembic script folder: inside the package when installed from a wheel, the repo's otherwise."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise CatalogError(f"photosearch is installed without its migrations (looked in {here})")


def _migrate_with_alembic(engine: Engine, described: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    script = ScriptDirectory.from_config(cfg)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several machines may open a blank shared catalog at once; PostgreSQL's DDL is transactional, so the
            # second waits here and then finds the first one's revision.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        current = MigrationContext.configure(conn).get_current_revision()
        known = {rev.revision for rev in script.walk_revisions()}
        if current is not None and current not in known:
            raise CatalogTooNewError(
                f"the catalog {described} was written by a newer photosearch (schema revision {current}); "
                "upgrade photosearch, or point data_dir (or store.catalog) at another catalog"
            )
        if current == script.get_current_head():
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
