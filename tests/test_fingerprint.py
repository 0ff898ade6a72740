"""Images → fingerprints: canonical views (trimming), hashes, ORB features, and the reduced decode."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

import imguard
from imguard import features, fingerprint, hashing, load

FULL = 10**9  # min_side that asks for a full decode


def full_decode_hashes(path) -> tuple[fingerprint.View, dict[str, bytes]]:
    """Hashes of the canonical view computed from a full-size decode of the file."""
    with open(path, "rb") as handle:
        decoded = load.decode(handle.read(), str(path), FULL)
    view = fingerprint.canonical_view(decoded)
    return view, hashing.global_hashes(view.grey)


@pytest.mark.parametrize("with_features, max_bits, box_share", [(True, 6, 0.01), (False, 8, 0.03)])
def test_reduced_decode_hashes_agree_with_full_decode(fixtures, with_features, max_bits, box_share):
    """The full fingerprint decodes at the 512 px draft, hashes alone at 1/8 (a 128 px view):
    both hash like a full decode, within a few bits. At 1/8 a pixel of the trim is 8 of the
    original, and a soft edge (motion blur) moves by a few of them."""
    side = features.FEATURE_SIDE if with_features else fingerprint.HASH_SIDE
    paths = [fixtures.catalog / name for name in fixtures.catalog_names] + fixtures.competitor_files
    reduced = 0
    for path in paths:
        fp = imguard.fingerprint_file(str(path), with_features=with_features)
        decoded = load.load(str(path), side)
        full_view, full = full_decode_hashes(path)
        if max(decoded.rgb.shape[:2]) < max(fp.width, fp.height):
            reduced += 1
        for name in ("phash", "dhash"):
            bits = hashing.hamming(fp.hashes[name], full[name])
            assert bits <= max_bits, f"{path.name}: {name} of the reduced decode is {bits} bits from the full decode"
        # the trim box found on the reduced decode is, in original pixels, the full decode's
        assert np.abs(np.subtract(fp.box, full_view.box)).max() <= max(fp.width, fp.height) * box_share + 2
    assert reduced >= (2 if with_features else 10), "too few fixtures decoded at reduced size: proves nothing"


def test_canonical_view_long_side(fixtures):
    for name in ("motorcycle.jpg", "chelsea.jpg"):
        decoded = load.load(str(fixtures.catalog / name), features.FEATURE_SIDE)
        view = fingerprint.canonical_view(decoded)
        assert max(view.rgb.shape[:2]) == features.FEATURE_SIDE  # shrunk, or brought up to it
        h, w = view.rgb.shape[:2]
        assert abs(w / h - decoded.width / decoded.height) < 0.01  # aspect ratio kept


@pytest.mark.parametrize("family", ["pad_white", "letterbox"])
def test_trimming_recovers_the_content_box(fixtures, family):
    name = {"pad_white": "chelsea__pad_white.png", "letterbox": "coffee__letterbox.jpg"}[family]
    params = fixtures.params[name]
    assert params["family"] == family
    decoded = load.load(str(fixtures.competitor(name)), features.FEATURE_SIDE)
    view = fingerprint.canonical_view(decoded)
    side = max(decoded.width, decoded.height)
    tolerance = max(4, round(0.02 * side))
    assert np.abs(np.subtract(view.box, params["content_box"])).max() <= tolerance, (view.box, params)
    # and the trimmed copy hashes like the original
    padded = imguard.fingerprint_file(str(fixtures.competitor(name)), with_features=False)
    original = imguard.fingerprint_file(str(fixtures.catalog / params["source"]), with_features=False)
    assert hashing.hamming(padded.hashes["phash"], original.hashes["phash"]) <= 8


def test_trim_box_of_unpadded_photo_is_the_whole_image(fixtures):
    decoded = load.load(str(fixtures.catalog / "chelsea.jpg"), features.FEATURE_SIDE)
    assert hashing.trim_box(decoded.rgb) == (0, 0, decoded.rgb.shape[1], decoded.rgb.shape[0])


def test_border_helpers_agree_with_plain_numpy(fixtures):
    """The trim's median colour and near-uniform tests give plain numpy's answers, on a real
    photo's rows and columns, odd and even counts, one colour or one per line, colours near
    the ends of the range."""
    rgb = load.load(str(fixtures.catalog / "chelsea.jpg"), 128).rgb
    # A grey border whose lines hold 0 to 12 of the photo's pixels out of 100, and one grey just
    # inside or just outside the tolerance, above or below: both sides of both limits.
    border = np.full((52, 100, 3), 200, np.uint8)
    offsets = (-hashing.TRIM_TOLERANCE, -hashing.TRIM_TOLERANCE - 1, hashing.TRIM_TOLERANCE, hashing.TRIM_TOLERANCE + 1)
    for line in range(52):
        count = line % 13
        border[line, :count] = rgb[count, :count]
        border[line, -1] = 200 + offsets[line // 13]

    def near(lines, colour):
        close = (np.abs(lines.astype(int) - colour).max(axis=-1) <= hashing.TRIM_TOLERANCE).mean(axis=1)
        return close >= hashing.TRIM_SHARE

    # Lines near colours at the ends of the range, where the tolerance is clipped to 0..255.
    steps = np.arange(-16, 17)[:, None, None]
    saturated = np.clip(np.array([5, 250, 0]) + steps * np.ones((1, 9, 3), int), 0, 255).astype(np.uint8)
    for lines in (rgb, rgb[:, :-1], rgb.transpose(1, 0, 2), rgb[::-1], border, border[:, 1:], saturated):
        for axis in (0, 1):
            assert np.array_equal(hashing._median_colour(lines, axis), np.floor(np.median(lines, axis=axis)))
        per_line = hashing._median_colour(lines, axis=1)[:, None, :]
        assert np.array_equal(hashing._near_each(lines, per_line), near(lines, per_line))
        for colour in (hashing._median_colour(lines[0]), np.array([5, 250, 0]), np.array([250, 250, 250])):
            assert np.array_equal(hashing._in_range(lines, *hashing._tolerance_range(colour)), near(lines, colour))


def test_trim_box_keeps_a_blank_picture():
    blank = np.full((120, 200, 3), 255, np.uint8)
    assert hashing.trim_box(blank) == (0, 0, 200, 120)


def test_trim_box_edges_to_the_pixel():
    """The grid finds the borders; each edge is then exact, at any size, smaller than the grid too."""
    rng = np.random.default_rng(1)
    for (height, width), pad in (((800, 1000), 37), ((90, 127), 4), ((1500, 1100), 61)):
        image = np.full((height, width, 3), 255, np.uint8)
        image[pad:height - pad, pad:width - pad] = rng.integers(0, 256, (height - 2 * pad, width - 2 * pad, 3))
        assert hashing.trim_box(image) == (pad, pad, width - pad, height - pad)


def test_trim_box_of_a_gradient_banner_is_never_empty():
    """On a smooth gradient every line looks like padding next to its neighbour: the edges must
    not pass each other (a wide banner once trimmed to nothing, and OpenCV failed on the crop)."""
    for height in (40, 72, 120, 196):
        ramp = np.linspace(200, 255, height).astype(np.uint8)
        banner = np.repeat(np.repeat(ramp[:, None, None], 1200, axis=1), 3, axis=2)
        x0, y0, x1, y1 = hashing.trim_box(banner)
        assert x1 - x0 >= hashing.MIN_KEPT * 1200 and y1 - y0 >= hashing.MIN_KEPT * height, (height, (x0, y0, x1, y1))


def test_trim_box_nested_padding():
    """A coloured pad around a white background around the content: both removed."""
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400, 3), np.uint8)
    image[:] = (200, 30, 30)
    image[20:280, 20:380] = 255
    image[60:240, 100:300] = rng.integers(0, 256, (180, 200, 3), dtype=np.uint8)
    x0, y0, x1, y1 = hashing.trim_box(image)
    assert abs(x0 - 100) <= 4 and abs(y0 - 60) <= 4 and abs(x1 - 300) <= 4 and abs(y1 - 240) <= 4


def test_fingerprint_fields(fixtures):
    path = fixtures.catalog / "chelsea.jpg"
    data = path.read_bytes()
    fp = imguard.fingerprint_file(str(path))
    with Image.open(path) as image:
        size = image.size
    assert fp.sha256 == hashlib.sha256(data).hexdigest()
    assert fp.nbytes == len(data)
    assert (fp.width, fp.height) == size
    assert fp.box == (0, 0, size[0], size[1])
    assert max(fp.view_size) == features.FEATURE_SIDE
    assert set(fp.hashes) == {"phash", "dhash", "phash_mirror", "dhash_mirror"}
    assert all(isinstance(v, bytes) and len(v) == 8 for v in fp.hashes.values())
    assert fp.descriptors.dtype == np.uint8 and fp.descriptors.ndim == 2
    assert fp.descriptors.shape[1] == 32  # 256-bit ORB descriptors
    assert 100 <= len(fp.descriptors) <= features.N_FEATURES
    assert fp.keypoints.shape == (len(fp.descriptors), 2) and fp.keypoints.dtype == np.float32
    w, h = fp.view_size
    assert (fp.keypoints[:, 0] >= 0).all() and (fp.keypoints[:, 0] < w).all()
    assert (fp.keypoints[:, 1] >= 0).all() and (fp.keypoints[:, 1] < h).all()
    assert fp.thumbnail is None


def test_fingerprint_is_deterministic_and_thumbnail(fixtures):
    path = str(fixtures.catalog / "coffee.jpg")
    a = imguard.fingerprint_file(path, with_thumbnail=True)
    b = imguard.fingerprint_file(path, with_thumbnail=True)
    assert a.hashes == b.hashes
    assert np.array_equal(a.descriptors, b.descriptors) and np.array_equal(a.keypoints, b.keypoints)
    assert a.thumbnail[:2] == b"\xff\xd8"  # a JPEG
    thumb = fingerprint.decode_thumbnail(a.thumbnail)
    assert max(thumb.shape[:2]) == fingerprint.THUMB_SIDE
    assert abs(thumb.shape[1] / thumb.shape[0] - a.view_size[0] / a.view_size[1]) < 0.02


def test_no_features_when_not_asked(fixtures):
    fp = imguard.fingerprint_file(str(fixtures.catalog / "coffee.jpg"), with_features=False)
    assert fp.descriptors.shape == (0, 32) and fp.keypoints.shape == (0, 2)


def test_mirror_hashes(fixtures):
    original = imguard.fingerprint_file(str(fixtures.catalog / "astronaut.png"), with_features=False)
    mirrored = imguard.fingerprint_file(str(fixtures.competitor("astronaut__mirror.jpg")), with_features=False)
    for name in ("phash", "dhash"):
        assert hashing.hamming(mirrored.hashes[f"{name}_mirror"], original.hashes[name]) <= 6
        assert hashing.hamming(mirrored.hashes[name], original.hashes[name]) > 16


def test_hashes_separate_unrelated_photos(fixtures):
    a = imguard.fingerprint_file(str(fixtures.catalog / "astronaut.png"), with_features=False)
    b = imguard.fingerprint_file(str(fixtures.competitor("unrelated__camera.png")), with_features=False)
    assert hashing.hamming(a.hashes["phash"], b.hashes["phash"]) > 18


def test_hamming():
    assert hashing.hamming(b"\x00" * 8, b"\xff" * 8) == 64
    assert hashing.hamming(b"\x0f" * 8, b"\x0f" * 8) == 0
    assert hashing.hamming(b"\x01" + b"\x00" * 7, b"\x00" * 8) == 1
    assert hashing.hamming(b"\x80" + b"\x00" * 30 + b"\x01", b"\x00" * 32) == 2  # a descriptor's length
    with pytest.raises(ValueError):
        hashing.hamming(b"\x00" * 8, b"\x00" * 7)


def test_hashes_are_imagehash_bit_for_bit(fixtures):
    """imguard's NumPy pHash/dHash are imagehash's, on the same shrunk input."""
    import imagehash

    for path in [fixtures.catalog / name for name in fixtures.catalog_names]:
        grey = fingerprint.canonical_view(load.load(str(path), features.FEATURE_SIDE)).grey
        small_p = hashing.shrink(grey, (32, 32))
        small_d = hashing.shrink(small_p, (9, 8))
        assert hashing.pack(hashing.phash_bits(small_p)) == bytes.fromhex(str(imagehash.phash(Image.fromarray(small_p))))
        assert hashing.pack(hashing.dhash_bits(small_d)) == bytes.fromhex(str(imagehash.dhash(Image.fromarray(small_d))))
        hashes = hashing.global_hashes(grey)
        mirrored = hashing.global_hashes(np.ascontiguousarray(grey[:, ::-1]))
        assert hashes["phash_mirror"] == mirrored["phash"] and hashes["dhash_mirror"] == mirrored["dhash"]


def test_mirror_features_equal_features_detected_on_the_mirror(fixtures):
    """The mirror's keypoints and descriptors, derived from the reflected keypoints, are those
    that detecting on the mirror image finds."""
    decoded = load.load(str(fixtures.catalog / "astronaut.png"), features.FEATURE_SIDE)
    grey = fingerprint.canonical_view(decoded).grey
    points, descriptors = features.orb_features(np.ascontiguousarray(grey[:, ::-1]))
    (plain_points, _), (m_points, m_descriptors) = features.features_and_mirror(grey)
    assert len(m_points) >= 0.98 * len(plain_points) > 300
    same = 0
    for point, descriptor in zip(m_points, m_descriptors):
        nearest = np.argmin(((points - point) ** 2).sum(axis=1))
        close = ((points[nearest] - point) ** 2).sum() < 0.01
        same += int(close and np.array_equal(descriptor, descriptors[nearest]))
    assert same >= 0.95 * len(m_points)


def test_feature_arrays_are_the_keypoints_and_descriptors_orb_found(fixtures):
    """Positions as x, y in the order ORB gave them; a picture without corners gives empty
    arrays of the same shapes, in both orientations."""
    grey = fingerprint.canonical_view(load.load(str(fixtures.catalog / "coffee.jpg"), features.FEATURE_SIDE)).grey
    keypoints, descriptors = features._detect(grey, features.N_FEATURES)
    points, codes = features.orb_features(grey)
    assert points.dtype == np.float32 and np.array_equal(points, np.array([kp.pt for kp in keypoints], np.float32))
    assert np.array_equal(codes, descriptors)
    for part in features.features_and_mirror(np.full((64, 64), 128, np.uint8)):
        assert part[0].shape == (0, 2) and part[0].dtype == np.float32
        assert part[1].shape == (0, features.DESCRIPTOR_BYTES) and part[1].dtype == np.uint8
