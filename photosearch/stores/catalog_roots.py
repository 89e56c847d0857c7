"""The catalog's SQL for whole library roots: forgetting one, pointing it at another folder, folding it into
another root, and finding where a missing root's photos turned up. Mixed into Catalog (catalog.py), whose
conventions hold: every method is one short transaction and returns plain values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, type_coerce, update
from sqlalchemy.orm import Session

from photosearch.pathtext import to_text
from photosearch.stores import pathmap
from photosearch.stores.schema import PathText, Photo, PhotoStatus, Root

if TYPE_CHECKING:
    from photosearch.stores.catalog import RootInfo

_CHUNK = 500  # stays under SQLite's bound-parameter limit in IN (...) lists


class RootChanges:
    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError  # Catalog's: its sessions map store errors to typed ones (boundary.py)

    def remove_root(self, root_id: int) -> list[int]:
        """Forget a root and every photo row of it in one transaction; returns the photo ids (their vectors go next)."""
        with self.session() as s, s.begin():
            ids = list(s.scalars(select(Photo.id).where(Photo.root_id == root_id)))
            s.execute(delete(Photo).where(Photo.root_id == root_id))
            s.execute(delete(Root).where(Root.id == root_id))
        return ids

    def move_root(self, root: RootInfo, new_path: Path, replacing: int | None = None) -> None:
        """Point a root and every photo path in it at ``new_path``, in one transaction. ``folder`` is relative to
        the root, so it stays. ``replacing``: a root already at new_path without photos, which goes."""
        with self.session() as s, s.begin():
            if replacing is not None:
                s.execute(delete(Root).where(Root.id == replacing))
            s.execute(update(Root).where(Root.id == root.id).values(path=str(new_path)))
            _repoint(s, root, new_path, root.id)

    def relocation(self, root: RootInfo, new_path: Path) -> tuple[list[int], list[int]]:
        """Were the root at new_path, which of its photos would land on a path the catalog has already: (those
        ids, the others)."""
        old_prefix, new_prefix = _prefix(root.path), _prefix(new_path)
        with self.session() as s:
            rows = s.execute(select(Photo.id, Photo.path).where(Photo.root_id == root.id)).all()
            relocated = {r.id: new_prefix + r.path.removeprefix(old_prefix) for r in rows}
            taken: set[str] = set()
            for chunk in _chunks(list(relocated.values())):
                taken.update(s.scalars(select(Photo.path).where(Photo.path.in_(chunk))))
        return [i for i, p in relocated.items() if p in taken], [i for i, p in relocated.items() if p not in taken]

    def merge_root(self, root: RootInfo, into: RootInfo, drop: Sequence[int]) -> None:
        """Fold a root into another one at its new location, in one transaction: the rows in ``drop`` (the other
        root has those photos already, see relocation) go, the rest become the other root's, the root goes."""
        with self.session() as s, s.begin():
            for chunk in _chunks(drop):
                s.execute(delete(Photo).where(Photo.id.in_(chunk)))
            _repoint(s, root, into.path, into.id)
            s.execute(delete(Root).where(Root.id == root.id))

    def copies_elsewhere(self, root_id: int, skip_roots: Sequence[int], sample: int) -> list[tuple[Path, list[Path]]]:
        """Up to ``sample`` indexed photos of a root, each with the indexed photos of other roots (not in
        ``skip_roots``) that have the same bytes: where a moved root's photos turned up."""
        with self.session() as s:
            rows = s.execute(
                select(Photo.path, Photo.content_hash)
                .where(Photo.root_id == root_id, Photo.status == PhotoStatus.INDEXED, Photo.content_hash.is_not(None))
                .order_by(Photo.id)
                .limit(sample)
            ).all()
            copies: dict[str, list[Path]] = {}
            others = select(Photo.content_hash, Photo.path).where(
                Photo.content_hash.in_({r.content_hash for r in rows}),
                Photo.status == PhotoStatus.INDEXED,
                Photo.root_id.not_in([root_id, *skip_roots]),
            )
            for digest, path in s.execute(others):
                copies.setdefault(digest or "", []).append(Path(path))
        return [(Path(r.path), copies.get(r.content_hash or "", [])) for r in rows]


def _prefix(path: Path) -> str:
    return str(path).rstrip("/") + "/"


def _chunks(items: Sequence[int | str]) -> Iterator[Sequence[int | str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _repoint(s: Session, root: RootInfo, new_path: Path, root_id: int) -> None:
    """Rewrite the paths of a root's photos from its folder to ``new_path``, by prefix, in SQL. substr, not LIKE:
    names may contain % and _; the stored form has one character per character of the name (pathtext.py), so
    the prefix length is the same on both sides."""
    old_prefix, new_prefix = _prefix(root.path), _prefix(new_path)
    paths = pathmap.of(s.get_bind().dialect)  # the stored prefix may be another machine's (pathmap.py)
    length = len(to_text(paths.to_stored(old_prefix) if paths else old_prefix))
    s.execute(
        update(Photo)
        .where(Photo.root_id == root.id, func.substr(Photo.path, 1, length) == type_coerce(old_prefix, PathText))
        .values(path=type_coerce(new_prefix, PathText) + func.substr(Photo.path, length + 1), root_id=root_id,
                updated_at=datetime.now().replace(microsecond=0))
    )  # fmt: skip
