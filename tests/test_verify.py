"""The dense check on real photos: a copy framed a few pixels off still verifies, a different
photo does not, and the cached reference canvas is never changed by a check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imguard import fingerprint, load, verify


def _view(path) -> np.ndarray:
    return fingerprint.canonical_view(load.load(path, min_side=512)).rgb


def _canvas(rgb: np.ndarray) -> verify.Canvas:
    return verify.Canvas.of(fingerprint.decode_thumbnail(fingerprint.encode_thumbnail(rgb)))


@pytest.fixture(scope="module")
def rocket(fixtures):
    """The rocket (fine texture: scaffolding, a launch tower) and its copy, resized and re-encoded."""
    reference = _view(fixtures.catalog / "rocket.jpg")
    return reference, _canvas(reference), _view(fixtures.competitor(fixtures.copy_of("rocket.jpg", "webp")))


def _framed(query: np.ndarray, reference: np.ndarray, dx: int, dy: int) -> verify.Alignment:
    """The alignment a hash hit would give if the copy's frame were found `dx`, `dy` pixels off."""
    h, w = query.shape[:2]
    rh, rw = reference.shape[:2]
    return verify.box_alignment((dx, dy, w + dx, h + dy), (w, h), (rw, rh), False)


def test_a_copy_framed_a_few_pixels_off_still_verifies(rocket):
    reference, canvas, query = rocket
    size = (reference.shape[1], reference.shape[0])
    exact = verify.dense_check(canvas, size, query, _framed(query, reference, 0, 0)).score
    off = _framed(query, reference, 3, -2)
    refined = verify.dense_check(canvas, size, query, off)
    # a fit to many keypoints is trusted as it is: the same frame, not refined
    unrefined = verify.dense_check(canvas, size, query, dataclasses.replace(off, inliers=verify.PRECISE_INLIERS))
    assert exact >= 0.8
    assert unrefined.score < exact - 0.15, "precondition: 3 px off decorrelates the fine texture"
    assert refined.score >= exact - 0.05, (refined.score, exact)
    # the refined alignment moved the frame back to about the true one
    true = _framed(query, reference, 0, 0).matrix
    assert abs(refined.alignment.matrix[0, 2] - true[0, 2]) < 1.5 < abs(off.matrix[0, 2] - true[0, 2])
    assert abs(refined.alignment.matrix[1, 2] - true[1, 2]) < 1.5 < abs(off.matrix[1, 2] - true[1, 2])


def test_a_different_photo_does_not_verify(fixtures, rocket):
    reference, canvas, _ = rocket
    other = _view(fixtures.catalog / "motorcycle.jpg")
    size = (reference.shape[1], reference.shape[0])
    check = verify.dense_check(canvas, size, other, _framed(other, reference, 0, 0))
    assert check.score < 0.2


def test_a_check_leaves_the_cached_canvas_unchanged(fixtures):
    """A square canvas is already of an optimal DFT size: OpenCV's phase correlation would
    window it in place."""
    reference = _view(fixtures.catalog / "astronaut.png")
    canvas = _canvas(reference)
    query = _view(fixtures.competitor(fixtures.copy_of("astronaut.png", "exact")))
    before = {f.name: getattr(canvas, f.name).copy() for f in dataclasses.fields(canvas)}
    size = (reference.shape[1], reference.shape[0])
    for dx in (0, 3):
        assert verify.dense_check(canvas, size, query, _framed(query, reference, dx, 1)).score >= 0.8
    for name, array in before.items():
        assert np.array_equal(getattr(canvas, name), array), name


def test_coverage_helpers_on_degenerate_input():
    flat = np.full((64, 96), 200, np.uint8)
    assert len(verify.textured_centres(flat)) == 6 * 4  # a flat picture: every block counts
    assert len(verify.textured_centres(np.zeros((10, 512), np.uint8))) == 1  # thinner than a block
    points = np.array([[10.0, 10.0], [50.0, 50.0]], np.float32)
    assert verify.share_inside(points, np.zeros((4, 2))) == 0.0  # covered nothing
    square = np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float)
    assert verify.share_inside(points, square) == 0.5


def test_a_query_image_mirror_is_the_picture_flipped_left_to_right(rocket):
    _, _, query = rocket
    kept = verify.QueryImage(query[5:, 3:])  # a view, not a contiguous array
    assert kept.oriented(False) is kept.rgb
    assert np.array_equal(kept.oriented(True), query[5:, 3:][:, ::-1])
    assert kept.oriented(True) is kept.oriented(True) and not kept.oriented(True).flags.writeable


def test_near_scales_share_one_shrunk_copy_that_keeps_the_detail_asked_for(rocket):
    """References ask for slightly different shrinks of a query (thumbnails differ in shape):
    those within one step share one copy, which is never smaller than asked."""
    _, _, query = rocket
    kept = verify.QueryImage(query)
    first, used = kept.shrunk(False, 0.5)
    for scale in (0.47, 0.49, 0.5):
        again, used_again = kept.shrunk(False, scale)
        assert again is first and used_again == used and used_again >= scale - 0.01
    smaller, used_smaller = kept.shrunk(False, 0.4)
    assert smaller is not first and 0.39 <= used_smaller < used
    assert kept.shrunk(True, 0.5)[0] is not first  # the mirror image has its own


def test_a_query_image_checked_against_many_references_gives_each_a_fresh_result(fixtures, rocket):
    """The mirror image and the shrunk copies a QueryImage keeps for its next candidates change
    no check: each equals a check of the bare array, in either orientation and at any scale."""
    reference, canvas, query = rocket
    size = (reference.shape[1], reference.shape[0])
    other = _view(fixtures.catalog / "motorcycle.jpg")
    other_canvas = _canvas(other)
    kept = verify.QueryImage(query)
    cases = [(canvas, size, _framed(query, reference, dx, 0)) for dx in (0, 3)]
    cases.append((other_canvas, (other.shape[1], other.shape[0]), _framed(query, other, 0, 0)))
    mirrored = _framed(query, reference, 0, 0)
    cases.append((canvas, size, dataclasses.replace(mirrored, mirrored=True)))
    cases.append((canvas, size, dataclasses.replace(mirrored, matrix=mirrored.matrix * [[0.5], [0.5]])))
    for target, target_size, alignment in cases * 2:
        cached = verify.dense_check(target, target_size, kept, alignment)
        fresh = verify.dense_check(target, target_size, query.copy(), alignment)
        assert (cached.score, cached.blocks, cached.covered) == (fresh.score, fresh.blocks, fresh.covered)
        assert np.array_equal(cached.alignment.matrix, fresh.alignment.matrix)
    assert 0 < len(kept._shrunk) <= verify.QueryImage.CACHED and kept._mirror is not None
