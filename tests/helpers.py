"""Test helpers: photos made on the fly, and an Embedder that counts model calls around the real one."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from photosearch.config import Config, IndexConfig, ModelConfig, StoreConfig, WatchConfig
from photosearch.library import Library
from photosearch.models.embedder import load_embedder
from photosearch.models.identity import ModelIdentity
from photosearch.models.protocols import Embedder, ImageModel, TextModel
from photosearch.stores.catalog import Catalog
from photosearch.stores.claims import RUN_PREFIX, Claims, worker_name
from photosearch.stores.index import JOURNAL_KEY
from photosearch.stores.schema import PhotoStatus


def make_photo(path: Path, seed: int, size: tuple[int, int] = (320, 240), fmt: str | None = None) -> Path:
    """A distinct picture per seed: a coloured background with random shapes (not uniform noise)."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randrange(20, size[0]), y0 + rng.randrange(20, size[1]))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_two_roots(base: Path) -> tuple[Path, Path]:
    """Two library folders: A (3 photos) and B (5 photos, two in a subfolder), with distinct pictures."""
    a, b = base / "A", base / "B"
    for i in range(3):
        make_photo(a / f"a{i}.jpg", seed=i)
    for i in range(5):
        make_photo(b / ("trip" if i < 2 else "") / f"b{i}.jpg", seed=10 + i)
    return a, b


class CountingEmbedder:
    """Wraps a real embedder at the declared Embedder interface and counts what reaches the model."""

    def __init__(self, inner: Embedder, fail_after_batches: int | None = None) -> None:
        self.inner = inner
        self.image_calls = 0
        self.images = 0
        self.text_calls = 0
        self.fail_after_batches = fail_after_batches

    @property
    def identity(self) -> ModelIdentity:
        return self.inner.identity

    @property
    def preferred_batch_size(self) -> int:
        return self.inner.preferred_batch_size

    @property
    def input_side(self) -> int:
        return self.inner.input_side

    @property
    def on_cpu(self) -> bool:
        return self.inner.on_cpu

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return self.inner.prepare(image, source_size)  # CPU work in the decode threads: no model call yet

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        self._count(len(prepared))
        return self.inner.embed_prepared(prepared)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self._count(len(images))
        return self.inner.embed_images(images)

    def _count(self, images: int) -> None:
        """Every path to the model passes here once (the inner embedder's own calls are not seen)."""
        if self.fail_after_batches is not None and self.image_calls >= self.fail_after_batches:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run
        self.image_calls += 1
        self.images += images

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += 1
        return self.inner.embed_texts(texts)


class Counted:
    """An embedder factory for Library.open that loads the real model once and hands out counters."""

    def __init__(self) -> None:
        self.loaded: dict[str, Embedder] = {}
        self.last: CountingEmbedder | None = None
        self.fail_after_batches: int | None = None

    def __call__(self, config: ModelConfig) -> CountingEmbedder:
        if config.name not in self.loaded:
            self.loaded[config.name] = load_embedder(config)
        self.last = CountingEmbedder(self.loaded[config.name], self.fail_after_batches)
        return self.last

    @property
    def images(self) -> int:
        return self.last.images if self.last else 0


_stores = [StoreConfig()]  # where the configs below put the catalog and vectors: the `backend` fixture's choice


def use_stores(store: StoreConfig) -> None:
    """The stores of every config made by make_config and hash_config from now on (conftest.py's `backend`
    fixture: the data directory's, or a PostgreSQL database and a Chroma server database of the test's own)."""
    _stores[0] = store


def stores_env() -> dict[str, str]:
    """The same choice of stores for a photosearch process the test starts: its PHOTOSEARCH_STORE_* variables
    (none on the embedded stores)."""
    store = _stores[0]
    if not store.shared:
        return {}
    assert store.catalog and store.vectors
    return {"PHOTOSEARCH_STORE_CATALOG": store.catalog, "PHOTOSEARCH_STORE_VECTORS": store.vectors,
            "PHOTOSEARCH_STORE_DATABASE": store.database}  # fmt: skip


def on_servers() -> bool:
    """Whether this test's stores are the servers (the `backend` fixture's "servers")."""
    return _stores[0].shared


def make_config(data_dir: Path, model_dir: Path, **index: object) -> Config:
    return Config(
        data_dir=data_dir,
        model=ModelConfig(name=str(model_dir), batch_size=4),
        index=IndexConfig(**index),  # type: ignore[arg-type]
        store=_stores[0],
    )


def leave_as_killed(library: Library) -> None:
    """What a run killed mid-write leaves behind: on the embedded stores the run journal set; on shared stores a
    worker's run lease that expired (it stopped renewing it)."""
    if library.config.store.shared:
        dead = Claims(library.catalog, worker_name("killed"), lease=5)
        dead.take(RUN_PREFIX + dead.worker)
        dead.expire(RUN_PREFIX + dead.worker)
    else:
        library.catalog.set_meta({JOURNAL_KEY: "running pid=1"})


def run_left_unfinished(library: Library) -> bool:
    """Whether the last run stopped midway, as the next run will see it (leave_as_killed's two forms)."""
    if library.config.store.shared:
        return bool(library.claims.dead_runs())
    return library.catalog.get_meta(JOURNAL_KEY) is not None


def assert_stores_agree(library: Library) -> set[int]:
    """Chroma holds exactly one vector per distinct content of the indexed rows, nothing else; returns their ids."""
    catalog: Catalog = library.catalog
    indexed = catalog.ids_with_status(PhotoStatus.INDEXED)
    hashes = {r.content_hash for r in catalog.records(indexed).values()}
    stored = library.store().all_keys()
    assert stored == hashes, f"only in Chroma: {stored - hashes}, only in catalog: {hashes - stored}"
    assert library.stores().agree() and library.stores().vector_count() == len(hashes)
    return indexed


class HashEmbedder(ImageModel, TextModel):
    """A fast Embedder on the models' batching base (models/protocols.py), without a model: an image's vector is
    a deterministic function of its pixels. For bursts of thousands of photos on 2 cores, where even the tiny CLIP
    model would make the model, not the daemon, the thing measured. Counts every image it embeds, by pixel digest."""

    identity = ModelIdentity(name="test/hash-embedder", revision="1", dim=16)
    preferred_batch_size = 128  # few, large store writes: what the tests measure is the daemon, not Chroma
    input_side = 32
    on_cpu = True

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()  # pixel digest -> times embedded
        self._lock = threading.Lock()  # the daemon thread embeds while a test reads the counts

    @property
    def images(self) -> int:
        with self._lock:
            return sum(self.seen.values())

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        digests = [hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in prepared]
        with self._lock:
            self.seen.update(d.hex() for d in digests)
        return np.stack([_unit(d) for d in digests])

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([_unit(hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in texts])


def _unit(digest: bytes) -> np.ndarray:
    vector = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) - 127.5
    return vector / np.linalg.norm(vector)


def hash_config(data_dir: Path, **watch: object) -> Config:
    """A config whose model is the HashEmbedder (its name is what the index records)."""
    return Config(
        data_dir=data_dir,
        model=ModelConfig(name=HashEmbedder.identity.name, batch_size=HashEmbedder.preferred_batch_size),
        watch=WatchConfig(**watch),  # type: ignore[arg-type]
        store=_stores[0],
    )


def watch_with_hash_embedder(data_dir: str, watch_json: str) -> None:
    """`photosearch watch` in this process's main thread (so SIGTERM is handled as in the CLI), on the
    HashEmbedder, logging to the data directory's log file like the CLI: ``python -c`` runs it for tests."""
    import json
    import logging

    from photosearch.watching.daemon import Daemon

    config = hash_config(Path(data_dir), **json.loads(watch_json))
    config.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(config.log_dir / "photosearch.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("photosearch").addHandler(handler)
    logging.getLogger("photosearch").setLevel(logging.DEBUG)  # the debug lines must stay short too
    embedder = HashEmbedder()
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        Daemon(library).run()


def readme_json_keys(command: str) -> list[str]:
    """The keys the README's CLI reference table says `COMMAND --json` prints, in its order."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{command} "))
    listed = row.split("`--json` prints", 1)[1].split(".", 1)[0]  # "one object per line with `rank`, `id`, ..."
    return listed.split("`")[1::2]


def make_exif_photo(
    path: Path,
    seed: int,
    taken: str | None = None,
    make: str | None = None,
    model: str | None = None,
    gps: tuple[float, float] | None = None,
    size: tuple[int, int] = (96, 64),
) -> Path:
    """make_photo's picture as a JPEG with chosen EXIF: taken ("2019:06:14 10:00:00"), make, model, GPS position."""
    make_photo(path, seed, size)
    image = Image.open(path)
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: _dms(abs(lat)), 3: "E" if lon >= 0 else "W",
                                     4: _dms(abs(lon))})  # fmt: skip
    image.save(path, format="JPEG", exif=exif, quality=90)
    return path


def _dms(degrees: float) -> tuple[float, float, float]:
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    return (float(whole), float(minutes), round((degrees - whole - minutes / 60) * 3600, 4))
