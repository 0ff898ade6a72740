"""Files → images: reading and decoding every kind of file a folder of images holds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import imguard
from imguard import load
from imguard.errors import ImageError

from conftest import IS_ROOT, ROOT_SKIP

SIDE = 512


def decode(path: Path) -> load.Decoded:
    return load.load(str(path), SIDE)


# -- decoding ------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(fixtures):
    path = fixtures.loader("exif_rotated")
    with Image.open(path) as raw:
        assert raw.size == (240, 160)  # stored landscape
        upright = ImageOps.exif_transpose(raw).convert("RGB")
    d = decode(path)
    assert (d.width, d.height) == (160, 240)  # reported size is the upright one
    assert d.rgb.shape == (240, 160, 3)
    # the stored left half is pure red: upright (rotated 90° clockwise) it is the top half
    top, bottom = d.rgb[:100].reshape(-1, 3).mean(0), d.rgb[140:].reshape(-1, 3).mean(0)
    assert top[0] > 230 and top[1] < 30 and top[2] < 30
    assert not (bottom[0] > 200 and bottom[1] < 50)
    assert np.abs(d.rgb.astype(int) - np.asarray(upright, dtype=int)).mean() < 3


@pytest.mark.parametrize("case", ["rgba", "palette"])
def test_transparency_is_composited_on_white(fixtures, case):
    d = decode(fixtures.loader(case))
    assert d.rgb.shape == (160, 240, 3) and d.rgb.dtype == np.uint8
    # the left half is fully transparent over black pixels: it must come out white, not black
    assert d.rgb[:, :115].min() >= 250
    # the opaque right half keeps the photo (not white)
    assert d.rgb[:, 125:].mean() < 220


def test_animated_gif_gives_first_frame(fixtures):
    d = decode(fixtures.loader("gif"))
    assert d.rgb.shape == (60, 80, 3)
    red = d.rgb.reshape(-1, 3).mean(0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15  # frame 1 is red, frame 2 blue


@pytest.mark.parametrize("case", ["bmp", "tiff", "cmyk", "grey"])
def test_other_formats_and_modes_become_rgb(fixtures, case):
    path = fixtures.loader(case)
    d = decode(path)
    assert d.rgb.shape == (160, 240, 3) and d.rgb.dtype == np.uint8
    assert (d.width, d.height) == (240, 160)
    with Image.open(path) as image:
        reference = np.asarray(image.convert("RGB"), dtype=int)
    assert np.abs(d.rgb.astype(int) - reference).mean() < 2
    if case == "grey":
        assert (d.rgb[..., 0] == d.rgb[..., 1]).all() and (d.rgb[..., 1] == d.rgb[..., 2]).all()
    if case == "cmyk":
        # colours survive CMYK: the photo is a warm-toned cat, red above blue on average
        mean = d.rgb.reshape(-1, 3).mean(0)
        assert mean[0] > mean[2] + 10


def test_16_bit_greyscale_is_scaled_not_clipped(fixtures):
    path = fixtures.loader("grey16")
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # really a 16-bit file
    d = decode(path)
    assert d.rgb.shape == (120, 200, 3)
    body = d.rgb[40:, :, 0].astype(int)  # 32768 of 65535 everywhere
    assert abs(body.mean() - 128) <= 2 and body.max() - body.min() <= 1
    ramp = d.rgb[5, :, 0].astype(int)  # 0 .. 65535 across the row
    assert ramp[0] <= 2 and ramp[-1] >= 253
    assert (np.diff(ramp) >= 0).all()


def test_decoded_size_and_original_size(fixtures):
    """JPEG draft / integer reduce: fewer pixels decoded, never below the requested side, and
    the reported size is the file's."""
    big = fixtures.catalog / "motorcycle.jpg"  # 1482×1000
    d = load.load(str(big), SIDE)
    assert (d.width, d.height) == (1482, 1000)
    assert SIDE <= max(d.rgb.shape[:2]) < 1482
    png = fixtures.catalog / "astronaut.png"  # 512×512
    d = load.load(str(png), 200)
    assert (d.width, d.height) == (512, 512)
    assert 200 <= max(d.rgb.shape[:2]) < 512
    small = load.load(str(fixtures.loader("gif")), SIDE)  # never upscaled
    assert small.rgb.shape[:2] == (60, 80)


def test_a_marketplace_size_jpeg_decodes_at_half_scale(fixtures, tmp_path):
    """A 1000 px JPEG (the size marketplaces ask for) and a 512 px view: the draft may stop
    DRAFT_SLACK short, so the decoder scales the DCT by 1/2 (500 px) instead of decoding in full;
    asked for a side the half cannot give within the slack, it decodes in full."""
    from PIL import Image

    path = tmp_path / "thousand.jpg"
    Image.open(fixtures.catalog / "motorcycle.jpg").resize((1000, 675)).save(path, quality=90)
    assert max(load.load(str(path), 512).rgb.shape[:2]) == 500
    assert max(load.load(str(path), 530).rgb.shape[:2]) == 1000
    assert max(load.load(str(path), 240).rgb.shape[:2]) == 250  # 1/4


JPEGS = [("catalog", "motorcycle.jpg"), ("catalog", "chelsea.jpg"), ("loader", "grey"), ("loader", "exif_rotated")]


@pytest.mark.parametrize("side", [60, 128, 256, 512, 10**6])
@pytest.mark.parametrize("where,name", JPEGS)
def test_jpegs_decode_to_pillows_pixels(fixtures, side, where, name):
    """JPEGs decode with simplejpeg, at the DCT scale Pillow's draft picks: exactly Pillow's
    pixels, so fingerprints do not depend on which decoder ran. Colour and greyscale, EXIF
    orientation, and past 1/8 the integer box reduction."""
    path = fixtures.catalog / name if where == "catalog" else fixtures.loader(name)
    image = Image.open(path)
    if max(image.size) > side:
        image.draft("RGB", load.draft_request(image.width, image.height, side))
    assert load._turbo_decode(path.read_bytes(), image) is not None  # the fast path, not the fallback
    pixels = image.convert("RGB")
    if max(pixels.size) // side >= 2:
        pixels = pixels.reduce(max(pixels.size) // side)
    expected = np.asarray(ImageOps.exif_transpose(pixels.copy()) if name == "exif_rotated" else pixels)
    assert np.array_equal(load.load(str(path), side).rgb, expected)


def test_pillow_decodes_what_simplejpeg_must_not(fixtures):
    """CMYK JPEGs (simplejpeg would convert them otherwise) and corrupt streams are Pillow's: the
    one decodes, the other fails with Pillow's own reason."""
    cmyk, truncated = fixtures.loader("cmyk"), fixtures.loader("truncated")
    assert load._turbo_decode(cmyk.read_bytes(), Image.open(cmyk)) is None
    assert decode(cmyk).rgb.shape[2] == 3
    assert load._turbo_decode(truncated.read_bytes(), Image.open(truncated)) is None
    with pytest.raises(ImageError, match="image file is truncated"):
        decode(truncated)


def test_sha256_and_size_are_of_the_file_bytes(fixtures):
    import hashlib

    path = fixtures.catalog / "chelsea.jpg"
    data = path.read_bytes()
    d = decode(path)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.nbytes == len(data)


BROKEN = {
    "not_image": r"not an image",
    "empty": r"empty",
    "truncated": r"truncated|corrupt",
    "corrupt": r"truncated|corrupt",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_image_error_naming_file_and_reason(fixtures, case):
    path = fixtures.loader(case)
    with pytest.raises(ImageError) as info:
        decode(path)
    error = info.value
    assert isinstance(error, imguard.ImguardError)
    assert error.path == str(path)
    assert str(path) in str(error)
    assert re.search(BROKEN[case], error.reason, re.IGNORECASE), error.reason


def test_corrupt_bytes_in_memory_raise_too():
    with pytest.raises(ImageError, match="x.png"):
        load.decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "x.png", SIDE)


@pytest.mark.skipif(IS_ROOT, reason=ROOT_SKIP)
def test_unreadable_file_raises_image_error(fixtures):
    path = fixtures.loader("unreadable")
    with pytest.raises(ImageError) as info:
        decode(path)
    assert info.value.path == str(path) and "cannot read" in info.value.reason


def test_decompression_bomb_limit_is_kept(fixtures, monkeypatch):
    assert Image.MAX_IMAGE_PIXELS  # importing imguard must not switch the limit off
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 240 * 160 // 4)
    for case in ("bmp", "tiff"):
        path = fixtures.loader(case)
        with pytest.raises(ImageError) as info:
            decode(path)
        assert info.value.path == str(path)
        assert "decompression-bomb" in info.value.reason
        assert re.search(r"exceeds|limit", info.value.reason)
    # just over the limit (Pillow would only warn) is refused too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 240 * 160 - 1)
    with pytest.raises(ImageError, match="decompression-bomb"):
        decode(fixtures.loader("bmp"))


def test_fingerprint_file_raises_image_error(fixtures):
    with pytest.raises(ImageError):
        imguard.fingerprint_file(str(fixtures.loader("empty")))


# -- phone photos ----------------------------------------------------------------------------------


def _phone(fixtures, case: str):
    if case not in fixtures.loader_cases:
        pytest.skip(f"this installation writes no {case.split('_')[0].upper()} (pillow-heif; Pillow >= 11.3 for AVIF)")
    return fixtures.loader(case)


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_phone_photos_decode_upright(fixtures, ext):
    """HEIC and AVIF decode like the other formats: the photo's pixels (as the lossless BMP has
    them, within the codec's loss), and a rotated one upright, as exif_rotated.jpg."""
    d = decode(_phone(fixtures, ext))
    with Image.open(fixtures.loader("bmp")) as image:
        photo = np.asarray(image.convert("RGB"), dtype=int)
    assert (d.width, d.height) == (240, 160) and d.rgb.shape == (160, 240, 3)
    assert np.abs(d.rgb.astype(int) - photo).mean() < 6
    turned, jpeg = decode(_phone(fixtures, f"{ext}_rotated")), decode(fixtures.loader("exif_rotated"))
    assert (turned.width, turned.height) == (160, 240) and turned.rgb.shape == (240, 160, 3)
    top = turned.rgb[:100].reshape(-1, 3).mean(0)
    assert top[0] > 230 and top[1] < 30 and top[2] < 30  # the red half is on top, as in the JPEG
    assert np.abs(turned.rgb.astype(int) - jpeg.rgb.astype(int)).mean() < 6


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_phone_photos_are_indexed_and_scanned(fixtures, indexed, tmp_path, ext):
    """A phone photo in a scan finds the catalog photo it was made from; in the catalog, it is
    found by a copy of it."""
    phone = _phone(fixtures, ext)
    found = [m for m in indexed.scan(phone, jobs=1)]
    assert [os.path.basename(m.reference) for m in found][:1] == ["chelsea.jpg"]
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        assert cat.add(phone, jobs=1).added == 1
        found = list(cat.scan(fixtures.competitor("chelsea__jpeg40.jpg"), jobs=1))
    assert [m.reference for m in found] == [str(phone)]


def test_heif_support_is_loaded_only_for_heif_files(fixtures):
    """pillow-heif is imported at the first file that needs it: a scan of JPEGs never pays for it."""
    code = f"""
import sys, imguard
imguard.fingerprint_file({str(fixtures.catalog / "chelsea.jpg")!r})
assert "pillow_heif" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
