"""The evidence report's page in a real browser (headless Chromium, conftest `browser`): every
picture loads, nothing errs, the outlines sit where matches.json says, filters and sorting work,
nothing loads from outside the folder, and hostile strings never run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_script

OUTLINES = """() => Array.from(document.querySelectorAll('.pair')).map(pair => {
  const box = (selector) => {
    const element = pair.querySelector(selector);
    if (!element) return null;
    const r = element.getBoundingClientRect();
    return [r.x, r.y, r.width, r.height];
  };
  return {number: parseInt(pair.dataset.number, 10),
          queryImage: box('.query img'), queryOutline: box('.query polygon'),
          referenceImage: box('.reference img'), referenceOutline: box('.reference rect')};
})"""


class Visit:
    """One page load: what the page said and asked for while loading."""

    def __init__(self, browser, index: Path) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 1600})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(index.as_uri())
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def visit(browser):
    opened: list[Visit] = []

    def open_page(index: Path) -> Visit:
        opened.append(Visit(browser, index))
        return opened[-1]

    yield open_page
    for one in opened:
        one.close()


def _expected_box(points, size, image_box):
    """Where a region given in original pixels lies on the page, from the image's own box."""
    x, y, width, height = image_box
    sx, sy = width / size[0], height / size[1]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [x + min(xs) * sx, y + min(ys) * sy, (max(xs) - min(xs)) * sx, (max(ys) - min(ys)) * sy]


def test_the_page_loads_every_picture_without_an_error(visit, reports, tmp_path):
    folder = reports["folders"]
    page = visit(folder / "index.html")
    widths = page.page.evaluate("() => Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    matches = json.loads((folder / "matches.json").read_text())["matches"]
    assert len(widths) == 2 * len(matches)
    assert all(width > 0 for _, width in widths), [src for src, width in widths if not width]
    assert page.errors == [] and page.dialogs == []
    inside = folder.resolve().as_uri()
    assert all(url.startswith(inside) for url in page.requests), [u for u in page.requests if not u.startswith(inside)]
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("IMGUARD_SCREENSHOTS"):  # to look at, or for the README
        shutil.copyfile(shot, Path(os.environ["IMGUARD_SCREENSHOTS"]) / "report.png")


def test_the_outlines_sit_where_the_json_says(visit, reports):
    folder = reports["folders"]
    matches = json.loads((folder / "matches.json").read_text())["matches"]
    boxes = visit(folder / "index.html").page.evaluate(OUTLINES)
    assert sorted(b["number"] for b in boxes) == list(range(1, len(matches) + 1))
    for box in boxes:
        match = matches[box["number"] - 1]  # pairs are numbered in matches.json's order
        e, v = match["explanation"], match["evidence"]
        expected = _expected_box(e["query_outline"], v["query_size"], box["queryImage"])
        assert box["queryOutline"] == pytest.approx(expected, abs=2.0), (match["query"], box, expected)
        x0, y0, x1, y1 = e["reference_region"]
        expected = _expected_box([(x0, y0), (x1, y1)], v["reference_size"], box["referenceImage"])
        assert box["referenceOutline"] == pytest.approx(expected, abs=2.0), (match["reference"], box, expected)


def test_sorting_and_filters(visit, reports):
    page = visit(reports["folders"] / "index.html").page
    order = "() => Array.from(document.querySelectorAll('section.listing')).map(s => s.dataset.listing)"
    best = "() => Array.from(document.querySelectorAll('section.listing')).map(s => parseFloat(s.dataset.best))"
    assert page.evaluate(best) == sorted(page.evaluate(best), reverse=True)  # best score first by default
    page.select_option("#sort", "listing")
    listings = page.evaluate(order)
    assert listings == sorted(listings) and len(listings) == 4
    page.select_option("#sort", "score")
    assert page.evaluate(best) == sorted(page.evaluate(best), reverse=True)

    visible = "() => Array.from(document.querySelectorAll('.pair')).filter(p => p.offsetParent !== null).map(p => p.dataset.method)"
    page.select_option("#filter-method", "sha256")
    assert page.evaluate(visible) == ["sha256"]  # the byte-identical astronaut
    assert page.inner_text("#count-pairs") == "1" and page.inner_text("#count-listings") == "1"
    page.select_option("#filter-method", "")
    page.fill("#filter-text", "b0thief004")
    shown = page.evaluate("() => Array.from(document.querySelectorAll('section.listing')).filter(s => !s.hidden).map(s => s.dataset.listing)")
    assert shown == ["B0THIEF004"]
    page.fill("#filter-text", "")
    page.fill("#filter-score", "0.95")
    scores = page.evaluate("() => Array.from(document.querySelectorAll('.pair')).filter(p => !p.hidden).map(p => parseFloat(p.dataset.score))")
    assert scores and min(scores) >= 0.95


def test_hostile_strings_never_run(visit, reports):
    page = visit(reports["hostile"] / "index.html")
    assert page.page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.errors == []
    assert page.page.evaluate("() => document.querySelectorAll('script').length") == 1
    assert page.page.evaluate("() => Array.from(document.links).filter(a => !/^(https?|file):/.test(a.protocol)).length") == 0
    text = page.page.inner_text("main")
    assert "<script>window.__pwned = 1</script>Cheap cat print" in text  # shown as what it is: text
    hrefs = page.page.evaluate("() => Array.from(document.links).map(a => a.getAttribute('href'))")
    assert sorted(h for h in hrefs if "://" in h) == [  # their listing's link, and the seller's own listings
        "https://market.example/dp/B0GOOD0001", "https://shop.example/dp/B0OWNCAT01", "https://shop.example/dp/B0OWNCUP01"]
    inside = reports["hostile"].resolve().as_uri()
    assert all(url.startswith(inside) for url in page.requests)


def test_decisions_made_in_the_page_are_applied_by_mark_from(visit, fixtures, script, tmp_path):
    """A nightly report: the seller decides per pair in the page (no server), exports the
    decisions as one JSON file, and `imguard mark --from` applies them."""
    shutil.copytree(fixtures.catalog, tmp_path / "catalog")
    shutil.copytree(fixtures.competitors / "B0THIEF002", tmp_path / "competitors" / "B0THIEF002")
    (tmp_path / "imguard.toml").write_text('catalog = "catalog"\ndb = "guard"\nreport = "report"\njobs = 1\n'
                                           '[[source]]\nname = "shops"\npath = "competitors"\n', encoding="utf-8")
    done = run_script(script, tmp_path, "nightly", "--config", "imguard.toml", "--quiet", "--format", "json")
    assert done.returncode == 0, done.stderr
    found = {f["id"]: os.path.basename(f["query"]) for f in json.loads(done.stdout)["new"]}
    page = visit(tmp_path / "report" / "index.html").page
    statuses = page.evaluate("() => Array.from(document.querySelectorAll('.pair')).map(p => p.dataset.status)")
    assert statuses == ["new"] * len(found)
    first, second = sorted(found)[:2]
    page.click(f".pair[data-finding='{first}'] button[data-mark='reported']")
    page.click(f".pair[data-finding='{second}'] button[data-mark='not-a-copy']")
    assert page.inner_text(f".pair[data-finding='{second}'] .chosen") == "not-a-copy"
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "decisions.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())["decisions"] == [{"finding": first, "mark": "reported"},
                                                             {"finding": second, "mark": "not-a-copy"}]
    done = run_script(script, tmp_path, "mark", "--from", str(exported), "--db", "guard")
    assert done.returncode == 0 and "2 decisions applied" in done.stdout
    done = run_script(script, tmp_path, "findings", "--db", "guard", "--format", "json")
    marks = {f["id"]: f["mark"] for f in json.loads(done.stdout)}
    assert marks[first] == "reported" and marks[second] == "not-a-copy"
