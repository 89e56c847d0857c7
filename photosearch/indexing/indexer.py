"""The indexer: the only module that knows the order of the pipeline.

    scan (scanner) -> plan against the catalog (planner) -> read + hash -> reuse a vector, or decode (imaging)
    and prepare (embedder.prepare: resize + crop) (examine) -> batch embed (embedder) (pipeline) -> the Index

The Index (stores/index.py) writes both stores in an order that survives any interruption; the pipeline hands
it batches, never one photo at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from photosearch.config import Config
from photosearch.indexing.examine import location
from photosearch.indexing.pipeline import Run
from photosearch.indexing.planner import Scope, Work, folder_of, make_plan
from photosearch.indexing.report import IndexCancelled, IndexReport, NoProgress, Progress
from photosearch.indexing.scanner import ScanProblem
from photosearch.models.protocols import Embedder
from photosearch.pathtext import display
from photosearch.stores.catalog import FileState, RootInfo
from photosearch.stores.index import JOURNAL_KEY, Index, Location

__all__ = ["JOURNAL_KEY", "IndexCancelled", "IndexReport", "Indexer", "Progress"]
log = logging.getLogger(__name__)


class Indexer:
    def __init__(self, config: Config, index: Index, embedder: Callable[[], Embedder]) -> None:
        self._config = config
        self._index = index
        self._catalog = index.catalog  # the planner reads it
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
        report.reconciled = self._index.reconcile_if_needed()
        with self._index.journal("running"):
            self._run(roots, report, progress, scope, should_stop, settle)
        self._index.counts_agree()  # noted while the store is open, so the next run with nothing to do needs no Chroma
        report.seconds = time.monotonic() - started
        log.info("index run: %s", report.summary())
        if report.deferred:  # a copied folder defers thousands: a few examples, and only when debugging
            examples = ", ".join(display(f.path) for f in report.deferred[:3])
            log.debug("still being written, left for later: %s%s", examples, ", ..." * (len(report.deferred) > 3))
        return report

    def _run(
        self, roots: Sequence[RootInfo], report: IndexReport, progress: Progress | None, scope: Scope | None,
        should_stop: Callable[[], bool], settle: float | None,
    ) -> None:  # fmt: skip
        settled_before = None if settle is None else time.time_ns() - int(settle * 1e9)

        def interrupt() -> None:
            if should_stop():
                raise IndexCancelled

        plan = make_plan(self._catalog, self._config.index, roots, scope, settled_before, interrupt)
        report.unchanged, report.missing_roots, report.deferred = plan.unchanged, plan.missing_roots, plan.deferred
        report.failed += record_scan_problems(self._index, plan.problems)
        report.moved += write_renames(self._index, plan.renames)
        model, index = self._config.model, self._config.index
        run = Run(self._index, self._get_embedder, report, plan.missing, should_stop, model.batch,
                  index.max_image_pixels)  # fmt: skip
        run.process(plan.work, progress or NoProgress())


def write_renames(index: Index, renames: Sequence[tuple[FileState, Work]]) -> int:
    """Hinted renames keep their rows and vectors, without reading a byte. How many."""
    index.move([(state, location(work)) for state, work in renames])
    return len(renames)


def record_scan_problems(index: Index, problems: Sequence[tuple[RootInfo, ScanProblem]]) -> int:
    """Files the scan could not look at, recorded as failed with the reason. How many."""
    failures = []
    for root, problem in problems:
        log.info("failed: %s: %s", display(problem.path), display(problem.reason))
        where = Location(problem.path, root.id, folder_of(problem.path, root), 0, 0)
        failures.append((where, None, problem.reason))
    index.fail(failures)
    return len(failures)
