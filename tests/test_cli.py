"""The `imguard` command, in-process (typer's CliRunner) and as the installed console script."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import IS_ROOT, ROOT_SKIP, run_script

import imguard
from imguard_cli.main import app

COPIES = ["astronaut__exact.png", "chelsea__jpeg40.jpg", "coffee__png.png", "rocket__thumb300.jpg"]
UNRELATED = ["unrelated__moon.png", "unrelated__coins.jpg"]
MATCH_KEYS = {"query", "reference", "score", "kind", "variants", "distance", "distances", "matched_by", "explanation",
              "evidence", "query_metadata", "reference_metadata", "description"}
EXPLANATION_KEYS = {"matched_by", "scale", "rotation", "mirrored", "inliers", "reference_region", "query_region",
                    "structure", "colour", "coverage", "query_outline", "transform", "reference_share", "query_share",
                    "colour_removed", "recoloured"}
WIDE = {"COLUMNS": "240", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def workdir(fixtures, tmp_path_factory) -> Path:
    """cwd for the CLI: catalog/ (indexed into guard/ by the first test that needs it), competitors/
    (a few copies and unrelated photos), only_unrelated/, broken/ (a copy plus an empty file)."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(fixtures.catalog, root / "catalog")
    for folder, names in (("competitors", COPIES + UNRELATED), ("only_unrelated", UNRELATED)):
        (root / folder).mkdir()
        for name in names:
            shutil.copyfile(fixtures.competitor(name), root / folder / name)
    (root / "broken").mkdir()
    shutil.copyfile(fixtures.competitor("rocket__thumb300.jpg"), root / "broken" / "rocket.jpg")
    (root / "broken" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture
def cli(workdir, monkeypatch):
    """Run the app in `workdir`: cli("scan", ...) -> click Result."""
    monkeypatch.chdir(workdir)
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env={**WIDE, **(env or {})}, catch_exceptions=False)

    return invoke


@pytest.fixture
def guard(cli, workdir, fixtures) -> str:
    """The catalog of workdir, indexed once (later calls find every file unchanged)."""
    result = cli("index", "catalog", "--db", "guard", "--quiet", "--jobs", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == len(fixtures.catalog_names)
    return "guard"


def scan_json(cli, *args: str) -> dict:
    result = cli("scan", *args, "--format", "json", "--quiet", "--jobs", "1")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # exactly one JSON object: anything else fails to parse


# -- index ------------------------------------------------------------------------------------------


def test_index_reports_added_then_unchanged(cli, tmp_path, fixtures):
    db = str(tmp_path / "fresh")
    first = cli("index", "catalog", "--db", db, "--quiet", "--jobs", "1", "--format", "json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    n = len(fixtures.catalog_names)
    assert (data["added"], data["unchanged"], data["images"]) == (n, 0, n)
    again = cli("index", "catalog", "--db", db, "--quiet", "--jobs", "1", "--format", "json")
    data = json.loads(again.stdout)
    assert (data["added"], data["unchanged"], data["images"]) == (0, n, n)
    table = cli("index", "catalog", "--db", db, "--quiet", "--jobs", "1")
    assert table.exit_code == 0 and "unchanged" in table.stdout


def test_index_with_manifest_and_prune(cli, workdir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(workdir / "catalog", images)
    manifest = images / "manifest.csv"
    manifest.write_text("path,sku,title\nchelsea.jpg,CAT-1,Cat print\n")
    db = str(tmp_path / "db")
    result = cli("index", str(images), "--db", db, "--manifest", str(manifest), "--quiet", "--jobs", "1")
    assert result.exit_code == 0, result.output
    found = json.loads(cli("scan", "competitors/chelsea__jpeg40.jpg", "--db", db, "--format", "json",
                           "--quiet", "--jobs", "1", "--top", "1").stdout)["matches"]
    assert found[0]["reference_metadata"] == {"sku": "CAT-1", "title": "Cat print"}
    (images / "rocket.jpg").unlink()
    pruned = cli("index", str(images), "--db", db, "--prune", "--quiet", "--jobs", "1", "--format", "json")
    assert json.loads(pruned.stdout)["removed"] == 1
    (images / "coffee.jpg").unlink()
    (images / "coffee_hue.jpg").unlink()
    shutil.move(images / "chelsea.jpg", images / "sub-chelsea.jpg")
    empty_drive = tmp_path / "drive"
    empty_drive.mkdir()
    shutil.copyfile(workdir / "catalog" / "chelsea.jpg", empty_drive / "chelsea.jpg")
    assert cli("index", str(empty_drive), "--db", db, "--quiet", "--jobs", "1").exit_code == 0
    (empty_drive / "chelsea.jpg").unlink()  # the drive's mount point, empty
    refused = cli("index", str(images), "--db", db, "--prune", "--quiet", "--jobs", "1", "--format", "json")
    assert refused.exit_code == 2 and "not pruning: 1 catalog image(s)" in refused.stderr
    assert "--force-prune" in refused.stderr and refused.stdout == ""
    forced = cli("index", str(images), "--db", db, "--force-prune", "--quiet", "--jobs", "1", "--format", "json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["removed"] == 4  # 2 deleted, 1 renamed, the drive's
    bad = tmp_path / "bad.csv"
    bad.write_text("file,sku\nx.jpg,1\n")
    result = cli("index", str(images), "--db", db, "--manifest", str(bad), "--quiet")
    assert result.exit_code == 2 and "path" in result.stderr
    assert "Traceback" not in result.output


# -- scan -------------------------------------------------------------------------------------------


def test_scan_json_shape_and_relative_paths(cli, guard, fixtures):
    data = scan_json(cli, "competitors", "--db", guard)
    assert set(data) == {"matches", "errors", "stats"}
    assert data["errors"] == []
    assert data["stats"]["queries"] == len(COPIES + UNRELATED)
    matches = data["matches"]
    assert matches
    for m in matches:
        assert MATCH_KEYS <= set(m), set(m)
        assert set(m["explanation"]) == EXPLANATION_KEYS
        assert m["matched_by"] == m["explanation"]["matched_by"]
        assert isinstance(m["score"], float) and 0 <= m["score"] <= 1
        assert isinstance(m["distance"], int) and set(m["distances"]) >= {"phash", "dhash"}
        assert len(m["explanation"]["reference_region"]) == 4
        # relative folders given → relative paths shown
        assert m["query"].startswith("competitors" + os.sep) and not os.path.isabs(m["query"])
        assert m["reference"].startswith("catalog" + os.sep) and not os.path.isabs(m["reference"])
    # sorted by query, then best first
    keys = [(m["query"], -m["score"]) for m in matches]
    assert keys == sorted(keys)
    best = {}
    for m in matches:
        best.setdefault(os.path.basename(m["query"]), os.path.basename(m["reference"]))
    assert best == {name: fixtures.expected[name] for name in COPIES}
    exact = [m for m in matches if m["query"].endswith("astronaut__exact.png")][0]
    assert exact["score"] == 1.0 and exact["matched_by"] == "sha256"


def test_scan_csv(cli, guard):
    matches = scan_json(cli, "competitors", "--db", guard)["matches"]
    result = cli("scan", "competitors", "--db", guard, "--format", "csv", "--quiet", "--jobs", "1")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    header, body = rows[0], rows[1:]
    assert {"query", "reference", "score"} <= set(header)
    assert len(body) == len(matches)
    q, r, s = header.index("query"), header.index("reference"), header.index("score")
    assert [(row[q], row[r]) for row in body] == [(m["query"], m["reference"]) for m in matches]
    assert all(abs(float(row[s]) - m["score"]) < 1e-3 for row, m in zip(body, matches))


def test_scan_table_names_the_files(cli, guard):
    result = cli("scan", "competitors", "--db", guard, "--quiet", "--jobs", "1")
    assert result.exit_code == 0, result.output
    for name in COPIES:
        assert name in result.stdout, name
    for name in ("astronaut.png", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        assert name in result.stdout
    assert "6 images scanned" in result.stdout


def test_stats_json(cli, guard, fixtures):
    result = cli("stats", "--db", guard, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == len(fixtures.catalog_names)
    table = cli("stats", "--db", guard)
    assert table.exit_code == 0 and "images" in table.stdout


def test_top_and_threshold(cli, guard):
    none = scan_json(cli, "only_unrelated", "--db", guard)
    assert none["matches"] == [] and none["stats"]["queries"] == len(UNRELATED)
    # --threshold 0 reports every query's best candidates, whatever their score.
    everything = scan_json(cli, "only_unrelated", "--db", guard, "--threshold", "0")
    assert {m["query"] for m in everything["matches"]} == {f"only_unrelated/{n}" for n in UNRELATED}
    assert any(m["score"] < 0.35 for m in everything["matches"])
    top = scan_json(cli, "only_unrelated", "--db", guard, "--threshold", "0", "--top", "1")
    assert len(top["matches"]) == len(UNRELATED)
    assert len(everything["matches"]) > len(top["matches"])


# -- exit codes -------------------------------------------------------------------------------------


def test_exit_codes_fail_on_match(cli, guard):
    matched = cli("scan", "competitors", "--db", guard, "--fail-on-match", "--quiet", "--jobs", "1")
    assert matched.exit_code == 1
    clean = cli("scan", "only_unrelated", "--db", guard, "--fail-on-match", "--quiet", "--jobs", "1")
    assert clean.exit_code == 0, clean.output


def test_exit_code_missing_catalog(cli, tmp_path):
    result = cli("scan", "competitors", "--db", str(tmp_path / "no-catalog"), "--quiet")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.stderr.strip()
    assert not (tmp_path / "no-catalog").exists()
    for command in (["stats"], ["rebuild"]):
        result = cli(*command, "--db", str(tmp_path / "no-catalog"))
        assert result.exit_code == 2, command


def test_exit_code_missing_folder(cli, guard):
    result = cli("scan", "no_such_folder", "--db", guard, "--quiet")
    assert result.exit_code == 2 and "no_such_folder" in result.stderr
    result = cli("index", "no_such_folder", "--db", guard, "--quiet")
    assert result.exit_code == 2 and "no_such_folder" in result.stderr


@pytest.mark.skipif(IS_ROOT, reason=ROOT_SKIP)
def test_exit_code_unreadable_folder(cli, guard, workdir):
    locked = workdir / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0)
    try:
        result = cli("scan", "locked", "--db", guard, "--quiet")
        assert result.exit_code == 2 and "locked" in result.stderr
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("args", [
    ["scan", "competitors", "--db", "guard", "--format", "xml"],
    ["scan", "competitors", "--db", "guard", "--bogus"],
    ["scan", "competitors", "--db", "guard", "--threshold", "1.5"],
    ["scan", "competitors", "--db", "guard", "--top", "0"],
    ["scan", "--db", "guard"],
    ["frobnicate"],
])
def test_exit_code_bad_usage(cli, guard, args):
    result = cli(*args)
    assert result.exit_code == 2, result.output


def test_strict_with_a_broken_file(cli, guard):
    lenient = cli("scan", "broken", "--db", guard, "--format", "json", "--quiet", "--jobs", "1")
    assert lenient.exit_code == 0, lenient.output
    data = json.loads(lenient.stdout)
    assert [e["path"] for e in data["errors"]] == [os.path.join("broken", "empty.png")]
    assert "empty" in data["errors"][0]["error"]
    assert [m["reference"] for m in data["matches"]][:1] == [os.path.join("catalog", "rocket.jpg")]
    strict = cli("scan", "broken", "--db", guard, "--strict", "--quiet", "--jobs", "1")
    assert strict.exit_code == 1
    assert "empty.png" in strict.stdout  # the table of unreadable files


def test_exit_code_when_every_file_failed(cli, guard, workdir, tmp_path, fixtures):
    """A run whose files all failed says so and exits 4, with --strict too (1 would say only that
    some file failed); its output is printed as usual. An empty folder is a run that completed."""
    broken = tmp_path / "all-broken"
    broken.mkdir()
    for case in ("empty", "truncated", "not_image"):
        shutil.copyfile(fixtures.loader(case), broken / fixtures.loader(case).name)
    for strict in ([], ["--strict"]):
        result = cli("scan", str(broken), "--db", guard, "--format", "json", "--quiet", "--jobs", "1", *strict)
        assert result.exit_code == 4, result.output
        assert len(json.loads(result.stdout)["errors"]) == 3
        assert "none of the 3 file(s) could be read" in result.stderr
    result = cli("index", str(broken), "--db", str(tmp_path / "db"), "--format", "json", "--quiet", "--jobs", "1")
    assert result.exit_code == 4 and len(json.loads(result.stdout)["errors"]) == 3
    (tmp_path / "nothing").mkdir()
    assert cli("scan", str(tmp_path / "nothing"), "--db", guard, "--quiet").exit_code == 0
    assert cli("scan", "broken", "--db", guard, "--quiet", "--jobs", "1").exit_code == 0  # one of two failed


def test_exit_code_of_imguards_own_failure(cli, guard, monkeypatch, tmp_path):
    """A bug is exit 3 and a short message naming the error and the file its traceback went to,
    never a bare traceback; IMGUARD_DEBUG=1 prints the traceback too."""
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in a scan")

    monkeypatch.setattr(imguard.Catalog, "scan", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the traceback goes
    result = cli("scan", "competitors", "--db", guard, "--quiet")
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "internal error (ZeroDivisionError: a bug in a scan)" in result.stderr
    [kept] = tmp_path.glob("imguard-traceback-*.txt")
    assert str(kept) in result.stderr and "ZeroDivisionError" in kept.read_text()
    shown = cli("scan", "competitors", "--db", guard, "--quiet", env={"IMGUARD_DEBUG": "1"})
    assert shown.exit_code == 3 and "Traceback (most recent call last)" in shown.stderr


def test_exit_code_of_an_interrupted_run(cli, guard, monkeypatch):
    """Ctrl-C is 130, as shells report SIGINT: click's own 1 would read as --fail-on-match's."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imguard.Catalog, "scan", interrupted)
    result = cli("scan", "competitors", "--db", guard, "--quiet", "--fail-on-match")
    assert result.exit_code == 130 and "interrupted" in result.stderr and "Traceback" not in result.output


def test_exit_code_of_a_broken_store(cli, workdir, tmp_path):
    """A catalog store whose pages are damaged is imguard's failure, exit 3, with SQLite's reason
    (a missing catalog stays a usage error, 2)."""
    db = tmp_path / "db"
    assert cli("index", "catalog", "--db", str(db), "--quiet", "--jobs", "1").exit_code == 0
    store = db / "catalog.sqlite"
    data = bytearray(store.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page after the first: the schema survives
    store.write_bytes(bytes(data))
    for command in (["scan", "competitors", "--quiet", "--jobs", "1"], ["stats"], ["index", "catalog", "--quiet"]):
        result = cli(*command, "--db", str(db))
        assert result.exit_code == 3, (command, result.output)
        assert "the catalog store failed" in result.stderr and "malformed" in result.stderr, result.stderr
        assert "Traceback" not in result.output


def test_rebuild(cli, guard, workdir):
    for name in ("phash.faiss", "dhash.faiss", "features.faiss"):
        (workdir / guard / name).unlink()
    result = cli("rebuild", "--db", guard)
    assert result.exit_code == 0, result.output
    assert "rebuilt" in result.stdout
    for name in ("phash.faiss", "dhash.faiss", "features.faiss"):
        assert (workdir / guard / name).exists()
    assert scan_json(cli, "competitors/rocket__thumb300.jpg", "--db", guard)["matches"]


# -- the installed console script -------------------------------------------------------------------




def test_console_script_index_and_scan(script, workdir, tmp_path, fixtures):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(workdir / "catalog", work / "catalog")
    shutil.copytree(workdir / "competitors", work / "competitors")
    done = run_script(script, work, "index", "catalog", "--db", "guard", "--quiet")
    assert done.returncode == 0, done.stderr
    # default --jobs (all cores) on purpose: the real process pool
    done = run_script(script, work, "scan", "competitors", "--db", "guard", "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert "Traceback" not in done.stderr
    best = {}
    for m in data["matches"]:
        assert not os.path.isabs(m["query"]) and not os.path.isabs(m["reference"])
        best.setdefault(os.path.basename(m["query"]), os.path.basename(m["reference"]))
    assert best == {name: fixtures.expected[name] for name in COPIES}
    assert run_script(script, work, "scan", "competitors", "--db", "guard", "--fail-on-match",
                      "--quiet").returncode == 1
    stats = run_script(script, work, "stats", "--db", "guard", "--format", "json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["images"] == len(fixtures.catalog_names)


def test_console_script_exit_code_2(script, workdir, tmp_path):
    missing = run_script(script, workdir, "scan", "competitors", "--db", str(tmp_path / "none"), "--quiet")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and missing.stderr.strip()
    assert run_script(script, workdir, "scan", "--bogus").returncode == 2
