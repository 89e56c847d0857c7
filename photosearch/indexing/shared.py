"""The indexer for shared stores (PostgreSQL + a Chroma server): several processes, on several machines, index
one library together, each photo embedded once.

A run is a scan, then a claim loop (the pipeline's order is the Indexer's; this only splits it):

  * scan: one worker at a time per root (the lease ``scan:<root id>``; the others embed meanwhile and scan it
    after) compares the root with the catalog as the Indexer does: moves, copies, touched, failed and removed
    files are written at once, and what needs the model is hashed and queued: rows ``pending``, unclaimed.
  * claim: batches of pending rows of the run's roots are claimed (stores/claims.py), read again, embedded and
    written by the Index in its usual order; claims are given back when the batch is done or fails.
  * a full run (``photosearch index``) ends once its roots are scanned and none of their rows is pending, waiting
    for other workers' claims to be done or to expire (a worker that died: its rows are claimed again). A scope
    run (the watch daemon's changed paths) ends with its own queue.

A heartbeat thread renews the worker's leases and claims every third of the lease. The ``run:<worker>`` lease
marks a worker alive; a run that finds another's expired sweeps the stores (Index.sweep) before it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from photosearch.config import Config
from photosearch.errors import CatalogUnavailableError, PhotosearchError, VectorStoreUnavailableError
from photosearch.indexing.indexer import record_scan_problems, write_renames
from photosearch.indexing.pipeline import Run
from photosearch.indexing.planner import Scope, Work, make_plan
from photosearch.indexing.report import IndexCancelled, IndexReport, NoProgress, Progress
from photosearch.indexing.scanner import ScannedFile
from photosearch.models.protocols import Embedder
from photosearch.stores.catalog import FileState, RootInfo
from photosearch.stores.claims import RUN_PREFIX, Claimed, Claims
from photosearch.stores.index import Index

log = logging.getLogger(__name__)
WAIT = 0.5  # seconds between looks at the queue while other workers hold what is left
FIRST_RETRY_DELAY = 1.0  # seconds before the first retry of a step after a transient server fault; doubling
T = TypeVar("T")


class SharedIndexer:
    def __init__(self, config: Config, index: Index, embedder: Callable[[], Embedder], claims: Claims) -> None:
        self._config = config
        self._index = index
        self._get_embedder = embedder
        self._claims = claims

    def run(
        self,
        roots: Sequence[RootInfo],
        progress: Progress | None = None,
        scope: Scope | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        settle: float | None = None,
    ) -> IndexReport:
        """As Indexer.run; the report counts this worker's share (new and changed: what its scans found)."""
        started = time.monotonic()
        report = IndexReport()
        with heartbeat(self._claims):
            session = _Session(self, roots, report, _Total(progress or NoProgress()), should_stop)
            report.reconciled = session.recovering(self._sweep_after_dead_workers)
            session.run(scope, settle)
        report.seconds = time.monotonic() - started
        log.info("shared index run (%s): %s", self._claims.worker, report.summary())
        return report

    def embed_queued(self, roots: Sequence[RootInfo], should_stop: Callable[[], bool] = lambda: False) -> IndexReport:
        """Only the claim loop: embed what other workers' scans queued, until nothing is free to claim (the watch
        daemon's idle step, so a daemon helps with another machine's run)."""
        report = IndexReport()
        with heartbeat(self._claims):
            session = _Session(self, roots, report, _Total(NoProgress()), should_stop)
            while session.embed_claimed():
                pass
        return report

    def _sweep_after_dead_workers(self) -> bool:
        """Sweep the stores after a worker died mid-run (its ``run:`` lease expired), or when no other worker runs
        and the vector count disagrees with the indexed contents (a vector lost behind our back)."""
        dead = self._claims.dead_runs()
        if not dead and (self._claims.others_running() or self._index.counts_agree()):
            return False
        orphans, lost = self._index.sweep()
        why = f"{len(dead)} worker(s) stopped mid-run" if dead else "the vectors and the catalog disagree"
        log.warning("%s: %d vectors without a photo deleted, %d photos queued again", why, orphans, lost)
        self._claims.forget(dead)
        return True


class _Session:
    """One shared run's state: the roots still to scan, and the report."""

    def __init__(
        self, owner: SharedIndexer, roots: Sequence[RootInfo], report: IndexReport, progress: _Total,
        should_stop: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.owner, self.report, self.progress, self.should_stop = owner, report, progress, should_stop
        self.roots = {root.id: root for root in roots}
        self.batch = 2 * owner._config.model.batch  # claimed at a time: the decode-ahead window's worth

    def run(self, scope: Scope | None, settle: float | None) -> None:
        if scope is not None:  # a few changed paths: no lease (a rescan of the same paths is harmless)
            self.recovering(lambda: self._scan(list(self.roots.values()), scope, settle))
            while self.recovering(self.embed_claimed):
                pass
            return
        unscanned = dict(self.roots)
        while (state := self.recovering(lambda: self._step(unscanned, settle))) != "done":
            if state == "idle":
                time.sleep(WAIT)  # the rest is claimed by others, or their scans are still queueing it

    def _step(self, unscanned: dict[int, RootInfo], settle: float | None) -> str:
        """Scan the roots whose scan lease is free, then embed what can be claimed: "busy" when it embedded
        (look again at once), "done" when every root is scanned and nothing of them is queued, else "idle"."""
        self._stop_if_asked()
        claims = self.owner._claims
        for root in list(unscanned.values()):
            if claims.take(f"scan:{root.id}"):
                try:
                    self._scan([root], None, settle)
                finally:
                    claims.release(f"scan:{root.id}")
                del unscanned[root.id]
        if self.embed_claimed():
            return "busy"
        return "done" if not unscanned and not claims.pending(list(self.roots)) else "idle"

    def recovering(self, step: Callable[[], T]) -> T:
        """Run one step again after a transient server fault (a restart, a dropped connection), waiting 1, 2,
        4... s between tries, until store.retry_for has passed since its first fault; then the fault stops the
        run, with its one-line message. The stores retry each request briefly themselves: this outer loop bounds
        the whole, so a server gone for good stops the run soon after retry_for (the two layers' waits do not
        multiply). Every step can be run again: what it wrote is in the stores' safe order, its own claims it
        claims again."""
        give_up_at, delay = None, FIRST_RETRY_DELAY
        while True:
            try:
                return step()
            except (CatalogUnavailableError, VectorStoreUnavailableError) as exc:
                if give_up_at is None:  # retry_for counts from the first fault
                    give_up_at = time.monotonic() + self.owner._config.store.retry_for
                left = give_up_at - time.monotonic()
                if left <= 0 or not exc.transient:
                    raise
                wait, delay = min(delay, left), delay * 2
                log.warning("%s; trying again in %.0f s", exc, wait)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    self._stop_if_asked()
                    time.sleep(min(0.2, wait))

    def _stop_if_asked(self) -> None:
        if self.should_stop():
            raise IndexCancelled

    def _scan(self, roots: Sequence[RootInfo], scope: Scope | None, settle: float | None) -> None:
        owner, report = self.owner, self.report
        settled_before = None if settle is None else time.time_ns() - int(settle * 1e9)

        plan = make_plan(owner._index.catalog, owner._config.index, roots, scope, settled_before, self._stop_if_asked,
                         leave_queued=True)  # fmt: skip
        report.unchanged += plan.unchanged
        report.missing_roots += plan.missing_roots
        report.deferred += plan.deferred
        report.failed += record_scan_problems(owner._index, plan.problems)
        report.moved += write_renames(owner._index, plan.renames)
        self._run(plan.missing, queue_only=True).process(plan.work, self.progress)

    def embed_claimed(self) -> bool:
        """Embed queued photos, claiming a batch at a time as the pipeline's decode-ahead window asks for more
        (one stream: the model never waits for a claim batch to drain); False when none was free to claim."""
        self._stop_if_asked()
        claims = self.owner._claims
        first = claims.claim(list(self.roots), self.batch, again=True)
        if not first:
            return False
        held: list[int] = []

        def stream() -> Iterator[Work]:
            batch = first
            while batch:
                held.extend(c.state.id for c in batch)
                yield from (self._work(c) for c in batch)
                batch = claims.claim(list(self.roots), self.batch)

        try:
            total = claims.pending(list(self.roots))  # at most: others claim some of it meanwhile
            self._run([], claimed=True).process(stream(), self.progress, total)
        finally:
            try:
                claims.unclaim(held)  # done rows are no longer claimed (set_indexed); the rest goes back
            except PhotosearchError as exc:  # the catalog is gone: the claims expire by themselves
                log.warning("could not give back %d claims: %s", len(held), exc)
        return True

    def _work(self, claimed: Claimed) -> Work:
        """A claimed row as the pipeline's work: its file's size and mtime as they are now (unchanged since it was
        queued, or the pipeline reads what is there); a file gone meanwhile is found vanished and removed."""
        state = claimed.state
        path = Path(state.path)
        try:
            st = path.stat()
            file = ScannedFile(path, st.st_size, st.st_mtime_ns)
        except OSError:
            file = ScannedFile(path, state.size, state.mtime_ns)
        return Work(file, self.roots[claimed.root_id], state)

    def _run(self, missing: list[FileState], *, queue_only: bool = False, claimed: bool = False) -> Run:
        owner = self.owner
        model, index = owner._config.model, owner._config.index
        return Run(owner._index, owner._get_embedder, self.report, missing, self.should_stop, model.batch,
                   index.max_image_pixels, queue_only=queue_only, claimed=claimed)  # fmt: skip


class _Total:
    """One progress bar over a run's several pipeline passes (a scan, then many claimed batches): each pass's
    start adds its work to the total instead of starting over."""

    def __init__(self, inner: Progress) -> None:
        self._inner = inner
        self._total = 0

    def start(self, total: int) -> None:
        self._total += total
        self._inner.start(self._total)  # again, with the larger total: Progress.start's contract

    def advance(self, n: int = 1) -> None:
        self._inner.advance(n)


@contextmanager
def turn(claims: Claims, name: str) -> Iterator[bool]:
    """Whether this worker holds the lease ``name`` for the block (False: another worker does), renewed by a
    heartbeat meanwhile and given back after."""
    if not claims.take(name):
        yield False
        return
    try:
        with heartbeat(claims):
            yield True
    finally:
        claims.release(name)


@contextmanager
def heartbeat(claims: Claims) -> Iterator[None]:
    """Hold this worker's ``run:`` lease for the block, renewing it (and every claim) every third of the lease."""
    name = RUN_PREFIX + claims.worker
    claims.take(name)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(claims.lease / 3):
            try:
                claims.renew()
            except PhotosearchError as exc:  # a server fault: the next beat tries again; the run sees it too
                log.warning("could not renew this worker's claims: %s", exc)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        stop.set()
        thread.join()
        try:
            # A run that stopped midway (an error, Ctrl-C) may have written a vector and not its row: its lease
            # ends as a dead worker's does, so the next run sweeps. A cancelled run (IndexCancelled) wrote its
            # batch in flight, but is swept too: cheap, and no special case.
            if finished:
                claims.release(name)
            else:
                claims.expire(name)
        except PhotosearchError as exc:
            log.warning("could not release this worker's lease (it expires by itself): %s", exc)
