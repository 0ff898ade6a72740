"""Sources → records: walking folders, and the listing each image belongs to (manifests and
URLs: tests/test_remote.py)."""

from __future__ import annotations

import os

import pytest

from imguard import sources
from imguard.errors import SourceError

from conftest import IS_ROOT, ROOT_SKIP


# -- walking -------------------------------------------------------------------------------------


def _walk(source) -> list[str]:
    return list(sources.iter_image_files(source))


def test_walk_is_recursive_and_skips_hidden_and_non_images(fixtures):
    found = _walk(fixtures.loader_dir)
    assert len(found) == len(set(found)), "a file was yielded twice (symlink loop walked twice?)"
    relative = {os.path.relpath(p, fixtures.loader_dir) for p in found}
    expected = {
        rel for case, rel in fixtures.loader_cases.items() if case not in ("hidden", "notes", "loop")
    }
    assert relative == expected
    assert "nested/deeper/nested.png" in relative
    assert not any(os.path.basename(p).startswith(".") for p in found)
    assert not any(p.endswith(".txt") for p in found)


def test_walk_terminates_on_symlink_loop(fixtures):
    if "loop" not in fixtures.loader_cases:
        pytest.skip("symlinks not supported here")
    loop = fixtures.loader_dir / fixtures.loader_cases["loop"]
    assert loop.is_symlink() and loop.resolve() == fixtures.loader_dir.resolve()
    # walking from the nested folder reaches the parent only through the loop, once
    found = _walk(fixtures.loader_dir / "nested")
    assert len(found) == len(set(os.path.realpath(p) for p in found))
    names = [os.path.basename(p) for p in found]
    assert names.count("nested.png") == 1
    assert "photo.bmp" in names


def test_walk_skips_hidden_folders(tmp_path, fixtures):
    (tmp_path / ".cache").mkdir()
    (tmp_path / "shown").mkdir()
    src = fixtures.catalog / "chelsea.jpg"
    for target in (tmp_path / ".cache" / "a.jpg", tmp_path / "shown" / "b.jpg", tmp_path / "C.JPG"):
        target.write_bytes(src.read_bytes())
    assert sorted(os.path.relpath(p, tmp_path) for p in _walk(tmp_path)) == ["C.JPG", "shown/b.jpg"]


def test_walk_keeps_relative_paths(fixtures, monkeypatch):
    monkeypatch.chdir(fixtures.root)
    found = _walk("loader")
    assert found and all(p.startswith("loader" + os.sep) for p in found)
    assert all(not os.path.isabs(p) for p in found)


def test_single_file_source(fixtures):
    path = str(fixtures.catalog / "coffee.jpg")
    assert _walk(path) == [path]
    both = [r.location for r in sources.iter_records([path, fixtures.loader_dir / "nested"])]
    assert both[0] == path and any(p.endswith("nested.png") for p in both)


def test_missing_source_raises_source_error(tmp_path):
    with pytest.raises(SourceError, match="nope"):
        _walk(tmp_path / "nope")


@pytest.mark.skipif(IS_ROOT, reason=ROOT_SKIP)
def test_unreadable_folder_raises_source_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(SourceError, match="locked"):
            _walk(folder)
    finally:
        folder.chmod(0o755)


def test_unreadable_folder_raises_source_error_simulated(tmp_path, monkeypatch):
    """The same as above, for root too: listing the folder is refused."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_scandir = os.scandir

    def refuse(path):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(SourceError) as info:
        _walk(folder)
    assert "locked" in str(info.value) and "Permission denied" in str(info.value)


def test_a_folder_s_name_is_the_listing_of_the_images_in_it(tmp_path, fixtures):
    """competitors/<listing>/*.jpg: the folder an image is in names its listing."""
    src = (fixtures.catalog / "chelsea.jpg").read_bytes()
    for rel in ("B00SHOP001/main.jpg", "B00SHOP001/side.jpg", "shop-two/x/1.jpg", "loose.jpg"):
        (tmp_path / "competitors" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "competitors" / rel).write_bytes(src)
    records = sources.iter_records(tmp_path / "competitors")
    listings = {os.path.relpath(r.location, tmp_path / "competitors"): r.listing for r in records}
    assert listings == {"B00SHOP001/main.jpg": "B00SHOP001", "B00SHOP001/side.jpg": "B00SHOP001",
                        "shop-two/x/1.jpg": "x", "loose.jpg": "competitors"}


def test_a_manifest_names_listings_and_keeps_its_columns(tmp_path, fixtures):
    src = (fixtures.catalog / "chelsea.jpg").read_bytes()
    (tmp_path / "shots").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "shots" / name).write_bytes(src)
    manifest = tmp_path / "competitors.csv"
    manifest.write_text(
        "path,Listing,ASIN,listing_url,title,seller,marketplace,captured_at,image_position,note\n"
        "shots/a.jpg,L-1,B0001,https://m.example/dp/B0001,Cat print,Shop A,amazon.de,2026-11-30T10:00:00Z,1,x\n"
        "shots/b.jpg,,B0002,,,,,,2,\n"
        "shots/c.jpg,,,,,,,,,\n", encoding="utf-8")
    records = list(sources.iter_records(manifest))
    assert [r.listing for r in records] == ["L-1", "B0002", "shots"]  # listing, else asin, else folder
    assert records[0].metadata == {
        "listing": "L-1", "asin": "B0001", "listing_url": "https://m.example/dp/B0001", "title": "Cat print",
        "seller": "Shop A", "marketplace": "amazon.de", "captured_at": "2026-11-30T10:00:00Z",
        "image_position": "1", "note": "x"}
