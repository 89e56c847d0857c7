"""The indexer: the only module that knows the order of the pipeline.

    scan (scanner) -> diff against the catalog -> read + hash -> reuse a vector, or decode (imaging) and
    prepare (embedder.prepare: resize + crop) -> batch embed (embedder) -> write Chroma, then the catalog

Write order, which keeps the two stores consistent through any interruption:
  * add/update: catalog row set to ``pending`` (committed) -> vector upserted into Chroma under the row id ->
    row set to ``indexed``. A crash in between leaves a pending row, which the next run processes again;
    the upsert is idempotent, so no vector is ever duplicated.
  * remove, or a file turned unreadable: the catalog row is deleted (or set to ``failed``) first -> then its
    vector is deleted. Searches only return vectors whose row is ``indexed``, so a vector left behind by a crash
    is never shown.
  * the run journal (meta ``run_state``) is set before the first write and cleared after the last. A run that
    finds it set, or finds the two stores' counts disagreeing, reconciles first: vectors without an indexed row
    are deleted, indexed rows without a vector go back to pending. After that the stores agree exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from photosearch.config import Config
from photosearch.errors import ImageError
from photosearch.indexing.imaging import PhotoFacts, decode_photo
from photosearch.indexing.planner import Scope, Work, folder_of, make_plan
from photosearch.indexing.scanner import ScannedFile, ScanProblem
from photosearch.models.embedder import Embedder
from photosearch.pathtext import display
from photosearch.stores.catalog import FACT_FIELDS, Catalog, FileState, RootInfo
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore, folder_metadata

if TYPE_CHECKING:
    from photosearch.indexing.roots import MovedRoot  # roots.py uses the run journal: imported for the type only

JOURNAL_KEY = "run_state"
DECODE_MARGIN = 1.5  # JPEGs decode at a reduced scale down to this times the model's input side
log = logging.getLogger(__name__)


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class IndexReport:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    embedded: int = 0  # images that went through the model
    reused: int = 0  # files whose vector was copied from byte-identical content (duplicates)
    missing_roots: list[Path] = field(default_factory=list)
    moved_roots: list[MovedRoot] = field(default_factory=list)  # missing roots whose photos turned up elsewhere
    reconciled: bool = False
    seconds: float = 0.0
    handed_to_pid: int | None = None  # a running daemon took the work over
    deferred: list[ScannedFile] = field(default_factory=list)  # still being written: left for a later run

    def summary(self) -> str:
        """The report as one short log line: counts only, however many paths a run covered or deferred."""
        return (
            f"new={self.new}, changed={self.changed}, unchanged={self.unchanged}, moved={self.moved}, "
            f"removed={self.removed}, failed={self.failed}, embedded={self.embedded}, reused={self.reused}, "
            f"deferred={len(self.deferred)}, missing_roots={len(self.missing_roots)}, reconciled={self.reconciled}, "
            f"seconds={self.seconds:.2f}"
        )


class IndexCancelled(Exception):
    """The run was asked to stop (SIGTERM to the daemon); what was written so far is kept."""


@dataclass(frozen=True)
class Outcome:
    work: Work
    digest: str | None = None
    facts: PhotoFacts | None = None  # decoded: its prepared pixels go to the model
    pixels: np.ndarray | None = None  # the model's input (embedder.prepare), ~150 KB; the decoded image is gone
    error: str | None = None  # could not be read or decoded
    vanished: bool = False  # deleted between the scan and the read


def _location(work: Work) -> dict[str, Any]:
    return {
        "path": str(work.file.path), "root_id": work.root.id, "folder": work.folder,
        "size": work.file.size, "mtime_ns": work.file.mtime_ns,
    }  # fmt: skip


def _metadata(root_id: int, folder: str, taken_at: Any) -> dict[str, Any]:
    meta = folder_metadata(root_id, folder)
    if taken_at is not None:
        meta["taken_at"] = int(taken_at.timestamp())
    return meta


class Indexer:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        store: VectorStore,
        embedder: Callable[[], Embedder],
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._store = store
        self._get_embedder = embedder  # loaded on first use: a run with nothing new never loads the model

    def run(
        self,
        roots: Sequence[RootInfo],
        progress: Progress | None = None,
        scope: Scope | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        settle: float | None = None,
    ) -> IndexReport:
        """Index whole roots, or only the changed paths of ``scope`` inside them.

        ``should_stop`` is polled between files; when it turns true the run raises IndexCancelled after the
        batch in flight is written, leaving the journal set so the next run checks the stores. With ``settle``,
        files modified less than that many seconds ago are left out (report.deferred): they may be half written.
        """
        started = time.monotonic()
        report = IndexReport()
        report.reconciled = self.reconcile_if_needed()
        self._catalog.set_meta({JOURNAL_KEY: f"running pid={os.getpid()}"})
        settled_before = None if settle is None else time.time_ns() - int(settle * 1e9)

        def interrupt() -> None:
            if should_stop():
                raise IndexCancelled

        plan = make_plan(self._catalog, self._config.index, roots, scope, settled_before, interrupt)
        report.unchanged, report.missing_roots, report.deferred = plan.unchanged, plan.missing_roots, plan.deferred
        for root, problem in plan.problems:
            self._record_scan_problem(root, problem, report)
        self._apply_renames(plan.renames, report)
        _Run(self, report, plan.missing, should_stop).process(plan.work, progress or _NoProgress())
        self._catalog.set_meta({JOURNAL_KEY: None})
        report.seconds = time.monotonic() - started
        log.info("index run: %s", report.summary())
        if report.deferred:  # a copied folder defers thousands: a few examples, and only when debugging
            examples = ", ".join(display(f.path) for f in report.deferred[:3])
            log.debug("still being written, left for later: %s%s", examples, ", ..." * (len(report.deferred) > 3))
        return report

    # -- consistency -----------------------------------------------------------------------------------
    def reconcile_if_needed(self) -> bool:
        indexed_count = self._catalog.counts()[PhotoStatus.INDEXED.value]
        if self._catalog.get_meta(JOURNAL_KEY) is None and self._store.count() == indexed_count:
            return False
        self.reconcile()
        return True

    def reconcile(self) -> None:
        """Make Chroma hold exactly one vector per indexed row (see the module docstring)."""
        indexed = self._catalog.ids_with_status(PhotoStatus.INDEXED)
        stored = self._store.all_ids()
        log.warning(
            "the last run did not finish: reconciling (%d orphan vectors, %d rows without a vector)",
            len(stored - indexed),
            len(indexed - stored),
        )
        self._store.delete(sorted(stored - indexed))
        self._catalog.set_status(sorted(indexed - stored), PhotoStatus.PENDING)

    # -- plan results --------------------------------------------------------------------------------
    def _apply_renames(self, renames: Sequence[tuple[FileState, Work]], report: IndexReport) -> None:
        """Hinted renames keep their rows and vectors. Chroma's metadata first: if a crash stops us before
        the catalog follows, the next run finds the old row missing and the file new, and redoes the move."""
        if not renames:
            return
        records = self._catalog.records(state.id for state, _ in renames)
        ids = [state.id for state, _ in renames]
        metas = [_metadata(w.root.id, w.folder, records[s.id].taken_at) for s, w in renames]
        self._store.update_metadata(ids, metas)
        self._catalog.move_many([(state.id, _location(work)) for state, work in renames])
        report.moved += len(renames)

    def _record_scan_problem(self, root: RootInfo, problem: ScanProblem, report: IndexReport) -> None:
        row = {"path": str(problem.path), "root_id": root.id, "folder": folder_of(problem.path, root)}
        self.write_failed({**row, "size": 0, "mtime_ns": 0}, problem.reason)
        report.failed += 1

    def write_failed(self, row: dict[str, Any], reason: str) -> None:
        """Row first, then the vector: a failed row must not keep a (now wrong) vector in search results."""
        log.info("failed: %s: %s", display(row["path"]), display(reason))  # one log line, whatever the name
        existing = self._catalog.by_path(Path(row["path"]))
        (photo_id,) = self._catalog.upsert_files(
            [{**row, "status": PhotoStatus.FAILED, "error": reason, "content_hash": None}]
        )
        if existing is not None and existing.status == PhotoStatus.INDEXED:
            self._store.delete([photo_id])

    # -- the per-file worker (runs in threads) ---------------------------------------------------------
    def examine(self, work: Work, moved_hashes: frozenset[str]) -> Outcome:
        """Read and hash a file; decode and prepare it only when no existing vector can be reused for its bytes.

        All but the catalog lookup releases the GIL. The first photo to decode loads the model (once, locked)."""
        try:
            data = work.file.path.read_bytes()
        except FileNotFoundError:
            return Outcome(work, vanished=True)
        except OSError as exc:
            return Outcome(work, error=f"cannot read file: {exc.strerror or exc}")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        state = work.state
        if state is not None and state.status == PhotoStatus.INDEXED and state.content_hash == digest:
            return Outcome(work, digest)  # touched, same bytes: keep the vector
        if digest in moved_hashes or self._catalog.indexed_with_hash(digest) is not None:
            return Outcome(work, digest)  # a move or a duplicate: the model is not needed
        embedder = self._get_embedder()
        try:
            # JPEGs decode at the reduced DCT scale that keeps the shorter side >= 1.5x the model's input side
            # (1/8 of a 12 MP photo: 375 px for CLIP's 224). That halves the decode; the entropy decoding left
            # (~25 ms for 4 MB) is the floor. The margin leaves the anti-aliasing to the final bicubic resize:
            # with the DCT scaling alone doing it (decodes just above 224 px), photos differ from a full decode
            # by 2-5 levels on average, against 0.2 with it (exif samples; see benchmarks/bench_index.py).
            min_side = math.ceil(DECODE_MARGIN * embedder.input_side)
            photo = decode_photo(data, name=str(work.file.path), max_pixels=self._config.index.max_image_pixels,
                                 min_side=min_side)  # fmt: skip
        except ImageError as exc:
            return Outcome(work, digest, error=exc.reason)
        pixels = embedder.prepare(photo.image, (photo.facts.width, photo.facts.height))
        return Outcome(work, digest, facts=photo.facts, pixels=pixels)


def _decode_workers() -> int:
    """One decode thread per CPU this process may use (capped): they share the cores with the model."""
    try:
        cpus = len(os.sched_getaffinity(0))  # honours taskset and cgroup cpusets, unlike os.cpu_count()
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))


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


class _Run:
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
        self, indexer: Indexer, report: IndexReport, missing: list[FileState], should_stop: Callable[[], bool]
    ) -> None:
        self.should_stop = should_stop
        self.ix = indexer
        self.catalog = indexer._catalog
        self.store = indexer._store
        self.report = report
        self.missing = {state.id: state for state in missing}  # removed at the end unless a move claims them
        self.moves: dict[str, list[FileState]] = {}
        for state in missing:
            if state.status == PhotoStatus.INDEXED and state.content_hash:
                self.moves.setdefault(state.content_hash, []).append(state)
        self.batch: list[Outcome] = []
        self.deferred: list[Outcome] = []  # byte-identical to something in the unflushed batch
        self.embedded_now: dict[str, int] = {}  # digest -> photo id embedded during this run
        self.batch_size = indexer._config.model.batch_size  # the embedder's own, once it is loaded
        self.progress: Progress = _NoProgress()
        self.gate = _Gate()

    def process(self, work: list[Work], progress: Progress) -> None:
        self.progress = progress
        progress.start(len(work))
        moved_hashes = frozenset(self.moves)
        window: deque[Future[Outcome]] = deque()
        pending = iter(work)
        with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="decode") as pool:
            try:
                # Bounded decode-ahead: at most two batches of prepared images exist at any time.
                for item in pending:
                    self._stop_if_asked()
                    window.append(pool.submit(self._examine, item, moved_hashes))
                    if len(window) >= 2 * self.batch_size:
                        self._handle(window.popleft().result())
                while window:
                    self._stop_if_asked()
                    self._handle(window.popleft().result())
                self._flush()
            except BaseException:
                for future in window:
                    future.cancel()
                raise
        self._remove_missing()

    def _stop_if_asked(self) -> None:
        """Between files: on a stop request, write the batch in hand and end the run (the rest is redone later)."""
        if self.should_stop():
            self._flush()
            raise IndexCancelled

    def _examine(self, work: Work, moved_hashes: frozenset[str]) -> Outcome:
        with self.gate.working():
            return self.ix.examine(work, moved_hashes)

    def _handle(self, outcome: Outcome) -> None:
        work = outcome.work
        if outcome.vanished:
            self.progress.advance()
            return
        if outcome.error is not None:
            self.ix.write_failed(self._row(work, outcome.digest), outcome.error)
            self.report.failed += 1
        elif outcome.pixels is not None:
            if outcome.digest in {o.digest for o in self.batch}:
                self.deferred.append(outcome)
                return
            if outcome.digest in self.embedded_now:
                self._reuse(outcome)
            else:
                self.batch.append(outcome)
                self.batch_size = self.ix._get_embedder().preferred_batch_size  # loaded: prepare() ran
                if len(self.batch) >= self.batch_size:
                    self._flush()
                return
        elif work.state is not None and work.state.content_hash == outcome.digest:
            self.catalog.upsert_files([self._row(work, outcome.digest)])  # touched: new mtime, same bytes
            self.report.unchanged += 1
        else:
            self._reuse(outcome)
        self.progress.advance()

    def _row(self, work: Work, digest: str | None) -> dict[str, Any]:
        return {**_location(work), "content_hash": digest}

    def _count_new_or_changed(self, work: Work) -> None:
        if work.state is None:
            self.report.new += 1
        else:
            self.report.changed += 1

    def _reuse(self, outcome: Outcome) -> None:
        """A move (same bytes vanished elsewhere) keeps its row and vector; a duplicate copies a vector."""
        work, digest = outcome.work, outcome.digest
        assert digest is not None
        candidates = self.moves.get(digest)
        if work.state is None and candidates:
            old = candidates.pop()
            del self.missing[old.id]
            record = self.catalog.get(old.id)
            self.store.update_metadata([old.id], [_metadata(work.root.id, work.folder, record.taken_at)])
            self.catalog.move_many([(old.id, _location(work))])
            self.report.moved += 1
            return
        source_id = self.embedded_now.get(digest) or self.catalog.indexed_with_hash(digest)
        if source_id is None:  # its twin vanished meanwhile: decode after all
            self._decode_now(outcome)
            return
        source = self.catalog.get(source_id)
        facts = {name: getattr(source, name) for name in FACT_FIELDS}
        row = {**self._row(work, digest), **facts, "status": PhotoStatus.PENDING, "error": None}
        (photo_id,) = self.catalog.upsert_files([row])
        vectors = self.store.vectors([source_id])
        self.store.upsert([photo_id], vectors[source_id][None, :], [
            _metadata(work.root.id, work.folder, source.taken_at)
        ])  # fmt: skip
        self.catalog.set_indexed([photo_id])
        self.report.reused += 1
        self._count_new_or_changed(work)

    def _decode_now(self, outcome: Outcome) -> None:
        redo = self.ix.examine(outcome.work, frozenset())
        if redo.pixels is None:
            self.ix.write_failed(self._row(outcome.work, redo.digest), redo.error or "vanished")
            self.report.failed += 1
            return
        self.batch.append(redo)
        self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        rows, metas = [], []
        for outcome in batch:
            assert outcome.facts is not None
            facts = outcome.facts
            taken_at = facts.taken_at.replace(tzinfo=None) if facts.taken_at else None
            fact_values = {name: getattr(facts, name) for name in FACT_FIELDS} | {"taken_at": taken_at}
            rows.append({**self._row(outcome.work, outcome.digest), **fact_values,
                         "status": PhotoStatus.PENDING, "error": None})  # fmt: skip
            metas.append(_metadata(outcome.work.root.id, outcome.work.folder, taken_at))
        ids = self.catalog.upsert_files(rows)
        embedder = self.ix._get_embedder()
        if embedder.on_cpu:
            self.gate.pause()  # decode threads finish the photo in hand, then wait: the model gets every core
        try:
            vectors = embedder.embed_prepared([o.pixels for o in batch if o.pixels is not None])
        finally:
            self.gate.resume()
        self.store.upsert(ids, vectors, metas)
        self.catalog.set_indexed(ids)
        for outcome, photo_id in zip(batch, ids, strict=True):
            assert outcome.digest is not None
            self.embedded_now[outcome.digest] = photo_id
            self._count_new_or_changed(outcome.work)
        self.report.embedded += len(batch)
        self.progress.advance(len(batch))
        deferred, self.deferred = self.deferred, []
        for outcome in deferred:
            self._reuse(outcome)
            self.progress.advance()

    def _remove_missing(self) -> None:
        ids = sorted(self.missing)
        self.catalog.delete(ids)
        self.store.delete(ids)
        self.report.removed += len(ids)
