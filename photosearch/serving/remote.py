"""The query interface (query/api.py) over a running `photosearch serve`: what the CLI uses while one serves its
data directory, so a search loads no model. It answers as the library would, from the CLI's own configuration
(its search.default_k is sent with every query).

Standard library only, like client.py: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photosearch.errors import InvalidQueryError, PhotoNotFoundError
from photosearch.filters import Filters
from photosearch.pathtext import to_text
from photosearch.query.limits import MAX_K
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.spec import Example, SearchRequest
from photosearch.query.wire import to_params
from photosearch.serving.client import ServerClient

if TYPE_CHECKING:
    from photosearch.config import Config


class RemoteLibrary:
    def __init__(self, client: ServerClient, config: Config) -> None:
        self.client = client
        self._default_k = config.search.default_k  # the caller's configuration, not the server's

    def query(self, request: SearchRequest) -> SearchPage:
        """As Library.query: example files are sent as the ids of indexed photos or as uploads, the folder
        resolved here (it names this machine's path), k defaulted from the caller's configuration."""
        folder = request.filters.folder
        filters = replace(request.filters, folder=_resolved(folder)) if folder is not None else request.filters
        examples = tuple(self._sendable(e) for e in request.examples)
        unlike = tuple(self._sendable(e) for e in request.unlike)
        sent = replace(request, k=self._default_k if request.k is None else request.k, examples=examples,
                       unlike=unlike, filters=filters)  # fmt: skip
        return SearchPage.from_dict(self.client.get("/api/search", **to_params(sent)))

    def _sendable(self, example: Example) -> Example:
        """An example by path as the server takes it: an indexed photo's id, else the file uploaded."""
        if example.path is None:
            return example
        path = example.path.expanduser().absolute()
        found = self._lookup(path)
        if found is not None and found["status"] == "indexed":
            return Example(photo_id=int(found["id"]), weight=example.weight)
        reply = self.client.post_file("/api/uploads", path)
        return Example(upload=str(reply["upload"]), weight=example.weight)

    def search(
        self, query: str, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        return _results(self.client.get("/api/search", q=query, **self._params(k, folder, include_offline)))

    def similar(
        self, photo: Path, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        """As Library.similar: an indexed photo by its stored vector (the server leaves it out), any other file
        uploaded and embedded by the server (a catalog row of it, pending or failed, left out here)."""
        path = photo.expanduser().absolute()
        params = self._params(k, folder, include_offline)
        found = self._lookup(path)
        if found is not None and found["status"] == "indexed":
            return _results(self.client.get(f"/api/photos/{found['id']}/similar", **params))
        wanted = params["k"]
        if found is not None:
            params["k"] = min(MAX_K, wanted + 1)  # one more, for the photo itself
        results = _results(self.client.post_file("/api/search/image", path, **params))
        kept = [r for r in results if found is None or r.id != found["id"]][:wanted]
        return [replace(r, rank=rank) for rank, r in enumerate(kept, 1)]

    def status_report(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.client.get("/api/status")
        return reply

    def failures(self) -> list[tuple[Path, str]]:
        return [(Path(f["path"]), f["reason"]) for f in self.client.get("/api/failures")["failures"]]

    def facets(self, filters: Filters | None = None, include_offline: bool = False) -> dict[str, Any]:
        filters = filters or Filters()
        if filters.folder is not None:
            filters = replace(filters, folder=_resolved(filters.folder))
        request = SearchRequest(filters=filters, include_offline=include_offline)
        reply: dict[str, Any] = self.client.get("/api/facets", **to_params(request))
        return reply

    def _params(self, k: int | None, folder: Path | None, include_offline: bool) -> dict[str, Any]:
        """A query's parameters in their wire form: k always (None: the configured default), a folder resolved here
        and sent in its stored form (pathtext.py), include_offline only when set."""
        return {
            "k": self._default_k if k is None else k,
            "folder": None if folder is None else to_text(_resolved(folder)),
            "include_offline": "true" if include_offline else None,
        }

    def _lookup(self, path: Path) -> dict[str, Any] | None:
        """The catalog row (id, status) of this path, or of where it resolves to, as Library.similar finds it."""
        for candidate in dict.fromkeys((path, path.resolve())):
            try:
                found: dict[str, Any] = self.client.get("/api/lookup", path=to_text(candidate))
                return found
            except PhotoNotFoundError:
                continue
        return None


def _resolved(folder: Path) -> Path:
    try:
        return folder.expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # as query/search.py's resolve_folder says it
        raise InvalidQueryError(f"{str(folder)!r} is not a usable folder path: {exc}") from None


def _results(reply: dict[str, Any]) -> list[SearchResult]:
    return [SearchResult.from_dict(r) for r in reply["results"]]
