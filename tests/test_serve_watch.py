"""`photosearch serve` as a real process whose library changes: its daemon adds what appears (the server answers
with it, through the CLI, exactly as the library does once the server has stopped), and it stops cleanly. A server
of each test's own, on each backend (test_serve.py asks one that nothing changes)."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from daemonproc import FAST
from helpers import make_photo, readme_json_keys
from serveproc import clean_env, run_ok, serve_library, stop

pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
def env(tmp_path, backend):
    return clean_env(tmp_path, **FAST)


@pytest.fixture
def served(tmp_path, tiny_model_dir, env):
    """Eight photos indexed, served by `photosearch serve`, which watches them with short delays."""
    served = serve_library(tmp_path, tiny_model_dir, env)
    yield served
    stop(served[2])


def _wait_until_indexed(port: int, counts: tuple[int, int], log: Path) -> None:
    """Until the server's daemon has (indexed, failed) photos."""
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status").read())
        if (status["indexed"], status["failed"]) == counts:
            return
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_serve_watches_answers_with_every_key_the_readme_lists_and_stops_cleanly(served, env, exif_samples, tmp_path):
    base, root, proc, port = served
    (root / "Canon_40D.jpg").write_bytes((exif_samples / "jpg" / "Canon_40D.jpg").read_bytes())  # the daemon adds it
    _wait_until_indexed(port, (9, 0), tmp_path / "serve.log")
    result = run_ok([sys.executable, "-X", "importtime", *base[1:], "search", "a camera", "-k", "20", "--json"], env)
    assert "torch" not in {line.split("|")[-1].strip() for line in result.stderr.splitlines()}  # the server answered
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 9 and all(list(hit) == readme_json_keys("search") for hit in hits)
    canon = next(hit for hit in hits if hit["path"].endswith("Canon_40D.jpg"))
    assert (canon["camera_make"], canon["camera_model"]) == ("Canon", "Canon EOS 40D")  # not just the key: the value
    assert canon["taken_at"].startswith("2008-05-30T15:56:01") and canon["offline"] is False
    facets = json.loads(run_ok([*base, "facets", "--camera", "canon", "--json"], env).stdout)  # the server counts
    assert facets["total"] == 1 and facets["cameras"] == [{"make": "Canon", "model": "Canon EOS 40D", "count": 1}]
    assert facets["years"] == [{"year": 2008, "count": 1}]

    assert (tmp_path / "data" / "server.json").exists()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert not (tmp_path / "data" / "server.json").exists()
    # without the server the CLI works on its own again
    assert len(run_ok([*base, "search", "x", "--json"], env).stdout.splitlines()) == 9


def test_folder_scoped_queries_and_the_default_k_answer_alike_through_the_server_and_the_library(served, env, tmp_path):
    """--folder goes through the server too (no falling back to the library), with the CLI's own search.default_k
    (its one configuration): the server gives what the library gives once the server has stopped. Failures too."""
    base, root, proc, port = served
    sub = root / "sub"
    for i in range(4):
        make_photo(sub / f"s{i}.jpg", seed=20 + i)
    (sub / "broken.jpg").write_bytes(b"not a photo")
    _wait_until_indexed(port, (12, 1), tmp_path / "serve.log")
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
        (["search", "a cat", "--like", sub / "s0.jpg", "--unlike", outside, "--folder", sub], env),  # its upload
        (["search", "--folder", sub, "--sort", "oldest"], env),
        (["search", "a cat", "--folder", sub, "--sort", "newest", "--cutoff", "none"], env),
    ]

    def answers() -> tuple[list[list[dict]], list[set[str]]]:
        hits, imported = [], []
        for args, run_env in commands:
            result = run_ok([sys.executable, "-X", "importtime", *base[1:], *map(str, args), "--json"], run_env)
            hits.append([json.loads(line) for line in result.stdout.splitlines()])
            imported.append({line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line})
        return hits, imported

    def failures() -> list[dict]:
        return json.loads(run_ok([*base, "status", "--failed", "--json"], env).stdout)["failures"]

    through_server, imported = answers()
    # The server answered every one: the CLI opened neither store (nor loaded a model).
    assert not any({"torch", "chromadb", "sqlalchemy"} & modules for modules in imported)
    assert [len(hits) for hits in through_server] == [4, 3, 4, 2, 2, 2, 3, 3, 4, 4]
    assert all(hit["path"].startswith(str(sub)) for hits in through_server for hit in hits)
    assert through_server[2][0]["path"] == str(sub / "s1.jpg")
    served_failures = failures()
    assert [f["path"] for f in served_failures] == [str(sub / "broken.jpg")]
    assert served_failures[0]["reason"].startswith("not an image")
    assert f"{sub / 'broken.jpg'}: not an image" in run_ok([*base, "status", "--failed"], env).stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    through_library, imported = answers()
    assert all("sqlalchemy" in modules for modules in imported)  # the library answered (its catalog)
    for remote, local in zip(through_server, through_library, strict=True):
        assert [{**hit, "score": None} for hit in remote] == [{**hit, "score": None} for hit in local]
        assert [hit["score"] for hit in remote] == pytest.approx([hit["score"] for hit in local], abs=1e-4)
    assert failures() == served_failures
