"""The models a library uses, loaded lazily, once per identity, and held to the index's identity.

Which model that is: the one the active index was built with (stores/generations.py). The configured
``model.name`` is checked against it before anything loads. During a reindex to the configured model, the
index's own model (by the name it recorded) keeps answering queries until the switch; after the switch, in
this process or another, the next use loads the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from photosearch.config import ModelConfig, replace
from photosearch.errors import ModelMismatchError
from photosearch.models.identity import ModelIdentity, recorded_name
from photosearch.models.protocols import Embedder, TextEmbedder
from photosearch.stores import generations
from photosearch.stores.catalog import Catalog

EmbedderFactory = Callable[[ModelConfig], Embedder]
TextEncoderFactory = Callable[[ModelConfig], TextEmbedder | None]  # None: this model needs the full Embedder


class LoadedModels:
    def __init__(
        self, config: ModelConfig, catalog: Catalog, embedder: EmbedderFactory, text: TextEncoderFactory | None
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._embedder_factory = embedder
        self._text_factory = text
        self._embedder: Embedder | None = None
        self._text: TextEmbedder | None = None
        self._lock = threading.RLock()  # request threads and the daemon thread of `serve` share these
        self._text_lock = threading.Lock()  # the text encoder loads beside the store (query/warmup.py)

    def stored(self) -> ModelIdentity | None:
        """The model of the index that search reads (while a reindex runs, the one it replaces)."""
        active = generations.active(self._catalog)
        return None if active is None else active.model

    def check_name(self) -> None:
        """Refuse a model.name other than the index's before loading anything, unless a reindex to it is under way."""
        self.check_against(self.stored())

    def check_against(self, stored: ModelIdentity | None) -> None:
        """check_name with the index's model as the caller has just read it (one catalog query less per search)."""
        if stored is None or stored.matches(self._config.name):
            return
        target = generations.target(self._catalog)
        if target is None or not target.model.matches(self._config.name):
            raise mismatch(stored.describe(), recorded_name(self._config.name))

    @property
    def text_loaded(self) -> bool:
        return self._text is not None

    def embedder(self) -> Embedder:
        """The index's model, loaded once; refused if the index was built with another model."""
        with self._lock:
            loaded, stored = self._embedder, self.stored()
            if loaded is None or (stored is not None and loaded.identity != stored):
                self.check_name()
                loaded = self._embedder_factory(self._index_model())
                self._adopt(loaded.identity)
                self._embedder = loaded
            return loaded

    def text_embedder(self) -> TextEmbedder:
        """What encodes text queries: the torch-free text tower when it covers the model, else the model."""
        with self._text_lock:
            loaded = self._text
            if loaded is None or self.stored() not in (None, loaded.identity):
                self.check_name()
                encoder = self._text_factory(self._index_model()) if self._text_factory else None
                if encoder is None:
                    encoder = self.embedder()
                self._adopt(encoder.identity)
                loaded = self._text = encoder
            return loaded

    def configured(self) -> Embedder:
        """The configured model, freshly loaded (a reindex's: its weights may differ from the loaded one's). Under
        the same lock as embedder(): importing transformers in two threads at once fails ("cannot import name")."""
        with self._lock:
            return self._embedder_factory(self._config)

    def switched_to(self, embedder: Embedder) -> None:
        """A reindex made ``embedder``'s model the index's: keep it loaded rather than load it again."""
        with self._lock:
            self._embedder = embedder

    def _index_model(self) -> ModelConfig:
        """The settings that load the index's model: the configured ones, with the index's name during a switch."""
        stored = self.stored()
        if stored is None or stored.matches(self._config.name):
            return self._config
        return replace(self._config, name=stored.name)

    def _adopt(self, identity: ModelIdentity) -> None:
        """The loaded model's identity: recorded when nothing is indexed yet, refused if not the index's."""
        stored = self.stored()
        if stored is None:
            stored = generations.record_active(self._catalog, identity).model  # another's, if it was first
        if stored != identity:
            raise mismatch(stored.describe(), identity.describe())


def mismatch(built_with: str, configured: str) -> ModelMismatchError:
    return ModelMismatchError(
        f"the index was built with {built_with} but the configuration names {configured}: "
        "run `photosearch reindex` to rebuild every vector with the configured model "
        "(or set model.name back)"
    )
