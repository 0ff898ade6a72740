"""Composites and siblings: a collage holds two catalog images, a catalog holds a photo and its
zoomed detail. Each copied picture is found in its own place; each copy is explained by the
catalog image it came from, not by a near-copy of it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

import imguard
from imguard import hashing

import make_fixtures
from conftest import by_query
from imguard_cli.main import app

GAP = 40  # white pixels around and between the collage's cells


def _collage(left: Image.Image, right: Image.Image, height: int = 360) -> tuple[Image.Image, list[tuple]]:
    """`left` and `right` side by side on white, each `height` px high; their boxes."""
    cells = [im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS) for im in (left, right)]
    width = GAP * 3 + sum(c.width for c in cells)
    canvas = Image.new("RGB", (width, height + 2 * GAP), "white")
    boxes, x = [], GAP
    for cell in cells:
        canvas.paste(cell, (x, GAP))
        boxes.append((x, GAP, x + cell.width, GAP + height))
        x += cell.width + GAP
    return canvas, boxes


@pytest.fixture(scope="module")
def collage(fixtures, tmp_path_factory):
    with Image.open(fixtures.catalog / "chelsea.jpg") as a, Image.open(fixtures.catalog / "rocket.jpg") as b:
        image, boxes = _collage(a.convert("RGB"), b.convert("RGB"))
    path = tmp_path_factory.mktemp("collage") / "collage of two.jpg"
    image.save(path, quality=88)
    return path, boxes


def test_regions_are_the_cells_of_a_collage(collage):
    path, boxes = collage
    with Image.open(path) as image:
        found = hashing.regions(np.asarray(image.convert("RGB")))
    for box in boxes:
        assert max(hashing.iou(box, f) for f in found) >= 0.9, (box, found)


def test_a_plain_photo_has_no_regions(fixtures):
    with Image.open(fixtures.catalog / "astronaut.png") as image:
        assert hashing.regions(np.asarray(image.convert("RGB"))) == []


# Nine real photos for a "shop the look" tile: eight that are no catalog image, then chelsea.jpg.
GRID_FILLERS = ["camera.png", "coins.png", "moon.png", "brick.png", "gravel.png", "page.png",
                "retina.jpg", "hubble_deep_field.jpg"]


def _grid(fixtures, gap: int, cell: int = 200) -> tuple[Image.Image, list[tuple]]:
    """A 3 × 3 grid of `cell` px pictures, `gap` px of white between and around them, the
    catalog's chelsea.jpg in the last cell (centre-cropped to a square, as tiles are); its boxes."""
    pictures = [Image.open(make_fixtures.skimage_data_dir() / name) for name in GRID_FILLERS]
    pictures.append(Image.open(fixtures.catalog / "chelsea.jpg"))
    side = 3 * cell + 4 * gap
    canvas = Image.new("RGB", (side, side), "white")
    boxes = []
    for k, picture in enumerate(pictures):
        square = min(picture.size)
        left, top = (picture.width - square) // 2, (picture.height - square) // 2
        tile = picture.convert("RGB").crop((left, top, left + square, top + square)).resize((cell, cell))
        x, y = gap + (k % 3) * (cell + gap), gap + (k // 3) * (cell + gap)
        canvas.paste(tile, (x, y))
        boxes.append((x, y, x + cell, y + cell))
        picture.close()
    return canvas, boxes


@pytest.mark.parametrize("gap", [0, 10])
def test_every_cell_of_a_3x3_grid_is_a_region_gaps_or_not(fixtures, gap):
    image, boxes = _grid(fixtures, gap)
    found = hashing.regions(np.asarray(image))
    for box in boxes:
        assert max(hashing.iou(box, f) for f in found) >= 0.8, (box, found)


def test_no_photo_of_the_fixtures_is_taken_for_a_grid(fixtures):
    for path in [*sorted(fixtures.catalog.glob("*.*g")), *fixtures.competitor_files]:
        if path.suffix.lower() in (".jpg", ".png", ".webp"):
            with Image.open(path) as image:
                assert hashing.grid_cells(np.asarray(image.convert("RGB"))) == [], path.name


@pytest.mark.parametrize("gap", [0, 10])
def test_a_photo_in_the_last_cell_of_a_3x3_grid_is_found(fixtures, indexed, tmp_path, gap):
    image, boxes = _grid(fixtures, gap)
    path = tmp_path / f"shop the look {gap}.jpg"
    image.save(path, quality=88)
    matches = [m for m in indexed.scan(path, jobs=1) if os.path.basename(m.reference) == "chelsea.jpg"]
    assert matches and matches[0].kind == "copy", [(m.reference, m.score) for m in indexed.scan(path, threshold=0, jobs=1)]
    assert hashing.iou(matches[0].explanation.query_region, boxes[-1]) >= 0.7, matches[0].explanation


def test_both_pictures_of_a_collage_are_found_each_in_its_place(indexed, collage):
    path, (left, right) = collage
    matches = list(indexed.scan(path, jobs=1))
    where = {os.path.basename(m.reference): m.explanation.query_region for m in matches}
    assert set(where) == {"chelsea.jpg", "rocket.jpg"}, [(m.reference, m.score) for m in matches]
    assert hashing.iou(where["chelsea.jpg"], left) >= 0.8, where
    assert hashing.iou(where["rocket.jpg"], right) >= 0.8, where
    for m in matches:
        assert 0 < m.explanation.coverage < 0.8  # each explains only its part of the collage


def test_the_cli_explains_each_picture_of_a_collage(indexed, collage):
    path, _ = collage
    runner = CliRunner()
    db = str(indexed.folder)
    result = runner.invoke(app, ["scan", str(path), "--db", db, "--format", "json", "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    matches = json.loads(result.stdout)["matches"]
    assert sorted(os.path.basename(m["reference"]) for m in matches) == ["chelsea.jpg", "rocket.jpg"]
    assert all(0 < m["explanation"]["coverage"] < 0.8 for m in matches)
    table = runner.invoke(app, ["scan", str(path), "--db", db, "--quiet", "--jobs", "1"], env={"COLUMNS": "240"})
    assert table.exit_code == 0 and table.stdout.count("of their picture") == 2, table.stdout


@pytest.fixture(scope="module")
def with_detail(fixtures, tmp_path_factory):
    """The fixture catalog plus a zoomed detail of coffee.jpg (its centre, a quarter of the area)
    and a composite of two of its photos (chelsea.jpg and rocket.jpg side by side)."""
    images = tmp_path_factory.mktemp("with-detail")
    for name in fixtures.catalog_names:
        shutil.copyfile(fixtures.catalog / name, images / name)
    with Image.open(fixtures.catalog / "chelsea.jpg") as a, Image.open(fixtures.catalog / "rocket.jpg") as b:
        _collage(a.convert("RGB"), b.convert("RGB"))[0].save(images / "set.jpg", quality=92)
    with Image.open(fixtures.catalog / "coffee.jpg") as image:
        w, h = image.size
        image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize((w, h), Image.Resampling.LANCZOS).save(
            images / "coffee_detail.jpg", quality=92)
    catalog = imguard.Catalog.open(tmp_path_factory.mktemp("guard-detail"))
    assert catalog.add(images, jobs=1).added == len(fixtures.catalog_names) + 2
    yield catalog
    catalog.close()


@pytest.mark.parametrize("name", ["coffee__png.png", "coffee__letterbox.jpg", "coffee__text.jpg"])
def test_a_copy_of_the_photo_is_explained_by_the_photo_not_by_its_detail(fixtures, with_detail, name):
    matches = list(with_detail.scan(fixtures.competitor(name), threshold=0, jobs=1))
    assert os.path.basename(matches[0].reference) == "coffee.jpg", [(m.reference, m.score) for m in matches]
    assert all(os.path.basename(m.reference) != "coffee_detail.jpg" for m in matches)
    assert matches[0].explanation.coverage >= 0.8


def test_a_copy_of_the_detail_is_explained_by_the_detail(fixtures, with_detail, tmp_path):
    with Image.open(fixtures.catalog / "coffee.jpg") as image:
        w, h = image.size
        copy = image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize((w // 2 + 40, h // 2 + 30))
    copy.save(tmp_path / "detail copy.jpg", quality=80)
    grouped = by_query(list(with_detail.scan(tmp_path / "detail copy.jpg", jobs=1)))
    first = grouped["detail copy.jpg"][0]
    # coffee.jpg holds the same pixels enlarged less; the detail is the image actually copied
    assert os.path.basename(first.reference) == "coffee_detail.jpg", grouped
    assert first.score >= imguard.DEFAULT_THRESHOLD


@pytest.mark.parametrize("gap", [0, 10])
def test_the_detail_in_a_grid_is_explained_by_the_detail(fixtures, with_detail, tmp_path, gap):
    """The detail, shrunk into a cell of a tile: coffee.jpg explains that cell as well as the
    detail does (its middle, at twice the scale), but the copy shows all of the detail and only a
    quarter of the photo: the detail is the picture copied."""
    image, boxes = _grid(fixtures, gap)
    with Image.open(fixtures.catalog / "coffee.jpg") as photo:
        w, h = photo.size
        detail = photo.convert("RGB").crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    x0, y0, x1, y1 = boxes[4]
    image.paste(detail.resize((x1 - x0, y1 - y0)), (x0, y0))
    image.save(tmp_path / "tile.jpg", quality=88)
    matches = [m for m in with_detail.scan(tmp_path / "tile.jpg", jobs=1) if hashing.iou(m.explanation.query_region, boxes[4]) >= 0.5]
    assert [os.path.basename(m.reference) for m in matches] == ["coffee_detail.jpg"], [(m.reference, m.score) for m in matches]

    # Had the photo verified a little better in that cell (it can: it shows those pixels at twice
    # the detail's scale), the detail, shown whole, must still be the one reported...
    from imguard import scan

    detail = matches[0]
    photo = dataclasses.replace(detail, reference="coffee.jpg", score=detail.score + 0.03,
                                evidence=dataclasses.replace(detail.evidence, reference_sha256="other"),
                                explanation=dataclasses.replace(detail.explanation, reference_share=0.25))
    assert scan.select([photo, detail], 0.5, None) == [detail]
    # ...but not a picture shown only mostly: a tight crop of the photo shows most of a detail too.
    most = dataclasses.replace(detail, explanation=dataclasses.replace(detail.explanation, reference_share=0.75))
    assert scan.select([photo, most], 0.5, None) == [photo]


def test_a_listing_screenshot_of_the_photo_is_explained_by_the_photo_not_by_its_detail(fixtures, with_detail, tmp_path):
    """A marketplace page showing coffee.jpg as its main image, beside a title, buttons and text:
    the photo covers a small share of the page, and its detail a smaller one inside it. The
    photo, which explains more of the page as well, is the one reported."""
    page = Image.new("RGB", (1280, 820), "white")
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 1280, 60), fill=(35, 47, 62))
    for row in range(12):  # lines of text: a title, a price, bullet points
        draw.rectangle((640, 120 + 40 * row, 640 + 520 - 23 * (row % 5), 136 + 40 * row), fill=(60, 60, 60))
    draw.rounded_rectangle((640, 640, 900, 690), 12, fill=(255, 164, 28))
    with Image.open(fixtures.catalog / "coffee.jpg") as photo:
        main = photo.convert("RGB").resize((460, round(460 * photo.height / photo.width)), Image.Resampling.LANCZOS)
    page.paste(main, (80, 110))
    page.save(tmp_path / "listing.jpg", quality=85)
    box = (80, 110, 80 + main.width, 110 + main.height)
    everything = list(with_detail.scan(tmp_path / "listing.jpg", jobs=1))
    inside = [m for m in everything if hashing.overlap(m.explanation.query_region, box) >= 0.7 * hashing.area(m.explanation.query_region)]
    assert [os.path.basename(m.reference) for m in inside][:1] == ["coffee.jpg"], [(m.reference, m.score) for m in everything]
    matches = [m for m in inside if hashing.iou(m.explanation.query_region, box) >= 0.5]

    # Had the detail verified a little better in its part of the main image, the photo, which
    # explains twice its share of the page and agrees as well, must still come first.
    from imguard import scan

    found = matches[0]
    explanation = found.explanation
    detail = dataclasses.replace(found, reference="coffee_detail.jpg", score=found.score + 0.01,
                                 evidence=dataclasses.replace(found.evidence, reference_sha256="other"),
                                 explanation=dataclasses.replace(explanation, coverage=explanation.coverage / 2))
    assert explanation.coverage / 2 < scan.SIBLING_COVERAGE  # the difference alone would not tell
    assert scan.select([detail, found], 0.5, None)[0] is found


def test_a_copy_of_a_composite_is_explained_by_the_composite_not_by_its_parts(fixtures, with_detail, tmp_path):
    """set.jpg holds rocket.jpg whole: the copy's rocket half matches both, and its keypoints may
    verify the half better than the whole. The whole, which explains all of the copy, is kept."""
    with Image.open(fixtures.catalog / "chelsea.jpg") as a, Image.open(fixtures.catalog / "rocket.jpg") as b:
        image = _collage(a.convert("RGB"), b.convert("RGB"))[0]
    image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS).save(
        tmp_path / "set copy.jpg", quality=80)
    matches = list(with_detail.scan(tmp_path / "set copy.jpg", jobs=1))
    assert [os.path.basename(m.reference) for m in matches] == ["set.jpg"], [(m.reference, m.score) for m in matches]
    assert matches[0].explanation.coverage >= 0.9


def test_a_banner_thinner_than_a_block_is_scanned_without_error(fixtures, indexed, tmp_path):
    """A 40:1 strip has a canonical view 512 × 12: fewer rows than one verification block."""
    with Image.open(fixtures.catalog / "rocket.jpg") as image:
        strip = image.convert("RGB").crop((0, 200, image.width, 216)).resize((1600, 40))
    strip.save(tmp_path / "banner.jpg", quality=90)
    run = indexed.scan(tmp_path / "banner.jpg", threshold=0, jobs=1)
    list(run)
    assert not run.errors and run.stats["queries"] == 1


def test_a_sibling_under_the_threshold_does_not_hide_one_above_it(fixtures, with_detail):
    """Of the photo and its zoomed detail, the photo explains more of a copy and hides the
    detail. Were the photo's own score under the threshold, the detail must still be reported."""
    from imguard import scan

    everything = list(with_detail.scan(fixtures.competitor("coffee__png.png"), threshold=0, jobs=1))
    photo = next(m for m in everything if os.path.basename(m.reference) == "coffee.jpg")
    detail = dataclasses.replace(photo, reference="coffee_detail.jpg", score=0.8,
                                 evidence=dataclasses.replace(photo.evidence, reference_sha256="other"),
                                 explanation=dataclasses.replace(photo.explanation, coverage=0.3))
    weak_photo = dataclasses.replace(photo, score=0.7)
    assert scan.select([weak_photo, detail], 0.5, None) == [weak_photo]  # the photo explains more
    assert scan.select([weak_photo, detail], 0.75, None) == [detail]
    assert scan.select([weak_photo, detail], 0.9, None) == []


@pytest.mark.parametrize("threshold", [imguard.DEFAULT_THRESHOLD, 0.9])
def test_weak_verifications_left_unexplained_change_nothing_reported(fixtures, indexed, threshold):
    """Verifications under the threshold are not explained (`Matcher._verified`): every
    competitor fixture reports the very same matches as when all are explained."""
    queries = [imguard.Record(str(p)) for p in fixtures.competitor_files]
    lean = indexed.matcher(threshold=threshold)
    full = indexed.matcher(threshold=threshold)
    full.explains_from = 0.0
    reported = [[o.matches for o in m.match_chunk(queries)] for m in (lean, full)]
    assert reported[0] == reported[1]
    assert any(reported[0])
    assert all(m.explanation.query_region != (0, 0, 0, 0) for matches in reported[0] for m in matches)


def test_two_verifications_of_one_image_keep_the_better_one_above_the_threshold(fixtures, with_detail):
    """A catalog image verified twice (from a hash hit on the whole query, then from keypoints
    on a part of it): the one explaining more of the query is kept, unless it falls under the
    threshold while the other is above it."""
    from imguard import scan

    found = list(with_detail.scan(fixtures.competitor("coffee__png.png"), threshold=0, jobs=1))
    whole = next(m for m in found if os.path.basename(m.reference) == "coffee.jpg")
    part = dataclasses.replace(whole, score=whole.score - 0.1,
                               explanation=dataclasses.replace(whole.explanation, coverage=whole.explanation.coverage - 0.5))
    threshold = 0.45  # between the weak verification (0.4) and the part's score (>= 0.5)
    matcher = scan.Matcher(None, "", threshold=threshold)

    def kept(*verifications: imguard.Match) -> imguard.Match:
        query = scan._Query(imguard.Record(whole.query), b"", (None, None), None, None, [])
        for match in verifications:
            matcher._keep(query, 1, match)
        return query.results[1]

    assert whole.score >= threshold + 0.15 and whole.explanation.coverage >= 0.6, whole
    assert kept(part, whole) is whole and kept(whole, part) is whole  # explains more, in either order
    sharper_part = dataclasses.replace(part, score=min(1.0, whole.score + 0.05))
    assert kept(whole, sharper_part) is whole  # a slightly higher score does not outweigh coverage
    weak_whole = dataclasses.replace(whole, score=0.4)
    assert kept(part, weak_whole) is part  # under the threshold, it does not replace one above it
    assert kept(weak_whole, part) is part
    # ...even when, close under the threshold, it explains more than the one above it
    near_whole, passing_part = dataclasses.replace(whole, score=0.44), dataclasses.replace(part, score=0.5)
    assert kept(near_whole, passing_part) is passing_part and kept(passing_part, near_whole) is passing_part
    assert kept(dataclasses.replace(part, score=0.3), weak_whole) is weak_whole  # both under: the better
