"""A reindex: every indexed photo's bytes embedded again, with the configured model, beside the current index.

    hashes the new collection lacks (stores/rebuild.py) -> read + decode + prepare one file of each (examine)
    -> batch embed -> the new collection -> when none are left: the switch, in one step

One file per distinct content: byte-identical photos share a vector. A file that no longer has the bytes the
catalog recorded (edited since the last run) or that cannot be read now is handed back to the index: its rows
go back to pending or failed, as a normal run would have it, so the reindex can still complete. Stopped at any
point, the vectors written so far stay in the new collection and the next reindex carries on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from photosearch.indexing.examine import Outcome, decode_workers, examine, location
from photosearch.indexing.planner import Work
from photosearch.indexing.report import IndexCancelled, NoProgress, Progress, ReindexReport
from photosearch.indexing.scanner import ScannedFile
from photosearch.models.protocols import Embedder
from photosearch.pathtext import display
from photosearch.stores.catalog import PhotoRecord, RootInfo
from photosearch.stores.index import Index
from photosearch.stores.rebuild import Rebuild

log = logging.getLogger(__name__)


class Reindexer:
    def __init__(
        self, index: Index, rebuild: Rebuild, embedder: Callable[[], Embedder], roots: Sequence[RootInfo],
        max_pixels: int, should_stop: Callable[[], bool],
    ) -> None:  # fmt: skip
        self._index = index
        self._rebuild = rebuild
        self._embedder = embedder
        self._roots = {root.id: root for root in roots}
        self._max_pixels = max_pixels
        self._should_stop = should_stop

    def run(self, progress: Progress | None = None) -> ReindexReport:
        report = ReindexReport()
        todo = [(h, rows) for h, rows in self._rebuild.todo().items() if rows]
        progress = progress or NoProgress()
        progress.start(len(todo))
        log.info("reindex to %s: %d distinct photos to embed", self._rebuild.generation.model.describe(), len(todo))
        batch = self._embedder().preferred_batch_size
        with ThreadPoolExecutor(max_workers=decode_workers(), thread_name_prefix="reindex-decode") as pool:
            for start in range(0, len(todo), batch):
                if self._should_stop():
                    raise IndexCancelled
                chunk = todo[start : start + batch]
                outcomes = list(pool.map(lambda item: self._first_usable(*item), chunk))
                self._write(chunk, outcomes, report)
                progress.advance(len(chunk))
        report.complete = self._rebuild.finish()
        return report

    def _first_usable(self, digest: str, rows: list[PhotoRecord]) -> Outcome | None:
        """The pixels of the first of these files that still has the recorded bytes (decoded in a pool thread)."""
        for record in rows:
            root = self._roots.get(record.root_id)
            if root is None:
                continue
            work = Work(ScannedFile(record.path, record.size, record.mtime_ns), root, None)
            outcome = examine(work, lambda _digest: False, self._embedder, self._max_pixels)
            if outcome.digest == digest and outcome.pixels is not None:
                return outcome
        return None

    def _write(
        self, chunk: Sequence[tuple[str, list[PhotoRecord]]], outcomes: Sequence[Outcome | None], report: ReindexReport
    ) -> None:
        done = [(digest, o) for (digest, _), o in zip(chunk, outcomes, strict=True) if o is not None]
        if done:
            vectors = self._embedder().embed_prepared([o.pixels for _, o in done if o.pixels is not None])
            self._rebuild.add([digest for digest, _ in done], vectors)
            report.embedded += len(done)
        for (_, rows), outcome in zip(chunk, outcomes, strict=True):
            if outcome is None:
                self._hand_back(rows, report)

    def _hand_back(self, rows: list[PhotoRecord], report: ReindexReport) -> None:
        """No file has the recorded bytes any more: the changed ones go back to pending, the unreadable fail."""
        changed, unreadable = [], []
        for record in rows:
            root = self._roots.get(record.root_id)
            outcome = None
            if root is not None:
                work = Work(ScannedFile(record.path, record.size, record.mtime_ns), root, None)
                outcome = examine(work, lambda _digest: True, self._embedder, self._max_pixels)  # read + hash only
            if outcome is None or outcome.vanished or outcome.digest is not None:
                changed.append(record.id)  # gone, edited, or in a missing root: a normal run sorts it out
            else:
                unreadable.append((location(work), record.content_hash, outcome.error or "cannot be read"))
                log.info("failed: %s: %s", display(record.path), display(outcome.error or ""))
        self._index.requeue(changed)
        self._index.fail(unreadable)
        report.requeued += len(changed)
        report.failed += len(unreadable)
