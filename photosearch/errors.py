"""Typed errors raised by the library.

Only the edges (the CLI, later the HTTP app) turn these into messages and exit or status codes. Every error
carries the process exit code and the HTTP status it maps to, the way Chroma's client errors carry theirs, so
the edges need no table of their own. ``str(error)`` is the one actionable line a user sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from photosearch.locking import LockHolder


class PhotosearchError(Exception):
    """Base class of every error photosearch raises on purpose."""

    exit_code: int = 1
    http_status: int = 500


class ConfigError(PhotosearchError):
    """The configuration file, an environment override or a flag is invalid."""

    exit_code = 78  # EX_CONFIG
    http_status = 500


class StoreError(PhotosearchError):
    """The catalog or the vector store failed: what SQLAlchemy, sqlite3, Chroma or the OS raised inside them
    leaves the stores as one of these, the foreign exception chained (stores/boundary.py)."""

    exit_code = 74  # EX_IOERR


class CatalogError(StoreError):
    """The catalog (a SQLite file, or a PostgreSQL database) cannot be opened or used."""


class CatalogUnavailableError(CatalogError):
    """The PostgreSQL server holding the catalog cannot be reached, refuses the login, lacks the database, or went
    away mid-run; the catalog is intact, and the same command succeeds once the cause is gone. ``transient``: the
    kind of fault that waiting may cure (refused, restarting, the connection lost), not a login or a database
    that is wrong."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CatalogTooNewError(CatalogError):
    """The catalog was written by a newer photosearch than this one."""

    exit_code = 75


class VectorStoreError(StoreError):
    """The Chroma vector store cannot be opened or used."""


class VectorStoreUnavailableError(VectorStoreError):
    """The Chroma server (store.vectors) cannot be reached or refuses us: not running, the wrong URL, the wrong
    credentials (store.headers), gone or stuck mid-run. ``transient``: the kind of fault that waiting may cure
    (refused, reset, a gateway's 502/503/504, a timeout), which the store retries before raising."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class DataDirError(CatalogError, VectorStoreError):
    """The data directory, where both stores live, cannot take a write; the stores are intact, and the same
    command succeeds once the cause is gone."""

    exit_code = 73  # EX_CANTCREAT


class DataDirFullError(DataDirError):
    """The file system holding the data directory is full (or the user's quota there is used up)."""

    http_status = 507  # Insufficient Storage


class DataDirNotWritableError(DataDirError):
    """The data directory is read-only, or not ours to write (permissions)."""


class StoreCopyError(StoreError):
    """`store copy` refuses a target that holds another library, or found the copy different from the source."""

    exit_code = 65  # EX_DATAERR
    http_status = 409


class ModelError(PhotosearchError):
    """The embedding model cannot be loaded or run."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503


class ModelNotAvailableError(ModelError):
    """The model is neither cached nor downloadable (no network, wrong name, missing files)."""


class ModelMismatchError(ModelError):
    """The index was built with a different model than the configured one."""

    exit_code = 65
    http_status = 409


class ImageError(PhotosearchError):
    """A file could not be read or decoded as an image; ``reason`` is short and human readable."""

    exit_code = 65  # EX_DATAERR
    http_status = 415

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LibraryRootError(PhotosearchError):
    """A library root does not exist, is not a directory, or is not known."""

    exit_code = 66  # EX_NOINPUT
    http_status = 404


class RootConflictError(LibraryRootError):
    """A library folder cannot be moved there: it would nest in, or contain, another library folder."""

    exit_code = 64  # EX_USAGE
    http_status = 409


class PhotoNotFoundError(PhotosearchError):
    """A photo (by id or path) is not in the catalog."""

    exit_code = 66
    http_status = 404


class InvalidQueryError(PhotosearchError):
    """A search request is malformed (empty text, k out of range, unknown folder)."""

    exit_code = 64  # EX_USAGE
    http_status = 422


class ConfirmationError(PhotosearchError):
    """A destructive command was not confirmed (no terminal to ask on, and no --yes)."""

    exit_code = 64  # EX_USAGE
    http_status = 422


class LibraryBusyError(PhotosearchError):
    """The library is being written by something that cannot be interrupted or waited for right now."""

    exit_code = 75  # EX_TEMPFAIL
    http_status = 409


class WriterBusyError(PhotosearchError):
    """Another process (the daemon, or another index run) is writing to this library."""

    exit_code = 75  # EX_TEMPFAIL
    http_status = 409

    def __init__(self, holder: LockHolder) -> None:
        if holder.role == "watch":
            message = (
                "photosearch watch is already running for this data directory "
                f"(pid {holder.pid}, since {holder.since:%Y-%m-%d %H:%M})"
            )
        else:
            message = (
                f"another `photosearch {holder.role}` (pid {holder.pid}) is writing to this library; "
                "wait for it to finish"
            )
        super().__init__(message)
        self.holder = holder


class RequestRefusedError(PhotosearchError):
    """The HTTP server refuses a request for where it comes from, whatever it asks (webguard.py)."""

    exit_code = 77  # EX_NOPERM
    http_status = 403


class UnknownHostError(RequestRefusedError):
    """The request names a Host the server is not reached by (a DNS-rebinding page's name, say)."""

    http_status = 400


class CrossOriginError(RequestRefusedError):
    """The request comes from another web page (its Origin or Sec-Fetch-Site says so)."""


class MissingHeaderError(RequestRefusedError):
    """A state-changing request lacks what no HTML form or simple request can send (the X-Photosearch header)."""
