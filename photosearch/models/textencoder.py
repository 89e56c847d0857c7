"""CLIP's text tower without torch or transformers: a query's vector from ONNX Runtime over the model's weights.

Why: importing torch and transformers takes ~5 s on a small machine, which a `photosearch search` in a new
process cannot afford. A query is one short sequence, so the tower is a few dozen matrix-vector products over
the text weights, which are memory-mapped straight from the model's safetensors file (the vision weights are
never read) and handed to an ONNX Runtime session built from textgraph.py's graph: 7-9 ms per query for
ViT-B/32 on 2 CPU cores, 1.8x faster than the same products in numpy and ~2x faster than torch (float32).

It computes exactly what transformers' ``CLIPModel.get_text_features`` does (tests hold it to cosine >= 0.9999):
token + position embeddings, pre-LayerNorm layers with causal self-attention, the final LayerNorm, the hidden
state at the end-of-text token, ``text_projection``, L2 normalisation. The attention is causal, so tokens after
the pooled one cannot change it and are never computed.

``load_text_encoder`` returns None whenever the model is not one this covers (no safetensors weights, no
tokenizer.json, another architecture or activation); the caller then uses the full transformers Embedder.
"""

from __future__ import annotations

import json
import mmap
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosearch.config import ModelConfig
from photosearch.models.identity import ModelIdentity, resolve_model
from photosearch.models.protocols import TextModel
from photosearch.models.textgraph import Layer, text_tower

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)")
_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
# CLIPTextConfig's defaults, for keys a config.json leaves out (sizes come from the weights' shapes).
_DEFAULTS: dict[str, Any] = {"num_attention_heads": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                             "eos_token_id": 49407}  # fmt: skip
# The transformers tokenizer classes whose pipeline is exactly the one tokenizer.json describes.
_TOKENIZERS = {None, "CLIPTokenizer", "CLIPTokenizerFast"}


_ACTIVATIONS = ("quick_gelu", "gelu")


class TextEncoder(TextModel):
    """A TextEmbedder: ``embed_texts`` and ``identity``, as search needs."""

    def __init__(self, tokenizer: Tokenizer, weights: dict[str, np.ndarray], text: dict[str, Any],
                 identity: ModelIdentity, prepack: bool = True) -> None:  # fmt: skip
        """``prepack``: let ONNX Runtime pack the weights for its GEMM kernels, ~0.1 s once for ~4 ms less per
        query: worth it in a process that answers many (not in a one-query `photosearch search`)."""
        import onnxruntime

        self._tokenizer = tokenizer
        self._identity = identity
        self._token = weights["text_model.embeddings.token_embedding.weight"]
        self._position = weights["text_model.embeddings.position_embedding.weight"]
        self._eos = int(text["eos_token_id"])
        heads = int(text["num_attention_heads"])
        if self._token.shape[1] % heads:
            raise ValueError("hidden size not divisible by the number of heads")
        count = 1 + max(int(m[1]) for key in weights if (m := _LAYER.fullmatch(key)))
        layers = [_layer(weights, f"text_model.encoder.layers.{i}.") for i in range(count)]
        final = _pair(weights, "text_model.final_layer_norm")
        model, self._weights = text_tower(layers, final, weights["text_projection.weight"], heads,
                                          float(text["layer_norm_eps"]), text["hidden_act"])  # fmt: skip
        options = onnxruntime.SessionOptions()
        # The pool's threads spin between the graph's ~200 small steps: without spinning a query takes 10 ms
        # instead of 7 (ViT-B/32, 2 cores); they stop spinning soon after a query (~40 ms of CPU time in all).
        options.log_severity_level = 3  # errors only
        if not prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        names = list(self._weights)
        # Handed over by reference, not serialised into the graph (the session still packs the GEMM weights its
        # own way); the arrays stay referenced by self._weights as long as the session lives.
        options.add_external_initializers(names, [onnxruntime.OrtValue.ortvalue_from_numpy(self._weights[n])
                                                  for n in names])  # fmt: skip
        self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        # transformers truncates a query to max_position_embeddings tokens, keeping the end-of-text token.
        tokenizer.enable_truncation(max_length=self._position.shape[0])
        tokenizer.no_padding()

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._embed(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))])

    def _pooled_position(self, ids: np.ndarray) -> int:
        # As transformers: configs from before its PR #24773 say eos_token_id 2 and pool at the highest id (the
        # end-of-text token has the largest id); newer ones pool at the first end-of-text token.
        return int(ids.argmax() if self._eos == 2 else (ids == self._eos).argmax())

    def _embed(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64)
        # The attention is causal: tokens after the pooled one cannot change it, so they are never computed.
        length = self._pooled_position(ids) + 1
        x = self._token[ids[:length]] + self._position[:length]
        causal = np.triu(np.full((length, length), -np.inf, dtype=np.float32), 1)
        out = self._session.run(None, {"x": x.astype(np.float32), "mask": causal})[0][0]
        return np.asarray(out / np.linalg.norm(out), dtype=np.float32)


def _pair(weights: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    return weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]


def _layer(weights: dict[str, np.ndarray], prefix: str) -> Layer:
    q, k, v, out = (_pair(weights, f"{prefix}self_attn.{name}_proj") for name in ("q", "k", "v", "out"))
    return Layer(_pair(weights, prefix + "layer_norm1"), q, k, v, out, _pair(weights, prefix + "layer_norm2"),
                 _pair(weights, prefix + "mlp.fc1"), _pair(weights, prefix + "mlp.fc2"))  # fmt: skip


def _read_tensors(path: Path, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named tensors of a safetensors file, memory-mapped (float32 ones are not copied)."""
    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header: dict[str, Any] = json.loads(fh.read(size))
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # stays valid after the file is closed
    tensors = {}
    for name, info in header.items():
        if not name.startswith(wanted) or info["dtype"] not in _DTYPES:  # e.g. an int64 position_ids buffer
            continue
        dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
        raw = np.frombuffer(buffer, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=8 + size + begin)
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16" or raw.ctypes.data % 4:  # ONNX Runtime wants aligned float32
            raw = raw.astype(np.float32)
        tensors[name] = raw.reshape(shape)
    return tensors


def _text_weights(folder: Path) -> dict[str, np.ndarray] | None:
    wanted = ("text_model.", "text_projection.")
    if (folder / "model.safetensors").is_file():
        return _read_tensors(folder / "model.safetensors", wanted)
    index = folder / "model.safetensors.index.json"  # a sharded checkpoint: read only the shards that hold text
    if not index.is_file():
        return None
    weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    files = sorted({file for key, file in weight_map.items() if key.startswith(wanted)})
    return {key: value for file in files for key, value in _read_tensors(folder / file, wanted).items()}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_text_encoder(config: ModelConfig, prepack: bool = True) -> TextEncoder | None:
    """The torch-free text encoder for the configured model, or None when the full Embedder must be used instead."""
    from tokenizers import Tokenizer

    try:
        resolved = resolve_model(config)  # only a model already on disk: fetching one is the full loader's job
        if resolved is None or not (resolved.folder / "tokenizer.json").is_file():
            return None
        folder = resolved.folder
        raw = _json(folder / "config.json")
        # CLIPConfig takes text_config_dict, when given, as the whole text config (defaults for the rest).
        text = {**_DEFAULTS, **(raw.get("text_config_dict") or raw.get("text_config") or {})}
        tokenizer_class = _json(folder / "tokenizer_config.json").get("tokenizer_class")
        if (
            raw.get("model_type") != "clip"
            or text["hidden_act"] not in _ACTIVATIONS
            or tokenizer_class not in _TOKENIZERS
        ):
            return None
        weights = _text_weights(folder)
        if weights is None or weights["text_projection.weight"].shape[0] != resolved.identity.dim:
            return None
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return TextEncoder(tokenizer, weights, text, resolved.identity, prepack)
    except Exception:  # tokenizers and json raise plain Exceptions/ValueErrors on odd files
        # Whatever is odd about the files, the full loader reads them again and says what is wrong.
        return None


class Prefetched:
    """The text encoder of one model, loading in a thread from the moment this is made; as a TextEncoderFactory
    (models/loaded.py) it gives that encoder when asked for that model (another model is loaded then and there).

    Why: a `photosearch search` in a new process spends ~0.4 s importing the query layer (SQLAlchemy, the catalog)
    and ~0.3 s reading the tokenizer and building the ONNX Runtime session, which releases the GIL. Started before
    those imports, the second overlaps the first. One query to answer: the weights are not prepacked."""

    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._done = threading.Event()
        self._result: TextEncoder | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._load, name="prefetch-text", daemon=True).start()

    def _load(self) -> None:
        try:
            self._result = load_text_encoder(self._config, prepack=False)
        except BaseException as exc:  # raised in the caller's thread, where it is handled
            self._error = exc
        finally:
            self._done.set()

    def __call__(self, config: ModelConfig) -> TextEncoder | None:
        if config != self._config:
            return load_text_encoder(config)
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result
