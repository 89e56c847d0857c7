"""The scanner: real folders with junk, hidden files, symlinks, loops and unreadable folders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from photosearch.config import IndexConfig
from photosearch.indexing.scanner import ScannedFile, scan


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _found(root: Path, config: IndexConfig | None = None) -> tuple[set[str], dict[str, str]]:
    files, problems = set(), {}
    for item in scan(root, config or IndexConfig()):
        rel = item.path.relative_to(root).as_posix()
        if isinstance(item, ScannedFile):
            files.add(rel)
        else:
            problems[rel] = item.reason
    return files, problems


def test_finds_photos_recursively_and_skips_junk(tmp_path):
    for rel in ["a.jpg", "b.PNG", "sub/c.heic", "sub/deeper/d.webp", "e.tiff", "notes.txt", "f.JPEG"]:
        _touch(tmp_path / rel)
    for rel in [".hidden.jpg", ".git/x.jpg", "@eaDir/t.jpg", "sub/._c.jpg", ".thumbnails/t.png",
                "sub/Thumbs.db", "#recycle/old.jpg"]:  # fmt: skip
        _touch(tmp_path / rel)
    files, problems = _found(tmp_path)
    assert files == {"a.jpg", "b.PNG", "sub/c.heic", "sub/deeper/d.webp", "e.tiff", "f.JPEG"}
    assert problems == {}


def test_excludes_are_configurable_and_hidden_can_be_included(tmp_path):
    _touch(tmp_path / "keep/a.jpg")
    _touch(tmp_path / "raw-exports/b.jpg")
    _touch(tmp_path / ".hidden/c.jpg")
    files, _ = _found(tmp_path, IndexConfig(exclude=("raw-*",), include_hidden=True))
    assert files == {"keep/a.jpg", ".hidden/c.jpg"}


def test_size_and_mtime_are_reported(tmp_path):
    photo = _touch(tmp_path / "a.jpg", b"12345")
    os.utime(photo, ns=(1_000_000_000, 2_000_000_000))
    (item,) = list(scan(tmp_path, IndexConfig()))
    assert isinstance(item, ScannedFile)
    assert (item.size, item.mtime_ns) == (5, 2_000_000_000)


def test_symlinks_broken_links_and_loops(tmp_path):
    outside = tmp_path / "outside"
    _touch(outside / "o.jpg")
    lib = tmp_path / "lib"
    _touch(lib / "real/a.jpg")
    (lib / "linked-dir").symlink_to(outside)
    (lib / "linked.jpg").symlink_to(lib / "real/a.jpg")
    (lib / "dangling.jpg").symlink_to(lib / "nowhere.jpg")
    (lib / "real/loop").symlink_to(lib)  # a folder link pointing back up: must not recurse forever
    (lib / "self.jpg").symlink_to(lib / "self.jpg")  # ELOOP
    files, problems = _found(lib)
    assert files == {"real/a.jpg", "linked-dir/o.jpg", "linked.jpg"}
    assert problems["dangling.jpg"] == "broken symlink"
    assert problems["self.jpg"] == "symlink loop"
    assert problems["real/loop"].startswith("symlink loop")
    files, _ = _found(lib, IndexConfig(follow_symlinks=False))
    assert files == {"real/a.jpg"}


def test_unreadable_folder_is_a_problem_not_a_crash(tmp_path, run_unprivileged):
    """Scanned without root's override of permissions, so the check is real."""
    _touch(tmp_path / "ok/a.jpg")
    locked = tmp_path / "locked"
    _touch(locked / "b.jpg")
    locked.chmod(0)
    code = (
        "import sys, json; from pathlib import Path; from photosearch.config import IndexConfig;"
        "from photosearch.indexing.scanner import scan, ScanProblem;"
        "print(json.dumps([[str(i.path), isinstance(i, ScanProblem) and i.is_folder, getattr(i, 'reason', '')]"
        " for i in scan(Path(sys.argv[1]), IndexConfig())]))"
    )
    out = run_unprivileged([sys.executable, "-c", code, str(tmp_path)])
    items = json.loads(out.stdout)
    assert [str(tmp_path / "ok/a.jpg"), False, ""] in items
    assert [str(locked), True, "cannot list folder: permission denied"] in items
    assert len(items) == 2
