"""ClipEmbedder against transformers' own reference path, on a tiny real CLIP model and real photos."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from photosearch.config import ModelConfig
from photosearch.errors import ModelNotAvailableError
from photosearch.indexing.imaging import decode_photo
from photosearch.models.embedder import ClipEmbedder, ModelIdentity, load_embedder

REPO = Path(__file__).resolve().parent.parent
# Different sizes and aspects: smaller than the crop (upscaled), portrait, landscape, big, extreme strips.
PHOTOS = (
    "jpg/Canon_40D.jpg",  # 100x68
    "jpg/Fujifilm_FinePix_E500.jpg",  # 59x100
    "jpg/orientation/portrait_5.jpg",  # 600x450
    "jpg/exif-org/ricoh-rdc5300.jpg",  # 896x600
    "jpg/tests/28-hex_value.jpg",  # 1704x2272
    "jpg/mobile/HMD_Nokia_8.3_5G.jpg",  # 4608x1976
    "jpg/invalid/image01713.jpg",  # 49x500
    "jpg/invalid/image01980.jpg",  # 284x25
)
QUERIES = ("a dog on a beach", "sunset over the mountains", "", "Ölgemälde, 東京 🚀")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _made_up_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    # 300x199: 224*300/199 = 337.7, so rounding instead of truncating the long side would shift the crop.
    noise = Image.fromarray(rng.integers(0, 256, (199, 300, 3), dtype=np.uint8))
    gradient = np.linspace(0, 255, 640 * 3).reshape(1, 640, 3).repeat(250, axis=0).astype(np.uint8)
    rgba = np.dstack([rng.integers(0, 256, (170, 410, 3)), rng.integers(0, 256, (170, 410))]).astype(np.uint8)
    return [noise, Image.fromarray(gradient), Image.fromarray(rgba, "RGBA"), noise.convert("L")]


@pytest.fixture(scope="module")
def photos(exif_samples: Path) -> list[Image.Image]:
    return [Image.open(exif_samples / name).convert("RGB") for name in PHOTOS]


@pytest.fixture(scope="module")
def embedder(tiny_model_dir: Path) -> ClipEmbedder:
    # batch_size 3 so that every multi-image call below goes through several chunks. fp32: these tests hold the
    # model path to transformers' reference exactly; reduced precisions are tested in test_precision.py.
    return load_embedder(ModelConfig(name=str(tiny_model_dir), device="cpu", batch_size=3, precision="fp32"))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[CLIPProcessor, CLIPModel]:
    return CLIPProcessor.from_pretrained(tiny_model_dir), CLIPModel.from_pretrained(tiny_model_dir).eval()


def _unit(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def _reference_images(reference: tuple[CLIPProcessor, CLIPModel], images: list[Image.Image]) -> np.ndarray:
    processor, model = reference
    with torch.inference_mode():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        return _unit(model.get_image_features(pixel_values=pixel_values).pooler_output)


def _single_line_naming(error: pytest.ExceptionInfo[ModelNotAvailableError], name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    assert repr(name) in message


def test_pixel_values_equal_the_reference_processor(embedder, reference, photos):
    # Model-independent and much stricter than a cosine: a one-pixel crop shift or a rounding change fails it.
    processor, _ = reference
    for image in [*photos, *_made_up_images()]:
        expected = processor(images=[image], return_tensors="pt")["pixel_values"]
        actual = embedder._pixel_values([image])
        assert actual.shape == expected.shape == (1, 3, 224, 224)
        assert torch.allclose(actual, expected, atol=1e-4), f"{image.size} {image.mode}"


def test_image_embeddings_match_the_reference_model(embedder, reference, photos):
    images = [*photos, *_made_up_images()]
    expected = _reference_images(reference, images)
    cosines = np.sum(embedder.embed_images(images) * expected, axis=1)
    assert cosines.min() >= 0.999, cosines


def test_text_embeddings_match_the_reference_model(embedder, reference):
    processor, model = reference
    encoded = processor.tokenizer(list(QUERIES), padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = _unit(model.get_text_features(**encoded).pooler_output)
    cosines = np.sum(embedder.embed_texts(QUERIES) * expected, axis=1)
    assert cosines.min() >= 0.999, cosines


def test_outputs_are_float32_unit_rows(embedder, photos):
    for vectors, n in ((embedder.embed_images(photos[:4]), 4), (embedder.embed_texts(QUERIES), len(QUERIES))):
        assert vectors.dtype == np.float32
        assert vectors.shape == (n, embedder.identity.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_one_call_equals_one_by_one(embedder, photos):
    together = embedder.embed_images(photos)  # 8 images in chunks of 3
    alone = np.concatenate([embedder.embed_images([photo]) for photo in photos])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    texts = embedder.embed_texts(QUERIES)
    np.testing.assert_allclose(texts, np.concatenate([embedder.embed_texts([q]) for q in QUERIES]), atol=1e-5)
    assert not np.allclose(together[0], together[1])  # distinct inputs, distinct vectors


def test_empty_input_gives_an_empty_matrix(embedder):
    for vectors in (embedder.embed_images([]), embedder.embed_texts([])):
        assert vectors.shape == (0, 16)
        assert vectors.dtype == np.float32


def test_long_queries_are_truncated_not_rejected(embedder):
    words = " ".join(["photo"] * 200)
    vectors = embedder.embed_texts([f"{words} of a cat", f"{words} of a dog"])
    assert vectors.shape == (2, 16)
    # Both are cut after 77 tokens, before the words that differ.
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_a_bare_string_is_refused(embedder):
    with pytest.raises(TypeError):
        embedder.embed_texts("a cat")


def test_identity_of_a_local_folder(embedder, tiny_model_dir, tiny_model_dir_b):
    identity = embedder.identity
    assert identity.name == str(tiny_model_dir.resolve())
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", identity.revision)
    assert identity.dim == 16 == embedder.embed_texts(["x"]).shape[1]
    again = load_embedder(ModelConfig(name=str(tiny_model_dir), device="cpu")).identity
    other = load_embedder(ModelConfig(name=str(tiny_model_dir_b), device="cpu")).identity
    assert again == identity and again.key() == identity.key()
    assert other.revision != identity.revision and other.key() != identity.key()
    assert identity.name in identity.describe() and "(16-d)" in identity.describe()


def test_key_is_a_valid_chroma_collection_name():
    for identity in (
        ModelIdentity("openai/clip-vit-base-patch32", COMMIT, 512),
        ModelIdentity("/x y/é", "", 1),
    ):
        # Chroma: 3-63 chars of [a-zA-Z0-9._-], starting and ending with a letter or digit.
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]", identity.key())
    assert ModelIdentity("m", "r", 1).key() != ModelIdentity("m", "r", 2).key()
    assert ModelIdentity("openai/clip", COMMIT, 512).describe() == "openai/clip @ 0123456 (512-d)"


def test_hub_model_from_the_cache_is_identified_by_its_commit(tiny_model_dir, tmp_path, embedder):
    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}.
    repo = tmp_path / "models--acme--tiny-clip"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    config = ModelConfig(name="acme/tiny-clip", cache_dir=tmp_path, allow_download=False, device="cpu")
    hub = load_embedder(config)
    assert hub.identity == ModelIdentity("acme/tiny-clip", COMMIT, 16)
    np.testing.assert_allclose(hub.embed_texts(QUERIES), embedder.embed_texts(QUERIES), atol=1e-6)


def test_uncached_hub_model_without_downloads(tmp_path):
    name = "photosearch-tests/no-such-model"
    with pytest.raises(ModelNotAvailableError) as error:
        load_embedder(ModelConfig(name=name, cache_dir=tmp_path, allow_download=False))
    _single_line_naming(error, name)
    assert "allow_download" in str(error.value)


def test_uncached_hub_model_with_downloads_fails_fast_without_network(tmp_path):
    name = "photosearch-tests/no-such-model"
    started = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as error:
        load_embedder(ModelConfig(name=name, cache_dir=tmp_path, allow_download=True))
    # Left to huggingface_hub's retries, this takes 23 s per file.
    assert time.monotonic() - started < 5
    _single_line_naming(error, name)


@pytest.mark.parametrize("missing", ["model.safetensors", "preprocessor_config.json", "tokenizer.json"])
def test_local_folder_missing_a_file(tiny_model_dir, tmp_path, missing):
    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_model_dir, folder)
    (folder / missing).unlink()
    if missing == "tokenizer.json":  # the slow-tokenizer files would stand in for it
        (folder / "vocab.json").unlink()
    with pytest.raises(ModelNotAvailableError) as error:
        load_embedder(ModelConfig(name=str(folder)))
    _single_line_naming(error, str(folder))


def test_path_that_does_not_exist(tmp_path):
    name = str(tmp_path / "nowhere")
    with pytest.raises(ModelNotAvailableError) as error:
        load_embedder(ModelConfig(name=name))
    _single_line_naming(error, name)
    assert "folder" in str(error.value)


def test_folder_with_another_kind_of_model(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="not CLIP") as error:
        load_embedder(ModelConfig(name=str(tmp_path)))
    _single_line_naming(error, str(tmp_path))


def test_checkpoint_missing_weights_is_refused(tiny_model_dir, tmp_path):
    # transformers would fill the missing tensor with random values and warn; that must not index anything.
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["visual_projection.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelNotAvailableError, match="lacks 1 CLIP weights"):
        load_embedder(ModelConfig(name=str(folder)))


def test_import_does_not_load_torch_or_transformers():
    code = "import sys, photosearch.models.embedder; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name", ["jpg/tests/11-tests.jpg", "jpg/tests/35-empty.jpg", "jpg/hdr/canon_hdr_NO.jpg", "jpg/mobile/jolla.jpg"]
)
def test_a_reduced_decode_prepares_close_to_the_full_photo(embedder, reference, exif_samples, name):
    """The indexer decodes JPEGs at 1/2-1/8 scale; given the full size, prepare() maps exactly the photo's area.
    Sizes not divisible by the scale (1136x775, 2164x1626) are the case the full size is needed for."""
    processor, _ = reference
    data = (exif_samples / name).read_bytes()
    full = decode_photo(data, name=name, max_pixels=10**9).image
    reduced = decode_photo(data, name=name, max_pixels=10**9, min_side=336)
    assert min(reduced.image.size) < min(full.size)  # really a reduced decode
    expected = processor(images=[full], return_tensors="pt")["pixel_values"][0].numpy()
    mean = np.array(processor.image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(processor.image_processor.image_std, dtype=np.float32)[:, None, None]
    expected_levels = (expected * std + mean) * 255
    source_size = (reduced.facts.width, reduced.facts.height)
    assert source_size == full.size
    ours = embedder.prepare(reduced.image, source_size).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(ours - expected_levels).mean() < 1.5  # 8-bit levels
    plain = embedder.prepare(reduced.image).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(ours - expected_levels).mean() <= np.abs(plain - expected_levels).mean() + 0.01


def test_source_size_is_ignored_unless_the_image_is_a_reduced_decode_of_it():
    from photosearch.models.preprocess import _reduced_area

    assert _reduced_area((568, 388), (1136, 775)) == (0.0, 0.0, 568.0, 387.5)
    assert _reduced_area((500, 375), (4000, 3000)) == (0.0, 0.0, 500.0, 375.0)
    assert _reduced_area((640, 480), (640, 480)) is None  # full size
    assert _reduced_area((300, 200), (1000, 700)) is None  # not a 1/2, 1/4 or 1/8 decode of it
    assert _reduced_area((500, 375), None) is None
