"""The vectors on a real Chroma server: what a user sees when it is down, restarting, behind a proxy that wants a
token, not Chroma at all, or stuck; and a whole library (SQLite catalog) whose vectors live there."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from chromaserver import ChromaServer as RunningServer
from chromaserver import free_port
from helpers import make_config, make_photo

from photosearch.cli_status import print_status
from photosearch.config import replace
from photosearch.errors import VectorStoreUnavailableError
from photosearch.library import Library
from photosearch.stores.chroma_server import ChromaServer
from photosearch.stores.vectors import VectorStore

INFO = {"model": "m", "revision": "r", "dim": 8}
QUICK = (0.05, 0.05)  # retry delays for the tests that expect the fault to last


def _vectors(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def _filled(server: ChromaServer, name: str = "vectors_f") -> tuple[VectorStore, np.ndarray]:
    store = VectorStore.open(server, name, INFO)
    vectors = _vectors()
    store.upsert([f"h{i}" for i in range(20)], vectors)
    return store, vectors


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text
    return text


def test_a_killed_server_is_one_line_naming_the_url(own_chroma_server: RunningServer):
    store, vectors = _filled(ChromaServer(own_chroma_server.url, retry_delays=QUICK))
    own_chroma_server.stop(kill=True)
    started = time.monotonic()
    with pytest.raises(VectorStoreUnavailableError) as raised:
        store.query(vectors[0], 3)
    message = _one_line(raised.value)
    assert own_chroma_server.url in message and "chroma run" in message and "store.vectors" in message
    assert time.monotonic() - started < 5  # the short retries, not the default ~10 s
    with pytest.raises(VectorStoreUnavailableError):
        store.upsert(["h0"], vectors[:1])


def test_a_server_restarted_within_the_retries_answers(own_chroma_server: RunningServer):
    store, vectors = _filled(ChromaServer(own_chroma_server.url))  # the default delays: 0.5, 1, 2, 4 s
    own_chroma_server.stop(kill=True)

    def restart() -> None:
        time.sleep(1.0)
        own_chroma_server.start()  # the same path and port

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        hits = store.query(vectors[5], 1)  # refused at first, answered once it is back
    finally:
        thread.join()
    assert hits[0].key == "h5" and store.count() == 20


def test_a_wrong_port_is_refused_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VectorStoreUnavailableError) as raised:
        VectorStore.open(ChromaServer(url, retry_delays=()), "vectors_x", INFO)
    message = _one_line(raised.value)
    assert message == (
        f"cannot reach the Chroma server at {url} (connection refused): is `chroma run` running? check store.vectors"
    )


# -- servers in front of Chroma, or in its place ------------------------------------------------------------------
class Front(ThreadingHTTPServer):
    """A loopback reverse proxy in front of the Chroma server: it wants ``Authorization: Bearer T`` (401 without),
    and can be told to answer every request with a status of its own (a gateway's 502) or to hold it (a hang)."""

    daemon_threads = True

    def __init__(self, upstream: str, token: str | None = "T") -> None:
        super().__init__(("127.0.0.1", 0), Forward)
        self.upstream = upstream
        self.token = token
        self.fail_with: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Forward(BaseHTTPRequestHandler):
    server: Front

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.token is not None and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._reply(401, b"Unauthorized", "text/plain")
        if self.server.fail_with is not None:
            return self._reply(self.server.fail_with, b"<html>Bad Gateway</html>", "text/html")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "authorization", "connection"}}
        answer = httpx.request(self.command, self.server.upstream + self.path, headers=headers, content=body)
        self._reply(answer.status_code, answer.content, answer.headers.get("content-type", "application/json"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def front(chroma_server: RunningServer) -> Iterator[Front]:
    server = Front(chroma_server.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_proxy_that_wants_a_token(front: Front, chroma_store_config):
    database = chroma_store_config.database
    with_token = ChromaServer(front.url, database=database, headers={"Authorization": "Bearer T"}, retry_delays=())
    store, vectors = _filled(with_token)
    assert store.query(vectors[2], 1)[0].key == "h2"
    assert "Bearer" not in with_token.describe() and front.url in with_token.describe()

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(VectorStoreUnavailableError) as raised:
            VectorStore.open(ChromaServer(front.url, database=database, headers=headers), "vectors_f", INFO)
        message = _one_line(raised.value)
        assert message == f"the Chroma server at {front.url} refused the credentials (HTTP 401): check store.headers"
        assert not raised.value.transient  # not retried: waiting does not fix a token

    front.token = "U"  # the proxy's token changed under a running store
    with pytest.raises(VectorStoreUnavailableError, match=r"refused the credentials .* check store\.headers"):
        store.count()


def test_a_gateway_502_mid_run_is_retried_then_reported(front: Front, chroma_store_config):
    headers = {"Authorization": "Bearer T"}
    server = ChromaServer(front.url, database=chroma_store_config.database, headers=headers, retry_delays=QUICK)
    store, _ = _filled(server)
    front.fail_with = 502
    with pytest.raises(VectorStoreUnavailableError) as raised:
        store.count()
    assert _one_line(raised.value).startswith(f"the Chroma server at {front.url} is unavailable (HTTP 502")

    front.fail_with = None
    patient = ChromaServer(front.url, database=chroma_store_config.database, headers=headers)
    store = VectorStore.open(patient, "vectors_f", INFO)
    front.fail_with = 503
    threading.Timer(0.3, lambda: setattr(front, "fail_with", None)).start()
    assert store.count() == 20  # the gateway recovered within the retries


def test_a_url_that_is_not_chroma(tmp_path: Path):
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>Not Found</h1>")

        def log_message(self, format: str, *args: object) -> None:
            pass

    web = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        with pytest.raises(VectorStoreUnavailableError) as raised:
            VectorStore.open(ChromaServer(url, retry_delays=()), "vectors_x", INFO)
    finally:
        web.shutdown()
        web.server_close()
    assert _one_line(raised.value) == (
        f"{url} does not answer like a Chroma server (HTTP 404 at /api/v2/heartbeat): check store.vectors "
        "(the server's address, e.g. http://host:8000)"
    )


def test_a_server_that_never_answers_times_out():
    """A listener that accepts and says nothing (a stuck server): the request's timeout, retried, then one line."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(VectorStoreUnavailableError) as raised:
            VectorStore.open(ChromaServer(url, retry_delays=QUICK, timeout=0.3), "vectors_x", INFO)
        assert time.monotonic() - started < 3
    finally:
        listener.close()
    message = _one_line(raised.value)
    assert message.startswith(f"the Chroma server at {url} did not answer in time (ReadTimeout)")


# -- a whole library ----------------------------------------------------------------------------------------------
def test_a_library_with_its_vectors_on_the_server(tmp_path: Path, tiny_model_dir: Path, chroma_store_config, capsys):
    photos = [make_photo(tmp_path / "photos" / f"p{i}.jpg", seed=i) for i in range(4)]
    config = replace(make_config(tmp_path / "data", tiny_model_dir), store=chroma_store_config)
    with Library.open(config) as library:
        report = library.index([tmp_path / "photos"])
        assert report.new == 4 and report.embedded == 4
        hits = library.search("a photo", k=10)
        assert {hit.path for hit in hits} == {p.resolve() for p in photos}
        assert library.store().count() == 4
        status = library.status()
        assert status.vectors_bytes is None and chroma_store_config.database in status.vectors_at
        assert status.catalog_bytes > 0  # the catalog stays SQLite in the data directory
        print_status(status.to_dict())
    printed = capsys.readouterr().out
    assert f"vectors   {chroma_store_config.vectors} (tenant default_tenant, database " in printed
    assert "vectors (on the server)" in printed
    assert not config.chroma_dir.exists()  # no embedded store was made beside it
    with Library.open(config) as again:  # another process's view: the same vectors, from the server
        assert {hit.path for hit in again.search("a photo", k=10)} == {p.resolve() for p in photos}
