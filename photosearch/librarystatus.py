"""What `photosearch status` reports about a library, in one dataclass and its JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from photosearch.config import Config
from photosearch.errors import CatalogUnavailableError, VectorStoreError
from photosearch.indexing.roots import MovedRoot
from photosearch.pathtext import display
from photosearch.stores.catalog import RootInfo
from photosearch.stores.catalog_engine import display_catalog_url
from photosearch.stores.vectors import ChromaPlace, open_vectors


@dataclass(frozen=True)
class LibraryStatus:
    roots: list[RootInfo]
    missing_roots: list[Path]
    indexed: int
    pending: int
    failed: int
    model: str | None  # what the index was built with
    configured_model: str
    model_matches: bool  # the index was built with the configured model.name (or nothing is indexed yet)
    data_dir: Path
    catalog_bytes: int
    vectors_bytes: int | None  # None: the vectors are on a Chroma server, whose disk is not ours to sum
    vectors_at: str = ""  # the embedded store's folder, or the server's URL, tenant and database
    catalog: str = ""  # where it is: the SQLite file, or the PostgreSQL URL without its password
    moved_roots: list[MovedRoot] = field(default_factory=list)  # missing roots whose photos turned up elsewhere
    reindex: tuple[str, int, int] | None = None  # a reindex under way: (its model, hashes done, hashes in all)
    vectors_error: str | None = None  # the Chroma server does not answer: why (one line)
    workers: list[str] = field(default_factory=list)  # shared stores: the indexers running now (their names)

    def to_dict(self) -> dict[str, object]:
        return {
            "roots": [display(r.path) for r in self.roots],
            "missing_roots": [display(p) for p in self.missing_roots],
            "indexed": self.indexed,
            "pending": self.pending,
            "failed": self.failed,
            "model": self.model,
            "configured_model": self.configured_model,
            "model_matches": self.model_matches,
            "data_dir": str(self.data_dir),
            "catalog": self.catalog,
            "catalog_bytes": self.catalog_bytes,
            "vectors_bytes": self.vectors_bytes,
            "vectors_at": self.vectors_at,
            "moved_roots": [m.to_dict() for m in self.moved_roots],
            "reindex": self.reindex and dict(zip(("model", "done", "total"), self.reindex, strict=True)),
            "vectors_error": self.vectors_error,
            "workers": self.workers,
        }


def unanswered(vectors: ChromaPlace) -> str | None:
    """Why a Chroma server does not answer (one line), or None when it does."""
    try:
        vectors.names()
    except VectorStoreError as exc:
        return str(exc)
    return None


def catalog_down(config: Config, error: CatalogUnavailableError) -> dict[str, object]:
    """What `status` can still say when the catalog does not answer: where both stores are and why the catalog does
    not answer, and whether the Chroma server does (a part of LibraryStatus's JSON form, its keys the same)."""
    vectors = open_vectors(config)
    return {
        "data_dir": str(config.data_dir),
        "catalog": display_catalog_url(config.catalog_url),
        "catalog_error": str(error),
        "vectors_at": vectors.describe(),
        "vectors_error": None if config.store.vectors is None else unanswered(vectors),
    }
