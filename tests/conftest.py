"""Shared fixtures: paths to ../shared, the real test photos, a tiny real CLIP model, and real PostgreSQL and
Chroma servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromaserver import ChromaServer
from pgserver import PostgresServer

from photosearch.config import StoreConfig

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared").resolve()  # as the catalog stores paths: a ../shared that is a symlink, resolved
EXIF_SAMPLES = SHARED / "testdata" / "exif-samples"
CLIP_FILES = SHARED / "clip-tokenizer"


@pytest.fixture(scope="session")
def exif_samples() -> Path:
    assert EXIF_SAMPLES.is_dir(), f"test photos missing: {EXIF_SAMPLES} (../shared must sit beside the repo)"
    return EXIF_SAMPLES


@pytest.fixture(scope="session")
def clip_files() -> Path:
    assert CLIP_FILES.is_dir(), f"CLIP tokenizer files missing: {CLIP_FILES}"
    return CLIP_FILES


_TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def _save_tiny_clip(folder: Path, clip_files: Path, seed: int) -> Path:
    """A real CLIPModel (random weights, tiny sizes) saved exactly like a downloaded checkpoint.

    The tokenizer and preprocessor files are the real ViT-B/32 ones, so the folder loads through the same code
    path as a real model; only the network sizes differ (projection_dim 16).
    """
    import shutil

    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "vocab_size": 49408,  # the real tokenizer's ids must all be valid
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        shutil.copy(clip_files / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, clip_files: Path) -> Path:
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-clip-a"), clip_files, seed=1234)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory: pytest.TempPathFactory, clip_files: Path) -> Path:
    """Same architecture as tiny_model_dir, different weights: a different model as far as the index cares."""
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-clip-b"), clip_files, seed=5678)


@pytest.fixture
def run_unprivileged():
    """Run a command without the capabilities that let root ignore file permissions (as is when not root),
    so tests of unreadable files and folders are real in CI, which runs as root."""
    import os
    import subprocess

    def run(cmd, check=True, **kwargs):
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        result = subprocess.run(prefix + list(cmd), capture_output=True, text=True, **kwargs)
        assert result.returncode == 0 or not check, result.stderr
        return result

    return run


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server, one per xdist worker (~1.5 s to start). Without PostgreSQL's binaries this
    fails, on purpose: a skip would let CI pass without ever testing the PostgreSQL catalog."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server (~0.2 s), dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A blank catalog's URL on each backend: a SQLite file in tmp_path, a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One `chroma run` per test process (per xdist worker), or PHOTOSEARCH_TEST_CHROMA's server. One that does
    not start fails the tests that need it, with its log: the server backend is not optional."""
    server = ChromaServer.from_env(tmp_path_factory.mktemp("chroma-server") / "data")
    yield server
    if not server.external:
        server.stop()


@pytest.fixture
def chroma_store_config(chroma_server: ChromaServer) -> StoreConfig:
    """store.vectors on the shared server, in a database of this test's own: no test sees another's collections."""
    return StoreConfig(vectors=chroma_server.url, database=f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def own_chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A server for one test alone, to kill and restart (the fault tests)."""
    server = ChromaServer(tmp_path / "chroma-server")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def shared_store(postgres_url: str, chroma_store_config: StoreConfig) -> dict[str, object]:
    """Both stores on servers, of this test's own (a new PostgreSQL database, a new Chroma database): what
    several machines share. As the [store] table of a config."""
    return {"catalog": postgres_url, "vectors": chroma_store_config.vectors, "database": chroma_store_config.database}


@pytest.fixture(params=["embedded", "servers"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test on both backends: the configs that tests/helpers.py makes put the stores in the data directory,
    or on the servers (shared_store). A module opts in with ``pytestmark = pytest.mark.usefixtures("backend")``."""
    from helpers import use_stores

    store = StoreConfig() if request.param == "embedded" else StoreConfig(**request.getfixturevalue("shared_store"))
    use_stores(store)
    yield str(request.param)
    use_stores(StoreConfig())


@pytest.fixture(scope="module", params=["embedded", "servers"])
def module_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """`backend` for a module whose library is built once (a module-scoped fixture): its tests run on the
    embedded stores, then on a PostgreSQL database and a Chroma database of the module's own. A module opts in
    with ``pytestmark = pytest.mark.usefixtures("module_backend")``, listed first by its module fixtures."""
    from helpers import use_stores

    if request.param == "embedded":
        use_stores(StoreConfig())
        yield "embedded"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    chroma: ChromaServer = request.getfixturevalue("chroma_server")
    url = postgres.create_database()
    use_stores(StoreConfig(catalog=url, vectors=chroma.url, database=f"test_{uuid.uuid4().hex[:16]}"))
    yield "servers"
    use_stores(StoreConfig())
    postgres.drop_database(url)


@pytest.hookimpl(hookwrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: pytest.TestReport) -> Iterator[None]:
    """A report may hold file names that are not UTF-8 (lone surrogates, as Python decodes them: in captured
    output, a failure's message), which pytest-xdist cannot send from a worker: the whole worker would crash,
    its remaining tests unrun. They are sent escaped (\\udc80) instead."""
    outcome = yield
    data = outcome.get_result()  # type: ignore[attr-defined]
    if data is not None:
        outcome.force_result(_sendable(data))  # type: ignore[attr-defined]


def _sendable(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_sendable(k): _sendable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_sendable(v) for v in value)
    return value
