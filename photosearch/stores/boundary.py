"""The stores' one exception boundary: what SQLAlchemy, sqlite3, Chroma or the OS raise inside the catalog, the
vector store, the work queue or the data directory's lock file leaves them as a typed error (errors.py), with the
foreign exception chained (``raise ... from``) so that ``--debug`` still shows it.

Modelled on httpx's ``map_httpcore_exceptions``: one context manager and one table. The stores enter it where
their work happens (a catalog session, one Chroma read or write, opening either), so no method has a try/except
of its own. An exception of any other type (a bug) passes unchanged, and so does a PhotosearchError.

What a failure means is read from the errno (OSError), SQLite's result code (sqlite3, also behind SQLAlchemy's
wrapper) or, failing both, the words of the message: Chroma's Rust core passes SQLite's code on as "(code: 13)"
and an OSError as "os error 28". Sometimes it passes nothing on ("Error in compaction: Failed to apply logs to
the metadata segment"), so a failure on a file system with (almost) no space left is put down to that.

A PostgreSQL catalog's failures are the server's, never the data directory's: they are read from the SQLSTATE
psycopg gives (``sqlstate``, behind SQLAlchemy's wrapper) or, for a connection that never opened (psycopg gives
no SQLSTATE then), from libpq's words, and become CatalogUnavailableError when the server is away, refuses the
login or lacks the database (PG_FAULTS); the message names host:port and never the password.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from photosearch.errors import (
    CatalogUnavailableError,
    DataDirError,
    DataDirFullError,
    DataDirNotWritableError,
    PhotosearchError,
    StoreError,
    VectorStoreError,
    VectorStoreUnavailableError,
)

FULL_BELOW = 1 << 20  # bytes left on the data directory's file system under which a failure is put down to it
SQLITE_PERM, SQLITE_READONLY, SQLITE_FULL = 3, 8, 13  # SQLite primary result codes (an extended code's low byte)


@dataclass(frozen=True)
class Condition:
    """A state of the data directory that a failure can be recognised as, and the typed error it becomes."""

    error: type[DataDirError]
    errnos: frozenset[int]
    sqlite_codes: frozenset[int]
    words: tuple[str, ...]  # lower case, for messages that carry neither an errno nor a code
    advice: str

    def message(self, data_dir: Path, reason: str) -> str:
        advice = self.advice.format(reason=reason)
        return f"the data directory {data_dir.absolute()} {advice}; nothing indexed so far is lost"


FULL = Condition(
    DataDirFullError,
    frozenset({errno.ENOSPC, errno.EDQUOT}),
    frozenset({SQLITE_FULL}),
    ("database or disk is full", "no space left on device", "disk quota exceeded", "(code: 13)", "os error 28",
     "os error 122"),
    "is full ({reason}): free space there and run the command again",
)  # fmt: skip
NOT_WRITABLE = Condition(
    DataDirNotWritableError,
    frozenset({errno.EROFS, errno.EACCES, errno.EPERM}),
    frozenset({SQLITE_READONLY, SQLITE_PERM}),
    ("readonly database", "read-only file system", "permission denied", "operation not permitted", "(code: 8)",
     "os error 30", "os error 13"),
    "cannot be written ({reason}): make it writable, or set data_dir to another folder, and run the command again",
)  # fmt: skip
CONDITIONS = (FULL, NOT_WRITABLE)


@dataclass(frozen=True)
class PgFault:
    """A way a PostgreSQL catalog can be unavailable, and whether waiting may cure it (worth a reconnect)."""

    sqlstates: tuple[str, ...]  # SQLSTATEs, or their two-character classes ("08": connection exceptions)
    words: tuple[str, ...]  # lower case, in libpq's message of a connection that failed to open
    transient: bool
    advice: str  # formatted with server (host:port), reason and database

    def message(self, server: str, reason: str, database: str) -> str:
        return self.advice.format(server=server, reason=reason, database=database)


REFUSED = PgFault(
    (), ("connection refused", "no route to host", "network is unreachable", "timeout expired",
         "could not translate host name", "no such file or directory"),
    True, "cannot reach the catalog database at {server} ({reason}): is PostgreSQL running? check store.catalog",
)  # fmt: skip
BAD_LOGIN = PgFault(
    ("28P01", "28000"), ("password authentication failed", "no pg_hba.conf entry", "role \"",
                         "no password supplied"),
    False, "the catalog database at {server} refused the login ({reason}): check the user and password in "
    "store.catalog",
)  # fmt: skip
NO_DATABASE = PgFault(
    ("3D000",), ("does not exist",), False,
    "the catalog database {database} does not exist at {server}: create it (createdb {database}), or fix "
    "store.catalog",
)  # fmt: skip
LOST = PgFault(
    ("57P01", "57P02", "57P03", "08"),
    ("server closed the connection", "terminating connection", "the database system is shutting down",
     "the database system is starting up", "connection is lost", "the connection is closed", "consuming input failed"),
    True, "lost the connection to the catalog database at {server} ({reason}): once PostgreSQL is back, run the "
    "command again (nothing committed is lost)",
)  # fmt: skip
PG_FAULTS = (BAD_LOGIN, NO_DATABASE, LOST, REFUSED)  # by SQLSTATE first, then words, in this order
_DATABASE_NAMED = re.compile(r'database "([^"]*)" does not exist')


def _is_psycopg(exc: BaseException) -> bool:
    # By module, not by class: psycopg is optional, and not imported at all for a SQLite catalog.
    return type(exc).__module__.split(".")[0] == "psycopg"


def pg_fault(exc: BaseException) -> PgFault | None:
    """Which PG_FAULTS a psycopg exception (or SQLAlchemy's wrapper of one) shows, if any."""
    chain = [e for e in _chain(exc) if _is_psycopg(e)]
    for e in chain:
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            for fault in PG_FAULTS:
                if state in fault.sqlstates or state[:2] in fault.sqlstates:
                    return fault
            return None  # a SQLSTATE of another kind (a constraint, a permission): not unavailability
    for e in chain:
        if getattr(e, "sqlstate", None) is None:
            text = str(e).lower()
            for fault in PG_FAULTS:
                if any(word in text for word in fault.words):
                    return fault
    return None


def _pg_error(chain: list[BaseException], server: str) -> CatalogUnavailableError | None:
    fault = pg_fault(chain[0])
    if fault is None:
        return None
    text = next(str(e) for e in chain if _is_psycopg(e))
    named = _DATABASE_NAMED.search(text)
    message = fault.message(server, _pg_reason(text), named.group(1) if named else "?")
    return CatalogUnavailableError(message, transient=fault.transient)


def _pg_reason(text: str) -> str:
    """libpq's own words for why, without its "connection to server at ... failed:" preamble and "FATAL:"."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown"
    line = line.rsplit(" failed: ", 1)[-1]
    return re.sub(r"^(FATAL|ERROR):\s*", "", line).strip().rstrip(".").lower() or "unknown"


def foreign_types() -> tuple[type[Exception], ...]:
    """The exception types of the stores' libraries; any of them raised inside the boundary is mapped.

    Chroma's are looked up only once chromadb is imported: a command that never opened the vector store cannot
    have met one, and importing chromadb costs a second."""
    types: list[type[Exception]] = [SQLAlchemyError, sqlite3.Error, OSError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        types.append(psycopg.Error)
    chroma = sys.modules.get("chromadb.errors")
    if chroma is not None:
        types.append(chroma.ChromaError)
    return tuple(types)


@contextmanager
def store_errors(error: type[StoreError], data_dir: Path, failed: str, server: str | None = None) -> Iterator[None]:
    """Run store work; a foreign exception leaves it as a typed error, chained.

    ``error``: the store's own class (CatalogError, VectorStoreError), for failures that are not the data
    directory's state; ``failed``: what could not be done, for those ("cannot open the catalog /x/catalog.sqlite3");
    ``server``: host:port of a PostgreSQL catalog, whose failures are the server's, not the data directory's.
    """
    try:
        yield
    except foreign_types() as exc:
        raise typed_error(exc, error, data_dir, failed, server) from exc


def typed_error(
    exc: BaseException, error: type[StoreError], data_dir: Path, failed: str, server: str | None = None
) -> StoreError:
    """The typed error a foreign exception from a store becomes: one line, never the foreign library's type."""
    chain = list(_chain(exc))
    if server is not None or any(_is_psycopg(e) for e in chain):
        # Not the data directory's: PostgreSQL's "permission denied for table" is no read-only folder.
        return _pg_error(chain, server or "?") or error(f"{failed}: {_one_line(exc)}")
    for condition in CONDITIONS:
        found = _recognise(condition, chain)
        if found is not None:
            return condition.error(condition.message(data_dir, found))
    if _space_left(data_dir) < FULL_BELOW:
        return FULL.error(FULL.message(data_dir, os.strerror(errno.ENOSPC)))
    return error(f"{failed}: {_one_line(exc)}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what SQLAlchemy wraps (``orig``) and what it was raised from or during, a few levels deep."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        todo += [orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__]


def _recognise(condition: Condition, chain: list[BaseException]) -> str | None:
    """Why ``chain`` shows ``condition`` (the reason in the message), or None when it does not."""
    for exc in chain:
        if isinstance(exc, OSError) and exc.errno in condition.errnos:
            return exc.strerror or os.strerror(exc.errno)
        code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
        if isinstance(code, int) and code & 0xFF in condition.sqlite_codes:
            return _reason(condition, code & 0xFF, exc)
    for exc in chain:
        text = str(exc).lower()
        if any(word in text for word in condition.words):
            return _reason(condition, None, exc)
    return None


def _reason(condition: Condition, sqlite_code: int | None, exc: BaseException) -> str:
    if condition is FULL:  # SQLite and Chroma only say "database or disk is full"; the errno names it better
        quota = "quota" in str(exc).lower() or "os error 122" in str(exc).lower()
        return os.strerror(errno.EDQUOT if quota else errno.ENOSPC)
    return _one_line(exc)


def _space_left(data_dir: Path) -> int:
    """Bytes an unprivileged write could still take on the data directory's file system (large when unknown)."""
    for folder in (data_dir, *data_dir.parents):
        try:
            stat = os.statvfs(folder)
        except OSError:
            continue
        return stat.f_bavail * stat.f_frsize
    return sys.maxsize


_SQLALCHEMY_NOTE = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def _one_line(exc: BaseException) -> str:
    """The foreign message on one line: the driver's own words for SQLAlchemy's wrapper (not the SQL, not its
    link), the strerror and file name for an OSError."""
    if isinstance(exc, DBAPIError) and isinstance(exc.orig, BaseException):
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = _SQLALCHEMY_NOTE.sub("", str(exc)) if isinstance(exc, SQLAlchemyError) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- a Chroma server (store.vectors) ------------------------------------------------------------------------------
# Over HTTP the faults are not the data directory's but the network's and the server's. chromadb raises httpx's
# exceptions as they are, its own ChromaError (with the HTTP code) for Chroma's JSON error replies, a bare
# Exception carrying the body for any other error reply, and ValueError("Could not connect to a Chroma server")
# when a client cannot be made. ChromaServer installs a response hook that turns a non-JSON error reply (a proxy's
# 401, a web server's 404, a gateway's 502) into httpx.HTTPStatusError first, so its status survives.

TRANSIENT_STATUS = frozenset({502, 503, 504})  # a gateway or load balancer with the server behind it not there yet
CREDENTIALS_STATUS = frozenset({401, 403})


def display_url(url: str) -> str:
    """The URL as messages and `status` show it: without a user and password (they are credentials)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def unreachable(url: str, reason: str) -> VectorStoreUnavailableError:
    return VectorStoreUnavailableError(
        f"cannot reach the Chroma server at {display_url(url)} ({reason}): is `chroma run` running? "
        "check store.vectors", transient=True,
    )  # fmt: skip


def refused_credentials(url: str, status: int) -> VectorStoreUnavailableError:
    return VectorStoreUnavailableError(
        f"the Chroma server at {display_url(url)} refused the credentials (HTTP {status}): check store.headers"
    )


def not_chroma(url: str, what: str) -> VectorStoreUnavailableError:
    return VectorStoreUnavailableError(
        f"{display_url(url)} does not answer like a Chroma server ({what}): check store.vectors "
        "(the server's address, e.g. http://host:8000)"
    )


def http_status_fault(url: str, status: int, where: str) -> VectorStoreUnavailableError | None:
    """What an error reply that is not Chroma's own means; None for a status that is no fault of the server's."""
    if status in CREDENTIALS_STATUS:
        return refused_credentials(url, status)
    if status in TRANSIENT_STATUS:
        return VectorStoreUnavailableError(
            f"the Chroma server at {display_url(url)} is unavailable (HTTP {status} from it or a proxy in front of "
            "it): is `chroma run` running behind it?", transient=True,
        )  # fmt: skip
    if status == 404 or status == 405:
        return not_chroma(url, f"HTTP {status} at {where}")
    return None


def server_fault(exc: BaseException, url: str) -> VectorStoreError | None:
    """The one line a failure to talk to the Chroma server at ``url`` becomes, or None if it is not one."""
    import httpx

    chain = list(_chain(exc))
    for current in chain:
        if isinstance(current, httpx.HTTPStatusError):
            status = current.response.status_code
            found = http_status_fault(url, status, current.request.url.path)
            return found or VectorStoreError(f"the Chroma server at {display_url(url)} failed: HTTP {status}")
        if isinstance(current, httpx.ConnectTimeout):
            return unreachable(url, "no answer to connecting")
        if isinstance(current, httpx.ConnectError):
            return unreachable(url, _connect_reason(current))
        if isinstance(current, httpx.TimeoutException):
            return VectorStoreUnavailableError(
                f"the Chroma server at {display_url(url)} did not answer in time ({type(current).__name__}): "
                "is it overloaded or stuck? check the server", transient=True,
            )  # fmt: skip
        if isinstance(current, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return VectorStoreUnavailableError(
                f"the Chroma server at {display_url(url)} dropped the connection ({_connect_reason(current)}): "
                "did it stop or restart? is `chroma run` running?", transient=True,
            )  # fmt: skip
    chroma = sys.modules.get("chromadb.errors")
    for current in chain:
        if chroma is not None and isinstance(current, (chroma.ChromaAuthError, chroma.AuthorizationError)):
            return refused_credentials(url, current.code())
        if chroma is not None and isinstance(current, chroma.ChromaError) and current.code() in TRANSIENT_STATUS:
            return http_status_fault(url, current.code(), "")
        if isinstance(current, ValueError) and "could not connect to a chroma server" in str(current).lower():
            return unreachable(url, "no answer")
    return None


def _connect_reason(exc: BaseException) -> str:
    """httpx's words for a socket failure, short: "[Errno 111] Connection refused" -> "connection refused"."""
    text = _one_line(exc)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return (text or type(exc).__name__).lower()


def raised_by_chroma(exc: BaseException) -> bool:
    """Whether chromadb (or httpx under it) raised ``exc`` itself: its bare Exception for an error reply is a
    fault to map, where the same type raised by our own code would be a bug to pass on."""
    tb = exc.__traceback__
    module = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return module.split(".", 1)[0] in {"chromadb", "httpx", "httpcore"}


@contextmanager
def server_errors(url: str, failed: str) -> Iterator[None]:
    """Run work against a Chroma server; what chromadb or httpx raise leaves as a typed error, chained."""
    import httpx

    try:
        yield
    except PhotosearchError:
        raise
    except Exception as exc:
        fault = server_fault(exc, url)
        if fault is not None:
            raise fault from exc
        if isinstance(exc, (httpx.HTTPError, *foreign_types())) or raised_by_chroma(exc):
            raise VectorStoreError(f"{failed}: {_one_line(exc)}") from exc
        raise
