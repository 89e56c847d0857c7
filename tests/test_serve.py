"""`photosearch serve` as a real process, asked and never changed: the CLI uses it over loopback and loads no
model; other web pages cannot use it. One server per backend for the whole module (test_serve_watch.py has the
tests that change its library or stop it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import make_photo
from serveproc import clean_env, run_ok, serve_library, stop

pytestmark = pytest.mark.usefixtures("module_backend")


@pytest.fixture(scope="module")
def env(module_backend, tmp_path_factory):
    return clean_env(tmp_path_factory.mktemp("serve-home"))


@pytest.fixture(scope="module")
def served(module_backend, tmp_path_factory, tiny_model_dir, env):
    """Eight photos indexed, served by `photosearch serve` (which watches them)."""
    served = serve_library(tmp_path_factory.mktemp("serve"), tiny_model_dir, env)
    yield served
    stop(served[2])


def test_cli_asks_the_running_server_and_loads_no_model(served, env, tmp_path):
    base, root, _, _ = served
    result = run_ok([sys.executable, "-X", "importtime", *base[1:], "search", "a cat", "--json", "-k", "3"], env)
    started = time.monotonic()
    run_ok([*base, "search", "a dog", "-k", "3"], env)
    print(f"CLI search through the server: {time.monotonic() - started:.2f} s wall")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 3 and all(h["path"].startswith(str(root)) for h in hits)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformers", "chromadb", "sqlalchemy"} & imported

    similar = [
        json.loads(x) for x in run_ok([*base, "similar", str(root / "p3.jpg"), "--json"], env).stdout.splitlines()
    ]
    assert len(similar) == 7 and str(root / "p3.jpg") not in {h["path"] for h in similar}
    outside = make_photo(tmp_path / "elsewhere.jpg", seed=3)  # same picture as p3, outside the library
    by_example = [json.loads(x) for x in run_ok([*base, "similar", str(outside), "--json"], env).stdout.splitlines()]
    assert by_example[0]["path"] == str(root / "p3.jpg")

    status = json.loads(run_ok([*base, "status", "--json"], env).stdout)
    assert status["indexed"] == 8 and status["daemon"]["running"] is True


def test_serving_beyond_loopback_without_a_token_is_refused(tmp_path, env):
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "d"), "serve", "--host", "0.0.0.0"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "server.token" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "serving on http" not in result.stderr  # it refuses before announcing anything


def _status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_other_web_pages_cannot_use_the_server_but_the_cli_can(served, env, tmp_path):
    """The issue's two requests against a real server: a rebound Host reads nothing, a form POST from another
    origin starts no reindex; the CLI's client (which sends X-Photosearch) goes on working, uploads included."""
    base, root, _, port = served
    url = f"http://127.0.0.1:{port}"
    rebound = urllib.request.Request(f"{url}/api/status", headers={"Host": f"evil.example:{port}"})
    assert _status_of(rebound) == 400
    form = {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    assert _status_of(urllib.request.Request(f"{url}/api/reindex", data=b"a=1", headers=form)) == 403
    assert _status_of(urllib.request.Request(f"{url}/api/reindex", data=b"", method="POST")) == 403  # no header
    assert _status_of(urllib.request.Request(f"{url}/api/status", headers={"Host": f"localhost:{port}"})) == 200

    outside = make_photo(tmp_path / "elsewhere.jpg", seed=3)  # an upload: POST /api/search/image
    by_example = [json.loads(x) for x in run_ok([*base, "similar", str(outside), "--json"], env).stdout.splitlines()]
    assert by_example[0]["path"] == str(root / "p3.jpg")
    assert json.loads(run_ok([*base, "status", "--json"], env).stdout)["daemon"]["running"] is True


def test_the_cli_asks_the_server_for_its_own_configured_default_k(served, env, tmp_path):
    base, root, _, _ = served
    three = {**env, "PHOTOSEARCH_SEARCH_DEFAULT_K": "3"}  # the CLI's configuration; the server runs with 10
    result = run_ok([sys.executable, "-X", "importtime", *base[1:], "search", "a cat", "--json"], three)
    assert "torch" not in {line.split("|")[-1].strip() for line in result.stderr.splitlines()}  # the server answered
    assert len(result.stdout.splitlines()) == 3
    assert len(run_ok([*base, "similar", str(root / "p3.jpg"), "--json"], three).stdout.splitlines()) == 3
    outside = make_photo(tmp_path / "elsewhere.jpg", seed=5)  # an upload: POST /api/search/image
    assert len(run_ok([*base, "similar", str(outside), "--json"], three).stdout.splitlines()) == 3
