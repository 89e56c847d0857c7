"""The model interface, split by use, and the one implementation of its batching and input checks.

Indexing needs images in (``ImageEmbedder``), a query needs text in (``TextEmbedder``); the CLIP model is both
(``Embedder``, what a Library's embedder_factory returns). Tests fake these protocols, never a model's internals.

``ImageModel`` and ``TextModel`` are bases that implement the public calls once: empty input, splitting into
batches, and checking what each batch returns (one float32 row of ``identity.dim`` per input). A model, real or
fake, writes only the step for one non-empty batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from photosearch.errors import ModelError
from photosearch.models.identity import ModelIdentity

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")
TEXT_BATCH_SIZE = 64  # texts per model call unless a model says otherwise (queries come one at a time)


class TextEmbedder(Protocol):
    """What a text query needs: the CLIP model, or the torch-free text encoder (textencoder.py)."""

    @property
    def identity(self) -> ModelIdentity: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEmbedder(Protocol):
    """What indexing needs. Images go through the model in two steps, so the indexer can run the first in its
    decode threads: ``prepare`` (CPU work on one image, safe in any thread) and ``embed_prepared`` (the model, on
    a batch). ``embed_images`` is both in one call, for a caller with a few images at hand.
    """

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def preferred_batch_size(self) -> int: ...

    @property
    def input_side(self) -> int:
        """The shorter side images are resized to before the crop: decoding below it would lose detail."""
        ...

    @property
    def on_cpu(self) -> bool:
        """Whether the model computes on the CPU (then the indexer pauses decoding while it runs)."""
        ...

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        """The model input for one image (HWC uint8). ``source_size``: the photo's full size, when ``image``
        is a reduced decode of it."""
        ...

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class Embedder(ImageEmbedder, TextEmbedder, Protocol):
    """Images and text: what the indexer and search need from one model."""


class ImageModel(ABC):
    """ImageEmbedder's batching written once: a subclass gives its identity, batch size, input side, device,
    ``prepare`` and ``_embed_image_batch``."""

    @property
    @abstractmethod
    def identity(self) -> ModelIdentity: ...

    @property
    @abstractmethod
    def preferred_batch_size(self) -> int: ...

    @property
    @abstractmethod
    def input_side(self) -> int: ...

    @property
    @abstractmethod
    def on_cpu(self) -> bool: ...

    @abstractmethod
    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray: ...

    @abstractmethod
    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        """Unit vectors for 1 to preferred_batch_size prepared images."""

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        # Batches bound the model's memory whatever the caller passes.
        return batched(self.identity, prepared, self.preferred_batch_size, self._embed_image_batch)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_prepared([self.prepare(image) for image in images])


class TextModel(ABC):
    """TextEmbedder's batching and input check written once: a subclass gives its identity and
    ``_embed_text_batch`` (and ``text_batch_size`` to change it)."""

    @property
    @abstractmethod
    def identity(self) -> ModelIdentity: ...

    @property
    def text_batch_size(self) -> int:
        return TEXT_BATCH_SIZE

    @abstractmethod
    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for 1 to text_batch_size texts."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # a str is a Sequence[str]; embedding its characters is never meant
            raise TypeError("embed_texts takes a sequence of strings, not a single string")
        return batched(self.identity, list(texts), self.text_batch_size, self._embed_text_batch)


def batched(
    identity: ModelIdentity, items: Sequence[T], size: int, embed: Callable[[Sequence[T]], np.ndarray]
) -> np.ndarray:
    """``embed`` over ``items`` in batches of at most ``size``: one float32 row of ``identity.dim`` per item."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    chunks = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        rows = np.asarray(embed(chunk), dtype=np.float32)
        if rows.shape != (len(chunk), identity.dim):
            raise ModelError(
                f"model {identity.describe()} gave vectors of shape {rows.shape} for {len(chunk)} inputs,"
                f" not ({len(chunk)}, {identity.dim})"
            )
        chunks.append(rows)
    if not chunks:
        return np.zeros((0, identity.dim), dtype=np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
