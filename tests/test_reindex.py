"""Reindex side by side, in-process at the embedder protocol: search keeps answering from the complete index
with its own model, an interrupted reindex resumes without re-embedding what is done, and one can be cancelled.
(tests/test_reindex_processes.py kills real `reindex` and `serve` processes.)"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import HashEmbedder, _unit, assert_stores_agree, hash_config, make_photo
from PIL import Image

from photosearch.config import ModelConfig, replace
from photosearch.errors import ModelMismatchError
from photosearch.indexing.report import IndexCancelled
from photosearch.library import Library
from photosearch.models.identity import ModelIdentity
from photosearch.stores.vectors import LEGACY_PREFIX, VectorStore

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers

DISTINCT, COPIES = 30, 5


class SmallBatches(HashEmbedder):
    preferred_batch_size = 4


class OtherModel(SmallBatches):
    """Another model: another identity, other vectors for the same pixels."""

    identity = ModelIdentity(name="test/other-model", revision="2", dim=16)

    def _embed_image_batch(self, prepared):  # type: ignore[no-untyped-def]
        super()._embed_image_batch(prepared)  # counts
        return np.stack([_unit(hashlib.blake2b(b"B" + p.tobytes(), digest_size=16).digest()) for p in prepared])


class Models:
    """The embedder factory: one instance per model name, so each model's calls are counted."""

    def __init__(self) -> None:
        self.a, self.b = SmallBatches(), OtherModel()
        self.asked: list[str] = []

    def __call__(self, config: ModelConfig) -> HashEmbedder:
        self.asked.append(config.name)
        return self.b if config.name == OtherModel.identity.name else self.a


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Library, Models, Path]]:
    root = tmp_path / "lib"
    for i in range(DISTINCT):
        make_photo(root / f"d{i % 3}" / f"p{i}.png", seed=i, size=(32, 24))
    for i in range(COPIES):
        shutil.copy(root / f"d{i % 3}" / f"p{i}.png", root / f"copy{i}.png")
    models = Models()
    with Library.open(hash_config(tmp_path / "data"), embedder_factory=models) as library:
        library.index([root])
        yield library, models, root


def _switch_to_b(library: Library, models: Models) -> Library:
    """The same data directory with model B configured (what editing model.name does)."""
    config = replace(library.config, model=ModelConfig(name=OtherModel.identity.name, batch_size=4))
    return Library.open(config, embedder_factory=models)


def _stop_after(embedder: HashEmbedder, images: int):  # type: ignore[no-untyped-def]
    start = embedder.images
    return lambda: embedder.images - start >= images


def _everything_found(library: Library) -> None:
    indexed = library.catalog.ids_with_status("indexed")
    assert {r.id for r in library.search("anything", k=100)} == indexed and len(indexed) == DISTINCT + COPIES


@pytest.mark.parametrize("switch", [False, True], ids=["same-model", "model-switch"])
def test_an_interrupted_reindex_keeps_search_whole_and_resumes_where_it_stopped(setup, switch):
    library, models, _root = setup
    old = library.store().name
    if switch:
        library = _switch_to_b(library, models)
    new = models.b if switch else models.a
    calls = new.images
    with pytest.raises(IndexCancelled):
        library.reindex(should_stop=_stop_after(new, 8))
    done = new.images - calls
    assert 8 <= done < DISTINCT  # one vector per distinct content: the copies cost nothing
    status = library.status()
    assert status.reindex is not None and status.reindex[1:] == (done, DISTINCT)
    assert status.to_dict()["reindex"] == {"model": new.identity.describe(), "done": done, "total": DISTINCT}
    assert library.stored_model() == SmallBatches.identity and library.store().name == old  # search: the old index
    models.asked.clear()
    _everything_found(library)
    if switch:  # its text queries went to model A, the index's model, though B is configured
        assert OtherModel.identity.name not in models.asked

    report = library.index()  # an index run carries the reindex on first
    assert report.reindexed == DISTINCT - done and new.images - calls == DISTINCT  # nothing embedded twice
    assert report.reindex_complete and library.status().reindex is None
    assert library.stored_model() == new.identity and library.store().name != old
    assert library.store().chroma.names() == [library.store().name]  # the old collection is gone
    assert_stores_agree(library)
    _everything_found(library)
    record = library.catalog.by_path(next(iter(library.catalog.records([1]).values())).path)
    fresh = new.embed_images([Image.open(record.path).convert("RGB")])[0]
    np.testing.assert_allclose(library.stores().photo_vectors([record.id])[record.id], fresh, atol=1e-6)


def test_files_changed_or_gone_under_a_reindex_go_back_to_the_index_run(setup):
    library, models, root = setup
    make_photo(root / "d1" / "p1.png", seed=999, size=(32, 24))  # edited since it was indexed: copy1 has its bytes
    make_photo(root / "d1" / "p10.png", seed=998, size=(32, 24))  # edited, no copy: nothing has its bytes now
    (root / "d2" / "p2.png").unlink()  # deleted since: copy2 has its bytes
    (root / "d2" / "p11.png").unlink()  # deleted, no copy
    calls = models.a.images
    report = library.reindex()
    assert report.reindex_complete and library.status().reindex is None
    # 28 contents that some file still has; then the run after the switch embeds p1's and p10's new bytes
    assert models.a.images - calls == DISTINCT - 2 + 2 and report.reindexed == DISTINCT - 2
    assert library.catalog.by_path(root / "d2" / "p11.png") is None and library.catalog.by_path(root / "copy2.png")
    assert library.status().pending == 0 and library.status().failed == 0
    assert len(assert_stores_agree(library)) == DISTINCT + COPIES - 2


def test_cancel_frees_the_new_collection_and_keeps_the_index(setup):
    library, models, _root = setup
    switched = _switch_to_b(library, models)
    with pytest.raises(IndexCancelled):
        switched.reindex(should_stop=_stop_after(models.b, 4))
    assert len(switched.store().chroma.names()) == 2
    cancelled = switched.cancel_reindex()
    assert cancelled is not None and cancelled.model == OtherModel.identity
    assert switched.status().reindex is None and switched.cancel_reindex() is None
    with pytest.raises(ModelMismatchError):  # B configured, A's index, no reindex under way: as before it began
        switched.search("anything")
    assert library.store().chroma.names() == [library.store().name]
    _everything_found(library)
    assert library.stored_model() == SmallBatches.identity


def test_an_index_written_with_a_vector_per_photo_keeps_its_vectors(setup):
    """Before content keys, a collection ``photos_<key>`` held one vector per photo id: a run adopts them,
    embedding nothing, and drops the old collection."""
    library, models, _root = setup
    ids = sorted(library.catalog.ids_with_status("indexed"))
    vectors = library.stores().photo_vectors(ids)
    key = library.stored_model().key()
    legacy = VectorStore.open(library.store().chroma, LEGACY_PREFIX + key, library.stored_model().to_dict())
    legacy.upsert([str(i) for i in ids], np.stack([vectors[i] for i in ids]))
    library.store().chroma.drop([library.store().name])
    library.catalog.set_meta({"collection": None, "tidied": None})  # what an index of that time recorded: the model
    calls = models.a.images
    report = library.index()
    assert models.a.images == calls and report.embedded == 0
    assert library.store().chroma.names() == [library.store().name]
    assert_stores_agree(library)
    _everything_found(library)
