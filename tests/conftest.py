"""Shared fixtures: paths to ../shared, the real test photos, and a tiny real CLIP model."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EXIF_SAMPLES = SHARED / "testdata" / "exif-samples"
CLIP_FILES = SHARED / "clip-tokenizer"


@pytest.fixture(scope="session")
def exif_samples() -> Path:
    assert EXIF_SAMPLES.is_dir(), f"test photos missing: {EXIF_SAMPLES} (../shared must sit beside the repo)"
    return EXIF_SAMPLES


@pytest.fixture(scope="session")
def clip_files() -> Path:
    assert CLIP_FILES.is_dir(), f"CLIP tokenizer files missing: {CLIP_FILES}"
    return CLIP_FILES
