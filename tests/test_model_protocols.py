"""The models' batching base (models/protocols.py): batches, empty input and output checks, written once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from photosearch.errors import ModelError
from photosearch.models.embedder import ClipEmbedder
from photosearch.models.identity import ModelIdentity
from photosearch.models.protocols import ImageModel, TextModel
from photosearch.models.textencoder import TextEncoder

DIM = 4


class Recording(ImageModel, TextModel):
    """Records the size of every batch that reaches the model; ``rows``/``dim`` bend what a batch returns."""

    identity = ModelIdentity("test/recording", "1", DIM)
    input_side = 8
    on_cpu = True

    def __init__(self, batch_size: int = 3, text_batch_size: int = 2) -> None:
        self._batch_size, self._text_batch_size = batch_size, text_batch_size
        self.image_batches: list[int] = []
        self.text_batches: list[int] = []
        self.extra_rows, self.dim = 0, DIM

    @property
    def preferred_batch_size(self) -> int:
        return self._batch_size

    @property
    def text_batch_size(self) -> int:
        return self._text_batch_size

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def _rows(self, values: Sequence[float]) -> np.ndarray:
        rows = np.zeros((len(values) + self.extra_rows, self.dim), dtype=np.float64)  # float64: made float32
        filled = min(len(values), len(rows))
        rows[:filled, 0] = values[:filled]
        return rows

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        self.image_batches.append(len(prepared))
        return self._rows([float(p[0, 0, 0]) for p in prepared])

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.text_batches.append(len(texts))
        return self._rows([float(len(t)) for t in texts])


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(n)]


def test_images_go_in_batches_of_the_preferred_size_in_order():
    model = Recording(batch_size=3)
    vectors = model.embed_images(_images(7))
    assert model.image_batches == [3, 3, 1]
    assert vectors.shape == (7, DIM) and vectors.dtype == np.float32
    assert vectors[:, 0].tolist() == list(range(7))
    assert model.embed_prepared([model.prepare(i) for i in _images(3)]).shape == (3, DIM)
    assert model.image_batches == [3, 3, 1, 3]


def test_texts_go_in_batches_of_the_text_batch_size_in_order():
    model = Recording(text_batch_size=2)
    vectors = model.embed_texts(["a", "bb", "ccc", "dddd", "eeeee"])
    assert model.text_batches == [2, 2, 1]
    assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
    assert vectors[:, 0].tolist() == [1, 2, 3, 4, 5]
    model.embed_texts(("x",) * 2)  # any sequence
    assert model.text_batches == [2, 2, 1, 2]


def test_empty_input_never_reaches_the_model():
    model = Recording()
    for vectors in (model.embed_images([]), model.embed_prepared([]), model.embed_texts([]), model.embed_texts(())):
        assert vectors.shape == (0, DIM) and vectors.dtype == np.float32
    assert model.image_batches == [] and model.text_batches == []


def test_a_bare_string_is_refused():
    model = Recording()
    with pytest.raises(TypeError, match="not a single string"):
        model.embed_texts("a cat")
    assert model.text_batches == []


@pytest.mark.parametrize(("extra_rows", "dim"), [(1, DIM), (-1, DIM), (0, DIM + 1)])
def test_a_batch_of_the_wrong_shape_is_a_model_error(extra_rows, dim):
    model = Recording()
    model.extra_rows, model.dim = extra_rows, dim
    for call in (lambda: model.embed_images(_images(2)), lambda: model.embed_texts(["a", "b"])):
        with pytest.raises(ModelError, match=r"test/recording .* not \(2, 4\)"):
            call()


def test_a_model_must_say_what_indexing_needs():
    class NoInputSide(ImageModel):
        identity = ModelIdentity("test/x", "1", DIM)
        preferred_batch_size = 2
        on_cpu = True

        def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
            return np.zeros((1, 1, 3), dtype=np.uint8)

        def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
            return np.zeros((len(prepared), DIM))

    with pytest.raises(TypeError, match="input_side"):
        NoInputSide()  # type: ignore[abstract]


def test_the_real_models_use_the_base():
    # Their public calls are the base's: neither re-implements batching or the input checks.
    for cls, base, calls in (
        (ClipEmbedder, ImageModel, ("embed_prepared", "embed_images")),
        (ClipEmbedder, TextModel, ("embed_texts",)),
        (TextEncoder, TextModel, ("embed_texts",)),
    ):
        assert issubclass(cls, base)
        assert all(getattr(cls, call) is getattr(base, call) for call in calls), cls
