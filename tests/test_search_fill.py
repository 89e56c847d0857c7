"""Top-k searches return k results when k indexed photos exist, even when the nearest vectors' rows are not indexed.

Planted vectors: each photo is one flat colour whose red value r puts its vector at angle r * STEP from the text
query's, so the ranking is known exactly. Pending rows that keep their old vectors are made the way an interrupted
run leaves them: the files change, and the run stops (Ctrl-C) in the model call, after their rows went to pending.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosearch.config import Config, ModelConfig
from photosearch.library import Library
from photosearch.models.identity import ModelIdentity
from photosearch.models.protocols import ImageModel, TextModel
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers

STEP = 0.03  # radians between neighbouring photos: 40 photos span 1.2 rad, so cos falls with r throughout
PHOTOS = 40
QUERY = "the planted direction"


class PlantedEmbedder(ImageModel, TextModel):
    """An Embedder on the models' batching base: a photo's vector is set by its red value; every text is the
    query vector."""

    identity = ModelIdentity(name="test/planted", revision="1", dim=8)
    preferred_batch_size = 64  # one batch per run: an interrupted run leaves every changed row pending
    input_side = 16
    on_cpu = True

    def __init__(self) -> None:
        self.interrupt = False

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if self.interrupt:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run
        return np.stack([_at(int(p[0, 0, 0]) * STEP) for p in prepared])

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([_at(0.0) for _ in texts])


def _at(angle: float) -> np.ndarray:
    vector = np.zeros(PlantedEmbedder.identity.dim, dtype=np.float32)
    vector[0], vector[1] = np.cos(angle), np.sin(angle)
    return vector


def _photo(path: Path, red: int, green: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (red, green, 0)).save(path)
    return path


class Queries:
    """Counts the Chroma queries (the public VectorStore.query, wrapped)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = VectorStore.query

        def counted(store: VectorStore, *args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(store, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(VectorStore, "query", counted)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Library, PlantedEmbedder, list[Path]]]:
    root = tmp_path / "lib"
    paths = [_photo(root / f"r{r:02d}.png", red=r) for r in range(PHOTOS)]
    embedder = PlantedEmbedder()
    config = Config(data_dir=tmp_path / "data", model=ModelConfig(name=embedder.identity.name, batch_size=64))
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        library.index([root])
        yield library, embedder, paths


def _leave_pending(library: Library, embedder: PlantedEmbedder, paths: Sequence[Path]) -> None:
    """The files change, and the run that re-embeds them is interrupted: their rows are pending, old vectors kept."""
    for path in paths:
        _photo(path, red=int(path.stem[1:]), green=1)
    embedder.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        library.index()
    embedder.interrupt = False


def _ids(library: Library, paths: Sequence[Path]) -> list[int]:
    found = [library.catalog.by_path(path) for path in paths]
    return [record.id for record in found if record is not None]


def test_k_results_when_the_nearest_rows_are_pending(planted, monkeypatch):
    library, embedder, paths = planted
    queries = Queries(monkeypatch)
    every = library.search(QUERY, k=10)
    assert [r.id for r in every] == _ids(library, paths[:10])
    assert queries.take() == 1  # every row indexed: one Chroma query, as before

    _leave_pending(library, embedder, paths[:25])  # the 25 nearest photos
    assert library.status().pending == 25
    assert library.stores().vector_count() == PHOTOS  # their vectors are still there, nearest of all

    results = library.search(QUERY, k=10)
    assert [r.id for r in results] == _ids(library, paths[25:35])  # the ten nearest indexed ones, in order
    assert [r.rank for r in results] == list(range(1, 11))
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([float(np.cos(r * STEP)) for r in range(25, 35)], abs=1e-5)
    records = library.catalog.records([r.id for r in results])
    assert {records[r.id].status for r in results} == {PhotoStatus.INDEXED}
    assert queries.take() <= 3  # grown geometrically, not one row at a time

    # fewer only when fewer exist: 15 photos are indexed
    assert [r.id for r in library.search(QUERY, k=20)] == _ids(library, paths[25:])
    assert [r.id for r in library.search(QUERY, k=1000)] == _ids(library, paths[25:])


def test_similar_fills_up_past_pending_rows_and_the_photo_itself(planted):
    library, embedder, paths = planted
    _leave_pending(library, embedder, paths[:25])
    # r25's own vector: its nearest are r24 (pending), itself (left out), r26, r23 (pending), r27, ...
    results = library.similar(paths[25], k=10)
    assert [r.id for r in results] == _ids(library, paths[26:36])
    # an image that is not in the library: nearest are the pending r0..r24, then the indexed r25...
    outside = _photo(paths[0].parent.parent / "outside.png", red=0, green=7)
    assert [r.id for r in library.similar(outside, k=5)] == _ids(library, paths[25:30])


def test_a_search_while_no_row_is_indexed_reads_no_further_than_its_first_fetch(planted, monkeypatch):
    """Every file changed and the run was interrupted: every row is pending beside its old vector. Nothing can be
    found, and a search does not read the whole collection to learn that (the catalog has no indexed row)."""
    library, embedder, paths = planted
    _leave_pending(library, embedder, paths)
    assert library.status().pending == PHOTOS and library.stores().vector_count() == PHOTOS
    queries = Queries(monkeypatch)
    assert library.search(QUERY, k=5) == []
    assert queries.take() == 1
