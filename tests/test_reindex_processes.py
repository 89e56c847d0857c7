"""A reindex in real processes, interrupted: `photosearch reindex` and `photosearch serve` killed with SIGTERM or
SIGKILL while the new collection fills. Every indexed photo stays findable throughout (from the old index, with
its model), the next run carries on without embedding again what was done, and `reindex --cancel` abandons it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import Counted, assert_stores_agree, make_config, make_photo

from photosearch.library import Library

TOTAL = 80  # distinct pictures: the reindex has TOTAL hashes to embed, two per model batch
SMALL_BATCHES = {"PHOTOSEARCH_MODEL_BATCH_SIZE": "2"}
DEADLINE = 120  # seconds any wait may take before the test gives up


def _clean_env(base: Path) -> dict[str, str]:
    """No user config file, no PHOTOSEARCH_* from the developer's shell, an empty Hugging Face cache."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    return {**clean, "XDG_CONFIG_HOME": str(base / "xdg-config"), "HF_HOME": str(base / "hf-home")}


def _base_cmd(data: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(model)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """A library of TOTAL photos indexed once with model A; each test works on a copy of its data directory."""
    base = tmp_path_factory.mktemp("reindex-template")
    root = base / "lib"
    for i in range(TOTAL):
        make_photo(root / f"d{i % 4}" / f"p{i}.jpg", seed=7000 + i, size=(160, 120))
    data = base / "data"
    cmd = [*_base_cmd(data, tiny_model_dir), "index", "--no-progress", str(root)]
    result = subprocess.run(cmd, env=_clean_env(base), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{TOTAL} new" in result.stdout
    return root, data


@dataclass
class Setup:
    root: Path
    data: Path
    env: dict[str, str]
    model_a: Path
    model_b: Path

    def cmd(self, model: Path, *args: str) -> list[str]:
        return [*_base_cmd(self.data, model), *args]

    def run(self, model: Path, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cmd(model, *args), env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result

    def library(self, model: Path, counted: Counted) -> Library:
        return Library.open(make_config(self.data, model), embedder_factory=counted)

    def done_after_kill(self, library: Library, model: Path, active: Path) -> int:
        """How much of the interrupted reindex is done, as the next process finds it; ``library`` agrees after.

        Asked of a fresh process: a writer killed inside an upsert leaves that batch in Chroma's log, which the
        next process to open Chroma applies; a reader that had Chroma open already (``library``) sees the batch
        only once that happened, so its count may be a batch short until then."""
        _assert_under_way(library, self.data, active, model)  # this process's view first: partly done
        fresh = json.loads(self.run(model, "status", "--json").stdout)["reindex"]
        assert fresh is not None and 0 < fresh["done"] < fresh["total"] == TOTAL, fresh
        assert _assert_under_way(library, self.data, active, model) == fresh["done"]
        return fresh["done"]


@pytest.fixture
def setup(indexed, tmp_path, tiny_model_dir, tiny_model_dir_b) -> Setup:
    root, template = indexed
    data = tmp_path / "data"
    shutil.copytree(template, data)
    return Setup(root, data, {**_clean_env(tmp_path), **SMALL_BATCHES}, tiny_model_dir, tiny_model_dir_b)


def _reindex_meta(data: Path) -> str | None:
    """The catalog's record of a reindex under way, read as another program would."""
    with sqlite3.connect(data / "catalog.sqlite3", timeout=5) as conn:
        row = conn.execute("select value from meta where key = 'reindex'").fetchone()
    return None if row is None else str(row[0])


def _progress(library: Library) -> dict | None:
    found = library.status().to_dict()["reindex"]
    assert found is None or set(found) == {"model", "done", "total"}, found
    return found


def _indexed_ids(library: Library) -> set[int]:
    from photosearch.stores.schema import PhotoStatus

    ids = library.catalog.ids_with_status(PhotoStatus.INDEXED)
    assert len(ids) == TOTAL
    return set(ids)


def _assert_all_found(library: Library, ids: set[int]) -> None:
    hits = library.search("a photo", k=len(ids))
    assert sorted(h.id for h in hits) == sorted(ids), "a search lost (or invented) indexed photos"


def _embedded(report: str) -> int:
    found = re.search(r"\((\d+) embedded", report)
    assert found, report
    return int(found.group(1))


def _name(model: Path) -> str:
    return str(model.resolve())


def _assert_under_way(library: Library, data: Path, active: Path, target: Path) -> int:
    """An interrupted reindex to ``target``: recorded, partly done, search still on ``active``; how much is done."""
    progress = _progress(library)
    assert progress is not None, "the reindex finished before it could be interrupted: the test proved nothing"
    assert 0 < progress["done"] < progress["total"] == TOTAL, progress
    assert progress["model"].startswith(_name(target))
    assert _reindex_meta(data) is not None
    assert library.stored_model().name == _name(active)
    return progress["done"]


def _assert_complete(library: Library, target: Path) -> None:
    assert _progress(library) is None
    assert _reindex_meta(library.config.data_dir) is None
    assert library.stored_model().name == _name(target)
    ids = assert_stores_agree(library)
    assert len(ids) == TOTAL
    _assert_all_found(library, set(ids))
    assert library.store().chroma.names() == [library.store().name]  # the old collection was dropped


def _wait_until(check, what: str, proc: subprocess.Popen[bytes] | None = None):
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            return None  # it exited: the caller says what that means
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _done_beyond(library: Library, done: int) -> dict | None:
    progress = _progress(library)
    return progress if progress is not None and progress["done"] > done else None


def _loaded(counted: Counted) -> set[str]:
    """The models the test's libraries loaded, by the name their identity records."""
    return {embedder.identity.name for embedder in counted.loaded.values()}


def _interrupt_while_running(
    proc: subprocess.Popen[bytes], library: Library, sig: signal.Signals, ids: set[int], counted: Counted, active: Path
) -> None:
    """Wait for the new collection to have vectors, searching at two moments of the run, then send ``sig``."""
    seen = 0
    for _ in range(2):  # two moments of the run, the second with more done than the first
        progress = _wait_until(lambda after=seen: _done_beyond(library, after), "reindex progress", proc)
        assert progress is not None and proc.poll() is None, "the reindex ended before it was seen running"
        _assert_all_found(library, ids)  # while the reindex runs, from the index it replaces ...
        assert counted.last is not None and counted.last.identity.name == _name(active)  # ... with its model
        assert _loaded(counted) == {_name(active)}, "search loaded the new model before the switch"
        seen = progress["done"]
    assert proc.poll() is None, "the reindex finished before it could be killed: the test proved nothing"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == -sig, "it exited by itself before the signal: the test proved nothing"


def _kind(switch: bool) -> str:
    return "A-to-B" if switch else "same-model"


# (signal, model switch A->B or the same model, the command that carries it on)
CASES = [
    (signal.SIGTERM, False, "reindex"),
    (signal.SIGKILL, False, "index"),
    (signal.SIGTERM, True, "index"),
    (signal.SIGKILL, True, "reindex"),
]


@pytest.mark.parametrize(
    ("sig", "switch", "resume"), CASES,
    ids=[f"{sig.name}-{_kind(switch)}-resumed-by-{resume}" for sig, switch, resume in CASES],
)  # fmt: skip
def test_an_interrupted_reindex_keeps_search_whole_and_resumes(setup, sig, switch, resume):
    target = setup.model_b if switch else setup.model_a
    counted = Counted()  # loads each real model once, for every Library of this test
    with setup.library(setup.model_a, counted) as before:  # the model and Chroma loaded before the race starts
        ids = _indexed_ids(before)
        _assert_all_found(before, ids)
    proc = subprocess.Popen(setup.cmd(target, "reindex", "--no-progress"), env=setup.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        with setup.library(target, counted) as library:  # configured with the target, as a user switching would
            _interrupt_while_running(proc, library, sig, ids, counted, setup.model_a)
            done = setup.done_after_kill(library, target, setup.model_a)
            _assert_all_found(library, ids)  # after the kill too
            assert _loaded(counted) == {_name(setup.model_a)}
            assert _assert_under_way(library, setup.data, setup.model_a, target) == done  # nothing moves now

            report = setup.run(target, resume, "--no-progress").stdout
            assert _embedded(report) == TOTAL - done, report  # only what the interrupted run had not done
            assert f"0 new, 0 changed, {TOTAL} unchanged" in report
            _assert_complete(library, target)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- serve -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def _status(port: int) -> dict:
    """GET /api/status; a failure the daemon recorded fails the test at once, rather than after a long wait."""
    status = _get(port, "/api/status")
    assert status["daemon"]["last_error"] is None, f"the daemon failed: {status['daemon']['last_error']}"
    return status


def _post(port: int, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", headers={"X-Photosearch": "1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


@pytest.fixture
def server(setup, tmp_path) -> Iterator:
    """Starts `photosearch serve` processes for this test's library; stops what is left of them at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(model: Path, watch: bool) -> tuple[subprocess.Popen[bytes], int]:
        port = _free_port()
        log = (tmp_path / "serve.log").open("a")
        args = ["serve", "--port", str(port), *([] if watch else ["--no-watch"])]
        proc = subprocess.Popen(setup.cmd(model, *args), env=setup.env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)

        def up() -> bool:
            try:
                status = _get(port, "/api/status")
            except OSError:
                return False
            return not watch or status["daemon"]["running"] or status["daemon"]["last_error"] is not None

        assert _wait_until(up, "the server", proc), (tmp_path / "serve.log").read_text()
        return proc, port

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# (signal, with the watch daemon, model switch A->B)
SERVE_CASES = [
    (signal.SIGTERM, True, False),  # the daemon reindexes in its loop; SIGTERM stops it between batches
    (signal.SIGKILL, False, True),  # a thread of the server reindexes
    (signal.SIGTERM, True, True),  # a model switch asked of the daemon (POST /api/reindex answers 202 either way)
]


@pytest.mark.parametrize(
    ("sig", "watch", "switch"), SERVE_CASES,
    ids=[f"{sig.name}-{'watch' if watch else 'no-watch'}-{_kind(switch)}" for sig, watch, switch in SERVE_CASES],
)  # fmt: skip
def test_a_reindex_asked_of_serve_survives_the_server_stopping(setup, server, tmp_path, sig, watch, switch):
    target = setup.model_b if switch else setup.model_a
    proc, port = server(target, watch)
    if watch:
        daemon = _get(port, "/api/status")["daemon"]
        assert daemon["running"] is True, f"the daemon is not running, so it cannot reindex: {daemon['last_error']}"
    assert _post(port, "/api/reindex") == 202

    def reindexing() -> dict | None:
        # With another model configured, the daemon's catch-up refuses it (last_error) until the reindex begins.
        found = (_get(port, "/api/status") if switch and watch else _status(port))["reindex"]
        return found if found and found["done"] > 0 else None

    seen = _wait_until(reindexing, "the server's reindex to make progress", proc)
    assert seen is not None, (tmp_path / "serve.log").read_text()
    _status(port)  # no error recorded now: a refusal of the model is cleared once the reindex runs
    assert seen["total"] == TOTAL and str(seen["model"]).startswith(_name(target))
    found = _get(port, f"/api/search?q=a+photo&k={TOTAL}")["results"]
    assert len({hit["id"] for hit in found}) == TOTAL  # the server searches the old index meanwhile
    assert proc.poll() is None
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == (0 if sig == signal.SIGTERM else -sig)

    counted = Counted()
    with setup.library(target, counted) as library:
        ids = _indexed_ids(library)
        done = setup.done_after_kill(library, target, setup.model_a)
        _assert_all_found(library, ids)
        assert _loaded(counted) == {_name(setup.model_a)}

        if watch:  # the daemon's start carries the reindex on (library.index in its catch-up)
            again, port = server(target, watch)
            _wait_until(lambda: _status(port)["reindex"] is None, "the reindex to complete", again)
            assert again.poll() is None, (tmp_path / "serve.log").read_text()
            log = (setup.data / "logs" / "photosearch.log").read_text()
            todo = [int(n) for n in re.findall(r"reindex to .*?: (\d+) distinct photos to embed", log)]
            assert todo[-1] == TOTAL - done, todo  # the restart embedded only what was left
            assert _get(port, "/api/status")["model"].startswith(_name(target))
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=60) == 0
        else:
            report = setup.run(target, "index", "--no-progress").stdout
            assert _embedded(report) == TOTAL - done, report
        _assert_complete(library, target)


# -- cancel ------------------------------------------------------------------------------------------------


def test_cancel_abandons_an_interrupted_reindex(setup):
    counted = Counted()
    with setup.library(setup.model_a, counted) as library:
        ids = _indexed_ids(library)
        _assert_all_found(library, ids)
        active = library.store().name
        proc = subprocess.Popen(setup.cmd(setup.model_b, "reindex", "--no-progress"), env=setup.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            moving = _wait_until(lambda: _done_beyond(library, 0), "reindex progress", proc)
            assert moving and proc.poll() is None, "the reindex ended before it was seen running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _assert_under_way(library, setup.data, setup.model_a, setup.model_b)
        assert len(library.store().chroma.names()) == 2  # the active collection and the reindex's

        cancelled = setup.run(setup.model_b, "reindex", "--cancel")
        assert cancelled.stdout.startswith(f"cancelled the reindex to {_name(setup.model_b)}"), cancelled.stdout
        assert _progress(library) is None and _reindex_meta(setup.data) is None
        assert library.store().chroma.names() == [active]
        assert library.stored_model().name == _name(setup.model_a)
        _assert_all_found(library, ids)
        assert assert_stores_agree(library) == ids

        assert setup.run(setup.model_b, "reindex", "--cancel").stdout.strip() == "no reindex under way"
        report = setup.run(setup.model_a, "index", "--no-progress").stdout
        assert _embedded(report) == 0, report  # nothing is carried on after a cancel
        assert _progress(library) is None and library.store().chroma.names() == [active]
