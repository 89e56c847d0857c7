"""A search result and its JSON form, in a module of their own: the CLI reads the results a server sent back into
the same type (serving/remote.py) without importing the query layer (numpy, the stores)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from photosearch.facts import RESULT_FACTS, PhotoFacts, from_json_values, json_values
from photosearch.pathtext import display


@dataclass(frozen=True)
class SearchResult:
    rank: int
    id: int
    path: Path
    score: float
    folder: str
    facts: PhotoFacts  # in the JSON form: the facts shown with every result (RESULT_FACTS), in this place
    offline: bool = False  # its library folder is missing (unmounted, or moved without `photosearch roots move`)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, the CLI's and the HTTP API's: RESULT_KEYS in order; paths for display, dates in ISO 8601."""
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "facts":
                data |= json_values(self.facts, RESULT_FACTS)
            else:
                data[f.name] = getattr(self, f.name)
        data["path"], data["folder"] = display(self.path), display(self.folder)  # JSON and terminals: no raw bytes
        data["score"] = round(self.score, 6)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        """A result from its JSON form (a server's reply), whose to_dict() is that form again. Its path and folder
        are what the JSON shows (display form: a byte that is not UTF-8 stays escaped); facts not shown are None."""
        facts = from_json_values({name: data.get(name) for name in RESULT_FACTS})
        return cls(rank=int(data["rank"]), id=int(data["id"]), path=Path(data["path"]), score=float(data["score"]),
                   folder=str(data["folder"]), facts=facts, offline=bool(data.get("offline")))  # fmt: skip


# The keys of a result's JSON form, in order: what `photosearch search --json` prints (and the README lists).
RESULT_KEYS: tuple[str, ...] = tuple(
    key for f in fields(SearchResult) for key in (RESULT_FACTS if f.name == "facts" else (f.name,))
)
