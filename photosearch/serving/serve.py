"""`photosearch serve`: one long-lived process with the daemon (watcher + indexer) and the HTTP app.

uvicorn owns the main thread and its signals; the daemon runs in a thread and is stopped through its stop
event when uvicorn shuts down. While running, ``server.json`` in the data directory tells the CLI where the
server listens, so `search`, `similar` and `status` can ask it instead of loading the model again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from photosearch.config import Config, replace
from photosearch.errors import ConfigError
from photosearch.library import Library
from photosearch.serving.discovery import DISCOVERY

log = logging.getLogger(__name__)
READY_WAIT = 30.0  # seconds the page waits for the search path to load (a store server that does not answer)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(config: Config, host: str) -> None:
    if not is_loopback(host) and not config.server.token:
        raise ConfigError(
            f"serving on {host} makes your photos reachable from other machines: set server.token "
            "(PHOTOSEARCH_SERVER_TOKEN) to a long random string first, or bind 127.0.0.1"
        )


@contextmanager
def _discovery_file(config: Config, host: str, port: int) -> Iterator[None]:
    path = config.data_dir / DISCOVERY
    connect = "127.0.0.1" if not is_loopback(host) else f"[{host}]" if ":" in host else host  # IPv6 in brackets
    data = {"pid": os.getpid(), "url": f"http://{connect}:{port}", "token": config.server.token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the token
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def serve(config: Config, host: str, port: int, watch: bool = True) -> None:
    import uvicorn

    from photosearch.serving.httpapi import create_app
    from photosearch.watching.daemon import Daemon

    check_binding(config, host)
    # The app's Host rule (webguard.py) must know the address really bound, which --host may have changed.
    config = replace(config, server=replace(config.server, host=host, port=port))
    _Server = _server_class()
    with Library.open(config) as library:
        stop = threading.Event()
        daemon = Daemon(library, stop=stop) if watch else None
        thread = threading.Thread(target=_run_daemon, args=(daemon,), name="daemon", daemon=True) if daemon else None

        @asynccontextmanager
        async def lifespan(_app: Any) -> Any:
            if thread is not None:
                thread.start()
            searchable = threading.Event()
            threading.Thread(target=_warm_up, args=(library, searchable), name="warm-up", daemon=True).start()
            # uvicorn listens once this returns: the page answers when a search is ready too (up to READY_WAIT).
            await asyncio.to_thread(searchable.wait, READY_WAIT)
            yield
            stop.set()
            if thread is not None:
                thread.join(timeout=10)

        def reindex() -> None:
            if daemon is not None:
                daemon.request_reindex()
            else:
                threading.Thread(target=_logged, args=(library.reindex,), name="reindex", daemon=True).start()

        app = create_app(library, reindex=reindex)
        app.router.lifespan_context = lifespan
        server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        with _discovery_file(config, host, port):
            log.info("serving on http://%s:%d (watching: %s)", host, port, watch)
            server.run()


def _warm_up(library: Library, searchable: threading.Event) -> None:
    """Load the models now rather than on the first query, so that a search never waits for them. What a text
    search needs first (~1.5 s at 100,000 photos), alone: importing torch beside it, which holds the GIL for
    seconds, made the first search take 2.5 s. Then the full model (image queries, indexing) and the vectors into
    memory (exact filtered queries; ~7 s at 100,000 photos)."""
    started = time.monotonic()
    if _logged(library.warm_search):
        log.info("ready to search (%.1f s)", time.monotonic() - started)
    searchable.set()  # a failed warm-up is logged: the page answers anyway, and says what is wrong
    _logged(library.embedder, library.warm_vectors)


def _logged(*steps: Any) -> bool:
    """Run the steps in order; one that fails is logged (the server goes on without it) and ends the run.
    Whether they all ran."""
    try:
        for step in steps:
            step()
    except Exception:
        log.exception("background task failed")
        return False
    return True


def _run_daemon(daemon: Any) -> None:
    """The daemon thread: if it cannot run (another `watch` holds the lock), the server goes on serving."""
    _logged(daemon.run)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which kills the process before our
        cleanup (the daemon thread, the discovery file) runs. A clean stop here exits normally instead."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server
