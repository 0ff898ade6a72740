"""The evidence report folder (imguard.evidence), made with the console script (conftest `reports`):
grouped by listing, one evidence PNG per pair, one complaint draft per infringing listing,
self-contained, and safe with hostile strings. The page in a real browser: test_report_page.py."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import imguard
from imguard import evidence

from conftest import HOSTILE_SELLER, HOSTILE_TITLE, run_script


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def complaints_csv(folder: Path) -> list[dict[str, str]]:
    with open(folder / "complaints.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class _References(HTMLParser):
    """Every src and href of a page, and the tags it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data") and value is not None:
                self.links.append((tag, name, value))


def references(page: Path) -> _References:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_the_report_groups_pairs_by_listing_with_a_draft_each(reports, fixtures):
    folder = reports["folders"]
    payload = read_json(folder / "matches.json")
    listings = {m["query_metadata"]["listing"] for m in payload["matches"]}
    thieves = {p["listing"] for p in fixtures.params.values() if p["source"]}
    assert listings == thieves  # the clean listing has no pair, and so no draft
    assert sorted(p.stem for p in (folder / "complaints").iterdir()) == sorted(thieves)
    assert [row["listing"] for row in complaints_csv(folder)] and {r["listing"] for r in complaints_csv(folder)} == thieves
    assert len(list((folder / "evidence").iterdir())) == len(payload["matches"])
    for m in payload["matches"]:
        name = os.path.basename(m["query"])
        assert m["query_metadata"]["listing"] == fixtures.params[name]["listing"]
        assert m["evidence"]["captured_from"] == "file mtime" and m["evidence"]["reference_indexed_at"]


def test_each_pair_has_an_evidence_picture(reports):
    folder = reports["folders"]
    payload = read_json(folder / "matches.json")
    pngs = sorted((folder / "evidence").iterdir())
    for png, match in zip(pngs, payload["matches"]):
        with Image.open(png) as picture:
            assert picture.format == "PNG" and picture.width > 2 * 200 and picture.height > 200
        assert match["query_metadata"]["listing"] in png.name  # named after its listing


def test_a_draft_names_the_listing_its_images_and_the_own_listing(reports, fixtures):
    draft = (reports["folders"] / "complaints" / "B0THIEF002.txt").read_text(encoding="utf-8")
    assert "Infringing listing: B0THIEF002" in draft
    assert "Copyright — unauthorized images for product detail pages" in draft
    assert "https://shop.example/dp/B0OWNCAT01" in draft  # the seller's own listing, from the catalog manifest
    chelsea = [n for n, p in fixtures.params.items() if p["source"] == "chelsea.jpg"]
    assert all(f"B0THIEF002/{name}" in draft for name in chelsea)
    row = next(r for r in complaints_csv(reports["folders"]) if r["listing"] == "B0THIEF002")
    assert row["own_listings"] == "https://shop.example/dp/B0OWNCAT01" and int(row["pairs"]) == len(chelsea)
    assert "mirrored" in row["description"]  # chelsea__combined: what the evidence shows
    assert re.search(r"Our file's SHA-256 is [0-9a-f]{64}; we have held it since at least \d{4}-\d\d-\d\d", draft)


def test_report_from_a_saved_scan_is_the_same_report(reports):
    """`imguard report scan.json` and `imguard scan --report` are one library function."""
    folders, saved = reports["folders"], reports["saved"]
    assert read_json(saved / "matches.json")["matches"] == read_json(folders / "matches.json")["matches"]
    assert read_json(reports["scan.json"])["matches"] == read_json(folders / "matches.json")["matches"]
    drafted = re.compile(r"Drafted .* by imguard")
    for draft in (folders / "complaints").iterdir():
        again = saved / "complaints" / draft.name
        assert drafted.sub("", draft.read_text()) == drafted.sub("", again.read_text())
    assert sorted(os.listdir(saved / "evidence")) == sorted(os.listdir(folders / "evidence"))


def test_the_page_is_self_contained_and_survives_a_move(reports, tmp_path):
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(reports["folders"], moved)
    page = moved / "index.html"
    found = references(page)
    assert "link" not in found.tags and "iframe" not in found.tags and "object" not in found.tags
    text = page.read_text(encoding="utf-8")
    assert "@import" not in text and "url(" not in text and "<script src" not in text
    for tag, attribute, value in found.links:
        if tag == "a" and value.startswith(("http://", "https://")):
            continue  # a link the seller may click: not a resource the page loads
        assert "://" not in value and not value.startswith(("/", "data:", "javascript:")), value
        assert (moved / value).is_file(), value  # relative, inside the folder
    assert len([v for t, a, v in found.links if t == "img"]) >= 2 * len(read_json(moved / "matches.json")["matches"])


def test_a_rotated_copy_is_outlined_where_it_is(reports):
    match = next(m for m in read_json(reports["folders"] / "matches.json")["matches"]
                 if m["query"].endswith("astronaut__rotate8.jpg"))
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = match["explanation"]["query_outline"]
    top_edge = math.degrees(math.atan2(y1 - y0, x1 - x0))
    assert top_edge == pytest.approx(-8.0, abs=1.0)  # rotated 8° anticlockwise: its top edge rises
    assert "rotated 8° anticlockwise" in match["description"]
    transform = match["explanation"]["transform"]
    assert math.degrees(math.atan2(transform[1][0], transform[0][0])) == pytest.approx(-8.0, abs=1.0)


def test_hostile_strings_are_shown_never_run(reports):
    folder = reports["hostile"]
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page  # shown, as text
    assert 'href="javascript' not in page.lower()
    assert page.count("<script") == 1  # the page's own
    assert "\u202e" not in page and "Shop \\u202eevil" in page  # the bidi override made visible
    # file names made from the listing stay inside the folder
    drafts = list((folder / "complaints").iterdir())
    assert len(drafts) == 2 and all(d.parent == folder / "complaints" for d in drafts)
    assert not (folder.parent / "evil").exists()
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.(txt|png)", p.name) for p in drafts + list((folder / "evidence").iterdir()))
    for draft in drafts:  # a terminal shows them as they are: no escape, no line a cell added
        text = draft.read_text(encoding="utf-8")
        assert "\x1b" not in text and "\x07" not in text
        assert [line for line in text.splitlines() if line.startswith("Our listing(s) to link:")] == [
            "Our listing(s) to link: https://shop.example/dp/B0OWNCAT01" if "evil" in draft.name
            else "Our listing(s) to link: https://shop.example/dp/B0OWNCUP01"]
    rows = complaints_csv(folder)
    hostile = next(r for r in rows if "evil" in r["listing"])
    assert hostile["seller"] == "'" + HOSTILE_SELLER  # a formula, defused
    assert hostile["listing_url"] == ""  # not an http(s) URL: never offered as the listing's address
    assert hostile["title"] == HOSTILE_TITLE  # a CSV cell is text, kept as it is
    with open(folder / "matches.csv", newline="", encoding="utf-8") as handle:
        assert all(not r["seller"].startswith("=") for r in csv.DictReader(handle))


def test_manifest_metadata_and_capture_times_reach_the_evidence(reports):
    matches = read_json(reports["hostile"] / "matches.json")["matches"]
    by_name = {os.path.basename(m["query"]): m for m in matches}
    assert set(by_name) == {"chelsea__resize.jpg", "coffee__png.png"}
    chelsea, coffee = by_name["chelsea__resize.jpg"], by_name["coffee__png.png"]
    assert (chelsea["evidence"]["captured_at"], chelsea["evidence"]["captured_from"]) == ("2026-11-30T10:00:00Z", "manifest")
    assert coffee["evidence"]["captured_from"] == "file mtime"  # no captured_at on its row
    assert coffee["query_metadata"] == {"listing": "B0GOOD0001", "listing_url": "https://market.example/dp/B0GOOD0001",
                                        "title": "Cup & saucer", "seller": "Shop \u202eevil", "marketplace": "amazon.de",
                                        "image_position": "2"}
    draft = next((reports["hostile"] / "complaints").glob("B0GOOD0001*")).read_text(encoding="utf-8")
    assert "Marketplace: amazon.de" in draft and "image 2:" in draft
    assert "Listing URL: https://market.example/dp/B0GOOD0001" in draft


def test_a_complaint_template_replaces_the_draft(reports, script, tmp_path):
    template = tmp_path / "mine.txt.j2"
    template.write_text("{{ listing }} | {{ images | length }} | {{ own_listings | join(',') }}\n", encoding="utf-8")
    root = reports["root"]
    done = run_script(script, root, "report", "scan.json", "--db", "guard", "--out", str(tmp_path / "r"),
                      "--complaint-template", str(template))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "complaints" / "B0THIEF001.txt").read_text() == \
        "B0THIEF001 | 4 | https://shop.example/dp/B0OWNASTRO\n"


@pytest.mark.parametrize("body, message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed in a complaint template"),
    ("{% if %}", "not a valid template"),
    ("{{ no_such_variable }}", "is undefined"),
])
def test_a_template_that_misbehaves_is_a_clear_error(reports, script, tmp_path, body, message):
    template = tmp_path / "evil.j2"
    template.write_text(body, encoding="utf-8")
    done = run_script(script, reports["root"], "report", "scan.json", "--db", "guard", "--out", str(tmp_path / "r"),
                      "--complaint-template", str(template))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and "evil.j2" in done.stderr


def test_an_own_image_whose_file_is_gone_is_shown_from_the_catalog(reports, tmp_path):
    """The catalog keeps a thumbnail of every own image: the report still shows the pair."""
    root = tmp_path / "work"
    shutil.copytree(reports["root"] / "catalog", root / "catalog")
    with imguard.Catalog.open(root / "guard") as catalog:
        catalog.add(root / "catalog", jobs=1)
        run = catalog.scan(reports["root"] / "competitors" / "B0THIEF002", jobs=1)
        matches = list(run)
        shutil.rmtree(root / "catalog")
        written = catalog.write_report(matches, root / "report")
    assert written.pairs == len(matches) > 0
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    assert "your original: the catalog&#39;s thumbnail" in page
    assert page.count('alt="your original"') == len(matches)


def test_http_url_accepts_only_web_links():
    assert evidence.http_url("https://m.example/dp/1") == "https://m.example/dp/1"
    for bad in ("javascript:alert(1)", "data:text/html,x", "JaVaScRiPt:alert(1)", "file:///etc/passwd", "//evil",
                "https://", "", None, " javascript:x"):
        assert evidence.http_url(bad) is None, bad
