"""What machine a benchmark ran on, for the rows of RESULTS.md."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CLIP_FILES = Path(__file__).resolve().parent.parent.parent / "shared" / "clip-tokenizer"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json")  # fmt: skip


def save_random_clip(folder: Path, small: dict[str, int] | None = None, projection_dim: int = 16) -> Path:
    """A CLIPModel with random weights saved like a downloaded checkpoint: the full ViT-B/32 architecture of
    ../shared/clip-tokenizer/config.json (real speed), or with ``small`` overriding both towers' sizes."""
    if (folder / "model.safetensors").is_file():
        return folder
    import shutil

    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_json_file(str(CLIP_FILES / "config.json"))
    if small:
        text, vision = config.text_config.to_dict() | small, config.vision_config.to_dict() | small
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(0)
    staging = folder.with_name(folder.name + ".partial")  # renamed when complete: a killed run leaves no half model
    shutil.rmtree(staging, ignore_errors=True)
    CLIPModel(config).save_pretrained(staging)
    for name in TOKENIZER_FILES:
        shutil.copy(CLIP_FILES / name, staging / name)
    staging.rename(folder)
    return folder
