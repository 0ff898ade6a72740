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


def write_config(folder: Path, extra: str = "", source: str = 'path = "competitors"') -> Path:
    (folder / "imguard.toml").write_text(textwrap.dedent(f"""\
        catalog = "catalog"
        manifest = "catalog/listings.csv"
        db = "guard"
        report = "report"
        jobs = 1
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
        with pytest.raises(imguard.MarkError, match="decision 1: no finding 12345"):
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
    (('jobs = 1', 'threshold = 2'), "threshold: 2.0: must be within 0 and 1"),
    (('jobs = 1', 'threshold = "high"'), "threshold: expected the minimum score, 0 to 1, not str"),
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

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_response(self, code, message=None):
            requests.append((self.command, self.path, str(code)))
            super().send_response(code, message)

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
        (site / "B0THIEF002" / "chelsea__meme.jpg").unlink()
        third = nightly(night)
        assert names(third.changes["resolved"]) == {url + "B0THIEF002/chelsea__meme.jpg"} or \
            {f.query for f in third.changes["resolved"]} == {url + "B0THIEF002/chelsea__meme.jpg"}
    finally:
        os.environ.pop("IMGUARD_CACHE", None)
        server.shutdown()
