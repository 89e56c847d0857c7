"""The watcher with the real watchdog observers on temporary folders, and the real inotify limits, lowered inside
a user namespace (where the kernel lets each namespace set its own /proc/sys/user/max_inotify_*)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from photosearch.config import IndexConfig, WatchConfig
from photosearch.watching.watcher import Change, Watcher, choose_observer

BARRIER = "zz-barrier.jpg"


class Collector:
    """Receives Changes on the observer thread; tests wait on conditions instead of sleeping."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._cond = threading.Condition()

    def __call__(self, change: Change) -> None:
        with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def wait_for(self, done: Callable[[list[Change]], bool], timeout: float = 10.0) -> list[Change]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.changes):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; got {self.changes}"
                self._cond.wait(left)
            return list(self.changes)


class Harness:
    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.collector = Collector()
        self.watcher = Watcher([root], self.collector, WatchConfig(observer=kind, polling_interval=0.2), IndexConfig())

    def wait_for(self, *expected: Change) -> None:
        self.collector.wait_for(lambda got: all(change in got for change in expected))

    def settle(self) -> list[Change]:
        """Every Change caused so far, the barrier's left out, once all of them have certainly arrived.

        The barrier is a photo that grows: creating fresh files instead would let polling pair a deleted file
        with a new one that got its inode back, and report a move. Events reach us in order, except that polling
        queues one snapshot's events in its own order; a second barrier, made after the first one arrived, lies
        in a later snapshot than anything done before."""
        barrier = self.root / BARRIER
        for _ in range(2):
            seen = self.collector.changes.count(Change(barrier))
            with barrier.open("ab") as f:
                f.write(b"b")
            self.collector.wait_for(lambda got, n=seen: got.count(Change(barrier)) > n)  # type: ignore[misc]
        changes = [c for c in self.collector.changes if c.path != barrier]
        self.collector.changes.clear()
        return changes


@pytest.fixture(params=["native", "polling"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    root = tmp_path / "lib"
    (root / "album" / "sub").mkdir(parents=True)
    for name in ("album/p1.jpg", "album/sub/p2.jpg"):
        (root / name).write_bytes(b"photo")
    (root / BARRIER).write_bytes(b"b")
    harness = Harness(root, request.param)
    harness.watcher.start()
    assert harness.watcher.kind == request.param and harness.watcher.fallback_reason is None
    yield harness
    began = time.monotonic()
    harness.watcher.stop()
    assert time.monotonic() - began < 2.0


def test_create_modify_rename_delete_a_photo(harness: Harness) -> None:
    a, b = harness.root / "a.jpg", harness.root / "b.jpg"
    a.write_bytes(b"one")
    harness.wait_for(Change(a))  # native also reports the write that follows the creation as a modification
    a.write_bytes(b"longer content")  # polling sees modifications by size or mtime
    harness.collector.wait_for(lambda got: got.count(Change(a)) >= 2)
    harness.settle()
    os.rename(a, b)
    assert harness.settle() == [Change(b, moved_from=a)]
    b.unlink()
    assert harness.settle() == [Change(b, deleted=True)]


def test_folder_move(harness: Harness) -> None:
    old, new = harness.root / "album", harness.root / "renamed"
    os.rename(old, new)
    changes = harness.settle()
    folder = Change(new, moved_from=old, is_dir=True)
    if harness.watcher.kind == "native":
        # inotify pairs the folder's own rename; watchdog's per-file copies of it are dropped: the daemon rescans.
        assert changes == [folder]
    else:
        # Polling matches inodes between two snapshots: the folder and everything in it, each as a move.
        assert set(changes) == {
            folder,
            Change(new / "sub", moved_from=old / "sub", is_dir=True),
            Change(new / "p1.jpg", moved_from=old / "p1.jpg"),
            Change(new / "sub" / "p2.jpg", moved_from=old / "sub" / "p2.jpg"),
        }


def test_folder_delete(harness: Harness) -> None:
    shutil.rmtree(harness.root / "album")
    album = harness.root / "album"
    assert set(harness.settle()) == {  # both observers report each file and folder removed
        Change(album, is_dir=True, deleted=True),
        Change(album / "sub", is_dir=True, deleted=True),
        Change(album / "p1.jpg", deleted=True),
        Change(album / "sub" / "p2.jpg", deleted=True),
    }


def test_new_folder_with_photos(harness: Harness) -> None:
    (harness.root / "new" / "deep").mkdir(parents=True)
    (harness.root / "new" / "deep" / "q.jpg").write_bytes(b"q")
    changes = harness.settle()
    assert Change(harness.root / "new", is_dir=True) in changes
    assert Change(harness.root / "new" / "deep" / "q.jpg") in changes  # from the new folder's own watch, or a poll


def test_junk_is_filtered(harness: Harness) -> None:
    root = harness.root
    for folder in (".git", "@eaDir", "album/.hidden"):
        (root / folder).mkdir()
    for name in (".hidden.jpg", ".git/x.jpg", "@eaDir/t.jpg", "album/.hidden/h.jpg", "notes.txt", "._a.jpg"):
        (root / name).write_bytes(b"junk")
    (root / "notes.txt").write_bytes(b"more junk")
    os.rename(root / "notes.txt", root / "notes2.txt")
    os.rename(root / "album/p1.jpg", root / ".git/p1.jpg")  # a photo leaving the library is a deletion
    assert harness.settle() == [Change(root / "album/p1.jpg", deleted=True)]


def test_rename_into_a_photo_name(harness: Harness) -> None:
    tmp, jpg = harness.root / "x.tmp", harness.root / "x.jpg"
    tmp.write_bytes(b"partial")
    assert harness.settle() == []
    os.rename(tmp, jpg)
    assert harness.settle() == [Change(jpg, moved_from=tmp)]


def test_missing_root_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    collector = Collector()
    watcher = Watcher([tmp_path / "gone", tmp_path], collector, WatchConfig(observer="native"), IndexConfig())
    watcher.start()
    try:
        (tmp_path / "a.jpg").write_bytes(b"a")
        collector.wait_for(lambda got: Change(tmp_path / "a.jpg") in got)
    finally:
        watcher.stop()
    assert "cannot watch" in caplog.text and "gone" in caplog.text


def test_a_failing_consumer_does_not_end_watching(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    collector = Collector()

    def consume(change: Change) -> None:
        if change.path.name == "bad.jpg":
            raise RuntimeError("boom")
        collector(change)

    watcher = Watcher([tmp_path], consume, WatchConfig(observer="native"), IndexConfig())
    watcher.start()
    try:
        (tmp_path / "bad.jpg").write_bytes(b"a")
        (tmp_path / "good.jpg").write_bytes(b"a")
        collector.wait_for(lambda got: Change(tmp_path / "good.jpg") in got)
    finally:
        watcher.stop()
    assert "the change handler failed" in caplog.text


MOUNTS = """\
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
nas:/volume1/photos /mnt/nas nfs4 rw,relatime,vers=4.1 0 0
user@host:/pics /home/me/remote\\040pics fuse.sshfs rw,nosuid,nodev 0 0
/dev/sdb1 /mnt/nas/local ext4 rw 0 0
//server/share /srv/smb cifs rw 0 0
"""


@pytest.mark.parametrize(
    ("root", "fstype", "point"),
    [
        ("/mnt/nas/photos", "nfs4", "/mnt/nas"),
        ("/home/me/remote pics/2024", "fuse.sshfs", "/home/me/remote pics"),
        ("/srv/smb", "cifs", "/srv/smb"),
    ],
)
def test_network_roots_are_polled(root: str, fstype: str, point: str) -> None:
    kind, reason = choose_observer("auto", [Path("/home/me/local"), Path(root)], mounts=MOUNTS)
    assert kind == "polling"
    assert reason is not None and fstype in reason and point in reason and root in reason


@pytest.mark.parametrize("root", ["/home/me/pics", "/mnt/nas/local/pics", "/mnt/nasty", "/srv/smbx"])
def test_local_roots_are_native(root: str) -> None:
    # the longest mount point wins (ext4 below nfs4), and /mnt/nas is no prefix of /mnt/nasty
    assert choose_observer("auto", [Path(root)], mounts=MOUNTS) == ("native", None)


def test_explicit_settings_are_respected() -> None:
    assert choose_observer("native", [Path("/mnt/nas/photos")], mounts=MOUNTS) == ("native", None)
    assert choose_observer("polling", [Path("/home/me")], mounts=MOUNTS) == ("polling", None)


# Runs in a new user namespace, whose inotify limits are its own: lowering them there touches nothing else.
LIMITED = r"""
import json, logging, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
try:
    for name, value in args["limits"].items():
        Path("/proc/sys/user", name).write_text(str(value))
except OSError as exc:
    print(json.dumps({"skip": f"cannot lower the inotify limits in a user namespace: {exc}"}))
    sys.exit()
from photosearch.config import IndexConfig, WatchConfig
from photosearch.errors import PhotosearchError
from photosearch.watching.watcher import Watcher
warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("photosearch.watching.watcher").addHandler(handler)
changes = []
config = WatchConfig(observer=args["setting"], polling_interval=0.1)
watcher = Watcher([Path(r) for r in args["roots"]], changes.append, config, IndexConfig())
out = {}
try:
    watcher.start()
    for root in args["add"]:
        watcher.add_root(Path(root))
    out.update(kind=watcher.kind, reason=watcher.fallback_reason)
    probe = Path(args["probe"])  # the observer really runs, deep in the tree
    probe.write_bytes(b"x")
    deadline = time.monotonic() + 10
    while not any(c.path == probe for c in changes) and time.monotonic() < deadline:
        time.sleep(0.02)
    out["seen"] = any(c.path == probe for c in changes)
    watcher.stop()
except PhotosearchError as exc:
    out["error"] = str(exc)
out["warnings"] = warnings
print(json.dumps(out))
"""


def _tree(root: Path, folders: int) -> Path:
    for i in range(folders):
        (root / f"d{i}").mkdir(parents=True)
    return root / f"d{folders - 1}" / "new.jpg"


def _limited(setting: str, limits: dict[str, int], roots: list[Path], probe: Path, add: list[Path] = []) -> dict:  # noqa: B006
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux and unshare(1)")
    args = {"setting": setting, "limits": limits, "roots": [str(r) for r in roots], "add": [str(a) for a in add]}
    command = [
        "unshare",
        "--user",
        "--map-root-user",
        sys.executable,
        "-c",
        LIMITED,
        json.dumps(args | {"probe": str(probe)}),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


@pytest.mark.parametrize("watches", [0, 5])  # 0: the root itself fails; 5: a subfolder does, which watchdog hides
def test_watch_limit_falls_back_to_polling(tmp_path: Path, watches: int) -> None:
    probe = _tree(tmp_path, 10)
    out = _limited("auto", {"max_inotify_watches": watches}, [tmp_path], probe)
    assert out["kind"] == "polling" and out["seen"]
    assert "max_user_watches" in out["reason"]
    assert (
        len(out["warnings"]) == 1 and "max_user_watches" in out["warnings"][0] and "every 0.1 s" in out["warnings"][0]
    )


def test_watch_limit_with_native_is_an_error(tmp_path: Path) -> None:
    probe = _tree(tmp_path, 10)
    out = _limited("native", {"max_inotify_watches": 5}, [tmp_path], probe)
    assert "max_user_watches" in out["error"] and 'watch.observer = "polling"' in out["error"]


def test_instance_limit(tmp_path: Path) -> None:
    probe = _tree(tmp_path, 2)
    out = _limited("auto", {"max_inotify_instances": 0}, [tmp_path], probe)
    assert out["kind"] == "polling" and out["seen"] and "max_user_instances" in out["warnings"][0]
    out = _limited("native", {"max_inotify_instances": 0}, [tmp_path], probe)
    assert "max_user_instances" in out["error"]


def test_within_the_limit_stays_native(tmp_path: Path) -> None:
    probe = _tree(tmp_path, 10)
    out = _limited("auto", {"max_inotify_watches": 100}, [tmp_path], probe)
    assert out == {"kind": "native", "reason": None, "seen": True, "warnings": []}


def test_added_root_over_the_limit_switches_to_polling(tmp_path: Path) -> None:
    _tree(tmp_path / "small", 2)
    probe = _tree(tmp_path / "big", 10)
    out = _limited("auto", {"max_inotify_watches": 6}, [tmp_path / "small"], probe, add=[tmp_path / "big"])
    assert out["kind"] == "polling" and out["seen"] and len(out["warnings"]) == 1


def test_native_observer_does_not_poll_when_idle(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"d{i}").mkdir()
    watcher = Watcher([tmp_path], lambda change: None, WatchConfig(observer="native"), IndexConfig())
    watcher.start()
    try:
        began = time.process_time()
        time.sleep(1.0)  # the point: nothing happens, and it must cost (next to) nothing
        assert time.process_time() - began < 0.05
    finally:
        watcher.stop()
