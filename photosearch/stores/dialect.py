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


FOLD_COLLATION = "und-x-icu"  # ICU's root locale: PostgreSQL has it where it was built with ICU (the usual)


class fold(GenericFunction[str]):
    """Unicode case folding: casefold() on SQLite (a Python function catalog_engine registers: SQLite's lower()
    folds ASCII only); on PostgreSQL lower() under ICU's root collation, which folds all of Unicode whatever the
    database's LC_CTYPE (lower() alone folds ASCII only in a C-locale database), or lower() alone on a server
    without ICU (catalog_engine looks on the first connection)."""

    type = Text()
    inherit_cache = True


def remember_fold_collation(dialect: Any, collation: str | None) -> None:
    """The collation fold() compiles with on this engine's dialect (None: the database's own)."""
    dialect.photosearch_fold_collation = collation


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


@compiles(fold, "sqlite")
def _fold_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"casefold({compiler.process(element.clauses, **kw)})"


@compiles(fold)
def _fold_other(element: Any, compiler: Any, **kw: Any) -> str:
    collation = getattr(compiler.dialect, "photosearch_fold_collation", None)
    inner = compiler.process(element.clauses, **kw)
    return f'lower(({inner}) COLLATE "{collation}")' if collation else f"lower({inner})"


_spelled(year_month, "substr({}, 1, 7)", "to_char({}, 'YYYY-MM')")
