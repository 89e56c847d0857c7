"""Store failures surface as typed errors (stores/boundary.py), never as raw SQLAlchemy, sqlite3 or Chroma
exceptions: a real full file system under the data directory, real damage to the stores' files, a read-only
vector store. The CLI says so in one line with a non-zero exit, and the next run after the cause is gone
converges (both stores agree, every photo indexed).

No photosearch internals are patched: the faults are made on disk, where the stores meet them. Mounting needs
root (CI runs as root); those tests skip elsewhere, the others run anywhere.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

import chromadb.errors
import numpy as np
import pytest
from helpers import Counted, HashEmbedder, assert_stores_agree, hash_config, make_config, make_photo
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from photosearch.errors import (
    CatalogError,
    DataDirFullError,
    DataDirNotWritableError,
    PhotosearchError,
    StoreError,
    VectorStoreError,
)
from photosearch.library import Library
from photosearch.stores.boundary import store_errors, typed_error
from photosearch.stores.queue import WorkQueue
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore

FOREIGN_WORDS = ("Traceback", "sqlalche.me", "OperationalError", "DatabaseError", "InternalError", "ChromaError")

Mount = Callable[..., Path]


# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no user config file, no PHOTOSEARCH_* from the developer's shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    clean["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    clean["HF_HOME"] = str(tmp_path / "hf-home")
    return clean


def photosearch(env: dict[str, str], data: Path, model: Path, *args: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(model), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> str:
    """The command failed with ``exit_code`` and said why in exactly one line naming ``words``, without a
    traceback or a foreign library's type or link."""
    lines = result.stderr.splitlines()
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("photosearch: error: "), line
    assert all(word in line for word in words), (words, line)
    assert not any(word in line for word in FOREIGN_WORDS), line
    return line


def assert_typed(
    error: BaseException, foreign: type[BaseException] | tuple[type[BaseException], ...], where: Path
) -> None:
    """A typed error of ours, one line naming ``where``, with the foreign exception chained for --debug."""
    assert isinstance(error, PhotosearchError) and type(error).__module__ == "photosearch.errors", type(error)
    assert isinstance(error.__cause__, foreign), repr(error.__cause__)
    message = str(error)
    assert "\n" not in message and str(where) in message, message
    assert "sqlalche.me" not in message, message


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """Mount a small tmpfs (``mount("name", size="2m")``) or a read-only view of a folder (``mount(path,
    read_only=True)``); everything is unmounted at teardown. Skips where mounting is not allowed."""
    mounted: list[Path] = []

    def run(*args: str) -> None:
        if os.geteuid() != 0:
            pytest.skip("mounting a file system needs root (CI runs the tests as root)")
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount here: mount {' '.join(args)}: {result.stderr.strip()}")

    def do_mount(target: str | Path, size: str | None = None, read_only: bool = False) -> Path:
        if read_only:
            point = Path(target)
            run("--bind", str(point), str(point))
            mounted.append(point)
            run("-o", "remount,bind,ro", str(point))
        else:
            point = tmp_path / target
            point.mkdir()
            run("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
            mounted.append(point)
        return point

    yield do_mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0 and mounted_at(point):
            subprocess.run(["umount", "-l", str(point)], check=True)  # still open in this process (Chroma)


def mounted_at(point: Path) -> bool:
    return any(line.split()[1] == str(point) for line in Path("/proc/self/mounts").read_text().splitlines())


def unmount(point: Path) -> None:
    """Unmount ``point`` once nothing of ours holds a file under it. A closed Chroma client frees its files only
    when the collector reaches it, so collect and retry for a few seconds before calling it a failure."""
    for _ in range(40):
        gc.collect()
        if subprocess.run(["umount", str(point)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", str(point)], check=True)


def damage(db: Path, tables: Sequence[str]) -> bytes:
    """Overwrite the root pages of these tables and their indexes with garbage, the way a bad sector or a stray
    write would, leaving the rest of the file (its schema, the migration state) intact. Returns the bytes before."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        marks = ",".join("?" * len(tables))
        roots = [r for (r,) in conn.execute(f"SELECT rootpage FROM sqlite_master WHERE tbl_name IN ({marks})", tables)]
    assert roots, f"no such tables in {db}: {tables}"
    saved = db.read_bytes()
    data = bytearray(saved)
    for root in roots:
        if root > 1:  # page 1 holds the schema
            data[(root - 1) * page : root * page] = b"\xa5" * page
    db.write_bytes(bytes(data))
    return saved


def hash_library(data: Path) -> Library:
    embedder = HashEmbedder()
    return Library.open(hash_config(data), embedder_factory=lambda _config: embedder)


def converged(library: Library, photos: int) -> None:
    """Every photo indexed, and exactly one vector per indexed row."""
    assert len(assert_stores_agree(library)) == photos
    counts = library.catalog.counts()
    assert counts[PhotoStatus.INDEXED] == photos and counts[PhotoStatus.PENDING] == 0, counts


def make_photos(folder: Path, count: int, start: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    for i in range(start, start + count):
        make_photo(folder / f"d{i % 8}" / f"p{i}.jpg", seed=i, size=size)
    return folder


# -- the mapping itself --------------------------------------------------------------------------------------


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # what the sqlite3 module sets on the errors it raises
    return exc


@pytest.mark.parametrize(
    ("foreign", "expected"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), DataDirFullError),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), DataDirFullError),
        (_sqlite_error("database or disk is full", 13), DataDirFullError),
        (OperationalError("INSERT ...", {}, _sqlite_error("database or disk is full", 13)), DataDirFullError),
        (chromadb.errors.InternalError("error returned from database: (code: 13) database or disk is full"),
         DataDirFullError),
        (chromadb.errors.InternalError("Error writing file: No space left on device (os error 28)"), DataDirFullError),
        (OSError(errno.EROFS, os.strerror(errno.EROFS)), DataDirNotWritableError),
        (chromadb.errors.InternalError("(code: 8) attempt to write a readonly database"), DataDirNotWritableError),
        (OperationalError("UPDATE ...", {}, _sqlite_error("attempt to write a readonly database", 8)),
         DataDirNotWritableError),
        (OperationalError("SELECT ...", {}, sqlite3.DatabaseError("file is not a database")), CatalogError),
        (chromadb.errors.InternalError("Failed to pull logs from the log store"), CatalogError),
    ],
)  # fmt: skip
def test_the_table_maps_what_a_failure_means(tmp_path: Path, foreign: Exception, expected: type[StoreError]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(StoreError) as caught, store_errors(CatalogError, data, "cannot use the catalog"):
        raise foreign
    error = caught.value
    assert type(error) is expected and error.__cause__ is foreign
    assert "\n" not in str(error) and "sqlalche.me" not in str(error)
    if expected is DataDirFullError:
        reason = os.strerror(errno.EDQUOT if getattr(foreign, "errno", None) == errno.EDQUOT else errno.ENOSPC)
        assert str(error) == (
            f"the data directory {data} is full ({reason}): free space there and run the command again; "
            "nothing indexed so far is lost"
        )
        assert error.exit_code == 73 and error.http_status == 507
    elif expected is DataDirNotWritableError:
        assert str(error).startswith(f"the data directory {data} cannot be written (") and error.exit_code == 73
    else:
        assert str(error).startswith("cannot use the catalog: ") and error.exit_code == 74


def test_typed_and_unrelated_exceptions_pass_unchanged(tmp_path: Path) -> None:
    """Only the stores' libraries' exceptions are mapped: ours, and bugs (a KeyError), leave as they are."""
    for exc in (KeyError("x"), VectorStoreError("already typed")):
        with pytest.raises(type(exc)) as caught, store_errors(CatalogError, tmp_path, "cannot use the catalog"):
            raise exc
        assert caught.value is exc
    # A full or read-only data directory is an error of either store, for whoever catches those.
    assert issubclass(DataDirFullError, CatalogError) and issubclass(DataDirFullError, VectorStoreError)
    assert isinstance(typed_error(OSError(errno.ENOSPC, "full"), VectorStoreError, tmp_path, "x"), DataDirFullError)


# -- a real full file system ---------------------------------------------------------------------------------


def test_full_data_directory_says_so_in_one_line_and_the_next_run_converges(
    tmp_path: Path, tiny_model_dir: Path, env: dict[str, str], mount: Mount
) -> None:
    """The issue's case: `index` on a data directory whose file system fills up during the run. Before, it ended
    with "unexpected error: OperationalError: (sqlite3.OperationalError) database or disk is full (Background on
    this error at: https://sqlalche.me/...)" (or Chroma's "InternalError: Error in compaction")."""
    library = make_photos(tmp_path / "lib", 900)  # ~2.5 MB of catalog and vectors: more than the 2 MB there
    small = mount("small", size="2m")
    data = small / "data"

    failed = photosearch(env, data, tiny_model_dir, "index", "--no-progress", library)
    line = assert_one_line_error(failed, 73, f"the data directory {data} is full", "nothing indexed so far is lost")
    assert "No space left on device" in line

    again = photosearch(env, data, tiny_model_dir, "index", "--no-progress", library)  # retried, still full
    assert_one_line_error(again, 73, f"the data directory {data} is full", "nothing indexed so far is lost")

    subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space freed
    done = photosearch(env, data, tiny_model_dir, "index", "--no-progress", library)
    assert done.returncode == 0, done.stderr
    unchanged = int(re.search(r"(\d+) unchanged", done.stdout).group(1))  # type: ignore[union-attr]
    assert unchanged > 0, done.stdout  # what the first run indexed before the disk filled was kept
    with Library.open(make_config(data, tiny_model_dir), embedder_factory=Counted()) as opened:
        converged(opened, 900)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system has no space left; the file is returned."""
    ballast = folder / "ballast"
    with ballast.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return ballast


def test_full_file_system_at_the_store_interface(tmp_path: Path, mount: Mount) -> None:
    """Each store, its work queue and the writer lock on a file system with no space left: the typed error with
    SQLite's, Chroma's or the OS's own exception chained; after space is freed, the next run converges."""
    photos = make_photos(tmp_path / "lib", 5, size=(32, 24))
    small = mount("small", size="4m")
    data = small / "data"
    with hash_library(data) as library:
        library.index([photos])
        root_id = library.roots()[0].id
        store = library.store()
        ballast = fill(small)

        rows = [{"path": str(photos / f"{'x' * 200}{i}.jpg"), "root_id": root_id, "folder": "", "size": 1,
                 "mtime_ns": 1, "status": PhotoStatus.PENDING} for i in range(2000)]  # fmt: skip
        with pytest.raises(DataDirFullError) as caught:
            library.catalog.upsert_files(rows)
        assert_typed(caught.value, OperationalError, data)
        assert "database or disk is full" in str(caught.value.__cause__)  # the OperationalError
        with pytest.raises(DataDirFullError) as caught:
            WorkQueue(library.catalog).put([(Path(row["path"]), None, False) for row in rows], debounce=0.0)
        assert_typed(caught.value, OperationalError, data)

        vectors = np.random.default_rng(0).random((2000, HashEmbedder.identity.dim), dtype=np.float32)
        with pytest.raises(DataDirFullError) as caught:
            store.upsert([f"{i:032x}" for i in range(2000)], vectors)
        assert_typed(caught.value, (chromadb.errors.ChromaError, OSError), data)

        make_photo(photos / "new.jpg", seed=100, size=(32, 24))
        with pytest.raises(DataDirFullError) as caught:
            library.index([photos])
        assert str(caught.value).startswith(f"the data directory {data} is full (No space left on device): ")

    ballast.unlink()  # space freed (what was filling the disk was not ours)
    with hash_library(data) as library:
        library.index([photos])
        converged(library, 6)


# -- real damage to the stores' files, at the store interface ------------------------------------------------


def test_damaged_vector_store_raises_typed_errors_on_every_path_then_recovers(tmp_path: Path) -> None:
    photos, data = make_photos(tmp_path / "lib", 6, size=(32, 24)), tmp_path / "data"
    with hash_library(data) as library:
        library.index([photos])
    saved = damage(data / "chroma" / "chroma.sqlite3", ["embeddings_queue"])  # Chroma's write-ahead log of vectors

    vector = np.ones(HashEmbedder.identity.dim, dtype=np.float32)

    def calls(store: VectorStore) -> dict[str, Callable[[], object]]:
        return {
            "count": store.count,
            "query": lambda: store.query(vector, 3),
            "upsert": lambda: store.upsert(["9" * 32], vector[None, :]),
            "delete": lambda: store.delete(["1" * 32]),
            "all keys": store.all_keys,
            "vectors": lambda: store.vectors(["1" * 32]),
        }

    with hash_library(data) as library:
        store = library.store()
        # The vector files are intact: the reads are theirs; the writes reach Chroma and fail, typed.
        assert store.count() == 6 and len(store.query(vector, 3)) == 3 and len(store.all_keys()) == 6
        for name in ("upsert", "delete"):
            with pytest.raises(VectorStoreError) as caught:
                calls(store)[name]()
            assert_typed(caught.value, chromadb.errors.ChromaError, data / "chroma")
    shutil.rmtree(data / "vectors")  # a library from before the files: every path reads Chroma
    with hash_library(data) as library:
        for name, call in calls(library.store()).items():
            with pytest.raises(VectorStoreError) as caught:
                call()
            assert_typed(caught.value, chromadb.errors.ChromaError, data / "chroma")
            assert not isinstance(caught.value, DataDirFullError), name
        make_photo(photos / "new.jpg", seed=100, size=(32, 24))
        with pytest.raises(StoreError) as caught:
            library.index([photos])
        assert_typed(caught.value, chromadb.errors.ChromaError, data / "chroma")

    (data / "chroma" / "chroma.sqlite3").write_bytes(saved)
    with hash_library(data) as library:
        library.index([photos])
        converged(library, 7)


def test_damaged_catalog_raises_typed_errors_on_every_path_then_recovers(tmp_path: Path) -> None:
    photos, data = make_photos(tmp_path / "lib", 6, size=(32, 24)), tmp_path / "data"
    with hash_library(data) as library:
        library.index([photos])
        root_id = library.roots()[0].id
    saved = damage(data / "catalog.sqlite3", ["photos", "roots", "queue"])

    with hash_library(data) as library:  # opening reads only the schema and its revision, which are intact
        catalog, queue = library.catalog, WorkQueue(library.catalog)
        row = {"path": str(photos / "x.jpg"), "root_id": root_id, "folder": "", "size": 1, "mtime_ns": 1,
               "status": PhotoStatus.PENDING}  # fmt: skip
        calls: dict[str, Callable[[], object]] = {
            "roots": catalog.roots,
            "counts": catalog.counts,
            "records": lambda: catalog.records([1, 2]),
            "file states": lambda: catalog.file_states(root_id),
            "upsert": lambda: catalog.upsert_files([row]),
            "set indexed": lambda: catalog.set_indexed([(1, "h")]),
            "delete": lambda: catalog.delete([1]),
            "remove root": lambda: catalog.remove_root(root_id),
            "queue put": lambda: queue.put([(photos / "x.jpg", None, False)], debounce=0.0),
            "queue due": lambda: queue.due(time.time(), 10),
            "index": lambda: library.index([photos]),
            "search": lambda: library.search("anything"),
        }
        for name, call in calls.items():
            with pytest.raises(CatalogError) as caught:
                call()
            assert_typed(caught.value, SQLAlchemyError, data / "catalog.sqlite3")
            assert "database disk image is malformed" in str(caught.value), name

    (data / "catalog.sqlite3").write_bytes(saved)
    with hash_library(data) as library:
        library.index([photos])
        converged(library, 6)


def test_read_only_vector_store_is_a_data_directory_error_then_recovers(tmp_path: Path, mount: Mount) -> None:
    photos, data = make_photos(tmp_path / "lib", 5, size=(32, 24)), tmp_path / "data"
    with hash_library(data) as library:
        library.index([photos])
    make_photo(photos / "new.jpg", seed=100, size=(32, 24))
    chroma = mount(data / "chroma", read_only=True)

    with hash_library(data) as library:
        with pytest.raises(DataDirNotWritableError) as caught:
            library.index([photos])
        assert_typed(caught.value, chromadb.errors.ChromaError, data)
        assert str(caught.value).startswith(f"the data directory {data} cannot be written (")
        assert caught.value.exit_code == 73
    del caught  # its traceback holds the frames that hold the closed stores' files open

    unmount(chroma)
    with hash_library(data) as library:
        library.index([photos])
        converged(library, 6)


# -- the same through the CLI ----------------------------------------------------------------------------------


def test_damaged_stores_through_the_cli_are_one_line_then_the_next_run_converges(
    tmp_path: Path, tiny_model_dir: Path, env: dict[str, str]
) -> None:
    """Damage that opening a store does not read, met by a query, an upsert or a scan: before, "unexpected
    error: InternalError: ..." or "DatabaseError: (sqlite3.DatabaseError) ... sqlalche.me" with exit 70."""
    photos, data = make_photos(tmp_path / "lib", 5, size=(32, 24)), tmp_path / "data"
    chroma_db, catalog_db = data / "chroma" / "chroma.sqlite3", data / "catalog.sqlite3"
    assert photosearch(env, data, tiny_model_dir, "index", "--no-progress", photos).returncode == 0
    make_photo(photos / "new.jpg", seed=100, size=(32, 24))

    saved = damage(chroma_db, ["embeddings_queue"])
    for args in (("index", "--no-progress"), ("search", "a red square")):
        failed = photosearch(env, data, tiny_model_dir, *args)
        assert_one_line_error(failed, 74, f"the vector store in {data / 'chroma'}: ")
    chroma_db.write_bytes(saved)

    saved = damage(catalog_db, ["photos", "roots"])
    for args in (("index", "--no-progress"), ("status",)):
        failed = photosearch(env, data, tiny_model_dir, *args)
        assert_one_line_error(failed, 74, f"the catalog {catalog_db}: database disk image is malformed")
    catalog_db.write_bytes(saved)

    done = photosearch(env, data, tiny_model_dir, "index", "--no-progress")
    assert done.returncode == 0, done.stderr
    with Library.open(make_config(data, tiny_model_dir), embedder_factory=Counted()) as library:
        converged(library, 6)
