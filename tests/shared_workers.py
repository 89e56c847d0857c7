"""An indexer process on shared stores, for the concurrency tests: ``python -c`` runs ``index_worker`` in a fresh
interpreter, as `photosearch index` would run on another machine. Its model is the HashEmbedder (slowed a little
per batch, so a SIGKILL lands mid-batch), and it writes which pictures it embedded to a JSON file: the test adds
up the model calls of every process."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from helpers import HashEmbedder

from photosearch.config import Config, ModelConfig, StoreConfig, validated
from photosearch.errors import PhotosearchError
from photosearch.library import Library


class SlowHashEmbedder(HashEmbedder):
    preferred_batch_size = 8  # small batches: the workers interleave on 1,000 photos

    def __init__(self, seen_file: Path, delay: float) -> None:
        super().__init__()
        self._seen_file = seen_file
        self._delay = delay

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        vectors = super()._embed_image_batch(prepared)
        time.sleep(self._delay)  # the model's time: what a killed worker is in the middle of
        write_seen(self._seen_file, self.seen)  # the model was called: on disk before the write
        return vectors


def write_seen(path: Path, seen: Mapping[str, int]) -> None:
    """Whole or not at all (a rename): the test reads it while the worker runs."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(dict(seen)))
    partial.replace(path)


def shared_config(data_dir: Path, store: dict[str, object], batch_size: int = 8) -> Config:
    return Config(
        data_dir=data_dir,
        model=ModelConfig(name=HashEmbedder.identity.name, batch_size=batch_size),
        store=validated(StoreConfig, store),
    )


def index_worker(data_dir: str, store_json: str, seen_file: str, roots_json: str, delay: float = 0.01) -> None:
    """Index the roots on the shared stores, then print the report as JSON on stdout."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(process)d %(name)s: %(message)s"))
    logging.getLogger("photosearch").addHandler(handler)
    logging.getLogger("photosearch").setLevel(logging.INFO)
    config = shared_config(Path(data_dir), json.loads(store_json))
    embedder = SlowHashEmbedder(Path(seen_file), delay)
    try:
        with Library.open(config, embedder_factory=lambda _config: embedder) as library:
            report = library.index([Path(p) for p in json.loads(roots_json)])
    except PhotosearchError as exc:  # as the CLI reports it (cli.main): one line, the error's exit code
        write_seen(Path(seen_file), embedder.seen)
        print(f"photosearch: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    write_seen(Path(seen_file), embedder.seen)
    print(json.dumps({"new": report.new, "embedded": report.embedded, "reused": report.reused,
                      "queued": report.queued, "reconciled": report.reconciled}))  # fmt: skip


def worker_command(data_dir: Path, store: dict[str, object], seen_file: Path, roots: Sequence[Path],
                   delay: float = 0.01) -> list[str]:  # fmt: skip
    args = [str(data_dir), json.dumps(store), str(seen_file), json.dumps([str(r) for r in roots]), delay]
    code = f"import shared_workers; shared_workers.index_worker(*{args!r})"
    return [sys.executable, "-c", code]
