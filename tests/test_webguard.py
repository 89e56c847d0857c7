"""The web guard (webguard.py) over the real app: which Host names, origins and POSTs the server answers.

What it stops: a page the user visits that rebinds its own name to 127.0.0.1 (it sends `Host: evil.example`)
and then reads the library, and any page that makes the browser POST to the server (a form, a no-cors fetch).
"""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from helpers import Counted, make_config, make_photo

from photosearch.config import Config, replace
from photosearch.library import Library
from photosearch.serving.httpapi import create_app
from photosearch.serving.webguard import CSRF_HEADER, HostRule, split_host

TOKEN = "a-long-random-test-token-123456"
BASE_URL = "http://127.0.0.1:8765"
OWN_ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("guard")
    for i in range(3):
        make_photo(base / "lib" / f"p{i}.jpg", seed=i)
    config = make_config(base / "data", tiny_model_dir)
    with Library.open(config, embedder_factory=Counted()) as library:
        library.index([base / "lib"])
    return config, base / "lib"


@pytest.fixture
def serve(built):
    """serve(**server_settings) -> a TestClient sending nothing but what each test adds (like a browser)."""
    config: Config = built[0]
    opened: list[tuple[Library, TestClient]] = []

    def make(**server: object) -> TestClient:
        library = Library.open(config, embedder_factory=Counted())
        library.config = replace(config, server=replace(config.server, **server))
        client = TestClient(create_app(library, reindex=lambda: client.reindexed.append(True)), base_url=BASE_URL)
        client.reindexed = []
        opened.append((library, client.__enter__()))
        return client

    yield make
    for library, client in opened:
        client.__exit__(None, None, None)
        library.close()


def _photo_id(built) -> int:
    _, root = built
    with Library.open(built[0], embedder_factory=Counted()) as library:
        return library.catalog.by_path(root / "p0.jpg").id


def _refused(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == kind and response.json()["detail"]


# --- Host ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "served"),
    [("127.0.0.1:8765", True), ("127.0.0.1", True), ("localhost", True), ("LOCALHOST:8765", True),
     ("localhost.:8765", True), ("[::1]:8765", True), ("[::1]", True), ("127.0.0.2:8765", True),
     ("[::ffff:127.0.0.1]:8765", True),
     ("evil.example", False), ("evil.example:8765", False), ("127.0.0.1.evil.example", False),
     ("localhost.evil.example:8765", False), ("203.0.113.9:8765", False), ("", False), ("127.0.0.1:x", False),
     ("127.0.0.1:99999", False), ("[::1", False)],
)  # fmt: skip
def test_only_the_servers_own_host_names_are_answered(serve, built, host, served):
    """The issue's case first of all: `Host: evil.example:8765` (DNS rebinding) got a photo's details."""
    client = serve()
    photo_id = _photo_id(built)
    for url in (f"/api/photos/{photo_id}", f"/api/photos/{photo_id}/original", "/", "/api/status"):
        response = client.get(url, headers={"Host": host})
        if served:
            assert response.status_code == 200, (url, response.text)
        else:
            _refused(response, 400, "UnknownHostError")
            assert b"p0.jpg" not in response.content and "server.allowed_hosts" in response.json()["detail"]


def test_allowed_hosts_adds_names_and_star_allows_any(serve):
    client = serve(allowed_hosts=("photos.home.arpa", "[fd00::7]:8765"))
    for host in ("photos.home.arpa", "PHOTOS.home.arpa:8765", "[fd00::7]", "127.0.0.1:8765"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "home.arpa", "photos.home.arpa.evil.example"):
        _refused(client.get("/api/status", headers={"Host": host}), 400, "UnknownHostError")
    anything = serve(allowed_hosts=("*",))
    assert anything.get("/api/status", headers={"Host": "evil.example:8765"}).status_code == 200


def _outbound_address() -> str | None:
    """An address of this machine beyond loopback (no packet is sent: a UDP connect only picks a route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("203.0.113.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_bound_beyond_loopback_the_machines_names_and_addresses_are_answered(serve):
    client = serve(host="0.0.0.0", token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    name = socket.gethostname()
    hosts = [f"{name}:8765", f"{name.upper()}.local", "0.0.0.0:8765", "127.0.0.1:8765", "localhost"]
    if (address := _outbound_address()) is not None:
        hosts.append(f"{address}:8765")
    for host in hosts:
        assert client.get("/api/status", headers={"Host": host, **auth}).status_code == 200, host
    for host in ("evil.example:8765", "203.0.113.9:8765", f"{name}.evil.example"):
        _refused(client.get("/api/status", headers={"Host": host, **auth}), 400, "UnknownHostError")
    on_loopback = HostRule.for_server("127.0.0.1")
    assert not on_loopback.allows(name.lower()) or name.lower() == "localhost"
    assert address is None or not on_loopback.allows(address)  # only a wider binding answers to them


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("127.0.0.1:8765", ("127.0.0.1", 8765)), ("LocalHost", ("localhost", None)), ("[::1]:80", ("::1", 80)),
     ("::1", ("::1", None)), ("photos.lan.", ("photos.lan", None)), (" a.b:1 ", ("a.b", 1)),
     ("", None), (":8765", None), ("[::1]x", None), ("a:8765x", None),
     ("a:\u00b2", None), ("a:65536", None)],
)  # fmt: skip
def test_host_values_are_split_into_name_and_port(value, parsed):
    assert split_host(value) == parsed


# --- origins ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "served"),
    [({}, True), ({"Origin": OWN_ORIGIN}, True), ({"Origin": "HTTP://127.0.0.1:8765"}, True),
     ({"Sec-Fetch-Site": "same-origin"}, True), ({"Sec-Fetch-Site": "none"}, True),
     ({"Origin": OWN_ORIGIN, "Sec-Fetch-Site": "same-origin"}, True),
     ({"Origin": "http://evil.example"}, False), ({"Origin": "null"}, False),
     ({"Origin": "http://127.0.0.1:9999"}, False), ({"Origin": "http://localhost:8765"}, False),
     ({"Origin": "https://127.0.0.1:8765"}, False), ({"Origin": "not a url"}, False),
     ({"Sec-Fetch-Site": "same-site"}, False), ({"Sec-Fetch-Site": "cross-site"}, False),
     ({"Sec-Fetch-Site": "Cross-Site"}, False), ({"Origin": OWN_ORIGIN, "Sec-Fetch-Site": "cross-site"}, False)],
)  # fmt: skip
def test_api_requests_from_other_pages_are_refused(serve, built, headers, served):
    client = serve()
    photo_id = _photo_id(built)
    for url in ("/api/status", "/api/search?q=x", f"/api/photos/{photo_id}", f"/api/photos/{photo_id}/thumbnail"):
        response = client.get(url, headers=headers)
        if served:
            assert response.status_code == 200, (url, response.text)
        else:
            _refused(response, 403, "CrossOriginError")
    post = client.post("/api/reindex", headers={**headers, CSRF_HEADER: "1"})
    assert post.status_code == (202 if served else 403)
    assert client.reindexed == ([True] if served else [])


def test_the_page_itself_opens_from_a_link_on_another_site(serve):
    """A navigation from elsewhere reads nothing private: the page and its code, whose API calls are then
    same-origin."""
    client = serve()
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    for url in ("/", "/static/app.js"):
        assert client.get(url, headers=navigation).status_code == 200
    _refused(client.post("/", headers={"Sec-Fetch-Site": "cross-site", CSRF_HEADER: "1"}), 403, "CrossOriginError")


def test_the_issues_cross_origin_form_post_starts_no_reindex(serve, built):
    client = serve()
    form = {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    _refused(client.post("/api/reindex", headers=form, content=b"a=1"), 403, "CrossOriginError")
    upload = client.post("/api/search/image", headers={"Origin": "http://evil.example"},
                         files={"file": ("q.jpg", (built[1] / "p1.jpg").read_bytes(), "image/jpeg")})  # fmt: skip
    _refused(upload, 403, "CrossOriginError")
    assert client.reindexed == []


# --- POSTs need a non-simple signal ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [({}, False), ({"Content-Type": "application/x-www-form-urlencoded"}, False),
     ({"Content-Type": "multipart/form-data; boundary=x"}, False), ({"Content-Type": "text/plain"}, False),
     ({CSRF_HEADER: ""}, False), ({"Authorization": "Basic eDp5"}, False),
     ({CSRF_HEADER: "1"}, True), ({CSRF_HEADER.lower(): "yes"}, True),
     ({"Content-Type": "application/json"}, True), ({"Content-Type": "Application/JSON; charset=utf-8"}, True),
     ({"Authorization": f"Bearer {TOKEN}"}, True)],
)  # fmt: skip
def test_posts_need_what_no_form_can_send(serve, headers, accepted):
    client = serve()
    response = client.post("/api/reindex", headers=headers, content=b"{}")
    if accepted:
        assert response.status_code == 202 and client.reindexed == [True]
    else:
        _refused(response, 403, "MissingHeaderError")
        assert f"{CSRF_HEADER}: 1" in response.json()["detail"] and client.reindexed == []


def test_upload_search_needs_the_header_too(serve, built):
    client = serve()
    photo = {"file": ("q.jpg", (built[1] / "p1.jpg").read_bytes(), "image/jpeg")}
    _refused(client.post("/api/search/image", files=photo), 403, "MissingHeaderError")
    reply = client.post("/api/search/image", files=photo, headers={CSRF_HEADER: "1", "Origin": OWN_ORIGIN})
    assert reply.status_code == 200 and reply.json()["results"][0]["path"].endswith("p1.jpg")


# --- with CORS origins and the token ---------------------------------------------------------------------------


def test_configured_cors_origins_may_call_the_api(serve):
    client = serve(cors_origins=("http://app.example:3000",))
    theirs = {"Origin": "http://app.example:3000", "Sec-Fetch-Site": "cross-site"}
    got = client.get("/api/status", headers=theirs)
    assert got.status_code == 200 and got.headers["access-control-allow-origin"] == "http://app.example:3000"
    preflight = client.options("/api/reindex", headers={**theirs, "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": CSRF_HEADER})  # fmt: skip
    assert preflight.status_code == 200 and CSRF_HEADER in preflight.headers["access-control-allow-headers"]
    assert client.post("/api/reindex", headers={**theirs, CSRF_HEADER: "1"}).status_code == 202
    _refused(client.post("/api/reindex", headers=theirs), 403, "MissingHeaderError")  # still no form posts
    _refused(client.get("/api/status", headers={"Origin": "http://evil.example"}), 403, "CrossOriginError")


def test_token_rules_hold_behind_the_guard(serve):
    client = serve(token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    _refused(client.get("/api/status"), 401, "Unauthorized")
    _refused(client.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}), 401,
             "Unauthorized")  # fmt: skip
    assert client.get("/api/status", headers=bearer).status_code == 200
    _refused(client.get("/api/status", headers={**bearer, "Host": "evil.example"}), 400, "UnknownHostError")
    _refused(client.get("/api/status", headers={**bearer, "Origin": "http://evil.example"}), 403, "CrossOriginError")
    assert client.post("/api/reindex", headers=bearer).status_code == 202  # a token client needs no more
    assert client.get(f"/?token={TOKEN}").status_code == 200  # the browser's way: now a cookie carries it
    assert client.get("/api/status").status_code == 200
    _refused(client.post("/api/reindex"), 403, "MissingHeaderError")  # the cookie alone is what a form sends
    assert client.post("/api/reindex", headers={CSRF_HEADER: "1", "Origin": OWN_ORIGIN}).status_code == 202
    assert client.reindexed == [True, True]


def test_a_preflight_from_a_cors_origin_needs_no_token_but_its_request_does(serve):
    client = serve(token=TOKEN, cors_origins=("http://app.example:3000",))
    theirs = {"Origin": "http://app.example:3000", "Sec-Fetch-Site": "cross-site"}
    preflight = client.options("/api/search", headers={**theirs, "Access-Control-Request-Method": "GET",
                                                        "Access-Control-Request-Headers": "authorization"})  # fmt: skip
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == theirs["Origin"]
    _refused(client.get("/api/status", headers=theirs), 401, "Unauthorized")
    got = client.get("/api/status", headers={**theirs, "Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 200 and got.headers["access-control-allow-origin"] == theirs["Origin"]
