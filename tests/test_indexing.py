"""Indexing end to end through the library API: real SQLite, real Chroma, a real (tiny) CLIP model."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from helpers import (
    Counted,
    CountingEmbedder,
    assert_stores_agree,
    leave_as_killed,
    make_config,
    make_photo,
    run_left_unfinished,
)

from photosearch.errors import LibraryRootError
from photosearch.indexing import imaging, pipeline
from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers


@pytest.fixture
def counted():
    return Counted()


@pytest.fixture
def lib_dir(tmp_path):
    root = tmp_path / "Pictures"
    for i in range(6):
        make_photo(root / f"p{i}.jpg", seed=i)
    for i in range(6, 9):
        make_photo(root / "trips" / "2023" / f"t{i}.png", seed=i)
    return root


@pytest.fixture
def library(tmp_path, tiny_model_dir, counted):
    lib = Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=counted)
    yield lib
    lib.close()


def test_first_index_embeds_everything_and_stores_agree(library, lib_dir, counted):
    report = library.index([lib_dir])
    assert (report.new, report.failed, report.embedded) == (9, 0, 9)
    assert counted.images == 9
    ids = assert_stores_agree(library)
    assert len(ids) == 9
    records = library.catalog.records(ids)
    assert {r.path.name for r in records.values()} == {f"p{i}.jpg" for i in range(6)} | {
        f"t{i}.png" for i in range(6, 9)
    }
    trip = next(r for r in records.values() if r.path.name == "t6.png")
    assert (trip.folder, trip.width, trip.height, trip.format) == ("trips/2023", 320, 240, "PNG")
    assert [r.path for r in library.roots()] == [lib_dir.resolve()]


def test_second_run_reads_nothing_and_never_loads_the_model(library, lib_dir, counted, tmp_path, tiny_model_dir):
    library.index([lib_dir])
    fresh = Counted()
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=fresh) as again:
        report = again.index()  # every remembered root
    assert (report.unchanged, report.new, report.embedded) == (9, 0, 0)
    assert fresh.last is None  # the model was never even loaded


def test_changed_content_is_embedded_again_but_a_touch_is_not(library, lib_dir, counted):
    library.index([lib_dir])
    before = counted.images
    old_id = library.catalog.by_path(lib_dir / "p0.jpg").id
    make_photo(lib_dir / "p0.jpg", seed=100)  # new content, same path
    os.utime(lib_dir / "p1.jpg")  # new mtime, same bytes
    report = library.index()
    assert (report.changed, report.unchanged, report.embedded) == (1, 8, 1)
    assert counted.images == before + 1
    assert library.catalog.by_path(lib_dir / "p0.jpg").id == old_id  # same row, vector replaced
    assert_stores_agree(library)


def test_rename_and_folder_move_keep_vectors_without_calling_the_model(library, lib_dir, counted):
    library.index([lib_dir])
    vectors_before = library.stores().photo_vectors(sorted(library.catalog.ids_with_status("indexed")))
    ids_before = {r.path.name: r.id for r in library.catalog.records(vectors_before).values()}
    calls = counted.images
    (lib_dir / "p0.jpg").rename(lib_dir / "renamed.jpg")
    shutil.move(lib_dir / "trips", lib_dir / "holidays")
    report = library.index()
    assert (report.moved, report.new, report.removed, report.embedded) == (4, 0, 0, 0)
    assert counted.images == calls
    assert library.catalog.by_path(lib_dir / "renamed.jpg").id == ids_before["p0.jpg"]
    moved = library.catalog.by_path(lib_dir / "holidays" / "2023" / "t6.png")
    assert (moved.id, moved.folder) == (ids_before["t6.png"], "holidays/2023")
    after = library.stores().photo_vectors([moved.id])
    np.testing.assert_array_equal(after[moved.id], vectors_before[moved.id])
    # the catalog followed the move: a folder filter finds it under its new folder only
    hits = library.search("anything", k=9, folder=lib_dir / "holidays")
    assert {h.path.name for h in hits} == {"t6.png", "t7.png", "t8.png"}
    assert library.search("anything", k=9, folder=lib_dir / "holidays" / "2023" / "..")[0].folder.startswith("holidays")
    assert_stores_agree(library)


def test_a_photo_moved_up_out_of_a_deep_folder_leaves_that_subtree(library, lib_dir):
    """A folder scope is the photo's folder now, not one it was in."""
    make_photo(lib_dir / "deep" / "a" / "b" / "x.jpg", seed=77)
    library.index([lib_dir])
    assert [h.path.name for h in library.search("x", k=20, folder=lib_dir / "deep" / "a")] == ["x.jpg"]
    (lib_dir / "deep" / "a" / "b" / "x.jpg").rename(lib_dir / "deep" / "x.jpg")
    assert library.index().moved == 1
    assert library.search("x", k=20, folder=lib_dir / "deep" / "a") == []
    assert [h.path.name for h in library.search("x", k=20, folder=lib_dir / "deep")] == ["x.jpg"]


def test_byte_identical_duplicates_are_embedded_once(library, lib_dir, counted):
    shutil.copy(lib_dir / "p2.jpg", lib_dir / "copy-of-p2.jpg")
    report = library.index([lib_dir])
    assert (report.new, report.embedded, report.reused) == (10, 9, 1)
    shutil.copy(lib_dir / "p3.jpg", lib_dir / "trips" / "another-p3.jpg")
    report = library.index()
    assert (report.new, report.embedded, report.reused) == (1, 0, 1)
    a, b = (library.catalog.by_path(lib_dir / n).id for n in ("p3.jpg", "trips/another-p3.jpg"))
    vectors = library.stores().photo_vectors([a, b])
    np.testing.assert_array_equal(vectors[a], vectors[b])
    assert_stores_agree(library)


def test_deleted_files_leave_both_stores(library, lib_dir):
    library.index([lib_dir])
    gone = library.catalog.by_path(lib_dir / "p4.jpg").id
    (lib_dir / "p4.jpg").unlink()
    shutil.rmtree(lib_dir / "trips")
    report = library.index()
    assert report.removed == 4
    ids = assert_stores_agree(library)
    assert len(ids) == 5 and gone not in ids
    assert library.catalog.by_path(lib_dir / "p4.jpg") is None


def test_missing_root_is_reported_and_its_photos_are_kept(library, lib_dir, tmp_path):
    library.index([lib_dir])
    lib_dir.rename(tmp_path / "unmounted")
    report = library.index()
    assert report.missing_roots == [lib_dir.resolve()]
    assert report.removed == 0
    assert len(assert_stores_agree(library)) == 9
    assert library.status().missing_roots == [lib_dir.resolve()]


def test_adding_a_missing_folder_is_a_clear_error(library, tmp_path):
    with pytest.raises(LibraryRootError, match="does not exist"):
        library.index([tmp_path / "nope"])
    with pytest.raises(LibraryRootError, match="photosearch index FOLDER"):
        library.index()


def test_interrupted_run_converges_without_duplicates(library, lib_dir, counted, tmp_path, tiny_model_dir):
    """Ctrl-C after the first batch (the embedder raises KeyboardInterrupt), then a normal run."""
    for i in range(9, 20):
        make_photo(lib_dir / f"more{i}.jpg", seed=i)
    counted.fail_after_batches = 1
    with pytest.raises(KeyboardInterrupt):
        library.index([lib_dir])
    assert run_left_unfinished(library)  # the journal (or the run's lease) says the run did not finish
    again = Counted()
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=again) as lib2:
        report = lib2.index()
        assert report.reconciled
        ids = assert_stores_agree(lib2)
        assert len(ids) == 20
        assert lib2.status().pending == 0
        # the first batch (4 photos) was kept: only the rest went through the model
        assert again.images == 16


def test_stores_converge_after_vectors_and_rows_disagree(library, lib_dir):
    """Whatever a crash left behind (an orphan vector, an indexed row without vector), the next run mends it."""
    library.index([lib_dir])
    ids = sorted(library.catalog.ids_with_status("indexed"))
    library.store().delete([library.catalog.get(ids[0]).content_hash])  # indexed row, vector lost
    vec = library.stores().photo_vectors([ids[1]])[ids[1]]
    library.store().upsert(["f" * 32], vec[None, :])  # vector without a row
    leave_as_killed(library)
    report = library.index()
    assert report.reconciled and report.embedded == 1
    assert len(assert_stores_agree(library)) == 9


def test_a_lost_vector_is_noticed_even_without_the_journal(library, lib_dir):
    library.index([lib_dir])
    ids = sorted(library.catalog.ids_with_status("indexed"))
    library.store().delete([library.catalog.get(ids[3]).content_hash])
    report = library.index()
    assert report.reconciled and report.embedded == 1
    assert len(assert_stores_agree(library)) == 9


def test_an_empty_root_is_treated_as_unmounted_not_as_everything_deleted(library, lib_dir):
    """An unmounted drive or share usually leaves its mount point behind as an empty folder."""
    library.index([lib_dir])
    for photo in sorted(lib_dir.rglob("*"), reverse=True):
        photo.unlink() if photo.is_file() else photo.rmdir()
    report = library.index()
    assert report.missing_roots == [lib_dir.resolve()] and report.removed == 0
    assert len(assert_stores_agree(library)) == 9
    assert library.status().missing_roots == [lib_dir.resolve()]


class _Watching(CountingEmbedder):
    """Counts the decodes that start while the model computes; pretends the model is on a CPU or a GPU."""

    def __init__(self, inner, on_cpu: bool, decodes: list[int]) -> None:
        super().__init__(inner)
        self._on_cpu, self._decodes, self.started_during = on_cpu, decodes, []

    @property
    def on_cpu(self) -> bool:
        return self._on_cpu

    def embed_prepared(self, prepared):
        before = len(self._decodes)
        time.sleep(0.3)  # a slow model: time for decode threads to start more photos, if they may
        self.started_during.append(len(self._decodes) - before)
        return super().embed_prepared(prepared)


@pytest.mark.parametrize("on_cpu", [True, False])
def test_decoding_pauses_while_a_cpu_model_computes(tmp_path, tiny_model_dir, monkeypatch, on_cpu):
    """With a CPU model, decode threads and the model take turns (overlapping them is slower on the same cores);
    with a GPU model they overlap. A CPU batch starts only once the photos being decoded are done."""
    decodes: list[int] = []
    real_decode = imaging.decode_photo

    def counting_decode(*args, **kwargs):
        decodes.append(1)
        time.sleep(0.02)  # as slow as a camera photo, so the decode-ahead window is never done early
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(imaging, "decode_photo", counting_decode)  # examine reads it at each decode
    monkeypatch.setattr(pipeline, "decode_workers", lambda: 2)
    for i in range(24):
        make_photo(tmp_path / "lib" / f"p{i}.jpg", seed=100 + i)
    counted = Counted()
    watching: list[_Watching] = []

    def factory(config):
        inner = counted(config).inner
        watching.append(_Watching(inner, on_cpu, decodes))
        return watching[-1]

    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=factory) as library:
        report = library.index([tmp_path / "lib"])
    assert report.embedded == 24 and len(decodes) == 24
    during = watching[-1].started_during
    assert len(during) == 6  # batches of 4
    if on_cpu:
        assert max(during) == 0, during
    else:
        assert max(during) > 2, during  # the decode-ahead window keeps filling meanwhile
