"""A photo's facts are declared once (photosearch/facts.py); every other view must follow that declaration.

Each test holds one view to it: the catalog's columns and records, the HTTP API's schema, the CLI's JSON lines,
the README's list of them and the keys the web page reads. A fact added to PhotoFacts but not to the catalog's
table (or the other way round) fails here, as does a view that stops deriving its fields from the declaration.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import pytest
from helpers import readme_json_keys
from pydantic import TypeAdapter

from photosearch.config import Config
from photosearch.facts import FACT_FIELDS, RESULT_FACTS, PhotoFacts, fact_types, fact_values
from photosearch.query.result import RESULT_KEYS, SearchResult
from photosearch.serving.httpapi import create_app
from photosearch.stores.catalog import Catalog, PhotoRecord
from photosearch.stores.schema import Photo, PhotoStatus

WEB_APP = Path(__file__).resolve().parent.parent / "photosearch" / "serving" / "web" / "app.js"
URLS = ("thumbnail_url", "original_url")
# One value of each fact, all different from None (and from each other where the type allows).
SAMPLE = PhotoFacts(
    width=4032, height=3024, format="JPEG", taken_at=datetime(2023, 7, 14, 18, 30, 5), camera_make="Canon",
    camera_model="Canon EOS 40D", gps_lat=43.4675, gps_lon=-11.8817, orientation=6,
)  # fmt: skip


def _declared(kind: object) -> type:
    """``int | None`` -> int: the type a fact has when it is known."""
    known = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    assert len(known) == 1, kind
    return typing.cast(type, known[0])


def test_the_declaration_names_every_fact_once_and_shows_some_in_results():
    assert tuple(f.name for f in fields(PhotoFacts)) == FACT_FIELDS
    assert set(RESULT_FACTS) < set(FACT_FIELDS)
    assert all(value is not None for value in fact_values(SAMPLE).values())  # SAMPLE covers every fact


def test_the_catalog_table_has_a_column_for_each_field_of_a_record():
    columns = {column.name: column for column in Photo.__table__.columns}
    record_fields = [f.name for f in fields(PhotoRecord)]
    bookkeeping = {"updated_at", "claimed_by", "claimed_until"}  # the catalog's own: when, and which worker embeds it
    assert set(columns) == set(record_fields) | bookkeeping
    assert record_fields[: len(FACT_FIELDS)] == list(FACT_FIELDS)  # a record is its facts plus the rest of its row
    for name, kind in fact_types().items():
        column = columns[name]
        assert column.nullable, f"{name}: a photo never decoded has no facts"
        assert column.type.python_type is _declared(kind), name


def test_a_record_reads_every_fact_back(tmp_path):
    catalog = Catalog.open(tmp_path / "c.sqlite3")
    root = catalog.add_root(Path("/lib"))
    base = {"root_id": root.id, "folder": "", "size": 1, "mtime_ns": 1, "status": PhotoStatus.PENDING}
    with_facts, without = catalog.upsert_files([
        {**base, "path": "/lib/a.jpg", **fact_values(SAMPLE)},
        {**base, "path": "/lib/b.jpg", "status": PhotoStatus.FAILED, "error": "not an image"},
    ])  # fmt: skip
    for record in (catalog.get(with_facts), catalog.by_path(Path("/lib/a.jpg")), catalog.records([with_facts])[1]):
        assert record is not None and record.facts == SAMPLE
    assert catalog.get(without).facts == PhotoFacts(*[None] * len(FACT_FIELDS))
    catalog.close()


def test_a_search_result_shows_the_facts_marked_for_results():
    result = SearchResult(rank=1, id=7, path=Path("/lib/a.jpg"), score=0.25, folder="", facts=SAMPLE)
    data = result.to_dict()
    assert tuple(data) == RESULT_KEYS
    assert [key for key in RESULT_KEYS if key in FACT_FIELDS] == list(RESULT_FACTS)
    assert data["taken_at"] == SAMPLE.taken_at.isoformat()


def test_a_search_result_comes_back_from_its_json_form_as_a_server_sends_it():
    """What a running server sends becomes a SearchResult again (serving/remote.py) that prints the same JSON."""
    result = SearchResult(rank=2, id=7, path=Path("/lib/caf\udce9.jpg"), score=0.25, folder="x", facts=SAMPLE)
    sent = json.loads(json.dumps(result.to_dict() | {"thumbnail_url": "/api/photos/7/thumbnail"}))
    again = SearchResult.from_dict(sent)
    assert again.to_dict() == result.to_dict() and again.facts.taken_at == SAMPLE.taken_at
    assert again.facts.gps_lat == SAMPLE.gps_lat and again.facts.orientation is None  # not in results: not known


def test_the_cli_prints_the_json_keys_the_readme_lists(capsys):
    from photosearch.cli_search import print_results

    result = SearchResult(rank=1, id=7, path=Path("/lib/a.jpg"), score=0.25, folder="", facts=SAMPLE)
    print_results([result], as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(RESULT_KEYS) == readme_json_keys("search")
    assert printed == result.to_dict()  # every value as the result's JSON form has it


@pytest.fixture(scope="module")
def api_schemas(tmp_path_factory):
    """The OpenAPI schemas of the app; building it (and its schema) touches neither a store nor a model."""
    library = types.SimpleNamespace(config=Config(data_dir=tmp_path_factory.mktemp("data")))
    return create_app(library).openapi()["components"]["schemas"]


@pytest.mark.parametrize(("model", "facts"), [("Result", RESULT_FACTS), ("PhotoDetails", FACT_FIELDS)])
def test_the_http_schema_has_the_declared_facts_with_their_types(api_schemas, model, facts):
    properties = api_schemas[model]["properties"]
    assert [name for name in properties if name in FACT_FIELDS] == list(facts)
    assert set(facts) <= set(api_schemas[model]["required"])  # always there, null when not known
    for name in facts:
        expected = TypeAdapter(fact_types()[name]).json_schema()
        assert {k: v for k, v in properties[name].items() if k != "title"} == expected, name


def test_an_http_result_has_the_keys_of_a_cli_result(api_schemas):
    assert set(api_schemas["Result"]["properties"]) == set(RESULT_KEYS) | set(URLS)


def test_the_web_page_reads_only_keys_the_api_sends(api_schemas):
    """app.js names a search result ``r`` and a photo's details ``d`` throughout."""
    script = WEB_APP.read_text(encoding="utf-8")
    for variable, model in (("r", "Result"), ("d", "PhotoDetails")):
        read = set(re.findall(rf"\b{variable}\.([a-z_]+)\b", script))
        assert read, variable  # the naming still holds
        assert read <= set(api_schemas[model]["properties"]), (model, read - set(api_schemas[model]["properties"]))
