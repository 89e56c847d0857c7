"""Library roots: listing them, removing or moving one (`photosearch roots`), and noticing one that moved.

Removing a root writes both stores in the README's order ("Consistency"): its rows first, then their vectors,
inside the run journal, so a crash in between leaves only vectors without rows, which the next run reconciles
away. A vector says nothing about where its files are (stores/vectors.py), so pointing a root at another folder
is one catalog transaction and no vector changes. Folding a root into another one (see move_root) is the
catalog's too; only vectors that no photo has any more go after it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from photosearch.errors import InvalidQueryError, LibraryRootError, RootConflictError
from photosearch.indexing.planner import root_available, root_of
from photosearch.pathtext import display
from photosearch.stores.catalog import Catalog, RootInfo
from photosearch.stores.index import Index, journal

SAMPLE = 64  # photos of a missing root looked up elsewhere by content hash: bounded, status asks every poll
IndexGetter = Callable[[], Index | None]  # None: no vectors exist yet, so none need deleting


@dataclass(frozen=True)
class MovedRoot:
    """A missing root whose photos turned up at ``to`` (same bytes, same place relative to the folder)."""

    root: Path
    to: Path
    command: str  # what records it

    def message(self) -> str:
        return f"library folder {display(self.root)} looks moved to {display(self.to)}: run `{self.command}`"

    def to_dict(self) -> dict[str, str]:
        return {"root": display(self.root), "to": display(self.to), "command": self.command}


@dataclass(frozen=True)
class RootOverview:
    root: RootInfo
    photos: int  # catalog rows of any status: what `roots remove` drops
    missing: bool
    moved_to: Path | None

    def to_dict(self) -> dict[str, object]:
        root = self.root
        return {
            "id": root.id, "path": display(root.path), "photos": self.photos, "missing": self.missing,
            "moved_to": display(self.moved_to) if self.moved_to else None, "added_at": root.added_at.isoformat(),
            "last_indexed_at": root.last_indexed_at.isoformat() if root.last_indexed_at else None,
        }  # fmt: skip


def folder_path(path: Path) -> Path:
    """A folder argument as roots are stored: absolute, symlinks resolved; unusable spellings are one clear error."""
    try:
        resolved = path.expanduser().resolve()
        os.fsencode(resolved)  # a lone surrogate from a JSON body cannot become a file name
        resolved.is_dir()  # ENAMETOOLONG and friends surface here, not later in a write
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidQueryError(f"{display(str(path))!r} is not a usable folder path: {exc}") from None
    return resolved


def offline_roots(catalog: Catalog, roots: Sequence[RootInfo]) -> frozenset[int]:
    return frozenset(r.id for r in roots if not root_available(r, catalog))


def overview(catalog: Catalog, roots: Sequence[RootInfo]) -> tuple[list[RootOverview], list[MovedRoot]]:
    offline = offline_roots(catalog, roots)
    counts = catalog.photo_counts_by_root()
    moved = moved_roots(catalog, roots, offline)
    to = {m.root: m.to for m in moved}
    return [RootOverview(r, counts.get(r.id, 0), r.id in offline, to.get(r.path)) for r in roots], moved


def moved_roots(catalog: Catalog, roots: Sequence[RootInfo], offline: Collection[int]) -> list[MovedRoot]:
    """The missing roots whose photos are indexed again under another, available root."""
    found = []
    for root in roots:
        to = _moved_to(catalog, root, offline) if root.id in offline else None
        if to is not None:
            found.append(MovedRoot(root.path, to, _command(root, to, roots)))
    return found


def _moved_to(catalog: Catalog, root: RootInfo, offline: Collection[int]) -> Path | None:
    """Where most of a sample of the root's photos are now: a copy ``.../X/a/b.jpg`` of ``ROOT/a/b.jpg`` votes for
    ``.../X``. At least half the sample must agree, so a few backed-up photos do not make a root look moved."""
    sample = catalog.copies_elsewhere(root.id, sorted(offline), SAMPLE)
    votes: Counter[Path] = Counter()
    for path, copies in sample:
        if root.path not in path.parents:
            continue
        inside = path.relative_to(root.path).parts
        votes.update({Path(*c.parts[: -len(inside)]) for c in copies if c.parts[-len(inside) :] == inside})
    if not votes:
        return None
    place, count = votes.most_common(1)[0]
    return place if 2 * count >= len(sample) else None


def _command(root: RootInfo, to: Path, roots: Sequence[RootInfo]) -> str:
    outer = root_of(to, [r for r in roots if r.path != to and r.id != root.id])
    if outer is not None:  # found again inside another root, which indexes them: this one is a leftover
        return f"photosearch roots remove {shlex.quote(display(root.path))}"
    return f"photosearch roots move {shlex.quote(display(root.path))} {shlex.quote(display(to))}"


def find_root(roots: Sequence[RootInfo], which: Path | int) -> RootInfo:
    """A root by id, or by its folder (as typed, or with symlinks resolved: a missing folder cannot be resolved)."""
    if isinstance(which, int):
        spellings: set[Path] = set()
    else:
        spellings = {which.expanduser().absolute()}
        with contextlib.suppress(OSError, RuntimeError):  # a symlink loop: the spelling as typed is left
            spellings.add(which.expanduser().resolve())
    for root in roots:
        if root.path in spellings or root.id == which:
            return root
    raise LibraryRootError(f"{display(str(which))} is not a library folder (see `photosearch roots`)")


def remove_root(catalog: Catalog, index: IndexGetter, root: RootInfo) -> int:
    """Forget a root: its rows (one transaction), then their vectors. Returns how many photos went."""
    both = index()  # first: a store that cannot be opened (another model configured) stops us before any row goes
    with journal(catalog, "removing a root"):
        return both.remove_root(root.id) if both is not None else len(catalog.remove_root(root.id))


def move_root(
    catalog: Catalog, index: IndexGetter, roots: Sequence[RootInfo], root: RootInfo, new_path: Path, force: bool
) -> RootInfo:
    """Point a root at the folder its photos are in now, without reading or embedding any of them.

    When ``new_path`` is a root already (it was indexed after the move, so its photos are copies with reused
    vectors), the two are folded into that one; an empty one just gives way."""
    target = _check_target(roots, root, new_path, force)
    if target is None or not catalog.has_photos(target.id):
        catalog.move_root(root, new_path, replacing=target.id if target else None)
        return RootInfo(root.id, new_path, root.added_at, root.last_indexed_at)
    _merge(catalog, index, root, target)
    return target


def _merge(catalog: Catalog, index: IndexGetter, root: RootInfo, into: RootInfo) -> None:
    drop, _keep = catalog.relocation(root, into.path)
    both = index()
    with journal(catalog, "merging roots"):
        if both is not None:
            both.merge_roots(root, into, drop)
        else:
            catalog.merge_root(root, into, drop)


def _check_target(roots: Sequence[RootInfo], root: RootInfo, new_path: Path, force: bool) -> RootInfo | None:
    """Refuse targets that would nest roots or that are not there; return the root already at new_path, if any."""
    new, old = display(new_path), display(root.path)
    if new_path == root.path:
        raise RootConflictError(f"library folder {old} is at {new} already")
    if not force and not new_path.is_dir():
        raise LibraryRootError(f"{new} is not a folder: mount it first, or add --force to record it anyway")
    target = None
    for other in roots:
        if other.id == root.id:
            continue
        if other.path == new_path:
            target = other
        elif other.path in new_path.parents:
            raise RootConflictError(
                f"{new} is inside the library folder {display(other.path)}, which indexes its photos: "
                f"run `photosearch roots remove {shlex.quote(old)}` instead"
            )
        elif new_path in other.path.parents:
            raise RootConflictError(f"{new} contains the library folder {display(other.path)}: remove that one first")
    return target
