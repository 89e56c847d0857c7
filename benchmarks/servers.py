"""Throwaway servers for a benchmark run: a PostgreSQL catalog and a Chroma server, both on loopback.

They are the tests' own (tests/pgserver.py: initdb and pg_ctl, as the ``postgres`` user when we are root;
tests/chromaserver.py: ``chroma run``), reused rather than copied, so benchmarks and tests run the same servers
with the same settings (PostgreSQL with fsync off: a benchmark's catalog is rebuilt, never recovered).

    with throwaway_servers(chroma_path) as servers:
        store = servers.store()    # {"catalog": URL, "vectors": URL, "database": name}: a [store] table
        config = Config(data_dir=..., store=validated(StoreConfig, store))
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from chromaserver import ChromaServer  # noqa: E402  (tests/, put on the path above)
from pgserver import PostgresServer  # noqa: E402

DATABASE = "bench"  # bench_query's Chroma database: a cached server data path is found under it


class Servers:
    """The running pair, and fresh stores on them: a run of its own gets a new PostgreSQL database and a new
    Chroma database, so several measurements in one benchmark share the servers but never each other's data."""

    def __init__(self, postgres: PostgresServer, chroma: ChromaServer) -> None:
        self.postgres = postgres
        self.chroma = chroma
        self._made = 0

    def store(self, database: str | None = None) -> dict[str, str]:
        """A new, empty catalog database and a Chroma database name (Chroma creates it on first use): the
        [store] table that points a Config at them. ``database``: both names (else bench_1, bench_2, ...)."""
        self._made += 1
        name = database or f"bench_{self._made}"
        return {"catalog": self.postgres.create_database(name), "vectors": self.chroma.url, "database": name}


@contextmanager
def throwaway_servers(chroma_path: Path | None = None) -> Iterator[Servers]:
    """Start both servers, yield them, stop both at the end (and remove their folders).

    ``chroma_path``: the Chroma server's data folder, kept afterwards (a benchmark's cache of a built index);
    None: a temporary folder, removed. The PostgreSQL server is always new, its databases go with it."""
    scratch = None if chroma_path is not None else Path(tempfile.mkdtemp(prefix="bench-chroma-"))
    path = chroma_path if chroma_path is not None else scratch / "data"  # type: ignore[operator]
    postgres = PostgresServer()
    chroma: ChromaServer | None = None
    try:
        chroma = ChromaServer(path)
        chroma.start()
        yield Servers(postgres, chroma)
    finally:
        if chroma is not None:
            chroma.stop()
        postgres.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
