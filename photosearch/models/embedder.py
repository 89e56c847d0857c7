"""CLIP embeddings for images and text queries, behind the small ``Embedder`` interface (protocols.py).

torch and transformers are imported lazily (inside functions): importing this module must stay cheap, so the
CLI starts fast for commands that never touch the model. Images are preprocessed by preprocess.py, not by
transformers' image processor (slow per batch), in two steps: ``prepare`` (any thread) and the model step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from photosearch.config import ModelConfig
from photosearch.errors import ModelError, ModelNotAvailableError
from photosearch.models.identity import ModelIdentity as ModelIdentity  # re-exported: where callers found it
from photosearch.models.identity import local_folder, resolve_model
from photosearch.models.precision import Precision, prepare_image_tower, resolve_precision
from photosearch.models.preprocess import Preprocess, pixel_batch, prepare
from photosearch.models.protocols import Embedder as Embedder  # re-exported: the indexer's import
from photosearch.models.protocols import ImageModel, TextModel

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
# Photos per model call on a GPU when model.batch_size is not set: a GPU is far faster per photo with big
# batches, and the indexer's decode-ahead window (two batches) keeps it fed. ~40 MB of uint8 input per batch.
GPU_BATCH_SIZE = 256
_SAVED = '(see README, "Offline models")'
_HINT = f"set model.name (PHOTOSEARCH_MODEL_NAME) to a local folder with a saved CLIP model {_SAVED}"
# What "the model is not there or not usable" looks like while loading: missing files (OSError; the hub's HTTP
# errors are OSErrors too), bad names or JSON (ValueError), corrupt weights (RuntimeError from safetensors).
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError)


def _unit_rows(output: Any) -> np.ndarray:
    import torch

    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a bare tensor.
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    normalized = torch.nn.functional.normalize(features.float(), dim=-1)
    return np.asarray(normalized.cpu().numpy(), dtype=np.float32)


class ClipEmbedder(ImageModel, TextModel):
    """Embedder backed by a transformers CLIPModel; build it with load_embedder()."""

    def __init__(
        self,
        model: Any,  # a CLIPModel; Any because transformers' annotations are too loose for mypy --strict
        tokenizer: Any,
        preprocess: Preprocess,
        identity: ModelIdentity,
        *,
        device: torch.device,
        batch_size: int,
        precision: Precision,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        self._identity = identity
        self._device = device
        self._batch_size = batch_size
        self._precision = precision
        self._max_text_length = int(model.config.text_config.max_position_embeddings)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def preferred_batch_size(self) -> int:
        return self._batch_size

    @property
    def input_side(self) -> int:
        return self._preprocess.shortest_edge

    @property
    def on_cpu(self) -> bool:
        return self._device.type == "cpu"

    @property
    def precision(self) -> Precision:
        """What the image tower runs at, and why (the text tower is always float32)."""
        return self._precision

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return prepare(image, self._preprocess, source_size)

    @property
    def text_batch_size(self) -> int:
        return self._batch_size

    def _pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model input for images: what CLIPProcessor's pixel_values would be, as one tensor."""
        return pixel_batch([self.prepare(image) for image in images], self._preprocess, self._device,
                           self._precision.dtype)  # fmt: skip

    def _embed_image_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        pixels = pixel_batch(prepared, self._preprocess, self._device, self._precision.dtype)
        with torch.inference_mode():
            return _unit_rows(self._model.get_image_features(pixel_values=pixels))

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
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
    device = _device(config)
    precision = resolve_precision(config.precision, device)  # before the weights: a refused setting fails fast
    folder = local_folder(config.name)
    model, tokenizer, preprocess = _load_hub(config) if folder is None else _load_parts(str(folder), config, hub=False)
    resolved = resolve_model(config)  # after loading: a hub model is in the cache now
    if resolved is None:
        raise ModelNotAvailableError(f"model {config.name!r} loaded but is not in the Hugging Face cache: {_HINT}")
    identity = resolved.identity
    model = model.to(device).eval()
    # Only the image tower (and its projection) drops precision: it does nearly all the work when indexing,
    # while the text tower embeds one short query at a time and stays exact in float32.
    prepare_image_tower(model, precision)
    log.info("image model on %s at %s (%s)", device, precision.name, precision.reason)
    batch_size = config.batch_size or (config.batch if device.type == "cpu" else GPU_BATCH_SIZE)
    return ClipEmbedder(model, tokenizer, preprocess, identity, device=device, batch_size=batch_size,
                        precision=precision)  # fmt: skip


def _hub_kwargs(config: ModelConfig, *, local_files_only: bool) -> dict[str, Any]:
    return {"revision": config.revision, "cache_dir": config.cache_dir, "local_files_only": local_files_only}


def _load_hub(config: ModelConfig) -> tuple[Any, Any, Preprocess]:
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
) -> tuple[Any, Any, Preprocess]:
    """Config, preprocessing, tokenizer, then weights: cheap checks first, so a wrong folder fails fast."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, CLIPConfig, CLIPModel

    kwargs = _hub_kwargs(config, local_files_only=local_files_only) if hub else {"local_files_only": True}
    try:
        model_config = AutoConfig.from_pretrained(source, **kwargs)
        if not isinstance(model_config, CLIPConfig):
            kind = type(model_config).__name__.removesuffix("Config")
            raise ModelNotAvailableError(f"model {config.name!r} is a {kind} model, not CLIP: {_HINT}")
        preprocess = Preprocess.from_dict(_image_processor_dict(source, kwargs))
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        loaded: Any = CLIPModel.from_pretrained(
            source, config=model_config, dtype=torch.float32, output_loading_info=True, **kwargs
        )
        model, info = loaded
    except _LOAD_ERRORS as exc:
        if hub:
            raise  # _load_hub tells "not cached" from "cannot download"
        raise ModelNotAvailableError(
            f"model folder {source!r} does not hold a complete saved CLIP model (config.json, weights,"
            f" tokenizer, preprocessor_config.json or processor_config.json): save one with save_pretrained {_SAVED}"
        ) from exc
    if info["missing_keys"]:  # transformers fills missing weights with random values: silent garbage vectors
        raise ModelNotAvailableError(
            f"model {config.name!r} lacks {len(info['missing_keys'])} CLIP weights (not a full CLIPModel): {_HINT}"
        )
    return model, tokenizer, preprocess


def _image_processor_dict(source: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The image processor's settings, found where transformers itself looks, in its order.

    transformers 5's ``Processor.save_pretrained`` writes them nested in processor_config.json (and no
    preprocessor_config.json); older versions, and most hub repositories, have preprocessor_config.json.
    """
    from transformers.utils.hub import cached_file

    for filename, nested in (("processor_config.json", "image_processor"), ("preprocessor_config.json", None)):
        path = cached_file(source, filename, _raise_exceptions_for_missing_entries=False, **kwargs)
        if path is None:
            continue
        raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        if nested is None:
            return raw
        if isinstance(raw.get(nested), dict):
            return dict(raw[nested])
    raise FileNotFoundError("neither processor_config.json (with an image_processor) nor preprocessor_config.json")


def _device(config: ModelConfig) -> torch.device:
    import torch

    mps = torch.backends.mps.is_available()
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}[config.device]:
        raise ModelError(f"model.device is {config.device!r} but that is not available here: use auto or cpu")
    return torch.device(config.device)
