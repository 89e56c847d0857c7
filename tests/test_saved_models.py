"""The README's offline recipe: model folders as the installed transformers saves them, in both layouts.

transformers 5's ``CLIPProcessor.save_pretrained`` writes processor_config.json with the image processor nested
inside, and no preprocessor_config.json; saving the image processor and the tokenizer on their own writes
preprocessor_config.json, the layout of older versions and of most hub repositories. Both are saved here by
the installed transformers, with non-default preprocessing (and a 160 px model), so that only the settings
read from the folder can give the reference's pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers import make_photo
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from photosearch.config import ModelConfig
from photosearch.errors import ModelNotAvailableError
from photosearch.models.embedder import ModelIdentity, load_embedder
from photosearch.models.textencoder import load_text_encoder

REPO = Path(__file__).resolve().parent.parent
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
LAYOUTS = ("processor", "image-processor-and-tokenizer")
MEAN, STD = (0.5, 0.25, 0.75), (0.2, 0.3, 0.4)
PHOTOS = (
    "jpg/Canon_40D.jpg",
    "jpg/orientation/portrait_5.jpg",
    "jpg/tests/28-hex_value.jpg",
    "jpg/invalid/image01980.jpg",
)


def _save(folder: Path, tiny_model_dir: Path, clip_files: Path, layout: str) -> Path:
    config = CLIPConfig.from_pretrained(tiny_model_dir)
    config.vision_config.image_size = 160  # a 224 px crop (the default) would not even fit its position table
    torch.manual_seed(42)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor.from_pretrained(clip_files)
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": 180}
    image_processor.crop_size = {"height": 160, "width": 160}
    image_processor.image_mean, image_processor.image_std = list(MEAN), list(STD)
    if layout == "processor":
        processor.save_pretrained(folder)
    else:
        image_processor.save_pretrained(folder)
        processor.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=LAYOUTS)
def saved(request, tiny_model_dir: Path, clip_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp(request.param), tiny_model_dir, clip_files, request.param)


@pytest.fixture(scope="module")
def photos(exif_samples: Path) -> list[Image.Image]:
    return [Image.open(exif_samples / name).convert("RGB") for name in PHOTOS]


def _layout_of(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} & {"processor_config.json", "preprocessor_config.json"}


def test_each_layout_is_what_this_transformers_writes(saved):
    names = _layout_of(saved)
    if saved.name.startswith("image-processor"):
        assert names == {"preprocessor_config.json"}
    elif int(transformers.__version__.split(".")[0]) >= 5:  # 4.x still wrote preprocessor_config.json here
        assert names == {"processor_config.json"}
        assert "image_processor" in json.loads((saved / "processor_config.json").read_text())


def test_the_saved_preprocessing_is_the_one_used(saved, photos):
    embedder = load_embedder(ModelConfig(name=str(saved), device="cpu", precision="fp32"))
    assert embedder.input_side == 180
    assert embedder.embed_images(photos).shape == (len(photos), 16)  # the model takes its 160 px input
    processor = CLIPProcessor.from_pretrained(saved)  # transformers' own reading of the same folder
    for image in photos:
        expected = processor(images=[image], return_tensors="pt")["pixel_values"]
        assert expected.shape == (1, 3, 160, 160)
        assert torch.allclose(embedder._pixel_values([image]), expected, atol=1e-4), image.size


def test_the_text_encoder_takes_the_folder_too(saved):
    embedder = load_embedder(ModelConfig(name=str(saved), device="cpu"))
    encoder = load_text_encoder(ModelConfig(name=str(saved)))
    assert encoder is not None and encoder.identity == embedder.identity
    queries = ["a dog on the beach", "Ölgemälde", ""]
    assert np.sum(encoder.embed_texts(queries) * embedder.embed_texts(queries), axis=1).min() >= 0.9999


def test_a_hub_snapshot_of_either_layout_loads(saved, tmp_path):
    repo = tmp_path / "models--acme--saved"  # the layout huggingface_hub writes
    shutil.copytree(saved, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    config = ModelConfig(name="acme/saved", cache_dir=tmp_path, allow_download=False, device="cpu")
    embedder = load_embedder(config)
    assert embedder.identity == ModelIdentity("acme/saved", COMMIT, 16)
    assert embedder.input_side == 180
    encoder = load_text_encoder(config)
    assert encoder is not None and encoder.identity == embedder.identity


def test_the_cli_indexes_and_searches_with_the_folder(saved, tmp_path):
    for i in range(3):
        make_photo(tmp_path / "lib" / f"p{i}.jpg", seed=i)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}
    base = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", str(saved)]

    def run(*args: str) -> str:
        result = subprocess.run([*base, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert run("index", "--no-progress", str(tmp_path / "lib")).startswith("3 new")
    hits = [json.loads(line) for line in run("search", "a photo", "--json").splitlines()]
    assert sorted(Path(hit["path"]).name for hit in hits) == ["p0.jpg", "p1.jpg", "p2.jpg"]


def test_a_processor_config_without_an_image_processor_is_refused(tiny_model_dir, clip_files, tmp_path):
    folder = _save(tmp_path / "m", tiny_model_dir, clip_files, "processor")
    if not (folder / "processor_config.json").is_file():
        pytest.skip("this transformers writes no processor_config.json")
    (folder / "preprocessor_config.json").unlink(missing_ok=True)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    with pytest.raises(ModelNotAvailableError, match=r"processor_config\.json") as error:
        load_embedder(ModelConfig(name=str(folder)))
    assert "\n" not in str(error.value) and repr(str(folder)) in str(error.value)
