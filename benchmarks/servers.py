"""Throwaway servers for a benchmark run: a PostgreSQL catalog and a Chroma server, both on loopback.

They are the tests' own (tests/pgserver.py: initdb and pg_ctl, as the ``postgres`` user when we are root;
tests/chromaserver.py: ``chroma run``), reused rather than copied, so benchmarks and tests run the same servers
with the same settings (PostgreSQL with fsync off: a benchmark's catalog is rebuilt, never recovered).

    with throwaway_servers(chroma_path) as store:   # {"catalog": URL, "vectors": URL, "database": name}
        config = Config(data_dir=..., store=StoreConfig.model_validate(store))
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

DATABASE = "bench"  # the Chroma database every benchmark uses: a cached server data path is found under it


@contextmanager
def throwaway_servers(chroma_path: Path | None = None, catalog_name: str = "bench") -> Iterator[dict[str, str]]:
    """Start both servers; yield the [store] table that points a Config at them; stop both at the end.

    ``chroma_path``: the Chroma server's data folder, kept afterwards (a benchmark's cache of a built index);
    None: a temporary folder, removed. The PostgreSQL catalog is always new and empty (a database named
    ``catalog_name``) and goes with its server."""
    scratch = None if chroma_path is not None else Path(tempfile.mkdtemp(prefix="bench-chroma-"))
    path = chroma_path if chroma_path is not None else scratch / "data"  # type: ignore[operator]
    postgres = PostgresServer()
    chroma: ChromaServer | None = None
    try:
        catalog = postgres.create_database(catalog_name)
        chroma = ChromaServer(path)
        chroma.start()
        yield {"catalog": catalog, "vectors": chroma.url, "database": DATABASE}
    finally:
        if chroma is not None:
            chroma.stop()
        postgres.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
