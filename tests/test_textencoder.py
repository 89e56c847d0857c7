"""The ONNX Runtime text encoder against transformers on the same weights, its fallbacks, and a search without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import Counted, make_config, make_photo

from photosearch.config import ModelConfig
from photosearch.errors import ModelMismatchError
from photosearch.library import Library
from photosearch.models.embedder import ClipEmbedder, ModelIdentity, load_embedder
from photosearch.models.textencoder import TextEncoder, load_text_encoder

REPO = Path(__file__).resolve().parent.parent
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
LONG = "a very long query about a dog running on a sunny beach with waves and kites " * 8  # > 77 tokens
QUERIES = (
    "a dog on the beach",
    "x",
    "",  # nothing but the start and end tokens
    "   \t\n ",
    "!!!",
    "Ölgemälde, 東京の夜景 🚀🐶 café naïve",
    "A PHOTO OF A CAT, Mixed Case and   odd   spacing",
    "<|endoftext|> inside the text, then more words",
    LONG,
    "word " * 75,  # exactly at the limit: 75 words + start + end = 77 tokens
)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> ClipEmbedder:
    return load_embedder(ModelConfig(name=str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> TextEncoder:
    found = load_text_encoder(ModelConfig(name=str(tiny_model_dir)))
    assert found is not None
    return found


def test_matches_transformers_one_by_one_and_batched(encoder, reference):
    ours = encoder.embed_texts(QUERIES)
    assert ours.dtype == np.float32 and ours.shape == (len(QUERIES), 16)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert _cosines(ours, reference.embed_texts(QUERIES)).min() >= 0.9999  # batched: transformers pads
    for query, row in zip(QUERIES, ours, strict=True):
        assert _cosines(row[None], reference.embed_texts([query])).min() >= 0.9999


def test_every_query_length(encoder, reference):
    # Every query length computes its own shapes (T rows, a T x T causal mask): each must give the same.
    texts = ["dog " * n for n in range(40)]  # 2 to 41 tokens
    assert _cosines(encoder.embed_texts(texts), reference.embed_texts(texts)).min() >= 0.9999


def test_long_queries_are_truncated_like_transformers(encoder, reference):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder.identity.name)
    expected = tokenizer([LONG], truncation=True, max_length=77)["input_ids"][0]
    assert encoder._tokenizer.encode(LONG).ids == expected and len(expected) == 77
    assert _cosines(encoder.embed_texts([LONG]), encoder.embed_texts([LONG + " and a cat"])).min() > 0.99999
    for text in QUERIES:
        assert encoder._tokenizer.encode(text).ids == tokenizer([text], truncation=True, max_length=77)["input_ids"][0]


def test_identity_equals_the_full_loaders(encoder, reference):
    assert encoder.identity == reference.identity


def test_empty_batch_and_bare_string(encoder):
    assert encoder.embed_texts([]).shape == (0, 16)
    with pytest.raises(TypeError):
        encoder.embed_texts("a dog")


def _tiny_variant(folder: Path, clip_files: Path, dtype: str = "float32", **text: object) -> Path:
    """A tiny CLIP like the fixture's, with other text settings or a stored dtype."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
    config = CLIPConfig(text_config={**small, "vocab_size": 49408, **text}, vision_config=small, projection_dim=8)
    torch.manual_seed(99)
    CLIPModel(config).to(getattr(torch, dtype)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "preprocessor_config.json"):  # fmt: skip
        shutil.copy(clip_files / name, folder / name)
    return folder


@pytest.mark.parametrize(
    ("dtype", "text"),
    [
        ("float32", {"hidden_act": "gelu", "eos_token_id": 2}),  # OpenCLIP-style activation, pre-#24773 pooling
        ("float16", {}),
        ("bfloat16", {"layer_norm_eps": 1e-6}),
    ],
)
def test_other_activations_pooling_and_stored_dtypes(tmp_path, clip_files, dtype, text):
    folder = _tiny_variant(tmp_path / "variant", clip_files, dtype, **text)
    encoder = load_text_encoder(ModelConfig(name=str(folder)))
    assert encoder is not None
    reference = load_embedder(ModelConfig(name=str(folder), device="cpu"))  # loads in float32, as we compute
    assert _cosines(encoder.embed_texts(QUERIES), reference.embed_texts(QUERIES)).min() >= 0.9999
    assert encoder.identity == reference.identity


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def test_falls_back_when_the_model_is_not_covered(tiny_model_dir, tmp_path):
    cases = {
        "no-safetensors": _copy_without(tiny_model_dir, tmp_path / "a", "model.safetensors"),
        "no-tokenizer-json": _copy_without(tiny_model_dir, tmp_path / "b", "tokenizer.json"),
    }
    relu = shutil.copytree(tiny_model_dir, tmp_path / "c")
    config = json.loads((relu / "config.json").read_text())
    config["text_config"]["hidden_act"] = "relu"
    (relu / "config.json").write_text(json.dumps(config))
    cases["unknown-activation"] = relu
    corrupt = shutil.copytree(tiny_model_dir, tmp_path / "d")
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 64)
    cases["corrupt-weights"] = corrupt
    for name, folder in cases.items():
        assert load_text_encoder(ModelConfig(name=str(folder))) is None, name
    assert load_text_encoder(ModelConfig(name=str(tmp_path / "nowhere"))) is None
    assert load_text_encoder(ModelConfig(name="photosearch-tests/not-cached", cache_dir=tmp_path)) is None


def test_extra_tensors_of_other_dtypes_are_ignored(tiny_model_dir, tmp_path, encoder):
    # Older checkpoints carry text_model.embeddings.position_ids, an int64 buffer the tower does not need.
    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(tiny_model_dir, tmp_path / "with-buffer")
    weights = load_file(folder / "model.safetensors")
    weights["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    found = load_text_encoder(ModelConfig(name=str(folder)))
    assert found is not None
    np.testing.assert_allclose(found.embed_texts(QUERIES), encoder.embed_texts(QUERIES), atol=1e-6)


def test_library_without_safetensors_searches_with_the_full_model(tiny_model_dir, tmp_path):
    import torch
    from transformers import CLIPModel

    folder = _copy_without(tiny_model_dir, tmp_path / "bin-model", "model.safetensors")
    torch.save(CLIPModel.from_pretrained(tiny_model_dir).state_dict(), folder / "pytorch_model.bin")
    assert load_text_encoder(ModelConfig(name=str(folder))) is None
    make_photo(tmp_path / "pics" / "p.jpg", seed=1)
    with Library.open(make_config(tmp_path / "data", folder)) as library:
        library.index([tmp_path / "pics"])
        assert isinstance(library.text_embedder(), ClipEmbedder)
        assert len(library.search("a dog")) == 1


def test_hub_cache_model_is_found_with_the_full_loaders_identity(tiny_model_dir, tmp_path, encoder):
    repo = tmp_path / "models--acme--tiny-clip"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    config = ModelConfig(name="acme/tiny-clip", cache_dir=tmp_path, allow_download=False, device="cpu")
    hub = load_text_encoder(config)
    assert hub is not None
    assert hub.identity == load_embedder(config).identity == ModelIdentity("acme/tiny-clip", COMMIT, 16)
    np.testing.assert_allclose(hub.embed_texts(QUERIES), encoder.embed_texts(QUERIES), atol=1e-6)


@pytest.fixture
def indexed_dir(tmp_path, tiny_model_dir) -> tuple[Path, Path]:
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # a copy: one test swaps its weights
    for i in range(6):
        make_photo(tmp_path / "pics" / f"p{i}.jpg", seed=i)
    with Library.open(make_config(tmp_path / "data", model), embedder_factory=Counted()) as library:
        library.index([tmp_path / "pics"])
    return tmp_path / "data", model


def test_library_text_search_uses_the_numpy_encoder_and_ranks_alike(indexed_dir):
    data, model = indexed_dir
    config = make_config(data, model)
    with Library.open(config) as fast, Library.open(config, embedder_factory=Counted()) as full:
        assert isinstance(fast.text_embedder(), TextEncoder)
        assert not isinstance(full.text_embedder(), TextEncoder)  # a given factory is used for text too
        for query in ("a dog on the beach", "red", LONG):
            ours, theirs = fast.search(query, k=6), full.search(query, k=6)
            assert [r.id for r in ours] == [r.id for r in theirs]
            np.testing.assert_allclose([r.score for r in ours], [r.score for r in theirs], atol=1e-5)


def test_same_folder_with_other_weights_is_refused(indexed_dir, tiny_model_dir_b):
    data, model = indexed_dir
    shutil.copy(tiny_model_dir_b / "model.safetensors", model / "model.safetensors")
    with Library.open(make_config(data, model)) as library, pytest.raises(ModelMismatchError, match="reindex"):
        library.search("a cat")


def test_cli_search_imports_neither_torch_nor_transformers_nor_alembic(indexed_dir, tmp_path):
    """Nor chromadb (the vector files answer), PIL (no image in the query) or urllib's HTTP (no server runs)."""
    data, model = indexed_dir
    heavy = ("torch", "transformers", "alembic", "chromadb", "PIL", "http")
    code = (
        "import sys\n"
        "from photosearch.cli import main\n"
        f"main(['--data-dir', {str(data)!r}, '--model', {str(model)!r}, 'search', 'a dog', '-k', '3', '--json'])\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["path"].endswith(".jpg") for line in lines[:3])
    assert lines[3] == "[]"


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_the_hand_written_graph_is_valid_onnx(tiny_model_dir, activation):
    # textgraph.py writes the protobuf itself (the onnx package is too slow to import for a cold search): the
    # official parser and checker must accept it, field for field, not only ONNX Runtime.
    import onnx

    from photosearch.models.textencoder import _layer, _pair, _text_weights
    from photosearch.models.textgraph import text_tower

    weights = _text_weights(tiny_model_dir)
    assert weights is not None
    layers = [_layer(weights, f"text_model.encoder.layers.{i}.") for i in range(2)]  # the tiny model: 2 layers, 2 heads
    graph, external = text_tower(layers, _pair(weights, "text_model.final_layer_norm"),
                                 weights["text_projection.weight"], 2, 1e-5, activation)  # fmt: skip
    model = onnx.load_model_from_string(graph)
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    assert [i.name for i in model.graph.input] == ["x", "mask"] and model.graph.output[0].name == "out"
    stored = {t.name: t for t in model.graph.initializer}
    for name, array in external.items():  # every weight is declared, with its shape, and carries no data
        assert list(stored[name].dims) == list(array.shape) and stored[name].data_location == onnx.TensorProto.EXTERNAL
    assert {n.op_type for n in model.graph.node} >= {"Gemm", "LayerNormalization", "Softmax", "Split"}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert onnx.helper.get_attribute_value(softmax.attribute[0]) == -1  # a negative varint, read back
    norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    assert onnx.helper.get_attribute_value(next(a for a in norm.attribute if a.name == "epsilon")) == pytest.approx(
        1e-5
    )
    graph_only = onnx.ModelProto()
    graph_only.CopyFrom(model)
    for tensor in graph_only.graph.initializer:  # the checker wants the data: give it zeros of the right shape
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.ClearField("external_data")
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = np.zeros(list(tensor.dims), dtype=np.float32).tobytes()
    onnx.checker.check_model(graph_only, full_check=True)
