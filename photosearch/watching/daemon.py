"""`photosearch watch`: keep the index current while the library changes.

    start: take the writer lock -> catch up on everything that changed while stopped (a full index run)
    then:  watcher events -> intake (memory, bounded) -> work queue (catalog table, debounced, durable)
           -> drained when batch_size paths are due or the oldest has waited batch_wait seconds, a chunk of
              paths per run and the next chunk straight after, until nothing due is left
           -> the indexer, on just those paths (moves keep their vectors, see planner.py)

A file still being written (modified less than ``settle`` seconds ago) is left out of a run, also of the
catch-up, and queued again, due the moment its mtime is ``settle`` seconds old. The loop sleeps until the queue
next has a batch ready (or an event arrives), never a fixed period.
SIGTERM/SIGINT set a stop flag that the indexer polls between files (and the planner while it scans): the model
batch in flight is written and the process exits. A kill -9 at any moment is safe: the queue and the catalog
are durable, the run journal makes the next start reconcile the stores, and the catch-up scan finds whatever
the queue never saw.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from photosearch.errors import ModelMismatchError, PhotosearchError
from photosearch.indexing.indexer import IndexCancelled
from photosearch.indexing.planner import Scope
from photosearch.indexing.scanner import ScannedFile
from photosearch.library import Library
from photosearch.locking import DAEMON_ROLE, current_holder
from photosearch.watching.watcher import Change, Watcher

log = logging.getLogger(__name__)
IDLE_CHECK = 5.0  # seconds between looks for library folders added by `photosearch index` meanwhile
# Paths per run, in model batches: enough that a run's fixed costs (journal, counts, roots) vanish beside the
# work, few enough that events are moved from memory to the durable queue, and progress shows, every few seconds.
CHUNK_BATCHES = 8
MIN_SLEEP = 0.02  # s: the loop never spins, whatever the clock says
SETTLE_MARGIN = 0.05  # s past the settle time, so the re-check finds the file settled, not just short of it
_FAILED = object()  # what _guard returns for a step that failed


class Daemon:
    def __init__(self, library: Library, stop: threading.Event | None = None) -> None:
        self.library = library
        self.config = library.config.watch
        self.queue = library.queue
        self._record = library.daemon_record
        self.stop_event = stop or threading.Event()
        self._wake = threading.Event()
        self._intake: dict[Path, Change] = {}  # de-duplicated by path: bounded by distinct paths
        self._overflowed = False
        self._intake_lock = threading.Lock()
        self._watcher: Watcher | None = None
        self._reindex_requested = threading.Event()
        self._refused = False  # the configured model is not the index's: nothing is indexed until a reindex
        self._chunk = max(self.config.batch_size, CHUNK_BATCHES * library.config.model.batch)

    def request_reindex(self) -> None:
        """Rebuild every vector with the configured model, in the daemon's own loop (it holds the lock)."""
        self._reindex_requested.set()
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------------
    def run(self) -> None:
        with self.library.writing(DAEMON_ROLE):
            self._install_signal_handlers()
            self._record.set_started(datetime.now().replace(microsecond=0))
            try:
                self._serve()
            finally:
                if self._watcher is not None:
                    self._watcher.stop()
                log.info("stopped")

    def _serve(self) -> None:
        roots = [r.path for r in self.library.roots()]
        # Watch first, then catch up: a change during the catch-up is queued rather than missed.
        self._watcher = Watcher(roots, self._on_change, self.config, self.library.config.index)
        self._watcher.start()
        log.info("watching %d folder(s) with the %s observer", len(roots), self._watcher.kind)
        self._guard(self._catch_up)
        known = set(roots)
        next_root_check = 0.0
        while not self.stop_event.is_set():
            self._flush_intake()
            if time.monotonic() >= next_root_check:
                known = self._follow_new_roots(known)
                next_root_check = time.monotonic() + IDLE_CHECK
            if self._reindex_requested.is_set():
                self._reindex_requested.clear()
                self._reindex()
            drained = False if self._refused else self._guard(self._drain_if_ready)
            if drained is True:
                continue  # more may be due: the next chunk at once (events are flushed first, above)
            if drained is False and not self._refused:
                self._guard(self._help_shared_queue)
            # After a failure, a pause: retrying a persistent error (a full disk) at once would spin and flood the log.
            self._wake.wait(timeout=IDLE_CHECK if drained is _FAILED else self._sleep_time())
            self._wake.clear()

    def _reindex(self) -> None:
        """A reindex asked for (POST /api/reindex): the answer to a model switch, so its refusal is cleared."""
        if self._refused:
            self._record.clear_error()
        if self._guard(lambda: self.library.reindex(should_stop=self.stop_event.is_set)) is not _FAILED:
            self._refused = False

    def _help_shared_queue(self) -> None:
        """Shared stores: while idle, embed what other machines' runs queued (one pass; nothing to do is cheap)."""
        report = self.library.embed_queued(should_stop=self.stop_event.is_set)
        if report is not None and (report.embedded or report.reused):
            log.info("embedded %d queued photos of other workers (%d reused)", report.embedded, report.reused)

    def _catch_up(self) -> None:
        """Index whatever changed while the daemon was not running."""
        if self.library.roots():
            started = time.time()
            try:
                report = self.library.index(should_stop=self.stop_event.is_set, settle=self.config.settle)
            except ModelMismatchError as exc:  # model.name changed: wait for a reindex, queueing what changes
                self._refused = True
                self._record_error(str(exc))
                return
            self.queue.finish((), self._settled_at(report.deferred), first_seen=started)
            log.info(
                "caught up: %d new, %d changed, %d removed, %d still being written",
                report.new, report.changed, report.removed, len(report.deferred),
            )  # fmt: skip

    def _settled_at(self, deferred: list[ScannedFile]) -> list[tuple[Path, float]]:
        """Each deferred file with the moment its mtime will be ``settle`` seconds old: it is looked at again then,
        not after a fixed wait. An mtime in the future (a skewed clock) counts as now, so it is retried soon."""
        now, settle = time.time(), self.config.settle
        return [(f.path, min(f.mtime_ns / 1e9, now) + settle + SETTLE_MARGIN) for f in deferred]

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests run the daemon in a thread and stop it through stop_event

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the batch in flight, then exiting", signal.Signals(signum).name)
            self.stop_event.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _guard(self, step: Callable[[], object]) -> object:
        """Run one step and return what it returned; a failure is logged and kept for `status`, and the daemon
        carries on (then _FAILED is returned)."""
        try:
            return step()
        except IndexCancelled:
            return None
        except PhotosearchError as exc:
            self._record_error(str(exc))
            if exc.exit_code in (65, 69, 75, 78):  # model mismatch/unavailable, catalog too new, bad config
                raise
        except Exception as exc:
            log.exception("indexing step failed")
            self._record_error(f"{type(exc).__name__}: {exc}")
        return _FAILED

    def _record_error(self, message: str) -> None:
        log.error("%s", message)
        try:
            self._record.record_error(datetime.now().replace(microsecond=0), message)
        except PhotosearchError as exc:  # a full disk fails this write too: the log has it, and the daemon retries
            log.error("could not record the error for `status`: %s", exc)

    # -- events ----------------------------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        """Called on the watcher's thread: only note the path and wake the main loop."""
        with self._intake_lock:
            if len(self._intake) < self.config.max_tracked_paths:
                earlier = self._intake.get(change.path)
                if earlier is not None and earlier.moved_from and not change.moved_from:
                    change = Change(change.path, earlier.moved_from, change.is_dir or earlier.is_dir, change.deleted)
                source = self._intake.pop(change.moved_from, None) if change.moved_from else None
                if source is not None and source.moved_from:  # a -> b -> c: c came from a (see WorkQueue.put)
                    change = Change(change.path, source.moved_from, change.is_dir, change.deleted)
                self._intake[change.path] = change
            else:
                self._overflowed = True  # too many to track one by one: rescan the roots instead
        self._wake.set()

    def _flush_intake(self) -> None:
        """Move the changes noted in memory to the durable queue. Only memory is bounded (max_tracked_paths
        between two flushes, which come between two chunks): the queue is on disk and read a chunk at a time."""
        with self._intake_lock:
            changes, self._intake = list(self._intake.values()), {}
            overflowed, self._overflowed = self._overflowed, False
        if overflowed:
            log.warning(
                "more than %d changes at once: rescanning every library folder instead of tracking them one by one",
                self.config.max_tracked_paths,
            )
            self.queue.clear()  # the rescan covers every queued path
            changes = [Change(r.path, is_dir=True) for r in self.library.roots()]
        if changes:
            self.queue.put([(c.path, c.moved_from, c.is_dir) for c in changes], self.config.debounce)

    def _follow_new_roots(self, known: set[Path]) -> set[Path]:
        current = {r.path for r in self.library.roots()}
        assert self._watcher is not None
        for root in sorted(current - known):
            log.info("new library folder %s: watching and indexing it", root)
            self._watcher.add_root(root)
            self.queue.put([(root, None, True)], debounce=0)
        return current

    # -- draining --------------------------------------------------------------------------------------
    def _sleep_time(self) -> float:
        """Until the queue next has a batch ready (see _drain_if_ready); an event wakes the loop sooner."""
        ready = self.queue.ready_at(self.config.batch_size, self.config.batch_wait)
        if ready is None:
            return IDLE_CHECK
        return min(IDLE_CHECK, max(MIN_SLEEP, ready - time.time()))

    def _drain_if_ready(self) -> bool:
        """Index one chunk of the due paths, once batch_size are due or the oldest has waited batch_wait; True
        when it ran (more may be due)."""
        now = time.time()
        due = self.queue.due(now, limit=self._chunk)
        if not due:
            return False
        first_seen = min(entry.first_seen for entry in due)
        if len(due) < self.config.batch_size and now - first_seen < self.config.batch_wait:
            return False
        scope = Scope([e.path for e in due], {e.path: e.moved_from for e in due if e.moved_from})
        report = self.library.index_changes(scope, should_stop=self.stop_event.is_set, settle=self.config.settle)
        # Deferred files keep the first_seen of this chunk: once settled they are due, and have waited long enough.
        self.queue.finish(due, self._settled_at(report.deferred), first_seen)
        log.info(
            "indexed changes: %d new, %d changed, %d moved, %d removed, %d failed, %d still being written; "
            "%d waiting", report.new, report.changed, report.moved, report.removed, report.failed,
            len(report.deferred), self.queue.depth(),
        )  # fmt: skip
        return True


def daemon_state(library: Library) -> dict[str, object]:
    """What `status` shows about the daemon: running (pid, since), queue depth, recent work, last error."""
    holder = current_holder(library.config.data_dir)
    running = holder is not None and holder.role == DAEMON_ROLE
    now, record = datetime.now(), library.daemon_record
    last_error = record.last_error()
    return {
        "running": running,
        "pid": holder.pid if running and holder else None,
        "since": holder.since.isoformat() if running and holder else None,
        "queue": library.queue.depth(),
        "indexed_last_minute": record.indexed_since(now - timedelta(minutes=1)),
        "indexed_last_hour": record.indexed_since(now - timedelta(hours=1)),
        "last_error": last_error.to_dict() if last_error else None,
    }
