"""What an index run reports, how it shows progress, and how it is cancelled."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from photosearch.indexing.scanner import ScannedFile

if TYPE_CHECKING:
    from photosearch.indexing.roots import MovedRoot  # roots.py imports the indexer: for the type only


class Progress(Protocol):
    def start(self, total: int) -> None: ...  # may come again with a larger total: the same run, more work found
    def advance(self, n: int = 1) -> None: ...


class NoProgress:
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
    queued: int = 0  # shared stores: new or changed photos queued for whichever worker claims them
    missing_roots: list[Path] = field(default_factory=list)
    moved_roots: list[MovedRoot] = field(default_factory=list)  # missing roots whose photos turned up elsewhere
    reconciled: bool = False
    seconds: float = 0.0
    handed_to_pid: int | None = None  # a running daemon took the work over
    deferred: list[ScannedFile] = field(default_factory=list)  # still being written: left for a later run
    reindexed: int | None = None  # a reindex ran first: the distinct photos it embedded (in ``embedded`` too)
    reindex_complete: bool = False  # ...and it completed: the index is the new model's now
    # Shared stores: the paths this run's scans queued, and whether each was new (else changed). One that fails
    # when claimed is counted failed instead, as a run on the embedded stores counts it (examined and failed).
    queued_here: dict[Path, bool] = field(default_factory=dict, repr=False)

    def add_reindex(self, rebuilt: ReindexReport | None) -> None:
        if rebuilt is not None:
            self.reindexed, self.reindex_complete = rebuilt.embedded, rebuilt.complete
            self.embedded += rebuilt.embedded
            self.failed += rebuilt.failed

    def summary(self) -> str:
        """The report as one short log line: counts only, however many paths a run covered or deferred."""
        return (
            f"new={self.new}, changed={self.changed}, unchanged={self.unchanged}, moved={self.moved}, "
            f"removed={self.removed}, failed={self.failed}, embedded={self.embedded}, reused={self.reused}, "
            f"queued={self.queued}, "
            f"deferred={len(self.deferred)}, missing_roots={len(self.missing_roots)}, reconciled={self.reconciled}, "
            f"seconds={self.seconds:.2f}"
        )


@dataclass
class ReindexReport:
    embedded: int = 0  # distinct contents embedded with the new model in this run
    requeued: int = 0  # photos whose files changed since they were indexed: back to pending
    failed: int = 0  # photos whose files cannot be read now
    complete: bool = False  # the new index is the index now


class IndexCancelled(Exception):
    """The run was asked to stop (SIGTERM to the daemon); what was written so far is kept."""
