"""One typed configuration object, loaded once: defaults < config file < PHOTOSEARCH_* env < explicit overrides.

The loader takes the environment as an argument: only the CLI (the edge) passes ``os.environ``; library code
receives a finished ``Config`` and never looks at the process environment itself.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from photosearch.errors import ConfigError
from photosearch.query.limits import MAX_K

ENV_PREFIX = "PHOTOSEARCH_"
CONFIG_FILENAME = "config.toml"

DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git",
    ".svn",
    ".hg",
    "@eaDir",  # Synology thumbnails
    "#recycle",
    ".thumbnails",
    ".Trash*",
    "$RECYCLE.BIN",
    "lost+found",
    "._*",  # macOS resource forks
    "Thumbs.db",
    ".DS_Store",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    name: str = "openai/clip-vit-base-patch32"
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(default=32, ge=1, le=4096)
    allow_download: bool = True
    cache_dir: Path | None = None


class IndexConfig(_Section):
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES
    include_hidden: bool = False
    follow_symlinks: bool = True
    max_image_pixels: int = Field(default=150_000_000, ge=1)


class WatchConfig(_Section):
    observer: Literal["auto", "native", "polling"] = "auto"
    polling_interval: float = Field(default=5.0, gt=0, le=3600)
    debounce: float = Field(default=1.0, ge=0, le=600)
    settle: float = Field(default=2.0, ge=0, le=3600)
    batch_size: int = Field(default=32, ge=1, le=4096)
    batch_wait: float = Field(default=5.0, ge=0, le=3600)
    max_tracked_paths: int = Field(default=10_000, ge=10)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    token: str | None = Field(default=None, min_length=16)
    max_upload_bytes: int = Field(default=25_000_000, ge=1024)
    thumbnail_size: int = Field(default=320, ge=32, le=2048)
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback and the bound one ("*": any)


class SearchConfig(_Section):
    default_k: int = 10  # the one default of every search (CLI, library, HTTP API), from 1 to MAX_K

    @field_validator("default_k")
    @classmethod
    def _k_in_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_K:  # above MAX_K every query that used the default would be refused
            raise PydanticCustomError(
                "k_range", "must be from 1 to {max_k} (the most results a query returns), got {value}",
                {"max_k": MAX_K, "value": value},
            )  # fmt: skip
        return value


class StoreConfig(_Section):
    """Where the catalog and the vectors live: by default both in data_dir, with no server to run; a library
    shared by several machines names a PostgreSQL database and a Chroma server (README, "Scaling out")."""

    catalog: str | None = None  # a SQLAlchemy URL (postgresql+psycopg://user:pass@host/db); None: data_dir's SQLite
    vectors: str | None = None  # a Chroma server (http://host:8000); None: the embedded store in data_dir
    tenant: str = "default_tenant"
    database: str = "default_database"
    headers: dict[str, str] = {}  # sent with every request to the Chroma server (a proxy's token)
    worker: str | None = None  # this indexer's name in the shared work queue; None: host name and process id
    lease: float = Field(default=300.0, ge=5, le=86_400)  # seconds a claim lasts unless renewed
    retry_for: float = Field(default=30.0, ge=0, le=86_400)  # seconds a run goes back to a server that stopped
    # A library folder as the catalog knows it -> where this machine mounts it (the same share at other mount
    # points on other machines); each side an absolute path.
    paths: dict[str, str] = {}

    @field_validator("paths")
    @classmethod
    def _path_map(cls, value: dict[str, str]) -> dict[str, str]:
        for side in (*value, *value.values()):
            if not side.startswith("/"):
                raise PydanticCustomError(
                    "path_map", "maps a library folder to this machine's path, both absolute, got {side!r}",
                    {"side": side},
                )  # fmt: skip
        return {k.rstrip("/") or "/": v.rstrip("/") or "/" for k, v in value.items()}

    @field_validator("catalog")
    @classmethod
    def _catalog_url(cls, value: str | None) -> str | None:
        if value and "://" not in value:
            raise PydanticCustomError(
                "catalog_url", "must be a database URL such as postgresql+psycopg://user:password@host/db, "
                "got {value!r}", {"value": value},
            )  # fmt: skip
        return value or None

    @field_validator("vectors")
    @classmethod
    def _vectors_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise PydanticCustomError(
                "vectors_url", "must be a Chroma server's URL such as http://host:8000, got {value!r}",
                {"value": value},
            )  # fmt: skip
        return value or None

    @property
    def shared(self) -> bool:
        """Whether both stores are servers, which several indexers on several machines share (claiming their work
        in the catalog); with either one in the data directory, one process writes at a time (its lock file)."""
        return self.catalog is not None and not self.catalog.startswith("sqlite") and self.vectors is not None


class Config(_Section):
    data_dir: Path
    model: ModelConfig = ModelConfig()
    index: IndexConfig = IndexConfig()
    watch: WatchConfig = WatchConfig()
    server: ServerConfig = ServerConfig()
    search: SearchConfig = SearchConfig()
    store: StoreConfig = StoreConfig()

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite3"

    @property
    def catalog_url(self) -> str:
        """The catalog's SQLAlchemy URL: store.catalog, or the SQLite file in the data directory."""
        return self.store.catalog or f"sqlite:///{self.catalog_path}"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("photosearch", appauthor=False))


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("photosearch", appauthor=False)) / CONFIG_FILENAME


def env_var_names() -> dict[str, tuple[str, ...]]:
    """Every supported environment variable, mapped to the key path it overrides.

    Built from the model so each key has exactly one name (PHOTOSEARCH_<SECTION>_<KEY>, PHOTOSEARCH_DATA_DIR),
    and underscores inside key names cannot be misread as section separators.
    """
    names: dict[str, tuple[str, ...]] = {f"{ENV_PREFIX}DATA_DIR": ("data_dir",)}
    for section, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for key in annotation.model_fields:
                names[f"{ENV_PREFIX}{section}_{key}".upper()] = (section, key)
    return names


def _env_value(raw: str, key_path: tuple[str, ...]) -> Any:
    """Environment values are strings; lists (exclude) are comma separated, the rest pydantic coerces."""
    if key_path in (("index", "exclude"), ("server", "cors_origins"), ("server", "allowed_hosts")):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if key_path == ("store", "headers"):  # "Name: value" pairs, comma separated (a token has no comma)
        pairs = (part.partition(":") for part in raw.split(",") if part.strip())
        return {name.strip(): value.strip() for name, _, value in pairs}
    if key_path == ("store", "paths"):  # "/as/stored=/here" pairs, separated by the OS's path list separator
        mapped = (part.partition("=") for part in raw.split(os.pathsep) if part.strip())
        return {stored.strip(): local.strip() for stored, _, local in mapped}
    return raw


def _set(tree: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in key_path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {part!r} must be a table")
    node[key_path[-1]] = value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _describe(exc: ValidationError, source: str, origins: Mapping[tuple[str, ...], str]) -> str:
    """One line naming the key, and where its bad value came from (file, environment variable or flag)."""
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    origin = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), source)
    where = ".".join(loc) or "(top level)"
    return f"invalid configuration ({origin}): {where}: {first['msg']}"


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    use_default_file: bool = True,
) -> Config:
    """Build the Config.

    path: an explicit config file (must exist); without it the user's default file is read when present.
    env: the environment to read PHOTOSEARCH_* overrides from (the CLI passes os.environ).
    overrides: dotted keys ("model.name", "data_dir") from command-line flags; they win over everything.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        tree = _read_file(path)
        source = str(path)
    elif use_default_file and default_config_path().is_file():
        tree = _read_file(default_config_path())
        source = str(default_config_path())
    origins: dict[tuple[str, ...], str] = {}
    known = env_var_names()
    for name, raw in (env or {}).items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name not in known:
            raise ConfigError(f"unknown environment variable {name} (see config.example.toml for the names)")
        _set(tree, known[name], _env_value(raw, known[name]))
        origins[known[name]] = f"environment variable {name}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(tree, tuple(dotted.split(".")), value)
            origins[tuple(dotted.split("."))] = f"option {dotted}"
    tree.setdefault("data_dir", default_data_dir())
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins)) from None
    return config.model_copy(update={"data_dir": config.data_dir.expanduser()})
