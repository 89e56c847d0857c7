"""Queries, and the index's knowledge of its model: text search, similar photos, model mismatch and reindex."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Counted, assert_stores_agree, make_config, make_photo
from PIL import Image

from photosearch.errors import InvalidQueryError, ModelMismatchError
from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers


@pytest.fixture
def lib_dir(tmp_path):
    root = tmp_path / "Pictures"
    for i in range(8):
        make_photo(root / ("a" if i < 4 else "b") / f"p{i}.jpg", seed=i)
    return root


@pytest.fixture
def indexed(tmp_path, tiny_model_dir, lib_dir):
    counted = Counted()
    lib = Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=counted)
    lib.index([lib_dir])
    yield lib, counted
    lib.close()


def test_text_search_ranks_by_cosine_against_the_stored_vectors(indexed):
    library, _ = indexed
    results = library.search("a dog on the beach", k=5)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    # the scores are the real cosine similarities of the text vector with each photo's vector
    text = library.embedder().embed_texts(["a dog on the beach"])[0]
    vectors = library.stores().photo_vectors([r.id for r in results])
    for r in results:
        assert r.score == pytest.approx(float(vectors[r.id] @ text), abs=1e-4)
    # and nothing better was left out
    all_ids = sorted(library.catalog.ids_with_status("indexed"))
    best = max(float(v @ text) for v in library.stores().photo_vectors(all_ids).values())
    assert results[0].score == pytest.approx(best, abs=1e-4)


def test_k_and_folder_filter(indexed, lib_dir, tmp_path):
    library, _ = indexed
    assert len(library.search("x", k=3)) == 3
    assert len(library.search("x", k=50)) == 8
    in_a = library.search("x", k=50, folder=lib_dir / "a")
    assert {r.path.parent.name for r in in_a} == {"a"} and len(in_a) == 4
    with pytest.raises(InvalidQueryError, match="not inside any library root"):
        library.search("x", folder=tmp_path)
    with pytest.raises(InvalidQueryError, match="empty"):
        library.search("   ")


def test_similar_to_an_indexed_photo_leaves_it_out_and_uses_its_stored_vector(indexed, lib_dir):
    library, counted = indexed
    images_before = counted.images
    results = library.similar(lib_dir / "a" / "p1.jpg", k=7)
    assert len(results) == 7
    assert lib_dir / "a" / "p1.jpg" not in [r.path for r in results]
    assert counted.images == images_before  # no decode, no model call: the stored vector was used


def test_similar_to_an_outside_image_file(indexed, lib_dir, tmp_path):
    library, _counted = indexed
    outside = tmp_path / "outside.jpg"
    Image.open(lib_dir / "b" / "p5.jpg").save(outside, quality=90)  # same picture, other bytes
    results = library.similar(outside, k=3)
    assert results[0].path == lib_dir / "b" / "p5.jpg"
    assert results[0].score > 0.99


def test_another_model_is_refused_until_reindex(indexed, tmp_path, tiny_model_dir, tiny_model_dir_b, lib_dir):
    library, _ = indexed
    first_identity = library.stored_model()
    other = Counted()
    config_b = make_config(tmp_path / "data", tiny_model_dir_b)
    with Library.open(config_b, embedder_factory=other) as lib_b:
        with pytest.raises(ModelMismatchError, match="photosearch reindex"):
            lib_b.search("a cat")
        with pytest.raises(ModelMismatchError, match="photosearch reindex"):
            lib_b.index()
        assert other.last is None  # refused before the wrong model was even loaded
        report = lib_b.reindex()
        assert report.embedded == 8 and other.images == 8
        assert lib_b.stored_model() != first_identity
        assert lib_b.stored_model().name == str(tiny_model_dir_b.resolve())
        assert len(assert_stores_agree(lib_b)) == 8
        # every vector now is model B's: compare with B's own embedding of one photo
        record = lib_b.catalog.by_path(lib_dir / "a" / "p0.jpg")
        stored = lib_b.stores().photo_vectors([record.id])[record.id]
        fresh = other.loaded[str(tiny_model_dir_b)].embed_images([Image.open(record.path).convert("RGB")])[0]
        assert float(stored @ fresh) > 0.999
        assert lib_b.store().name.startswith("vectors_" + lib_b.stored_model().key())
        assert lib_b.store().chroma.names() == [lib_b.store().name]  # model A's vectors are gone
    # and now model A is the stranger
    config_a = make_config(tmp_path / "data", tiny_model_dir)
    with Library.open(config_a, embedder_factory=Counted()) as lib_a, pytest.raises(ModelMismatchError):
        lib_a.search("a cat")


def test_reindex_interrupted_then_completed_by_a_plain_index(indexed, tmp_path, tiny_model_dir_b):
    _library, _ = indexed
    other = Counted()
    other.fail_after_batches = 1
    config_b = make_config(tmp_path / "data", tiny_model_dir_b)
    with Library.open(config_b, embedder_factory=other) as lib_b, pytest.raises(KeyboardInterrupt):
        lib_b.reindex()
    finisher = Counted()
    with Library.open(config_b, embedder_factory=finisher) as lib_b:
        report = lib_b.index()
        assert report.embedded == 4  # the batch written before the interruption was kept
        ids = assert_stores_agree(lib_b)
        assert len(ids) == 8 and lib_b.status().pending == 0


def test_orientation_is_applied_before_embedding(tmp_path, tiny_model_dir, exif_samples):
    """The 8 orientation samples of one scene embed alike once upright, and unlike without it."""
    counted = Counted()
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=counted) as library:
        report = library.index([exif_samples / "jpg" / "orientation"])
        assert report.failed == 0
        for family in ("landscape", "portrait"):
            paths = [exif_samples / "jpg" / "orientation" / f"{family}_{n}.jpg" for n in range(1, 9)]
            ids = [library.catalog.by_path(p).id for p in paths]
            vectors = library.stores().photo_vectors(ids)
            upright = np.stack([vectors[i] for i in ids])
            raw = counted.loaded[str(tiny_model_dir)].embed_images([Image.open(p).convert("RGB") for p in paths])
            # A tiny random model sees mostly colour statistics, which a rotation keeps, so absolute cosines
            # are all high; the test compares distances instead. Were orientation ignored, the ratio would be 1.
            upright_distance = 1 - (upright @ upright[0]).min()
            raw_distance = 1 - (raw @ raw[0]).min()
            assert upright_distance < 0.6 * raw_distance, (family, upright_distance, raw_distance)
