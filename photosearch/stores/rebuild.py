"""The stores' side of a reindex: the new collection beside the active one, what it still lacks, the switch.

The order (stores/generations.py has the why): the reindex is recorded in the catalog before its collection
exists; vectors go into that collection only; the switch is one catalog transaction; the old collection is
dropped after it. Search reads the active collection throughout, so every indexed photo stays findable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from photosearch.errors import VectorStoreError
from photosearch.models.identity import ModelIdentity
from photosearch.stores import generations
from photosearch.stores.catalog import Catalog, PhotoRecord
from photosearch.stores.generations import Generation
from photosearch.stores.vectors import LEGACY_PREFIX, ChromaPlace, VectorStore

log = logging.getLogger(__name__)


class Rebuild:
    """A reindex in progress: the target model's collection, filled hash by hash."""

    def __init__(self, catalog: Catalog, chroma: ChromaPlace, generation: Generation) -> None:
        self.catalog = catalog
        self.chroma = chroma
        self.generation = generation
        self.store = VectorStore.open(chroma, generation.collection, generation.model.to_dict())

    @classmethod
    def resume_or_start(cls, catalog: Catalog, chroma: ChromaPlace, model: ModelIdentity) -> Rebuild:
        """The reindex under way if it is to ``model``; else a new one (one under way to another model is dropped)."""
        under_way = generations.target(catalog)
        if under_way is not None and under_way.model == model:
            return cls(catalog, chroma, under_way)
        if under_way is not None:
            log.warning("the reindex to %s is replaced by one to %s", under_way.model.describe(), model.describe())
        generation = generations.start(catalog, model)  # recorded before its collection exists
        if under_way is not None:
            chroma.drop([under_way.collection])
        return cls(catalog, chroma, generation)

    def todo(self) -> dict[str, list[PhotoRecord]]:
        """The indexed hashes the new collection lacks, each with its indexed rows (whose files give its pixels)."""
        return self.catalog.indexed_by_hash(self._missing())

    def _missing(self) -> list[str]:
        return sorted(self.catalog.indexed_hashes() - self.store.all_keys())

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        self.store.upsert(hashes, vectors)

    def finish(self) -> bool:
        """Switch to the new collection if it has every indexed hash; drop the old one after. Whether it did."""
        if self._missing():  # a hash indexed since the run began: the next reindex or index run goes on
            return False
        old = generations.active(self.catalog)
        generations.switch(self.catalog, self.generation)
        if old is not None:
            self.chroma.drop([old.collection])
        log.info("reindex complete: the index is now %s", self.generation.model.describe())
        return True


def progress(catalog: Catalog, chroma: ChromaPlace) -> tuple[Generation, int, int] | None:
    """The reindex under way, if any: its target, the indexed hashes it has, and all of them."""
    under_way = generations.target(catalog)
    if under_way is None:
        return None
    total = catalog.indexed_hash_count()
    try:
        done = VectorStore(chroma, under_way.collection).count()
    except VectorStoreError:  # not created yet (interrupted right after it was recorded): none done
        done = 0
    return under_way, min(done, total), total


def cancel(catalog: Catalog, chroma: ChromaPlace) -> Generation | None:
    """Abandon the reindex under way: its record first, then its collection (freeing the space)."""
    under_way = generations.target(catalog)
    if under_way is not None:
        generations.cancel(catalog)
        chroma.drop([under_way.collection])
    return under_way


def tidy(catalog: Catalog, chroma: ChromaPlace) -> None:
    """Drop the collections neither search nor a reindex uses (a cancelled reindex's, an older model's). Called
    by writers only, under the writer lock: a reindex records its collection before it creates it. Skipped
    (without starting Chroma) while the catalog's record is what the last complete tidy left (generations.in_use)."""
    found = generations.in_use(catalog)
    if found is None or not found[2]:
        return
    active, keep, _ = found
    names = chroma.names()
    legacy = LEGACY_PREFIX + active.model.key()
    if legacy in names:
        _adopt_legacy(catalog, chroma, legacy, VectorStore.open(chroma, active.collection, active.model.to_dict()))
    chroma.drop([name for name in names if name not in keep])
    generations.record_tidied(catalog, keep)


def _adopt_legacy(catalog: Catalog, chroma: ChromaPlace, legacy: str, store: VectorStore) -> None:
    """An index written before vectors were keyed by content (``photos_``: by photo id) keeps its vectors: each
    indexed photo's vector goes in under its hash, read in pages; nothing is embedded again."""
    offset, page, moved = 0, 5000, 0
    while True:
        got = VectorStore(chroma, legacy).page(offset, page)
        records = catalog.records(int(i) for i in got["ids"])
        by_hash: dict[str, np.ndarray] = {}
        embeddings = got["embeddings"] if got["embeddings"] is not None else []
        for photo_id, vector in zip(got["ids"], embeddings, strict=True):
            record = records.get(int(photo_id))
            if record is not None and record.content_hash:
                by_hash[record.content_hash] = np.asarray(vector, dtype=np.float32)
        if by_hash:
            store.upsert(list(by_hash), np.stack(list(by_hash.values())))
        moved += len(by_hash)
        if len(got["ids"]) < page:
            break
        offset += page
    log.info("kept %d vectors of the index written before content keys (%s)", moved, legacy)
