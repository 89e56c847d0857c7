"""Which collection search reads, and which one a reindex is filling beside it: the catalog's record of both.

A reindex never takes search away. It fills a second collection (its own name, its own model's identity)
while search keeps answering from the active one with the active model; when every indexed hash has a vector
in the new collection, one catalog transaction makes it the active one (``switch``), and only then is the old
collection dropped. Interrupted at any point, the record of the reindex survives, and the next reindex, index
run or daemon start carries on from the hashes the new collection still lacks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from photosearch.models.identity import ModelIdentity
from photosearch.stores.catalog import Catalog
from photosearch.stores.vectors import PREFIX

MODEL_KEY = "model"  # the active index's ModelIdentity (its to_json)
COLLECTION_KEY = "collection"  # the active collection's name; unset: PREFIX + the model's key
REINDEX_KEY = "reindex"  # {"model": identity, "collection": name} while a reindex is under way
TIDIED_KEY = "tidied"  # the collections the last complete tidy kept (rebuild.tidy); not copied to another store


@dataclass(frozen=True)
class Generation:
    """One model's vectors: its identity and the collection that holds them."""

    model: ModelIdentity
    collection: str


def active(catalog: Catalog) -> Generation | None:
    return _active_of(catalog.get_metas([MODEL_KEY, COLLECTION_KEY]))  # one query: every search reads it


def _active_of(found: dict[str, str]) -> Generation | None:
    if MODEL_KEY not in found:
        return None
    model = ModelIdentity.from_json(found[MODEL_KEY])
    return Generation(model, found.get(COLLECTION_KEY) or PREFIX + model.key())


def record_active(catalog: Catalog, model: ModelIdentity) -> Generation:
    """The first model of an empty index; two indexers starting at once on a new shared library both get here,
    and the first one's record stands (the caller compares it with its own model)."""
    generation = Generation(model, PREFIX + model.key())
    catalog.add_meta({MODEL_KEY: model.to_json(), COLLECTION_KEY: generation.collection})
    found = active(catalog)
    assert found is not None
    return found


def target(catalog: Catalog) -> Generation | None:
    return _target_of(catalog.get_meta(REINDEX_KEY))


def _target_of(raw: str | None) -> Generation | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return Generation(ModelIdentity.from_dict(data["model"]), str(data["collection"]))


def start(catalog: Catalog, model: ModelIdentity) -> Generation:
    """Record a reindex to ``model``, in a collection of its own (a reindex with the same model included)."""
    generation = Generation(model, f"{PREFIX}{model.key()}_{time.time_ns():x}")
    catalog.set_meta({REINDEX_KEY: json.dumps({"model": model.to_dict(), "collection": generation.collection})})
    return generation


def switch(catalog: Catalog, new: Generation) -> None:
    """The one step that makes a complete reindex the index: model, collection and the end of the reindex."""
    catalog.set_meta({MODEL_KEY: new.model.to_json(), COLLECTION_KEY: new.collection, REINDEX_KEY: None})


def cancel(catalog: Catalog) -> None:
    catalog.set_meta({REINDEX_KEY: None})


def in_use(catalog: Catalog) -> tuple[Generation, frozenset[str], bool] | None:
    """The active generation, the collections in use (it and a reindex's under way), and whether a tidy may find
    others: not when the last complete tidy kept these same ones. Every collection is created after the catalog
    records it (record_active, start), and every one given up changes the record (switch, cancel), so while the
    record stays as the last tidy left it there is nothing to drop. One catalog read."""
    found = catalog.get_metas([MODEL_KEY, COLLECTION_KEY, REINDEX_KEY, TIDIED_KEY])
    active, under_way = _active_of(found), _target_of(found.get(REINDEX_KEY))
    if active is None:
        return None
    keep = frozenset({active.collection} | ({under_way.collection} if under_way else set()))
    return active, keep, found.get(TIDIED_KEY) != _mark(keep)


def record_tidied(catalog: Catalog, keep: frozenset[str]) -> None:
    catalog.set_meta({TIDIED_KEY: _mark(keep)})


def _mark(keep: frozenset[str]) -> str:
    return json.dumps(sorted(keep))
