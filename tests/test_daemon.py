"""`photosearch watch` as a real subprocess: live changes, crashes, signals, the lock, searches meanwhile."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemonproc import FAST, Daemon
from helpers import Counted, assert_stores_agree, make_config, make_photo
from serveproc import clean_env

from photosearch.library import Library


@pytest.fixture
def env(tmp_path, backend):
    """No user config, no PHOTOSEARCH_* of the developer's shell; the stores of the backend under test."""
    lease = {"PHOTOSEARCH_STORE_LEASE": "5"} if backend == "servers" else {}  # a killed daemon's claims: 5 s
    return clean_env(tmp_path, **FAST, **lease)


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "lib"
    for i in range(3):
        make_photo(root / f"p{i}.jpg", seed=i)
    return root


_MODELS = Counted()  # the tiny model loaded once for the module's own indexing


def _start(tmp_path, tiny_model_dir, env, lib, observer="auto") -> Daemon:
    """The library indexed (in this process: the daemon is what is tested), then `watch` started on it."""
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=_MODELS) as library:
        library.index([lib])
    return Daemon(tmp_path / "data", tiny_model_dir, {**env, "PHOTOSEARCH_WATCH_OBSERVER": observer}).start()


def _embedded_total(log: str) -> int:
    return sum(int(n) for n in re.findall(r"embedded=(\d+)", log))


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_follows_creates_edits_renames_folder_moves_and_deletes(tmp_path, tiny_model_dir, env, lib, observer):
    daemon = _start(tmp_path, tiny_model_dir, env, lib, observer)
    try:
        paths = {str(lib / f"p{i}.jpg") for i in range(3)}
        daemon.settle(paths)
        make_photo(lib / "new.jpg", seed=10)
        daemon.settle(paths | {str(lib / "new.jpg")})

        (old_hash,) = daemon.sql(f"select content_hash from photos where path = '{lib / 'p0.jpg'}'")[0]
        make_photo(lib / "p0.jpg", seed=11)  # edited in place
        daemon.wait_for(
            lambda: (
                daemon.sql(f"select content_hash from photos where path = '{lib / 'p0.jpg'}'")[0][0] != old_hash
                and daemon.idle()
            ),
            what="the edit",
        )

        (renamed_id,) = daemon.sql(f"select id from photos where path = '{lib / 'p1.jpg'}'")[0]
        (lib / "p1.jpg").rename(lib / "renamed.jpg")
        paths = (paths - {str(lib / "p1.jpg")}) | {str(lib / "new.jpg"), str(lib / "renamed.jpg")}
        daemon.settle(paths)
        assert daemon.sql(f"select id from photos where path = '{lib / 'renamed.jpg'}'")[0][0] == renamed_id

        album = lib / "album"
        for i in range(20):
            make_photo(album / f"a{i}.jpg", seed=100 + i)
        paths |= {str(album / f"a{i}.jpg") for i in range(20)}
        daemon.settle(paths)
        embedded_before = _embedded_total(daemon.log())
        ids_before = {p: i for i, p in daemon.sql("select id, path from photos where path like '%/album/%'")}
        album.rename(lib / "album-2024")  # a whole folder moves: no photo may reach the model
        paths = {p.replace("/album/", "/album-2024/") for p in paths}
        daemon.settle(paths)
        ids_after = {p: i for i, p in daemon.sql("select id, path from photos where path like '%/album-2024/%'")}
        assert sorted(ids_after.values()) == sorted(ids_before.values())
        assert _embedded_total(daemon.log()) == embedded_before

        (lib / "new.jpg").unlink()
        for i in range(5):
            (lib / "album-2024" / f"a{i}.jpg").unlink()
        paths -= {str(lib / "new.jpg")} | {str(lib / "album-2024" / f"a{i}.jpg") for i in range(5)}
        daemon.settle(paths)
    finally:
        code, out, _ = daemon.stop()
    assert code == 0, out
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        assert {
            str(p) for p in (r.path for r in library.catalog.records(assert_stores_agree(library)).values())
        } == paths


def test_file_written_slowly_is_indexed_once_complete(tmp_path, tiny_model_dir, env, lib):
    daemon = _start(tmp_path, tiny_model_dir, env, lib, "native")
    try:
        daemon.settle({str(lib / f"p{i}.jpg") for i in range(3)})
        source = make_photo(tmp_path / "big.jpg", seed=42, size=(1200, 900))
        data = source.read_bytes()
        target = lib / "slow.jpg"
        with target.open("wb") as fh:
            for start in range(0, len(data), len(data) // 6 + 1):
                fh.write(data[start : start + len(data) // 6 + 1])
                fh.flush()
                time.sleep(0.3)  # a slow copy: each pause is shorter than `settle`
        daemon.settle({str(lib / f"p{i}.jpg") for i in range(3)} | {str(target)})
        (size,) = daemon.sql(f"select size from photos where path = '{target}'")[0]
        assert size == len(data)
        assert "slow.jpg" not in "".join(line for line in daemon.log().splitlines() if "failed:" in line), daemon.log()
        assert daemon.sql("select count(*) from photos where status = 'failed'")[0][0] == 0
    finally:
        daemon.stop()


def test_second_instance_is_refused_and_a_stale_lock_is_taken_over(tmp_path, tiny_model_dir, env, lib):
    daemon = _start(tmp_path, tiny_model_dir, env, lib)
    daemon.settle({str(lib / f"p{i}.jpg") for i in range(3)})
    second = subprocess.run(daemon.cli("watch"), env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 75
    assert f"already running for this data directory (pid {daemon.proc.pid}" in second.stderr
    status = json.loads(subprocess.run(daemon.cli("status", "--json"), env=env, capture_output=True).stdout)
    assert status["daemon"]["running"] and status["daemon"]["pid"] == daemon.proc.pid
    assert status["daemon"]["indexed_last_hour"] == 3
    daemon.stop(signal.SIGKILL)  # leaves writer.lock behind with its pid in it
    assert str(daemon.proc.pid) in (tmp_path / "data" / "writer.lock").read_text()
    again = daemon.start()
    make_photo(lib / "after.jpg", seed=9)
    again.settle({str(lib / f"p{i}.jpg") for i in range(3)} | {str(lib / "after.jpg")})
    code, _, _ = again.stop()
    assert code == 0


def test_sigterm_mid_batch_exits_within_ten_seconds(tmp_path, tiny_model_dir, env, lib):
    daemon = _start(tmp_path, tiny_model_dir, {**env, "PHOTOSEARCH_MODEL_BATCH_SIZE": "2"}, lib)
    daemon.settle({str(lib / f"p{i}.jpg") for i in range(3)})
    for i in range(150):
        make_photo(lib / "many" / f"m{i}.jpg", seed=1000 + i, size=(800, 600))
    daemon.wait_for(lambda: len(daemon.indexed_paths()) >= 7, what="indexing to start")
    code, out, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0, out
    assert seconds < 10
    assert len(daemon.indexed_paths()) < 153, "finished before the signal: the test proved nothing"


def test_sigkill_during_changes_converges_exactly(tmp_path, tiny_model_dir, env, lib):
    rng = random.Random(7)
    daemon = _start(tmp_path, tiny_model_dir, env, lib)
    seed = 500
    for _round in range(4):
        daemon.wait_for(lambda: daemon.sql("select count(*) from photos")[0][0] > 0, what="daemon up")
        deadline = time.monotonic() + rng.uniform(0.8, 2.0)
        while time.monotonic() < deadline:  # files keep changing while the daemon works
            existing = sorted(lib.rglob("*.jpg"))
            action = rng.random()
            if action < 0.5 or len(existing) < 3:
                seed += 1
                make_photo(lib / f"d{seed % 3}" / f"n{seed}.jpg", seed=seed)
            elif action < 0.75:
                existing[rng.randrange(len(existing))].unlink()
            else:
                victim = existing[rng.randrange(len(existing))]
                victim.rename(victim.with_name(f"r{seed}-{victim.name}"))
                seed += 1
            time.sleep(0.05)
        daemon.stop(signal.SIGKILL)
        daemon.start()
    on_disk = {str(p) for p in lib.rglob("*.jpg")}
    daemon.settle(on_disk, timeout=120)
    code, out, _ = daemon.stop()
    assert code == 0, out
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        ids = assert_stores_agree(library)
        assert {str(r.path) for r in library.catalog.records(ids).values()} == on_disk
        assert library.status().failed == 0


def test_searches_while_the_daemon_indexes_see_no_error(tmp_path, tiny_model_dir, env, lib):
    daemon = _start(tmp_path, tiny_model_dir, env, lib)
    daemon.settle({str(lib / f"p{i}.jpg") for i in range(3)})
    for i in range(60):
        make_photo(lib / "burst" / f"b{i}.jpg", seed=2000 + i, size=(480, 360))
    config = make_config(tmp_path / "data", tiny_model_dir)
    searches = 0
    with Library.open(config, embedder_factory=Counted()) as library:
        deadline = time.monotonic() + 120
        while len(daemon.indexed_paths()) < 63 or not daemon.idle():
            assert time.monotonic() < deadline
            hits = library.search("a photo of a dog", k=5)
            assert 1 <= len(hits) <= 5
            assert all(Path(h.path).exists() for h in hits)
            searches += 1
        grown = library.search("a photo of a dog", k=200)
    cli = subprocess.run(daemon.cli("search", "dog", "--json", "-k", "3"), env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and len(cli.stdout.splitlines()) == 3, cli.stderr
    daemon.stop()
    assert searches > 5, "the daemon finished before the searches could overlap it"
    assert len(grown) == 63  # the reader saw the daemon's writes
