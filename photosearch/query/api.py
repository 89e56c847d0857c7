"""The query interface: what the CLI asks of a library, answered alike by the library in this process
(``photosearch.library.Library``) and by a running `photosearch serve` (``photosearch.serving.remote.RemoteLibrary``).
So each command has one code path, whichever of the two answers it.

Cheap to import (no numpy, no stores): the CLI names it before it knows which side it will use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from photosearch.filters import Filters
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.spec import SearchRequest


class Queries(Protocol):
    """``k`` None means the configured search.default_k; ``folder`` keeps photos under it (inside a library folder);
    ``include_offline`` also gives photos of missing library folders."""

    def query(self, request: SearchRequest) -> SearchPage:
        """A combined query, filters, an order, a cutoff and a page (query/spec.py), or a timeline."""
        ...

    def search(
        self, query: str, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        """Photos that match a text query, best first."""
        ...

    def similar(
        self, photo: Path, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        """Photos like PHOTO: an indexed photo (left out of its results) or any image file."""
        ...

    def status_report(self) -> dict[str, Any]:
        """The library's status in its JSON form, the watch daemon's state under "daemon": what `status --json`
        prints and GET /api/status answers."""
        ...

    def failures(self) -> list[tuple[Path, str]]:
        """The files that failed to index, with the reasons."""
        ...

    def facets(self, filters: Filters | None = None, include_offline: bool = False) -> dict[str, Any]:
        """The cameras, years and months, places, types and positions among the photos the filters keep, with
        counts (query/facets.py): what `photosearch facets` prints and GET /api/facets answers."""
        ...
