"""`status` on shared stores: which servers are in use, whether the Chroma server answers, who is indexing."""

from __future__ import annotations

from helpers import HashEmbedder, hash_config, make_photo
from pgserver import PASSWORD

from photosearch.cli_status import print_status
from photosearch.config import StoreConfig
from photosearch.indexing.shared import heartbeat
from photosearch.library import Library


def test_status_names_the_servers_says_when_chroma_does_not_answer_and_lists_indexers(
    tmp_path, postgres_url, own_chroma_server, capsys
):
    for i in range(3):
        make_photo(tmp_path / "photos" / f"p{i}.jpg", seed=900 + i)
    config = hash_config(tmp_path / "data").model_copy(
        update={"store": StoreConfig(catalog=postgres_url, vectors=own_chroma_server.url, worker="nas")}
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
