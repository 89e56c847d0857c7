"""Which model made a vector: ``model.name`` resolved to its files and identity, in one place.

An index records the identity of the model it was built with (the catalog's meta and the Chroma collection's
metadata, in the same keys), so a different model is detected, not mixed in. The identity is worked out here
only: the CLIP embedder, the torch-free text encoder and the library's checks all call ``resolve_model`` or
``ModelIdentity.matches``. Cheap to import: no torch, no transformers; huggingface_hub only to find a cached
hub model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photosearch.config import ModelConfig
from photosearch.errors import ModelNotAvailableError

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
# CLIPConfig's projection_dim when a config.json leaves it out (transformers reads the same default).
DEFAULT_PROJECTION_DIM = 512
_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights made a vector: the recorded name (a folder's absolute path, or a hub name as written), the
    hub commit or the weights' fingerprint, and the vectors' dimension."""

    name: str
    revision: str
    dim: int

    def key(self) -> str:
        """16 hex chars: valid in a Chroma collection name, stable across runs and machines."""
        return hashlib.sha256(f"{self.name}\n{self.revision}\n{self.dim}".encode()).hexdigest()[:16]

    def describe(self) -> str:
        revision = self.revision[:7] if COMMIT_HASH.fullmatch(self.revision) else self.revision
        return f"{self.name} @ {revision} ({self.dim}-d)"

    def matches(self, configured: str) -> bool:
        """Whether this is the model that ``model.name`` = ``configured`` names (a folder or a hub name).

        The name only, so it is cheap (status, and refusing a changed model before loading it): whether the
        weights in that folder or the hub revision changed too is known once the model is resolved.
        """
        return self.name == recorded_name(configured)

    def to_dict(self) -> dict[str, str | int]:
        """The recorded form: the catalog's meta (as JSON) and the Chroma collection's metadata."""
        return {"name": self.name, "revision": self.revision, "dim": self.dim}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelIdentity:
        # "model": the key the Chroma collection metadata of indexes built before to_dict() held the name under.
        name = data.get("name", data.get("model"))
        revision, dim = data.get("revision"), data.get("dim")
        if not (isinstance(name, str) and isinstance(revision, str) and isinstance(dim, int)):
            raise ValueError(f"not a recorded model identity: {dict(data)!r}")
        return cls(name, revision, dim)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ModelIdentity:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not a recorded model identity: {text!r}")
        return cls.from_dict(data)


@dataclass(frozen=True)
class ResolvedModel:
    """Where the configured model's files are, and its identity."""

    folder: Path  # the model folder itself, or the hub cache's snapshot folder
    identity: ModelIdentity
    on_hub: bool  # a hub name (the files are in the Hugging Face cache), not a folder


def local_folder(name: str) -> Path | None:
    """``model.name`` as an existing folder (absolute, links resolved), or None when it names no folder."""
    folder = Path(name).expanduser()
    return folder.resolve() if folder.is_dir() else None


def recorded_name(name: str) -> str:
    """The name an index records for ``model.name``: a local folder as its absolute path, a hub name as written."""
    folder = local_folder(name)
    return name if folder is None else str(folder)


def resolve_model(config: ModelConfig) -> ResolvedModel | None:
    """The configured model's files and identity, without loading its weights.

    A folder is identified by a fingerprint of its weight files; a hub model by the commit of its snapshot in the
    local cache (or the snapshot's fingerprint when the folder is not named by a commit). None when a hub model is
    not in the local cache (downloading it is the loader's job), or the name is neither a folder nor a hub name.
    The dimension is the config's projection_dim.
    """
    folder = local_folder(config.name)
    if folder is not None:
        return ResolvedModel(folder, ModelIdentity(str(folder), fingerprint(folder), _dim(folder)), on_hub=False)
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(config.name, "config.json", cache_dir=config.cache_dir, revision=config.revision)
    except ValueError:  # neither a folder nor a hub name ("/no/such/dir"): the loader says so
        return None
    if not isinstance(found, str):  # not cached, or cached as known to be missing
        return None
    snapshot = Path(found).parent
    revision = snapshot.name if COMMIT_HASH.fullmatch(snapshot.name) else fingerprint(snapshot)
    return ResolvedModel(snapshot, ModelIdentity(config.name, revision, _dim(snapshot)), on_hub=True)


def _dim(folder: Path) -> int:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        dim = raw.get("projection_dim", DEFAULT_PROJECTION_DIM) if isinstance(raw, dict) else None
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"model folder {str(folder)!r} has no readable config.json: {exc}") from None
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ModelNotAvailableError(f"model folder {str(folder)!r}: config.json's projection_dim is {dim!r}")
    return dim


def fingerprint(folder: Path) -> str:
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
