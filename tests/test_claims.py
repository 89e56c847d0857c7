"""The shared queue's claims and leases (stores/claims.py) on both catalogs: concurrent claimers never share a
row, a claim or lease that is not renewed expires, and a worker's own claims are renewed and given back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from photosearch.stores.catalog import Catalog
from photosearch.stores.claims import RUN_PREFIX, Claims, worker_name
from photosearch.stores.schema import PhotoStatus


def _queued(catalog: Catalog, n: int) -> int:
    root = catalog.add_root(Path("/lib"))
    catalog.upsert_files([
        {"path": f"/lib/{i}.jpg", "root_id": root.id, "folder": "", "size": i, "mtime_ns": i,
         "content_hash": f"h{i:04d}", "status": PhotoStatus.PENDING}
        for i in range(n)
    ])  # fmt: skip
    return root.id


def test_concurrent_claimers_split_the_queue(catalog_url):
    catalog = Catalog.open(catalog_url)
    root = _queued(catalog, 300)
    workers = [Claims(catalog, worker_name(f"w{i}"), lease=60) for i in range(3)]
    got: dict[str, list[int]] = {w.worker: [] for w in workers}

    def drain(claims: Claims) -> None:
        while batch := claims.claim([root], 7):
            got[claims.worker].extend(c.state.id for c in batch)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in got.values() for i in ids]
    assert len(every) == len(set(every)) == 300  # each row to exactly one worker
    assert workers[0].pending([root]) == 300  # claimed, not done: still queued
    workers[0].unclaim(got[workers[0].worker])
    assert sorted(c.state.id for c in workers[1].claim([root], 500)) == sorted(got[workers[0].worker])
    catalog.close()


def test_claims_expire_unless_renewed(catalog_url):
    catalog = Catalog.open(catalog_url)
    root = _queued(catalog, 5)
    short = Claims(catalog, worker_name("short"), lease=0.5)
    other = Claims(catalog, worker_name("other"), lease=60)
    mine = short.claim([root], 3)
    assert [c.state.content_hash for c in mine] == ["h0000", "h0001", "h0002"]  # by hash: twins claimed together
    assert len(other.claim([root], 10)) == 2  # the rest
    time.sleep(0.3)
    short.renew()
    time.sleep(0.3)
    assert other.claim([root], 10) == []  # renewed: still held
    time.sleep(0.6)
    assert sorted(c.state.id for c in other.claim([root], 10)) == sorted(c.state.id for c in mine)  # expired
    short.unclaim([c.state.id for c in mine])  # no longer its claims: nothing happens
    assert other.claim([root], 10) == []
    catalog.close()


def test_leases_are_exclusive_until_released_or_expired(catalog_url):
    catalog = Catalog.open(catalog_url)
    a = Claims(catalog, worker_name("a"), lease=0.5)
    b = Claims(catalog, worker_name("b"), lease=60)
    assert a.take("scan:1") and a.take("scan:1")  # ours: taken again
    assert not b.take("scan:1")  # a's, alive
    a.release("scan:1")
    assert b.take("scan:1") and not a.take("scan:1")
    assert a.take(RUN_PREFIX + a.worker) and b.take(RUN_PREFIX + b.worker)
    assert b.dead_runs() == []
    time.sleep(0.7)  # a stopped renewing: it died
    assert b.dead_runs() == [RUN_PREFIX + a.worker]
    b.forget(b.dead_runs())
    assert b.dead_runs() == [] and a.running() == [b.worker] and a.others_running()  # b is alive, a is not
    catalog.close()


def test_worker_names_are_unique_per_process_start():
    assert worker_name("nas") != worker_name("nas")
    assert worker_name("nas").startswith("nas/")
