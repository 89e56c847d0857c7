"""Search filters, timelines and combined queries, on photos whose facts are known: the exif-samples camera JPEGs
(makes, dates, GPS positions, orientations, HEIC and TIFF) and photos made here with chosen EXIF. Each filter is
checked against the set its facts say, on the embedded stores and on the servers, and through every interface
(the library, the CLI, GET and POST /api/search) with the same words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import make_config, make_exif_photo, make_photo, stores_env

from photosearch.errors import InvalidQueryError
from photosearch.filters import Filters
from photosearch.indexing.places import great_circle_km
from photosearch.library import Library
from photosearch.query import spec
from photosearch.query.compose import normalised
from photosearch.query.spec import Example, SearchRequest, Weighted
from photosearch.query.wire import from_params, to_params
from photosearch.serving.httpapi import create_app
from photosearch.serving.webguard import CSRF_HEADER
from photosearch.stores.catalog_hashes import PhotoScope

pytestmark = pytest.mark.usefixtures("module_backend")

EIFFEL = (48.8584, 2.2945)
MADE = {  # name: (taken, make, model, gps)
    "y2018_end.jpg": ("2018:12:31 23:59:59", "Canon", "Canon EOS 5D", None),
    "y2019_start.jpg": ("2019:01:01 00:00:00", "Canon", "Canon EOS 5D", EIFFEL),
    "y2019_june14.jpg": ("2019:06:14 10:00:00", "NIKON CORPORATION", "NIKON D750", (48.8584 + 4.9 / 111.2, 2.2945)),
    "y2019_june30.jpg": ("2019:06:30 23:59:59", "Apple", "iPhone 8", (48.8584 + 5.1 / 111.2, 2.2945)),
    "y2019_end.jpg": ("2019:12:31 23:59:59", "Apple", "iPhone 8", (35.6895, 139.6917)),
    "y2020_start.jpg": ("2020:01:01 00:00:00", "FUJIFILM", "X-T3", (-33.8688, 151.2093)),
}
UNDATED_MTIME = datetime(2019, 6, 20, 12, 0, 0)  # undated.jpg has no EXIF date: its file says 2019-06-20


@pytest.fixture(scope="module")
def library(module_backend, tmp_path_factory, tiny_model_dir, exif_samples):
    base = tmp_path_factory.mktemp("filters")
    root = base / "Pictures"
    for sub in ("jpg", "heic", "tiff"):
        shutil.copytree(exif_samples / sub, root / sub)
    for i, (name, (taken, make, model, gps)) in enumerate(MADE.items()):
        make_exif_photo(root / "made" / name, seed=100 + i, taken=taken, make=make, model=model, gps=gps)
    undated = make_photo(root / "made" / "undated.jpg", seed=99, size=(50, 50))
    os.utime(undated, (UNDATED_MTIME.timestamp(), UNDATED_MTIME.timestamp()))
    config = make_config(base / "data", tiny_model_dir)
    with Library.open(config) as lib:
        lib.index([root])
        yield lib


@pytest.fixture
def env(tmp_path):
    """A clean environment (no user config, no PHOTOSEARCH_* of the shell) on this module's stores."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")} | stores_env()
    return clean | {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}


def _all(lib: Library, **filters: object) -> dict[str, object]:
    """Every photo the filters keep, as a timeline (no query): name -> result."""
    page = lib.query(SearchRequest(filters=Filters(**filters), k=1000))  # type: ignore[arg-type]
    assert not page.more
    return {r.path.name: r for r in page.results}


def _records(lib: Library) -> list:
    return [r for r in lib.catalog.records(range(1, 100_000)).values() if r.status == "indexed"]


def test_dates_name_whole_periods_inclusive(library):
    in_2019 = set(_all(library, start=spec.period("2019", False), end=spec.period("2019", True)))
    assert {"y2019_start.jpg", "y2019_june14.jpg", "y2019_june30.jpg", "y2019_end.jpg", "undated.jpg"} <= in_2019
    assert not {"y2018_end.jpg", "y2020_start.jpg"} & in_2019
    expected = {r.path.name for r in _records(library) if r.dated_at and r.dated_at.year == 2019}
    assert in_2019 == expected
    june = _all(library, start=spec.period("2019-06", False), end=spec.period("2019-06", True))
    assert set(june) == {"y2019_june14.jpg", "y2019_june30.jpg", "undated.jpg"}
    one_day = _all(library, start=spec.period("2019-06-14", False), end=spec.period("2019-06-14", True))
    assert set(one_day) == {"y2019_june14.jpg"}


def test_a_photo_without_a_time_taken_is_dated_by_its_file_and_says_so(library):
    june = _all(library, start=spec.period("2019-06", False), end=spec.period("2019-06", True))
    assert june["undated.jpg"].date == UNDATED_MTIME and june["undated.jpg"].date_source == "file"
    assert june["undated.jpg"].facts.taken_at is None
    assert june["y2019_june14.jpg"].date_source == "taken"
    assert june["y2019_june14.jpg"].date == datetime(2019, 6, 14, 10, 0, 0)


def test_camera_is_a_case_insensitive_part_of_make_or_model(library):
    for text in ("canon", "CANON", "eos 5d", "Canon EOS 5"):
        expected = {
            r.path.name
            for r in _records(library)
            if text.lower() in f"{r.camera_make or ''} {r.camera_model or ''}".lower()
            or text.lower() in (r.camera_make or "").lower()
            or text.lower() in (r.camera_model or "").lower()
        }
        assert set(_all(library, camera=text)) == expected and expected
    assert "Canon_40D.jpg" in _all(library, camera="canon") and "Nikon_D70.jpg" not in _all(library, camera="canon")
    assert set(_all(library, camera="iphone")) >= {"iphone_hdr_NO.jpg", "IMG_5195.HEIC", "y2019_end.jpg"}
    assert _all(library, camera="100%_no_such") == {}  # % and _ are themselves, not wildcards


def test_near_is_a_great_circle_distance_with_a_default_of_5_km(library):
    near_tower = _all(library, near=spec.near(f"{EIFFEL[0]},{EIFFEL[1]}"))
    assert set(near_tower) == {"y2019_start.jpg", "y2019_june14.jpg"}  # 0 and 4.9 km, not 5.1 km
    wider = _all(library, near=spec.near(f"{EIFFEL[0]},{EIFFEL[1]}", 6))
    assert set(wider) == {"y2019_start.jpg", "y2019_june14.jpg", "y2019_june30.jpg"}
    tuscany = (43.4672, 11.8830)
    expected = {r.path.name for r in _records(library)
                if r.gps_lat is not None and great_circle_km(*tuscany, r.gps_lat, r.gps_lon) <= 0.3}  # fmt: skip
    found = set(_all(library, near=spec.near(f"{tuscany[0]},{tuscany[1]}", 0.3)))
    assert found == expected and 2 <= len(found) < 9  # of the nine DSCN photos there, the nearest


def test_place_names_a_city_region_or_country_from_offline_geocoding(library):
    def around(lat: float, lon: float, km: float) -> set[str]:
        return {r.path.name for r in _records(library)
                if r.gps_lat is not None and great_circle_km(lat, lon, r.gps_lat, r.gps_lon) <= km}  # fmt: skip

    madrid = around(40.4168, -3.7038, 60)  # the city, and the region of Madrid around it
    assert set(_all(library, place="Madrid")) == madrid and {"iphone_hdr_NO.jpg", "iphone_hdr_YES.jpg"} <= madrid
    assert set(_all(library, place="finland")) == around(60.17, 24.94, 300) and around(60.17, 24.94, 300)
    assert set(_all(library, place="Japan")) == {"y2019_end.jpg"}
    paris_region = _all(library, place="île-de-france")  # case folded beyond ASCII
    assert {"y2019_start.jpg", "y2019_june14.jpg"} <= set(paris_region)
    assert _all(library, place="Madrid, Japan") == {}  # each part must match
    assert "Spain" in _all(library, place="Madrid")["iphone_hdr_NO.jpg"].place


def test_location_type_and_orientation(library):
    records = _records(library)
    with_gps = {r.path.name for r in records if r.gps_lat is not None}
    assert set(_all(library, location=True)) == with_gps and len(with_gps) >= 15
    assert set(_all(library, location=False)) == {r.path.name for r in records} - with_gps
    heif = {r.path.name for r in records if r.format == "HEIF"}
    assert set(_all(library, formats=spec.formats("heic"))) == heif and "IMG_5195.HEIC" in heif
    assert set(_all(library, formats=spec.formats("tiff,heic"))) == {
        r.path.name for r in records if r.format in ("TIFF", "HEIF")
    }
    portrait = _all(library, orientation="portrait")
    assert {f"portrait_{i}.jpg" for i in range(1, 9)} <= set(portrait)
    assert not {f"landscape_{i}.jpg" for i in range(1, 9)} & set(portrait)
    assert all(r.facts.height > r.facts.width for r in portrait.values())


def test_filters_combine_with_and(library):
    both = _all(library, camera="apple", start=spec.period("2019", False), end=spec.period("2019", True))
    assert set(both) == {"y2019_june30.jpg", "y2019_end.jpg"}
    assert set(_all(library, camera="canon", location=True)) == {"y2019_start.jpg"}


def test_timeline_pages_by_cursor_in_date_order_and_holds_still_while_photos_arrive(library, tmp_path):
    everything = [r.id for r in library.query(SearchRequest(sort="newest", k=1000)).results]
    dates = [r.date for r in library.query(SearchRequest(sort="newest", k=1000)).results]
    assert dates == sorted(dates, reverse=True) and len(everything) == len(_records(library))
    oldest = [r.id for r in library.query(SearchRequest(sort="oldest", k=1000)).results]
    assert oldest == everything[::-1]
    seen, cursor = [], None
    extra = tmp_path / "extra"
    while True:
        page = library.query(SearchRequest(sort="newest", k=7, cursor=cursor))
        seen += [r.id for r in page.results]
        if not page.more:
            break
        cursor = page.cursor
        if len(seen) == 14:  # new photos, dated before and after the page boundary, indexed mid-way
            make_exif_photo(extra / "new_old.jpg", 500, taken="1990:01:01 00:00:00")
            make_exif_photo(extra / "new_new.jpg", 501, taken="2030:01:01 00:00:00")
            library.index([extra])
    new_old = library.photo_at((extra / "new_old.jpg").resolve()) or library.photo_at(extra / "new_old.jpg")
    assert seen == [*everything, new_old.id]  # no repeat, no skip: the newer one was before the cursor
    library.remove_root(extra)


def test_a_query_with_filters_ranks_only_the_photos_they_keep(library):
    kept = set(_all(library, camera="canon"))
    page = library.query(SearchRequest(texts=(Weighted("a photo"),), filters=Filters(camera="canon"), k=1000))
    assert {r.path.name for r in page.results} == kept
    scores = [r.score for r in page.results]
    assert scores == sorted(scores, reverse=True) and all(r.relevant for r in page.results)


def test_combined_query_vector_is_the_documented_formula(library):
    texts = library.text_embedder().embed_texts(["a beach", "a sunset", "people"])
    example = library.photo_at(_path(library, "Canon_40D.jpg"))
    unliked = library.photo_at(_path(library, "Nikon_D70.jpg"))
    stored = library.stores().photo_vectors([example.id, unliked.id])
    q = normalised(2 * normalised(texts[0]) + normalised(texts[1]) - normalised(texts[2])
                   + 0.5 * normalised(stored[example.id]) - normalised(stored[unliked.id]))  # fmt: skip
    request = SearchRequest(texts=(Weighted("a beach", 2), Weighted("a sunset")), negatives=(Weighted("people"),),
                            examples=(Example(photo_id=example.id, weight=0.5),),
                            unlike=(Example(photo_id=unliked.id),), k=20)  # fmt: skip
    results = library.query(request).results
    assert not {example.id, unliked.id} & {r.id for r in results}  # the examples themselves are left out
    others = [r.id for r in _records(library) if r.id not in (example.id, unliked.id)]
    vectors = library.stores().photo_vectors(others)
    exact = sorted(vectors, key=lambda i: -float(vectors[i] @ q))[:20]
    assert [r.id for r in results] == exact
    assert all(abs(r.score - float(vectors[r.id] @ q)) < 1e-4 for r in results)


def test_the_same_words_give_the_same_results_in_every_interface(library, env):
    words = ["2:a camera", "--not", "a dog", "--camera", "canon", "--from", "2000", "--to", "2008-06", "-k", "8"]
    params = {"q": ["2:a camera"], "not": ["a dog"], "camera": "canon", "from": "2000", "to": "2008-06", "k": "8"}
    request = SearchRequest(texts=(Weighted("a camera", 2),), negatives=(Weighted("a dog"),),
                            filters=spec.with_period(Filters(camera="canon"), "2000", "2008-06"), k=8)  # fmt: skip
    expected = [r.to_dict() for r in library.query(request).results]
    assert len(expected) >= 5
    client = _client(library)
    got = client.get("/api/search", params=params).json()["results"]
    posted = client.post("/api/search", json=params).json()["results"]
    cli = _cli(library, env, "search", words[0].split(":", 1)[1], "--weight", "2", *words[1:], "--json")
    for answer in (got, posted, cli):
        assert [_core(r) for r in answer] == [_core(r) for r in expected]


def test_bad_words_are_one_clear_error(library):
    for params, message in (({"from": "2019-13"}, "not a date"), ({"near": "91,0"}, "not on Earth"),
                            ({"type": "raw"}, "unknown type"), ({"q": "a", "cutoff": "high"}, "cutoff"),
                            ({"from": "2020", "to": "2019"}, "empty"), ({"nope": "1"}, "unknown search parameter"),
                            ({"not": "x"}, "subtract"), ({"q": "0:x"}, "weight")):  # fmt: skip
        with pytest.raises(InvalidQueryError, match=message):
            from_params(params)
        reply = _client(library).get("/api/search", params=params)
        assert reply.status_code == 422 and message in reply.json()["detail"], (params, reply.json())


def test_the_wire_form_carries_every_part_of_a_combined_query():
    """What the CLI sends a server (to_params) reads back as the same request: ids and uploads, added and
    subtracted, with their weights."""
    request = SearchRequest(
        texts=(Weighted("sunset", 2.0), Weighted("beach")), negatives=(Weighted("people", 0.5),),
        examples=(Example(photo_id=17), Example(upload="u-added", weight=0.5)),
        unlike=(Example(photo_id=23, weight=3.0), Example(upload="u-subtracted", weight=0.25)),
        filters=Filters(camera="canon"), sort="newest", cutoff="auto", k=30,
    )  # fmt: skip
    params = to_params(request)
    assert params["unlike"] == ["3:23"] and params["unlike_upload"] == ["0.25:u-subtracted"]
    assert from_params(params) == request
    with pytest.raises(InvalidQueryError, match="photo id or an upload"):
        to_params(SearchRequest(texts=(Weighted("x"),), unlike=(Example(path=Path("/a.jpg")),)))


def _client(lib: Library) -> TestClient:
    return TestClient(create_app(lib), base_url="http://127.0.0.1", headers={CSRF_HEADER: "1"})


def _path(lib: Library, name: str) -> Path:
    return next(r.path for r in _records(lib) if r.path.name == name)


def _core(result: dict) -> tuple:
    return result["id"], round(result["score"], 4) if result["score"] is not None else None, result["relevant"]


def _run_cli(lib: Library, env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    config = lib.config
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(config.data_dir), "--model", config.model.name,
           *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**env, **stores_env()}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def _cli(lib: Library, env: dict, *args: str) -> list[dict]:
    return [json.loads(line) for line in _run_cli(lib, env, *args).stdout.splitlines()]


def test_facets_count_what_the_filters_would_keep(library):
    records = _records(library)
    found = _client(library).get("/api/facets").json()
    assert found["total"] == len(records)
    cameras = {(c["make"], c["model"]): c["count"] for c in found["cameras"]}
    for (make, model), count in cameras.items():
        kept = _all(library, camera=f"{make} {model}".strip())
        assert sum(1 for r in kept.values() if (r.facts.camera_make or "", r.facts.camera_model or "")
                   == (make, model)) == count  # fmt: skip
    years = {y["year"]: y["count"] for y in found["years"]}
    assert years[2019] == len(_all(library, start=spec.period("2019", False), end=spec.period("2019", True)))
    assert sum(years.values()) == len(records)
    months = {m["month"]: m["count"] for m in found["months"]}
    assert months["2019-06"] == 3 and sum(months.values()) == len(records)
    countries = {c["country"]: c["count"] for c in found["places"]["countries"]}
    for country, count in countries.items():
        assert len(_all(library, place=country)) == count
    assert countries["Japan"] == 1 and "Spain" in countries
    types = {t["type"]: t["count"] for t in found["types"]}
    assert types["heic"] == len(_all(library, formats=spec.formats("heic"))) and sum(types.values()) == len(records)
    assert found["location"] == {
        "with": len(_all(library, location=True)),
        "without": len(_all(library, location=False)),
    }
    narrowed = _client(library).get("/api/facets", params={"camera": "apple"}).json()
    assert narrowed["total"] == len(_all(library, camera="apple"))
    assert {c["make"] for c in narrowed["cameras"]} == {"Apple"}


def test_the_facets_follow_the_library_as_it_changes(library, tmp_path):
    before = library.facets()
    assert library.facets() == before  # kept
    extra = make_exif_photo(tmp_path / "more" / "x.jpg", 600, taken="2031:05:05 10:00:00", make="Leica", model="M11",
                            gps=(48.8566, 2.3522))  # fmt: skip
    library.index([extra.parent])
    after = library.facets()
    assert after["total"] == before["total"] + 1
    assert {"make": "Leica", "model": "M11", "count": 1} in after["cameras"]
    assert after["years"][0] == {"year": 2031, "count": 1}
    assert any(c["city"] == "Paris" for c in after["places"]["cities"])  # looked up after the run
    library.remove_root(extra.parent)
    assert library.facets() == before


def test_photos_indexed_before_places_were_recorded_get_theirs_at_the_next_run(library):
    """A catalog from before migration 0005 has positions and no places: the next index run looks them up."""
    from sqlalchemy import update

    from photosearch.stores.schema import Photo

    madrid = set(_all(library, place="Madrid"))
    with library.catalog.session() as s, s.begin():
        s.execute(update(Photo).values(place_city=None, place_region=None, place_country=None))
    assert _all(library, place="Madrid") == {}
    report = library.index()
    assert report.embedded == 0 and set(_all(library, place="Madrid")) == madrid


def test_the_cli_pages_a_timeline_by_the_cursor_it_prints(library, env):
    expected = _all(library, start=spec.period("2019", False), end=spec.period("2019", True))
    seen: list[str] = []
    args = ["search", "--from", "2019", "--to", "2019", "-k", "2"]
    while True:
        done = _run_cli(library, env, *args)
        lines = done.stdout.splitlines()
        assert all(line.split()[1].startswith("2019-") for line in lines)  # rank, date, time, path
        seen += [Path(line.split()[-1]).name for line in lines]
        more = [line for line in done.stderr.splitlines() if line.startswith("more: --cursor ")]
        if not more:
            break
        args = ["search", "--from", "2019", "--to", "2019", "-k", "2", "--cursor", more[0].split()[-1]]
    assert seen == sorted(expected, key=lambda name: (expected[name].date, expected[name].id), reverse=True)
    june = _run_cli(library, env, "search", "--from", "2019-06", "--to", "2019-06", "-k", "10").stdout.splitlines()
    assert next(line for line in june if line.endswith("undated.jpg")).split()[2].endswith("*")  # dated by its file


def test_the_cli_prints_the_facets_the_library_counts(library, env):
    whole = json.loads(_run_cli(library, env, "facets", "--json").stdout)
    assert whole == json.loads(json.dumps(library.facets()))
    apple = json.loads(_run_cli(library, env, "facets", "--camera", "apple", "--json").stdout)
    assert apple == json.loads(json.dumps(library.facets(Filters(camera="apple"))))
    assert apple["total"] == len(_all(library, camera="apple")) < whole["total"]
    lines = _run_cli(library, env, "facets", "--from", "2019", "--to", "2019").stdout.splitlines()
    in_2019 = _all(library, start=spec.period("2019", False), end=spec.period("2019", True))
    located = sum(1 for r in in_2019.values() if r.facts.gps_lat is not None)
    assert lines[0] == f"{len(in_2019)} photos, {located} with a location"
    rows = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
    assert rows["years"] == f"2019 ({len(in_2019)})"
    assert "Japan (1)" in rows["countries"] and "Apple iPhone 8 (2)" in rows["cameras"]


def test_the_scope_of_a_filter_is_counted_up_to_a_bound_and_its_hashes_are_distinct(library):
    in_2019 = _all(library, start=spec.period("2019", False), end=spec.period("2019", True))
    catalog = library.catalog  # its reads behind a filtered search (query/search.py)
    period = PhotoScope(filters=spec.with_period(Filters(), "2019", "2019"))
    assert catalog.count_in(period) == len(in_2019) >= 4
    assert catalog.count_in(period, at_most=3) == 3 and catalog.count_in(period, at_most=99) == len(in_2019)
    hashes = catalog.scope_hashes(period)
    records = {r.id: r for r in _records(library)}
    assert len(hashes) == len(set(hashes))
    assert sorted(hashes) == sorted({records[r.id].content_hash for r in in_2019.values()})
    assert catalog.scope_hashes(PhotoScope(filters=Filters(camera="no such camera"))) == []
