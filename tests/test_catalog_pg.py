"""A PostgreSQL catalog's failures, on a real server: each becomes CatalogUnavailableError (or CatalogError) with one
actionable line that names host:port and never the password; a server that comes back within the retry window is
waited for; describe() hides the password; a Library runs on it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import HashEmbedder, hash_config
from pgserver import PASSWORD, PostgresServer, _free_port
from sqlalchemy import create_engine, make_url, text

from photosearch.config import StoreConfig, replace
from photosearch.errors import CatalogError, CatalogUnavailableError
from photosearch.filters import Filters
from photosearch.library import Library
from photosearch.stores.catalog import Catalog
from photosearch.stores.catalog_engine import NEEDS_PSYCOPG
from photosearch.stores.catalog_hashes import PhotoScope
from photosearch.stores.schema import PhotoStatus

QUICK = (0.05, 0.1)  # retry delays for tests of a server that stays away


def _with(url: str, **parts: object) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and PASSWORD not in message and "wrong-pw" not in message, message
    return message


def test_describe_hides_the_password(postgres_url):
    catalog = Catalog.open(postgres_url)
    assert catalog.backend == "postgresql"
    assert PASSWORD not in catalog.describe() and "***" in catalog.describe()
    assert catalog.describe().endswith(make_url(postgres_url).database or "?")
    assert catalog.size_bytes() > 1_000_000  # pg_database_size
    catalog.close()


def test_plain_postgresql_url_means_psycopg_3(postgres_url):
    catalog = Catalog.open(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert catalog.roots() == []
    catalog.close()


def test_refused_connection_is_retried_then_one_line(postgres_url):
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(CatalogUnavailableError) as caught:
        Catalog.open(_with(postgres_url, port=port), retry_delays=(0.2, 0.4))
    assert time.monotonic() - started >= 0.6  # both waits: a refused connection is worth retrying
    assert _one_line(caught.value) == (
        f"cannot reach the catalog database at 127.0.0.1:{port} (connection refused): is PostgreSQL running? "
        "check store.catalog"
    )
    assert caught.value.exit_code == 69


def test_wrong_password_is_not_retried(postgres_url):
    started = time.monotonic()
    with pytest.raises(CatalogUnavailableError) as caught:
        Catalog.open(_with(postgres_url, password="wrong-pw"))  # the default delays: 7.5 s if it retried
    assert time.monotonic() - started < 2
    message = _one_line(caught.value)
    assert message.startswith(f"the catalog database at 127.0.0.1:{make_url(postgres_url).port} refused the login")
    assert 'password authentication failed for user "photosearch"' in message and "store.catalog" in message


def test_missing_database(postgres_url):
    with pytest.raises(CatalogUnavailableError) as caught:
        Catalog.open(_with(postgres_url, database="no_such_db"))
    assert _one_line(caught.value).startswith("the catalog database no_such_db does not exist at 127.0.0.1:")
    assert "createdb no_such_db" in str(caught.value)


def test_connection_killed_mid_transaction_raises_without_retry(postgres_server, postgres_url):
    """Mid-transaction nothing is retried (the work may have been half done): it raises, and the next call works."""
    catalog = Catalog.open(postgres_url)
    admin = create_engine(postgres_server.admin_url)
    with pytest.raises(CatalogUnavailableError) as caught, catalog.session() as s, s.begin():
        pid = s.scalar(text("select pg_backend_pid()"))
        with admin.begin() as conn:
            conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
        s.execute(text("select 1"))
    admin.dispose()
    assert _one_line(caught.value).startswith("lost the connection to the catalog database at 127.0.0.1:")
    assert "terminating connection due to administrator command" in str(caught.value)
    assert catalog.roots() == []  # pool_pre_ping drops the dead connection
    catalog.close()


@pytest.fixture
def own_server(postgres_server: PostgresServer) -> PostgresServer:
    if postgres_server.external:
        pytest.skip("stops the server: not done to a server given by PHOTOSEARCH_TEST_POSTGRES")
    return postgres_server


def test_server_stopped_mid_use_then_back(own_server, postgres_url):
    catalog = Catalog.open(postgres_url, retry_delays=QUICK)
    root = catalog.add_root(Path("/lib"))
    own_server.stop()
    try:
        with pytest.raises(CatalogUnavailableError) as caught:
            catalog.roots()
        assert _one_line(caught.value).startswith("cannot reach the catalog database at 127.0.0.1:")
    finally:
        own_server.start()
    assert [r.id for r in catalog.roots()] == [root.id]  # a new call reconnects
    catalog.close()


def test_server_restarting_is_waited_for(own_server, postgres_url):
    """The default backoff (0.5, 1, 2, 4 s) outlasts a restart: the call that meets it succeeds."""
    catalog = Catalog.open(postgres_url)
    catalog.add_root(Path("/lib"))
    own_server.stop()
    restart = threading.Timer(1.0, own_server.start)
    restart.start()
    try:
        started = time.monotonic()
        assert [str(r.path) for r in catalog.roots()] == ["/lib"]
        assert 0.9 < time.monotonic() - started < 10
    finally:
        restart.join()
    catalog.close()


def test_without_psycopg_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra looks like to import
    with pytest.raises(CatalogError) as caught:
        Catalog.open(f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db", tmp_path)
    assert (
        str(caught.value)
        == NEEDS_PSYCOPG
        == "the PostgreSQL catalog needs psycopg: pip install 'photosearch[postgres]'"
    )


def test_other_url_schemes_are_refused(tmp_path):
    with pytest.raises(CatalogError, match=r"must be a sqlite:/// or postgresql\+psycopg:// URL, not mysql://"):
        Catalog.open("mysql://u@h/db", tmp_path)


def test_library_on_postgresql_indexes_and_reports_status(tmp_path, postgres_url):
    from helpers import make_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_photo(photos / f"{i}.jpg", seed=i)
    base = hash_config(tmp_path / "data")
    config = replace(base, store=StoreConfig(catalog=postgres_url))
    with Library.open(config, embedder_factory=lambda _config: HashEmbedder()) as library:
        library.index([photos])
        status = library.status()
        assert (status.indexed, status.pending, status.failed) == (3, 0, 0)
        assert status.catalog_bytes > 0
        assert status.to_dict()["catalog"] == library.catalog.describe() and PASSWORD not in status.catalog
        assert library.catalog.backend == "postgresql"
    assert not (tmp_path / "data" / "catalog.sqlite3").exists()


def test_a_search_s_reads_survive_a_restart_between_two_searches(own_server, postgres_url):
    """The reads a search makes use connections without pre-ping (one round trip each): one that the restart
    dropped fails the read once, and it runs again on a new connection, without an error."""
    catalog = Catalog.open(postgres_url)
    catalog.add_root(Path("/lib"))
    assert [str(r.path) for r in catalog.roots()] == ["/lib"] and catalog.get_meta("model") is None
    own_server.restart()
    assert [str(r.path) for r in catalog.roots()] == ["/lib"]  # the pooled connection was dead: read again
    assert catalog.counts()["indexed"] == 0 and catalog.indexed_by_hash(["0" * 64]) == {}
    catalog.close()


def test_place_names_fold_beyond_ascii_in_a_c_locale_database(postgres_server: PostgresServer, tmp_path: Path):
    """lower() folds ASCII only in a C-locale database: the place filter folds under ICU's root collation."""
    url = postgres_server.create_database(c_locale=True)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:  # the premise: the database's own lower() leaves Ü as it is
            assert conn.execute(text("SELECT lower('ZÜRICH')")).scalar() == "zÜrich"
    finally:
        engine.dispose()
    catalog = Catalog.open(url)
    try:
        root = catalog.add_root(tmp_path)
        row = {"root_id": root.id, "folder": "", "size": 1, "mtime_ns": 1, "status": PhotoStatus.INDEXED}
        catalog.upsert_files([
            {**row, "path": str(tmp_path / "a.jpg"), "place_city": "Zürich", "place_country": "Switzerland"},
            {**row, "path": str(tmp_path / "b.jpg"), "place_city": "Île-de-France", "place_country": "France"},
        ])  # fmt: skip
        for name, expected in (("ZÜRICH", 1), ("zürich", 1), ("île-de-france", 1), ("ÎLE-DE-FRANCE, France", 1)):
            assert catalog.count_in(PhotoScope(filters=Filters(place=name))) == expected, name
    finally:
        catalog.close()
        postgres_server.drop_database(url)
