"""A copy's two checks (stores/copy.py): before it, that the target holds no other library; after it, that the
target holds this one, row for row and vector for vector.

The refusal comes first because a copy writes rows under their own ids and vectors under their own keys: into
another library's database that would mix two libraries, and its next index run would drop the collections it
does not know (rebuild.tidy). What a target may hold is an earlier, interrupted copy of this same library: rows
whose ids name the same paths, this library's collections, the same model.
"""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

import numpy as np
from sqlalchemy import select

from photosearch.errors import StoreCopyError
from photosearch.stores import generations
from photosearch.stores.catalog import Catalog
from photosearch.stores.copy import (
    CLEARED,
    TABLES,
    Stores,
    collection_settings,
    collections,
    copied_meta,
    count,
    plain,
    rows_in_order,
)
from photosearch.stores.schema import Photo, Root
from photosearch.stores.vectors import VectorStore

SAMPLE_K = 10  # the sample query's results compared between source and target

_ANOTHER = "; copy into an empty database, or remove it first"


def refuse_another_library(source: Stores, target: Stores) -> None:
    """Raise StoreCopyError when the target's catalog or vectors belong to another library."""
    there = target.catalog.describe()
    ours, theirs = generations.active(source.catalog), generations.active(target.catalog)
    if theirs is not None and (ours is None or ours.model != theirs.model):
        mine = ours.model.describe() if ours else "none yet"
        raise StoreCopyError(
            f"the catalog {there} holds another library (indexed with {theirs.model.describe()}, this one with "
            f"{mine}){_ANOTHER}"
        )
    for table_, what in ((Root.__table__, "library folder"), (Photo.__table__, "photo")):
        for page in rows_in_order(target.catalog, table_, ("id", "path")):  # type: ignore[arg-type]
            known = _paths(source.catalog, table_, [row["id"] for row in page])
            for row in page:
                if known.get(row["id"]) != row["path"]:
                    raise StoreCopyError(
                        f"the catalog {there} holds another library (its {what} {row['id']} is {row['path']}, "
                        f"not this library's){_ANOTHER}"
                    )
    wanted = collections(source.catalog)
    for name in target.vectors.names():
        if name not in wanted:
            raise StoreCopyError(
                f"the vectors at {target.vectors.describe()} hold another library (collection {name}){_ANOTHER}"
            )
        copied, original = VectorStore(target.vectors, name), VectorStore(source.vectors, name)
        if collection_settings(copied)[0] != original.model_info():
            raise StoreCopyError(
                f"the vectors at {target.vectors.describe()} hold another model's collection {name}{_ANOTHER}"
            )
        # Another library of the same model has a collection of the same name: its keys give it away.
        if foreign := copied.all_keys() - original.all_keys():
            raise StoreCopyError(
                f"the vectors at {target.vectors.describe()} hold another library ({len(foreign)} vectors in "
                f"{name} that this library does not have){_ANOTHER}"
            )


def _paths(catalog: Catalog, table_: Any, ids: list[int]) -> dict[int, str]:
    raw = plain(table_)
    with catalog.session() as s:
        return {i: p for i, p in s.execute(select(raw.c.id, raw.c.path).where(raw.c.id.in_(ids)))}


def verify(source: Stores, target: Stores) -> None:
    """Raise StoreCopyError naming the first difference between the two libraries (running the copy again
    copies what is missing)."""
    problem = _difference(source, target)
    if problem is not None:
        raise StoreCopyError(f"the copy differs from this library: {problem}; run the copy again")


def _difference(source: Stores, target: Stores) -> str | None:
    for table_ in TABLES:
        mine, theirs = count(source.catalog, table_), count(target.catalog, table_)
        if mine != theirs:
            return f"{table_.name} has {theirs} rows there, {mine} here"
    for table_ in TABLES[:2]:  # roots and photos, row by row (the queue's count is enough: the daemon's paths)
        pages = zip_longest(rows_in_order(source.catalog, table_), rows_in_order(target.catalog, table_))
        for mine_page, their_page in pages:
            for a, b in zip_longest(mine_page or [], their_page or []):
                if a is None or b is None or _compared(a) != _compared(b):
                    row = a if a is not None else b
                    return f"{table_.name} row {row['id'] if row is not None else '?'} differs"
    if copied_meta(source.catalog) != copied_meta(target.catalog):
        return "the meta table differs"
    for name in collections(source.catalog):
        mine, theirs = VectorStore(source.vectors, name).count(), VectorStore(target.vectors, name).count()
        if mine != theirs:
            return f"collection {name} has {theirs} vectors there, {mine} here"
    active = generations.active(target.catalog)
    if active is None:
        return None  # nothing indexed yet: no vectors to look for
    lacking = target.catalog.indexed_hashes() - VectorStore(target.vectors, active.collection).all_keys()
    if lacking:
        return f"{len(lacking)} indexed photos have no vector there (such as {min(lacking)})"
    return _sample_query(source, target, active.collection)


def _compared(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in CLEARED}


def _sample_query(source: Stores, target: Stores, name: str) -> str | None:
    """One search on both sides, with a stored vector as the query (no model needed): the same photos must come
    back. Compared as sets: HNSW may order near-ties differently in two graphs built in a different order."""
    hashes = sorted(source.catalog.indexed_hashes())
    if not hashes:
        return None
    mine, theirs = VectorStore(source.vectors, name), VectorStore(target.vectors, name)
    query = mine.vectors([hashes[len(hashes) // 2]])[hashes[len(hashes) // 2]]
    here = mine.query(np.asarray(query), SAMPLE_K)
    there = theirs.query(np.asarray(query), SAMPLE_K)
    if {h.key for h in here} != {h.key for h in there}:
        return f"a sample query in {name} finds other vectors there"
    return None
