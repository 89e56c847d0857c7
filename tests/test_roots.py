"""Library folders through the library API: remove, move, moved-folder hints and offline results. Real SQLite,
real Chroma, the tiny real CLIP model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Counted, assert_stores_agree, make_config, make_photo, make_two_roots

from photosearch.errors import LibraryRootError
from photosearch.indexing.indexer import JOURNAL_KEY
from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers


@pytest.fixture
def counted():
    return Counted()


@pytest.fixture
def library(tmp_path, tiny_model_dir, counted):
    lib = Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=counted)
    yield lib
    lib.close()


@pytest.fixture
def two_roots(tmp_path):
    return make_two_roots(tmp_path)


def _paths(results):
    return [r.path for r in results]


def test_remove_drops_the_photos_from_both_stores_and_keeps_the_files(library, two_roots):
    a, b = two_roots
    library.index([a, b])
    assert library.stores().vector_count() == 8
    assert library.remove_root(b) == 5
    assert [r.path for r in library.roots()] == [a]
    assert len(assert_stores_agree(library)) == 3 and library.stores().vector_count() == 3
    assert all(p.parent == a for p in _paths(library.search("x", k=10)))
    assert len(list(b.rglob("*.jpg"))) == 5  # only the index forgot them
    assert library.catalog.get_meta(JOURNAL_KEY) is None
    with pytest.raises(LibraryRootError, match="not a library folder"):
        library.remove_root(b)


def test_a_crash_between_the_rows_and_the_vectors_is_reconciled(library, two_roots):
    """Rows go first: stopped right after them, the next run deletes the vectors that lost their rows."""
    a, b = two_roots
    library.index([a, b])
    library.catalog.set_meta({JOURNAL_KEY: "removing a root pid=1"})
    (root_b,) = (r for r in library.roots() if r.path == b)
    library.catalog.remove_root(root_b.id)  # ...and the process dies here
    assert library.stores().vector_count() == 8
    assert len(library.search("x", k=10)) == 3  # the orphans are never shown meanwhile
    report = library.index()
    assert report.reconciled and report.embedded == 0
    assert len(assert_stores_agree(library)) == 3


def test_move_points_a_root_at_its_new_folder_without_the_model(library, two_roots, counted):
    a, b = two_roots
    library.index([a, b])
    before = {r.path.relative_to(b): r.id for r in library.catalog.records(library.catalog.ids_with_status("indexed"))
              .values() if b in r.path.parents}  # fmt: skip
    vectors = library.stores().photo_vectors(sorted(before.values()))
    calls = counted.images
    moved_to = b.with_name("B2")
    b.rename(moved_to)
    library.move_root(b, moved_to)
    assert sorted(r.path for r in library.roots()) == [a, moved_to]
    for rel, photo_id in before.items():
        record = library.catalog.by_path(moved_to / rel)
        assert record is not None and record.id == photo_id
        np.testing.assert_array_equal(library.stores().photo_vectors([photo_id])[photo_id], vectors[photo_id])
    in_trip = library.search("x", k=10, folder=moved_to / "trip")  # Chroma's metadata needed no change
    assert sorted(p.name for p in _paths(in_trip)) == ["b0.jpg", "b1.jpg"]
    report = library.index()
    assert (report.unchanged, report.new, report.moved, report.removed, report.embedded) == (8, 0, 0, 0, 0)
    assert counted.images == calls
    assert_stores_agree(library)


def test_rename_then_index_the_new_name_hints_and_a_move_merges(library, two_roots, counted):
    """B renamed to B2, then `index B2`: B2's photos reuse B's vectors, B looks moved, and searches never
    show a photo twice; recording the move folds B into B2."""
    a, b = two_roots
    library.index([a, b])
    calls = counted.images
    b2 = b.with_name("B2")
    b.rename(b2)
    report = library.index([b2])
    assert (report.new, report.reused, report.embedded) == (5, 5, 0)
    assert [(m.root, m.to, m.command) for m in report.moved_roots] == [(b, b2, f"photosearch roots move {b} {b2}")]
    assert library.status().to_dict()["moved_roots"] == [
        {"root": str(b), "to": str(b2), "command": f"photosearch roots move {b} {b2}"}
    ]
    hits = library.search("x", k=20)
    assert len(hits) == 8 and len(set(_paths(hits))) == 8 and not any(h.offline for h in hits)
    assert not any(b in p.parents for p in _paths(hits))
    with_offline = library.search("x", k=20, include_offline=True)
    assert len(with_offline) == 13
    assert {h.path for h in with_offline if h.offline} == {p for p in _paths(with_offline) if b in p.parents}

    merged = library.move_root(b, b2)
    assert merged.path == b2 and sorted(r.path for r in library.roots()) == [a, b2]
    assert len(assert_stores_agree(library)) == 8
    assert library.status().moved_roots == [] and library.status().missing_roots == []
    assert len(library.search("x", k=20, include_offline=True)) == 8
    assert library.index().embedded == 0 and counted.images == calls


def test_a_move_into_an_empty_root_only_repoints(library, two_roots, counted):
    """`roots add B2` before `roots move B B2`: the empty root gives way, and the rows keep their ids."""
    a, b = two_roots
    library.index([a, b])
    ids = library.catalog.ids_with_status("indexed")
    b2 = b.with_name("B2")
    b.rename(b2)
    library.add_roots([b2])
    library.move_root(b, b2)
    assert sorted(r.path for r in library.roots()) == [a, b2]
    assert library.catalog.ids_with_status("indexed") == ids
    assert library.index().embedded == 0
    assert_stores_agree(library)


def test_moves_that_would_nest_roots_or_lose_track_are_refused(library, two_roots, tmp_path):
    a, b = two_roots
    library.index([a, b])
    with pytest.raises(LibraryRootError, match="--force"):
        library.move_root(b, tmp_path / "not-mounted")
    (a / "sub").mkdir()
    with pytest.raises(LibraryRootError, match=r"inside the library folder .*roots remove"):
        library.move_root(b, a / "sub")
    with pytest.raises(LibraryRootError, match="contains the library folder"):
        library.move_root(b, tmp_path)
    with pytest.raises(LibraryRootError, match="not a library folder"):
        library.move_root(tmp_path / "C", a)
    library.move_root(b, tmp_path / "not-mounted", force=True)
    assert library.status().missing_roots == [tmp_path / "not-mounted"]


def test_offline_photos_are_left_out_but_k_results_still_come(library, two_roots):
    a, b = two_roots
    library.index([a, b])
    b.rename(b.with_name("unplugged"))
    hits = library.search("x", k=3)
    assert len(hits) == 3 and all(h.path.parent == a and not h.offline for h in hits)
    photo = a / "a0.jpg"
    similar = library.similar(photo, k=5)
    assert len(similar) == 2 and photo not in _paths(similar)
    assert len(library.similar(photo, k=10, include_offline=True)) == 7
    assert [h.to_dict()["offline"] for h in library.search("x", k=8, include_offline=True)].count(True) == 5


def test_a_merge_moves_what_the_other_root_lacks_and_survives_an_interruption(library, two_roots, counted):
    """B renamed to B2 and indexed while b3 and b4 were away: folding B in keeps their rows and vectors (the
    catalog's one transaction: a vector says nothing about roots), and model calls stay at zero after it."""
    a, b = two_roots
    library.index([a, b])
    b2 = b.with_name("B2")
    b.rename(b2)
    for name in ("b3.jpg", "b4.jpg"):
        (b2 / name).rename(a.parent / name)
    library.index([b2])
    for name in ("b3.jpg", "b4.jpg"):
        (a.parent / name).rename(b2 / name)  # back, with their sizes and mtimes
    old = {name: library.catalog.by_path(b / name) for name in ("b3.jpg", "b4.jpg")}
    b2_id = next(r.id for r in library.roots() if r.path == b2)

    assert b / "b4.jpg" not in _paths(library.search("x", k=20))  # B is missing: its photos are left out
    assert b / "b4.jpg" not in _paths(library.search("x", k=20, folder=b2))

    library.move_root(b, b2)
    for name, record in old.items():
        moved = library.catalog.by_path(b2 / name)
        assert (moved.id, moved.root_id) == (record.id, b2_id)
    assert sorted(p.name for p in _paths(library.search("x", k=20, folder=b2))) == [f"b{i}.jpg" for i in range(5)]
    calls = counted.images
    report = library.index()
    assert (report.unchanged, report.new, report.embedded) == (8, 0, 0) and counted.images == calls
    assert len(assert_stores_agree(library)) == 8


def test_a_folder_that_turned_up_inside_another_root_is_hinted_for_removal(library, two_roots):
    """B moved into A: A's next run indexes the copies, so B is a leftover to forget, not to move."""
    a, b = two_roots
    library.index([a, b])
    b.rename(a / "from-B")
    (hint,) = library.index([a]).moved_roots
    assert (hint.root, hint.to, hint.command) == (b, a / "from-B", f"photosearch roots remove {b}")
    assert hint.message() == f"library folder {b} looks moved to {a / 'from-B'}: run `photosearch roots remove {b}`"
    library.remove_root(b)
    assert library.status().moved_roots == [] and len(library.search("x", k=20, include_offline=True)) == 8


def test_moving_a_folder_whose_name_is_not_utf8(library, tmp_path, counted):
    """The prefix rewrite happens in SQL on the stored form (pathtext.py): names that are bytes survive it."""
    import os

    old = tmp_path / os.fsdecode(b"caf\xe9 100%_")
    for i in range(2):
        make_photo(old / os.fsdecode(b"\xff") / f"p{i}.jpg", seed=i)
    library.index([old])
    new = tmp_path / os.fsdecode(b"\xe9t\xe9")
    old.rename(new)
    library.move_root(old, new)
    assert sorted(r.path for r in library.roots()) == [new]
    assert sorted(_paths(library.search("x", k=5))) == [new / os.fsdecode(b"\xff") / f"p{i}.jpg" for i in range(2)]
    assert library.index().embedded == 0 and counted.images == 2
