"""Turns file-system events below the library roots into `Change` records, for `photosearch watch`.

Runs on watchdog's observer thread, so the handler only looks at the paths watchdog hands it (no stat, no I/O):
debouncing, queueing and indexing belong to the daemon. watchdog is imported lazily: it costs ~60 ms.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from photosearch.config import IndexConfig, WatchConfig
from photosearch.errors import PhotosearchError
from photosearch.indexing.scanner import is_excluded, is_photo_name

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

log = logging.getLogger("photosearch.watching.watcher")

# inotify/FSEvents only see changes made through this machine's kernel: edits made by other machines on a share
# (or by the host of a VM shared folder) never produce an event, so such roots must be polled.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "9p", "afs", "ceph", "glusterfs", "davfs", "rclone", "s3fs",
     "gcsfuse", "lustre", "gpfs", "beegfs", "virtiofs", "vboxsf", "vmhgfs-fuse", "drvfs"}
)  # fmt: skip
_STOP_TIMEOUT = 1.8  # s; stop() must return within 2 s even while a polling snapshot of a slow share is running


@dataclass(frozen=True)
class Change:
    path: Path  # the path that changed; for a move, the destination
    moved_from: Path | None = None  # for a move/rename: the source
    is_dir: bool = False  # a folder was created, deleted or moved (the daemon rescans/forgets its subtree)
    deleted: bool = False


def _mount_of(path: str, mounts: str) -> tuple[str, str] | None:
    """(mount point, fs type) of the longest mount point containing path; a later line shadows an earlier one."""
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/self/mounts writes space, tab, newline and backslash as octal escapes (\040...)
        point, fstype = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]), fields[2]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def choose_observer(setting: str, roots: Sequence[Path], mounts: str | None = None) -> tuple[str, str | None]:
    """-> ("native" | "polling", reason for falling back or None). Explicit settings are obeyed as they are."""
    if setting in ("native", "polling"):
        return setting, None
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    if Observer is PollingObserver:  # watchdog's own choice where it has nothing native
        return "polling", f"watchdog has no native file-system observer on this platform ({sys.platform})"
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return "native", None  # not Linux: no cheap portable way to learn the file-system type
    for root in roots:
        found = _mount_of(os.path.realpath(root), mounts)
        if found and found[1].removeprefix("fuse.") in NETWORK_FILESYSTEMS:
            return "polling", (
                f"{root} is on a network file system ({found[1]} mounted at {found[0]}), where changes made from "
                "other machines send no events"
            )
    return "native", None


# What a native observer's OSError means, when it means that a kernel limit is reached.
_LIMITS = {
    errno.ENOSPC: "the inotify watch limit (fs.inotify.max_user_watches)",
    errno.EMFILE: "the inotify instance limit (fs.inotify.max_user_instances) or the open-file limit",
}


class _Handler:
    """Maps one root's watchdog events to Changes. Only `dispatch` is ever called by watchdog's observer."""

    def __init__(self, root: Path, emit: Callable[[Change], None], index: IndexConfig) -> None:
        self.root = str(root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        self.emit = emit
        self.index = index
        self.active = True  # cleared when its observer is stopped or replaced: late events are dropped

    def wanted(self, path: str, is_dir: bool) -> bool:
        if not path.startswith(self.prefix):
            return False  # the root itself, or outside it (a move out of the library)
        parts = path[len(self.prefix) :].split(os.sep)
        if any(is_excluded(part, self.index) for part in parts):
            return False
        return is_dir or is_photo_name(parts[-1])

    def dispatch(self, event: FileSystemEvent) -> None:
        kind, is_dir = event.event_type, event.is_directory
        # Synthetic events come from watchdog walking a folder that was moved or created as a whole: the folder's
        # own Change (is_dir) already makes the daemon rescan it, so thousands of per-file copies are just noise.
        if not self.active or event.is_synthetic or kind not in ("created", "modified", "deleted", "moved"):
            return
        if is_dir and kind == "modified":
            return  # a file was added or renamed inside it: that file's own event says which
        src = os.fsdecode(event.src_path)
        if kind == "moved":
            dest = os.fsdecode(event.dest_path)
            if self.wanted(dest, is_dir):  # includes x.tmp -> x.jpg: a new photo in effect
                self._send(Change(Path(dest), moved_from=Path(src), is_dir=is_dir))
            elif self.wanted(src, is_dir):  # x.jpg -> x.jpg.bak, or into a hidden folder: gone from the library
                self._send(Change(Path(src), is_dir=is_dir, deleted=True))
        elif self.wanted(src, is_dir):
            self._send(Change(Path(src), is_dir=is_dir, deleted=kind == "deleted"))
        elif kind == "deleted" and src == self.root:
            # Not reported as a deletion: forgetting a whole library because a drive went away would be worse.
            log.warning("library folder %s disappeared; it is no longer watched", src)

    def _send(self, change: Change) -> None:
        try:
            self.emit(change)
        except Exception:  # an exception would end watchdog's dispatch thread, and watching, silently
            log.exception("the change handler failed on %s", change.path)


def _check_watch_limit(handlers: list[_Handler]) -> None:
    """Raises ENOSPC when not even one more inotify watch can be added now.

    watchdog 7 silently skips the subfolders it cannot watch (only a failure on the root itself raises), so a
    library hitting the watch limit half-way would go partly unwatched without a word: one probe watch tells.
    """
    import ctypes

    if not sys.platform.startswith("linux") or not handlers:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return  # no instance left for the probe: that limit did not stop our own observer, so say nothing
    try:
        in_delete_self = 0x400
        if libc.inotify_add_watch(fd, os.fsencode(handlers[0].root), in_delete_self) < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise OSError(err, "inotify watch limit reached while watching the library's folders")
    finally:
        os.close(fd)  # releases the probe watch too


class Watcher:
    def __init__(
        self, roots: Sequence[Path], on_change: Callable[[Change], None], watch: WatchConfig, index: IndexConfig
    ) -> None:
        self._roots = [Path(root) for root in roots]
        self._on_change = on_change
        self._watch = watch
        self._index = index
        self._lock = threading.Lock()  # add_root() may come from another thread than start()/stop()
        self._observer: BaseObserver | None = None
        self._handlers: list[_Handler] = []
        self._kind = "polling" if watch.observer == "polling" else "native"
        self._reason: str | None = None

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def fallback_reason(self) -> str | None:
        return self._reason

    def start(self) -> None:
        with self._lock:
            self._shutdown()  # a second start() restarts rather than leaking an observer
            kind, reason = choose_observer(self._watch.observer, self._roots)
            self._launch(kind, reason)

    def stop(self) -> None:
        with self._lock:
            self._shutdown()

    def add_root(self, root: Path) -> None:
        with self._lock:
            root = Path(root)
            if root in self._roots:
                return  # a second handler on the same watch would report everything twice
            self._roots.append(root)
            if self._observer is None:
                return  # start() schedules it
            kind, reason = choose_observer(self._watch.observer, [root])
            if self._kind == "polling" or kind == "native":
                try:
                    self._schedule(self._observer, root, self._handlers)
                    if self._kind == "native":
                        _check_watch_limit(self._handlers[-1:])
                    return
                except OSError as exc:
                    # Under an explicit "native" this raises, and the roots already watched stay watched.
                    reason = self._limit_reason(exc)
            # A network root under a native observer, or the watch limit reached: everything is polled from now on.
            self._shutdown()
            self._launch("polling", reason)

    def _launch(self, kind: str, reason: str | None) -> None:
        if kind == "native":
            try:
                self._observer, self._handlers = self._start_observer(native=True)
                self._kind, self._reason = "native", None
                return
            except OSError as exc:
                reason = self._limit_reason(exc)
        if reason:
            log.warning("%s: polling for changes every %g s instead", reason, self._watch.polling_interval)
        self._observer, self._handlers = self._start_observer(native=False)
        self._kind, self._reason = "polling", reason

    def _limit_reason(self, exc: OSError) -> str:
        """Why polling is used after a native observer failed with exc; raises where polling is not an option."""
        limit = _LIMITS.get(exc.errno or 0)
        if limit is None:
            raise PhotosearchError(f"cannot start the file watcher: {exc.strerror or exc}") from exc
        if self._watch.observer == "native":
            raise PhotosearchError(f'{limit} is reached; raise it or set watch.observer = "polling"') from exc
        return f"{limit} is reached"

    def _start_observer(self, native: bool) -> tuple[BaseObserver, list[_Handler]]:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        # watchdog warns when a new folder's subfolder gets watched twice (by its walk and by its own event): a
        # harmless race on every `mkdir -p`, and a line on stderr the user could do nothing about.
        warnings.filterwarnings("ignore", "Callback with id .* already exists", RuntimeWarning, "watchdog")
        observer = Observer() if native else PollingObserver(timeout=self._watch.polling_interval)
        handlers: list[_Handler] = []
        try:
            observer.start()  # first, so that each schedule() below starts its emitter and fails for its own root
            for root in self._roots:
                self._schedule(observer, root, handlers)
            if native:
                _check_watch_limit(handlers)
        except BaseException:
            for handler in handlers:
                handler.active = False
            self._stop_observer(observer)
            raise
        return observer, handlers

    def _schedule(self, observer: BaseObserver, root: Path, handlers: list[_Handler]) -> None:
        import watchdog.events as ev

        handler = _Handler(root, self._on_change, self._index)
        # The filter also narrows the inotify mask: no open/close/access events wake us while the indexer reads.
        wanted: list[type[FileSystemEvent]] = [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileDeletedEvent]
        wanted += [ev.FileMovedEvent, ev.DirCreatedEvent, ev.DirDeletedEvent, ev.DirMovedEvent]
        try:
            observer.schedule(
                cast("FileSystemEventHandler", handler), str(root), recursive=True, event_filter=wanted,
                follow_symlink=self._index.follow_symlinks,
            )  # fmt: skip
        except OSError as exc:
            if exc.errno in _LIMITS:
                raise
            # A missing or unreadable root (an unplugged drive) must not stop the others from being watched.
            log.warning("cannot watch %s: %s; it is skipped", root, exc.strerror or exc)
            return
        handlers.append(handler)

    def _shutdown(self) -> None:
        for handler in self._handlers:
            handler.active = False
        self._handlers = []
        if self._observer is not None:
            self._stop_observer(self._observer)
            self._observer = None

    @staticmethod
    def _stop_observer(observer: BaseObserver) -> None:
        def stop_and_join() -> None:
            observer.stop()
            with suppress(RuntimeError):  # never started
                observer.join()

        # watchdog joins its emitters without a timeout; a polling emitter in the middle of a snapshot of a
        # large share would hold stop() for as long. Its threads are daemons, so leaving one behind is harmless.
        stopper = threading.Thread(target=stop_and_join, name="photosearch-watch-stop", daemon=True)
        stopper.start()
        stopper.join(_STOP_TIMEOUT)
        if stopper.is_alive():
            log.warning("the file watcher did not stop within %g s; leaving it to end with the process", _STOP_TIMEOUT)
