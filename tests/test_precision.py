"""model.precision: auto measured, fixed settings honoured, bf16 close to fp32, fp16 on a CPU refused; the image
tower's quick-GELU folding; the two-step (prepare, embed_prepared) image path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photosearch.config import ModelConfig
from photosearch.errors import ConfigError
from photosearch.models import precision
from photosearch.models.embedder import load_embedder
from photosearch.models.precision import Precision, prepare_image_tower, resolve_precision

CPU = torch.device("cpu")
PHOTOS = ("jpg/orientation/portrait_5.jpg", "jpg/exif-org/ricoh-rdc5300.jpg", "jpg/mobile/HMD_Nokia_8.3_5G.jpg",
          "jpg/gps/DSCN0010.jpg", "jpg/hdr/canon_hdr_YES.jpg", "jpg/Canon_40D.jpg")  # fmt: skip


@pytest.fixture(scope="module")
def photos(exif_samples: Path) -> list[Image.Image]:
    return [Image.open(exif_samples / name).convert("RGB") for name in PHOTOS]


def _load(model_dir: Path, setting: str):
    return load_embedder(ModelConfig(name=str(model_dir), device="cpu", precision=setting, batch_size=4))


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_auto_on_a_cpu_is_decided_by_measurement(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 3.2)
    fast = resolve_precision("auto", CPU)
    assert fast.name == "bf16" and fast.dtype == torch.bfloat16 and "3.2x" in fast.reason
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.4)  # emulated bf16: slower than fp32
    slow = resolve_precision("auto", CPU)
    assert slow.name == "fp32" and slow.dtype == torch.float32 and "auto" in slow.reason


def test_the_real_measurement_gives_a_concrete_precision_once_per_process():
    speedup = precision.cpu_bf16_speedup()
    assert speedup > 0 and np.isfinite(speedup)
    assert precision.cpu_bf16_speedup() == speedup  # cached: the micro-benchmark runs once
    assert resolve_precision("auto", CPU).name in ("fp32", "bf16")


def test_fixed_settings_are_honoured_without_measuring(monkeypatch):
    def must_not_run() -> float:
        raise AssertionError("a fixed precision must not run the micro-benchmark")

    monkeypatch.setattr(precision, "cpu_bf16_speedup", must_not_run)
    assert resolve_precision("fp32", CPU) == Precision("fp32", "set in model.precision")
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16


def test_fp16_on_a_cpu_is_refused_with_a_clear_message(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"fp16.*GPU.*auto, bf16 or fp32") as error:
        _load(tiny_model_dir, "fp16")  # refused before any weight is read
    assert "\n" not in str(error.value)


def test_auto_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert resolve_precision("auto", torch.device("cuda")).name == "bf16"  # Ampere and later
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_precision("auto", torch.device("cuda")).name == "fp16"  # Turing: no bf16 tensor cores
    assert resolve_precision("auto", torch.device("mps")).name == "fp16"
    assert resolve_precision("fp16", torch.device("cuda")).name == "fp16"


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_the_loaded_image_tower_runs_at_the_setting_and_the_text_tower_stays_fp32(tiny_model_dir, setting):
    embedder = _load(tiny_model_dir, setting)
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16}[setting]
    assert embedder.precision.name == setting
    assert _dtypes(embedder._model.vision_model) == {expected}
    assert _dtypes(embedder._model.visual_projection) == {expected}
    assert _dtypes(embedder._model.text_model) == {torch.float32}


def test_bf16_vectors_stay_close_to_fp32(tiny_model_dir, photos):
    fp32, bf16 = _load(tiny_model_dir, "fp32"), _load(tiny_model_dir, "bf16")
    exact, reduced = fp32.embed_images(photos), bf16.embed_images(photos)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(exact * reduced, axis=1)
    assert cosines.min() >= 0.99, cosines
    queries = ["a dog on a beach", "sunset"]  # the text tower is float32 whatever the image precision
    np.testing.assert_allclose(fp32.embed_texts(queries), bf16.embed_texts(queries), atol=1e-6)


def test_prepare_then_embed_prepared_equals_embed_images(tiny_model_dir, photos):
    embedder = _load(tiny_model_dir, "fp32")
    prepared = [embedder.prepare(photo) for photo in photos]
    assert all(p.shape == (224, 224, 3) and p.dtype == np.uint8 for p in prepared)
    np.testing.assert_allclose(embedder.embed_prepared(prepared), embedder.embed_images(photos), atol=1e-6)
    assert embedder.embed_prepared([]).shape == (0, embedder.identity.dim)
    assert embedder.input_side == 224 and embedder.on_cpu


def _tiny_clip(hidden_act: str):
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    torch.manual_seed(0)
    config = CLIPConfig(text_config=small, vision_config={**small, "hidden_act": hidden_act}, projection_dim=16)
    return CLIPModel(config).eval()


def test_quick_gelu_folding_computes_the_same_function():
    model, reference = _tiny_clip("quick_gelu"), _tiny_clip("quick_gelu")
    prepare_image_tower(model, Precision("fp32", "test"))
    assert all(isinstance(layer.mlp.activation_fn, torch.nn.SiLU) for layer in model.vision_model.encoder.layers)
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        folded = model.get_image_features(pixel_values=pixels).pooler_output
        expected = reference.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-4)


def test_other_activations_are_left_alone():
    model, reference = _tiny_clip("gelu"), _tiny_clip("gelu")
    prepare_image_tower(model, Precision("fp32", "test"))
    for layer, original in zip(model.vision_model.encoder.layers, reference.vision_model.encoder.layers, strict=True):
        assert type(layer.mlp.activation_fn) is type(original.mlp.activation_fn)
        assert torch.equal(layer.mlp.fc1.weight, original.mlp.fc1.weight)
