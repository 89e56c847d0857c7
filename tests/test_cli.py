"""Every CLI command end to end: the real entry point in a subprocess, with a tiny real CLIP model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import Counted, assert_stores_agree, make_config, make_photo, on_servers, readme_json_keys, stores_env
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
def env(tmp_path, backend):
    """A clean environment: no user config file, no PHOTOSEARCH_* from the developer's shell; the stores of the
    backend under test."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")} | stores_env()
    clean["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    clean["HF_HOME"] = str(tmp_path / "hf-home")  # an empty Hugging Face cache
    return clean


@pytest.fixture
def ps(tmp_path, tiny_model_dir, env):
    data = tmp_path / "data"

    def run(*args, expect=0, model=tiny_model_dir, extra_env=None):
        cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(model), *map(str, args)]
        result = subprocess.run(cmd, capture_output=True, text=True, env={**env, **(extra_env or {})}, timeout=300)
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return result

    run.model = tiny_model_dir
    return run


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "Pictures"
    for i in range(5):
        make_photo(root / f"p{i}.jpg", seed=i)
    for i in range(5, 8):
        make_photo(root / "2024" / f"q{i}.png", seed=i)
    (root / "broken.jpg").write_bytes(b"not a photo")
    return root


def test_index_search_similar_status(ps, photos, tiny_model_dir, tmp_path):
    out = ps("index", photos).stdout
    assert out.startswith("8 new, 0 changed, 0 unchanged, 0 moved, 0 removed, 1 failed")
    assert ps("index").stdout.startswith("0 new, 0 changed, 8 unchanged")  # every remembered root

    lines = ps("search", "a dog on the beach", "-k", "3", "--json").stdout.splitlines()
    hits = [json.loads(line) for line in lines]
    assert len(hits) == 3 and all({"id", "path", "score", "rank"} <= h.keys() for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    plain = ps("search", "a dog on the beach", "-k", "3").stdout.splitlines()
    assert [line.split()[2] for line in plain] == [h["path"] for h in hits]

    in_folder = [json.loads(x) for x in ps("search", "x", "--folder", photos / "2024", "--json").stdout.splitlines()]
    assert {h["path"] for h in in_folder} == {str(photos / "2024" / f"q{i}.png") for i in range(5, 8)}

    query = photos / "p2.jpg"
    similar = [json.loads(x) for x in ps("similar", query, "-k", "10", "--json").stdout.splitlines()]
    assert len(similar) == 7 and str(query) not in {h["path"] for h in similar}

    status = json.loads(ps("status", "--json").stdout)
    assert (status["indexed"], status["pending"], status["failed"]) == (8, 0, 1)
    assert status["model"].startswith(str(tiny_model_dir.resolve()))
    assert status["roots"] == [str(photos)]
    if on_servers():
        assert status["catalog"].startswith("postgresql+psycopg://") and status["vectors_bytes"] is None
        assert status["vectors_at"].startswith("http://127.0.0.1") and status["vectors_error"] is None
    else:
        assert status["catalog_bytes"] > 0 and status["vectors_bytes"] > 0
        assert status["catalog"] == os.path.join(status["data_dir"], "catalog.sqlite3")
    failed = ps("status", "--failed").stdout
    assert f"{photos / 'broken.jpg'}: not an image" in failed
    text = ps("status").stdout
    assert "8 indexed, 0 pending, 1 failed" in text
    log = (tmp_path / "data" / "logs" / "photosearch.log").read_text()
    assert f"failed: {photos / 'broken.jpg'}: not an image" in log
    assert "index run" in log  # "index run: ..." or, on servers, "shared index run (worker): ..."


def test_search_json_prints_every_key_the_readme_lists(ps, photos, exif_samples):
    (photos / "Canon_40D.jpg").write_bytes((exif_samples / "jpg" / "Canon_40D.jpg").read_bytes())
    ps("index", photos)
    documented = readme_json_keys("search")
    assert {"camera_make", "camera_model", "taken_at"} <= set(documented)  # the parse found the list
    for command in (["search", "a camera"], ["similar", photos / "p1.jpg"]):
        hits = [json.loads(line) for line in ps(*command, "-k", "20", "--json").stdout.splitlines()]
        assert hits and all(list(hit) == documented for hit in hits)
        canon = next(hit for hit in hits if hit["path"].endswith("Canon_40D.jpg"))
        assert (canon["camera_make"], canon["camera_model"]) == ("Canon", "Canon EOS 40D")
        assert canon["taken_at"].startswith("2008-05-30T15:56:01") and canon["offline"] is False


def test_model_change_is_refused_with_one_line_then_reindex(ps, photos, tiny_model_dir_b):
    ps("index", photos)
    refused = ps("search", "x", model=tiny_model_dir_b, expect=65)
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("photosearch: error: the index was built with")
    assert "photosearch reindex" in refused.stderr
    out = ps("reindex", model=tiny_model_dir_b).stdout
    assert "8 embedded" in out
    assert len(ps("search", "x", "--json", model=tiny_model_dir_b).stdout.splitlines()) == 8


def test_errors_are_one_line_and_debug_shows_the_traceback(ps, tmp_path):
    missing = ps("index", tmp_path / "nowhere", expect=66)
    assert missing.stderr.strip() == f"photosearch: error: {tmp_path / 'nowhere'} does not exist"
    debug = ps("--debug", "index", tmp_path / "nowhere", expect=66)
    assert "Traceback (most recent call last)" in debug.stderr and "LibraryRootError" in debug.stderr
    nothing = ps("index", expect=66)
    assert "photosearch index FOLDER" in nothing.stderr
    bad_k = ps("search", "x", "-k", "0", expect=2)
    assert "Invalid value" in bad_k.stderr


def test_uncached_hub_model_without_network_is_one_clear_line(ps, photos):
    result = ps("index", photos, model="openai/clip-vit-base-patch32", expect=69)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "openai/clip-vit-base-patch32" in lines[0] and "local folder" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_index_run_with_nothing_to_do_needs_neither_the_model_nor_the_vector_store(ps, photos, tmp_path, env):
    """Nothing to embed, and on the embedded stores nothing to ask Chroma: the counts agreed when the last run
    ended and the vector store's write stamp has not moved since. A vector lost meanwhile moves it: noticed."""
    ps("index", photos)

    def index_imports() -> tuple[str, set[str]]:
        # (not -X importtime: an index run sends fd 2 to its log file while it runs)
        code = "import sys; from photosearch.cli import main; main(sys.argv[1:]); print(sorted(sys.modules))"
        cmd = [sys.executable, "-c", code, "--data-dir", str(tmp_path / "data"), "--model", str(ps.model),
               "index", str(photos)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        out, modules = result.stdout.rsplit("\n", 2)[:2]
        return out, {name.split(".")[0] for name in json.loads(modules.replace("'", '"'))}

    for _ in range(2):
        out, modules = index_imports()
        assert out.startswith("0 new, 0 changed, 8 unchanged") and not {"torch", "transformers"} & modules
        assert ("chromadb" in modules) == on_servers()  # a server is asked: other clients write to it unseen
    with Library.open(make_config(tmp_path / "data", ps.model)) as library:
        lost = library.catalog.get(min(library.catalog.ids_with_status("indexed")))
        library.store().delete([lost.content_hash])
    out, modules = index_imports()
    assert "(1 embedded" in out and "chromadb" in modules
    assert "chromadb" not in index_imports()[1] or on_servers()


def test_help_is_instant_and_imports_nothing_heavy(env):
    code = (
        "import sys, photosearch.cli;"
        "print(sorted(m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip() == "[]"
    result = subprocess.run([sys.executable, "-m", "photosearch", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    for command in ("index", "search", "similar", "status", "reindex"):
        assert command in result.stdout


def _indexed_count(catalog_url: str) -> int:
    """The indexed rows as another process sees them, read with SQL of our own (not through the code tested)."""
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("select count(*) from photos where status = 'indexed'")).scalar_one())
    except (OperationalError, ProgrammingError):
        return 0  # not created yet
    finally:
        engine.dispose()


def test_sigkill_in_the_middle_of_a_run_converges(tmp_path, tiny_model_dir, env):
    """A real `photosearch index` process killed with SIGKILL mid-run, three times; the next run converges."""
    root = tmp_path / "lib"
    total = 60
    for i in range(total):
        make_photo(root / f"d{i % 4}" / f"p{i}.jpg", seed=i, size=(480, 360))
    data = tmp_path / "data"
    catalog_url = make_config(data, tiny_model_dir).catalog_url
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(tiny_model_dir)]
    run_env = {**env, "PHOTOSEARCH_MODEL_BATCH_SIZE": "2"}
    if on_servers():  # a killed run's claims come back after 5 s, not the default 300
        run_env["PHOTOSEARCH_STORE_LEASE"] = "5"
    killed_at = []
    for _ in range(3):
        proc = subprocess.Popen([*cmd, "index", "--no-progress", str(root)], env=run_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        start = _indexed_count(catalog_url)
        deadline = time.monotonic() + 120
        while _indexed_count(catalog_url) < start + 6 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(_indexed_count(catalog_url))
    assert killed_at[-1] < total, "the runs finished before they could be killed: the test proved nothing"
    final = subprocess.run([*cmd, "index", "--no-progress"], env=run_env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    with Library.open(make_config(data, tiny_model_dir), embedder_factory=Counted()) as library:
        ids = assert_stores_agree(library)
        assert len(ids) == total
        status = library.status()
        assert (status.pending, status.failed) == (0, 0)
        assert len({r.path for r in library.catalog.records(ids).values()}) == total


def test_status_shows_a_reindex_in_progress(tmp_path, tiny_model_dir, capsys):
    """The status's optional "reindex" entry (a rebuild under way) is one line of the human output."""
    from photosearch.cli_status import show_status

    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        data = library.status_report()
    for entry in (None, {"model": "openai/clip-vit-base-patch32", "done": 120, "total": 500}):
        show_status(data | {"reindex": entry}, None, as_json=False)
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("reindex")]
        expected = "reindex   to openai/clip-vit-base-patch32: 120/500 photos (search uses the current model until it "
        assert lines == ([] if entry is None else [expected + "completes)"])
