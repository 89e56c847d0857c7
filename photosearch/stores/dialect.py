"""What differs between the catalog's two databases, SQLite and PostgreSQL, in the SQL photosearch writes.

Both dialects' ``insert`` constructs have the same ``on_conflict_do_nothing`` / ``on_conflict_do_update`` and
``excluded``, so callers build one statement for either; only the construct and a few functions differ.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Text, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import GenericFunction


def backend(session: Session) -> str:
    """The catalog database's dialect name: "sqlite" or "postgresql"."""
    return session.get_bind().dialect.name


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT that takes ON CONFLICT clauses, for the session's database (typed Any: the two dialects' Insert
    classes share the methods but no base class that declares them)."""
    if backend(session) == "postgresql":
        from sqlalchemy.dialects import postgresql  # ~70 ms to import: not for a library on SQLite

        return postgresql.insert(table)
    return sqlite.insert(table)


def greatest(session: Session, a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two values: SQLite's two-argument max(), PostgreSQL's greatest() (its max() is only the
    aggregate)."""
    return func.greatest(a, b) if backend(session) == "postgresql" else func.max(a, b)


class fold(GenericFunction[str]):
    """Unicode case folding: casefold() on SQLite (a Python function catalog_engine registers: SQLite's lower()
    folds ASCII only), lower() on PostgreSQL (which folds as the database's LC_CTYPE does: all of Unicode in a
    UTF-8 locale, ASCII only in the C locale)."""

    type = Text()
    inherit_cache = True


class year_month(GenericFunction[str]):
    """A timestamp's "YYYY-MM": the text SQLite stores it as begins with it; PostgreSQL formats it."""

    type = Text()
    inherit_cache = True


def _spelled(function: type[GenericFunction[str]], on_sqlite: str, elsewhere: str) -> None:
    """Compile ``function(x)`` as the template's SQL, ``{}`` standing for x: one form for SQLite, one for others."""

    @compiles(function, "sqlite")
    def _sqlite(element: Any, compiler: Any, **kw: Any) -> str:
        return on_sqlite.format(compiler.process(element.clauses, **kw))

    @compiles(function)
    def _other(element: Any, compiler: Any, **kw: Any) -> str:
        return elsewhere.format(compiler.process(element.clauses, **kw))


_spelled(fold, "casefold({})", "lower({})")
_spelled(year_month, "substr({}, 1, 7)", "to_char({}, 'YYYY-MM')")
