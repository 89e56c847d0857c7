"""An index run that finds `photosearch watch` holding the writer lock hands its folders to that daemon: they go
into its durable work queue, due at once, and the daemon indexes them in its own loop."""

from __future__ import annotations

from collections.abc import Sequence

from photosearch.errors import WriterBusyError
from photosearch.indexing.report import IndexReport
from photosearch.locking import DAEMON_ROLE
from photosearch.stores.catalog import RootInfo
from photosearch.stores.queue import WorkQueue


def hand_to_daemon(queue: WorkQueue, roots: Sequence[RootInfo], busy: WriterBusyError) -> IndexReport:
    """Queue ``roots`` for the daemon that holds the lock; any other holder (another index run) is ``busy``."""
    if busy.holder.role != DAEMON_ROLE:
        raise busy
    queue.put([(r.path, None, True) for r in roots], debounce=0)
    return IndexReport(handed_to_pid=busy.holder.pid)
