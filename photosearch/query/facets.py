"""The values present in the library, with counts, for the filter UI (GET /api/facets): cameras, years and
months, places, types, with and without a position. One grouped scan of the catalog (Catalog.facet_rows) added
up here, so it costs the same whichever facets the page shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from photosearch.filters import TYPES

_NAMES = {fmt: name for name, fmt in reversed(list(TYPES.items()))}  # "JPEG" -> "jpeg"


def facets(counts: Mapping[str, Sequence[tuple[Any, ...]]]) -> dict[str, Any]:
    """The facets' JSON form from Catalog.facet_counts' groups."""
    cameras = {(make or "", model or ""): n for make, model, n in counts["cameras"] if make or model}
    months = {month: n for month, n in counts["months"] if month}
    years: Counter[int] = Counter()
    for month, n in months.items():
        years[int(month[:4])] += n
    cities: Counter[tuple[str, str, str]] = Counter()
    regions: Counter[tuple[str, str]] = Counter()
    countries: Counter[str] = Counter()
    for country, region, city, n in counts["places"]:
        if city:
            cities[(city, region or "", country or "")] += n
        if region:
            regions[(region, country or "")] += n
        if country:
            countries[country] += n
    types: Counter[str] = Counter()
    located = total = 0
    for fmt, has_gps, n in counts["formats"]:
        total += n
        located += n if has_gps else 0
        if fmt:
            types[_NAMES.get(fmt, fmt.lower())] += n
    return {
        "total": total,
        "cameras": [{"make": m, "model": o, "count": n} for (m, o), n in _by_count(cameras)],
        "years": [{"year": y, "count": n} for y, n in sorted(years.items(), reverse=True)],
        "months": [{"month": m, "count": n} for m, n in sorted(months.items(), reverse=True)],
        "places": {
            "cities": [{"city": c, "region": r, "country": k, "count": n} for (c, r, k), n in _by_count(cities)],
            "regions": [{"region": r, "country": k, "count": n} for (r, k), n in _by_count(regions)],
            "countries": [{"country": k, "count": n} for k, n in _by_count(countries)],
        },
        "types": [{"type": t, "count": n} for t, n in _by_count(types)],
        "location": {"with": located, "without": total - located},
    }


def _by_count(counter: Mapping[Any, int]) -> list[tuple[Any, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))
