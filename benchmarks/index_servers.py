"""bench_index.py --backend servers: indexers sharing a PostgreSQL catalog and a Chroma server.

(s) indexing throughput of 1 and of 2 worker processes on the same photos, measured in one run. Each worker has
    a data directory of its own, as on separate machines, and they split the work through the catalog's claims
    (indexing/shared.py). Every worker loads its model and connects first, then all start together (a go file),
    so the rate is photos / (last worker done - start): the model loads are not in it. Measured with the real
    CLIP model and with a fake one (tests' HashEmbedder: a vector from a hash of the pixels), so that the
    coordination's cost shows apart from the model's. On a 2-core machine two CPU workers share the cores that
    one worker already fills: 2 workers cannot reach 2x here, whatever the coordination costs.
(k) the claim's cost per photo: Claims.claim in batches of 64 until the queue is empty, and Claims.unclaim of
    everything claimed at the end (as a worker gives its claims back), by 1 and by 2 concurrent claimer processes
    on one PostgreSQL catalog of --claim-rows pending rows. Reported as µs per photo, summed over claimers
    (the catalog time a photo costs) and as wall time per photo (what the queue delivers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
START_WITHIN = 300.0  # seconds for the workers to load their models and report ready


def child_command(role: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__)), role, json.dumps(spec)]


def wait_go(spec: dict[str, Any]) -> None:
    Path(spec["ready"]).touch()
    while not Path(spec["go"]).exists():
        time.sleep(0.002)


# -- (s) a worker ------------------------------------------------------------------------------------------------
def index_worker(spec: dict[str, Any]) -> None:
    """Runs in a worker process: load the model, wait for go, index the folder on the shared stores."""
    from photosearch.config import Config, validated
    from photosearch.library import Library

    factory = None
    model = dict(spec["model"])
    if spec["fake"]:
        sys.path.insert(0, str(TESTS))
        from helpers import HashEmbedder  # tests/helpers.py

        fake = HashEmbedder()
        model = {"name": HashEmbedder.identity.name, "batch_size": model.get("batch_size", 32)}
        factory = lambda _config: fake  # noqa: E731
    config = validated(Config, {"data_dir": spec["data_dir"], "model": model, "store": spec["store"]})
    with Library.open(config, embedder_factory=factory) as library:
        # The first worker's model load records the model in the new catalog; the others load theirs after it.
        # Two first loads at once on an empty shared catalog race in generations.record_active (set_meta's
        # insert: "duplicate key value violates unique constraint meta_pkey"), which this benchmark does not
        # measure (seen in the smoke; photosearch's own to fix).
        while spec["after"] and not Path(spec["after"]).exists():
            time.sleep(0.01)
        library.embedder()
        wait_go(spec)
        started = time.time()  # wall clock: the workers' times are compared with each other's and the go file's
        report = library.index([Path(spec["folder"])])
        done = time.time()
    print("CHILD " + json.dumps({"start": started, "end": done, "embedded": report.embedded, "new": report.new}))


def run_workers(count: int, fake: bool, args: argparse.Namespace, model: Path, folder: Path, store: dict[str, str],
                scratch: Path) -> dict[str, float]:  # fmt: skip
    """``count`` workers on one fresh store, started together: the photos/s of the whole run, and per worker."""
    tag = f"{'fake' if fake else 'clip'}-{count}"
    go = scratch / f"go-{tag}"
    specs = [{"data_dir": str(scratch / f"data-{tag}-{i}"), "folder": str(folder), "store": store, "fake": fake,
              "model": {"name": str(model), "precision": args.precision, "allow_download": False},
              "ready": str(scratch / f"ready-{tag}-{i}"), "go": str(go),
              "after": str(scratch / f"ready-{tag}-0") if i else None} for i in range(count)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    logs = [(scratch / f"log-{tag}-{i}").open("w+") for i in range(count)]
    procs = [subprocess.Popen(child_command("--servers-worker", spec), stdout=subprocess.PIPE, stderr=log, text=True,
                              env=env) for spec, log in zip(specs, logs, strict=True)]  # fmt: skip
    deadline = time.monotonic() + START_WITHIN
    while not all(Path(s["ready"]).exists() for s in specs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            sys.exit(f"a worker did not start:\n{_log_tail(logs)}")
        time.sleep(0.01)
    time.sleep(0.2)  # the workers' polls settle before the clock starts
    go_time = time.time()
    go.touch()
    results = _results(procs, "worker", lambda: _log_tail(logs))
    embedded = sum(r["embedded"] for r in results)
    if embedded != args.photos:  # every photo once, across the workers: the claims split the work
        sys.exit(f"{count} workers embedded {embedded} photos, not {args.photos}:\n{_log_tail(logs)}")
    wall = max(r["end"] for r in results) - go_time
    return {"photos_per_s": args.photos / wall, "wall_s": wall, "split": [r["embedded"] for r in results]}


def _log_tail(logs: list[Any]) -> str:
    parts = []
    for log in logs:
        log.flush()
        log.seek(0)
        parts.append(log.read()[-1500:])
    return "\n---\n".join(parts)


# -- (k) the claim micro-benchmark -------------------------------------------------------------------------------
def pending_rows(url: str, root: Path, rows: int) -> int:
    """``rows`` pending photo rows (no file behind them: nothing reads them) in a new catalog: the root's id."""
    from sqlalchemy import insert

    from photosearch.stores.catalog import Catalog
    from photosearch.stores.schema import Photo, PhotoStatus

    root.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(url, root.parent / "claims-client")
    root_id = catalog.add_root(root).id
    now = datetime.now().replace(microsecond=0)
    for first in range(1, rows + 1, 5000):
        batch = [{"id": i, "root_id": root_id, "path": f"{root}/d{i % 50}/p{i:07d}.jpg", "folder": f"d{i % 50}",
                  "size": 1000 + i, "mtime_ns": i, "status": PhotoStatus.PENDING, "content_hash": f"{i * 7919:032x}",
                  "updated_at": now} for i in range(first, min(first + 5000, rows + 1))]  # fmt: skip
        with catalog.session() as s, s.begin():
            s.execute(insert(Photo), batch)
    catalog.close()
    return int(root_id)


def claimer(spec: dict[str, Any]) -> None:
    """Runs in a claimer process: claim batches until none is left, then give all back; times of each."""
    from photosearch.stores.catalog import Catalog
    from photosearch.stores.claims import Claims, worker_name

    catalog = Catalog.open(spec["url"], Path(spec["data_dir"]))
    claims = Claims(catalog, worker_name(None), lease=3600)
    claims.now()  # the connection is open before the clock starts
    wait_go(spec)
    held: list[int] = []
    wall_start = time.time()  # wall clock: compared across the claimers
    started = time.perf_counter()
    while batch := claims.claim([spec["root_id"]], spec["batch"]):
        held.extend(c.state.id for c in batch)
    claimed = time.perf_counter()
    # The rows stay pending (nothing indexes them): given back while another claimer still claims, they would be
    # free to it again. So every claimer gives back only once all have stopped claiming.
    Path(spec["claimed"]).touch()
    while not all(Path(other).exists() for other in spec["all_claimed"]):
        time.sleep(0.002)
    unclaiming = time.perf_counter()
    claims.unclaim(held)
    done = time.perf_counter()
    wall_end = time.time()
    catalog.close()
    print("CHILD " + json.dumps({"ids": held, "claim_s": claimed - started, "unclaim_s": done - unclaiming,
                                 "start": wall_start, "end": wall_end}))  # fmt: skip


def claim_costs(count: int, rows: int, servers: Any, scratch: Path, batch: int = 64) -> dict[str, float]:
    url = servers.store(f"claims_{count}")["catalog"]
    root_id = pending_rows(url, scratch / f"claims-{count}" / "photos", rows)
    go = scratch / f"claims-go-{count}"
    claimed = [str(scratch / f"claims-claimed-{count}-{i}") for i in range(count)]
    specs = [{"url": url, "root_id": root_id, "batch": batch, "data_dir": str(scratch / f"claims-{count}"),
              "ready": str(scratch / f"claims-ready-{count}-{i}"), "go": str(go), "claimed": claimed[i],
              "all_claimed": claimed} for i in range(count)]  # fmt: skip
    procs = [subprocess.Popen(child_command("--claimer", spec), stdout=subprocess.PIPE, text=True) for spec in specs]
    while not all(Path(s["ready"]).exists() for s in specs):
        if any(p.poll() is not None for p in procs):
            sys.exit("a claimer failed to start")
        time.sleep(0.01)
    time.sleep(0.2)
    go.touch()
    results = _results(procs, "claimer", lambda: "")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)  # not the processes' exits
    ids = [i for r in results for i in r["ids"]]
    if len(ids) != rows or len(set(ids)) != rows:  # SKIP LOCKED: each row to exactly one claimer
        sys.exit(f"{count} claimers claimed {len(ids)} rows ({len(set(ids))} distinct) of {rows}")
    busy = sum(r["claim_s"] + r["unclaim_s"] for r in results)
    return {"us_per_photo": busy / rows * 1e6, "wall_us_per_photo": wall / rows * 1e6,
            "claim_us_per_photo": sum(r["claim_s"] for r in results) / rows * 1e6,
            "unclaim_us_per_photo": sum(r["unclaim_s"] for r in results) / rows * 1e6,
            "split": [len(r["ids"]) for r in results]}  # fmt: skip


# -- the run -----------------------------------------------------------------------------------------------------
def run_servers(args: argparse.Namespace, model: Path, folder: Path, scratch: Path) -> dict[str, Any]:
    """Both measurements on one pair of throwaway servers, each run on a fresh store of its own."""
    from servers import throwaway_servers  # benchmarks/servers.py

    workers = sorted({int(w) for w in args.workers.split(",")})
    result: dict[str, Any] = {"photos": args.photos, "workers": workers, "claim_rows": args.claim_rows}
    with throwaway_servers() as servers:
        for fake in (False, True):
            # The smoke's CLIP model runs one worker only: each CLIP worker is a torch start-up (~5-10 s), and the
            # 2-worker path is the fake model's too.
            for count in workers[:1] if args.smoke and not fake else workers:
                measured = run_workers(count, fake, args, model, folder, servers.store(), scratch)
                name = f"{'fake' if fake else 'clip'}_{count}w"
                result[name] = measured
                print(
                    f"(s) {count} worker(s), {'fake' if fake else 'CLIP'} model: {measured['photos_per_s']:.1f} "
                    f"photos/s ({measured['wall_s']:.1f} s; photos per worker {measured['split']})",
                    flush=True,
                )
        for count in (1, 2):
            measured = claim_costs(count, args.claim_rows, servers, scratch)
            result[f"claims_{count}"] = measured
            print(f"(k) {count} claimer(s), batches of 64: {measured['us_per_photo']:.0f} µs/photo of catalog time "
                  f"(claim {measured['claim_us_per_photo']:.0f}, unclaim {measured['unclaim_us_per_photo']:.0f}), "
                  f"{measured['wall_us_per_photo']:.0f} µs/photo wall; rows per claimer {measured['split']}",
                  flush=True)  # fmt: skip
    return result


def report(args: argparse.Namespace, result: dict[str, Any], machine: str, megabytes: float) -> None:
    """The RESULTS.md row and the RESULT line."""
    workers = result["workers"]
    rates, ratios = {}, {}
    for kind in ("clip", "fake"):
        counts = [c for c in workers if f"{kind}_{c}w" in result]
        one = result[f"{kind}_{counts[0]}w"]["photos_per_s"]
        for count in counts[1:]:
            result[f"{kind}_{count}w_over_{counts[0]}w"] = result[f"{kind}_{count}w"]["photos_per_s"] / one
        rates[kind] = " / ".join(f"{result[f'{kind}_{c}w']['photos_per_s']:.1f}" for c in counts)
        ratios[kind] = " / ".join(f"{result[f'{kind}_{c}w_over_{counts[0]}w']:.2f}x" for c in counts[1:]) or "-"
    command = ("flock /tmp/photosearch-bench.lock python benchmarks/bench_index.py " + " ".join(sys.argv[1:])).strip()
    claims = " / ".join(f"{result[f'claims_{c}']['us_per_photo']:.0f}" for c in (1, 2))
    walls = " / ".join(f"{result[f'claims_{c}']['wall_us_per_photo']:.0f}" for c in (1, 2))
    label = "/".join(map(str, workers))
    print(
        f"\n| date | machine | photos | workers | CLIP photos/s | CLIP ratio | fake model photos/s | fake ratio "
        f"| claim + unclaim, 1 / 2 claimers ({result['claim_rows']:,} rows, batches of 64) | command |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {datetime.now():%Y-%m-%d} | {machine} | {args.photos} x {megabytes:.1f} MB JPEG | {label} "
          f"| {rates['clip']} | {ratios['clip']} | {rates['fake']} | {ratios['fake']} "
          f"| {claims} µs/photo catalog time, {walls} µs/photo wall | `{command}` |")  # fmt: skip
    print("RESULT " + json.dumps(result))


def main() -> None:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, str(HERE))
    if role == "--servers-worker":
        index_worker(spec)
    elif role == "--claimer":
        claimer(spec)


if __name__ == "__main__":
    main()


def _results(procs: list[subprocess.Popen[str]], what: str, logs: Callable[[], str]) -> list[dict[str, Any]]:
    """Each child's CHILD line (its JSON result), once it ends; a child that failed ends the benchmark."""
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"a {what} failed ({proc.returncode}):\n{logs()}")
        results.append(json.loads(next(line[6:] for line in out.splitlines() if line.startswith("CHILD "))))
    return results
