"""A query as every interface states it: positive texts and example images with weights, negative texts,
filters, an order, a relevance cutoff and a page. The CLI, the Python API, the HTTP API and the page all build
a ``SearchRequest``, and its wire form (``to_params`` / ``from_params``: the GET parameters, and the same keys in
a POST's JSON body) is parsed here once, so the four give the same results for the same words.

Cheap to import (no numpy, no stores): the CLI builds a request before it knows who answers it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

from photosearch.errors import InvalidQueryError
from photosearch.filters import ORIENTATIONS, TYPES, Filters, Near
from photosearch.query.limits import MAX_K, MAX_OFFSET

SORTS = ("relevance", "newest", "oldest")
_WEIGHT = re.compile(r"^(\d+(?:\.\d+)?|\.\d+):(?=\S)")  # "2:sunset", "0.5:a dog"; the text must follow
MAX_PARTS = 16  # texts, negatives and examples of one query, each
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class Weighted:
    """A text (or, for an example, a photo reference) and its weight in the query vector."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Example:
    """An example image: an indexed photo by id, an image file by path (an indexed one is used by its id), or an
    image a server holds from an upload (its reference). The photo itself is left out of the results."""

    photo_id: int | None = None
    path: Path | None = None
    upload: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class SearchRequest:
    texts: tuple[Weighted, ...] = ()
    negatives: tuple[Weighted, ...] = ()
    examples: tuple[Example, ...] = ()
    unlike: tuple[Example, ...] = ()  # example images to subtract ("less like this")
    filters: Filters = field(default_factory=Filters)
    sort: str | None = None  # SORTS; None: relevance with a query, newest without (a timeline)
    cutoff: str | float | None = None  # "auto", "none" or a score; None: auto when sorted by date, else none
    rest: bool = False  # with a cutoff, the photos below it too, after the relevant ones (relevant: false)
    k: int | None = None  # None: search.default_k
    offset: int = 0
    cursor: str | None = None  # a timeline's next page (SearchPage.cursor)
    include_offline: bool = False

    @property
    def has_query(self) -> bool:
        return bool(self.texts or self.examples)

    @property
    def order(self) -> str:
        return self.sort or ("relevance" if self.has_query else "newest")

    @property
    def threshold_rule(self) -> str | float:
        """ "auto", "none" or a score: the cutoff asked for, or its default for the order."""
        if self.cutoff is not None:
            return self.cutoff
        return "none" if self.order == "relevance" else "auto"

    def check(self) -> SearchRequest:
        if (self.negatives or self.unlike) and not self.has_query:
            raise InvalidQueryError("--not and --unlike subtract from a query: give a text or --like too")
        if self.order == "relevance" and not self.has_query:
            raise InvalidQueryError(
                "sorting by relevance needs a query (a text or --like); without one, use a date order"
            )
        if self.cursor is not None and self.has_query:
            raise InvalidQueryError("a cursor pages a timeline (no query); page a search with offset")
        if self.k is not None and not 1 <= self.k <= MAX_K:
            raise InvalidQueryError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidQueryError(f"offset must be between 0 and {MAX_OFFSET}, got {self.offset}")
        parts_of = (("texts", self.texts), ("negative texts", self.negatives), ("examples", self.examples),
                    ("negative examples", self.unlike))  # fmt: skip
        for kind, parts in parts_of:
            if len(parts) > MAX_PARTS:
                raise InvalidQueryError(f"at most {MAX_PARTS} {kind} in one query, got {len(parts)}")
        return self


# -- the user's words --------------------------------------------------------------------------------
def weighted(text: str) -> Weighted:
    """ "sunset" (weight 1) or "2:sunset" / "0.5:a dog" (that weight, > 0 and <= 100)."""
    found = _WEIGHT.match(text)
    weight = float(found.group(1)) if found else 1.0
    body = text[found.end() :] if found else text
    if not body.strip():
        raise InvalidQueryError(f"empty query text in {text!r}")
    if not 0 < weight <= MAX_WEIGHT:
        raise InvalidQueryError(f"a weight must be above 0 and at most {MAX_WEIGHT:g}, got {weight:g} in {text!r}")
    return Weighted(body.strip(), weight)


def period(text: str, end: bool) -> datetime:
    """The start (or, with ``end``, the end, exclusive) of the period a date names: 2019, 2019-06, 2019-06-14,
    or an exact time in ISO 8601 (its own start and end)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            year = int(value)
            return datetime(year + 1 if end else year, 1, 1)
        if re.fullmatch(r"\d{4}-\d{2}", value):
            first = date.fromisoformat(value + "-01")
            if not end:
                return datetime.combine(first, datetime.min.time())
            return datetime.combine((first + timedelta(days=32)).replace(day=1), datetime.min.time())
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
            return datetime.combine(day, datetime.min.time())
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except (ValueError, OverflowError):
        pass
    raise InvalidQueryError(f"{text!r} is not a date: use YYYY, YYYY-MM or YYYY-MM-DD")


def near(text: str, km: float | None = None) -> Near:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise InvalidQueryError(f"{text!r} is not a position: use LAT,LON in degrees, e.g. 48.8584,2.2945") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidQueryError(f"{text!r} is not on Earth: latitude -90..90, longitude -180..180")
    if km is not None and not 0 < km <= 20_100:
        raise InvalidQueryError(f"--within must be above 0 km and at most 20,100 km, got {km:g}")
    return Near(lat, lon) if km is None else Near(lat, lon, km)


def formats(text: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TYPES]
    if unknown or not names:
        raise InvalidQueryError(f"unknown type {', '.join(unknown) or text!r}: use {', '.join(sorted(set(TYPES)))}")
    return tuple(dict.fromkeys(TYPES[name] for name in names))


def cutoff(text: str) -> str | float:
    value = text.strip().lower()
    if value in ("auto", "none"):
        return value
    try:
        score = float(value)
    except ValueError:
        raise InvalidQueryError(f"--cutoff takes auto, none or a score, got {text!r}") from None
    if not -1.0 <= score <= 1.0:
        raise InvalidQueryError(f"a cutoff score is a cosine similarity, -1..1, got {text!r}")
    return score


def orientation(text: str) -> str:
    value = text.strip().lower()
    if value not in ORIENTATIONS:
        raise InvalidQueryError(f"unknown orientation {text!r}: use {', '.join(ORIENTATIONS)}")
    return value


def sort(text: str) -> str:
    value = text.strip().lower()
    if value not in SORTS:
        raise InvalidQueryError(f"unknown order {text!r}: use {', '.join(SORTS)}")
    return value


def with_period(filters: Filters, start: str | None, to: str | None) -> Filters:
    found = replace(filters, start=period(start, False) if start else filters.start,
                    end=period(to, True) if to else filters.end)  # fmt: skip
    if found.start is not None and found.end is not None and found.start >= found.end:
        raise InvalidQueryError(f"the date range is empty: {start} is after {to}")
    return found


# -- cursors -----------------------------------------------------------------------------------------
def encode_cursor(dated: datetime | None, photo_id: int) -> str:
    raw = f"{dated.isoformat() if dated else '-'}|{photo_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        dated, photo_id = raw.split("|")
        return (None if dated == "-" else datetime.fromisoformat(dated)), int(photo_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidQueryError("that cursor is not one a timeline page gave") from None
