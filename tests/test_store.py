"""The store: a committed store of every older schema version migrates, step by step, losing
nothing; a failed step leaves the store as it was; ids are never reused; processes that create
one at once all get it."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
from pathlib import Path

import pytest

import imguard
from imguard import store as store_module
from imguard.store import SCHEMA_VERSION, Store

STORES = Path(__file__).resolve().parent / "fixtures" / "stores"
sys.path.insert(0, str(STORES))

import make_store  # noqa: E402

OLDER = [1, 2, 3]


def old_store(version: int, root: Path) -> Path:
    """The committed store of `version`, restored under `root` (with its catalog images)."""
    make_store.catalog_images(str(root / "catalog"))
    sql = (STORES / f"schema{version}.sql").read_text(encoding="utf-8").replace("{root}", str(root))
    (root / "guard").mkdir()
    db = sqlite3.connect(root / "guard" / "catalog.sqlite")
    db.executescript(sql)
    db.close()
    return root / "guard"


def test_every_older_version_has_a_committed_store():
    assert sorted(int(p.stem.removeprefix("schema")) for p in STORES.glob("schema*.sql")) == OLDER
    assert OLDER == list(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("version", OLDER)
def test_an_older_store_migrates_and_keeps_everything(version, tmp_path):
    guard = old_store(version, tmp_path)
    with pytest.raises(imguard.CatalogError, match=rf"older imguard \(schema {version}\).*imguard index"):
        Store.open(guard, readonly=True)  # a read-only open cannot migrate
    db = sqlite3.connect(guard / "catalog.sqlite")
    before = db.execute("SELECT id, path, sha256, sku, title, extra FROM images ORDER BY id").fetchall()
    features = db.execute("SELECT image_id, length(descriptors), length(thumbnail) FROM features").fetchall()
    db.close()
    with imguard.Catalog.open(guard) as catalog:
        assert catalog.store.schema_version == SCHEMA_VERSION
        db = catalog.store._db
        assert db.execute("SELECT id, path, sha256, sku, title, extra FROM images ORDER BY id").fetchall() == before
        assert db.execute("SELECT image_id, length(descriptors), length(thumbnail) FROM features").fetchall() == features
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        chelsea = catalog.store.reference(before[-1][0] if "chelsea" in before[-1][1] else before[0][0])
        assert chelsea.metadata == {"sku": "CAT-1", "title": "Tabby cat print", "colour": "brown"}
        if version < 3:
            assert chelsea.indexed_at is None  # indexed before imguard kept the date: unknown, not invented
        else:
            assert chelsea.indexed_at is not None


def test_a_schema_1_store_refuses_to_scan_until_reindexed(tmp_path):
    guard = old_store(1, tmp_path)
    with imguard.Catalog.open(guard) as catalog:
        with pytest.raises(imguard.CatalogError, match=r"fingerprinted by an older imguard.*imguard index"):
            catalog.scan(tmp_path / "catalog", jobs=1)
        again = catalog.add(tmp_path / "catalog", jobs=1)
        assert (again.added, again.updated) == (0, 2) and catalog.store.outdated() == []
        matches = list(catalog.scan(tmp_path / "catalog" / "rocket.jpg", jobs=1))
        assert [m.matched_by for m in matches] == ["sha256"]


@pytest.mark.parametrize("version", [2, 3])
def test_a_migrated_store_keeps_its_ids_and_metadata_through_reindexing(tmp_path, version):
    """Fingerprints of an older imguard are made again; the entries keep their ids, their
    manifest metadata, and (schema 3 on) when they were first indexed."""
    guard = old_store(version, tmp_path)
    from PIL import Image

    copy = tmp_path / "copy.jpg"
    Image.open(tmp_path / "catalog" / "chelsea.jpg").resize((200, 133)).save(copy, quality=70)
    with imguard.Catalog.open(guard) as catalog:
        before = {p: s.id for p, s in catalog.store.file_states().items()}
        first = {i: catalog.store.reference(i).indexed_at for i in before.values()}
        catalog.add(tmp_path / "catalog", jobs=1)
        assert {p: s.id for p, s in catalog.store.file_states().items()} == before
        assert {i: catalog.store.reference(i).indexed_at for i in before.values()} == first
        matches = list(catalog.scan(copy, jobs=1))
    assert [os.path.basename(m.reference) for m in matches] == ["chelsea.jpg"]
    assert (matches[0].evidence.reference_indexed_at is None) == (version < 3)
    assert matches[0].reference_metadata["sku"] == "CAT-1"


def test_a_failed_migration_step_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    """Each step is one transaction: 1 → 2 commits, 2 → 3 fails and leaves schema 2 as it was."""
    guard = old_store(1, tmp_path)
    broken = [*store_module._MIGRATIONS[2], "INSERT INTO no_such_table VALUES (1)"]
    monkeypatch.setitem(store_module._MIGRATIONS, 2, broken)
    with pytest.raises(imguard.CatalogError):
        imguard.Catalog.open(guard)
    db = sqlite3.connect(guard / "catalog.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    assert db.execute("SELECT COUNT(*) FROM images").fetchone() == (2,)
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'images_3'").fetchone() is None


def test_ids_are_never_reused(tmp_path):
    guard = old_store(2, tmp_path)
    folder = tmp_path / "catalog"
    with imguard.Catalog.open(guard) as catalog:
        top = max(catalog.store.file_states().values(), key=lambda s: s.id)
        doomed = next(p for p, s in catalog.store.file_states().items() if s.id == top.id)
        os.remove(doomed)
        assert catalog.prune() == 1
        make_store.catalog_images(str(folder))  # the same file again: a new entry, a new id
        catalog.add(folder, jobs=1)
        assert catalog.store.file_states()[doomed].id > top.id


def test_a_new_store_records_when_each_image_was_first_indexed(tmp_path):
    folder = make_store.catalog_images(str(tmp_path / "catalog"))
    with imguard.Catalog.open(tmp_path / "guard") as catalog:
        catalog.add(folder, jobs=1)
        first = {p: catalog.store.reference(s.id).indexed_at for p, s in catalog.store.file_states().items()}
        assert all(t is not None for t in first.values())
        for path in first:
            os.utime(path, (1_000_000_000, 1_000_000_000))  # changed: fingerprinted again...
        assert catalog.add(folder, jobs=1).updated == 2
        again = {p: catalog.store.reference(s.id).indexed_at for p, s in catalog.store.file_states().items()}
        assert again == first  # ...but first indexed when it was


def test_a_non_utf8_file_name_is_stored_losslessly(tmp_path):
    folder = tmp_path / "catalog"
    make_store.catalog_images(str(folder))
    odd = os.fsdecode(bytes(folder) + b"/caf\xe9 \xff.jpg")  # Latin-1 bytes: not UTF-8
    os.rename(folder / "rocket.jpg", odd)
    with imguard.Catalog.open(tmp_path / "guard") as catalog:
        result = catalog.add(folder, jobs=1)
        assert (result.added, result.errors) == (2, [])
        assert odd in catalog.store.file_states()
        matches = list(catalog.scan(odd, jobs=1))
        assert [m.reference for m in matches] == [odd] and matches[0].query == odd


def _open_when_all_ready(folder: str, ready, answers) -> None:
    try:
        ready.wait()
        Store.open(folder).close()
        answers.put("opened")
    except Exception as exc:  # whatever it is, the test says it rather than hanging
        answers.put(repr(exc))


@pytest.mark.skipif(sys.platform == "win32", reason="forks processes")
def test_processes_creating_a_store_at_once_all_open_it(tmp_path):
    """Two cron jobs started together on a new catalog: SQLite answered "database is locked" to
    one of them, at once, when both switched the new file to write-ahead logging (about one
    round in ten, four processes)."""
    fork = multiprocessing.get_context("fork")
    for round_ in range(40):
        folder = str(tmp_path / f"guard{round_}")
        ready, answers = fork.Barrier(4, timeout=30), fork.Queue()
        processes = [fork.Process(target=_open_when_all_ready, args=(folder, ready, answers)) for _ in range(4)]
        try:
            for process in processes:
                process.start()
            got = [answers.get(timeout=60) for _ in processes]
        finally:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.terminate()
        assert got == ["opened"] * 4, (round_, got)
