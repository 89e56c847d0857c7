"""Several indexers on one shared library (PostgreSQL catalog, Chroma server), as separate processes with data
directories of their own, like machines: they split the work, every photo is embedded once (model calls counted
across the processes), and a worker killed with SIGKILL mid-batch, or a server that goes away, loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import HashEmbedder, make_photo
from shared_workers import SlowHashEmbedder, shared_config, worker_command

from photosearch.library import Library
from photosearch.serving.httpapi import create_app
from photosearch.stores.schema import PhotoStatus
from photosearch.watching.daemon import Daemon

PHOTOS = 1000
DEADLINE = 240  # seconds a run of the workers may take before the test gives up
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def library_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PHOTOS distinct small pictures in 10 folders: one root, read by every test (never changed)."""
    root = tmp_path_factory.mktemp("shared-lib") / "photos"
    for i in range(PHOTOS):
        make_photo(root / f"d{i % 10}" / f"p{i:04d}.jpg", seed=20_000 + i, size=(64, 48))
    return root


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    return {**clean, "PYTHONPATH": os.pathsep.join([str(TESTS), clean.get("PYTHONPATH", "")])}


def _start(base: Path, name: str, store: dict[str, object], root: Path, delay: float) -> subprocess.Popen[str]:
    cmd = worker_command(base / name / "data", store, base / f"{name}.seen.json", [root], delay)
    log = (base / f"{name}.log").open("w")
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=log, text=True)


def _finish(proc: subprocess.Popen[str], base: Path, name: str) -> dict[str, object]:
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, (base / f"{name}.log").read_text()[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def _seen(base: Path, name: str) -> Counter[str]:
    path = base / f"{name}.seen.json"
    return Counter(json.loads(path.read_text())) if path.exists() else Counter()


def _check_library(base: Path, store: dict[str, object]) -> None:
    """Catalog, vector server and disk agree: PHOTOS indexed rows, PHOTOS vectors, nothing pending."""
    config = shared_config(base / "checker", store)
    with Library.open(config, embedder_factory=_no_model) as library:
        counts = library.catalog.counts()
        assert counts == {PhotoStatus.INDEXED: PHOTOS, PhotoStatus.PENDING: 0, PhotoStatus.FAILED: 0}, counts
        assert library.stores().vector_count() == PHOTOS
        assert library.stores().agree()


def _no_model(_config: object) -> object:
    raise AssertionError("the check must not load a model")


@pytest.mark.parametrize("workers", [2, 3])
def test_indexers_split_the_work_and_embed_each_photo_once(tmp_path, library_folder, shared_store, workers):
    names = [f"w{i}" for i in range(workers)]
    procs = [_start(tmp_path, name, shared_store, library_folder, delay=0.05) for name in names]
    reports = {name: _finish(proc, tmp_path, name) for name, proc in zip(names, procs, strict=True)}
    seen = {name: _seen(tmp_path, name) for name in names}
    total = sum(seen.values(), Counter())
    assert len(total) == PHOTOS and set(total.values()) == {1}, "a photo went through the model twice"
    assert all(seen[name] for name in names), f"a worker had nothing to do: {reports}"
    assert sum(int(r["embedded"]) for r in reports.values()) == PHOTOS
    assert sum(int(r["new"]) for r in reports.values()) == PHOTOS  # each found new by one scan only
    _check_library(tmp_path, shared_store)


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, library_folder, shared_store):
    store = {**shared_store, "lease": 5}  # its claims come back 5 s after it stops renewing them
    victim = _start(tmp_path, "victim", store, library_folder, delay=0.05)
    survivor = _start(tmp_path, "survivor", store, library_folder, delay=0.05)
    deadline = time.monotonic() + DEADLINE
    while sum(_seen(tmp_path, "victim").values()) < 100:  # well into its share, in the middle of a batch
        assert victim.poll() is None and time.monotonic() < deadline, "the victim finished before it was killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _finish(survivor, tmp_path, "survivor")  # waits for the victim's claims to expire, then embeds them
    twice = sum((_seen(tmp_path, "victim") + _seen(tmp_path, "survivor")).values()) - PHOTOS
    assert 0 <= twice <= 16, "more than the victim's claimed batch was embedded again"
    # The next run finds the victim's run lease expired: it sweeps what the victim may have left half-written.
    report = _finish(_start(tmp_path, "after", store, library_folder, delay=0), tmp_path, "after")
    assert report["reconciled"] is True and report["embedded"] == 0
    _check_library(tmp_path, store)


def _wait_embedded(base: Path, name: str, proc: subprocess.Popen[str], at_least: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while sum(_seen(base, name).values()) < at_least:
        assert proc.poll() is None and time.monotonic() < deadline, "the worker finished before the fault"
        time.sleep(0.05)


def _embedded_twice(base: Path, *names: str) -> int:
    return sum(sum(_seen(base, name).values()) for name in names) - PHOTOS


def test_the_chroma_server_killed_and_restarted_mid_run(tmp_path, library_folder, postgres_url, own_chroma_server):
    """Killed with SIGKILL mid-batch and back a few seconds later: the run waits for it and carries on."""
    store = {"catalog": postgres_url, "vectors": own_chroma_server.url}
    worker = _start(tmp_path, "w", store, library_folder, delay=0.05)
    _wait_embedded(tmp_path, "w", worker, 200)
    own_chroma_server.stop(kill=True)
    time.sleep(3)
    own_chroma_server.start()
    report = _finish(worker, tmp_path, "w")
    assert int(report["embedded"]) >= PHOTOS and 0 <= _embedded_twice(tmp_path, "w") <= 16
    log = (tmp_path / "w.log").read_text()
    assert "trying again in" in log and own_chroma_server.url in log  # it said what it waited for
    _check_library(tmp_path, store)


def test_a_server_gone_for_good_stops_the_run_in_one_line_and_the_next_run_finishes(
    tmp_path, library_folder, postgres_url, own_chroma_server
):
    """store.retry_for bounds the whole: the run goes back to the server 1, 2, 4... s apart (each try retrying its
    requests briefly), stops once retry_for has passed, and the next run finishes."""
    store = {"catalog": postgres_url, "vectors": own_chroma_server.url, "retry_for": 20}
    worker = _start(tmp_path, "w", store, library_folder, delay=0.05)
    _wait_embedded(tmp_path, "w", worker, 200)
    killed = time.monotonic()
    own_chroma_server.stop(kill=True)
    _, _ = worker.communicate(timeout=DEADLINE)
    gave_up_after = time.monotonic() - killed
    log = (tmp_path / "w.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("photosearch:")]
    assert worker.returncode == 69 and len(errors) == 1, errors
    assert own_chroma_server.url in errors[0] and "Traceback" not in log
    retries = [line for line in log.splitlines() if "photosearch.indexing.shared:" in line and "trying again" in line]
    assert retries and retries[0].endswith("trying again in 1 s"), log  # each try ~10 s; 2, 4... s after
    assert gave_up_after >= 20
    own_chroma_server.start()
    report = _finish(_start(tmp_path, "again", store, library_folder, delay=0), tmp_path, "again")
    assert report["reconciled"] is True  # the stopped run's lease expired at once: the stores were swept
    # Each try embeds its claimed batch (16) again before the write fails; and the next run's batch.
    assert 0 <= _embedded_twice(tmp_path, "w", "again") <= 16 * (len(retries) + 2)
    _check_library(tmp_path, store)


def test_postgresql_restarted_mid_run(tmp_path, library_folder, shared_store, postgres_server):
    """PostgreSQL stopped (its connections told 57P01) and started again: the run reconnects and carries on."""
    worker = _start(tmp_path, "w", shared_store, library_folder, delay=0.05)
    _wait_embedded(tmp_path, "w", worker, 200)
    postgres_server.stop()
    time.sleep(2)
    postgres_server.start()
    _finish(worker, tmp_path, "w")
    assert 0 <= _embedded_twice(tmp_path, "w") <= 16
    _check_library(tmp_path, shared_store)


def test_another_machine_serves_the_shared_stores_while_a_worker_indexes(tmp_path, library_folder, shared_store):
    """`serve` on another machine: its own data directory, the shared stores, the HTTP API (the app `serve` runs)
    asked during the run: counts only grow, every result is a real file, no request fails."""
    worker = _start(tmp_path, "w", shared_store, library_folder, delay=0.05)
    seen_counts: list[int] = []
    config = shared_config(tmp_path / "reader", shared_store)
    with (Library.open(config, embedder_factory=lambda _config: HashEmbedder()) as reader,
          TestClient(create_app(reader), base_url="http://127.0.0.1:8765") as http):  # fmt: skip

        def ask(path: str) -> dict[str, Any]:
            reply = http.get(path)
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        while worker.poll() is None:
            indexed = int(ask("/api/status")["indexed"])
            if indexed:
                hits = ask("/api/search?q=a+dog+on+the+beach&k=10")["results"]
                # More may be indexed by the time the search runs, never fewer.
                assert min(10, indexed) <= len(hits) <= 10 and all(Path(h["path"]).is_file() for h in hits)
            seen_counts.append(indexed)
            time.sleep(0.2)
        _finish(worker, tmp_path, "w")
        assert ask("/api/status")["indexed"] == PHOTOS
        assert len(ask("/api/search?q=a+dog+on+the+beach&k=10")["results"]) == 10
    assert seen_counts == sorted(seen_counts) and any(0 < n < PHOTOS for n in seen_counts), seen_counts


def test_a_watch_daemon_and_an_index_run_on_another_machine_split_the_work(tmp_path, library_folder, shared_store):
    """`photosearch watch` on one machine (here a thread, with its own data directory), `photosearch index` of a
    new folder on another: the daemon takes the new folder up and embeds part of it; each photo embedded once."""
    idle = tmp_path / "idle-root"
    make_photo(idle / "first.jpg", seed=1)
    daemon_model = SlowHashEmbedder(tmp_path / "daemon.seen.json", delay=0.05)
    config = shared_config(tmp_path / "daemon-data", shared_store)
    with Library.open(config, embedder_factory=lambda _config: daemon_model) as library:
        library.index([idle])
        daemon = Daemon(library)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        try:
            report = _finish(_start(tmp_path, "index", shared_store, library_folder, delay=0.1), tmp_path, "index")
        finally:
            daemon.stop_event.set()
            thread.join(timeout=60)
    by_daemon = Counter(daemon_model.seen)
    total = by_daemon + _seen(tmp_path, "index")
    assert len(total) == PHOTOS + 1 and set(total.values()) == {1}, "a photo went through the model twice"
    assert sum(by_daemon.values()) > 1 and int(report["embedded"]) < PHOTOS, "the daemon did not help"
