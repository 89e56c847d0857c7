"""The SQLite catalog: Alembic migrations from blank and from every previous revision, WAL, refusal of newer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from photosearch.errors import CatalogTooNewError
from photosearch.stores.catalog import SCHEMA_HEAD, Catalog, migrations_dir
from photosearch.stores.schema import Base, PhotoStatus


def _alembic(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(_alembic(None))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _schema_diff(db: Path) -> list:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_schema_head_constant_is_alembics_head():
    # Catalog.open skips Alembic when the catalog is at SCHEMA_HEAD: a new migration must move it too.
    assert ScriptDirectory.from_config(_alembic(None)).get_current_head() == SCHEMA_HEAD == _revisions()[-1]


def test_blank_catalog_is_migrated_to_head_and_matches_the_orm(tmp_path):
    db = tmp_path / "catalog.sqlite3"
    Catalog.open(db).close()
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("select version_num from alembic_version").fetchone()
        (mode,) = conn.execute("pragma journal_mode").fetchone()
    assert version == _revisions()[-1]
    assert mode == "wal"
    assert _schema_diff(db) == []


@pytest.mark.parametrize("previous", [None, *_revisions()[:-1]])
def test_upgrade_from_each_previous_revision_keeps_data(tmp_path, previous):
    """A catalog left at any earlier revision (or blank) upgrades on open, and a photo row survives."""
    db = tmp_path / "catalog.sqlite3"
    engine = create_engine(f"sqlite:///{db}")
    if previous is not None:
        with engine.begin() as conn:
            command.upgrade(_alembic(conn), previous)
            conn.exec_driver_sql("insert into roots (id, path, added_at) values (1, '/p', '2024-01-01 00:00:00')")
            conn.exec_driver_sql(
                "insert into photos (id, root_id, path, folder, size, mtime_ns, status, updated_at) "
                "values (7, 1, '/p/a.jpg', '', 10, 20, 'indexed', '2024-01-01 00:00:00')"
            )
    catalog = Catalog.open(db)
    if previous is not None:
        record = catalog.get(7)
        assert (record.path, record.status, record.size) == (Path("/p/a.jpg"), "indexed", 10)
    catalog.close()
    assert _schema_diff(db) == []


def test_downgrade_to_base_and_up_again(tmp_path):
    db = tmp_path / "catalog.sqlite3"
    Catalog.open(db).close()
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        command.downgrade(_alembic(conn), "base")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert "photos" not in tables
    Catalog.open(db).close()
    assert _schema_diff(db) == []


def test_catalog_from_a_newer_photosearch_is_refused(tmp_path):
    db = tmp_path / "catalog.sqlite3"
    Catalog.open(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("update alembic_version set version_num = 'zz99_future'")
    with pytest.raises(CatalogTooNewError, match="newer photosearch"):
        Catalog.open(db)


def test_rows_meta_and_counts(tmp_path):
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    root = catalog.add_root(Path("/lib"))
    assert catalog.add_root(Path("/lib")).id == root.id  # remembered once
    ids = catalog.upsert_files([
        {"path": f"/lib/{i}.jpg", "root_id": root.id, "folder": "", "size": i, "mtime_ns": i,
         "content_hash": f"h{i}", "status": PhotoStatus.PENDING}
        for i in range(3)
    ])  # fmt: skip
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
