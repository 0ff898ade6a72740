"""Every night, only what changed (imguard.nightly, imguard.history): runs over changing folders,
new catalog images found in unchanged competitor files, marks, unreadable sources, killed runs,
two runs at once, the configuration, and the CLI as cron runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

import imguard
from imguard.history import History

from conftest import ROOT, run_script

LISTINGS = ("B0THIEF002", "B0THIEF004", "B0CLEAN005")  # two thieves and a clean listing: 12 copies, 10 not


def names(findings) -> set[str]:
    return {os.path.basename(f.query) for f in findings}


@pytest.fixture
def night(fixtures, tmp_path):
    """A working folder: catalog/ (with listings.csv), competitors/<listing>/, imguard.toml."""
    shutil.copytree(fixtures.catalog, tmp_path / "catalog")
    for listing in LISTINGS:
        shutil.copytree(fixtures.competitors / listing, tmp_path / "competitors" / listing)
    write_config(tmp_path)
    return tmp_path


def write_config(folder: Path, extra: str = "", source: str = 'path = "competitors"', jobs: int = 1) -> Path:
    (folder / "imguard.toml").write_text(textwrap.dedent(f"""\
        catalog = "catalog"
        manifest = "catalog/listings.csv"
        db = "guard"
        report = "report"
        jobs = {jobs}
        {extra}
        [[source]]
        name = "shops"
        {source}
        """), encoding="utf-8")
    return folder / "imguard.toml"


def nightly(folder: Path, **options) -> imguard.NightlyResult:
    with imguard.Catalog.open(folder / "guard") as catalog:
        return catalog.nightly(folder / "imguard.toml", **options)


def copies(fixtures) -> set[str]:
    return {n for n, p in fixtures.params.items() if p["source"] and p["listing"] in LISTINGS}


def test_runs_over_a_changing_folder_show_new_ongoing_resolved_reappeared(night, fixtures):
    first = nightly(night)
    assert names(first.changes["new"]) == copies(fixtures)
    assert first.stats["scanned"] == 22 and not first.changes["ongoing"] and not first.errors

    second = nightly(night)  # nothing changed: nothing read, every finding seen again
    assert second.stats["scanned"] == 0 and second.stats["unchanged"] == 22
    assert not second.changes["new"] and not second.changes["resolved"]
    assert names(second.changes["ongoing"]) == copies(fixtures)

    gone = night / "competitors" / "B0THIEF004" / "rocket__webp.webp"
    kept = gone.read_bytes()
    gone.unlink()
    edited = night / "competitors" / "B0THIEF002" / "chelsea__resize.jpg"
    shutil.copyfile(fixtures.competitor("unrelated__brick.jpg"), edited)  # the same name, no longer a copy
    third = nightly(night)
    assert names(third.changes["resolved"]) == {"rocket__webp.webp", "chelsea__resize.jpg"}
    assert third.stats["scanned"] == 1  # the edited file alone is read again
    assert names(third.changes["ongoing"]) == copies(fixtures) - {"rocket__webp.webp", "chelsea__resize.jpg"}

    gone.write_bytes(kept)  # the listing puts the photo back
    fourth = nightly(night)
    assert names(fourth.changes["reappeared"]) == {"rocket__webp.webp"} and not fourth.changes["new"]
    assert fourth.alert
    fifth = nightly(night)
    assert not fifth.changes["reappeared"] and "rocket__webp.webp" in names(fifth.changes["ongoing"])

    with imguard.Catalog.open(night / "guard") as catalog:
        statuses = {os.path.basename(f.query): f.status for f in catalog.findings()}
        assert statuses["chelsea__resize.jpg"] == "resolved" and statuses["rocket__webp.webp"] == "ongoing"
        assert names(catalog.findings(status="resolved")) == {"chelsea__resize.jpg"}
        assert names(catalog.findings(listing="B0THIEF004")) == {n for n in copies(fixtures)
                                                                  if fixtures.params[n]["listing"] == "B0THIEF004"}
        assert catalog.findings(older_than_days=1) == []


def test_a_new_catalog_image_is_found_in_an_unchanged_competitor_file(night, fixtures):
    """The clean listing's moon photo is a seller's photo added to the catalog only now: it was
    stolen already, and it is a finding on its first night, without the competitor files being
    read again but for a few candidates."""
    nightly(night)
    moon = night / "competitors" / "B0CLEAN005" / "unrelated__moon.png"
    before = moon.stat().st_mtime
    import skimage.data

    Image.fromarray(skimage.data.moon()).save(night / "catalog" / "moon.png")
    result = nightly(night)
    assert names(result.changes["new"]) == {"unrelated__moon.png"}
    assert [os.path.basename(f.reference) for f in result.changes["new"]] == ["moon.png"]
    assert result.stats["new_own_images"] == 1
    assert result.stats["scanned"] == result.stats["rescanned_for_new_own_images"] < 22
    assert moon.stat().st_mtime == before
    assert nightly(night).stats["scanned"] == 0  # what was read again is known as it was


def test_marks_are_kept_and_respected(night, fixtures, tmp_path):
    write_config(night, "still_online_days = 0")
    first = nightly(night)
    by_name = {os.path.basename(f.query): f for f in first.changes["new"]}
    with imguard.Catalog.open(night / "guard") as catalog:
        catalog.mark("reported", finding=by_name["chelsea__meme.jpg"].id, note="complaint filed")
        catalog.mark("ignored", finding=by_name["rocket__colour.jpg"].id)
        catalog.mark("licensed", listing="B0THIEF004")
        with pytest.raises(imguard.MarkError, match="no finding with id 999"):
            catalog.mark("reported", finding=999)
        with pytest.raises(imguard.MarkError, match="only be marked licensed"):
            catalog.mark("ignored", listing="B0THIEF002")
    os.utime(night / "catalog" / "chelsea.jpg", (1_000_000_000, 1_000_000_000))  # re-indexed: marks stay
    second = nightly(night)
    ongoing = names(second.changes["ongoing"])
    assert "rocket__colour.jpg" not in ongoing  # ignored, and its listing licensed: silent
    assert not any(fixtures.params[n]["listing"] == "B0THIEF004" for n in ongoing)
    assert names(second.changes["still_online_after_report"]) == {"chelsea__meme.jpg"}
    reported = next(f for f in second.changes["still_online_after_report"])
    assert (reported.mark, reported.mark_note) == ("reported", "complaint filed")
    # decisions exported by the report page, applied at once
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps({"decisions": [{"finding": by_name["chelsea__jpeg40.jpg"].id, "mark": "not-a-copy"}]}))
    with imguard.Catalog.open(night / "guard") as catalog:
        assert catalog.mark_from(decisions) == 1
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"decisions": [{"finding": 12345, "mark": "reported"}]}))
        with pytest.raises(imguard.MarkError, match="decision 1: no finding with id 12345"):
            catalog.mark_from(bad)
    third = nightly(night)
    assert "chelsea__jpeg40.jpg" not in names(third.changes["ongoing"])
    page = (night / "report" / "index.html").read_text(encoding="utf-8")
    assert "marked not-a-copy" in page and "marked reported: complaint filed" in page
    assert f"imguard mark {by_name['chelsea__meme.jpg'].id} --as" in page


def test_an_unreadable_source_resolves_nothing(night, fixtures):
    first = nightly(night)
    (night / "competitors").rename(night / "unmounted")
    second = nightly(night)
    assert not second.changes["resolved"] and second.errors
    assert second.sources == [{"name": "shops", "complete": False, "error": second.errors[0].error, "listed": 0,
                               "scanned": 0}]
    (night / "unmounted").rename(night / "competitors")
    third = nightly(night)
    assert not third.changes["resolved"] and not third.changes["new"]
    assert names(third.changes["ongoing"]) == names(first.changes["new"])


@pytest.mark.parametrize("change, message", [
    (('db = "guard"', 'db = "guard"\ncolour = "red"'), "colour: unknown key"),
    (('jobs = 1', 'jobs = 1\nthreshold = 2'), "threshold: 2.0: must be within 0 and 1"),
    (('jobs = 1', 'jobs = 1\nthreshold = "high"'), "threshold: expected the minimum score, 0 to 1, not str"),
    (('catalog/listings.csv', 'nope.csv'), "manifest: nope.csv: no such file or folder"),
    (('path = "competitors"', 'path = "competitors"\nspeed = 3'), "source 1: speed: unknown key"),
    (('path = "competitors"', 'url = "ftp.example/x"'), "source 1: url: ftp.example/x: not a URL"),
    (('[[source]]', '[[sauce]]'), "sauce: unknown key"),
])
def test_a_config_names_what_is_wrong(night, script, change, message):
    config = night / "imguard.toml"
    config.write_text(config.read_text().replace(*change))
    done = run_script(script, night, "nightly", "--config", "imguard.toml", "--quiet")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_cli_as_cron_runs_it(night, script):
    done = run_script(script, night, "nightly", "--config", "imguard.toml", "--dry-run")
    assert done.returncode == 0 and "dry run: 1 sources would read, 22 images listed" in done.stdout
    assert not (night / "guard").exists()  # changed nothing
    done = run_script(script, night, "nightly", "--config", "imguard.toml", "--format", "json", "--fail-on-new",
                      "--quiet")
    assert done.returncode == 1, done.stderr  # something new
    data = json.loads(done.stdout)
    assert set(data) >= {"new", "ongoing", "resolved", "reappeared", "still_online_after_report"}
    assert {"id", "reference", "query", "listing", "score", "first_seen", "last_seen"} <= set(data["new"][0])
    done = run_script(script, night, "nightly", "--config", "imguard.toml", "--fail-on-new", "--quiet")
    assert done.returncode == 0 and "0 new, 0 reappeared, 0 resolved" in done.stdout
    done = run_script(script, night, "findings", "--db", "guard", "--status", "ongoing", "--format", "csv")
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 1 + 12
    finding = data["new"][0]["id"]
    done = run_script(script, night, "mark", str(finding), "--as", "reported", "--db", "guard", "--note", "filed")
    assert done.returncode == 0 and f"finding {finding} marked reported" in done.stdout
    done = run_script(script, night, "mark", "9999", "--as", "reported", "--db", "guard")
    assert done.returncode == 2 and "no finding with id 9999" in done.stderr


def test_two_writers_at_once(night, script):
    """One writer at a time: a second one exits with its own code and names the holder, or waits
    for it; a holder that dies (SIGKILL) leaves no stale lock."""
    nightly(night)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time, imguard
        catalog = imguard.Catalog.open("guard")
        with catalog.writing():
            print("holding", flush=True)
            time.sleep(120)
        """)], cwd=night, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    try:
        assert holder.stdout.readline().strip() == "holding"
        for command in (["nightly", "--config", "imguard.toml", "--quiet"], ["index", "catalog", "--db", "guard", "-q"],
                        ["mark", "1", "--as", "ignored", "--db", "guard"], ["rebuild", "--db", "guard"]):
            done = run_script(script, night, *command)
            assert done.returncode == 5, (command, done.stderr)
            assert f"pid {holder.pid}" in done.stderr and "another imguard run is writing" in done.stderr
        # readers never wait
        assert run_script(script, night, "findings", "--db", "guard").returncode == 0
        assert run_script(script, night, "stats", "--db", "guard").returncode == 0
        waiting = subprocess.Popen([str(script), "nightly", "--config", "imguard.toml", "--quiet", "--wait", "60"],
                                   cwd=night, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting
        holder.kill()  # dies holding the lock: the system releases it
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
    finally:
        holder.kill()
        holder.wait(timeout=30)


KILL_RUN = """
import os, random, signal, sys, threading, time, imguard
random.seed(int(sys.argv[1]))
delay = random.uniform(0.0, float(sys.argv[2]))
threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
with imguard.Catalog.open("guard") as catalog:
    catalog.nightly("imguard.toml")
os.kill(os.getpid(), signal.SIGKILL)  # finished before the timer: killed anyway
"""


def test_killed_runs_lose_nothing_and_the_next_run_completes_the_work(night, fixtures, tmp_path):
    """SIGKILLs at random points of nightly runs: the store stays intact, nothing is resolved by
    a run that did not complete, and the run that completes reports every finding as new, as an
    uninterrupted run does."""
    reference = tmp_path / "reference"
    shutil.copytree(night, reference)
    expected = names(nightly(reference).changes["new"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for seed in range(6):
        done = subprocess.run([sys.executable, "-c", KILL_RUN, str(seed), "4"], cwd=night, env=env, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr
        db = sqlite3.connect(night / "guard" / "catalog.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM findings WHERE status = 'resolved'").fetchone() == (0,)
        db.close()
    result = nightly(night)
    complete = [r for r in sqlite3.connect(night / "guard" / "catalog.sqlite").execute("SELECT complete FROM runs")]
    assert names(result.changes["new"]) == expected or (
        # a killed run may have completed before its kill: then the new ones were reported already
        (1,) in complete[:-1] and names(result.changes["ongoing"]) == expected)
    with imguard.Catalog.open(night / "guard") as catalog:
        assert {os.path.basename(f.query) for f in catalog.findings()} == expected
        assert History(catalog.store).last_complete_run() is not None


def test_a_url_source_is_asked_conditionally(night, fixtures, tmp_path):
    """A competitor's web folder: the second night asks each image with If-Modified-Since and
    reads nothing it had; an image the server no longer has (404) is resolved."""
    import functools
    import http.server
    import threading

    site = tmp_path / "site"
    shutil.copytree(night / "competitors" / "B0THIEF002", site / "B0THIEF002")
    requests: list[tuple[str, str, str | None]] = []

    taken_down: set[str] = set()  # paths answered 410 Gone

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_response(self, code, message=None):
            requests.append((self.command, self.path, str(code)))
            super().send_response(code, message)

        def do_GET(self):
            if self.path in taken_down:
                self.send_error(410)
            elif self.path.startswith("/broken/"):  # a sub-page of the listing that fails tonight
                self.send_error(503)
            else:
                super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        write_config(night, source=f'url = "{url}"')
        os.environ["IMGUARD_CACHE"] = str(tmp_path / "cache")
        first = nightly(night)
        assert len(first.changes["new"]) == 5 and {f.listing for f in first.changes["new"]} == {"B0THIEF002"}
        requests.clear()
        second = nightly(night)
        assert second.stats["scanned"] == 0 and len(second.changes["ongoing"]) == 5
        images = [r for r in requests if r[1].endswith((".jpg", ".png"))]
        assert images and all(code == "304" for _, _, code in images), images
        (site / "B0THIEF002" / "chelsea__meme.jpg").unlink()  # 404
        taken_down.add("/B0THIEF002/chelsea__resize.jpg")  # 410
        third = nightly(night)
        assert names(third.changes["resolved"]) == {"chelsea__meme.jpg", "chelsea__resize.jpg"}
        (site / "broken").mkdir()
        (site / "B0THIEF002" / "chelsea__jpeg40.jpg").unlink()
        fourth = nightly(night)  # the listing is incomplete: nothing it misses is gone
        assert not fourth.changes["resolved"] and fourth.sources[0]["complete"] is False
        assert any("/broken/" in e.path for e in fourth.errors)
    finally:
        os.environ.pop("IMGUARD_CACHE", None)
        server.shutdown()


# -- regressions: each a defect a review found ----------------------------------------------


def test_a_killed_run_with_workers_leaves_no_stale_lock(night, script):
    """A SIGKILLed run with two worker processes: its workers die with it, and the lock is free
    at once (a flock would have stayed with the orphaned workers)."""
    write_config(night, jobs=2)
    run = subprocess.Popen([str(script), "nightly", "--config", "imguard.toml", "--quiet"], cwd=night,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)  # index done, competitors being scanned by the pool
    run.kill()
    run.wait(timeout=30)
    time.sleep(0.5)  # the kernel's signal to the orphans
    done = run_script(script, night, "nightly", "--config", "imguard.toml", "--quiet")
    assert done.returncode == 0, done.stderr


def test_two_nightly_runs_at_once(night, script):
    """Two cron jobs started together: one runs, the other exits 5 naming it; with --wait both
    complete, one after the other."""
    runs = [subprocess.Popen([str(script), "nightly", "--config", "imguard.toml", "--quiet"], cwd=night,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(r.wait(timeout=300) for r in runs)
    assert codes == [0, 5], [r.stderr.read() for r in runs]
    runs = [subprocess.Popen([str(script), "nightly", "--config", "imguard.toml", "--quiet", "--wait", "120"],
                             cwd=night, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [r.wait(timeout=300) for r in runs] == [0, 0]


KILL_AT = """
import os, signal, sys, imguard
from imguard import evidence, history, nightly
where, calls = sys.argv[1], int(sys.argv[2])
owner = {"seen": history.History, "record": history.History, "complete": history.History,
         "report": evidence, "look": nightly._Night}[where]
name = {"seen": "seen", "record": "record_competitor", "complete": "complete", "report": "write_report",
        "look": "_source"}[where]
original = getattr(owner, name)
count = [0]
def killing(*args, **kwargs):
    count[0] += 1
    if count[0] >= calls:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, name, killing)
with imguard.Catalog.open("guard") as catalog:
    catalog.nightly("imguard.toml")
os.kill(os.getpid(), signal.SIGKILL)
"""
# Where the runs below are killed: (the step, its call at which the kill comes).
KILL_POINTS = [("look", 1), ("seen", 1), ("record", 1), ("complete", 1), ("report", 1)]


def test_killed_later_runs_resolve_nothing_and_the_next_run_does(night, fixtures, tmp_path):
    """After a complete night, a file is removed and another replaced; runs with two workers are
    SIGKILLed at one step after another (listing, recording a scanned image, completing, writing
    the report); none resolves anything before it completes, and the run that reports says both
    were resolved, as an uninterrupted run does."""
    write_config(night, jobs=2)
    reference = tmp_path / "reference"  # the same nights, uninterrupted
    shutil.copytree(night, reference)
    for folder in (night, reference):
        nightly(folder)
        (folder / "competitors" / "B0THIEF004" / "rocket__webp.webp").unlink()
        shutil.copyfile(fixtures.competitor("unrelated__brick.jpg"),
                        folder / "competitors" / "B0THIEF002" / "chelsea__meme.jpg")
    expected = names(nightly(reference).changes["resolved"])
    assert expected == {"rocket__webp.webp", "chelsea__meme.jpg"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for where, calls in KILL_POINTS:
        done = subprocess.run([sys.executable, "-c", KILL_AT, where, str(calls)], cwd=night, env=env, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr
        db = sqlite3.connect(night / "guard" / "catalog.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        if where != "report":  # killed before it completed: it resolved nothing
            assert db.execute("SELECT COUNT(*) FROM runs WHERE complete = 1").fetchone() == (1,), where
            assert db.execute("SELECT COUNT(*) FROM findings WHERE status = 'resolved'").fetchone() == (0,), where
        db.close()
    # the run that completes and reports says what changed since the last report, kills or not
    assert names(nightly(night).changes["resolved"]) == expected


def test_a_file_that_cannot_be_read_keeps_its_findings(night, fixtures):
    """A changed file that no longer decodes (or times out) is neither gone nor a non-match."""
    nightly(night)
    broken = night / "competitors" / "B0THIEF004" / "rocket__thumb300.jpg"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated
    result = nightly(night)
    assert not result.changes["resolved"] and any("rocket__thumb300.jpg" in e.path for e in result.errors)
    with imguard.Catalog.open(night / "guard") as catalog:
        statuses = {os.path.basename(f.query): f.status for f in catalog.findings()}
    assert statuses["rocket__thumb300.jpg"] != "resolved"


def test_the_latest_mark_counts_and_manifest_edits_reach_the_findings(night, fixtures, tmp_path):
    """A seller renamed in the manifest takes its findings along; a listing licensed after one
    of its findings was reported silences it; an empty name marks nothing; the nightly report's
    drafts leave silenced pairs out."""
    manifest = night / "competitors.csv"

    def write_manifest(seller: str) -> None:
        rows = ["path,listing,seller"] + [f"competitors/B0THIEF002/{n},B0THIEF002,{seller}"
                                          for n in sorted(os.listdir(night / "competitors" / "B0THIEF002"))]
        manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")

    write_manifest("Old Shop")
    write_config(night, source='path = "competitors.csv"')
    first = nightly(night)
    meme = next(f for f in first.changes["new"] if f.query.endswith("chelsea__meme.jpg"))
    write_manifest("New Shop")
    with imguard.Catalog.open(night / "guard") as catalog:
        catalog.mark("reported", finding=meme.id)
        with pytest.raises(imguard.MarkError, match="an empty listing or seller"):
            catalog.mark("licensed", seller="")
    second = nightly(night)
    assert {f.seller for f in second.changes["ongoing"]} == {"New Shop"}
    with imguard.Catalog.open(night / "guard") as catalog:
        catalog.mark("licensed", seller="New Shop")  # after the report: the licence wins
        catalog.mark("not-a-copy", finding=next(f.id for f in second.changes["ongoing"]
                                                 if f.query.endswith("chelsea__resize.jpg")))
    third = nightly(night)
    assert not third.changes["ongoing"] and not third.changes["still_online_after_report"]
    assert not (night / "report" / "complaints" / "B0THIEF002.txt").exists()  # every pair silenced


def test_mark_from_applies_all_or_nothing(night, tmp_path):
    ids = [f.id for f in nightly(night).changes["new"]]
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps({"decisions": [{"finding": ids[0], "mark": "reported"},
                                                   {"finding": ids[1], "mark": "ignored", "note": {"x": 1}}]}))
    with imguard.Catalog.open(night / "guard") as catalog:
        with pytest.raises(imguard.MarkError, match="decision 2: a note is text"):
            catalog.mark_from(decisions)
        assert {f.mark for f in catalog.findings()} == {None}  # the first was not applied either


def test_a_report_folder_keeps_the_files_imguard_did_not_write(night):
    mine = night / "report" / "images" / "my-photo.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the seller's own file")
    nightly(night)
    (night / "competitors" / "B0THIEF004" / "rocket__webp.webp").unlink()  # shown resolved, then gone
    nightly(night)
    nightly(night)
    assert mine.read_bytes() == b"the seller's own file"
    written = json.loads((night / "report" / "imguard-report.json").read_text())["files"]
    assert all((night / "report" / name).is_file() for name in written)
    assert len(list((night / "report" / "evidence").iterdir())) == 11  # 12 pairs, one gone: its picture too


def test_a_listing_folder_named_in_bytes_that_are_not_utf8(night):
    odd = os.fsdecode(bytes(night / "competitors") + b"/B0\xffTHIEF")
    os.rename(night / "competitors" / "B0THIEF002", odd)
    result = nightly(night)
    assert os.fsdecode(b"B0\xffTHIEF") in {f.listing for f in result.changes["new"]}
    assert nightly(night).changes["ongoing"]  # and again, the next night
