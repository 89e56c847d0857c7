"""Plans an index run: what is on disk (scanner) against what the catalog knows, without opening any file.

A run covers whole library roots (``photosearch index``), or a scope of changed paths inside them (the daemon:
files, and folders whose subtree is rescanned). Move hints (destination -> source, from rename events) let a
renamed file or folder keep its rows and vectors without reading a byte, when size and mtime still match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from photosearch.config import IndexConfig
from photosearch.indexing.scanner import ScannedFile, ScanProblem, is_excluded, is_photo_name, scan
from photosearch.stores.catalog import Catalog, FileState, RootInfo
from photosearch.stores.schema import PhotoStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    file: ScannedFile
    root: RootInfo
    state: FileState | None  # None: a path the catalog has never seen

    @property
    def folder(self) -> str:
        return folder_of(self.file.path, self.root)


@dataclass(frozen=True)
class Scope:
    """Changed paths to look at instead of whole roots: files, or folders to rescan (their subtree)."""

    paths: Sequence[Path]
    moved_from: Mapping[Path, Path] = field(default_factory=dict)  # destination -> source


@dataclass
class Plan:
    work: list[Work] = field(default_factory=list)
    missing: list[FileState] = field(default_factory=list)  # in the catalog, gone from disk
    renames: list[tuple[FileState, Work]] = field(default_factory=list)  # hinted moves, same size and mtime
    problems: list[tuple[RootInfo, ScanProblem]] = field(default_factory=list)
    unchanged: int = 0
    queued: int = 0  # shared stores: already queued for a worker, with the same size and mtime
    missing_roots: list[Path] = field(default_factory=list)
    deferred: list[ScannedFile] = field(default_factory=list)  # modified too recently: may still be being written
    settled_before_ns: int | None = None


def folder_of(path: Path, root: RootInfo) -> str:
    rel = path.parent.relative_to(root.path).as_posix()
    return "" if rel == "." else rel


def root_of(path: Path, roots: Sequence[RootInfo]) -> RootInfo | None:
    """The library root a path lies in (the deepest one, should roots nest)."""
    best: RootInfo | None = None
    for root in roots:
        if (path == root.path or root.path in path.parents) and (best is None or root.path in best.path.parents):
            best = root
    return best


def make_plan(
    catalog: Catalog,
    config: IndexConfig,
    roots: Sequence[RootInfo],
    scope: Scope | None = None,
    settled_before_ns: int | None = None,
    interrupt: Callable[[], None] = lambda: None,
    leave_queued: bool = False,
) -> Plan:
    """Plan a run; files modified after ``settled_before_ns`` are deferred, neither indexed nor missing.

    ``interrupt`` is called for every file scanned and may raise to abandon the plan (a SIGTERM to the daemon):
    scanning a large or slow root can take longer than the daemon may take to stop. With ``leave_queued`` (shared
    stores) a pending row that was hashed and queued, and whose file is unchanged since, is left to the worker that
    claims it rather than read again."""
    planning = _Planning(catalog, config, Plan(settled_before_ns=settled_before_ns), interrupt, leave_queued)
    plan = planning.plan
    for root in roots:
        if not root_available(root, catalog):
            log.warning("library folder %s is missing or empty (unmounted?): its photos are kept", root.path)
            plan.missing_roots.append(root.path)
            continue
        if scope is None:
            planning.area(root, root.path)
            continue
        areas = {p for p in scope.paths if root_of(p, [root])}
        areas |= {src for src in scope.moved_from.values() if root_of(src, [root])}
        planning.paths(root, [area for area in _outermost(areas) if not _excluded_below(area, root, config)])
    _match_renames(plan, planning.new, planning.gone, scope.moved_from if scope else {})
    plan.missing.extend(planning.gone.values())
    return plan


def _match_renames(plan: Plan, new: list[Work], gone: dict[str, FileState], hints: Mapping[Path, Path]) -> None:
    """A new path whose hinted source vanished with the same size and mtime is that file, renamed."""
    for work in new:
        source = gone.get(str(_hinted_source(work.file.path, hints)))
        if (
            source is not None
            and source.status == PhotoStatus.INDEXED
            and (source.size, source.mtime_ns) == (work.file.size, work.file.mtime_ns)
        ):
            del gone[source.path]
            plan.renames.append((source, work))
        else:
            plan.work.append(work)


def root_available(root: RootInfo, catalog: Catalog) -> bool:
    """A root that is gone, or empty while the catalog knows photos in it, is treated as unmounted: an
    unmounted drive or share usually leaves its mount point behind as an empty folder."""
    if not root.path.is_dir():
        return False
    try:
        with os.scandir(root.path) as entries:
            if next(entries, None) is not None:
                return True
    except OSError:
        return False
    return not catalog.has_photos(root.id)  # searches ask this per query: no loading of every row


def _outermost(paths: set[Path]) -> list[Path]:
    """Drop paths inside another path of the set: scanning the folder covers them.

    Each path's few ancestors are looked up in the set, rather than every pair of paths compared: a copied
    folder queues thousands of paths, and the pairwise test took minutes for 5,000."""
    return sorted(p for p in paths if paths.isdisjoint(p.parents))


def _excluded_below(path: Path, root: RootInfo, config: IndexConfig) -> bool:
    if path == root.path:
        return False
    return any(is_excluded(part, config) for part in path.relative_to(root.path).parts)


def _items(area: Path, config: IndexConfig) -> Iterator[ScannedFile | ScanProblem]:
    if area.is_dir():
        yield from scan(area, config)
    elif area.is_file() and is_photo_name(area.name):
        st = area.stat()
        yield ScannedFile(area, st.st_size, st.st_mtime_ns)
    elif area.is_symlink() and is_photo_name(area.name):
        yield ScanProblem(area, "broken symlink", is_folder=False)


class _Planning:
    """One make_plan call: scanned items are compared with the catalog states of the area they come from."""

    def __init__(
        self, catalog: Catalog, config: IndexConfig, plan: Plan, interrupt: Callable[[], None], leave_queued: bool
    ) -> None:
        self.catalog, self.config, self.plan, self.interrupt = catalog, config, plan, interrupt
        self.leave_queued = leave_queued
        self.new: list[Work] = []  # paths the catalog has never seen (renames are matched among them)
        self.gone: dict[str, FileState] = {}  # in the catalog, not on disk

    def area(self, root: RootInfo, area: Path) -> None:
        """A whole root, or a file or folder inside one (a folder's whole subtree)."""
        states = self.catalog.file_states(root.id, under=None if area == root.path else str(area))
        self._compare(root, _items(area, self.config), states)

    def paths(self, root: RootInfo, paths: Sequence[Path]) -> None:
        """Changed paths (none inside another): folders one by one, files in one catalog lookup. A copied folder
        queues thousands of files; one query each cost more than indexing them."""
        folders = [p for p in paths if p.is_dir()]
        files = [p for p in paths if not p.is_dir()]
        states = self.catalog.file_states_at(root.id, [str(p) for p in files])
        on_disk = {p for p in files if p.exists() or p.is_symlink()}
        # Gone from disk and unknown as a file: perhaps a folder that was deleted or moved away, with photos.
        folders += [p for p in files if p not in on_disk and str(p) not in states]
        listed = [p for p in files if p in on_disk or str(p) in states]
        self._compare(root, (item for p in listed for item in _items(p, self.config)), states)
        for folder in folders:
            self.area(root, folder)

    def _compare(
        self, root: RootInfo, items: Iterator[ScannedFile | ScanProblem], states: dict[str, FileState]
    ) -> None:
        plan = self.plan
        seen: set[str] = set()
        unlisted: list[str] = []
        for item in items:
            self.interrupt()
            seen.add(str(item.path))
            if isinstance(item, ScanProblem):
                if item.is_folder:
                    unlisted.append(str(item.path) + "/")
                else:
                    plan.problems.append((root, item))
                continue
            if plan.settled_before_ns is not None and item.mtime_ns > plan.settled_before_ns:
                plan.deferred.append(item)
                continue
            state = states.get(str(item.path))
            if state is None:
                self.new.append(Work(item, root, None))
            elif (state.size, state.mtime_ns) != (item.size, item.mtime_ns):
                plan.work.append(Work(item, root, state))
            elif state.status == PhotoStatus.INDEXED:
                plan.unchanged += 1
            elif self.leave_queued and state.status == PhotoStatus.PENDING and state.content_hash:
                plan.queued += 1
            else:
                plan.work.append(Work(item, root, state))
        self.gone.update(
            (path, state)
            for path, state in states.items()
            if path not in seen and not any(path.startswith(prefix) for prefix in unlisted)
        )


def _hinted_source(path: Path, hints: Mapping[Path, Path]) -> Path | None:
    """Where a path was before a rename: the hint for itself, or for the folder it was moved with."""
    if path in hints:
        return hints[path]
    for parent in path.parents:
        if parent in hints:
            return hints[parent] / path.relative_to(parent)
    return None
