"""The catalog on both backends, SQLite and a real PostgreSQL: Alembic migrations from blank and from every previous
revision, the model equal to the migrated database, refusal of a newer catalog, and the SQL that differs between
the two (upserts, greatest/max, 64-bit sizes, byte-order prefix ranges)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from photosearch.errors import CatalogTooNewError
from photosearch.stores.catalog import SCHEMA_HEAD, Catalog, migrations_dir
from photosearch.stores.queue import WorkQueue
from photosearch.stores.schema import Base, PhotoStatus


def _alembic(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(_alembic(None))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _schema_diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def _sql(url: str, *statements: str) -> list:
    """Run statements in one transaction; the last one's rows (if it returns any)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            results = [conn.execute(text(s)) for s in statements]
            return results[-1].all() if results[-1].returns_rows else []
    finally:
        engine.dispose()


def _file(i: int, root_id: int, path: str, **extra: object) -> dict:
    return {"path": path, "root_id": root_id, "folder": "", "size": i, "mtime_ns": i, "content_hash": f"h{i}",
            "status": PhotoStatus.PENDING} | extra  # fmt: skip


def test_schema_head_constant_is_alembics_head():
    # Catalog.open skips Alembic when the catalog is at SCHEMA_HEAD: a new migration must move it too.
    assert ScriptDirectory.from_config(_alembic(None)).get_current_head() == SCHEMA_HEAD == _revisions()[-1]


def test_blank_catalog_is_migrated_to_head_and_matches_the_orm(catalog_url):
    catalog = Catalog.open(catalog_url)
    assert catalog.backend == catalog_url.split(":")[0].split("+")[0]
    assert catalog.size_bytes() > 0
    catalog.close()
    assert _sql(catalog_url, "select version_num from alembic_version") == [(SCHEMA_HEAD,)]
    assert _schema_diff(catalog_url) == []
    if catalog_url.startswith("sqlite"):
        assert _sql(catalog_url, "pragma journal_mode") == [("wal",)]
    else:  # what 0003 is for: the model says so too, but compare_metadata is the model's word, this the server's
        columns = {(c["name"]): c["type"] for c in inspect(create_engine(catalog_url)).get_columns("photos")}
        assert str(columns["size"]) == str(columns["mtime_ns"]) == "BIGINT"
        assert getattr(columns["path"], "collation", None) == "C"


@pytest.mark.parametrize("previous", [None, *_revisions()[:-1]])
def test_upgrade_from_each_previous_revision_keeps_data(catalog_url, previous):
    """A catalog left at any earlier revision (or blank) upgrades on open, and a photo row survives."""
    if previous is not None:
        engine = create_engine(catalog_url)
        with engine.begin() as conn:
            command.upgrade(_alembic(conn), previous)
            conn.exec_driver_sql("insert into roots (id, path, added_at) values (1, '/p', '2024-01-01 00:00:00')")
            conn.exec_driver_sql(
                "insert into photos (id, root_id, path, folder, size, mtime_ns, status, updated_at) "
                "values (7, 1, '/p/a.jpg', '', 10, 20, 'indexed', '2024-01-01 00:00:00')"
            )
        engine.dispose()
    catalog = Catalog.open(catalog_url)
    if previous is not None:
        record = catalog.get(7)
        assert (record.path, record.status, record.size, record.mtime_ns) == (Path("/p/a.jpg"), "indexed", 10, 20)
        assert record.dated_at == datetime.fromtimestamp(20 / 1e9).replace(microsecond=0)  # 0005 dated it by its file
        assert catalog.file_states(1, under="/p") == {"/p/a.jpg": catalog.file_states(1)["/p/a.jpg"]}
    catalog.close()
    assert _schema_diff(catalog_url) == []


def test_downgrade_to_base_and_up_again(catalog_url):
    Catalog.open(catalog_url).close()
    engine = create_engine(catalog_url)
    with engine.begin() as conn:
        command.downgrade(_alembic(conn), "base")
    assert "photos" not in inspect(engine).get_table_names()
    engine.dispose()
    Catalog.open(catalog_url).close()
    assert _schema_diff(catalog_url) == []


@pytest.mark.parametrize("future", ["zz99_future", "9999"])
def test_catalog_from_a_newer_photosearch_is_refused(catalog_url, future):
    Catalog.open(catalog_url).close()
    _sql(catalog_url, f"update alembic_version set version_num = '{future}'")
    with pytest.raises(CatalogTooNewError, match=f"newer photosearch \\(schema revision {future}\\)"):
        Catalog.open(catalog_url)


def test_rows_meta_and_counts(catalog_url):
    catalog = Catalog.open(catalog_url)
    root = catalog.add_root(Path("/lib"))
    assert catalog.add_root(Path("/lib")).id == root.id  # remembered once
    ids = catalog.upsert_files([_file(i, root.id, f"/lib/{i}.jpg") for i in range(3)])
    assert catalog.upsert_files([_file(1, root.id, "/lib/1.jpg", size=11)]) == [ids[1]]  # ON CONFLICT: updated
    assert catalog.get(ids[1]).size == 11
    # A row whose bytes changed meanwhile (another hash now) stays pending: its vector is not the one written.
    assert catalog.set_indexed([(ids[0], "h0"), (ids[1], "h1"), (ids[2], "stale")]) == ids[:2]
    assert catalog.counts() == {"pending": 1, "indexed": 2, "failed": 0}
    assert catalog.indexed_with_hash("h1") == ids[1]
    assert catalog.indexed_with_hash("h2") is None  # pending rows have no vector to reuse
    catalog.set_meta({"a": "1", "b": "2"})
    catalog.set_meta({"a": None})
    assert (catalog.get_meta("a"), catalog.get_meta("b")) == (None, "2")
    catalog.delete(ids)
    assert catalog.counts()["indexed"] == 0
    catalog.close()


def test_big_sizes_and_the_prefix_range_in_byte_order(catalog_url):
    """A 5 GB file and a nanosecond mtime fit (BIGINT on PostgreSQL), and file_states(under=) returns exactly the
    paths below the folder: the test databases collate en-US by default, which puts "a~" and "a%" between "a/"
    and "a0" (COLLATE "C" on the path columns, migration 0003)."""
    catalog = Catalog.open(catalog_url)
    root = catalog.add_root(Path("/lib"))
    below = ["/lib/a", "/lib/a/x.jpg", "/lib/a/b/y.jpg", "/lib/a/\udcff.jpg", "/lib/a/é.jpg"]
    beside = ["/lib/a~.jpg", "/lib/a%.jpg", "/lib/A/x.jpg", "/lib/a b.jpg", "/lib/a0.jpg", "/lib/ab.jpg"]
    big = 5 * 1024**3
    ids = catalog.upsert_files([_file(i, root.id, p, size=big + i, mtime_ns=1_764_000_000_123_456_789)
                                for i, p in enumerate(below + beside)])  # fmt: skip
    assert set(catalog.file_states(root.id, under="/lib/a")) == set(below)
    state = catalog.file_states(root.id)["/lib/a/\udcff.jpg"]  # an undecodable name round-trips
    assert (state.size, state.mtime_ns) == (big + 3, 1_764_000_000_123_456_789)
    catalog.update_files([(ids[0], {"size": 2**40})])
    assert catalog.get(ids[0]).size == 2**40
    catalog.close()


def test_roots_move_and_merge(catalog_url):
    catalog = Catalog.open(catalog_url)
    old, other = catalog.add_root(Path("/old")), catalog.add_root(Path("/new"))
    catalog.upsert_files([_file(1, old.id, "/old/a/1.jpg"), _file(2, old.id, "/old/2.jpg")])
    catalog.move_root(old, Path("/moved"))
    assert sorted(str(r.path) for r in catalog.roots()) == ["/moved", "/new"]
    assert set(catalog.file_states(old.id)) == {"/moved/a/1.jpg", "/moved/2.jpg"}
    moved = next(r for r in catalog.roots() if r.id == old.id)
    catalog.merge_root(moved, other, drop=[])
    assert set(catalog.file_states(other.id)) == {"/new/a/1.jpg", "/new/2.jpg"}
    assert [r.path for r in catalog.roots()] == [Path("/new")]
    catalog.close()


def test_work_queue_debounce_and_push_back(catalog_url):
    """The queue's upsert and its greatest() (SQLite's two-argument max) on both backends."""
    catalog = Catalog.open(catalog_url)
    queue = WorkQueue(catalog)
    queue.put([(Path("/lib/a.jpg"), None, False), (Path("/lib/d"), None, True)], debounce=5, now=100)
    queue.put([(Path("/lib/a.jpg"), None, False)], debounce=5, now=103)  # pushes a's due time back
    assert queue.depth() == 2
    assert {(str(q.path), q.first_seen, q.due_at, q.is_dir) for q in queue.due(now=110, limit=10)} == {
        ("/lib/a.jpg", 100, 108, False), ("/lib/d", 100, 105, True)}  # fmt: skip
    assert queue.ready_at(batch_size=10, batch_wait=2) == 105  # min over max(due_at, first_seen + wait)
    done = queue.due(now=106, limit=10)  # only /lib/d
    queue.finish(done, [(Path("/lib/a.jpg"), 107.0), (Path("/lib/b.jpg"), 120.0)], first_seen=106)
    assert {str(q.path): q.due_at for q in queue.due(now=200, limit=10)} == {"/lib/a.jpg": 108, "/lib/b.jpg": 120}
    queue.put([(Path("/lib/c.jpg"), Path("/lib/a.jpg"), False)], debounce=1, now=130)  # a move supersedes a
    assert {str(q.path): q.moved_from for q in queue.due(now=200, limit=10)} == {
        "/lib/b.jpg": None, "/lib/c.jpg": Path("/lib/a.jpg")}  # fmt: skip
    queue.clear()
    assert queue.depth() == 0
    catalog.close()


def test_a_path_still_opens_a_sqlite_file(tmp_path):
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    assert (catalog.backend, catalog.describe()) == ("sqlite", str(tmp_path / "c.sqlite3"))
    catalog.close()
    with sqlite3.connect(tmp_path / "c.sqlite3") as conn:
        assert conn.execute("select version_num from alembic_version").fetchone() == (SCHEMA_HEAD,)


def test_add_meta_first_one_wins_without_a_conflict(catalog_url):
    """Two indexers starting at once on a new shared library both record their model: no duplicate-key error."""
    first, second = Catalog.open(catalog_url), Catalog.open(catalog_url)
    assert first.add_meta({"model": "a", "collection": "c-a"}) == {"model": "a", "collection": "c-a"}
    assert second.add_meta({"model": "b", "collection": "c-b"}) == {"model": "a", "collection": "c-a"}
    first.close()
    second.close()


def test_optimize_gives_sqlite_the_statistics_its_planner_needs(tmp_path):
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    root = catalog.add_root(Path("/lib"))
    catalog.upsert_files([_file(i, root.id, f"/lib/{i}.jpg") for i in range(200)])
    catalog.optimize()
    with sqlite3.connect(tmp_path / "c.sqlite3") as conn:
        analysed = {r[0] for r in conn.execute("select tbl from sqlite_stat1")}
    assert "photos" in analysed
    catalog.close()
