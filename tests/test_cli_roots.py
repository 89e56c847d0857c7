"""`photosearch roots` and offline results end to end: the real entry point in subprocesses, the tiny real CLIP
model, and once through a running `photosearch serve` whose daemon holds the writer lock."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest
from daemonproc import FAST
from helpers import Counted, assert_stores_agree, make_config, make_two_roots
from serveproc import clean_env, free_port, start_serve

from photosearch.library import Library


@pytest.fixture
def env(tmp_path, backend):
    """No user config, no PHOTOSEARCH_* of the developer's shell; the stores of the backend under test."""
    return clean_env(tmp_path, **FAST)


@pytest.fixture
def ps(tmp_path, tiny_model_dir, env):
    base = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir)]

    def run(*args, expect=0, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # no terminal, as in a script
        result = subprocess.run([*base, *map(str, args)], capture_output=True, text=True, env=env, timeout=300,
                                **kwargs)  # fmt: skip
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return result

    run.base = base
    return run


@pytest.fixture
def folders(tmp_path):
    return make_two_roots(tmp_path)


def _json_lines(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def _index(tmp_path, tiny_model_dir, *roots) -> None:
    """The library indexed in this process, where the commands under test come after (`index` is tested above)."""
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        library.index(list(roots))


def _vectors(tmp_path, tiny_model_dir) -> int:
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        return len(assert_stores_agree(library))


def test_rename_hint_offline_results_and_move(ps, folders, tmp_path, tiny_model_dir):
    a, b = folders
    ps("index", "--no-progress", a, b)
    b2 = b.with_name("B2")
    b.rename(b2)
    hint = f"library folder {b} looks moved to {b2}: run `photosearch roots move {b} {b2}`"
    indexed = ps("index", "--no-progress", b2)
    assert indexed.stdout.startswith("5 new, 0 changed") and "(0 embedded, 5 reused" in indexed.stdout
    assert f"warning: {hint}" in indexed.stderr.splitlines()
    assert hint in ps("status").stdout
    assert json.loads(ps("status", "--json").stdout)["moved_roots"][0]["to"] == str(b2)

    hits = _json_lines(ps("search", "x", "-k", "20", "--json"))
    assert len(hits) == 8 and len({h["path"] for h in hits}) == 8 and not any(h["offline"] for h in hits)
    every = _json_lines(ps("search", "x", "-k", "20", "--json", "--include-offline"))
    assert len(every) == 13  # B's photos too, at the paths that are gone, marked
    assert {h["path"] for h in every if h["offline"]} == {str(b / p.relative_to(b2)) for p in b2.rglob("*.jpg")}
    assert "(offline" in ps("similar", a / "a0.jpg", "-k", "20", "--include-offline").stdout

    listed = {r["path"]: r for r in _json_lines(ps("roots", "--json"))}
    assert {p: (r["photos"], r["missing"], r["moved_to"]) for p, r in listed.items()} == {
        str(a): (3, False, None),
        str(b): (5, True, str(b2)),
        str(b2): (5, False, None),
    }
    assert hint in ps("roots").stdout

    moved = ps("roots", "move", b, b2)
    assert moved.stdout.strip() == f"library folder {b} is now {b2} (5 photos, none embedded again)"
    every = _json_lines(ps("search", "x", "-k", "20", "--json", "--include-offline"))
    assert len(every) == 8 and len({h["path"] for h in every}) == 8
    assert "looks moved" not in ps("status").stdout
    assert ps("index", "--no-progress").stdout.startswith("0 new, 0 changed, 8 unchanged, 0 moved, 0 removed")
    assert _vectors(tmp_path, tiny_model_dir) == 8


def test_add_and_remove_with_confirmation(ps, folders, tmp_path, tiny_model_dir):
    a, b = folders
    _index(tmp_path, tiny_model_dir, a, b)
    c = tmp_path / "C"
    c.mkdir()
    assert ps("roots", "add", c).stdout.strip() == f"added library folder {c}: `photosearch index` indexes it"
    assert {r["path"]: r["photos"] for r in _json_lines(ps("roots", "--json"))} == {str(a): 3, str(b): 5, str(c): 0}

    refused = ps("roots", "remove", b, expect=64)  # no terminal to ask on, and no --yes
    assert refused.stderr.strip() == (
        f"photosearch: error: removing {b} drops its 5 photos from the index: add --yes to confirm"
    )
    declined = _on_a_terminal(ps, ["roots", "remove", b], answer="n\n", expect=1)
    assert "Remove library folder" in declined and "5 photos" in declined and "nothing removed" in declined
    assert _vectors(tmp_path, tiny_model_dir) == 8
    confirmed = _on_a_terminal(ps, ["roots", "remove", b], answer="y\n", expect=0)
    assert f"removed library folder {b}: 5 photos left the index" in confirmed
    assert _vectors(tmp_path, tiny_model_dir) == 3
    assert b.is_dir() and len(list(b.rglob("*.jpg"))) == 5

    root_c = next(r for r in _json_lines(ps("roots", "--json")) if r["path"] == str(c))
    assert "0 photos left" in ps("roots", "remove", root_c["id"], "--yes").stdout  # by id, as listed
    missing = ps("roots", "remove", tmp_path / "nowhere", "--yes", expect=66)
    assert missing.stderr.strip() == f"photosearch: error: {tmp_path / 'nowhere'} is not a library folder (see " \
        "`photosearch roots`)"  # fmt: skip
    assert [r["path"] for r in _json_lines(ps("roots", "--json"))] == [str(a)]


def _on_a_terminal(ps, args, answer, expect):
    """Run with stdin on a pseudo-terminal (so the command asks) and type ``answer``."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        result = ps(*args, expect=expect, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    return result.stdout + result.stderr


def test_roots_commands_go_through_a_running_server(ps, folders, tmp_path, tiny_model_dir, env):
    """`serve` runs the daemon, which holds the writer lock for good: the commands ask the server instead."""
    a, b = folders
    _index(tmp_path, tiny_model_dir, a, b)
    server = start_serve([*ps.base, "serve"], env, tmp_path / "serve.log", free_port())
    try:
        assert [r["photos"] for r in _json_lines(ps("roots", "--json"))] == [3, 5]
        b2 = b.with_name("B2")
        b.rename(b2)
        assert "is now" in ps("roots", "move", b, b2).stdout
        assert {h["path"] for h in _json_lines(ps("search", "x", "-k", "20", "--json"))} == {
            str(p) for p in [*a.glob("*.jpg"), *b2.rglob("*.jpg")]
        }
        assert "8 photos left" not in (out := ps("roots", "remove", a, "--yes").stdout) and "3 photos left" in out
        assert [r["path"] for r in _json_lines(ps("roots", "--json"))] == [str(b2)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    assert _vectors(tmp_path, tiny_model_dir) == 5


def test_a_running_watch_daemon_is_named_in_one_line(ps, folders, tmp_path, tiny_model_dir, env, backend):
    """`watch` holds the writer lock and has no server to ask: removing waits for nobody and changes nothing. On
    shared stores writers do not take turns (other machines index meanwhile): the removal goes ahead beside the
    running daemon, and both stores agree afterwards."""
    a, b = folders
    _index(tmp_path, tiny_model_dir, a, b)
    with (tmp_path / "watch.log").open("w") as log:
        daemon = subprocess.Popen([*ps.base, "watch"], env=env, stdout=log, stderr=log)
    try:
        lock = tmp_path / "data" / "writer.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and f'"pid": {daemon.pid},' in lock.read_text()):
            assert daemon.poll() is None and time.monotonic() < deadline, (tmp_path / "watch.log").read_text()
            time.sleep(0.1)
        if backend == "servers":
            assert "5 photos left the index" in ps("roots", "remove", b, "--yes").stdout  # beside the daemon
        else:
            refused = ps("roots", "remove", b, "--yes", expect=75)
            assert refused.stderr.startswith(f"photosearch: error: photosearch watch is already running for this "
                                             f"data directory (pid {daemon.pid}")  # fmt: skip
            assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
    assert _vectors(tmp_path, tiny_model_dir) == (3 if backend == "servers" else 8)
