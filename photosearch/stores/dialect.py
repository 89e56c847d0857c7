"""What differs between the catalog's two databases, SQLite and PostgreSQL, in the SQL photosearch writes.

Both dialects' ``insert`` constructs have the same ``on_conflict_do_nothing`` / ``on_conflict_do_update`` and
``excluded``, so callers build one statement for either; only the construct and a few functions differ.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def backend(session: Session) -> str:
    """The catalog database's dialect name: "sqlite" or "postgresql"."""
    return session.get_bind().dialect.name


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT that takes ON CONFLICT clauses, for the session's database (typed Any: the two dialects' Insert
    classes share the methods but no base class that declares them)."""
    if backend(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def greatest(session: Session, a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two values: SQLite's two-argument max(), PostgreSQL's greatest() (its max() is only the
    aggregate)."""
    return func.greatest(a, b) if backend(session) == "postgresql" else func.max(a, b)
