"""search.default_k is the one default of every search: the library, the HTTP API and the CLI take it from the
config, and the config refuses a value no query could use (above MAX_K), in one line naming the key."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from helpers import Counted, HashEmbedder, hash_config, make_config, make_photo, stores_env
from PIL import Image

from photosearch.config import SearchConfig, load_config, replace
from photosearch.errors import ConfigError
from photosearch.library import Library
from photosearch.query.search import MAX_K
from photosearch.serving.httpapi import create_app
from photosearch.serving.webguard import CSRF_HEADER

pytestmark = pytest.mark.usefixtures("backend")  # the tests that index do so on each backend


@pytest.mark.parametrize("value", [MAX_K + 1, 10_000, 0])
def test_a_default_k_no_query_could_use_is_refused_naming_key_value_and_range(tmp_path, value):
    path = tmp_path / "config.toml"
    path.write_text(f"[search]\ndefault_k = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, use_default_file=False)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message and "search.default_k" in message
    assert f"got {value}" in message and f"from 1 to {MAX_K}" in message
    env = {"PHOTOSEARCH_SEARCH_DEFAULT_K": str(value)}
    with pytest.raises(ConfigError, match=r"PHOTOSEARCH_SEARCH_DEFAULT_K.*search\.default_k"):
        load_config(None, env=env, use_default_file=False)
    assert load_config(None, env={"PHOTOSEARCH_SEARCH_DEFAULT_K": str(MAX_K)}, use_default_file=False)


def test_the_library_and_the_http_api_use_the_configured_default_k(tmp_path):
    root = tmp_path / "lib"
    paths = [make_photo(root / f"p{i}.jpg", seed=i) for i in range(8)]
    config = replace(hash_config(tmp_path / "data"), search=SearchConfig(default_k=3))
    embedder = HashEmbedder()
    with Library.open(config, embedder_factory=lambda _config: embedder) as library:
        library.index([root])
        upload = io.BytesIO()
        Image.open(paths[0]).save(upload, format="JPEG")
        assert len(library.search("x")) == 3
        assert len(library.similar(paths[0])) == 3
        assert len(library.similar_to_image(upload.getvalue())) == 3

        with TestClient(create_app(library), base_url="http://127.0.0.1:8765", headers={CSRF_HEADER: "1"}) as client:
            search = client.get("/api/search", params={"q": "x"}).json()
            assert (len(search["results"]), search["k"], search["more"]) == (3, 3, True)
            photo_id = search["results"][0]["id"]
            assert len(client.get(f"/api/photos/{photo_id}/similar").json()["results"]) == 3
            files = {"file": ("q.jpg", upload.getvalue(), "image/jpeg")}
            assert len(client.post("/api/search/image", files=files).json()["results"]) == 3
            assert client.get("/api/search", params={"q": "x", "k": 5}).json()["k"] == 5  # a given k still wins
            schema = client.get("/api/openapi.json").json()
            k_param = next(p for p in schema["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "k")
            assert k_param["schema"]["default"] == 3


def test_the_cli_uses_the_configured_default_k_and_refuses_one_above_max_k_in_one_line(tmp_path, tiny_model_dir):
    root = tmp_path / "lib"
    for i in range(8):
        make_photo(root / f"p{i}.jpg", seed=i)
    data = tmp_path / "data"
    with Library.open(make_config(data, tiny_model_dir), embedder_factory=Counted()) as library:
        library.index([root])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")} | stores_env()
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}
    base = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(tiny_model_dir)]

    def run(default_k: int, *args: str) -> subprocess.CompletedProcess[str]:
        run_env = {**env, "PHOTOSEARCH_SEARCH_DEFAULT_K": str(default_k)}
        return subprocess.run([*base, *args], capture_output=True, text=True, env=run_env, timeout=300)

    found = run(3, "search", "x", "--json")
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.splitlines()) == 3
    refused = run(MAX_K + 1, "search", "x")
    assert refused.returncode == 78 and refused.stdout == ""  # EX_CONFIG
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "search.default_k" in lines[0] and f"got {MAX_K + 1}" in lines[0] and f"from 1 to {MAX_K}" in lines[0]
