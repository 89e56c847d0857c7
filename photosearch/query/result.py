"""A search result and its JSON form, in a module of their own: the CLI reads the results a server sent back into
the same type (serving/remote.py) without importing the query layer (numpy, the stores)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from photosearch.facts import RESULT_FACTS, PhotoFacts, from_json_values, json_values
from photosearch.pathtext import display


@dataclass(frozen=True)
class SearchResult:
    rank: int
    id: int
    path: Path
    score: float | None  # cosine similarity to the query; None in a timeline (no query)
    folder: str
    facts: PhotoFacts  # in the JSON form: the facts shown with every result (RESULT_FACTS), in this place
    size: int | None = None  # bytes
    date: datetime | None = None  # what date filters and date order use: the time taken, else the file's mtime
    date_source: str | None = None  # "taken" (EXIF) or "file" (no time taken: the file's mtime)
    place: str | None = None  # "city, region, country" of its GPS position
    relevant: bool | None = None  # passed the relevance cutoff (None: no query)
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
        data["score"] = None if self.score is None else round(self.score, 6)
        data["date"] = self.date.isoformat() if self.date else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        """A result from its JSON form (a server's reply), whose to_dict() is that form again. Its path and folder
        are what the JSON shows (display form: a byte that is not UTF-8 stays escaped); facts not shown are None."""
        facts = from_json_values({name: data.get(name) for name in RESULT_FACTS})
        score, date = data.get("score"), data.get("date")
        return cls(rank=int(data["rank"]), id=int(data["id"]), path=Path(data["path"]),
                   score=None if score is None else float(score), folder=str(data["folder"]), facts=facts,
                   size=data.get("size"), date=datetime.fromisoformat(date) if date else None,
                   date_source=data.get("date_source"), place=data.get("place"), relevant=data.get("relevant"),
                   offline=bool(data.get("offline")))  # fmt: skip


@dataclass
class SearchPage:
    """One page of results: the query layer's answer, the HTTP API's reply."""

    results: list[SearchResult]
    more: bool = False  # another page follows
    cursor: str | None = None  # a timeline's next page (SearchRequest.cursor)
    threshold: float | None = None  # the cutoff's score, when there is one

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "more": self.more, "cursor": self.cursor,
                "threshold": None if self.threshold is None else round(self.threshold, 6)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchPage:
        threshold = data.get("threshold")
        return cls([SearchResult.from_dict(r) for r in data["results"]], bool(data.get("more")), data.get("cursor"),
                   None if threshold is None else float(threshold))  # fmt: skip


# The keys of a result's JSON form, in order: what `photosearch search --json` prints (and the README lists).
RESULT_KEYS: tuple[str, ...] = tuple(
    key for f in fields(SearchResult) for key in (RESULT_FACTS if f.name == "facts" else (f.name,))
)
