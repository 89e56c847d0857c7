"""The search command's options: the filters (shared with any command that narrows the library) and the request
they make (query/spec.py), parsed by the same functions that read the HTTP API's parameters; and how results
are printed.

Cheap to import: `photosearch --help` reads these decorators.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from photosearch.filters import ORIENTATIONS, Filters
from photosearch.query import spec
from photosearch.query.spec import Example, SearchRequest, Weighted

if TYPE_CHECKING:
    from photosearch.query.result import SearchPage, SearchResult

F = TypeVar("F", bound=Callable[..., Any])
FACETS_SHOWN = 12  # values per line of `photosearch facets` (the most common first)

_FILTERS = [
    click.option("--from", "date_from", metavar="DATE", help="From this date: 2019, 2019-06 or 2019-06-14."),
    click.option("--to", "date_to", metavar="DATE", help="To this date, inclusive (--to 2019: all of 2019)."),
    click.option("--camera", metavar="TEXT", help="Part of the camera make or model, any case."),
    click.option("--near", metavar="LAT,LON", help="Taken within --within km of this position."),
    click.option("--within", type=float, metavar="KM", help="The distance for --near (default 5 km)."),
    click.option("--place", metavar="NAME", help="A city, region or country (from the GPS position)."),
    click.option("--has-location/--no-location", "location", default=None, help="With / without a GPS position."),
    click.option("--type", "types", metavar="TYPES", help="Formats: jpeg,png,heic,webp,gif,tiff,bmp."),
    click.option("--orientation", type=click.Choice(ORIENTATIONS), help="Of the upright photo."),
    click.option("--folder", type=click.Path(path_type=Path), help="Only photos under this folder."),
]


def filter_options(command: F) -> F:
    for option in reversed(_FILTERS):
        command = option(command)
    return command


def filters_of(options: dict[str, Any]) -> Filters:
    within = options.get("within")
    if within is not None and not options.get("near"):
        raise click.UsageError("--within needs --near (a LAT,LON to measure from)")
    filters = Filters(
        camera=options.get("camera") or None,
        near=spec.near(options["near"], within) if options.get("near") else None,
        place=options.get("place") or None,
        location=options.get("location"),
        formats=spec.formats(options["types"]) if options.get("types") else (),
        orientation=options.get("orientation"),
        folder=options.get("folder"),
    )
    return spec.with_period(filters, options.get("date_from"), options.get("date_to"))


def search_request(query: str | None, options: dict[str, Any]) -> SearchRequest:
    texts = [] if query is None else [spec.weighted(query)]
    if texts and options.get("weight") is not None:
        texts[0] = replace(texts[0], weight=spec.weighted(f"{options['weight']:g}:{texts[0].text}").weight)
    texts += [spec.weighted(text) for text in options.get("also", ())]
    request = SearchRequest(
        texts=tuple(texts),
        negatives=tuple(spec.weighted(text) for text in options.get("negatives", ())),
        examples=tuple(_example(text) for text in options.get("likes", ())),
        unlike=tuple(_example(text) for text in options.get("unlikes", ())),
        filters=filters_of(options),
        sort=options.get("sort"),
        cutoff=spec.cutoff(options["cutoff"]) if options.get("cutoff") else None,
        rest=bool(options.get("rest")),
        k=options.get("k"),
        offset=options.get("offset") or 0,
        cursor=options.get("cursor"),
        include_offline=bool(options.get("include_offline")),
    )
    if not request.has_query and not request.filters and request.cursor is None and query is None:
        raise click.UsageError("give a QUERY, --like IMAGE, or a filter (--from, --camera, ...) to browse by")
    return request.check()


def _example(text: str) -> Example:
    """An example image's path, W:path for a weight (unless a file of that very name exists)."""
    if Path(text).expanduser().exists():
        return Example(path=Path(text))
    found: Weighted = spec.weighted(text)
    return Example(path=Path(found.text), weight=found.weight)


def print_page(page: SearchPage, as_json: bool, dates: bool) -> None:
    """A page of results (with their dates when sorted by date); a divider before the first one below the cutoff;
    a timeline's next cursor on stderr."""
    rest = next((i for i, r in enumerate(page.results) if r.relevant is False), len(page.results))
    print_results(page.results[:rest], as_json, dates)
    if rest < len(page.results):
        if not as_json:
            click.echo("---- less relevant ----")
        print_results(page.results[rest:], as_json, dates)
    if page.cursor:
        click.echo(f"more: --cursor {page.cursor}", err=True)


def print_results(results: Sequence[SearchResult], as_json: bool, dates: bool = False) -> None:
    """One line per result (--json: its JSON form, RESULT_KEYS in order)."""
    if as_json:
        for result in results:
            click.echo(json.dumps(result.to_dict()))
        return
    if not results:
        click.echo("no results (is anything indexed? see `photosearch status`)", err=True)
    for result in results:
        data = result.to_dict()  # the path as shown (pathtext.display)
        offline = "  (offline: its library folder is missing)" if result.offline else ""
        score = "" if result.score is None else f"{result.score:.4f}  "
        click.echo(f"{data['rank']:3d}  {score}{_date(result) if dates else ''}{data['path']}{offline}")


def _date(result: SearchResult) -> str:
    """The date shown when sorted by date: * marks a photo dated by its file (it has no time taken)."""
    if result.date is None:
        return "(no date)          "
    return f"{result.date:%Y-%m-%d %H:%M}{'*' if result.date_source == 'file' else ' '}  "


def print_facets(found: dict[str, Any], as_json: bool) -> None:
    """The facets (query/facets.py' form): a line per kind, the most common values first (--json: all of it)."""
    if as_json:
        click.echo(json.dumps(found))
        return
    located = found["location"]["with"]
    click.echo(f"{found['total']:,} photos, {located:,} with a location")
    places = found["places"]
    lines = {
        "years": [(str(y["year"]), y["count"]) for y in found["years"]],
        "months": [(m["month"], m["count"]) for m in found["months"]],
        "cameras": [(" ".join(dict.fromkeys(p for p in (c["make"], c["model"]) if p)), c["count"])
                    for c in found["cameras"]],
        "countries": [(c["country"], c["count"]) for c in places["countries"]],
        "regions": [(", ".join(p for p in (r["region"], r["country"]) if p), r["count"]) for r in places["regions"]],
        "cities": [(", ".join(p for p in (c["city"], c["region"], c["country"]) if p), c["count"])
                   for c in places["cities"]],
        "types": [(t["type"], t["count"]) for t in found["types"]],
    }  # fmt: skip
    for name, values in lines.items():
        shown = "  ".join(f"{value} ({count:,})" for value, count in values[:FACETS_SHOWN])
        more = f"  ... {len(values) - FACETS_SHOWN:,} more (--json: all)" if len(values) > FACETS_SHOWN else ""
        click.echo(f"{name + ':':<11}{shown or '-'}{more}")
