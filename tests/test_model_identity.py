"""The model's identity: resolve_model (hub cache, local folder, dimension), ModelIdentity's recorded form and
matches(), and the library's status and stores using that one form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HashEmbedder, hash_config, make_photo

from photosearch.config import ModelConfig, replace
from photosearch.errors import ModelNotAvailableError
from photosearch.library import Library
from photosearch.models.identity import ModelIdentity, fingerprint, recorded_name, resolve_model
from photosearch.stores.generations import MODEL_KEY

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
MIB = 1 << 20


def _model_folder(folder: Path, config: dict[str, object] | None = None, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "projection_dim": 24} | (config or {})))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def _hub_snapshot(cache: Path, name: str, snapshot: str, ref: str | None = "main") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo = cache / f"models--{name.replace('/', '--')}"
    folder = _model_folder(repo / "snapshots" / snapshot, weights=snapshot.encode())
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(snapshot)
    return folder


# -- the recorded form ---------------------------------------------------------------------------------------------
def test_key_and_recorded_form_are_what_existing_indexes_hold():
    identity = ModelIdentity("openai/clip-vit-base-patch32", COMMIT, 512)
    # Values from before ModelIdentity moved here: an index built then must keep its collection and its record.
    assert identity.key() == "d097dde13e4d2009"
    assert identity.to_json() == json.dumps({"name": identity.name, "revision": COMMIT, "dim": 512})
    assert identity.describe() == "openai/clip-vit-base-patch32 @ 0123456 (512-d)"


@pytest.mark.parametrize(
    "identity",
    [
        ModelIdentity("openai/clip-vit-base-patch32", COMMIT, 512),
        ModelIdentity("/photos/models/clip é ü/東京", "sha256:0123456789abcdef", 16),
        ModelIdentity("m", "", 1),
    ],
)
def test_round_trip_through_dict_and_json(identity):
    assert list(identity.to_dict()) == ["name", "revision", "dim"]  # one set of keys, catalog and Chroma alike
    assert ModelIdentity.from_dict(identity.to_dict()) == identity
    assert ModelIdentity.from_json(identity.to_json()) == identity
    assert ModelIdentity.from_json(identity.to_json()).key() == identity.key()


def test_from_dict_reads_the_older_chroma_metadata_keys():
    assert ModelIdentity.from_dict({"model": "acme/clip", "revision": COMMIT, "dim": 512}) == ModelIdentity(
        "acme/clip", COMMIT, 512
    )


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "null",
        "{}",
        '{"name": "x", "revision": "r"}',
        '{"name": 1, "revision": "r", "dim": 3}',
        '{"name": "x", "revision": "r", "dim": "3"}',
        "not json",
    ],
)
def test_from_json_refuses_what_is_not_an_identity(text):
    with pytest.raises(ValueError):
        ModelIdentity.from_json(text)


# -- matches() -----------------------------------------------------------------------------------------------------
def test_matches_a_hub_name_exactly():
    identity = ModelIdentity("acme/clip", COMMIT, 512)
    assert identity.matches("acme/clip")
    assert not identity.matches("acme/clip-large")
    assert not identity.matches("acme/cli")
    # What a prefix test on describe() ("acme/clip @ 0123456 (512-d)") wrongly took for the same model:
    assert not identity.matches("acme/clip @")
    assert not identity.matches("acme/clip @ 0123456")


def test_matches_a_folder_however_it_is_written(tmp_path, monkeypatch):
    folder = _model_folder(tmp_path / "models" / "clip")
    (tmp_path / "link").symlink_to(folder)
    identity = ModelIdentity(str(folder), "sha256:0123456789abcdef", 24)
    monkeypatch.chdir(tmp_path)
    for written in (str(folder), f"{folder}/", str(tmp_path / "link"), "models/clip", "./models/../models/clip"):
        assert identity.matches(written), written
        assert recorded_name(written) == str(folder)
    assert not identity.matches(str(_model_folder(tmp_path / "models" / "other")))
    assert not identity.matches("clip")  # not a folder here: a hub name, another model
    assert recorded_name("acme/clip") == "acme/clip"


# -- resolve_model: hub cache ----------------------------------------------------------------------------------
def test_hub_name_resolves_to_its_cached_snapshot_and_commit(tmp_path):
    snapshot = _hub_snapshot(tmp_path, "acme/clip", COMMIT)
    resolved = resolve_model(ModelConfig(name="acme/clip", cache_dir=tmp_path))
    assert resolved is not None and resolved.on_hub
    assert resolved.folder == snapshot
    assert resolved.identity == ModelIdentity("acme/clip", COMMIT, 24)
    assert resolved.identity.matches("acme/clip")


def test_hub_revision_picks_the_snapshot(tmp_path):
    _hub_snapshot(tmp_path, "acme/clip", COMMIT)
    other = _hub_snapshot(tmp_path, "acme/clip", OTHER_COMMIT, ref="v2")
    for revision in ("v2", OTHER_COMMIT):
        resolved = resolve_model(ModelConfig(name="acme/clip", cache_dir=tmp_path, revision=revision))
        assert resolved is not None and resolved.folder == other
        assert resolved.identity.revision == OTHER_COMMIT


def test_a_snapshot_not_named_by_a_commit_is_fingerprinted(tmp_path):
    snapshot = _hub_snapshot(tmp_path, "acme/clip", "copied-by-hand")
    resolved = resolve_model(ModelConfig(name="acme/clip", cache_dir=tmp_path))
    assert resolved is not None and resolved.identity.revision == fingerprint(snapshot)
    assert resolved.identity.revision.startswith("sha256:")


def test_a_hub_model_not_in_the_cache_resolves_to_nothing(tmp_path):
    assert resolve_model(ModelConfig(name="acme/not-cached", cache_dir=tmp_path)) is None
    _hub_snapshot(tmp_path, "acme/clip", COMMIT)
    assert resolve_model(ModelConfig(name="acme/clip", cache_dir=tmp_path, revision="no-such-branch")) is None
    assert resolve_model(ModelConfig(name=str(tmp_path / "no" / "such" / "folder"), cache_dir=tmp_path)) is None


# -- resolve_model: a local folder -----------------------------------------------------------------------------
def test_a_folder_resolves_to_its_absolute_path_and_a_fingerprint(tmp_path, monkeypatch):
    folder = _model_folder(tmp_path / "clip", weights=bytes(range(256)) * 12289)  # 3 MiB: first and last MiB differ
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model(ModelConfig(name="clip"))
    assert resolved is not None and not resolved.on_hub
    assert resolved.folder == folder and resolved.identity.name == str(folder)
    # The value from before resolve_model: the same files must give the same identity as they always did.
    assert resolved.identity == ModelIdentity(str(folder), "sha256:8c9827e212dc05ef", 24)


def test_the_folder_fingerprint_changes_when_the_weights_do(tmp_path):
    weights = bytearray(bytes(range(256)) * 12289)
    folder = _model_folder(tmp_path / "clip", weights=bytes(weights))
    config = ModelConfig(name=str(folder))

    def revision() -> str:
        resolved = resolve_model(config)
        assert resolved is not None
        return resolved.identity.revision

    first = revision()
    assert revision() == first  # stable from run to run
    (folder / "tokenizer.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps({"projection_dim": 24, "note": "edited"}))
    assert revision() == first  # only the weight files count
    seen = {first}
    for change in ("first MiB", "last MiB", "longer", "another shard", "a .bin file"):
        if change == "first MiB":
            weights[100] ^= 0xFF
        elif change == "last MiB":
            weights[-100] ^= 0xFF
        elif change == "longer":
            weights += b"\0"
        if change in ("first MiB", "last MiB", "longer"):
            (folder / "model.safetensors").write_bytes(bytes(weights))
        elif change == "another shard":
            (folder / "model-00002-of-00002.safetensors").write_bytes(b"shard")
        else:
            (folder / "pytorch_model.bin").write_bytes(b"pickled")
        assert revision() not in seen, change
        seen.add(revision())


# -- resolve_model: the dimension ------------------------------------------------------------------------------
def test_the_dimension_is_the_configs_projection_dim(tmp_path):
    assert (
        resolve_model(ModelConfig(name=str(_model_folder(tmp_path / "a", {"projection_dim": 768})))).identity.dim == 768
    )
    default = _model_folder(tmp_path / "b")
    (default / "config.json").write_text(json.dumps({"model_type": "clip"}))  # as save_pretrained leaves a default out
    assert resolve_model(ModelConfig(name=str(default))).identity.dim == 512


def test_the_dimension_of_a_real_saved_model(tiny_model_dir):
    resolved = resolve_model(ModelConfig(name=str(tiny_model_dir)))
    assert resolved is not None and resolved.identity.dim == 16  # conftest's projection_dim


@pytest.mark.parametrize("config", [None, "not json", json.dumps({"projection_dim": "16"}), json.dumps([16])])
def test_a_folder_without_a_usable_config_is_refused_in_one_line(tmp_path, config):
    folder = _model_folder(tmp_path / "m")
    if config is None:
        (folder / "config.json").unlink()
    else:
        (folder / "config.json").write_text(config)
    with pytest.raises(ModelNotAvailableError) as error:
        resolve_model(ModelConfig(name=str(folder)))
    assert repr(str(folder)) in str(error.value) and "\n" not in str(error.value)


def test_importing_identity_and_protocols_loads_no_model_library():
    code = (
        "import sys\n"
        "import photosearch.models.identity, photosearch.models.protocols\n"
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub', 'onnxruntime') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


# -- the library: one recorded form, and matches() for status ----------------------------------------------------
def test_catalog_and_chroma_record_the_same_identity_and_status_uses_matches(tmp_path):
    import chromadb
    from chromadb.config import Settings

    make_photo(tmp_path / "pics" / "p.jpg", seed=1)
    config = hash_config(tmp_path / "data")
    with Library.open(config, embedder_factory=lambda _c: HashEmbedder()) as library:
        library.index([tmp_path / "pics"])
        name = library.store().name
        assert library.catalog.get_meta(MODEL_KEY) == HashEmbedder.identity.to_json()
        assert library.stored_model() == HashEmbedder.identity
        status = library.status().to_dict()
        assert status["model_matches"] is True and status["configured_model"] == HashEmbedder.identity.name
    client = chromadb.PersistentClient(path=str(config.chroma_dir), settings=Settings(anonymized_telemetry=False))
    metadata = client.get_collection(name).metadata
    assert metadata is not None and ModelIdentity.from_dict(metadata) == HashEmbedder.identity
    assert set(HashEmbedder.identity.to_dict()) <= set(metadata)
    other = replace(config, model=ModelConfig(name="acme/other"))
    with Library.open(other, embedder_factory=lambda _c: HashEmbedder()) as library:
        status = library.status().to_dict()
        assert status["model_matches"] is False and status["configured_model"] == "acme/other"
        assert status["model"] == HashEmbedder.identity.describe()


def test_cli_status_says_when_the_configured_model_is_another(tmp_path):
    make_photo(tmp_path / "pics" / "p.jpg", seed=1)
    with Library.open(hash_config(tmp_path / "data"), embedder_factory=lambda _c: HashEmbedder()) as library:
        library.index([tmp_path / "pics"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")

    def status(model: str) -> str:
        cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", model, "status"]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    hint = "configured: acme/other -> run `photosearch reindex`"
    assert hint in status("acme/other")
    assert "configured:" not in status(HashEmbedder.identity.name)
    # What a prefix test on describe() ("test/hash-embedder @ 1 (16-d)") took for the same model:
    assert f"configured: {HashEmbedder.identity.name} @ 1 -> " in status(f"{HashEmbedder.identity.name} @ 1")
