"""The Catalog: indexing, incremental re-indexing, pruning, persistence, rebuilds, manifests."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import imguard
from imguard import catalog as catalog_module
from imguard import engine
from imguard.index import CatalogIndex

from conftest import IS_ROOT, ROOT, by_query, run_script

FAISS_FILES = ("phash.faiss", "dhash.faiss", "features.faiss")


def base(path: str) -> str:
    return os.path.basename(path)


def copy_competitor(fixtures, name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(fixtures.competitor(name), target)
    return target


def summary(matches):
    return [(m.query, m.reference, m.score, m.distance, m.distances, m.explanation, m.reference_metadata,
             m.evidence, m.query_metadata, m.kind) for m in matches]


# -- indexing --------------------------------------------------------------------------------------


def _stored(store) -> dict[str, tuple]:
    """Path → everything the store keeps of a fingerprint, as bytes."""
    out = {}
    for path, state in store.file_states().items():
        ref = store.reference(state.id)
        out[os.path.basename(path)] = (ref.sha256, ref.width, ref.height, ref.box, ref.view_size, ref.hashes,
                                       ref.keypoints.tobytes(), ref.descriptors.tobytes(), ref.thumbnail)
    return out


@pytest.mark.parametrize("jobs", [1, 2])
def test_index_stores_the_fingerprints_byte_for_byte(fixtures, indexed, tmp_path, jobs):
    """What `index` keeps is `fingerprint_file`'s, whatever the number of jobs: the speed work
    on indexing must not move a bit."""
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(fixtures.catalog, jobs=jobs)
        stored = _stored(cat.store)
    for name in fixtures.catalog_names:
        fp = imguard.fingerprint_file(fixtures.catalog / name, with_thumbnail=True)
        assert stored[name] == (fp.sha256, fp.width, fp.height, fp.box, fp.view_size,
                                {k: fp.hashes[k] for k in ("phash", "dhash")}, fp.keypoints.tobytes(),
                                fp.descriptors.tobytes(), fp.thumbnail), name
    assert stored == _stored(indexed.store)


def test_add_then_incremental_reindex(catalog_copy, tmp_path, monkeypatch, fixtures):
    n = len(fixtures.catalog_names)
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        first = cat.add(catalog_copy, jobs=1)
        assert (first.added, first.updated, first.unchanged, first.removed) == (n, 0, 0, 0)
        assert not first.errors and len(cat) == n

        fingerprinted: list[str] = []
        real = catalog_module.fingerprint_file

        def spy(path, **kwargs):
            fingerprinted.append(path)
            return real(path, **kwargs)

        monkeypatch.setattr(catalog_module, "fingerprint_file", spy)
        second = cat.add(catalog_copy, jobs=1)
        assert (second.added, second.updated, second.unchanged) == (0, 0, n)
        assert fingerprinted == []

        # touch one file (new mtime), rewrite another (new content): only they are re-done
        touched, rewritten = catalog_copy / "rocket.jpg", catalog_copy / "chelsea.jpg"
        st = touched.stat()
        os.utime(touched, (st.st_atime, st.st_mtime + 10))
        shutil.copyfile(catalog_copy / "coffee.jpg", rewritten)
        third = cat.add(catalog_copy, jobs=1)
        assert (third.added, third.updated, third.unchanged) == (0, 2, n - 2)
        assert sorted(base(p) for p in fingerprinted) == ["chelsea.jpg", "rocket.jpg"]
        assert len(cat) == n

        # the rewritten entry now holds the new content
        monkeypatch.undo()
        run = cat.scan(catalog_copy / "coffee.jpg", jobs=1)
        exact = {base(m.reference) for m in run if m.matched_by == "sha256"}
        assert exact == {"coffee.jpg", "chelsea.jpg"}


def test_new_file_is_added_and_matched(catalog_copy, tmp_path, fixtures):
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(catalog_copy / "chelsea.jpg", jobs=1)
        assert len(cat) == 1
        result = cat.add(catalog_copy, jobs=1)
        assert (result.added, result.unchanged) == (len(fixtures.catalog_names) - 1, 1)
        found = [m for m in cat.scan(fixtures.competitor("rocket__webp.webp"), jobs=1)]
        assert found and base(found[0].reference) == "rocket.jpg"


def test_prune_drops_deleted_files(catalog_copy, tmp_path, fixtures):
    n = len(fixtures.catalog_names)
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(catalog_copy, jobs=1)
        (catalog_copy / "rocket.jpg").unlink()
        kept = cat.add(catalog_copy, jobs=1)  # without prune: entries stay
        assert kept.removed == 0 and len(cat) == n
        pruned = cat.add(catalog_copy, prune=True, jobs=1)
        assert pruned.removed == 1 and pruned.unchanged == n - 1 and len(cat) == n - 1
        assert cat.stats()["images"] == n - 1
        (catalog_copy / "ihc.png").unlink()
        assert cat.prune() == 1 and len(cat) == n - 2
        assert cat.prune() == 0
        references = {base(m.reference) for m in cat.scan(catalog_copy, threshold=0, jobs=1)}
        assert "rocket.jpg" not in references and "ihc.png" not in references


def test_prune_refuses_when_a_folder_is_missing_or_empty(fixtures, tmp_path):
    """An unmounted drive shows its folders missing, or its mount point empty: --prune would empty
    the catalog of everything indexed from it. It refuses, before anything is done, unless forced."""
    drive, photos = tmp_path / "drive", tmp_path / "photos"
    shutil.copytree(fixtures.catalog, drive / "shoes")
    shutil.copytree(fixtures.catalog, photos)
    n = len(fixtures.catalog_names)
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        assert cat.add([drive, photos], jobs=1).added == 2 * n
        shutil.copyfile(fixtures.competitor("unrelated__moon.png"), photos / "moon.png")  # not added: refused first
        for unmounted in ("missing", "empty"):
            shutil.rmtree(drive / "shoes", ignore_errors=True)
            if unmounted == "empty":
                (drive / "shoes").mkdir()
            with pytest.raises(imguard.SourceError, match="not pruning: 7 catalog image.*shoes.*force"):
                cat.add(photos, prune=True, jobs=1)
            with pytest.raises(imguard.SourceError, match="not pruning"):
                cat.prune()
            assert len(cat) == 2 * n
        (photos / "moon.png").unlink()
        (photos / "rocket.jpg").unlink()  # its folder holds the others: pruned without force
        forced = cat.add(photos, force_prune=True, jobs=1)
        assert (forced.removed, forced.unchanged, len(cat)) == (n + 1, n - 1, n - 1)


def test_errors_while_indexing_are_collected(fixtures, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copyfile(fixtures.catalog / "coffee.jpg", folder / "coffee.jpg")
    for case in ("empty", "truncated", "not_image"):
        shutil.copyfile(fixtures.loader(case), folder / fixtures.loader(case).name)
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        result = cat.add(folder, jobs=1)
    assert result.added == 1 and len(result.errors) == 3
    assert {base(e.path) for e in result.errors} == {"empty.png", "truncated.jpg", "not_an_image.jpg"}
    assert all(e.error for e in result.errors)
    assert json.dumps(result.as_dict())  # JSON-ready


# -- persistence and the derived indexes ------------------------------------------------------------


def python(code: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this checkout's imguard."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, timeout=300, **kwargs)


def run_python(code: str, cwd: Path) -> str:
    done = python(code, cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_persistence_across_processes(fixtures, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(fixtures.catalog, images)
    out = run_python(
        """
        import imguard
        r = imguard.Catalog.open("guard").add("images", jobs=1)
        print(r.added)
        """,
        tmp_path,
    )
    assert out.split() == [str(len(fixtures.catalog_names))]
    queries = tmp_path / "queries"
    copy_competitor(fixtures, "chelsea__jpeg40.jpg", queries)
    copy_competitor(fixtures, "astronaut__mirror.jpg", queries)
    out = run_python(
        """
        import json, imguard
        cat = imguard.Catalog.open("guard", create=False)
        print(json.dumps([[m.query, m.reference, m.score] for m in cat.scan("queries", top=1, jobs=1)]))
        """,
        tmp_path,
    )
    found = {q: r for q, r, _ in json.loads(out)}
    assert found == {
        os.path.join("queries", "chelsea__jpeg40.jpg"): os.path.join("images", "chelsea.jpg"),
        os.path.join("queries", "astronaut__mirror.jpg"): os.path.join("images", "astronaut.png"),
    }


def test_a_killed_index_run_keeps_its_commits_and_a_rerun_picks_up(fixtures, catalog_copy, tmp_path):
    """SIGKILL in the middle of `add`, after its first chunk was committed: the store keeps that
    chunk, and the next run fingerprints only the rest."""
    images = tmp_path / "sets"
    for k in range(5):  # more than two chunks of files (engine.CHUNK each)
        shutil.copytree(catalog_copy, images / f"set{k}")
    n = 5 * len(fixtures.catalog_names)
    assert n > 2 * engine.CHUNK
    code = f"""
        import os, signal, imguard
        done = 0
        def progress(k):  # called after each chunk is committed
            global done
            done += k
            if done >= {engine.CHUNK}:
                os.kill(os.getpid(), signal.SIGKILL)
        imguard.Catalog.open("guard").add("sets", jobs=1, progress=progress)
        """
    assert python(code, tmp_path).returncode == -signal.SIGKILL
    with imguard.Catalog.open(tmp_path / "guard", create=False) as cat:
        kept = len(cat)
        assert kept == engine.CHUNK  # the first chunk, committed before the kill
        rerun = cat.add(images, jobs=1)
        assert (rerun.unchanged, rerun.added, rerun.updated) == (kept, n - kept, 0) and not rerun.errors
        assert len(cat) == n
        found = list(cat.scan(fixtures.competitor("chelsea__jpeg40.jpg"), jobs=1))
        assert found and {base(m.reference) for m in found} == {"chelsea.jpg"}


# SIGKILLs of `index` (a nightly loop runs more), at moments drawn from KILL_SEED within KILL_WINDOW
# seconds: on two cores that spans the start-up, the three chunks of commits and the index save.
KILLS = 5
KILL_SEED = 22
KILL_WINDOW = (0.4, 3.0)


def test_index_killed_again_and_again_keeps_a_sound_store_and_a_rerun_completes(script, fixtures, tmp_path):
    """`imguard index` SIGKILLed at random moments, again and again: each time the store is intact
    (SQLite's integrity check), holds whole images only (every image has its features, no file
    twice), never more than the files; the index files load as a set or not at all; and a run to
    the end indexes the rest and matches."""
    images = tmp_path / "sets"
    for k in range(6):
        shutil.copytree(fixtures.catalog, images / f"set{k}")
    n = 6 * len(fixtures.catalog_names)
    rng = random.Random(KILL_SEED)
    counts = []
    for _ in range(KILLS):
        run = subprocess.Popen([str(script), "index", "sets", "--db", "guard", "--quiet", "--jobs", "1"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run.wait(timeout=rng.uniform(*KILL_WINDOW))
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        if not (tmp_path / "guard" / "catalog.sqlite").exists():
            continue  # killed before it created the store
        db = sqlite3.connect(tmp_path / "guard" / "catalog.sqlite")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            images_, paths, features = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT abspath), (SELECT COUNT(*) FROM features) FROM images").fetchone()
            assert images_ == paths == features <= n
            assert db.execute("SELECT COUNT(*) FROM images WHERE id NOT IN (SELECT image_id FROM features)").fetchone() == (0,)
        finally:
            db.close()
        counts.append(images_)
        with imguard.Catalog.open(tmp_path / "guard", readonly=True) as cat:
            loaded = CatalogIndex.load(str(tmp_path / "guard"), cat.store)
            assert loaded is None or loaded.phash.size == images_
    assert counts == sorted(counts)  # what a run committed, the next ones keep
    done = run_script(script, tmp_path, "index", "sets", "--db", "guard", "--quiet", "--jobs", "1", "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["images"], result["added"] + result["unchanged"], result["errors"]) == (n, n, [])
    found = run_script(script, tmp_path, "scan", str(fixtures.competitor("chelsea__jpeg40.jpg")), "--db", "guard",
                       "--format", "json", "--quiet")
    assert {base(m["reference"]) for m in json.loads(found.stdout)["matches"]} == {"chelsea.jpg"}


def test_missing_index_files_are_rebuilt(fixtures, catalog_copy, tmp_path):
    guard = tmp_path / "guard"
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, jobs=1)
    for name in FAISS_FILES:
        assert (guard / name).exists()
        (guard / name).unlink()
    query = fixtures.competitor("coffee__crop90.jpg")
    with imguard.Catalog.open(guard, create=False) as cat:
        found = list(cat.scan(query, jobs=1))
        assert found and base(found[0].reference) == "coffee.jpg"
    for name in FAISS_FILES:
        assert (guard / name).exists()


def test_rebuild(catalog_copy, tmp_path, fixtures):
    guard = tmp_path / "guard"
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, jobs=1)
        before = {name: (guard / name).stat().st_mtime_ns for name in FAISS_FILES}
        (guard / "features.faiss").write_bytes(b"garbage")  # damaged: rebuild must not read it
        index = cat.rebuild()
        assert index.phash.size == len(fixtures.catalog_names)
        assert index.features.size == cat.stats()["descriptors"] > 0
        assert all((guard / name).stat().st_mtime_ns >= before[name] for name in FAISS_FILES)
        loaded = CatalogIndex.load(str(guard), cat.store)
        assert loaded is not None and loaded.features.size == index.features.size
        found = list(cat.scan(fixtures.competitor("rocket__thumb300.jpg"), jobs=1))
        assert found and base(found[0].reference) == "rocket.jpg"


def test_stale_index_is_detected(fixtures, catalog_copy, tmp_path):
    guard = tmp_path / "guard"
    first = catalog_copy / "first"
    first.mkdir()
    shutil.move(str(catalog_copy / "chelsea.jpg"), first / "chelsea.jpg")
    with imguard.Catalog.open(guard) as cat:
        cat.add(first, jobs=1)
        old_generation = cat.store.generation
    # a second process (here: a second Catalog) adds images and writes a newer index...
    reader = imguard.Catalog.open(guard, create=False)
    assert reader.index.phash.size == 1  # loaded and cached by the reader
    with imguard.Catalog.open(guard) as writer:
        writer.add(catalog_copy, jobs=1)
    # ...a stale stamp on disk is refused, and the reader notices the change
    stamp = json.loads((guard / "index.json").read_text())
    (guard / "index.json").write_text(json.dumps({**stamp, "generation": old_generation}))
    assert CatalogIndex.load(str(guard), reader.store) is None
    assert reader.index.phash.size == len(fixtures.catalog_names)
    found = list(reader.scan(fixtures.competitor("motorcycle__resize.jpg"), jobs=1))
    assert found and base(found[0].reference) == "motorcycle.jpg"
    reader.close()

    # index files left from an older generation (a crash after a commit) are rebuilt, not used
    stamp = json.loads((guard / "index.json").read_text())
    stamp["generation"] -= 1
    (guard / "index.json").write_text(json.dumps(stamp))
    with imguard.Catalog.open(guard, create=False) as cat:
        assert cat.index.generation == cat.store.generation
        assert cat.index.phash.size == len(fixtures.catalog_names)
    assert json.loads((guard / "index.json").read_text())["generation"] == stamp["generation"] + 1


def test_the_index_files_are_taken_only_as_the_set_their_stamp_names(fixtures, catalog_copy, tmp_path):
    """The three FAISS files are one set: a file of another set (one being replaced, or left by a
    run killed halfway), same size and all, or a damaged one is never loaded: the index is built
    again. A copy of the folder, whose files have new dates, loads as it is."""
    guard = tmp_path / "guard"
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, jobs=1)
        older = (guard / "dhash.faiss").read_bytes()
        Image.open(fixtures.catalog / "coffee.jpg").rotate(180).save(catalog_copy / "chelsea.jpg")
        assert cat.add(catalog_copy, jobs=1).updated == 1  # same count: every file keeps its size
        assert len(older) == (guard / "dhash.faiss").stat().st_size and older != (guard / "dhash.faiss").read_bytes()
        assert CatalogIndex.load(str(guard), cat.store) is not None
        (guard / "dhash.faiss").write_bytes(older)  # a file of the previous set
        assert CatalogIndex.load(str(guard), cat.store) is None
        cat.rebuild()
        features = bytearray((guard / "features.faiss").read_bytes())
        features[len(features) // 2] ^= 0xFF  # one flipped bit... eight
        (guard / "features.faiss").write_bytes(bytes(features))
        assert CatalogIndex.load(str(guard), cat.store) is None
    with imguard.Catalog.open(guard) as cat:
        assert cat.index.features.size == cat.stats()["descriptors"]  # built again from the store, and saved
    copy = tmp_path / "copy"
    shutil.copytree(guard, copy, copy_function=shutil.copyfile)  # no dates kept
    with imguard.Catalog.open(copy, readonly=True) as cat:
        assert CatalogIndex.load(str(copy), cat.store) is not None


def test_a_reader_never_waits_for_a_writer_nor_makes_it_wait(fixtures, catalog_copy, tmp_path):
    """`scan` and `stats` open the store read-only: a reader in the middle of its reads does not
    hold up an `index` run, and one starting while a writer holds the write lock does not wait
    for it (it opened the store read-write, and waited up to 30 s)."""
    guard = tmp_path / "guard"
    first = tmp_path / "first"
    first.mkdir()
    shutil.move(catalog_copy / "chelsea.jpg", first / "chelsea.jpg")
    with imguard.Catalog.open(guard) as cat:
        cat.add(first, jobs=1)
    with imguard.Catalog.open(guard, readonly=True) as reader:
        with reader.store.snapshot():  # reading, in one transaction
            assert reader.store.count() == 1
            with imguard.Catalog.open(guard) as writer:
                assert writer.add(catalog_copy, jobs=1).added == len(fixtures.catalog_names) - 1
            assert reader.store.count() == 1  # still the state it began reading
        assert reader.store.count() == len(fixtures.catalog_names)
        with pytest.raises(imguard.CatalogError, match="read-only"):
            reader.add(first, jobs=1)
    writer = sqlite3.connect(guard / "catalog.sqlite")
    writer.execute("BEGIN IMMEDIATE")  # an index run committing a chunk
    writer.execute("UPDATE meta SET value = value WHERE key = 'generation'")
    try:
        with imguard.Catalog.open(guard, readonly=True) as reader:
            found = list(reader.scan(fixtures.competitor("chelsea__jpeg40.jpg"), jobs=1))
        assert [base(m.reference) for m in found] == ["chelsea.jpg"]
    finally:
        writer.rollback()
        writer.close()


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """`command` run with `folder` read-only: as root (whom permissions do not stop) on a
    read-only bind mount of it in a mount namespace of its own; otherwise by its permissions."""
    if not IS_ROOT:
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return command
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("as root, read-only media are simulated in a mount namespace (unshare -m)")
    mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh", *command]


def test_a_catalog_on_read_only_media_is_scanned(script, fixtures, catalog_copy, tmp_path):
    """A catalog on read-only media (a DVD, a read-only mount): SQLite cannot make the shared
    memory file a WAL reader needs, so `scan` failed. It opens the store immutable there, builds
    missing index files in memory, and writes nothing."""
    guard = tmp_path / "guard"
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, jobs=1)
    for name in FAISS_FILES:
        (guard / name).unlink()
    before = sorted(p.name for p in guard.iterdir())
    assert "catalog.sqlite-wal" not in before and "catalog.sqlite-shm" not in before  # closed cleanly
    query = str(fixtures.competitor("chelsea__jpeg40.jpg"))
    try:
        for args in (["scan", query, "--format", "json", "--quiet", "--jobs", "1"], ["stats", "--format", "json"]):
            command = _read_only(guard, [str(script), *args, "--db", str(guard)])
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            data = json.loads(done.stdout)
            if args[0] == "scan":
                assert [base(m["reference"]) for m in data["matches"]] == ["chelsea.jpg"]
            else:
                assert data["images"] == len(fixtures.catalog_names) and data["index"]["phash"] == data["images"]
    finally:
        for path in [guard, *guard.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert sorted(p.name for p in guard.iterdir()) == before


# -- manifests and errors ---------------------------------------------------------------------------


def test_manifest_metadata_comes_back_with_matches(fixtures, catalog_copy, tmp_path):
    manifest = catalog_copy / "manifest.csv"
    manifest.write_text(
        "path,sku,asin,url,title,colour\n"
        "chelsea.jpg,CAT-1,B000CAT001,https://shop.example/cat,Tabby cat print,brown\n"
        "rocket.jpg,ROCK-2,,https://shop.example/rocket,Rocket poster,\n"
    )
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(catalog_copy, manifest=manifest, jobs=1)
        queries = [fixtures.competitor("chelsea__resize.jpg"), fixtures.competitor("rocket__colour.jpg"),
                   fixtures.competitor("coffee__png.png")]
        best = {base(q): ms[0] for q, ms in by_query(list(cat.scan(queries, top=1, jobs=1))).items()}
    assert best["chelsea__resize.jpg"].reference_metadata == {
        "sku": "CAT-1", "asin": "B000CAT001", "url": "https://shop.example/cat", "title": "Tabby cat print",
        "colour": "brown",
    }
    assert best["rocket__colour.jpg"].reference_metadata == {
        "sku": "ROCK-2", "url": "https://shop.example/rocket", "title": "Rocket poster",
    }
    assert best["coffee__png.png"].reference_metadata == {}


def test_manifest_for_already_indexed_files(catalog_copy, tmp_path, fixtures):
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(catalog_copy, jobs=1)
        manifest = tmp_path / "meta.csv"
        manifest.write_text(f"path,sku\n{catalog_copy / 'astronaut.png'},ASTRO-9\n")
        result = cat.add(catalog_copy, manifest=manifest, jobs=1)
        assert result.unchanged == len(fixtures.catalog_names)
        found = list(cat.scan(fixtures.competitor("astronaut__exact.png"), top=1, jobs=1))
        assert found[0].reference_metadata == {"sku": "ASTRO-9"}
        assert cat.stats()["with_metadata"] == 1


def test_manifest_without_path_column(catalog_copy, tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,sku\nchelsea.jpg,CAT-1\n")
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        with pytest.raises(imguard.ManifestError, match="path") as info:
            cat.add(catalog_copy, manifest=manifest, jobs=1)
        assert isinstance(info.value, imguard.SourceError)
        assert str(manifest) in str(info.value)
        assert len(cat) == 0
    with pytest.raises(imguard.ManifestError):
        imguard.read_manifest(tmp_path / "missing.csv")


def test_missing_catalog_without_create(tmp_path):
    with pytest.raises(imguard.CatalogError):
        imguard.Catalog.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_not_a_catalog(tmp_path):
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "catalog.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(imguard.CatalogError):
        imguard.Catalog.open(folder, create=False)


# -- scanning ---------------------------------------------------------------------------------------


def test_jobs_two_gives_the_same_matches(fixtures, indexed, default_scan):
    run = indexed.scan(fixtures.competitors, jobs=2)
    parallel = list(run)
    assert summary(parallel) == summary(default_scan)
    assert run.stats["queries"] == len(fixtures.expected)


def _matches_of(matcher, fixtures) -> list:
    records = list(imguard.iter_records(fixtures.competitors))
    return summary([m for outcome in matcher.match_chunk(records) for m in outcome.matches])


def test_workers_share_the_catalog_by_its_files(fixtures, indexed, default_scan, tmp_path):
    """A pickled matcher (a spawn pool's, a Dask worker's) names the catalog's files: the worker
    maps the same index files and opens the store read-only, and matches the same."""
    matcher = indexed.matcher()
    assert matcher.index.files is not None  # the saved index, mapped
    blob = pickle.dumps(matcher)
    assert len(blob) < 4096  # paths, not the index and the store
    worker = pickle.loads(blob)
    assert worker.store_path == matcher.store_path
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        worker.store.connection.execute("CREATE TABLE written (x)")
    assert _matches_of(worker, fixtures) == summary(default_scan)
    # a file replaced since, by a rename as an index run does (here by a copy of itself): the
    # worker says so rather than map a file it cannot tell from another set's
    shutil.copytree(indexed.folder, tmp_path / "guard", copy_function=shutil.copyfile)
    with imguard.Catalog.open(tmp_path / "guard", readonly=True) as copy:
        blob = pickle.dumps(copy.matcher())
        shutil.copyfile(tmp_path / "guard" / "features.faiss", tmp_path / "features.faiss")
        os.replace(tmp_path / "features.faiss", tmp_path / "guard" / "features.faiss")
        with pytest.raises(imguard.StoreError, match="not the index file the scan started with"):
            pickle.loads(blob)


def test_a_portable_matcher_carries_the_catalog(fixtures, indexed, default_scan, tmp_path):
    """For workers without the catalog's disk: the index and the store's bytes travel."""
    carried = pickle.loads(pickle.dumps(indexed.matcher().portable()))
    assert carried.index.files is None and not carried.store_path.startswith(indexed.folder)
    assert _matches_of(carried, fixtures) == summary(default_scan)


def test_spawned_workers_give_the_same_matches(fixtures, indexed, default_scan, monkeypatch):
    monkeypatch.setattr(engine.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert summary(indexed.scan(fixtures.competitors, jobs=2)) == summary(default_scan)


def test_per_file_errors_are_collected_and_scan_goes_on(fixtures, indexed, tmp_path):
    folder = tmp_path / "queries"
    good = copy_competitor(fixtures, "rocket__webp.webp", folder)
    broken = []
    for case in ("empty", "truncated", "not_image"):  # corrupt.png: see test_load
        source = fixtures.loader(case)
        broken.append(folder / f"a_{source.name}")  # sorts before and after the good file
        shutil.copyfile(source, broken[-1])
    last = folder / "z_empty.png"
    last.write_bytes(b"")
    broken.append(last)
    run = indexed.scan(folder, jobs=1)
    matches = list(run)
    assert [base(m.query) for m in matches][:1] == [good.name]
    assert base(matches[0].reference) == "rocket.jpg"
    assert {e.path for e in run.errors} == {str(p) for p in broken}
    assert all(isinstance(e, imguard.ScanError) and e.error for e in run.errors)
    assert run.stats["errors"] == len(broken) and run.stats["queries"] == len(broken) + 1


def test_scan_stats(fixtures, indexed):
    run = indexed.scan([fixtures.competitor("astronaut__exact.png"), fixtures.competitor("unrelated__moon.png")],
                       jobs=1)
    matches = list(run)
    assert run.stats["queries"] == 2 and run.stats["matched_queries"] == 1
    assert run.stats["matches"] == len(matches) >= 1 and run.stats["errors"] == 0


def test_bad_threshold(indexed, fixtures):
    with pytest.raises(ValueError):
        indexed.scan(fixtures.competitors, threshold=1.5)


def test_catalog_stats(indexed, fixtures):
    stats = indexed.stats()
    assert stats["images"] == len(fixtures.catalog_names)
    assert stats["index"]["phash"] == stats["images"] and stats["index"]["features"] == stats["descriptors"]
    assert stats["bytes"] == sum((fixtures.catalog / name).stat().st_size for name in fixtures.catalog_names)
    assert stats["schema_version"] >= 1


def test_index_of_another_store_is_not_reused(fixtures, catalog_copy, tmp_path):
    """A new store starts at generation 0 again: its identity, not only its generation, must
    match the index files, or matches would point at another catalog's images."""
    guard = tmp_path / "guard"
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, jobs=1)
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (guard / name).unlink(missing_ok=True)
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy / "chelsea.jpg", jobs=1)
        assert cat.index.phash.size == 1
        assert cat.index.features.size == cat.stats()["descriptors"]


def test_reindex_without_manifest_keeps_metadata_and_id(catalog_copy, tmp_path):
    guard = tmp_path / "guard"
    manifest = catalog_copy / "manifest.csv"
    manifest.write_text("path,sku,title\nchelsea.jpg,SKU-1,Cat\n")
    with imguard.Catalog.open(guard) as cat:
        cat.add(catalog_copy, manifest=manifest, jobs=1)
        before = cat.store.file_states()[os.path.abspath(catalog_copy / "chelsea.jpg")]
        os.utime(catalog_copy / "chelsea.jpg", (1_000_000_000, 1_000_000_000))
        result = cat.add(catalog_copy, jobs=1)
        assert result.updated == 1
        after = cat.store.file_states()[os.path.abspath(catalog_copy / "chelsea.jpg")]
        assert after.id == before.id
        assert cat.store.reference(after.id).metadata == {"sku": "SKU-1", "title": "Cat"}


def test_same_file_twice_in_one_scan(fixtures, indexed):
    path = str(fixtures.competitor("rocket__thumb300.jpg"))
    run = indexed.scan([path, path], jobs=1)
    matches = list(run)
    assert not run.errors and run.stats["queries"] == 2
    assert [base(m.reference) for m in matches if m.query == path] == ["rocket.jpg", "rocket.jpg"]


def test_inverted_file_indexes_find_the_copies_exact_search_finds(fixtures, catalog_copy, tmp_path, monkeypatch,
                                                                  default_scan):
    """Forced below their size limits, the IVF indexes (k-medians centroids, two-level
    quantizer) are built, saved, loaded with their probes, and find the copies flat search finds."""
    from imguard import index as index_module

    monkeypatch.setattr(index_module, "HASH_EXACT_LIMIT", 0)
    monkeypatch.setattr(index_module, "FEATURE_EXACT_LIMIT", 0)
    monkeypatch.setattr(index_module, "LIST_SIZE", 3)  # enough lists for the two-level quantizer
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        cat.add(catalog_copy, jobs=1)
        kinds = {n: getattr(cat.index, n).kind for n in ("phash", "dhash", "features")}
        assert all(kind.startswith("IVF") for kind in kinds.values()), kinds
        assert int(kinds["features"].split("nlist=")[1].split()[0]) > 1024  # two-level quantizer
        found = {(base(m.query), base(m.reference)) for m in cat.scan(fixtures.competitors, jobs=1)}
    exact = {(base(m.query), base(m.reference)) for m in default_scan}
    assert len(found & exact) >= 0.9 * len(exact)
    with imguard.Catalog.open(tmp_path / "guard", create=False) as cat:  # loaded from disk
        loaded = CatalogIndex.load(str(tmp_path / "guard"), cat.store)
        assert loaded is not None and loaded.features.kind == kinds["features"]


def test_an_unreadable_subfolder_is_an_error_and_the_walk_goes_on(fixtures, catalog_copy, tmp_path, monkeypatch):
    """A folder inside the sources that cannot be listed is reported by path and reason, by
    `add` and by `scan`; every readable file is still indexed and scanned."""
    competitors = tmp_path / "competitors"
    shutil.copytree(fixtures.competitors, competitors)
    locked = [catalog_copy / "locked", competitors / "locked"]
    for folder in locked:
        folder.mkdir()
        shutil.copyfile(fixtures.catalog / "chelsea.jpg", folder / "hidden-from-us.jpg")
    real_scandir = os.scandir

    def refuse(path):
        if os.fspath(path) in {str(folder) for folder in locked}:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    reason = "cannot read folder (Permission denied)"
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        result = cat.add(catalog_copy, jobs=1)
        assert result.added == len(fixtures.catalog_names)
        assert [(e.path, e.error) for e in result.errors] == [(str(locked[0]), reason)]
        run = cat.scan(competitors, jobs=1)
        matched = {base(m.query) for m in run}
        assert [(e.path, e.error) for e in run.errors] == [(str(locked[1]), reason)]
        assert len(matched) >= 10 and "hidden-from-us.jpg" not in matched
        # every competitor file is a query; the folder is an error, not a query
        assert run.stats["queries"] == len(fixtures.competitor_files) and run.stats["errors"] == 1
