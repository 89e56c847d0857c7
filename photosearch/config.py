"""One typed configuration object, loaded once: defaults < config file < PHOTOSEARCH_* env < explicit overrides.

The loader takes the environment as an argument: only the CLI (the edge) passes ``os.environ``; library code
receives a finished ``Config`` and never looks at the process environment itself.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

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
CPU_BATCH_SIZE = 32  # photos per model call when model.batch_size is not set (models/embedder.py: a GPU's)


# The sections: msgspec Structs, not pydantic models. The configuration is read by every command, and pydantic's
# import and model building cost ~0.13 s of each one (a tenth of a cold `photosearch search`), msgspec's ~0.01 s.
class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ModelConfig(_Section, frozen=True, forbid_unknown_fields=True):
    name: str = "openai/clip-vit-base-patch32"
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: Annotated[int, Meta(ge=1, le=4096)] | None = None  # None: CPU_BATCH_SIZE, a GPU's own on a GPU
    allow_download: bool = True
    cache_dir: Path | None = None

    @property
    def batch(self) -> int:
        """Photos per model call on a CPU (and the indexer's batch of work)."""
        return self.batch_size or CPU_BATCH_SIZE


class IndexConfig(_Section, frozen=True, forbid_unknown_fields=True):
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES
    include_hidden: bool = False
    follow_symlinks: bool = True
    max_image_pixels: Annotated[int, Meta(ge=1)] = 150_000_000


class WatchConfig(_Section, frozen=True, forbid_unknown_fields=True):
    observer: Literal["auto", "native", "polling"] = "auto"
    polling_interval: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    debounce: Annotated[float, Meta(ge=0, le=600)] = 1.0
    settle: Annotated[float, Meta(ge=0, le=3600)] = 2.0
    batch_size: Annotated[int, Meta(ge=1, le=4096)] = 32
    batch_wait: Annotated[float, Meta(ge=0, le=3600)] = 5.0
    max_tracked_paths: Annotated[int, Meta(ge=10)] = 10_000


class ServerConfig(_Section, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8765
    token: Annotated[str, Meta(min_length=16)] | None = None
    max_upload_bytes: Annotated[int, Meta(ge=1024)] = 25_000_000
    thumbnail_size: Annotated[int, Meta(ge=32, le=2048)] = 320
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback and the bound one ("*": any)


class SearchConfig(_Section, frozen=True, forbid_unknown_fields=True):
    default_k: int = 10  # the one default of every search (CLI, library, HTTP API), from 1 to MAX_K

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= MAX_K:  # above MAX_K every query that used the default would be refused
            raise ValueError(f"default_k: must be from 1 to {MAX_K} (the most results a query returns), "
                             f"got {self.default_k}")  # fmt: skip


class StoreConfig(_Section, frozen=True, forbid_unknown_fields=True):
    """Where the catalog and the vectors live: by default both in data_dir, with no server to run; a library
    shared by several machines names a PostgreSQL database and a Chroma server (README, "Scaling out")."""

    catalog: str | None = None  # a SQLAlchemy URL (postgresql+psycopg://user:pass@host/db); None: data_dir's SQLite
    vectors: str | None = None  # a Chroma server (http://host:8000); None: the embedded store in data_dir
    tenant: str = "default_tenant"
    database: str = "default_database"
    # Sent with every request to the Chroma server (a proxy's token).
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    worker: str | None = None  # this indexer's name in the shared work queue; None: host name and process id
    lease: Annotated[float, Meta(ge=5, le=86_400)] = 300.0  # seconds a claim lasts unless renewed
    retry_for: Annotated[float, Meta(ge=0, le=86_400)] = 30.0  # seconds a run goes back to a server that stopped
    # A library folder as the catalog knows it -> where this machine mounts it (the same share at other mount
    # points on other machines); each side an absolute path.
    paths: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        """The checks of one value each that types cannot say; a failure names its key (the error's location is
        the section). Empty URLs mean none, and mapped paths lose a trailing slash (set through msgspec's escape for
        frozen structs being built, force_setattr)."""
        if self.catalog is not None and "://" not in self.catalog and self.catalog:
            raise ValueError(f"catalog: must be a database URL such as postgresql+psycopg://user:password@host/db, "
                             f"got {self.catalog!r}")  # fmt: skip
        if self.vectors and not self.vectors.startswith(("http://", "https://")):
            raise ValueError(f"vectors: must be a Chroma server's URL such as http://host:8000, got {self.vectors!r}")
        for side in (*self.paths, *self.paths.values()):
            if not side.startswith("/"):
                raise ValueError(f"paths: maps a library folder to this machine's path, both absolute, got {side!r}")
        msgspec.structs.force_setattr(self, "catalog", self.catalog or None)
        msgspec.structs.force_setattr(self, "vectors", self.vectors or None)
        normal = {k.rstrip("/") or "/": v.rstrip("/") or "/" for k, v in self.paths.items()}
        msgspec.structs.force_setattr(self, "paths", normal)

    @property
    def shared(self) -> bool:
        """Whether both stores are servers, which several indexers on several machines share (claiming their work
        in the catalog); with either one in the data directory, one process writes at a time (its lock file)."""
        return self.catalog is not None and not self.catalog.startswith("sqlite") and self.vectors is not None


class Config(_Section, frozen=True, forbid_unknown_fields=True):
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


S = TypeVar("S", bound=_Section)


def replace(section: S, **changes: Any) -> S:
    """A copy of ``section`` with ``changes`` (not checked: for values that come from a checked config)."""
    return msgspec.structs.replace(section, **changes)


def validated(kind: type[S], values: Mapping[str, Any]) -> S:
    """``values`` as a ``kind`` (a section, or the whole Config), converted and checked as a config file's are;
    ConfigError naming the key otherwise."""
    try:
        return msgspec.convert(dict(values), kind, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise ConfigError(_message(exc)) from None


def _decode(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(kind)


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("photosearch", appauthor=False))


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("photosearch", appauthor=False)) / CONFIG_FILENAME


def env_var_names() -> dict[str, tuple[str, ...]]:
    """Every supported environment variable, mapped to the key path it overrides.

    Built from the sections so each key has exactly one name (PHOTOSEARCH_<SECTION>_<KEY>, PHOTOSEARCH_DATA_DIR),
    and underscores inside key names cannot be misread as section separators.
    """
    names: dict[str, tuple[str, ...]] = {f"{ENV_PREFIX}DATA_DIR": ("data_dir",)}
    for section in msgspec.structs.fields(Config):
        if isinstance(section.type, type) and issubclass(section.type, _Section):
            for key in msgspec.structs.fields(section.type):
                names[f"{ENV_PREFIX}{section.name}_{key.name}".upper()] = (section.name, key.name)
    return names


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _env_value(raw: str, key_path: tuple[str, ...]) -> Any:
    """Environment values are strings; lists (exclude) are comma separated, booleans any of _TRUE and _FALSE; the
    rest is converted as a config file's values are."""
    if key_path in (("index", "exclude"), ("server", "cors_origins"), ("server", "allowed_hosts")):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if key_path == ("store", "headers"):  # "Name: value" pairs, comma separated (a token has no comma)
        pairs = (part.partition(":") for part in raw.split(",") if part.strip())
        return {name.strip(): value.strip() for name, _, value in pairs}
    if key_path == ("store", "paths"):  # "/as/stored=/here" pairs, separated by the OS's path list separator
        mapped = (part.partition("=") for part in raw.split(os.pathsep) if part.strip())
        return {stored.strip(): local.strip() for stored, _, local in mapped}
    if _key_type(key_path) is bool and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    return raw


def _key_type(key_path: tuple[str, ...]) -> Any:
    kind: Any = Config
    for part in key_path:
        kind = next((f.type for f in msgspec.structs.fields(kind) if f.name == part), None)
        if not (isinstance(kind, type) and issubclass(kind, _Section)):
            return kind
    return kind


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


# msgspec's words: "Expected `int` >= 1 - at `$.model.batch_size`", "Object contains unknown field `nmae` - at
# `$.model`", a section's own check (__post_init__) "catalog: must be ... - at `$.store`".
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]+)`$")
_OWN_KEY = re.compile(r"^(?P<key>[a-z_]+): (?P<msg>.*)$", re.DOTALL)


def _error(exc: msgspec.ValidationError) -> tuple[tuple[str, ...], str]:
    """The key path a conversion failed at, and what is wrong there."""
    found = _AT.match(str(exc))
    assert found is not None  # the pattern matches any text
    msg, loc = found["msg"], tuple(part for part in (found["loc"] or "").split(".") if part)
    for pattern, words in ((_UNKNOWN, "not a known key"), (_OWN_KEY, None)):
        named = pattern.match(msg)
        if named:
            return (*loc, named["key"]), words or named["msg"]
    return loc, msg


def _message(exc: msgspec.ValidationError) -> str:
    loc, msg = _error(exc)
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


def _describe(exc: msgspec.ValidationError, source: str, origins: Mapping[tuple[str, ...], str]) -> str:
    """One line naming the key, and where its bad value came from (file, environment variable or flag)."""
    loc, msg = _error(exc)
    origin = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), source)
    return f"invalid configuration ({origin}): {'.'.join(loc) or '(top level)'}: {msg}"


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
        config = msgspec.convert(tree, Config, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins)) from None
    return replace(config, data_dir=config.data_dir.expanduser())
