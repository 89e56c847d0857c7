"""The library API: what the CLI and the HTTP app call. It wires the stages together and owns their lifetimes.

    with Library.open(load_config()) as lib:
        lib.index([Path("~/Pictures")])
        for hit in lib.search("a dog on the beach", k=5):
            print(hit.score, hit.path)

The model and Chroma are opened lazily, so `status` and a run with nothing to do stay cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from photosearch.config import Config, ModelConfig, StoreConfig
from photosearch.errors import LibraryBusyError, LibraryRootError, WriterBusyError
from photosearch.filters import Filters
from photosearch.indexing import places
from photosearch.indexing import roots as roots_ops
from photosearch.indexing.planner import Scope
from photosearch.indexing.report import IndexReport, Progress, ReindexReport
from photosearch.indexing.roots import (
    MovedRoot,
    RootOverview,
    find_root,
    folder_path,
    moved_roots,
    offline_roots,
    overview,
)
from photosearch.librarystatus import LibraryStatus as LibraryStatus  # re-exported: what status() gives
from photosearch.librarystatus import unanswered
from photosearch.locking import Writer
from photosearch.models.identity import ModelIdentity, recorded_name
from photosearch.models.loaded import EmbedderFactory, LoadedModels, TextEncoderFactory
from photosearch.models.protocols import Embedder, TextEmbedder
from photosearch.models.textencoder import load_text_encoder
from photosearch.query.result import SearchPage, SearchResult
from photosearch.query.runner import QueryRunner, QueryWiring
from photosearch.query.spec import SearchRequest
from photosearch.stores import generations, rebuild
from photosearch.stores.catalog import Catalog, PhotoRecord, RootInfo
from photosearch.stores.claims import Claims, worker_name
from photosearch.stores.daemonrecord import DaemonRecord
from photosearch.stores.generations import Generation
from photosearch.stores.index import Index
from photosearch.stores.queue import WorkQueue
from photosearch.stores.schema import PhotoStatus
from photosearch.stores.vectors import VectorStore, open_vectors
from photosearch.watching.handoff import hand_to_daemon

if TYPE_CHECKING:
    from photosearch.indexing.indexer import Indexer
    from photosearch.indexing.shared import SharedIndexer
    from photosearch.stores.copy import CopyProgress, CopyReport

StopCheck = Callable[[], bool]
log = logging.getLogger(__name__)


def _never() -> bool:
    return False


def load_embedder(config: ModelConfig) -> Embedder:
    """The full model (models/embedder.py), whose module imports PIL and the preprocessing: only when loaded."""
    from photosearch.models.embedder import load_embedder as load

    return load(config)


REINDEX_LEASE = "reindex"  # shared stores: the one worker that rebuilds the vectors for a new model
ROOTS_WAIT = 60.0  # seconds a roots change waits for the daemon's batch in flight (HTTP clients give up at 120)


class Library:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        embedder_factory: EmbedderFactory,
        text_encoder_factory: TextEncoderFactory | None = None,
    ) -> None:
        self.config = config
        # The stores, wired here once; the daemon and the adapters use these, never SQL or the catalog's meta keys.
        self.catalog = catalog
        self.queue = WorkQueue(catalog)  # the watch daemon's changed paths (and folders handed to it)
        self.daemon_record = DaemonRecord(catalog)  # the daemon's start and last error, for `status`
        self.models = LoadedModels(config.model, catalog, embedder_factory, text_encoder_factory)
        self._store_instance: VectorStore | None = None
        # One Chroma client (the data directory's or store.vectors' server) for the active and a reindex's collection.
        self._chroma = open_vectors(config)
        # The writer lock, and one writing thread at a time. Shared stores take no lock file: several processes
        # write them at once, splitting the work through claims in the catalog (indexing/shared.py).
        self._writer = Writer(config.data_dir, lock_file=not config.store.shared)
        self.claims = Claims(catalog, worker_name(config.store.worker), config.store.lease)
        self._init_lock = threading.RLock()  # the store
        self.queries = QueryRunner(QueryWiring(
            catalog, self.store, lambda: self._store_instance is not None, self.text_embedder,
            lambda: self.models.text_loaded, self.embedder, config.search.default_k, config.index.max_image_pixels,
        ))  # fmt: skip

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        embedder_factory: EmbedderFactory | None = None,
        text_encoder_factory: TextEncoderFactory | None = None,
    ) -> Library:
        """Open (creating if needed) the library whose data lives in config.data_dir.

        embedder_factory replaces the CLIP loader: any object following the Embedder protocol will do. Without
        one, text queries use the ONNX Runtime text encoder (textencoder.py) when the model allows, so a search never
        imports torch; with one, text queries go through the given Embedder too. text_encoder_factory replaces the
        text encoder's loader (the CLI's, which starts loading it before this module is imported).
        """
        catalog = Catalog.open(config.catalog_url, config.data_dir, paths=config.store.paths)
        if embedder_factory is not None:
            return cls(config, catalog, embedder_factory)
        return cls(config, catalog, load_embedder, text_encoder_factory or load_text_encoder)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # -- model and store -------------------------------------------------------------------------------
    def stored_model(self) -> ModelIdentity | None:
        """The model of the index that search reads (while a reindex runs, the one it replaces)."""
        return self.models.stored()

    def embedder(self) -> Embedder:
        """The index's model, loaded once; refused if the index was built with another model."""
        return self.models.embedder()

    def warm_vectors(self) -> int:
        """Read the index's vectors into memory (as many as stores/vector_cache.py allows), so that filtered
        queries search exactly and fast from then on: `serve` does, in the background. How many it holds."""
        if generations.active(self.catalog) is None:
            return 0  # nothing indexed yet: no collection to read (and no model to create one with)
        return self.store().warm()

    def warm_search(self) -> None:
        """Load what a text search needs and answer one (`serve` does before its page answers): its first user's
        search then takes as long as any other. Nothing to load before anything is indexed."""
        if generations.active(self.catalog) is not None:
            self.queries.warm()

    def text_embedder(self) -> TextEmbedder:
        """What encodes text queries, loaded once (models/loaded.py)."""
        return self.models.text_embedder()

    def store(self) -> VectorStore:
        """The active collection: reopened when a reindex (here or in another process) switched to a new one."""
        with self._init_lock:
            active = generations.active(self.catalog)
            self.models.check_against(active.model if active else None)
            active = active or self._first_generation()
            if self._store_instance is None or self._store_instance.name != active.collection:
                self._store_instance = VectorStore.open(self._chroma, active.collection, active.model.to_dict())
            return self._store_instance

    def _first_generation(self) -> Generation:
        self.models.embedder()  # records the model it loaded
        active = generations.active(self.catalog)
        assert active is not None
        return active

    def stores(self) -> Index:
        """The catalog and the active collection together: the one way to read and write both."""
        return Index(self.catalog, self.store, self._chroma)

    # -- roots and indexing ----------------------------------------------------------------------------
    def add_roots(self, paths: Sequence[Path]) -> list[RootInfo]:
        added = []
        for path in paths:
            resolved = folder_path(path)
            if not resolved.is_dir():
                raise LibraryRootError(f"{path} is not a folder" if resolved.exists() else f"{path} does not exist")
            added.append(self.catalog.add_root(resolved))
        return added

    def roots(self) -> list[RootInfo]:
        return self.catalog.roots()

    def roots_overview(self) -> tuple[list[RootOverview], list[MovedRoot]]:
        """Every root with its photo count and whether it is missing; and the missing ones that look moved."""
        return overview(self.catalog, self.roots())

    def remove_root(self, which: Path | int) -> int:
        """Forget a library folder (by path or id) and its photos in both stores (not the files); how many went."""
        with self._writer.turn("roots", wait=ROOTS_WAIT):
            return roots_ops.remove_root(self.catalog, self._existing_store, find_root(self.roots(), which))

    def move_root(self, which: Path | int, new_path: Path, force: bool = False) -> RootInfo:
        """Point a library folder at where it is now, reading and embedding nothing; ``force``: even if not there."""
        with self._writer.turn("roots", wait=ROOTS_WAIT):
            roots, new = self.roots(), folder_path(new_path)
            return roots_ops.move_root(self.catalog, self._existing_store, roots, find_root(roots, which), new, force)

    def _existing_store(self) -> Index | None:
        return self.stores() if self.stored_model() is not None else None  # no model yet: no vectors, no loading

    def writing(self, role: str) -> AbstractContextManager[None]:
        """Hold the data directory's writer lock (re-entrant within this Library)."""
        return self._writer.holding(role)

    def index(
        self,
        paths: Sequence[Path] = (),
        progress: Progress | None = None,
        should_stop: StopCheck = _never,
        settle: float | None = None,
    ) -> IndexReport:
        """Index the given folders (remembering them as roots), or every known root when none are given.

        When the `watch` daemon runs for this data directory, the folders are handed to it instead.
        """
        roots = self.add_roots(paths) if paths else self.roots()
        if not roots:
            raise LibraryRootError("no library folders yet: run `photosearch index FOLDER` once to add one")
        self.models.check_name()
        try:
            with self._writer.turn("index"):
                self._tidy()
                rebuilt = self._rebuild(progress, should_stop, start=False)  # a reindex under way is carried on first
                report = self._indexer().run(roots, progress, should_stop=should_stop, settle=settle)
                report.add_reindex(rebuilt)
                self._tidy()  # a first run's collection, with the store still open: the next run needs no Chroma
        except WriterBusyError as busy:
            return hand_to_daemon(self.queue, roots, busy)  # raised again unless `watch` holds the lock
        self._after_run(roots, report)
        return report

    def _after_run(self, roots: Sequence[RootInfo], report: IndexReport) -> None:
        """Note which roots a run indexed, and report the missing roots whose photos turned up elsewhere; the
        catalog's statistics refreshed (Catalog.optimize)."""
        places.fill(self.catalog)  # new photos' places, and those of a catalog from before places were recorded
        self.catalog.optimize()
        if generations.active(self.catalog) is not None:
            self.store().refresh_file()  # the vector files a new process searches, if a crash left them behind
        for root in roots:
            if root.path not in report.missing_roots:
                self.catalog.mark_root_indexed(root.id)
        # Over every root, not only this run's: `index B2` after renaming B to B2 is when B's photos turn up.
        everything = self.roots()
        report.moved_roots = moved_roots(self.catalog, everything, offline_roots(self.catalog, everything))

    def index_changes(self, scope: Scope, should_stop: StopCheck = _never, settle: float | None = None) -> IndexReport:
        """Index only the changed paths of ``scope`` (what the daemon calls for its queue)."""
        with self._writer.turn("index"):
            report = self._indexer().run(self.roots(), scope=scope, should_stop=should_stop, settle=settle)
        places.fill(self.catalog)
        return report

    def embed_queued(self, should_stop: StopCheck = _never) -> IndexReport | None:
        """Shared stores: embed photos that other workers queued (the daemon's idle step); None when not shared."""
        if not self.config.store.shared:
            return None
        from photosearch.indexing.shared import SharedIndexer

        with self._writer.turn("index"):
            indexer = self._indexer()
            assert isinstance(indexer, SharedIndexer)
            return indexer.embed_queued(self.roots(), should_stop)

    def _indexer(self) -> Indexer | SharedIndexer:
        # The pipeline's modules (PIL, the decoders) are imported only by what indexes: a search needs none of them.
        if self.config.store.shared:
            from photosearch.indexing.shared import SharedIndexer

            return SharedIndexer(self.config, self.stores(), self.embedder, self.claims)
        from photosearch.indexing.indexer import Indexer

        return Indexer(self.config, self.stores(), self.embedder)

    def _tidy(self) -> None:
        """Writers only: drop collections nothing uses (rebuild.tidy), keeping an older index's vectors. On shared
        stores only while no other worker reindexes (its new collection is in use). Nothing to drop (the common
        case): neither Chroma started nor a turn taken."""
        found = generations.in_use(self.catalog)
        if found is None or not found[2]:
            return
        with self._reindex_turn() as mine:  # (tidy reads the record again: under the turn, it is the one that counts)
            if mine:
                rebuild.tidy(self.catalog, self._chroma)

    def _reindex_turn(self) -> AbstractContextManager[bool]:
        """Whether this process may change the collections (tidy, reindex) in the block (shared.py's turn)."""
        if not self.config.store.shared:
            return nullcontext(True)
        from photosearch.indexing.shared import turn

        return turn(self.claims, REINDEX_LEASE)

    def reindex(self, progress: Progress | None = None, should_stop: StopCheck = _never) -> IndexReport:
        """Rebuild every vector with the configured model (after changing model.name, say), beside the current
        ones: search answers from the current index, with its model, until the new one is complete. Stopped, the
        next reindex, index run or daemon start carries on where it stopped. Then indexes what changed."""
        with self._writer.turn("reindex"):
            self._tidy()
            rebuilt = self._rebuild(progress, should_stop, start=True)
            report = self.index(progress=progress, should_stop=should_stop)
            report.add_reindex(rebuilt)
            return report

    def _rebuild(self, progress: Progress | None, should_stop: StopCheck, start: bool) -> ReindexReport | None:
        """Carry on the reindex under way to the configured model (or, with ``start``, begin one)."""
        target = generations.target(self.catalog)
        wanted = target is not None and target.model.matches(self.config.model.name)
        if self.stored_model() is None or not (start or wanted):
            return None  # nothing indexed yet (an index run embeds it all), or no reindex to carry on
        with self._reindex_turn() as mine:
            if not mine:
                log.info("another worker is reindexing the shared library: leaving the reindex to it")
                return None
            from photosearch.indexing.reindexer import Reindexer

            embedder = self.models.configured()
            job = rebuild.Rebuild.resume_or_start(self.catalog, self._chroma, embedder.identity)
            index = self.stores()
            with index.journal("reindexing"):
                report = Reindexer(index, job, lambda: embedder, self.roots(), self.config.index.max_image_pixels,
                                   should_stop).run(progress)  # fmt: skip
        if report.complete:
            self.models.switched_to(embedder)  # the index's model now; store() and the text encoder follow
        return report

    def cancel_reindex(self) -> Generation | None:
        """Abandon the reindex under way, freeing its space; the current index stays as it is. What was cancelled."""
        with self._writer.turn("reindex"):
            return rebuild.cancel(self.catalog, self._chroma)

    def copy_to(self, target: StoreConfig, progress: CopyProgress | None = None, page: int | None = None) -> CopyReport:
        """Copy this library's stores to ``target``'s catalog and Chroma server (stores/copy.py): nothing embedded,
        resumable, verified. Under the writer lock, so no `watch` or `index` changes the source meanwhile."""
        from photosearch.stores.copy import PAGE, Stores, copy_to

        with ExitStack() as held:
            try:
                held.enter_context(self._writer.holding("store copy"))
            except WriterBusyError as busy:
                raise LibraryBusyError(f"{busy}: stop it first, then copy") from None
            return copy_to(Stores(self.catalog, self._chroma), self.config, target, progress, page or PAGE)

    # -- queries ---------------------------------------------------------------------------------------
    def query(self, request: SearchRequest) -> SearchPage:
        """A combined query, filters, an order, a cutoff, a page (query/spec.py): the one entry of every search."""
        return self.queries.query(request)

    def search(
        self, query: str, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        """Photos that match a text query, best first (``k`` None: search.default_k)."""
        return self.queries.search(query, k, folder, include_offline)

    def similar(
        self, photo: Path, k: int | None = None, folder: Path | None = None, include_offline: bool = False
    ) -> list[SearchResult]:
        """Photos like PHOTO: an indexed photo (its stored vector is used, and it is left out of the results)
        or any image file."""
        return self.queries.similar(photo, k, folder, include_offline)

    def similar_to_image(
        self,
        data: bytes,
        k: int | None = None,
        name: str = "upload",
        include_offline: bool = False,
        folder: Path | None = None,
    ) -> list[SearchResult]:
        """Photos like an image given as bytes (an upload): decoded like any photo, EXIF orientation applied."""
        return self.queries.similar_to_image(data, name, k, folder, include_offline)

    def facets(self, filters: Filters | None = None, include_offline: bool = False) -> dict[str, Any]:
        """Cameras, years and months, places, types and positions present (among the photos the filters keep),
        with counts: what the page's filter bar offers (query/facets.py)."""
        return self.queries.facets(filters or Filters(), include_offline)

    def upload(self, data: bytes, name: str = "upload") -> str:
        """Embed an image given as bytes for later queries (Example.upload): its reference."""
        return self.queries.upload(data, name)

    def photo(self, photo_id: int) -> PhotoRecord:
        return self.catalog.get(photo_id)

    def photo_at(self, path: Path) -> PhotoRecord | None:
        """The catalog row of exactly this path (compared as stored, the file never opened), if any."""
        return self.catalog.by_path(path)

    # -- status ----------------------------------------------------------------------------------------
    def status(self) -> LibraryStatus:
        counts = self.catalog.counts()
        roots = self.roots()
        stored = self.stored_model()
        offline = offline_roots(self.catalog, roots)
        vectors_error = None if self.config.store.vectors is None else unanswered(self._chroma)
        return LibraryStatus(
            roots=roots,
            missing_roots=[r.path for r in roots if r.id in offline],
            indexed=counts[PhotoStatus.INDEXED.value],
            pending=counts[PhotoStatus.PENDING.value],
            failed=counts[PhotoStatus.FAILED.value],
            model=stored.describe() if stored else None,
            configured_model=recorded_name(self.config.model.name),
            model_matches=stored is None or stored.matches(self.config.model.name),
            data_dir=self.config.data_dir,
            catalog=self.catalog.describe(),
            catalog_bytes=self.catalog.size_bytes(),
            vectors_bytes=self._chroma.size_bytes(),
            vectors_at=self._chroma.describe(),
            reindex=None if vectors_error else self._reindex_progress(),
            moved_roots=moved_roots(self.catalog, roots, offline),
            vectors_error=vectors_error,
            workers=self.claims.running() if self.config.store.shared else [],
        )

    def _reindex_progress(self) -> tuple[str, int, int] | None:
        found = rebuild.progress(self.catalog, self._chroma)
        return None if found is None else (found[0].model.describe(), found[1], found[2])

    def failures(self) -> list[tuple[Path, str]]:
        return self.catalog.failures()

    def status_report(self) -> dict[str, Any]:
        """status() in its JSON form with the watch daemon's state: what `status --json` prints and GET /api/status
        answers (the query interface's, query/api.py, which a server's RemoteLibrary gives too)."""
        from photosearch.watching.daemon import daemon_state  # it imports this module

        return self.status().to_dict() | {"daemon": daemon_state(self)}
