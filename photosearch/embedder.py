"""CLIP embeddings for images and text queries, behind the small ``Embedder`` interface.

torch and transformers are imported lazily (inside functions): importing this module must stay cheap, so the
CLI starts fast for commands that never touch the model. Images are preprocessed here, not by transformers'
image processor, which is slow per batch; ``_prepare`` reproduces CLIPImageProcessor step by step.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from photosearch.config import ModelConfig
from photosearch.errors import ModelError, ModelNotAvailableError

if TYPE_CHECKING:
    import torch

_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
_SAMPLE_BYTES = 1 << 20
_SAVED = '(see README, "Offline models")'
_HINT = f"set model.name (PHOTOSEARCH_MODEL_NAME) to a local folder with a saved CLIP model {_SAVED}"
# What "the model is not there or not usable" looks like while loading: missing files (OSError; the hub's HTTP
# errors are OSErrors too), bad names or JSON (ValueError), corrupt weights (RuntimeError from safetensors).
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError)


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights made a vector; stored with the index so a different model is detected, not mixed in."""

    name: str
    revision: str
    dim: int

    def key(self) -> str:
        """16 hex chars: valid in a Chroma collection name, stable across runs and machines."""
        return hashlib.sha256(f"{self.name}\n{self.revision}\n{self.dim}".encode()).hexdigest()[:16]

    def describe(self) -> str:
        revision = self.revision[:7] if _COMMIT_HASH.fullmatch(self.revision) else self.revision
        return f"{self.name} @ {revision} ({self.dim}-d)"


class Embedder(Protocol):
    """What the indexer and search need from a model; tests fake this, never ClipEmbedder's internals."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def preferred_batch_size(self) -> int: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class _Preprocess:
    """CLIPImageProcessor's parameters; its class defaults fill keys a preprocessor_config.json leaves out."""

    shortest_edge: int
    crop: tuple[int, int]  # (width, height), PIL order
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: int
    rescale_factor: float

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> _Preprocess:
        size, crop = raw.get("size", 224), raw.get("crop_size", 224)
        shortest = size if isinstance(size, int) else size.get("shortest_edge")
        if not isinstance(shortest, int):  # exact (height, width) resizes are not what CLIP checkpoints use
            raise ValueError(f"unsupported resize setting {size!r}")
        return cls(
            shortest_edge=shortest,
            crop=(crop, crop) if isinstance(crop, int) else (int(crop["width"]), int(crop["height"])),
            mean=tuple(raw.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(raw.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
            resample=int(raw.get("resample", Image.Resampling.BICUBIC)),
            rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    # As transformers 5 does: transparency is composited onto white, not dropped (that exposes hidden pixels).
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _prepare(image: Image.Image, params: _Preprocess) -> np.ndarray:
    """Resize (shortest edge) and center crop one image exactly as CLIPImageProcessor does; HWC uint8."""
    image = _to_rgb(image)
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    # transformers truncates the long side (int()), it does not round: matching it keeps the crop identical.
    # No reducing_gap: it is ~2x faster on big photos but moves pixels by up to 4-15 levels off the reference.
    new_long = int(params.shortest_edge * long / short)
    size = (params.shortest_edge, new_long) if width <= height else (new_long, params.shortest_edge)
    image = image.resize(size, resample=params.resample)
    # Floor offsets as transformers does; PIL pads black outside the image, as transformers' crop pads zeros.
    left, top = (size[0] - params.crop[0]) // 2, (size[1] - params.crop[1]) // 2
    return np.asarray(image.crop((left, top, left + params.crop[0], top + params.crop[1])), dtype=np.uint8)


def _unit_rows(output: Any) -> np.ndarray:
    import torch

    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a bare tensor.
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    normalized = torch.nn.functional.normalize(features.float(), dim=-1)
    return np.asarray(normalized.cpu().numpy(), dtype=np.float32)


class ClipEmbedder:
    """Embedder backed by a transformers CLIPModel; build it with load_embedder()."""

    def __init__(
        self,
        model: Any,  # a CLIPModel; Any because transformers' annotations are too loose for mypy --strict
        tokenizer: Any,
        preprocess: _Preprocess,
        identity: ModelIdentity,
        *,
        device: torch.device,
        batch_size: int,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        self._identity = identity
        self._device = device
        self._batch_size = batch_size
        self._max_text_length = int(model.config.text_config.max_position_embeddings)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def preferred_batch_size(self) -> int:
        return self._batch_size

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        step = self._batch_size  # chunks bound memory whatever the caller passes
        chunks = [self._embed_image_chunk(images[i : i + step]) for i in range(0, len(images), step)]
        return np.concatenate(chunks) if chunks else self._empty()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):  # a str is a Sequence[str]; embedding its characters is never meant
            raise TypeError("embed_texts takes a sequence of strings, not a single string")
        step = self._batch_size
        chunks = [self._embed_text_chunk(texts[i : i + step]) for i in range(0, len(texts), step)]
        return np.concatenate(chunks) if chunks else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self._identity.dim), dtype=np.float32)

    def _pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model input for images: what CLIPProcessor's pixel_values would be, as one tensor."""
        import torch

        batch = torch.from_numpy(np.stack([_prepare(image, self._preprocess) for image in images]))
        # Ship uint8 to the device (4x less traffic than float32) and normalise there.
        batch = batch.to(self._device).permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.tensor(self._preprocess.mean, device=self._device).view(1, -1, 1, 1)
        std = torch.tensor(self._preprocess.std, device=self._device).view(1, -1, 1, 1)
        return ((batch * self._preprocess.rescale_factor - mean) / std).to(self._model.dtype)

    def _embed_image_chunk(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _unit_rows(self._model.get_image_features(pixel_values=self._pixel_values(images)))

    def _embed_text_chunk(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        # Truncation: a query longer than 77 tokens is cut (eos kept), not an error.
        encoded = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self._max_text_length, return_tensors="pt"
        )
        ids, mask = encoded["input_ids"].to(self._device), encoded["attention_mask"].to(self._device)
        with torch.inference_mode():
            return _unit_rows(self._model.get_text_features(input_ids=ids, attention_mask=mask))


def load_embedder(config: ModelConfig) -> ClipEmbedder:
    """Load the configured CLIP model; raises ModelNotAvailableError (one actionable line) when it cannot."""
    folder = Path(config.name).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        model, tokenizer, preprocess = _load_parts(str(folder), config, hub=False)
        identity = ModelIdentity(str(folder), _fingerprint(folder), int(model.config.projection_dim))
    else:
        model, tokenizer, preprocess = _load_hub(config)
        snapshot = _resolve(config.name, "config.json", _hub_kwargs(config, local_files_only=True)).parent
        revision = snapshot.name if _COMMIT_HASH.fullmatch(snapshot.name) else _fingerprint(snapshot)
        identity = ModelIdentity(config.name, revision, int(model.config.projection_dim))
    device = _device(config)
    model = model.to(device).eval()
    return ClipEmbedder(model, tokenizer, preprocess, identity, device=device, batch_size=config.batch_size)


def _hub_kwargs(config: ModelConfig, *, local_files_only: bool) -> dict[str, Any]:
    return {"revision": config.revision, "cache_dir": config.cache_dir, "local_files_only": local_files_only}


def _load_hub(config: ModelConfig) -> tuple[Any, Any, _Preprocess]:
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # documented, not in __all__

    try:  # "~/clip", "/no/such/dir": a folder that is not there, not something to look up on the Hub
        validate_repo_id(config.name)
    except ValueError:
        raise ModelNotAvailableError(
            f"model {config.name!r} is neither an existing folder nor a Hugging Face model name: {_HINT}"
        ) from None
    try:  # the cache first: no network is touched when the model is already there
        return _load_parts(config.name, config, hub=True)
    except _LOAD_ERRORS as exc:
        if not config.allow_download:
            raise ModelNotAvailableError(
                f"model {config.name!r} is not in the local Hugging Face cache and downloads are disabled"
                f" (model.allow_download): allow them and run once with network access, or {_HINT}"
            ) from exc
    cannot = (
        f"model {config.name!r} is not in the local Hugging Face cache and could not be downloaded:"
        f" run once with network access, or {_HINT}"
    )
    _probe_hub(config, cannot)
    try:
        return _load_parts(config.name, config, hub=True, local_files_only=False)
    except _LOAD_ERRORS as exc:
        raise ModelNotAvailableError(cannot) from exc


def _probe_hub(config: ModelConfig, cannot: str) -> None:
    """One HEAD request without retries, so an unreachable Hub fails in milliseconds, not minutes.

    When nothing is cached, huggingface_hub retries a failed HEAD with backoff (1+2+4+8+8 s, per file), and
    from_pretrained takes no argument to turn that off; this probe settles the usual offline case first.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(config.name, "config.json", revision=config.revision), timeout=10)
    except RevisionNotFoundError as exc:
        raise ModelNotAvailableError(
            f"model {config.name!r} has no revision {config.revision!r} on the Hugging Face Hub: fix model.revision"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotAvailableError(
            f"model {config.name!r} is not on the Hugging Face Hub (or is private or gated): check model.name"
            f" (PHOTOSEARCH_MODEL_NAME), or {_HINT}"
        ) from exc
    except Exception as exc:  # network, TLS, proxy, HF offline mode: all mean "cannot download now"
        raise ModelNotAvailableError(cannot) from exc


def _load_parts(
    source: str, config: ModelConfig, *, hub: bool, local_files_only: bool = True
) -> tuple[Any, Any, _Preprocess]:
    """Config, preprocessing, tokenizer, then weights: cheap checks first, so a wrong folder fails fast."""
    from transformers import AutoConfig, AutoTokenizer, CLIPConfig, CLIPModel

    kwargs = _hub_kwargs(config, local_files_only=local_files_only) if hub else {"local_files_only": True}
    try:
        model_config = AutoConfig.from_pretrained(source, **kwargs)
        if not isinstance(model_config, CLIPConfig):
            kind = type(model_config).__name__.removesuffix("Config")
            raise ModelNotAvailableError(f"model {config.name!r} is a {kind} model, not CLIP: {_HINT}")
        raw = json.loads(_resolve(source, "preprocessor_config.json", kwargs).read_text(encoding="utf-8"))
        preprocess = _Preprocess.from_dict(raw)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        loaded: Any = CLIPModel.from_pretrained(
            source, config=model_config, dtype=_dtype(config), output_loading_info=True, **kwargs
        )
        model, info = loaded
    except _LOAD_ERRORS as exc:
        if hub:
            raise  # _load_hub tells "not cached" from "cannot download"
        raise ModelNotAvailableError(
            f"model folder {source!r} does not hold a complete saved CLIP model (config.json, weights,"
            f" tokenizer, preprocessor_config.json): save one with save_pretrained {_SAVED}"
        ) from exc
    if info["missing_keys"]:  # transformers fills missing weights with random values: silent garbage vectors
        raise ModelNotAvailableError(
            f"model {config.name!r} lacks {len(info['missing_keys'])} CLIP weights (not a full CLIPModel): {_HINT}"
        )
    return model, tokenizer, preprocess


def _resolve(source: str, filename: str, kwargs: dict[str, Any]) -> Path:
    """A file of the model, from its folder or the hub cache (downloaded first if kwargs allow)."""
    from transformers.utils.hub import cached_file

    path = cached_file(source, filename, **kwargs)
    if path is None:
        raise FileNotFoundError(filename)
    return Path(path)


def _dtype(config: ModelConfig) -> torch.dtype:
    import torch

    return torch.float32  # the one place a precision setting (fp16/bf16) will plug in


def _device(config: ModelConfig) -> torch.device:
    import torch

    mps = torch.backends.mps.is_available()
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}[config.device]:
        raise ModelError(f"model.device is {config.device!r} but that is not available here: use auto or cpu")
    return torch.device(config.device)


def _fingerprint(folder: Path) -> str:
    """Identify the weight files cheaply: sha256 over each file's name, size, first and last MiB.

    Hashing all of a 600 MB checkpoint costs about a second at every start. The sample still changes whenever
    the weights do: retrained or re-saved weights change the bytes of the first and last tensors, and a
    safetensors header (inside the first MiB) records every tensor's dtype, shape and offsets.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(_SAMPLE_BYTES))
            fh.seek(max(size - _SAMPLE_BYTES, 0))
            digest.update(fh.read(_SAMPLE_BYTES))
    return f"sha256:{digest.hexdigest()[:16]}"
