"""/api/roots and offline results over HTTP, against a real library on both backends, with the tiny CLIP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers import Counted, assert_stores_agree, make_config, make_photo

from photosearch.library import Library
from photosearch.serving.httpapi import create_app

pytestmark = pytest.mark.usefixtures("backend")

# The Host a real client sends, and the header with which the CLI's client marks its requests (webguard.py).
BASE_URL = "http://127.0.0.1:8765"
HEADERS = {"X-Photosearch": "1"}


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(3):
        make_photo(a / f"a{i}.jpg", seed=i)
    for i in range(5):
        make_photo(b / f"b{i}.jpg", seed=10 + i)
    library = Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted())
    library.index([a, b])
    with TestClient(create_app(library), base_url=BASE_URL, headers=HEADERS) as client:
        yield client, library, a, b
    library.close()


def _roots(client):
    reply = client.get("/api/roots")
    assert reply.status_code == 200
    return reply.json()


def test_list_shows_counts_missing_folders_and_where_they_moved(setup):
    client, library, a, b = setup
    assert [(r["path"], r["photos"], r["missing"]) for r in _roots(client)["roots"]] == [
        (str(a), 3, False), (str(b), 5, False)
    ]  # fmt: skip
    b2 = b.with_name("B2")
    b.rename(b2)
    library.index([b2])
    listing = _roots(client)
    assert [(r["path"], r["missing"], r["moved_to"]) for r in listing["roots"]] == [
        (str(a), False, None), (str(b), True, str(b2)), (str(b2), False, None)
    ]  # fmt: skip
    moved = {"root": str(b), "to": str(b2), "command": f"photosearch roots move {b} {b2}"}
    assert listing["moved_roots"] == [moved]
    assert client.get("/api/status").json()["moved_roots"] == [moved]


def test_offline_results_are_left_out_unless_asked_for_and_marked(setup):
    client, library, a, b = setup
    b.rename(b.with_name("unplugged"))
    default = client.get("/api/search", params={"q": "x", "k": 20}).json()["results"]
    assert len(default) == 3 and not any(r["offline"] for r in default)
    every = client.get("/api/search", params={"q": "x", "k": 20, "include_offline": True}).json()["results"]
    assert len(every) == 8 and {r["path"] for r in every if r["offline"]} == {str(b / f"b{i}.jpg") for i in range(5)}
    photo_id = library.catalog.by_path(a / "a0.jpg").id
    similar = client.get(f"/api/photos/{photo_id}/similar", params={"k": 20, "include_offline": "true"}).json()
    assert sum(r["offline"] for r in similar["results"]) == 5
    upload = {"file": ("q.jpg", (a / "a1.jpg").read_bytes(), "image/jpeg")}
    by_image = client.post("/api/search/image", params={"k": 20}, files=upload).json()["results"]
    assert len(by_image) == 3


def test_add_move_and_remove(setup, tmp_path):
    client, library, a, b = setup
    c = tmp_path / "C"
    c.mkdir()
    added = client.post("/api/roots", json={"path": str(c)})
    assert added.status_code == 201 and (added.json()["path"], added.json()["photos"]) == (str(c), 0)
    b2 = b.with_name("B2")
    b.rename(b2)
    root_b = next(r["id"] for r in _roots(client)["roots"] if r["path"] == str(b))
    moved = client.post(f"/api/roots/{root_b}/move", json={"path": str(b2)})
    assert moved.status_code == 200 and (moved.json()["id"], moved.json()["path"]) == (root_b, str(b2))
    assert library.index().embedded == 0
    removed = client.delete(f"/api/roots/{root_b}")
    assert removed.json() == {"id": root_b, "path": str(b2), "photos": 5}
    assert sorted(r["path"] for r in _roots(client)["roots"]) == [str(a), str(c)]
    assert len(assert_stores_agree(library)) == 3
    assert client.delete(f"/api/roots/{root_b}").status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [('{"path": "relative/folder"}', 422), ('{"path": "/no/such/folder"}', 404), ('{"path": "/a\\u0000b"}', 422),
     ('{"path": "/' + "x" * 300 + '"}', 422), ('{"path": "/\\ud800"}', 422), ("{}", 422)],
)  # fmt: skip
def test_bad_folders_are_4xx_json(setup, body, status):
    """Raw JSON: a lone surrogate escape is valid JSON, but no file name."""
    client, *_ = setup
    response = client.post("/api/roots", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}


def test_moves_that_cannot_be_recorded_are_4xx(setup, tmp_path):
    client, _, a, b = setup
    ids = {r["path"]: r["id"] for r in _roots(client)["roots"]}
    assert client.post(f"/api/roots/{ids[str(b)]}/move", json={"path": str(tmp_path / "gone")}).status_code == 404
    forced = client.post(f"/api/roots/{ids[str(b)]}/move", json={"path": str(tmp_path / "gone"), "force": True})
    assert forced.status_code == 200 and forced.json()["missing"] is True
    assert client.post(f"/api/roots/{ids[str(a)]}/move", json={"path": str(tmp_path)}).status_code == 409
    assert client.post("/api/roots/999/move", json={"path": str(a)}).status_code == 404
