"""One pass over a plan's work: a bounded decode-ahead window feeding batches to the model, and the Index
written in batches (a model batch of embedded photos; up to STORE_BATCH moves, copies, touched or failed files).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from photosearch.facts import PhotoFacts
from photosearch.indexing.examine import Outcome, decode_workers, examine, location, same_bytes_indexed
from photosearch.indexing.planner import Work
from photosearch.indexing.report import IndexCancelled, IndexReport, NoProgress, Progress
from photosearch.models.protocols import Embedder
from photosearch.pathtext import display
from photosearch.stores.catalog import FileState
from photosearch.stores.index import Index, Location, NewPhoto
from photosearch.stores.schema import PhotoStatus

STORE_BATCH = 2000  # moves, copies, touched or failed files written to the stores in one go
QUEUE_BATCHES = 4  # a shared scan queues photos for other workers this many model batches at a time
log = logging.getLogger(__name__)


class _Gate:
    """Lets the decode threads and a CPU model take turns: ``pause()`` returns once no decode is under way."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._paused = False
        self._active = 0

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._state:
            self._state.wait_for(lambda: not self._paused)
            self._active += 1
        try:
            yield
        finally:
            with self._state:
                self._active -= 1
                self._state.notify_all()

    def pause(self) -> None:
        with self._state:
            self._paused = True
            self._state.wait_for(lambda: self._active == 0)

    def resume(self) -> None:
        with self._state:
            self._paused = False
            self._state.notify_all()


class Run:
    """One pass over the planned work: a bounded decode-ahead window feeding batches to the model.

    Decode threads (read, hash, decode, prepare) feed the main thread, which batches, runs the model and writes
    the stores. With the model on a GPU the two overlap. With the model on the CPU they take turns instead:
    decoding pauses while a batch runs through the model (``gate``), and the model gets every core. Overlapped
    on the same cores, the model's threads wait for each other at every parallel step, so one of them losing
    its core to a decode thread stalls all. On 2 cores (12 MP JPEGs, ViT-B/32 bf16): 34 photos/s taking turns,
    27.5 overlapped, 22-31 overlapped with the model on one thread; decoding + model alone allow 37. The model
    starts only once the photos already being decoded are done (a 12 MP decode takes ~30 ms): started beside
    them, it ran ~10% slower over a whole run (benchmarks/bench_index.py, b against its bound).
    """

    def __init__(
        self, index: Index, embedder: Callable[[], Embedder], report: IndexReport, missing: list[FileState],
        should_stop: Callable[[], bool], batch_size: int, max_pixels: int, *, queue_only: bool = False,
        claimed: bool = False,
    ) -> None:  # fmt: skip
        # Shared stores split a run in two (indexing/shared.py): a scan with ``queue_only`` hashes what needs the
        # model and queues it; a ``claimed`` batch of queued rows is embedded (its rows counted as embedded only:
        # the scan counted them new or changed), and a claimed row whose file vanished meanwhile is removed.
        self.queue_only, self.claimed = queue_only, claimed
        self.should_stop = should_stop
        self.index = index
        self.embedder = embedder
        self.max_pixels = max_pixels
        self.report = report
        self.missing = {state.id: state for state in missing}  # removed at the end unless a move claims them
        self.moves: dict[str, list[FileState]] = {}
        for state in missing:
            if state.status == PhotoStatus.INDEXED and state.content_hash:
                self.moves.setdefault(state.content_hash, []).append(state)
        self.batch: list[Outcome] = []
        self.deferred: list[Outcome] = []  # byte-identical to something in the unflushed batch
        self.embedded_now: dict[str, int] = {}  # digest -> photo id embedded during this run
        self.sources: dict[str, int] = {}  # digest -> an indexed photo with those bytes (looked up once)
        self.writes = _Writes()
        self.batch_size = batch_size  # the embedder's own, once it is loaded
        self.progress: Progress = NoProgress()
        self.gate = _Gate()

    def process(self, work: Iterable[Work], progress: Progress, total: int | None = None) -> None:
        """Process the work; ``total`` for the progress bar when ``work`` is a stream (claims, taken as it goes)."""
        self.progress = progress
        if total is None:
            assert isinstance(work, Sized), "a stream of work comes with its total"
            total = len(work)
        progress.start(total)
        window: deque[Future[Outcome]] = deque()
        pending = iter(work)
        with ThreadPoolExecutor(max_workers=decode_workers(), thread_name_prefix="decode") as pool:
            try:
                # Bounded decode-ahead: at most two batches of prepared images exist at any time.
                for item in pending:
                    self._stop_if_asked()
                    window.append(pool.submit(self._examine, item))
                    if len(window) >= 2 * self.batch_size:
                        self._handle(window.popleft().result())
                while window:
                    self._stop_if_asked()
                    self._handle(window.popleft().result())
                self._flush()
                self._write()
            except BaseException:
                for future in window:
                    future.cancel()
                raise
        self.index.remove(sorted(self.missing))
        self.report.removed += len(self.missing)

    def _stop_if_asked(self) -> None:
        """Between files: on a stop request, write what is in hand and end the run (the rest is redone later)."""
        if self.should_stop():
            self._flush()
            self._write()
            raise IndexCancelled

    def _examine(self, work: Work) -> Outcome:
        with self.gate.working():
            return examine(work, self._reusable, self.embedder, self.max_pixels, decode=not self.queue_only)

    def _reusable(self, digest: str) -> bool:
        """Whether a vector exists for these bytes (called from the decode threads)."""
        return digest in self.moves or digest in self.embedded_now or self._source(digest) is not None

    def _source(self, digest: str) -> int | None:
        if digest not in self.sources:
            found = self.index.indexed_with_hash(digest)
            if found is None:
                return None
            self.sources[digest] = found
        return self.sources[digest]

    def _handle(self, outcome: Outcome) -> None:
        work = outcome.work
        if outcome.vanished:
            if self.claimed and work.state is not None:
                self.missing[work.state.id] = work.state
            self.progress.advance()
            return
        if outcome.queued:
            assert outcome.digest is not None
            self.writes.queued.append((location(work), outcome.digest))
            self.report.queued += 1
            self.report.queued_here[work.file.path] = work.state is None
            self._count_new_or_changed(work.state is None)
        elif outcome.error is not None:
            self._failed(work, outcome.digest, outcome.error)
        elif outcome.pixels is not None:
            if outcome.digest in {o.digest for o in self.batch}:
                self.deferred.append(outcome)
                return
            if outcome.digest in self.embedded_now:
                self._reuse(outcome)
            else:
                self.batch.append(outcome)
                self.batch_size = self.embedder().preferred_batch_size  # loaded: prepare() ran
                if len(self.batch) >= self.batch_size:
                    self._flush()
                return
        elif work.state is not None and same_bytes_indexed(work, outcome.digest):
            self.writes.touched.append((work.state.id, location(work)))  # touched: new mtime, same bytes
            self.report.unchanged += 1
        else:
            self._reuse(outcome)
        self.progress.advance()
        # A shared scan hands its queue over in model-batch-sized steps: other workers are waiting to claim it.
        if self.writes.size() >= (QUEUE_BATCHES * self.batch_size if self.queue_only else STORE_BATCH):
            self._write()

    def _reuse(self, outcome: Outcome) -> None:
        """A move (same bytes vanished elsewhere) keeps its row and vector; a duplicate copies a vector."""
        work, digest = outcome.work, outcome.digest
        assert digest is not None
        candidates = self.moves.get(digest)
        if work.state is None and candidates:
            old = candidates.pop()
            del self.missing[old.id]
            self.writes.moves.append((old, location(work)))
            self.report.moved += 1
            return
        source_id = self.embedded_now.get(digest) or self._source(digest)
        if source_id is None:  # its twin vanished meanwhile: decode after all
            self._decode_now(outcome)
            return
        self.writes.copies.append((location(work), source_id, work.state is None))

    def _decode_now(self, outcome: Outcome) -> None:
        redo = examine(outcome.work, lambda _digest: False, self.embedder, self.max_pixels)
        if redo.pixels is None:
            self._failed(outcome.work, redo.digest, redo.error or "vanished")
            return
        self.batch.append(redo)
        self._flush()

    def _flush(self) -> None:
        """Embed the batch and write it. Copies wait for no batch: one whose source is re-embedded in this batch
        (the file changed) must copy the vector of the bytes it has, so the copies go first."""
        if not self.batch:
            return
        self._write()
        batch, self.batch = self.batch, []
        photos = [NewPhoto(location(o.work), o.digest or "", _facts(o)) for o in batch]
        ids = self.index.add(photos, lambda: self._embed(batch))
        changed = set(ids)
        self.sources = {digest: i for digest, i in self.sources.items() if i not in changed}
        for outcome, photo_id in zip(batch, ids, strict=True):
            assert outcome.digest is not None
            self.embedded_now[outcome.digest] = photo_id
            self._count_new_or_changed(outcome.work.state is None)
        self.report.embedded += len(batch)
        self.progress.advance(len(batch))
        deferred, self.deferred = self.deferred, []
        for outcome in deferred:
            self._reuse(outcome)
            self.progress.advance()

    def _embed(self, batch: list[Outcome]) -> np.ndarray:
        embedder = self.embedder()
        if embedder.on_cpu:
            self.gate.pause()  # decode threads finish the photo in hand, then wait: the model gets every core
        try:
            return embedder.embed_prepared([o.pixels for o in batch if o.pixels is not None])
        finally:
            self.gate.resume()

    def _write(self) -> None:
        """Hand the moves, copies, touched and failed files gathered so far to the Index, a batch each."""
        writes, self.writes = self.writes, _Writes()
        self.index.move(writes.moves)
        copied = self.index.copy([(loc, source) for loc, source, _ in writes.copies])
        for _, _, new in writes.copies[: len(copied)]:  # only a source gone meanwhile skips some (the next run)
            self._count_new_or_changed(new)
        self.report.reused += len(copied)
        self.index.touch(writes.touched)
        self.index.fail(writes.failures)
        self.index.enqueue(writes.queued)

    def _failed(self, work: Work, digest: str | None, error: str) -> None:
        log.info("failed: %s: %s", display(work.file.path), display(error))
        self.writes.failures.append((location(work), digest, error))
        self.report.failed += 1
        queued_new = self.report.queued_here.pop(work.file.path, None) if self.claimed else None
        if queued_new is not None:  # this run's scan counted it new or changed: it is a failure instead
            self.report.new -= queued_new
            self.report.changed -= not queued_new

    def _count_new_or_changed(self, new: bool) -> None:
        if self.claimed:
            return
        if new:
            self.report.new += 1
        else:
            self.report.changed += 1


@dataclass
class _Writes:
    """What a run has gathered for the stores since it last wrote."""

    moves: list[tuple[FileState, Location]] = field(default_factory=list)
    copies: list[tuple[Location, int, bool]] = field(default_factory=list)  # (where, source id, a new path)
    touched: list[tuple[int, Location]] = field(default_factory=list)
    failures: list[tuple[Location, str | None, str]] = field(default_factory=list)
    queued: list[tuple[Location, str]] = field(default_factory=list)  # (where, content hash): for any worker

    def size(self) -> int:
        return len(self.moves) + len(self.copies) + len(self.touched) + len(self.failures) + len(self.queued)


def _facts(outcome: Outcome) -> PhotoFacts:
    """The facts as the catalog stores them: the time taken naive (local)."""
    facts = outcome.facts
    assert facts is not None
    return replace(facts, taken_at=facts.taken_at.replace(tzinfo=None)) if facts.taken_at else facts
