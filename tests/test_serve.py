"""`photosearch serve` as a real process: the CLI uses it over loopback; it watches; it stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers import make_photo, readme_json_keys, stores_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path, backend):
    """No user config, no PHOTOSEARCH_* of the developer's shell; the stores of the backend under test."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")} | stores_env()
    fast = {
        "PHOTOSEARCH_WATCH_DEBOUNCE": "0.2",
        "PHOTOSEARCH_WATCH_SETTLE": "0.5",
        "PHOTOSEARCH_WATCH_BATCH_WAIT": "0.2",
    }
    return {**clean, **fast, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}


@pytest.fixture
def served(tmp_path, tiny_model_dir, env):
    root = tmp_path / "lib"
    for i in range(8):
        make_photo(root / f"p{i}.jpg", seed=i)
    base = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir)]
    subprocess.run([*base, "index", "--no-progress", str(root)], env=env, check=True, capture_output=True)
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*base, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)
    # The page answers once a search is ready: the text encoder and the vector store are loaded, one answered.
    assert "ready to search" in (tmp_path / "serve.log").read_text()
    yield base, root, proc, port
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def _run(cmd, env, **kw):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kw)
    assert result.returncode == 0, result.stderr
    return result


def test_cli_asks_the_running_server_and_loads_no_model(served, env, tmp_path):
    base, root, _, _ = served
    result = _run([sys.executable, "-X", "importtime", *base[1:], "search", "a cat", "--json", "-k", "3"], env)
    started = time.monotonic()
    _run([*base, "search", "a dog", "-k", "3"], env)
    print(f"CLI search through the server: {time.monotonic() - started:.2f} s wall")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 3 and all(h["path"].startswith(str(root)) for h in hits)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformers", "chromadb", "sqlalchemy"} & imported

    similar = [json.loads(x) for x in _run([*base, "similar", str(root / "p3.jpg"), "--json"], env).stdout.splitlines()]
    assert len(similar) == 7 and str(root / "p3.jpg") not in {h["path"] for h in similar}
    outside = make_photo(tmp_path / "elsewhere.jpg", seed=3)  # same picture as p3, outside the library
    by_example = [json.loads(x) for x in _run([*base, "similar", str(outside), "--json"], env).stdout.splitlines()]
    assert by_example[0]["path"] == str(root / "p3.jpg")

    status = json.loads(_run([*base, "status", "--json"], env).stdout)
    assert status["indexed"] == 8 and status["daemon"]["running"] is True


def test_search_through_the_server_prints_every_key_the_readme_lists(served, env, exif_samples, tmp_path):
    base, root, _, port = served
    (root / "Canon_40D.jpg").write_bytes((exif_samples / "jpg" / "Canon_40D.jpg").read_bytes())  # the daemon adds it
    deadline = time.monotonic() + 60
    while json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status").read())["indexed"] < 9:
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    result = _run([sys.executable, "-X", "importtime", *base[1:], "search", "a camera", "-k", "20", "--json"], env)
    assert "torch" not in {line.split("|")[-1].strip() for line in result.stderr.splitlines()}  # the server answered
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 9 and all(list(hit) == readme_json_keys("search") for hit in hits)
    canon = next(hit for hit in hits if hit["path"].endswith("Canon_40D.jpg"))
    assert (canon["camera_make"], canon["camera_model"]) == ("Canon", "Canon EOS 40D")  # not just the key: the value
    assert canon["taken_at"].startswith("2008-05-30T15:56:01") and canon["offline"] is False
    facets = json.loads(_run([*base, "facets", "--camera", "canon", "--json"], env).stdout)  # the server counts
    assert facets["total"] == 1 and facets["cameras"] == [{"make": "Canon", "model": "Canon EOS 40D", "count": 1}]
    assert facets["years"] == [{"year": 2008, "count": 1}]


def test_serve_watches_and_stops_cleanly(served, env, tmp_path):
    base, root, proc, port = served
    make_photo(root / "new.jpg", seed=77)
    deadline = time.monotonic() + 60
    while json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status").read())["indexed"] < 9:
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    assert (tmp_path / "data" / "server.json").exists()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert not (tmp_path / "data" / "server.json").exists()
    # without the server the CLI works on its own again
    assert len(_run([*base, "search", "x", "--json"], env).stdout.splitlines()) == 9


def test_serving_beyond_loopback_without_a_token_is_refused(tmp_path, tiny_model_dir, env):
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
    by_example = [json.loads(x) for x in _run([*base, "similar", str(outside), "--json"], env).stdout.splitlines()]
    assert by_example[0]["path"] == str(root / "p3.jpg")
    assert json.loads(_run([*base, "status", "--json"], env).stdout)["daemon"]["running"] is True


def test_the_cli_asks_the_server_for_its_own_configured_default_k(served, env, tmp_path):
    base, root, _, _ = served
    three = {**env, "PHOTOSEARCH_SEARCH_DEFAULT_K": "3"}  # the CLI's configuration; the server runs with 10
    result = _run([sys.executable, "-X", "importtime", *base[1:], "search", "a cat", "--json"], three)
    assert "torch" not in {line.split("|")[-1].strip() for line in result.stderr.splitlines()}  # the server answered
    assert len(result.stdout.splitlines()) == 3
    assert len(_run([*base, "similar", str(root / "p3.jpg"), "--json"], three).stdout.splitlines()) == 3
    outside = make_photo(tmp_path / "elsewhere.jpg", seed=5)  # an upload: POST /api/search/image
    assert len(_run([*base, "similar", str(outside), "--json"], three).stdout.splitlines()) == 3


def test_folder_scoped_queries_and_the_default_k_answer_alike_through_the_server_and_the_library(served, env, tmp_path):
    """--folder goes through the server too (no falling back to the library), with the CLI's own search.default_k
    (its one configuration): the server gives what the library gives once the server has stopped. Failures too."""
    base, root, proc, port = served
    sub = root / "sub"
    for i in range(4):
        make_photo(sub / f"s{i}.jpg", seed=20 + i)
    (sub / "broken.jpg").write_bytes(b"not a photo")
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status").read())
        if (status["indexed"], status["failed"]) == (12, 1):  # the daemon has them
            break
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    outside = make_photo(tmp_path / "elsewhere.jpg", seed=21)  # the picture of sub/s1.jpg, outside the library
    two = {**env, "PHOTOSEARCH_SEARCH_DEFAULT_K": "2"}  # the CLI's configuration; the server runs with 10
    commands = [
        (["similar", root / "p3.jpg", "--folder", sub, "-k", "10"], env),  # an indexed photo outside the folder
        (["similar", sub / "s0.jpg", "--folder", sub], env),  # inside it: itself left out
        (["similar", outside, "--folder", sub], env),  # an upload
        (["similar", root / "p3.jpg", "--folder", sub], two),
        (["similar", outside, "--folder", sub], two),
        (["search", "a cat", "--folder", sub], two),
        # A combined query (an indexed example by id, a file by upload, a negative text), a timeline, a scored one.
        (["search", "a cat", "--not", "a dog", "--like", sub / "s0.jpg", "--like", outside, "--folder", sub], env),
        (["search", "--folder", sub, "--sort", "oldest"], env),
        (["search", "a cat", "--folder", sub, "--sort", "newest", "--cutoff", "none"], env),
    ]

    def answers() -> tuple[list[list[dict]], list[set[str]]]:
        hits, imported = [], []
        for args, run_env in commands:
            result = _run([sys.executable, "-X", "importtime", *base[1:], *map(str, args), "--json"], run_env)
            hits.append([json.loads(line) for line in result.stdout.splitlines()])
            imported.append({line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line})
        return hits, imported

    def failures() -> list[dict]:
        return json.loads(_run([*base, "status", "--failed", "--json"], env).stdout)["failures"]

    through_server, imported = answers()
    assert not any({"torch", "chromadb"} & modules for modules in imported)  # the server answered every one
    assert [len(hits) for hits in through_server] == [4, 3, 4, 2, 2, 2, 3, 4, 4]
    assert all(hit["path"].startswith(str(sub)) for hits in through_server for hit in hits)
    assert through_server[2][0]["path"] == str(sub / "s1.jpg")
    served_failures = failures()
    assert [f["path"] for f in served_failures] == [str(sub / "broken.jpg")]
    assert served_failures[0]["reason"].startswith("not an image")
    assert f"{sub / 'broken.jpg'}: not an image" in _run([*base, "status", "--failed"], env).stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    through_library, imported = answers()
    assert all("chromadb" in modules for modules in imported)  # the library answered
    for remote, local in zip(through_server, through_library, strict=True):
        assert [{**hit, "score": None} for hit in remote] == [{**hit, "score": None} for hit in local]
        assert [hit["score"] for hit in remote] == pytest.approx([hit["score"] for hit in local], abs=1e-4)
    assert failures() == served_failures
