"""`status` on shared stores: which servers are in use, whether the Chroma server answers, who is indexing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from chromaserver import free_port
from helpers import HashEmbedder, hash_config, make_photo
from pgserver import PASSWORD

from photosearch.cli_status import print_status
from photosearch.config import StoreConfig, replace
from photosearch.indexing.shared import heartbeat
from photosearch.library import Library


def test_status_names_the_servers_says_when_chroma_does_not_answer_and_lists_indexers(
    tmp_path, postgres_url, own_chroma_server, capsys
):
    for i in range(3):
        make_photo(tmp_path / "photos" / f"p{i}.jpg", seed=900 + i)
    config = replace(
        hash_config(tmp_path / "data"),
        store=StoreConfig(catalog=postgres_url, vectors=own_chroma_server.url, worker="nas"),
    )
    embedder = HashEmbedder()
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        library.index([tmp_path / "photos"])
        status = library.status()
        assert status.vectors_error is None and status.workers == [] and status.indexed == 3
        assert "***" in status.catalog and PASSWORD not in status.catalog
        with heartbeat(library.claims):  # as during a run
            assert [w.split("/")[0] for w in library.status().workers] == ["nas"]
        own_chroma_server.stop(kill=True)
        down = library.status().to_dict()
        assert own_chroma_server.url in str(down["vectors_error"]) and down["indexed"] == 3
        print_status(down)
    lines = capsys.readouterr().out.splitlines()
    vectors = next(line for line in lines if line.startswith("vectors "))
    assert own_chroma_server.url in vectors and "not answering" in vectors
    assert any(line.startswith("catalog ") and "postgresql" in line for line in lines)


def test_status_with_the_catalog_down_names_both_stores_says_which_answers_and_fails(tmp_path, chroma_server):
    """PostgreSQL not answering: `status` cannot count photos, but still says where the stores are and why the
    catalog does not answer, in one line of error and a non-zero exit (the real CLI, in a subprocess)."""
    down = f"postgresql+psycopg://photosearch:{PASSWORD}@127.0.0.1:{free_port()}/photos"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PHOTOSEARCH_DATA_DIR": str(tmp_path / "data"),
            "PHOTOSEARCH_STORE_CATALOG": down, "PHOTOSEARCH_STORE_VECTORS": chroma_server.url}  # fmt: skip

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "photosearch", "status", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    text = status()
    assert text.returncode == 69, text
    [error] = text.stderr.splitlines()
    assert "127.0.0.1" in error and "refused" in error and PASSWORD not in error
    catalog = next(line for line in text.stdout.splitlines() if line.startswith("catalog "))
    assert "not answering" in catalog and "***" in catalog and PASSWORD not in text.stdout
    vectors = next(line for line in text.stdout.splitlines() if line.startswith("vectors "))
    assert chroma_server.url in vectors and "not answering" not in vectors

    data = status("--json")
    assert data.returncode == 69
    info = json.loads(data.stdout)
    assert "refused" in info["catalog_error"] and info["vectors_error"] is None
    assert info["vectors_at"].startswith(chroma_server.url)
