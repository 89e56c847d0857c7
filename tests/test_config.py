"""Configuration: the documented example, precedence, environment parsing, errors, and the CLI edge."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

import photosearch
import photosearch.config as config_module
from photosearch.config import (
    DEFAULT_EXCLUDES,
    Config,
    ConfigError,
    _Section,
    default_data_dir,
    env_var_names,
    load_config,
    replace,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"


def _defaults() -> Config:
    return load_config(None, env={}, use_default_file=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _sections() -> dict[str, type[_Section]]:
    return {
        field.name: field.type
        for field in msgspec.structs.fields(Config)
        if isinstance(field.type, type) and issubclass(field.type, _Section)
    }


def _keys(section: type[_Section]) -> set[str]:
    return {field.name for field in msgspec.structs.fields(section)}


# --- the example file --------------------------------------------------------------------------------------------


def test_example_file_parses_and_loads_to_the_defaults():
    with EXAMPLE.open("rb") as fh:
        tomllib.load(fh)
    loaded = load_config(EXAMPLE, env={}, use_default_file=False)
    assert loaded == _defaults()
    assert loaded == Config(data_dir=default_data_dir())


def _uncommented(text: str) -> str:
    """The example with every `# key = value` setting (multi-line lists included) turned on."""
    out, in_list = [], False
    for line in text.splitlines():
        match = re.match(r"^# ([a-z_]+ = .*)$", line)
        if in_list:
            out.append(line.removeprefix("# ").removeprefix("#"))
            in_list = not line.startswith("# ]")
        elif match:
            out.append(match.group(1))
            in_list = match.group(1).rstrip().endswith("[")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_example_values_written_in_the_comments_are_the_real_defaults(tmp_path):
    text = _uncommented(EXAMPLE.read_text(encoding="utf-8"))
    tree = tomllib.loads(text)
    assert "data_dir" in tree
    for name, model in _sections().items():
        assert set(tree[name]) == _keys(model), name  # every setting has a value to turn on
    loaded = load_config(_write(tmp_path / "on.toml", text), env={}, use_default_file=False)
    defaults = _defaults()
    # revision, cache_dir and batch_size are shown with sample values (their default is "not set").
    assert replace(loaded.model, revision=None, cache_dir=None, batch_size=None) == defaults.model
    assert loaded.index == defaults.index
    assert loaded.index.exclude == DEFAULT_EXCLUDES
    assert loaded.search == defaults.search


def _documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per section ("" = top level), from `key =` and `# key =` lines."""
    keys: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if header:
            section = header.group(1)
            keys.setdefault(section, set())
            continue
        key = re.match(r"^(?:#\s?)?([a-z_]+) = ", line)
        if key:
            keys[section].add(key.group(1))
    return keys


def test_every_key_and_env_variable_is_documented_in_the_example():
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = _documented_keys(text)
    sections = _sections()
    expected: dict[str, set[str]] = {"": _keys(Config) - set(sections)}
    for name, model in sections.items():
        expected[name] = _keys(model)
    assert expected[""] == {"data_dir"}
    for section, keys in expected.items():
        missing = keys - documented.get(section, set())
        assert not missing, f"undocumented keys in [{section or 'top level'}] of config.example.toml: {missing}"
    # and nothing documented that does not exist (a renamed or removed key)
    assert documented == expected
    for name in env_var_names():
        assert re.search(rf"\b{name}\b", text), f"{name} is not mentioned in config.example.toml"


def test_documented_platform_defaults_on_linux(monkeypatch, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the Linux locations")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert config_module.default_config_path() == tmp_path / ".config" / "photosearch" / "config.toml"
    assert default_data_dir() == tmp_path / ".local" / "share" / "photosearch"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "~/.config/photosearch/config.toml" in text
    assert "~/.local/share/photosearch" in text


# --- precedence --------------------------------------------------------------------------------------------------


def test_file_then_env_then_overrides_on_the_same_key(tmp_path):
    path = _write(tmp_path / "c.toml", '[model]\nbatch_size = 8\ndevice = "cpu"\n')
    env = {"PHOTOSEARCH_MODEL_BATCH_SIZE": "16"}
    assert load_config(path, env={}, use_default_file=False).model.batch_size == 8
    from_env = load_config(path, env=env, use_default_file=False)
    assert from_env.model.batch_size == 16
    assert from_env.model.device == "cpu"  # the file's other keys stay
    top = load_config(path, env=env, overrides={"model.batch_size": 64}, use_default_file=False)
    assert top.model.batch_size == 64
    # None means "flag not given" (that is what the CLI passes): the lower layers stand
    assert (
        load_config(path, env=env, overrides={"model.batch_size": None}, use_default_file=False).model.batch_size == 16
    )


def test_data_dir_from_file_env_and_flag_with_tilde_expanded(tmp_path):
    path = _write(tmp_path / "c.toml", f'data_dir = "{(tmp_path / "from-file").as_posix()}"\n')
    assert load_config(path, env={}, use_default_file=False).data_dir == tmp_path / "from-file"
    env = {"PHOTOSEARCH_DATA_DIR": "~/photosearch-from-env"}
    from_env = load_config(path, env=env, use_default_file=False)
    assert from_env.data_dir == Path.home() / "photosearch-from-env"
    assert "~" not in str(from_env.data_dir)
    assert from_env.catalog_path == Path.home() / "photosearch-from-env" / "catalog.sqlite3"
    flag = load_config(path, env=env, overrides={"data_dir": Path("~/from-flag")}, use_default_file=False)
    assert flag.data_dir == Path.home() / "from-flag"


def test_model_name_flag_beats_env_and_file(tmp_path):
    path = _write(tmp_path / "c.toml", '[model]\nname = "file/model"\n')
    env = {"PHOTOSEARCH_MODEL_NAME": "env/model"}
    assert load_config(path, env=env, use_default_file=False).model.name == "env/model"
    assert load_config(path, env=env, overrides={"model.name": "flag/model"}, use_default_file=False).model.name == (
        "flag/model"
    )


# --- environment parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("no", False), ("true", True)])
def test_env_bool(raw, expected):
    # the default is True, so the False cases show the value was read
    config = load_config(None, env={"PHOTOSEARCH_MODEL_ALLOW_DOWNLOAD": raw}, use_default_file=False)
    assert config.model.allow_download is expected


def test_env_int_bool_and_path():
    env = {
        "PHOTOSEARCH_INDEX_MAX_IMAGE_PIXELS": "1000",
        "PHOTOSEARCH_SEARCH_DEFAULT_K": "25",
        "PHOTOSEARCH_INDEX_INCLUDE_HIDDEN": "true",
        "PHOTOSEARCH_MODEL_CACHE_DIR": "/srv/hf",
        "PHOTOSEARCH_MODEL_DEVICE": "cpu",
    }
    config = load_config(None, env=env, use_default_file=False)
    assert config.index.max_image_pixels == 1000
    assert config.search.default_k == 25
    assert config.index.include_hidden is True
    assert config.model.cache_dir == Path("/srv/hf")
    assert config.model.device == "cpu"


def test_env_exclude_is_a_comma_separated_list():
    env = {"PHOTOSEARCH_INDEX_EXCLUDE": " .git , @eaDir,,*.tmp "}
    assert load_config(None, env=env, use_default_file=False).index.exclude == (".git", "@eaDir", "*.tmp")
    # it replaces the defaults rather than adding to them; empty means no excludes
    assert load_config(None, env={"PHOTOSEARCH_INDEX_EXCLUDE": ""}, use_default_file=False).index.exclude == ()


def test_env_names_cover_every_key():
    names = env_var_names()
    assert names["PHOTOSEARCH_DATA_DIR"] == ("data_dir",)
    assert names["PHOTOSEARCH_MODEL_BATCH_SIZE"] == ("model", "batch_size")
    assert names["PHOTOSEARCH_INDEX_MAX_IMAGE_PIXELS"] == ("index", "max_image_pixels")
    expected = 1 + sum(len(_keys(model)) for model in _sections().values())
    assert len(names) == expected


# --- errors ------------------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, repr(message)
    return message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[model]\nnmae = "openai/clip-vit-base-patch32"\n', "model.nmae"),  # typo
        ('[model]\nbatch_size = "lots"\n', "model.batch_size"),  # wrong type
        ("[model]\nbatch_size = 0\n", "model.batch_size"),  # below the range
        ("[model]\nbatch_size = 5000\n", "model.batch_size"),  # above the range
        ('[model]\ndevice = "gpu"\n', "model.device"),  # not one of the choices
        ('[index]\nexclude = ".git"\n', "index.exclude"),  # a string, not a list
        ("[search]\ndefault_k = 0\n", "search.default_k"),
        ('[modle]\nname = "x"\n', "modle"),  # unknown section
        ("colour = 1\n", "colour"),  # unknown top-level key
    ],
)
def test_bad_file_is_one_line_naming_the_key_and_the_file(tmp_path, text, key):
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, use_default_file=False)
    message = _one_line(exc)
    assert re.search(rf"(^|\W){re.escape(key)}(\W|$)", message), message
    assert str(path) in message
    assert exc.value.exit_code == 78


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path / "broken.toml", '[model\nname = "x"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, use_default_file=False)
    message = _one_line(exc)
    assert str(path) in message
    assert "TOML" in message
    assert "line 1" in message


def test_explicit_config_path_must_exist(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing, env={}, use_default_file=False)
    message = _one_line(exc)
    assert str(missing) in message
    assert "not found" in message


def test_bad_env_value_names_the_key():
    with pytest.raises(ConfigError) as exc:
        load_config(None, env={"PHOTOSEARCH_MODEL_BATCH_SIZE": "abc"}, use_default_file=False)
    assert "model.batch_size" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_config(None, env={"PHOTOSEARCH_MODEL_ALLOW_DOWNLOAD": "maybe"}, use_default_file=False)
    assert "model.allow_download" in _one_line(exc)


def test_bad_env_value_is_blamed_on_the_environment_not_the_file(tmp_path):
    path = _write(tmp_path / "good.toml", "[model]\nbatch_size = 8\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"PHOTOSEARCH_MODEL_BATCH_SIZE": "abc"}, use_default_file=False)
    message = _one_line(exc)
    assert "PHOTOSEARCH_MODEL_BATCH_SIZE" in message
    assert str(path) not in message


def test_section_that_is_not_a_table(tmp_path):
    path = _write(tmp_path / "c.toml", 'model = "clip"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={}, use_default_file=False)
    assert "model" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:  # an env value under it cannot be placed either
        load_config(path, env={"PHOTOSEARCH_MODEL_BATCH_SIZE": "8"}, use_default_file=False)
    assert "'model'" in _one_line(exc)


# --- the default config file -------------------------------------------------------------------------------------


@pytest.fixture
def default_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "user-config" / "config.toml"
    monkeypatch.setattr(config_module, "default_config_path", lambda: path)
    return path


def test_default_file_is_read_when_present(default_file):
    assert load_config(None, env={}).model.batch == 32  # absent: fine, defaults
    default_file.parent.mkdir(parents=True)
    _write(default_file, "[model]\nbatch_size = 7\n")
    assert load_config(None, env={}).model.batch_size == 7
    assert load_config(None, env={}, use_default_file=False).model.batch_size is None  # not set: 32, a GPU's
    # env still beats it
    assert load_config(None, env={"PHOTOSEARCH_MODEL_BATCH_SIZE": "9"}).model.batch_size == 9


def test_explicit_file_replaces_the_default_file(default_file, tmp_path):
    default_file.parent.mkdir(parents=True)
    _write(default_file, '[model]\ndevice = "cpu"\n')
    explicit = _write(tmp_path / "explicit.toml", "[model]\nbatch_size = 5\n")
    config = load_config(explicit, env={})
    assert config.model.batch_size == 5
    assert config.model.device == "auto"  # not merged with the default file


def test_bad_default_file_is_named_in_the_error(default_file):
    default_file.parent.mkdir(parents=True)
    _write(default_file, "[model]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(None, env={})
    assert str(default_file) in _one_line(exc)
    assert load_config(None, env={}, use_default_file=False).model.batch == 32


# --- the library never reads the process environment -------------------------------------------------------------


def test_load_config_ignores_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PHOTOSEARCH_MODEL_NAME", "from/process-env")
    monkeypatch.setenv("PHOTOSEARCH_DATA_DIR", str(tmp_path / "env-data"))
    for env in ({}, None):
        config = load_config(None, env=env, use_default_file=False)
        assert config.model.name == "openai/clip-vit-base-patch32"
        assert config.data_dir == default_data_dir()
    # control: the same variables do work when the edge passes them in
    assert load_config(None, env=os.environ, use_default_file=False).model.name == "from/process-env"


def _environment_uses(source: str) -> list[str]:
    uses = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in {"environ", "environb", "getenv", "getenvb"}
        ):
            uses.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            uses += [f"line {node.lineno}: from os import {a.name}" for a in node.names if "env" in a.name]
    return uses


def test_only_the_cli_touches_os_environ():
    package = Path(photosearch.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 5
    offenders = {
        str(path.relative_to(package)): uses
        for path in modules
        if path.name != "cli.py" and (uses := _environment_uses(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"library modules reading the process environment: {offenders}"
    assert _environment_uses((package / "cli.py").read_text(encoding="utf-8"))  # the check does see real uses


# --- the command line --------------------------------------------------------------------------------------------


def _run_cli(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "photosearch", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def _status(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> dict:
    result = _run_cli([*args, "status", "--json"], tmp_path, extra_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_precedence_file_env_flag(tmp_path):
    config = _write(
        tmp_path / "c.toml",
        f'data_dir = "{(tmp_path / "file-data").as_posix()}"\n[model]\nname = "file/model"\n',
    )
    env = {"PHOTOSEARCH_DATA_DIR": str(tmp_path / "env-data"), "PHOTOSEARCH_MODEL_NAME": "env/model"}

    from_file = _status(["--config", str(config)], tmp_path)
    assert from_file["data_dir"] == str(tmp_path / "file-data")
    assert from_file["configured_model"] == "file/model"
    assert (tmp_path / "file-data" / "catalog.sqlite3").is_file()

    from_env = _status(["--config", str(config)], tmp_path, env)
    assert from_env["data_dir"] == str(tmp_path / "env-data")
    assert from_env["configured_model"] == "env/model"

    flags = ["--config", str(config), "--data-dir", str(tmp_path / "flag-data"), "--model", "flag/model"]
    from_flags = _status(flags, tmp_path, env)
    assert from_flags["data_dir"] == str(tmp_path / "flag-data")
    assert from_flags["configured_model"] == "flag/model"


def test_cli_reads_the_default_config_file(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CONFIG_HOME is how the test points the default location elsewhere")
    default = tmp_path / "xdg-config" / "photosearch" / "config.toml"
    default.parent.mkdir(parents=True)
    _write(default, f'data_dir = "{(tmp_path / "default-file-data").as_posix()}"\n')
    assert _status([], tmp_path)["data_dir"] == str(tmp_path / "default-file-data")


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("[model]\nbatch_size = 0\n", {}, "model.batch_size"),
        ('[model]\nnmae = "x"\n', {}, "model.nmae"),
        ("[model\n", {}, "not valid TOML"),
        ("", {"PHOTOSEARCH_MODEL_BATCH_SIZE": "abc"}, "model.batch_size"),
    ],
)
def test_cli_bad_config_exits_78_with_one_line(tmp_path, text, env, needle):
    config = _write(tmp_path / "bad.toml", f'data_dir = "{(tmp_path / "data").as_posix()}"\n{text}')
    result = _run_cli(["--config", str(config), "status", "--json"], tmp_path, env)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("photosearch: error: ")
    assert needle in lines[0]
    assert result.stdout == ""


def test_cli_missing_config_file_exits_78(tmp_path):
    result = _run_cli(["--config", str(tmp_path / "nope.toml"), "status"], tmp_path)
    assert result.returncode == 78
    assert result.stderr.startswith("photosearch: error: config file not found: ")
    assert len(result.stderr.splitlines()) == 1


def test_misspelled_environment_variable_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="PHOTOSEARCH_MODEL_NMAE"):
        load_config(None, env={"PHOTOSEARCH_MODEL_NMAE": "x"}, use_default_file=False)


# --- [store] ---------------------------------------------------------------------------------------------------
def test_store_settings_from_the_environment():
    env = {
        "PHOTOSEARCH_STORE_CATALOG": "postgresql+psycopg://u:p@db/photos",
        "PHOTOSEARCH_STORE_VECTORS": "http://chroma:8000",
        "PHOTOSEARCH_STORE_HEADERS": "Authorization: Bearer abc, X-Team: photos",
        "PHOTOSEARCH_STORE_PATHS": "/mnt/nas/photos=/Volumes/photos:/mnt/nas/old/=/Volumes/old",
        "PHOTOSEARCH_STORE_LEASE": "60",
    }
    store = load_config(None, env=env, use_default_file=False).store
    assert store.shared and store.lease == 60
    assert store.headers == {"Authorization": "Bearer abc", "X-Team": "photos"}
    assert store.paths == {"/mnt/nas/photos": "/Volumes/photos", "/mnt/nas/old": "/Volumes/old"}
    assert load_config(None, env={}, use_default_file=False).store.shared is False  # the default: no server


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("CATALOG", "photos.db", "database URL"),
        ("VECTORS", "chroma:8000", "Chroma server's URL"),
        ("PATHS", "/mnt/nas=photos", "both absolute"),
        ("LEASE", "1", "lease"),
        ("RETRY_FOR", "-1", "retry_for"),
    ],
)
def test_bad_store_settings_are_one_line_errors(key, value, words):
    with pytest.raises(ConfigError, match=words) as caught:
        load_config(None, env={f"PHOTOSEARCH_STORE_{key}": value}, use_default_file=False)
    assert "\n" not in str(caught.value)
