"""Copy a library's stores to others (typically the data directory's SQLite and embedded Chroma to a PostgreSQL
database and a Chroma server) without embedding anything again: every vector is read from the source collection
and written under the same key, every row keeps its primary key.

The order makes it safe to stop at any moment and run again, which then finishes the copy:

  1. refuse a target that holds another library (stores/copy_verify.py): rows whose ids name other paths, a
     model that differs, collections of its own. The copy never overwrites someone else's data;
  2. the vectors, collection by collection (the active one, and the one a reindex is filling), in pages, each
     page an idempotent upsert by key; the keys the target has already are skipped, which is what a resumed
     copy saves (the vectors are the expensive part);
  3. the catalog's tables in dependency order (roots, photos, queue), in pages, each page one transaction that
     inserts its rows or brings them up to date (a row changed in the source between two runs converges). Not
     the leases, nor the claims on rows: those belong to the source's running processes;
  4. the meta table last, in one transaction: its ``model`` and ``collection`` keys are what make the target a
     library at all, so a target interrupted earlier is no library yet (a search there finds no model, an
     index run there would not mistake it for a complete one);
  5. the verification (copy_verify.py), which raises if the target differs.

Rows are copied as stored: path columns bypass the path mapping (schema.PathText), so a copy of a library whose
folders are mapped (store.paths) keeps the paths as its other machines know them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Table, Text, column, delete, select, text
from sqlalchemy.sql import TableClause, table

from photosearch.config import Config, StoreConfig, replace
from photosearch.errors import ConfigError
from photosearch.stores import generations
from photosearch.stores.catalog import Catalog
from photosearch.stores.daemonrecord import ERROR_KEY, STARTED_KEY
from photosearch.stores.dialect import backend, insert_for
from photosearch.stores.index import AGREED_KEY
from photosearch.stores.schema import Meta, OsText, Photo, QueueEntry, Root
from photosearch.stores.vectors import HNSW, ChromaPlace, VectorStore, open_vectors

PAGE = 1000  # rows or vectors per read and write: one transaction or one upsert each
TABLES: tuple[Table, ...] = (Root.__table__, Photo.__table__, QueueEntry.__table__)  # type: ignore[assignment]
CLEARED = {"claimed_by": None, "claimed_until": None}  # a claim is a source worker's, and means nothing there
# The source's own daemon's record: about a process on the source's machine, not about the library.
# The target's own: its daemon's record, its collections' tidying, its counts' agreement (its stores' stamps).
NOT_COPIED_META = frozenset({STARTED_KEY, ERROR_KEY, generations.TIDIED_KEY, AGREED_KEY})


class CopyProgress(Protocol):
    """What a copy tells as it goes: a stage begins (its name, how many items), items of it are done."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)  # rows written per table (meta included)
    vectors: dict[str, int] = field(default_factory=dict)  # vectors written per collection
    skipped: dict[str, int] = field(default_factory=dict)  # vectors the target had already, per collection
    verified: bool = False

    @property
    def vectors_copied(self) -> int:
        return sum(self.vectors.values())

    @property
    def vectors_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class Stores:
    """One side of a copy: a catalog and the place of its collections."""

    catalog: Catalog
    vectors: ChromaPlace


def collections(catalog: Catalog) -> list[str]:
    """The collections a library uses: the active one, and the one a reindex under way is filling."""
    found = [g.collection for g in (generations.active(catalog), generations.target(catalog)) if g is not None]
    return list(dict.fromkeys(found))


def copy_stores(source: Stores, target: Stores, progress: CopyProgress | None = None, page: int = PAGE) -> CopyReport:
    """Copy the library in ``source`` to ``target`` (its catalog opened, hence migrated), resuming a copy that
    stopped; raises StoreCopyError when the target holds another library or differs after the copy. ``page``:
    vectors or rows per write. The caller keeps the source's writers away meanwhile (Library.copy_to)."""
    from photosearch.stores import copy_verify  # it imports this module

    told: CopyProgress = progress or _Silent()
    report = CopyReport()
    copy_verify.refuse_another_library(source, target)
    for name in collections(source.catalog):
        _copy_collection(source.vectors, target.vectors, name, report, told, page)
    for table_ in TABLES:
        report.rows[table_.name] = _copy_table(source.catalog, target.catalog, table_, told, page)
    _reset_sequences(target.catalog)
    report.rows["meta"] = _copy_meta(source.catalog, target.catalog)
    told.stage("verify", 1)
    copy_verify.verify(source, target)
    told.advance(1)
    report.verified = True
    return report


# -- vectors ---------------------------------------------------------------------------------------------------
def copy_to(source: Stores, config: Config, target: StoreConfig, progress: CopyProgress | None = None,
            page: int = PAGE) -> CopyReport:  # fmt: skip
    """A library's stores (``source``, of ``config``) copied to ``target``'s catalog and Chroma server."""
    if target.catalog is None or target.vectors is None:
        raise ConfigError("a copy needs the target's catalog URL and Chroma server URL")
    there = Catalog.open(target.catalog, config.data_dir)
    try:
        vectors = open_vectors(replace(config, store=target))
        return copy_stores(source, Stores(there, vectors), progress, page)
    finally:
        there.close()


def collection_settings(store: VectorStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """A collection's metadata (the model's identity) and the HNSW settings it was built with (M and
    ef_construction as built: a copy searches like the original)."""
    hnsw = {key: value for key, value in store.hnsw().items() if key in HNSW}
    return store.model_info(), hnsw


def _copy_collection(
    source: ChromaPlace, target: ChromaPlace, name: str, report: CopyReport, progress: CopyProgress, page: int
) -> None:
    origin = VectorStore(source, name)
    metadata, hnsw = collection_settings(origin)

    def create(client: Any) -> None:
        client.get_or_create_collection(name, configuration={"hnsw": hnsw}, metadata=metadata,
                                        embedding_function=None)  # fmt: skip

    target.call(create, write=True)
    copy = VectorStore(target, name)
    present = copy.all_keys()  # listed once: a resumed copy then reads only the vectors still missing
    wanted = sorted(origin.all_keys())
    missing = [key for key in wanted if key not in present]
    report.skipped[name] = len(wanted) - len(missing)
    report.vectors[name] = 0
    progress.stage(f"vectors {name}", len(missing))
    for start in range(0, len(missing), page):
        keys = missing[start : start + page]
        found = origin.vectors(keys)
        keys = [key for key in keys if key in found]  # listed, then deleted: the verification will tell
        if keys:
            copy.upsert(keys, np.stack([found[key] for key in keys]))
        report.vectors[name] += len(keys)
        progress.advance(len(keys))


# -- catalog ---------------------------------------------------------------------------------------------------
def plain(table_: Table) -> TableClause:
    """The table with its path and file-name columns as plain text: rows read and written exactly as stored,
    past the path mapping and the file-name encoding (schema.OsText), which a copy must not apply twice."""
    return table(
        table_.name, *(column(c.name, Text() if isinstance(c.type, OsText) else c.type) for c in table_.columns)
    )


def _key(table_: Table) -> str:
    (key,) = table_.primary_key.columns
    return key.name


def rows_in_order(
    catalog: Catalog, table_: Table, columns: tuple[str, ...] | None = None, page: int = PAGE
) -> Iterator[list[Any]]:
    """The table's rows (as mappings) by primary key, a page at a time: each page its own short read, so a
    large table is never held at once."""
    raw, key = plain(table_), _key(table_)
    chosen = [raw.c[name] for name in columns] if columns else list(raw.c)
    last: Any = None
    while True:
        query = select(*chosen).order_by(raw.c[key]).limit(page)
        with catalog.session() as s:
            rows = list(s.execute(query if last is None else query.where(raw.c[key] > last)).mappings())
        if rows:
            yield rows
        if len(rows) < page:
            return
        last = rows[-1][key]


def count(catalog: Catalog, table_: Table) -> int:
    with catalog.session() as s:
        return int(s.scalar(select(text("count(*)")).select_from(plain(table_))) or 0)


def _copy_table(source: Catalog, target: Catalog, table_: Table, progress: CopyProgress, page: int) -> int:
    raw, key = plain(table_), _key(table_)
    progress.stage(table_.name, count(source, table_))
    written = 0
    for found in rows_in_order(source, table_, page=page):
        rows = [dict(row) | {k: v for k, v in CLEARED.items() if k in row} for row in found]
        with target.session() as s, s.begin():
            stmt = insert_for(s, raw)
            # Up to date, not only inserted: a row the source changed after an interrupted copy converges.
            s.execute(stmt.on_conflict_do_update(
                index_elements=[key], set_={c.name: stmt.excluded[c.name] for c in raw.c if c.name != key}
            ), rows)  # fmt: skip
        written += len(rows)
        progress.advance(len(rows))
    return written


def _reset_sequences(target: Catalog) -> None:
    """PostgreSQL hands out serial ids from a sequence that rows inserted with their ids never moved: without
    this, the target's first new photo would take id 1 and collide."""
    with target.session() as s, s.begin():
        if backend(s) != "postgresql":
            return  # SQLite's next id is max(id) + 1
        for name in ("roots", "photos"):
            s.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) "
                f"FROM {name}"
            ))  # fmt: skip


def copied_meta(catalog: Catalog) -> dict[str, str]:
    with catalog.session() as s:
        return {k: v for k, v in s.execute(select(Meta.key, Meta.value)) if k not in NOT_COPIED_META}


def _copy_meta(source: Catalog, target: Catalog) -> int:
    values = copied_meta(source)
    with target.session() as s, s.begin():  # one transaction: the target becomes a library all at once
        # A key the source dropped since an earlier copy (a reindex it finished or cancelled) goes here too.
        s.execute(delete(Meta).where(Meta.key.not_in([*values, *NOT_COPIED_META])))
        stmt = insert_for(s, Meta)
        if values:
            s.execute(stmt.on_conflict_do_update(index_elements=[Meta.key], set_={"value": stmt.excluded.value}),
                      [{"key": k, "value": v} for k, v in values.items()])  # fmt: skip
    return len(values)
