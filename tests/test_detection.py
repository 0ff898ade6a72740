"""Finding copies: every edit family of the fixtures is found, with the right source first, and
unrelated photos and look-alikes are not; explanations say what the copy did."""

from __future__ import annotations

import os

import pytest

import imguard
from make_fixtures import COPIES, LOOK_ALIKES, ROTATION, UNRELATED, competitor_name, look_alike_name

from conftest import by_query

COPY_NAMES = [competitor_name(source, family, ext) for source, family, ext in COPIES]
UNRELATED_NAMES = [f"unrelated__{os.path.splitext(source)[0]}.{ext}" for source, ext in UNRELATED]
LOOK_ALIKE_NAMES = [look_alike_name(source, ext) for source, _, ext in LOOK_ALIKES]


def base(path: str) -> str:
    return os.path.basename(path)


def best(default_scan, name: str) -> imguard.Match:
    matches = by_query(default_scan).get(name)
    assert matches, f"{name}: no match at the default threshold"
    return matches[0]


def close(box, expected, width: int, height: int, share: float) -> bool:
    """Every edge of `box` within `share` of the image's size of the edge in `expected`."""
    x0, y0, x1, y1 = box
    e0, f0, e1, f1 = expected
    dx, dy = share * width, share * height
    return abs(x0 - e0) <= dx and abs(x1 - e1) <= dx and abs(y0 - f0) <= dy and abs(y1 - f1) <= dy


def test_fixture_names_are_what_the_tests_expect(fixtures):
    assert set(COPY_NAMES) | set(UNRELATED_NAMES) | set(LOOK_ALIKE_NAMES) == set(fixtures.expected)
    assert sorted(p.name for p in fixtures.competitor_files) == sorted(fixtures.expected)


@pytest.mark.parametrize("name", COPY_NAMES)
def test_copy_is_found_with_its_source_first(fixtures, default_scan, name):
    source = fixtures.expected[name]
    matches = by_query(default_scan).get(name, [])
    assert matches, f"{name}: copy of {source} not found at the default threshold"
    assert base(matches[0].reference) == source, [(base(m.reference), m.score) for m in matches]
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert all(imguard.DEFAULT_THRESHOLD <= s <= 1 for s in scores)
    assert matches[0].evidence.reference_sha256 and matches[0].evidence.query_sha256


@pytest.mark.parametrize("name", UNRELATED_NAMES + LOOK_ALIKE_NAMES)
def test_a_photo_that_must_not_match_has_none(default_scan, name):
    matches = by_query(default_scan).get(name, [])
    assert not matches, [(base(m.reference), m.score, m.matched_by) for m in matches]


def test_byte_identical_copy(fixtures, default_scan):
    match = best(default_scan, "astronaut__exact.png")
    assert match.score == 1.0 and match.matched_by == "sha256"
    assert match.evidence.query_sha256 == match.evidence.reference_sha256
    assert match.distance == 0
    others = [m for m in default_scan if m.matched_by == "sha256" and base(m.query) != "astronaut__exact.png"]
    assert not others, "only the byte-identical copy may match by sha256"


def test_mirrored_copies_are_explained_as_mirrored(fixtures, default_scan):
    mirrored = {"astronaut__mirror.jpg", "chelsea__combined.jpg"}
    assert mirrored == {n for n in COPY_NAMES if fixtures.params[n]["family"] == "mirror"
                        or fixtures.params[n].get("mirrored")}
    for name in COPY_NAMES:
        assert best(default_scan, name).explanation.mirrored is (name in mirrored), name


def test_a_look_alike_that_fools_hashes_and_ransac_is_rejected(fixtures, indexed):
    """The stereo twin of the catalog's motorcycle: a naive pHash match (4 bits apart) and
    a RANSAC match (about 190 consistent keypoints), yet a different photo. The dense check
    of the aligned pair keeps its score under the default threshold."""
    name = LOOK_ALIKE_NAMES[0]
    resembles = fixtures.params[name]["resembles"]
    candidates = list(indexed.scan(fixtures.competitor(name), threshold=0, jobs=1))
    twin = [m for m in candidates if base(m.reference) == resembles]
    assert twin, [(base(m.reference), m.score) for m in candidates]
    assert twin[0].distances["phash"] <= 10  # what a naive pHash check would report
    assert twin[0].explanation.inliers >= 50  # what RANSAC alone would accept
    assert twin[0].score < imguard.DEFAULT_THRESHOLD  # the dense check's verdict


def test_rotated_copy_reports_the_rotation(default_scan):
    """PIL's rotate(+8) turns the picture 8° counter-clockwise; the explanation uses the same
    convention (degrees, counter-clockwise as seen)."""
    match = best(default_scan, "astronaut__rotate8.jpg")
    assert match.matched_by == "features"
    assert abs(match.explanation.rotation - ROTATION) <= 1.5, match.explanation
    assert match.explanation.inliers > 0
    for name in ("coffee__crop90.jpg", "motorcycle__crop_half.jpg", "chelsea__meme.jpg"):
        assert abs(best(default_scan, name).explanation.rotation) <= 1.5, name


@pytest.mark.parametrize("name", ["coffee__crop90.jpg", "ihc__crop90.png", "motorcycle__crop_half.jpg",
                                  "chelsea__combined.jpg"])
def test_crop_reference_region_covers_the_kept_part(fixtures, default_scan, name):
    match = best(default_scan, name)
    kept = fixtures.params[name]["reference_region"]
    source = fixtures.catalog / fixtures.expected[name]
    from PIL import Image

    with Image.open(source) as image:
        width, height = image.size
    # one 16 px block of the 256 px verification thumbnail is 6.25 % of a side
    assert close(match.explanation.reference_region, kept, width, height, 0.08), (match.explanation, kept)
    x0, y0, x1, y1 = match.explanation.reference_region
    assert (x1 - x0) * (y1 - y0) < 0.95 * width * height  # not the whole picture


@pytest.mark.parametrize("name", ["astronaut__embedded.jpg", "chelsea__meme.jpg"])
def test_pasted_copy_query_region(fixtures, default_scan, name):
    match = best(default_scan, name)
    pasted = fixtures.params[name]["query_region"]
    from PIL import Image

    with Image.open(fixtures.competitor(name)) as image:
        width, height = image.size
    assert close(match.explanation.query_region, pasted, width, height, 0.08), (match.explanation, pasted)


@pytest.mark.parametrize("name,scale", [("chelsea__resize.jpg", 0.6), ("motorcycle__resize.jpg", 0.6),
                                        ("rocket__thumb300.jpg", 300 / 640), ("astronaut__embedded.jpg", 560 / 512)])
def test_scale_is_query_pixels_per_reference_pixel(default_scan, name, scale):
    match = best(default_scan, name)
    assert abs(match.explanation.scale - scale) <= 0.05 * scale, match.explanation


def test_recolour_pair_ranks_the_right_variant(default_scan):
    hue = by_query(default_scan)["coffee_hue__recolour.jpg"]
    assert base(hue[0].reference) == "coffee_hue.jpg"
    for name in ("coffee__png.png", "coffee__crop90.jpg", "coffee__letterbox.jpg"):
        matches = by_query(default_scan)[name]
        assert base(matches[0].reference) == "coffee.jpg", name
        other = [m for m in matches if base(m.reference) == "coffee_hue.jpg"]
        # the other colour may be listed, but below, and with a worse colour agreement
        if other:
            assert other[0].score < matches[0].score
            assert other[0].explanation.colour < matches[0].explanation.colour


def test_threshold_zero_lists_the_candidates_and_unrelated_ones_score_near_zero(fixtures, indexed):
    """Threshold 0 shows every candidate that was verified. Unrelated photos reach few or none
    (the hash and keypoint searches find nothing near), and those that do fail the checks."""
    queries = [fixtures.competitor(n) for n in UNRELATED_NAMES + ["coffee__png.png"]]
    run = indexed.scan(queries, threshold=0, jobs=1)
    found = by_query(list(run))
    assert "coffee__png.png" in found
    for name, matches in found.items():
        scores = [m.score for m in matches]
        assert scores == sorted(scores, reverse=True), name
    assert found["coffee__png.png"][0].score >= imguard.DEFAULT_THRESHOLD
    unrelated = [m.score for name, matches in found.items() if name.startswith("unrelated__") for m in matches]
    assert max(unrelated, default=0.0) < imguard.DEFAULT_THRESHOLD / 4


def test_top_limits_matches_per_query(fixtures, indexed):
    queries = [fixtures.competitor(n) for n in sorted(fixtures.expected)]
    grouped = by_query(list(indexed.scan(queries, threshold=0, jobs=1)))
    several = sorted(name for name, matches in grouped.items() if len(matches) > 1)
    assert several, "precondition: with threshold 0 some query has more than one candidate"
    run = indexed.scan([fixtures.competitor(n) for n in several], threshold=0, top=1, jobs=1)
    limited = by_query(list(run))
    assert set(limited) == set(several)
    for name in several:
        assert len(limited[name]) == 1
        assert limited[name][0].reference == grouped[name][0].reference
        assert limited[name][0].score == grouped[name][0].score


def test_higher_threshold_keeps_a_subset(fixtures, indexed, default_scan):
    queries = [fixtures.competitor(n) for n in ("coffee__png.png", "coffee__text.jpg", "rocket__colour.jpg")]
    strict = list(indexed.scan(queries, threshold=0.9, jobs=1))
    assert all(m.score >= 0.9 for m in strict)
    loose = {(m.query, m.reference) for m in default_scan}
    assert {(m.query, m.reference) for m in strict} <= loose


def test_votes_count_each_query_descriptor_once_per_catalog_image():
    """A descriptor whose k neighbours include several rows of one catalog image votes for it
    once; -1 (no neighbour near enough) votes for nothing."""
    import numpy as np

    from imguard.scan import _votes

    owners = np.array([[7, 7, 3, -1],  # one vote for 7, one for 3
                       [7, -1, -1, -1],  # 7
                       [-1, -1, -1, -1],  # nothing
                       [3, 9, 3, 3],  # 3 and 9
                       [123456789, 7, 7, 7]], np.int64)  # a large id, and 7
    assert _votes(owners) == {7: 3, 3: 2, 9: 1, 123456789: 1}
    assert _votes(np.zeros((0, 4), np.int64)) == {}


def _white_cover(title: list[str]) -> "Image.Image":
    """A book cover as shops photograph it: white on a white background, no border, a picture
    (skimage's coffee) and lines of dark text: the text is thin detail on the background's colour."""
    from PIL import Image, ImageDraw, ImageFont

    import make_fixtures

    cover = Image.new("RGB", (600, 800), "white")
    with Image.open(make_fixtures.skimage_data_dir() / "coffee.png") as picture:
        cover.paste(picture.convert("RGB").resize((240, 180)), (180, 60))
    draw = ImageDraw.Draw(cover)
    try:
        font = ImageFont.load_default(size=34)
    except TypeError:  # Pillow without FreeType's sizes
        font = ImageFont.load_default()
    for k, line in enumerate(title):
        draw.text((60, 300 + k * 62), line, fill=(30, 30, 30), font=font)
    return cover


def test_a_close_crop_of_text_on_a_white_product_is_found_and_other_text_is_not(tmp_path):
    """A crop on the text of a white cover, enlarged: the white around the letters reads as plain
    background and the letters, their edges left out, as nothing; the dense check compares those
    blocks whole, since the copy kept the white there. Another cover's text, in the same layout
    and type, does not agree with it."""
    from PIL import Image

    mine = _white_cover(["The Espresso", "Handbook", "A practical guide to", "brewing, grinding and",
                         "tasting coffee at home", "Second edition", "J. Doe & A. Smith"])
    other = _white_cover(["Cold Brew", "at Home", "Forty recipes for", "summer drinks, iced", "lattes and tonics",
                          "First edition", "M. Roe & B. Lee"])
    mine.save(tmp_path / "cover.png")
    box = (40, 380, 400, 700)
    mine.crop(box).resize((540, 480), Image.Resampling.LANCZOS).save(tmp_path / "crop.jpg", quality=88)
    other.crop(box).resize((540, 480), Image.Resampling.LANCZOS).save(tmp_path / "other.jpg", quality=88)
    catalog = imguard.Catalog.open(tmp_path / "guard")
    catalog.add(tmp_path / "cover.png", jobs=1)
    found = list(catalog.scan(tmp_path / "crop.jpg", jobs=1))
    assert [base(m.reference) for m in found] == ["cover.png"] and found[0].kind == "copy", found
    assert list(catalog.scan(tmp_path / "other.jpg", jobs=1)) == []
    catalog.close()
