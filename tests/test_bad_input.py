"""Bad input never stops or crashes a run: each bad file is recorded as failed with its reason."""

from __future__ import annotations

import sys

import pytest
from helpers import Counted, assert_stores_agree, make_config, make_photo
from PIL import Image

from photosearch.library import Library

pytestmark = pytest.mark.usefixtures("backend")  # every test on the embedded stores and on servers


def _reasons(library: Library) -> dict[str, str]:
    return {path.name: reason for path, reason in library.failures()}


def test_every_exif_sample_is_handled(tmp_path, tiny_model_dir, exif_samples):
    """The real samples, malformed EXIF blocks and the upstream 'invalid' set included: none stops the run."""
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        report = library.index([exif_samples])
        on_disk = [
            p for p in exif_samples.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".heic", ".heif", ".tiff"}
        ]
        status = library.status()
        assert status.indexed + status.failed == len(on_disk) == report.new + report.failed
        # their pixels decode, so they are searchable even where the EXIF is broken
        for sub in ("invalid", "tests"):
            for path in (exif_samples / "jpg" / sub).glob("*.jp*g"):
                assert library.catalog.by_path(path).status == "indexed", (path, _reasons(library))
        assert library.catalog.by_path(exif_samples / "jpg" / "corrupted.jpg").status == "indexed"
        heic = library.catalog.by_path(exif_samples / "heic" / "IMG_5195.HEIC")
        assert (heic.status, heic.format) == ("indexed", "HEIF")
        tiff = library.catalog.by_path(exif_samples / "tiff" / "Arbitro.tiff")
        assert (tiff.status, tiff.format) == ("indexed", "TIFF")
        canon = library.catalog.by_path(exif_samples / "jpg" / "Canon_40D.jpg")
        assert canon.camera_make == "Canon" and canon.taken_at is not None
        with_gps = [r for r in library.catalog.records(library.catalog.ids_with_status("indexed")).values()
                    if r.gps_lat is not None]  # fmt: skip
        assert with_gps and all(-90 <= r.gps_lat <= 90 and -180 <= r.gps_lon <= 180 for r in with_gps)
        assert_stores_agree(library)


@pytest.fixture
def bad_dir(tmp_path, exif_samples):
    root = tmp_path / "lib"
    make_photo(root / "good1.jpg", seed=1)
    make_photo(root / "good2.png", seed=2)
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image\n")
    real = (exif_samples / "jpg" / "Canon_40D.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(real[: len(real) // 2])
    Image.new("1", (12000, 10000)).save(root / "bomb.png")  # 120 MP in a few kB
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root)  # a folder loop
    return root


def test_broken_files_are_recorded_with_reasons_and_the_run_goes_on(tmp_path, tiny_model_dir, bad_dir):
    config = make_config(tmp_path / "data", tiny_model_dir, max_image_pixels=50_000_000)
    with Library.open(config, embedder_factory=Counted()) as library:
        report = library.index([bad_dir])
        reasons = _reasons(library)
        assert report.embedded == 2 and report.failed == 7
        assert reasons["empty.jpg"].startswith("empty file")
        assert reasons["notes.jpg"].startswith("not an image")
        assert "truncated" in reasons["truncated.jpg"]
        assert reasons["bomb.png"].startswith("image too large") and "max_image_pixels" in reasons["bomb.png"]
        assert reasons["dangling.jpg"] == "broken symlink"
        assert reasons["loop.jpg"] == "symlink loop"
        assert reasons["up"].startswith("symlink loop")
        assert_stores_agree(library)
    # Failed files are retried, stay failed, and never get a vector; their bytes failed before, so finding that
    # out again loads no model (a library with one broken file would pay a model load on every run).
    fresh = Counted()
    with Library.open(config, embedder_factory=fresh) as library:
        again = library.index()
        assert (again.failed, again.unchanged, again.embedded) == (7, 2, 0) and not fresh.loaded
        assert library.status().failed == 7 and _reasons(library) == reasons
        assert_stores_agree(library)
    # The same bytes decodable now (a larger max_image_pixels): indexed.
    with Library.open(make_config(tmp_path / "data", tiny_model_dir, max_image_pixels=200_000_000),
                      embedder_factory=Counted()) as library:  # fmt: skip
        again = library.index()
        assert (again.failed, again.embedded) == (6, 1) and "bomb.png" not in _reasons(library)
        assert_stores_agree(library)


def test_a_photo_that_turns_corrupt_loses_its_vector(tmp_path, tiny_model_dir):
    root = tmp_path / "lib"
    make_photo(root / "a.jpg", seed=1)
    make_photo(root / "b.jpg", seed=2)
    with Library.open(make_config(tmp_path / "data", tiny_model_dir), embedder_factory=Counted()) as library:
        library.index([root])
        (root / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
        report = library.index()
        assert report.failed == 1
        assert len(assert_stores_agree(library)) == 1
        assert [h.path.name for h in library.search("x", k=5)] == ["a.jpg"]


def test_unreadable_file_is_recorded_not_fatal(tmp_path, tiny_model_dir, run_unprivileged):
    """Through the real CLI, without root's power to read anything, so 'permission denied' really happens."""
    root = tmp_path / "lib"
    make_photo(root / "ok.jpg", seed=1)
    secret = make_photo(root / "secret.jpg", seed=2)
    secret.chmod(0)
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "photosearch", "--data-dir", str(data), "--model", str(tiny_model_dir)]
    result = run_unprivileged([*cli, "index", "--no-progress", str(root)])
    assert "1 new" in result.stdout and "1 failed" in result.stdout
    failed = run_unprivileged([*cli, "status", "--failed"]).stdout
    assert f"{secret}: cannot read file: Permission denied" in failed
