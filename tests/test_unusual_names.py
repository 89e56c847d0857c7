"""File names as Linux has them: any bytes but / and NUL. Each is indexed once, found, served, moved for free.

Names that are not valid UTF-8 (old NAS shares, other systems' disks, archives unpacked with the wrong code
page), with newlines, tabs, leading dashes, right-to-left text and overrides, and one name in NFC and NFD.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from daemonproc import FAST, Daemon
from fastapi.testclient import TestClient
from helpers import Counted, assert_stores_agree, make_config, make_photo
from serveproc import clean_env

from photosearch.library import Library
from photosearch.pathtext import display, from_text, to_text
from photosearch.serving.httpapi import create_app

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers

# name as the OS gives it -> how a person sees it
NAMES = {
    os.fsdecode(b"caf\xe9.jpg"): "caf\\xe9.jpg",  # Latin-1, as written by an old Windows share
    os.fsdecode(b"\xff\xfe-bad.png"): "\\xff\\xfe-bad.png",
    "new\nline.jpg": "new\\nline.jpg",
    "tab\tname.jpg": "tab\\tname.jpg",
    "-n.jpg": "-n.jpg",
    "--help.jpg": "--help.jpg",
    "שלום עולם.jpg": "שלום עולם.jpg",  # right-to-left script: shown as it is
    "photo\u202egpj.exe.jpg": "photo\\u202egpj.exe.jpg",  # the override that disguises extensions: escaped
    unicodedata.normalize("NFC", "été.jpg"): "été.jpg",
    unicodedata.normalize("NFD", "été.jpg"): unicodedata.normalize("NFD", "été.jpg"),
    os.fsdecode(b"dir\x80") + "/inside.jpg": "dir\\x80/inside.jpg",  # a folder whose name is not UTF-8
}


def test_stored_form_round_trips_and_keeps_valid_names_unchanged():
    for name in [*NAMES, os.fsdecode(b"\xf4\x8f\xbe\x85"), "plain/ascii.jpg", "\U0010ff85 real private use"]:
        stored = to_text(name)
        stored.encode("utf-8")  # what SQLite, PostgreSQL and Chroma demand
        assert from_text(stored) == name
    assert to_text("valid/ütf-8/日本.jpg") == "valid/ütf-8/日本.jpg"
    prefix, full = os.fsdecode(b"a\xe9/"), os.fsdecode(b"a\xe9/b\xff.jpg")
    assert to_text(full).startswith(to_text(prefix)) and len(to_text(prefix)) == len(prefix)


def test_display_makes_every_name_one_printable_line():
    for name, shown in NAMES.items():
        assert display(name) == shown
        assert display(name).isprintable() or "\u0301" in name  # a combining accent is printable text
    assert display("family \U0001f468\u200d\U0001f469.jpg") == "family \U0001f468\u200d\U0001f469.jpg"  # ZWJ kept


@pytest.fixture
def odd_library(tmp_path):
    root = tmp_path / "lib"
    for seed, name in enumerate(NAMES):
        make_photo(root / name, seed=seed)
    return root


def test_every_name_is_indexed_once_found_served_and_moved_without_the_model(tmp_path, tiny_model_dir, odd_library):
    counted = Counted()
    config = make_config(tmp_path / "data", tiny_model_dir)
    with Library.open(config, embedder_factory=counted) as library:
        report = library.index([odd_library])
        assert (report.new, report.failed, counted.images) == (len(NAMES), 0, len(NAMES))
        assert_stores_agree(library)
        by_path = {r.path: r for r in (library.catalog.by_path(odd_library / n) for n in NAMES) if r is not None}
        assert set(by_path) == {odd_library / n for n in NAMES}  # every name, exactly as on disk

        found = library.search("a photo", k=50)
        assert sorted(str(r.path) for r in found) == sorted(str(odd_library / n) for n in NAMES)

        folder = odd_library / os.fsdecode(b"dir\x80")
        assert [r.path.name for r in library.search("a photo", k=50, folder=folder)] == ["inside.jpg"]

        with TestClient(create_app(library), base_url="http://127.0.0.1") as client:
            for name in NAMES:
                record = by_path[odd_library / name]
                details = client.get(f"/api/photos/{record.id}")
                assert details.status_code == 200 and details.json()["path"] == display(odd_library / name)
                original = client.get(f"/api/photos/{record.id}/original")
                assert original.content == (odd_library / name).read_bytes()
                assert client.get(f"/api/photos/{record.id}/thumbnail").status_code == 200
            hits = client.get("/api/search", params={"q": "x", "k": 50}).json()["results"]
            assert sorted(h["path"] for h in hits) == sorted(display(odd_library / n) for n in NAMES)
            lookup = client.get("/api/lookup", params={"path": to_text(odd_library / "caf\udce9.jpg")})
            assert lookup.json()["id"] == by_path[odd_library / "caf\udce9.jpg"].id
            by_folder = client.get("/api/search", params={"q": "x", "folder": to_text(folder)}).json()["results"]
            assert [h["id"] for h in by_folder] == [by_path[folder / "inside.jpg"].id]

        moved = odd_library / os.fsdecode(b"moved\xfc")
        moved.mkdir()
        for name in NAMES:
            (odd_library / name).rename(moved / name.replace("/", "_"))
        before = counted.images
        report = library.index()
        assert (report.moved, report.new, report.removed, counted.images - before) == (len(NAMES), 0, 0, 0)
        paths = {r.path for r in library.search("a photo", k=50)}
        assert paths == {moved / n.replace("/", "_") for n in NAMES}
        assert_stores_agree(library)


def test_cli_prints_names_escaped_and_takes_them_as_arguments(tmp_path, tiny_model_dir, odd_library):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}

    def ps(*args: str | Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "photosearch", "--data-dir", data, "--model", tiny_model_dir, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        return result

    assert ps("index", odd_library).stdout.startswith(f"{len(NAMES)} new, 0 changed")
    lines = ps("search", "a photo", "-k", "50").stdout.splitlines()
    assert len(lines) == len(NAMES)  # a newline in a name does not split its line
    assert sorted(line.split(None, 2)[2] for line in lines) == sorted(display(odd_library / n) for n in NAMES)
    hits = [json.loads(line) for line in ps("search", "a photo", "-k", "50", "--json").stdout.splitlines()]
    assert sorted(h["path"] for h in hits) == sorted(display(odd_library / n) for n in NAMES)
    similar = ps("similar", "--json", "--", odd_library / "-n.jpg").stdout.splitlines()
    assert similar and all(json.loads(line)["path"] != display(odd_library / "-n.jpg") for line in similar)
    folder = ps("search", "a photo", "--folder", odd_library / os.fsdecode(b"dir\x80"), "--json").stdout
    assert [json.loads(line)["path"] for line in folder.splitlines()] == [display(odd_library / "dir\udc80/inside.jpg")]
    status = ps("status", "--failed").stdout
    assert "unexpected" not in status


def test_the_daemon_follows_odd_names_created_renamed_and_deleted(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    make_photo(lib / "plain.jpg", seed=1)
    daemon = Daemon(tmp_path / "data", tiny_model_dir, clean_env(tmp_path, **FAST))  # the backend's stores
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        library.index([lib])  # in this process: the daemon is what is tested
    daemon.start()
    try:
        odd = {lib / name for name in NAMES}
        for seed, path in enumerate(sorted(odd)):
            make_photo(path, seed=100 + seed)
        expected = {to_text(p) for p in odd | {lib / "plain.jpg"}}  # the catalog holds the stored form
        daemon.settle(expected)
        ids = dict(daemon.sql("select path, id from photos"))
        renamed = lib / os.fsdecode(b"renamed\xe4\n.jpg")
        (lib / "caf\udce9.jpg").rename(renamed)
        expected = (expected - {to_text(lib / "caf\udce9.jpg")}) | {to_text(renamed)}
        daemon.settle(expected)
        assert dict(daemon.sql("select path, id from photos"))[to_text(renamed)] == ids[to_text(lib / "caf\udce9.jpg")]
        (lib / "new\nline.jpg").unlink()
        daemon.settle(expected - {to_text(lib / "new\nline.jpg")})
    finally:
        code, out, _ = daemon.stop()
    assert code == 0, out
    assert "Traceback" not in out and "UnicodeEncodeError" not in daemon.log()
