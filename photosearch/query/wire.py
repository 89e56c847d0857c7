"""A SearchRequest's wire form: the GET /api/search parameters, and the same keys in POST /api/search's JSON
body. The CLI sends a request to a running server in this form, and the server reads it back with the same
parsers (spec.py) that read the CLI's own options, so both answer a query alike.

    q=2:sunset&q=beach&not=people&like=17&upload=u...&unlike=23&unlike_upload=u...&from=2019&to=2020-06
    &camera=canon&near=48.85,2.35&within=3&place=Paris&location=true&type=jpeg,heic&orientation=portrait&folder=...&sort=newest&cutoff=auto
    &rest=true&k=30&offset=0&cursor=...&include_offline=true

``from``/``to`` name periods (2019 is all of 2019); ``before`` is an exclusive end as an exact time (what
to_params writes). ``like``/``unlike`` name indexed photos to add/subtract, ``upload``/``unlike_upload``
uploaded images (POST /api/uploads). In JSON, q/not/like/upload/unlike/unlike_upload are lists whose items
are strings in the same form or objects ({"text": "sunset", "weight": 2}, {"id": 17, "weight": 0.5},
{"upload": "u...", "weight": 1}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from photosearch.errors import InvalidQueryError
from photosearch.filters import TYPES, Filters
from photosearch.pathtext import from_text, to_text
from photosearch.query import spec
from photosearch.query.spec import Example, SearchRequest, Weighted

LISTS = ("q", "not", "like", "upload", "unlike", "unlike_upload")
_NAMES = {fmt: name for name, fmt in reversed(list(TYPES.items()))}  # "JPEG" -> "jpeg" (the first name of each)


def to_params(request: SearchRequest) -> dict[str, Any]:
    """The request's parameters (lists for the repeatable ones); what is not set is left out. Examples by path
    must have become ids or uploads first (a server cannot open the caller's files)."""
    f = request.filters
    params: dict[str, Any] = {
        "q": [_weighted(w.text, w.weight) for w in request.texts],
        "not": [_weighted(w.text, w.weight) for w in request.negatives],
        "like": [_weighted(str(e.photo_id), e.weight) for e in request.examples if e.photo_id is not None],
        "upload": [_weighted(e.upload, e.weight) for e in request.examples if e.upload is not None],
        "unlike": [_weighted(str(e.photo_id), e.weight) for e in request.unlike if e.photo_id is not None],
        "unlike_upload": [_weighted(e.upload, e.weight) for e in request.unlike if e.upload is not None],
        "from": f.start.isoformat() if f.start else None,
        "before": f.end.isoformat() if f.end else None,
        "camera": f.camera,
        "near": f"{f.near.lat!r},{f.near.lon!r}" if f.near else None,
        "within": repr(f.near.km) if f.near else None,
        "place": f.place,
        "location": None if f.location is None else str(f.location).lower(),
        "type": ",".join(_NAMES[fmt] for fmt in f.formats) or None,
        "orientation": f.orientation,
        "folder": to_text(f.folder) if f.folder else None,
        "sort": request.sort,
        "cutoff": None if request.cutoff is None else str(request.cutoff),
        "rest": "true" if request.rest else None,
        "k": None if request.k is None else str(request.k),
        "offset": str(request.offset) if request.offset else None,
        "cursor": request.cursor,
        "include_offline": "true" if request.include_offline else None,
    }
    if any(e.path is not None for e in (*request.examples, *request.unlike)):
        raise InvalidQueryError("an example image by path must be sent as a photo id or an upload")
    return {key: value for key, value in params.items() if value not in (None, [])}


def _weighted(text: str, weight: float) -> str:
    return text if weight == 1.0 else f"{weight:g}:{text}"


def from_params(params: Mapping[str, Any]) -> SearchRequest:
    """A request from its parameters: a mapping of names to strings, or to lists of them for the repeatable
    ones (a JSON body's values may also be numbers, booleans and objects)."""
    unknown = sorted(set(params) - set(LISTS) - _SINGLE)
    if unknown:
        raise InvalidQueryError(f"unknown search parameter {unknown[0]!r}")
    one = {key: _single(key, params[key]) for key in _SINGLE if params.get(key) not in (None, "")}
    examples = tuple(_example(item) for item in _items(params, "like")) + tuple(
        _upload(item) for item in _items(params, "upload")
    )
    request = SearchRequest(
        texts=tuple(_text(item) for item in _items(params, "q")),
        negatives=tuple(_text(item) for item in _items(params, "not")),
        examples=examples,
        unlike=tuple(_example(item) for item in _items(params, "unlike"))
        + tuple(_upload(item, "unlike_upload") for item in _items(params, "unlike_upload")),
        filters=_filters(one),
        sort=spec.sort(one["sort"]) if "sort" in one else None,
        cutoff=spec.cutoff(one["cutoff"]) if "cutoff" in one else None,
        rest=_bool("rest", one.get("rest", "false")),
        k=_int("k", one["k"], 1) if "k" in one else None,
        offset=_int("offset", one.get("offset", "0"), 0),
        cursor=one.get("cursor"),
        include_offline=_bool("include_offline", one.get("include_offline", "false")),
    )
    return request.check()


_SINGLE = {"from", "to", "before", "camera", "near", "within", "place", "location", "type", "orientation", "folder",
           "sort", "cutoff", "rest", "k", "offset", "cursor", "include_offline"}  # fmt: skip


def _filters(one: Mapping[str, str]) -> Filters:
    within = float(_number("within", one["within"])) if "within" in one else None
    if within is not None and "near" not in one:
        raise InvalidQueryError("within needs near (a LAT,LON to measure from)")
    filters = Filters(
        start=spec.period(one["from"], False) if "from" in one else None,
        end=spec.period(one["before"], False) if "before" in one else None,
        camera=one.get("camera"),
        near=spec.near(one["near"], within) if "near" in one else None,
        place=one.get("place"),
        location=_bool("location", one["location"]) if "location" in one else None,
        formats=spec.formats(one["type"]) if "type" in one else (),
        orientation=spec.orientation(one["orientation"]) if "orientation" in one else None,
        folder=Path(from_text(one["folder"])) if "folder" in one else None,
    )
    return spec.with_period(filters, None, one.get("to"))


def _items(params: Mapping[str, Any], key: str) -> list[Any]:
    value = params.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def _single(key: str, value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 1:
            raise InvalidQueryError(f"{key} is given {len(value)} times; it takes one value")
        value = value[0]
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str | int | float):
        raise InvalidQueryError(f"{key} takes a text, a number or a boolean")
    return str(value)


def _text(item: Any) -> Weighted:
    if isinstance(item, Mapping):
        return Weighted(spec.weighted(str(item.get("text", ""))).text, _weight(item))
    return spec.weighted(_single("q", item))


def _example(item: Any) -> Example:
    if isinstance(item, Mapping):
        return Example(photo_id=_int("like", str(item.get("id", "")), 1), weight=_weight(item))
    found = spec.weighted(_single("like", item))
    return Example(photo_id=_int("like", found.text, 1), weight=found.weight)


def _upload(item: Any, key: str = "upload") -> Example:
    if isinstance(item, Mapping):
        return Example(upload=str(item.get("upload", "")), weight=_weight(item))
    found = spec.weighted(_single(key, item))
    return Example(upload=found.text, weight=found.weight)


def _weight(item: Mapping[str, Any]) -> float:
    weight = float(_number("weight", str(item.get("weight", 1.0))))
    if not 0 < weight <= spec.MAX_WEIGHT:
        raise InvalidQueryError(f"a weight must be above 0 and at most {spec.MAX_WEIGHT:g}, got {weight:g}")
    return weight


def _number(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidQueryError(f"{key} takes a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidQueryError(f"{key} takes a finite number, got {value!r}")
    return number


def _int(key: str, value: str, least: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidQueryError(f"{key} takes a whole number, got {value!r}") from None
    if number < least or number > 2**63 - 1:
        raise InvalidQueryError(f"{key} must be at least {least}, got {value!r}")
    return number


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidQueryError(f"{key} takes true or false, got {value!r}")
