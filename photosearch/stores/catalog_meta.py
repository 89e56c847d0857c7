"""The catalog's key-value records (table meta): which model and collection the index has, a reindex under way,
the daemon's record, the run journal. A part of Catalog (catalog.py), which gives it its sessions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from photosearch.stores.dialect import insert_for
from photosearch.stores.schema import Meta

T = TypeVar("T")


class MetaKeys:
    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError  # Catalog's: its sessions map store errors to typed ones (boundary.py)

    def _read(self, work: Callable[[Session], T]) -> T:
        raise NotImplementedError  # Catalog's: a search's reads, one round trip each

    def get_meta(self, key: str) -> str | None:
        return self.get_metas([key]).get(key)

    def get_metas(self, keys: Sequence[str]) -> dict[str, str]:
        """The keys that are set, in one query (a search reads several: each query is a round trip to a server)."""
        query = select(Meta.key, Meta.value).where(Meta.key.in_(keys))
        return {k: v for k, v in self._read(lambda s: s.execute(query).all())}

    def add_meta(self, values: dict[str, str]) -> dict[str, str]:
        """Set keys that are not set yet (another process may set them at the same moment: the first one wins,
        without a conflict); the values the keys hold afterwards."""
        with self.session() as s, s.begin():
            for key, value in values.items():
                s.execute(insert_for(s, Meta).values(key=key, value=value).on_conflict_do_nothing())
            return {key: s.get_one(Meta, key).value for key in values}

    def set_meta(self, values: dict[str, str | None]) -> None:
        """Set (or, with None, remove) several keys in one transaction."""
        with self.session() as s, s.begin():
            for key, value in values.items():
                row = s.get(Meta, key)
                if value is None:
                    if row is not None:
                        s.delete(row)
                elif row is None:
                    s.add(Meta(key=key, value=value))
                else:
                    row.value = value
