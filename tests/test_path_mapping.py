"""One library seen under two mount points (store.paths): the NAS indexes /…/nas/photos, a laptop mounts the
same share at /…/laptop/photos. Each sees its own paths in roots and results, neither re-embeds what the other
indexed, and a move made through one mount point is a move (same vector) for both."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HashEmbedder, hash_config, make_photo

from photosearch.config import Config, replace
from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")


def _machines(tmp_path: Path) -> tuple[Path, Path, Config, Config]:
    nas = tmp_path / "nas" / "photos"
    for i in range(6):
        make_photo(nas / ("sub" if i < 2 else "") / f"p{i}.jpg", seed=300 + i)
    laptop = tmp_path / "laptop" / "photos"
    laptop.parent.mkdir()
    laptop.symlink_to(nas, target_is_directory=True)  # the same files at another mount point
    nas_config = hash_config(tmp_path / "data")
    store = replace(nas_config.store, paths={str(nas): str(laptop)})
    return nas, laptop, nas_config, replace(nas_config, store=store)


def _open(config: Config, embedder: HashEmbedder) -> Library:
    return Library.open(config, embedder_factory=lambda _config: embedder)


def test_each_machine_sees_its_own_paths_and_nothing_is_embedded_twice(tmp_path):
    nas, laptop, on_nas, on_laptop = _machines(tmp_path)
    nas_model, laptop_model = HashEmbedder(), HashEmbedder()
    with _open(on_nas, nas_model) as library:
        assert library.index([nas]).new == 6
    with _open(on_laptop, laptop_model) as library:
        assert [r.path for r in library.roots()] == [laptop]  # the NAS's folder, as mounted here
        report = library.index([laptop])  # the same root: nothing new, nothing read
        assert (report.new, report.unchanged, len(library.roots())) == (0, 6, 1)
        hits = library.search("anything", k=10)
        assert sorted(str(h.path) for h in hits) == sorted(str(laptop / p.relative_to(nas)) for p in nas.rglob("*.jpg"))
        assert library.photo_at(laptop / "sub" / "p0.jpg") is not None
        # A move made on the laptop: detected by content hash, the vector kept.
        (laptop / "sub" / "p0.jpg").rename(laptop / "moved.jpg")
        report = library.index()
        assert (report.moved, report.new, report.embedded) == (1, 0, 0)
    assert laptop_model.images == 0
    with _open(on_nas, nas_model) as library:
        assert library.photo_at(nas / "moved.jpg") is not None  # the NAS sees the move under its own path
        assert library.index().unchanged == 6
        assert {str(h.path) for h in library.search("anything", k=10)} == {str(p) for p in nas.rglob("*.jpg")}
    assert nas_model.images == 6


def test_a_mapping_must_be_absolute_on_both_sides(tmp_path):
    from photosearch.config import StoreConfig

    with pytest.raises(ValueError, match="both absolute"):
        StoreConfig(paths={"/mnt/nas": "photos"})
    assert StoreConfig(paths={"/mnt/nas/": "/Volumes/nas/"}).paths == {"/mnt/nas": "/Volumes/nas"}
