"""One library folder, several mount points: the catalog stores each path as the machine that added its folder saw
it, and each machine maps those folders to where it mounts them (config ``store.paths``).

The mapping is applied where paths enter and leave the catalog, in the path columns' own type (schema.PathText):
every query, insert and result goes through it, so nothing above the stores ever sees a stored path of another
machine, and the rows are the same whichever machine wrote them. Content hashes do not depend on the path, so a
photo moved on one machine is recognised as moved on every other.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Dialect

_ATTRIBUTE = "photosearch_paths"  # where an engine's dialect carries its catalog's map (the types only see that)


class PathMap:
    def __init__(self, stored_to_local: Mapping[str, str]) -> None:
        # Longest prefix first: a folder mapped inside another mapped folder wins.
        self._to_local = sorted(stored_to_local.items(), key=lambda pair: -len(pair[0]))
        self._to_stored = sorted(((b, a) for a, b in stored_to_local.items()), key=lambda pair: -len(pair[0]))

    def __bool__(self) -> bool:
        return bool(self._to_local)

    def to_stored(self, path: str) -> str:
        return _swap(path, self._to_stored)

    def to_local(self, path: str) -> str:
        return _swap(path, self._to_local)


def _swap(path: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if path == old or path.startswith(old + "/") or old == "/":
            return new + path[len(old) :] if old != "/" else new.rstrip("/") + path
    return path


def install(dialect: Dialect, paths: PathMap) -> None:
    """Make the engine of this dialect map its path columns (one engine per catalog, so one map per catalog)."""
    setattr(dialect, _ATTRIBUTE, paths)


def of(dialect: Dialect) -> PathMap | None:
    found = getattr(dialect, _ATTRIBUTE, None)
    return found if found else None
