"""The vectors on a Chroma server (store.vectors = http://host:8000): the same collections as in the data
directory's embedded store, reached with chromadb's HttpClient in a tenant and database of their own.

What changes against the embedded store is what can fail. The server can be down, restarting, behind a proxy
that wants a token, or not a Chroma server at all; its faults leave as one line each (stores/boundary.py,
VectorStoreUnavailableError). The transient ones (refused, reset, a gateway's 502/503/504, a timeout) are tried
again with backoff: every operation the vector store sends is idempotent (an upsert by id, a query, a get, a
delete, a count, a drop of what is present), so sending one twice changes nothing.

No lock file here: the server serialises its writers itself, and its clients always see its latest writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from photosearch.errors import VectorStoreError, VectorStoreUnavailableError
from photosearch.stores.boundary import display_url, http_status_fault, not_chroma, server_errors
from photosearch.stores.vectors import LEGACY_PREFIX, PREFIX, get_collection

if TYPE_CHECKING:
    import httpx
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.config import Settings

    from photosearch.stores.vector_file import VectorFile

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds between the tries of an operation that met a transient fault: 7.5 s of waiting, ~10 s with the tries,
# enough for a `chroma run` that is restarting (it listens ~1 s after it starts).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
TIMEOUT = 60.0  # seconds one request may take: an upsert of MAX_BATCH vectors into HNSW takes ~10 s of them
CONNECT_TIMEOUT = 5.0  # a server that accepts no connection within this is as good as down
HEARTBEAT = "nanosecond heartbeat"  # the key of Chroma's GET /api/v2/heartbeat reply


class ChromaServer:
    """A Chroma server's database, as the vector store sees it: one HttpClient, collections looked up once."""

    def __init__(
        self,
        url: str,
        tenant: str = "default_tenant",
        database: str = "default_database",
        headers: Mapping[str, str] | None = None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.database = database
        self._headers = dict(headers or {})  # a proxy's token: sent, never shown
        self._retry_delays = tuple(retry_delays)
        self._timeout = timeout
        self._mutex = threading.Lock()  # one connect at a time; httpx's client is safe across threads after
        self._client: ClientAPI | None = None
        self._collections: dict[str, Collection] = {}

    def errors(self, doing: str = "read or write") -> AbstractContextManager[None]:
        return server_errors(self.url, f"cannot {doing} the vectors on the Chroma server at {display_url(self.url)}")

    def describe(self) -> str:
        """Where the vectors are, for `status`: the URL (without a password), tenant and database; no header."""
        return f"{display_url(self.url)} (tenant {self.tenant}, database {self.database})"

    def size_bytes(self) -> int | None:
        return None  # the server's disk is not ours to sum (nor, often, to see)

    def written(self) -> int | None:
        return None  # other clients write to it unseen: only asking the server tells

    def opened(self) -> bool:
        return True  # nothing to gain by not asking it: no vector files beside a server (written() is unknown)

    def vector_file(self, name: str) -> VectorFile | None:
        return None

    # -- the operations ----------------------------------------------------------------------------------------
    def call(self, work: Callable[[ClientAPI], T], *, write: bool = False, touching: str | None = None) -> T:
        """``work`` with the client, tried again while the server's fault is transient, then the typed error."""
        return self._retrying(lambda: work(self._connected()))

    def collection(self, name: str, create: Mapping[str, str | int] | None) -> Collection:
        found = self._collections.get(name)
        if found is None:
            found = get_collection(self._connected(), name, create)
            self._collections[name] = found
        return found

    def forget(self, name: str) -> None:
        self._collections.pop(name, None)

    def names(self) -> list[str]:
        """The photosearch collections in this database."""
        listed = self.call(lambda client: [c.name for c in client.list_collections()])
        return [name for name in listed if name.startswith((PREFIX, LEGACY_PREFIX))]

    def drop(self, names: Sequence[str]) -> None:
        if not names:
            return

        def drop_present(client: ClientAPI) -> None:  # a retry after a drop that did happen finds it gone
            present = {c.name for c in client.list_collections()}
            for name in names:
                self._collections.pop(name, None)
                if name in present:
                    client.delete_collection(name)

        self.call(drop_present, write=True)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        delays = iter(self._retry_delays)
        while True:
            try:
                with self.errors():
                    return attempt()
            except VectorStoreUnavailableError as exc:
                delay = next(delays, None)
                if not exc.transient or delay is None:
                    raise
                log.info("%s; trying again in %.1f s", exc, delay)
                time.sleep(delay)
            except VectorStoreError:
                self._collections.clear()  # one dropped elsewhere (a reindex switched): looked up afresh next time
                raise

    # -- connecting --------------------------------------------------------------------------------------------
    def _connected(self) -> ClientAPI:
        with self._mutex:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> ClientAPI:
        """Check that a Chroma server answers at the URL, make the tenant and database if missing, then the client.

        The heartbeat comes first, by hand: chromadb's client makes three requests while it is constructed and
        turns every failure among them into a ValueError with the HTTP status gone."""
        import chromadb

        self._heartbeat()
        self._ensure_tenant_and_database()
        client = chromadb.HttpClient(
            host=self.url, port=self._port(), ssl=self._https(), headers=dict(self._headers),
            settings=self._settings(), tenant=self.tenant, database=self.database,
        )  # fmt: skip
        self._tune(client)
        return client

    def _heartbeat(self) -> None:
        import httpx

        path = urlsplit(self.url).path.rstrip("/") + "/api/v2/heartbeat"
        reply = httpx.get(self.url + "/api/v2/heartbeat", headers=self._headers, timeout=self._timeouts())
        fault = http_status_fault(self.url, reply.status_code, path) if reply.is_error else None
        if fault is not None:
            raise fault
        try:
            beat = reply.json()
        except ValueError:
            raise not_chroma(self.url, f"HTTP {reply.status_code} at {path}, not JSON") from None
        if not isinstance(beat, dict) or HEARTBEAT not in beat:
            raise not_chroma(self.url, f"HTTP {reply.status_code} at {path} without a heartbeat")

    def _ensure_tenant_and_database(self) -> None:
        import chromadb
        from chromadb.errors import ChromaError, NotFoundError

        admin = chromadb.AdminClient(self._settings(with_server=True))
        self._tune(admin)
        try:
            admin.get_tenant(self.tenant)
        except NotFoundError:
            try:
                admin.create_tenant(self.tenant)
            except ChromaError:  # another indexer made it in between ("already exists"): there it is
                admin.get_tenant(self.tenant)
        try:
            admin.get_database(self.database, tenant=self.tenant)
        except NotFoundError:
            try:
                admin.create_database(self.database, tenant=self.tenant)
            except ChromaError:
                admin.get_database(self.database, tenant=self.tenant)

    def _settings(self, with_server: bool = False) -> Settings:
        from chromadb.config import Settings

        if not with_server:  # HttpClient sets the server's address itself
            return Settings(anonymized_telemetry=False)
        return Settings(
            anonymized_telemetry=False, chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host=self.url,
            chroma_server_http_port=self._port(), chroma_server_ssl_enabled=self._https(),
            chroma_server_headers=dict(self._headers),
        )  # fmt: skip

    def _https(self) -> bool:
        return self.url.startswith("https://")

    def _port(self) -> int:
        return urlsplit(self.url).port or (443 if self._https() else 80)

    def _timeouts(self) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(self._timeout, connect=min(CONNECT_TIMEOUT, self._timeout))

    def _tune(self, client: Any) -> None:
        """A timeout and the error-reply hook on chromadb's httpx session, which offers neither (it waits forever,
        and keeps only the body of an error reply that is not its own JSON)."""
        import httpx

        session = getattr(getattr(client, "_server", None), "_session", None)
        if not isinstance(session, httpx.Client):  # a chromadb whose HTTP client this code does not know
            raise VectorStoreError(f"cannot use this chromadb's HTTP client ({type(session).__name__})")
        session.timeout = self._timeouts()
        hooks = session.event_hooks
        session.event_hooks = {**hooks, "response": [*hooks.get("response", []), _keep_status]}


def _keep_status(response: httpx.Response) -> None:
    """An error reply that is not Chroma's JSON (a proxy's 401, a web server's 404, a gateway's 502) raises
    httpx.HTTPStatusError, status and all, before chromadb turns it into a bare Exception of its body."""
    if response.is_error and "json" not in response.headers.get("content-type", ""):
        response.read()
        response.raise_for_status()
