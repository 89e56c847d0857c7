"""`store copy`: an embedded library (SQLite + embedded Chroma) moved to a PostgreSQL database and a Chroma server,
nothing embedded again; stopped and run again, it finishes; a target holding another library is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HashEmbedder, assert_stores_agree, hash_config, make_photo
from pgserver import PASSWORD

from photosearch.config import StoreConfig, replace
from photosearch.errors import LibraryBusyError, StoreCopyError
from photosearch.indexing.report import IndexCancelled
from photosearch.library import Library
from photosearch.locking import WriterLock
from photosearch.stores import generations
from photosearch.stores.copy import CopyReport
from photosearch.stores.schema import PhotoStatus


def build_library(base: Path, seeds: range = range(30)) -> tuple[Path, HashEmbedder]:
    """An embedded library of two roots: distinct photos, a byte-identical duplicate and a broken file."""
    a, b = base / "A", base / "B"
    for seed in seeds:  # the first with a name that is not UTF-8: stored losslessly, copied as stored
        name = os.fsdecode(b"caf\xe9.jpg") if seed == seeds[0] else f"p{seed}.jpg"
        make_photo((a if seed % 2 else b / "trip") / name, seed=seed)
    shutil.copy(a / f"p{seeds[1]}.jpg", b / "dup.jpg")
    (b / "broken.jpg").write_bytes(b"not a photo")
    embedder = HashEmbedder()
    with Library.open(hash_config(base / "data"), embedder_factory=lambda _c: embedder) as library:
        library.index([a, b], settle=0)
    return base / "data", embedder


def target_store(postgres_url: str, chroma: StoreConfig) -> StoreConfig:
    return StoreConfig(catalog=postgres_url, vectors=chroma.vectors, database=chroma.database)


def open_on(data_dir: Path, store: StoreConfig | None, embedder: HashEmbedder) -> Library:
    config = hash_config(data_dir)
    if store is not None:
        config = replace(config, store=store)
    return Library.open(config, embedder_factory=lambda _c: embedder)


class StopAfter:
    """A progress that stops the copy (as Ctrl-C would) after ``pages`` pages of the stage named ``stage``."""

    def __init__(self, stage: str, pages: int) -> None:
        self.wanted, self.pages, self.current, self.stages = stage, pages, "", []

    def stage(self, name: str, total: int) -> None:
        self.current = name
        self.stages.append(name)

    def advance(self, n: int) -> None:
        if self.current.startswith(self.wanted):
            self.pages -= 1
            if self.pages <= 0:
                raise KeyboardInterrupt


def test_a_copy_is_the_same_library_on_the_servers(tmp_path, postgres_url, chroma_store_config):
    data, embedder = build_library(tmp_path)
    embedded = embedder.images
    target = target_store(postgres_url, chroma_store_config)
    with open_on(data, None, embedder) as source:
        moved = (tmp_path / "A" / "to.jpg", tmp_path / "A" / "from.jpg", False)
        source.queue.put([moved, (tmp_path / "B", None, True)], debounce=5.0)  # the daemon's work, copied too
        queued = source.queue.due(float("inf"), 10)
        before = source.search("x", k=10)
        records = source.catalog.records(range(1, 1000))
        counts = source.catalog.counts()
        report = source.copy_to(target)
    assert report.verified and report.vectors_skipped == 0
    assert report.vectors_copied == 30 and report.rows["photos"] == 32 and report.rows["roots"] == 2
    assert embedder.images == embedded  # nothing went through the model

    with open_on(tmp_path / "elsewhere", target, embedder) as copy:
        assert copy.catalog.backend == "postgresql"
        assert copy.catalog.counts() == counts == {"indexed": 31, "pending": 0, "failed": 1}
        assert copy.catalog.records(range(1, 1000)) == records
        assert_stores_agree(copy)
        after = copy.search("x", k=10)
        assert [(h.id, h.path) for h in after] == [(h.id, h.path) for h in before]
        assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(after, before, strict=True))
        assert embedder.images == embedded
        assert copy.queue.due(float("inf"), 10) == queued and len(queued) == 2

        (tmp_path / "C").mkdir()
        assert [r.id for r in copy.add_roots([tmp_path / "C"])] == [3]  # ids after the copied ones
        make_photo(tmp_path / "A" / "new.jpg", seed=999)
        copy.index(settle=0)  # a new photo on the target takes the next id, colliding with none
        new = copy.photo_at(tmp_path / "A" / "new.jpg")
        assert new is not None and new.status == PhotoStatus.INDEXED and new.id == max(records) + 1
        assert embedder.images == embedded + 1


def test_stopped_and_run_again_it_finishes(tmp_path, postgres_url, chroma_store_config):
    data, embedder = build_library(tmp_path)
    target = target_store(postgres_url, chroma_store_config)
    with open_on(data, None, embedder) as source:
        records = source.catalog.records(range(1, 1000))
        with pytest.raises(KeyboardInterrupt):  # two pages of five vectors in
            source.copy_to(target, StopAfter("vectors", 2), page=5)
        with open_on(tmp_path / "elsewhere", target, embedder) as half:
            assert half.stored_model() is None  # no library there until the meta table is copied, last
        with pytest.raises(KeyboardInterrupt):  # the vectors done, stopped in the photos
            second = StopAfter("photos", 2)
            source.copy_to(target, second, page=5)
        assert second.stages[:1] == [f"vectors {generations.active(source.catalog).collection}"]
        report: CopyReport = source.copy_to(target, page=5)
    assert report.verified
    assert report.vectors_skipped == 30 and report.vectors_copied == 0  # all copied by the runs before
    with open_on(tmp_path / "elsewhere", target, embedder) as copy:
        assert copy.catalog.records(range(1, 1000)) == records
        assert_stores_agree(copy)


def test_the_first_resumed_run_copies_only_what_was_left(tmp_path, postgres_url, chroma_store_config):
    data, embedder = build_library(tmp_path)
    target = target_store(postgres_url, chroma_store_config)
    with open_on(data, None, embedder) as source:
        with pytest.raises(KeyboardInterrupt):
            source.copy_to(target, StopAfter("vectors", 3), page=5)
        report = source.copy_to(target, page=5)
    assert report.verified and (report.vectors_skipped, report.vectors_copied) == (15, 15)


def test_paths_are_copied_as_stored_past_the_path_mapping(tmp_path, postgres_url, chroma_store_config):
    """A library whose folders are mapped (store.paths: as the catalog knows them -> this machine's mount) keeps
    its stored paths: the other machines that share the copy know the folders by those."""
    mapped = StoreConfig(paths={"/mnt/photos": str(tmp_path)})
    make_photo(tmp_path / "A" / "p.jpg", seed=1)
    embedder = HashEmbedder()
    with open_on(tmp_path / "data", mapped, embedder) as source:
        source.index([tmp_path / "A"], settle=0)
        local = source.catalog.records([1])
        source.copy_to(target_store(postgres_url, chroma_store_config))
    assert local[1].path == tmp_path / "A" / "p.jpg"
    with open_on(tmp_path / "elsewhere", target_store(postgres_url, chroma_store_config), embedder) as unmapped:
        assert unmapped.catalog.records([1])[1].path == Path("/mnt/photos/A/p.jpg")
    both = replace(target_store(postgres_url, chroma_store_config), paths=mapped.paths)
    with open_on(tmp_path / "elsewhere", both, embedder) as copy:
        assert copy.catalog.records([1]) == local


class SmallBatches(HashEmbedder):
    preferred_batch_size = 4  # a reindex stops between batches


def test_a_reindex_under_way_is_copied_and_carries_on_there(tmp_path, postgres_url, chroma_store_config):
    embedder = SmallBatches()
    data, _ = build_library(tmp_path, range(20))
    target = target_store(postgres_url, chroma_store_config)
    with open_on(data, None, embedder) as source:
        with pytest.raises(IndexCancelled):
            source.reindex(should_stop=lambda: embedder.images >= 8)
        under_way = source.status().reindex
        assert under_way is not None and under_way[1] == 8
        hnsw = source.store().hnsw()
        report = source.copy_to(target)
    reindexing = generations.target(source.catalog)
    assert reindexing is not None and report.vectors == {source.store().name: 20, reindexing.collection: 8}
    with open_on(tmp_path / "elsewhere", target, embedder) as copy:
        assert copy.status().reindex == under_way and copy.store().hnsw() == hnsw
        copy.reindex()  # there it carries on: only the 12 contents the new collection lacks are embedded
        assert embedder.images == 8 + 12 and copy.status().reindex is None
        assert_stores_agree(copy)


def test_a_target_holding_another_library_is_refused(tmp_path, postgres_url, chroma_store_config):
    target = target_store(postgres_url, chroma_store_config)
    first, embedder = build_library(tmp_path / "one", range(10))
    with open_on(first, None, embedder) as library:
        library.copy_to(target)
    other, embedder = build_library(tmp_path / "two", range(50, 60))
    with open_on(other, None, embedder) as library:
        with pytest.raises(StoreCopyError, match=r"holds another library .*folder 1 is .*copy into an empty database"):
            library.copy_to(target)
        # An empty catalog, but the vectors' database holds the first library's collection (the same model's name)
        beside = replace(target, catalog=f"sqlite:///{tmp_path / 'blank.sqlite3'}")
        with pytest.raises(StoreCopyError, match=r"vectors at .* hold another library \(10 vectors in vectors_"):
            library.copy_to(beside)
    with open_on(tmp_path / "elsewhere", target, embedder) as copy:  # untouched
        records = copy.catalog.records(range(1, 100)).values()
        assert len(records) == 12 and all(tmp_path / "one" in r.path.parents for r in records)


def test_a_copy_waits_for_no_running_writer(tmp_path, postgres_url, chroma_store_config):
    data, embedder = build_library(tmp_path, range(4))
    with (
        WriterLock.acquire(data, "watch"),
        open_on(data, None, embedder) as library,
        pytest.raises(LibraryBusyError, match=r"watch is already running .*stop it first"),
    ):
        library.copy_to(target_store(postgres_url, chroma_store_config))


def _cli(data: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env["XDG_CONFIG_HOME"] = str(data.parent / "xdg-config")
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "store", "copy", "--no-progress", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    return result


def test_the_command(tmp_path, postgres_url, chroma_store_config):
    data, _ = build_library(tmp_path, range(6))
    to = ["--to-catalog", postgres_url, "--to-vectors", str(chroma_store_config.vectors),
          "--to-database", chroma_store_config.database]  # fmt: skip
    with WriterLock.acquire(data, "index"):
        busy = _cli(data, *to, expect=75)
    assert "stop it first" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
    out = _cli(data, *to).stdout
    assert "copied 6 vectors (0 there already)" in out and "verified" in out
    assert PASSWORD not in out and f'catalog = "{postgres_url.replace(PASSWORD, "***")}"' in out
    assert f'vectors = "{chroma_store_config.vectors}"' in out
    assert f'database = "{chroma_store_config.database}"' in out
    again = _cli(data, *to).stdout
    assert "copied 0 vectors (6 there already)" in again
    bad = _cli(data, "--to-catalog", "nonsense", "--to-vectors", "http://x:1", expect=78)
    assert bad.stderr.startswith("photosearch: error: store copy: --to-catalog must be a database URL")
