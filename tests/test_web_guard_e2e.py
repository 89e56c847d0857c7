"""Other web pages against a real `photosearch serve`, in the real Chromium of test_web_e2e.py.

What a site the user visits can make the browser do to the server: POST to it by no-cors fetch and by form,
show its thumbnails, and (with its name rebound to 127.0.0.1, which Chromium's resolver rule in CHROMIUM_ARGS
stands for) read it. A module of its own, with its own server: the test ends with a real reindex.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import test_web_e2e as web
from helpers import Counted, make_config

from photosearch.library import Library

# The page test's fixtures, reused: a module-scoped fixture gives this module a server of its own.
server, browser, _page = web.server, web.browser, web._page

# Each form into a frame of its own: a second submission into a frame whose first navigation has its answer but has
# not committed yet is sometimes dropped by Chromium (150), with no request sent at all.
_OTHER_SITE = """<!doctype html><title>some other site</title>
<iframe name="sink-multipart"></iframe><iframe name="sink-urlencoded"></iframe>
<form id="multipart" method="post" enctype="multipart/form-data" target="sink-multipart" action="SERVER/api/reindex">
<input name="a" value="1"></form>
<form id="urlencoded" method="post" target="sink-urlencoded" action="SERVER/api/reindex">
<input name="a" value="1"></form>"""
_ATTACK = """async ([server, bytes, photo]) => {
  const upload = new FormData();
  upload.append("file", new File([new Uint8Array(bytes)], "p04.jpg", { type: "image/jpeg" }));
  const form = { "Content-Type": "application/x-www-form-urlencoded" };
  await Promise.allSettled([
    fetch(`${server}/api/reindex`, { method: "POST", mode: "no-cors", body: new FormData() }),
    fetch(`${server}/api/reindex`, { method: "POST", mode: "no-cors", body: "a=1", headers: form }),
    fetch(`${server}/api/search/image?k=3`, { method: "POST", mode: "no-cors", body: upload }),
  ]);
  const thumbnail = new Image(); // an <img> needs no CORS: loaded, it would show the photo on their page
  thumbnail.src = `${server}/api/photos/${photo}/thumbnail`;
  return await new Promise((done) => {
    thumbnail.onload = () => done("shown");
    thumbnail.onerror = () => done("refused");
  });
}"""


@pytest.fixture(scope="module")
def other_site(server):
    """Another web site on this machine (another loopback port), serving one page that tries the server."""
    page = _OTHER_SITE.replace("SERVER", server[0]).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _api(url: str, path: str, **request: object) -> dict:
    """The server as the CLI asks it (no Origin, no Sec-Fetch-Site)."""
    with urllib.request.urlopen(urllib.request.Request(f"{url}{path}", **request), timeout=30) as response:
        return json.loads(response.read())


def _index_collection(data: Path, model: Path) -> str:
    """The collection search reads: a reindex, once complete, switches it."""
    with Library.open(make_config(data, model), embedder_factory=Counted()) as library:
        return library.store().name


def test_other_web_pages_cannot_use_the_server(server, browser, other_site, tiny_model_dir):
    """A cross-site page (evil.example) and a same-site one (another port of 127.0.0.1) POST to the server by
    no-cors fetch and by form: every answer is a 403 and no reindex starts; their <img> of a thumbnail stays
    empty; a rebound name (evil.example at the server's port) reads nothing."""
    url, root = server
    photo = _api(url, "/api/search?q=x&k=1")["results"][0]["id"]
    data = root.parent / "data"
    before = _index_collection(data, tiny_model_dir)
    upload = list((root / "home" / "p04.jpg").read_bytes())
    for site in (f"http://evil.example:{other_site}", f"http://127.0.0.1:{other_site}"):
        page = _page(browser, 800, 600)
        answers: list[tuple[str, int]] = []
        page.on("response", lambda r, seen=answers: r.request.method == "POST" and seen.append(
            (r.url.removeprefix(url).split("?")[0], r.status)))  # fmt: skip
        page.goto(site)
        assert page.evaluate(_ATTACK, [url, upload, photo]) == "refused"
        for form in ("multipart", "urlencoded"):
            with page.expect_response(lambda r: r.request.resource_type == "document" and r.url.startswith(url)):
                page.evaluate(f"document.getElementById('{form}').submit()")
        # What the server answered (the page itself cannot see it): a refusal, every time.
        assert sorted(answers) == [("/api/reindex", 403)] * 4 + [("/api/search/image", 403)], (site, answers)
        assert not page.crashes, page.crashes
        page.context.close()

    rebound = _page(browser, 800, 600)
    port = url.rsplit(":", 1)[1]
    assert rebound.goto(f"http://evil.example:{port}/").status == 400
    leaked = rebound.evaluate(f"fetch('/api/photos/{photo}').then(r => r.status + ' ' + r.statusText)")
    assert leaked.startswith("400"), leaked
    rebound.context.close()

    # On the server: no reindex ran (the index is the same collection), while a request the CLI's way does.
    assert _index_collection(data, tiny_model_dir) == before and _api(url, "/api/status")["reindex"] is None
    started = _api(url, "/api/reindex", method="POST", headers={"X-Photosearch": "1"})
    assert started["status"] == "started"
    deadline = time.monotonic() + 120
    while _index_collection(data, tiny_model_dir) == before or _api(url, "/api/status")["reindex"]:
        assert time.monotonic() < deadline, "the reindex did not happen: the check above proves nothing"
        time.sleep(0.3)
