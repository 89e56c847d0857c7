"""The package's layering, read from the source with ``ast``: only ``stores/`` touches SQL or Chroma.

Checked in every module under photosearch/ (imports at any depth: inside functions and TYPE_CHECKING blocks too):

  * nothing outside stores/ imports sqlalchemy, sqlite3 or chromadb (the Alembic migrations aside);
  * nothing outside stores/ opens a catalog session (``.session(``) or reads and writes raw catalog meta keys;
  * the adapters and the daemon (cli, serving/, watching/) never reach the catalog behind the library
    (``library.catalog``): they go through the Library's methods, or stores objects it hands them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import photosearch

PACKAGE = Path(photosearch.__file__).resolve().parent
STORE_LIBRARIES = frozenset({"sqlalchemy", "sqlite3", "chromadb"})
STORES = "stores"
MIGRATIONS = "_migrations"  # Alembic's scripts, when installed inside the package
ADAPTERS = ("cli.py", "cli_roots.py", "cli_status.py", "serving/", "watching/")
# The model's identity is recorded in catalog meta by library.py's model methods, being rewritten elsewhere.
RAW_META_ALLOWED = frozenset({"library.py"})


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] != MIGRATIONS:
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


MODULES = dict(_modules())
OUTSIDE_STORES = sorted(rel for rel in MODULES if rel.split("/")[0] != STORES)


def _imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module name an import statement (or importlib.import_module / __import__ of a literal) names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and _called(node) in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _method(call: ast.Call) -> str | None:
    """The method name of ``x.name(...)``; None for a plain function call."""
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _chain(node: ast.expr) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"]; of ``f().b.c``, the attributes after the call: ["b", "c"]."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def test_the_modules_are_found():
    assert {"library.py", "stores/catalog.py", "watching/daemon.py", "serving/httpapi.py"} <= set(MODULES)


@pytest.mark.parametrize("rel", OUTSIDE_STORES)
def test_only_stores_import_sql_or_chroma(rel):
    imports = _imported(MODULES[rel])
    found = [f"{rel}:{line} imports {name}" for line, name in imports if name.split(".")[0] in STORE_LIBRARIES]
    assert not found, "only photosearch/stores/ may use SQL or Chroma:\n" + "\n".join(found)


@pytest.mark.parametrize("rel", OUTSIDE_STORES)
def test_only_stores_open_catalog_sessions_or_raw_meta(rel):
    banned = {"session", "_session"} | (set() if rel in RAW_META_ALLOWED else {"get_meta", "set_meta"})
    calls = [node for node in ast.walk(MODULES[rel]) if isinstance(node, ast.Call)]
    found = [f"{rel}:{c.lineno} calls .{_called(c)}(" for c in calls if _method(c) in banned]
    assert not found, "a catalog session or meta key belongs in a stores/ method:\n" + "\n".join(found)


@pytest.mark.parametrize("rel", [rel for rel in OUTSIDE_STORES if rel.startswith(ADAPTERS)])
def test_adapters_do_not_reach_the_catalog_behind_the_library(rel):
    reached = [node for node in ast.walk(MODULES[rel]) if isinstance(node, ast.Attribute) and node.attr == "catalog"]
    found = [f"{rel}:{node.lineno} reaches {'.'.join(_chain(node))}" for node in reached]
    assert not found, "go through a Library method (or a stores object it hands out):\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for():
    source = """
import typing
if typing.TYPE_CHECKING:
    from sqlalchemy.orm import Session
def f(library):
    import chromadb.api
    importlib.import_module("sqlite3")
    with library.catalog.session() as s:
        library.catalog.set_meta({})
"""
    tree = ast.parse(source)
    assert sorted(name for _, name in _imported(tree)) == ["chromadb.api", "sqlalchemy.orm", "sqlite3", "typing"]
    calls = sorted(_called(n) or "" for n in ast.walk(tree) if isinstance(n, ast.Call))
    assert {"session", "set_meta"} <= set(calls)
    reached = [_chain(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "catalog"]
    assert ["library", "catalog"] in reached
