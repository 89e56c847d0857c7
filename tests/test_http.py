"""The HTTP API against a real library on both backends (SQLite and embedded Chroma; PostgreSQL and a Chroma
server), with the tiny real CLIP model."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from helpers import Counted, make_config, make_photo
from PIL import Image

from photosearch.config import Config, replace
from photosearch.errors import ConfigError
from photosearch.library import Library
from photosearch.pathtext import to_text
from photosearch.serving.httpapi import create_app
from photosearch.serving.serve import check_binding
from photosearch.serving.webguard import CSRF_HEADER

TOKEN = "a-long-random-test-token-123456"
pytestmark = pytest.mark.usefixtures("module_backend")

BASE_URL = "http://127.0.0.1:8765"  # the Host a real client sends (TestClient's "testserver" is refused)


def _client(app) -> TestClient:
    """A client as the CLI's: the server's own Host, and the header every POST needs (webguard.py)."""
    return TestClient(app, base_url=BASE_URL, headers={CSRF_HEADER: "1"})


@pytest.fixture(scope="module")
def built(module_backend, tmp_path_factory, tiny_model_dir, exif_samples):
    """A library of made photos plus two real orientation samples, and a symlink pointing out of it."""
    base = tmp_path_factory.mktemp("http")
    root = base / "lib"
    for i in range(10):
        make_photo(root / ("a" if i < 5 else "b") / f"p{i}.jpg", seed=i)
    for name in ("portrait_6.jpg", "landscape_1.jpg"):
        (root / "orient").mkdir(parents=True, exist_ok=True)
        (root / "orient" / name).write_bytes((exif_samples / "jpg" / "orientation" / name).read_bytes())
    secret = make_photo(base / "outside" / "secret.jpg", seed=99)
    (root / "escape.jpg").symlink_to(secret)
    config = make_config(base / "data", tiny_model_dir)
    with Library.open(config, embedder_factory=Counted()) as library:
        library.index([root])
    return config, root, secret


@pytest.fixture
def library(built):
    config, _, _ = built
    lib = Library.open(config, embedder_factory=Counted())
    yield lib
    lib.close()


@pytest.fixture
def client(library):
    reindexed = []
    with _client(create_app(library, reindex=lambda: reindexed.append(True))) as c:
        c.reindexed = reindexed
        yield c


def _id(library, path) -> int:
    return library.catalog.by_path(path).id


def test_search_pages_and_filters(client, built):
    _, root, _ = built
    first = client.get("/api/search", params={"q": "a red circle", "k": 5}).json()
    assert len(first["results"]) == 5 and first["more"] is True
    second = client.get("/api/search", params={"q": "a red circle", "k": 5, "offset": 5}).json()
    assert [r["rank"] for r in second["results"]] == [6, 7, 8, 9, 10]
    assert not {r["id"] for r in first["results"]} & {r["id"] for r in second["results"]}
    everything = client.get("/api/search", params={"q": "x", "k": 100}).json()
    assert len(everything["results"]) == 13 and everything["more"] is False
    in_a = client.get("/api/search", params={"q": "x", "k": 100, "folder": str(root / "a")}).json()["results"]
    assert {r["folder"] for r in in_a} == {"a"} and len(in_a) == 5
    hit = first["results"][0]
    assert hit["thumbnail_url"] == f"/api/photos/{hit['id']}/thumbnail"


@pytest.mark.parametrize(
    ("params", "status"),
    [({"q": "x", "sort": "sideways"}, 422), ({"q": ""}, 422), ({"q": "x", "k": 0}, 422), ({"q": "x", "k": 5000}, 422),
     ({"q": "x", "offset": -1}, 422), ({"q": "x", "folder": "/etc"}, 422),
     ({"q": "x", "folder": "\x00"}, 422)],  # the fuzzer's find: a NUL byte was a 500
)  # fmt: skip
def test_bad_search_requests_are_4xx_json(client, params, status):
    response = client.get("/api/search", params=params)
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}


def test_photo_details_and_similar(client, library, built):
    _, root, _ = built
    photo_id = _id(library, root / "orient" / "portrait_6.jpg")
    details = client.get(f"/api/photos/{photo_id}").json()
    assert details["path"] == str(root / "orient" / "portrait_6.jpg")
    assert (details["orientation"], details["width"] < details["height"]) == (6, True)
    similar = client.get(f"/api/photos/{photo_id}/similar", params={"k": 4}).json()["results"]
    assert len(similar) == 4 and photo_id not in {r["id"] for r in similar}
    assert client.get("/api/photos/999999").status_code == 404
    assert client.get("/api/photos/999999/similar").status_code == 404
    assert client.get("/api/photos/abc").status_code == 422
    assert client.get(f"/api/photos/{2**63}").status_code == 422  # found by the fuzzer: was an overflow 500


def test_search_by_uploaded_image(client, library, built):
    _, root, _ = built
    data = (root / "b" / "p7.jpg").read_bytes()
    reply = client.post("/api/search/image", params={"k": 4}, files={"file": ("q.jpg", data, "image/jpeg")}).json()
    results = reply["results"]
    assert results[0]["id"] == _id(library, root / "b" / "p7.jpg") and results[0]["score"] > 0.999
    assert reply["more"] is True and len(results) == 4
    page2 = client.post("/api/search/image", params={"k": 4, "offset": 4}, files={"file": ("q.jpg", data)}).json()
    assert [r["rank"] for r in page2["results"]] == [5, 6, 7, 8]
    not_image = client.post("/api/search/image", files={"file": ("q.jpg", b"hello", "image/jpeg")})
    assert not_image.status_code == 415 and "not an image" in not_image.json()["detail"]
    assert client.post("/api/search/image").status_code == 422


def test_upload_over_the_limit_is_413(library, built):
    config: Config = built[0]
    small = replace(config, server=replace(config.server, max_upload_bytes=2048))
    library.config = small
    with _client(create_app(library)) as client:
        big = io.BytesIO()
        Image.effect_noise((256, 256), 64).convert("RGB").save(big, format="PNG")
        response = client.post("/api/search/image", files={"file": ("big.png", big.getvalue(), "image/png")})
    assert response.status_code == 413


def test_thumbnail_is_upright_cached_and_revalidated(client, library, built):
    config, root, _ = built
    photo_id = _id(library, root / "orient" / "portrait_6.jpg")
    response = client.get(f"/api/photos/{photo_id}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.width < thumb.height and max(thumb.size) <= config.server.thumbnail_size  # EXIF 6 applied
    assert "max-age" in response.headers["cache-control"]
    assert any(config.thumbnail_dir.rglob("*.jpg"))
    again = client.get(f"/api/photos/{photo_id}/thumbnail", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_original_by_id_only_and_never_outside_the_library(client, library, built):
    _, root, secret = built
    photo_id = _id(library, root / "a" / "p0.jpg")
    original = client.get(f"/api/photos/{photo_id}/original")
    assert original.content == (root / "a" / "p0.jpg").read_bytes()
    escape_id = _id(library, root / "escape.jpg")  # indexed through the symlink, but it points outside
    for url in (f"/api/photos/{escape_id}/original", f"/api/photos/{escape_id}/thumbnail"):
        response = client.get(url)
        assert response.status_code == 404 and response.content != secret.read_bytes()
    attempts = (
        "/api/photos/..%2F..%2Fetc%2Fpasswd/original", "/api/photos/%2Fetc%2Fpasswd/original",
        "/static/..%2F..%2Fcatalog.py", "/static/../library.py", "/api/photos/1%2F..%2F2/original",
    )  # fmt: skip
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert b"root:" not in response.content and b"import" not in response.content


def test_status_and_reindex_trigger(client):
    status = client.get("/api/status").json()
    assert (status["indexed"], status["pending"], status["failed"]) == (13, 0, 0)
    assert status["model_matches"] is True
    assert client.post("/api/reindex").status_code == 202
    assert client.reindexed == [True]


def test_cors_is_off_by_default(client):
    response = client.get("/api/status", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_token_is_required_on_every_request(library, built):
    config: Config = built[0]
    library.config = replace(config, server=replace(config.server, token=TOKEN))
    with _client(create_app(library)) as client:
        for url in ("/", "/api/status", "/api/search?q=x", "/api/photos/1/thumbnail", "/static/index.html",
                    "/api/openapi.json"):  # fmt: skip
            response = client.get(url)
            assert response.status_code == 401, url
            assert b"photosearch" not in response.content or url == "/"
        assert client.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        assert client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        form = client.get("/", headers={"Accept": "text/html"})
        assert form.status_code == 401 and 'name="token"' in form.text and "p0.jpg" not in form.text
        page = client.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "photosearch_token" in page.headers["set-cookie"]
        assert client.get("/api/status").status_code == 200  # the cookie now carries it


def test_binding_beyond_loopback_needs_a_token(built):
    config: Config = built[0]
    for host in ("127.0.0.1", "localhost", "::1"):
        check_binding(config, host)
    with pytest.raises(ConfigError, match=r"server\.token"):
        check_binding(config, "0.0.0.0")
    with_token = replace(config, server=replace(config.server, token=TOKEN))
    check_binding(with_token, "0.0.0.0")


def test_similar_and_image_search_keep_to_a_folder(client, library, built):
    """The folder parameter of the two example searches, in the wire form /api/search takes (pathtext.to_text)."""
    _, root, _ = built
    photo_id = _id(library, root / "a" / "p0.jpg")
    in_b = {"k": 20, "folder": to_text(root / "b")}
    similar = client.get(f"/api/photos/{photo_id}/similar", params=in_b).json()["results"]
    assert {r["folder"] for r in similar} == {"b"} and len(similar) == 5
    data = (root / "a" / "p1.jpg").read_bytes()
    by_image = client.post("/api/search/image", params=in_b, files={"file": ("q.jpg", data, "image/jpeg")}).json()
    assert {r["folder"] for r in by_image["results"]} == {"b"} and len(by_image["results"]) == 5
    for folder in ("/etc", "\x00"):  # outside every library folder; not a path at all
        assert client.get(f"/api/photos/{photo_id}/similar", params={"folder": folder}).status_code == 422
        files = {"file": ("q.jpg", data, "image/jpeg")}
        assert client.post("/api/search/image", params={"folder": folder}, files=files).status_code == 422


def test_failures_list_the_files_that_failed(client):
    assert client.get("/api/failures").json() == {"failures": []}  # this library has none (test_serve.py has one)
