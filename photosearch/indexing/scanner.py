"""Walks a library root and lists the photo files in it, cheaply: names and stat() only, no file is opened.

Skips hidden entries and junk (configurable excludes), follows symlinks when configured while guarding
against loops, and reports what it could not look at as problems instead of stopping.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from photosearch.config import IndexConfig
from photosearch.indexing.extensions import SUPPORTED_EXTENSIONS


@dataclass(frozen=True)
class ScannedFile:
    path: Path  # as reached under the root (symlinks not resolved), so users see their own paths
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    path: Path
    reason: str
    is_folder: bool  # a folder that could not be listed: what was indexed under it must be kept


def is_photo_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SUPPORTED_EXTENSIONS


def is_excluded(name: str, config: IndexConfig) -> bool:
    if name.startswith(".") and not config.include_hidden:
        return True
    return any(fnmatchcase(name, pattern) for pattern in config.exclude)


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def scan(root: Path, config: IndexConfig) -> Iterator[ScannedFile | ScanProblem]:
    """Yield every photo file under root (recursively) and every entry that could not be examined."""
    root_stat = root.stat()
    yield from _walk(root, config, ancestors=frozenset({(root_stat.st_dev, root_stat.st_ino)}))


def _walk(
    folder: Path, config: IndexConfig, ancestors: frozenset[tuple[int, int]]
) -> Iterator[ScannedFile | ScanProblem]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield ScanProblem(folder, f"cannot list folder: {_describe(exc)}", is_folder=True)
        return
    for entry in entries:
        if is_excluded(entry.name, config):
            continue
        path = Path(entry.path)
        try:
            is_link = entry.is_symlink()
            if is_link and not config.follow_symlinks:
                continue
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            # A dangling or looping symlink: only worth reporting where it looks like a photo or a folder.
            reason = "broken symlink" if exc.errno == errno.ENOENT else _describe(exc)
            if is_photo_name(entry.name) or not is_link or exc.errno == errno.ELOOP:
                yield ScanProblem(path, reason, is_folder=False)
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                yield ScanProblem(path, "symlink loop (points to a folder that contains it)", is_folder=False)
                continue
            yield from _walk(path, config, ancestors | {key})
        elif stat.S_ISREG(st.st_mode) and is_photo_name(entry.name):
            yield ScannedFile(path, st.st_size, st.st_mtime_ns)
