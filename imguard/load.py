"""Files → images: read image files (local, or downloaded) and decode them into small, normalised
RGB pictures.

Decoding is the cost of the whole pipeline, so the decoder is asked for no more pixels than the
fingerprints need (JPEG DCT scaling at the scale `Image.draft` picks, integer `reduce` for other
formats). JPEGs decode with simplejpeg (libjpeg-turbo, as in Pillow's wheels) at the scale
Pillow's draft picks: Pillow's pixels (tested), straight into an array without Pillow's chunked
loader and copies, ~10 % less time at the 1/2 draft of a marketplace photo (benchmarks/SPEED.md
compares the two at 1/8). Pillow decodes the rest: CMYK and YCCK JPEGs (simplejpeg would convert
them otherwise), anything simplejpeg refuses, and every other format; its errors are the ones
reported. Phone photos: HEIC/HEIF through pillow-heif (its opener registered at the first such
file), AVIF through Pillow's own support (Pillow 11.3 and later), else pillow-heif's where it has
one.

Every file is untrusted (see `limits`): only regular files are read, at most `Limits.file_bytes`
of them; only the formats imguard lists are parsed; and the memory a decode takes is known from
the header before any pixel is decoded, so that a file over `Limits.decode_bytes` is refused, not
decoded, and what is decoded is shrunk before any conversion that would copy it at full size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError, features

from . import fetch
from .errors import ImageError
from .limits import DEFAULT_DECODE_BYTES, Limits, check

# What Pillow may parse (MPO, a camera's JPEG with a second picture inside, opens as JPEG): the
# formats of sources.IMAGE_SUFFIXES, with HEIF and AVIF (see `_formats`). Pillow knows dozens
# more, some read through other programs (EPS through Ghostscript): a competitor's file named
# .jpg must not reach them.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
# HEIF and AVIF files are ISO base media files: an `ftyp` box first, its type at bytes 4-8.
_ISOBMFF = b"ftyp"

# EXIF orientations 5–8 swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class Decoded:
    """An image file decoded to RGB at reduced size, with facts about the original."""

    rgb: np.ndarray  # H×W×3 uint8; long side >= the requested size (a JPEG's: DRAFT_SLACK of it),
    # unless the original is smaller
    width: int  # original pixel size, after EXIF orientation
    height: int
    sha256: str  # of the file bytes: evidence and change detection
    nbytes: int


def read_file(path: str | os.PathLike[str], max_bytes: int = fetch.DEFAULT_MAX_BYTES) -> tuple[bytes, float]:
    """The bytes of one local file and its modification time. Regular files only: a FIFO, a
    device or a socket is never read (it could block forever or never end), and a file over
    `max_bytes` is refused rather than read into memory. Raises ImageError naming the file."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):  # never opened: opening a device can be an action of its own
        raise ImageError(path, _NOT_REGULAR)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since the stat above
            raise ImageError(path, _NOT_REGULAR)
        if st.st_size > max_bytes:
            raise ImageError(path, f"too large: {st.st_size} bytes, over the limit of {max_bytes} bytes")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while being read
        raise ImageError(path, f"too large: over the limit of {max_bytes} bytes")
    return data, st.st_mtime


_NOT_REGULAR = "not a regular file (a device, FIFO or socket is never read)"


def read_bytes(location: str | os.PathLike[str], max_bytes: int = fetch.DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a local file or of a URL (downloaded through the cache, see `fetch`)."""
    location = os.fspath(location)
    if fetch.is_remote(location):
        return fetch.fetch_one(location, max_bytes=max_bytes).data  # raises ImageError(url, reason)
    return read_file(location, max_bytes)[0]


# A JPEG draft may stop this much short of the side asked for: the 1000 px and 2000 px photos
# marketplaces ask for then decode at 1/2 and 1/4 scale (500 px) for a 512 px view, instead of
# at twice that side (4x the pixels); the view's 2.4 % upscale costs the features nothing
# measurable (benchmarks/RESULTS.md).
DRAFT_SLACK = 0.97


def decode(data: bytes, name: str, min_side: int, *, budget: int = DEFAULT_DECODE_BYTES) -> Decoded:
    """Decode image bytes to RGB whose long side is about `min_side` or more (never upscaled;
    a JPEG's may fall 1 - DRAFT_SLACK, 3 %, short of it), and no more than fits in `budget`.

    `budget` (bytes, `Limits.decode_bytes`) bounds the memory of the decode: a picture whose
    decoder's buffer and conversions at the size it decodes at would need more is refused before
    it is decoded, and the picture returned is shrunk further when it would need more.

    Raises ImageError naming `name` for anything that is not a readable image, or too big.
    """
    if not data:
        raise ImageError(name, "empty file")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a hostile file's "corrupt EXIF data" is no news for the run
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_formats(data))
            width, height = image.size
            _check_pixels(name, width, height)
            max_side = _largest_side(width, height, budget // (2 * OUTPUT_BYTES))
            pixels = None
            if image.format == "JPEG" and max(width, height) > min(min_side, max_side):
                image.draft("RGB", draft_request(width, height, min(min_side, max_side)))
            _check_budget(name, image, budget)
            factor = _reduce_factor(image.size, min_side, max_side)
            if image.format == "JPEG":
                pixels = _turbo_decode(data, image)
            if pixels is None:
                image.load()
            # After load(): for PNG, getexif() decodes the image itself and would hide a
            # decoder error from load() (a corrupt stream then reads as a black picture).
            # A JPEG's EXIF is in its header: read at open, whichever decoder ran.
            orientation = _orientation(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not an image, or a format imguard does not read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"decompression-bomb limit: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, RuntimeError) as exc:
        # RuntimeError: libavif's and libheif's plugins ("Failed to decode frame 0: ...")
        raise ImageError(name, f"truncated or corrupt image ({exc})") from None
    except MemoryError:
        raise ImageError(name, "image too large to decode") from None
    check(name)  # the time limit, between the decode and the conversions
    if pixels is not None:
        if orientation <= 1 and factor < 2:
            pixels.setflags(write=False)  # as read-only as the frombuffer array below
            return Decoded(rgb=pixels, width=width, height=height, sha256=sha256, nbytes=len(data))
        image = Image.fromarray(pixels)
        del pixels
    try:
        image = _reduce(image, factor)  # the full-size picture is let go here
        image = _to_rgb(image)
        if orientation > 1:
            image = _apply_orientation(image, orientation)
    except (OSError, ValueError) as exc:
        raise ImageError(name, f"cannot convert image ({exc})") from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    # frombuffer(tobytes()) is ~15x faster than np.asarray(image) with current Pillow.
    rgb = np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, 3)
    return Decoded(rgb=rgb, width=width, height=height, sha256=sha256, nbytes=len(data))


@functools.cache
def _phone_formats() -> tuple[str, ...]:
    """HEIF and AVIF, as this installation reads them; pillow-heif is imported (and its opener
    registered) only when a file of theirs comes: most scans never pay for it."""
    found = []
    try:
        import pillow_heif
    except ImportError:  # a dependency; without it HEIF files are unreadable files
        pillow_heif = None
    if pillow_heif is not None:
        pillow_heif.register_heif_opener()
        found.append("HEIF")
    if features.check("avif"):  # Pillow's own AVIF plugin
        found.append("AVIF")
    elif pillow_heif is not None and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
        found.append("AVIF")
    return tuple(found)


def _formats(data: bytes) -> tuple[str, ...]:
    """The formats Pillow may try on `data`."""
    return FORMATS + _phone_formats() if data[4:8] == _ISOBMFF else FORMATS


def load(path: str | os.PathLike[str], min_side: int, limits: Limits = Limits()) -> Decoded:
    """Read and decode one image file within `limits` (bytes read, memory); see `decode`."""
    path = os.fspath(path)
    return decode(read_bytes(path, limits.file_bytes), path, min_side, budget=limits.decode_bytes)


def _check_pixels(name: str, width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if width <= 0 or height <= 0:
        raise ImageError(name, f"invalid size {width}x{height}")
    if limit and width * height > limit:
        raise ImageError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the decompression-bomb limit "
            f"of {limit} (PIL.Image.MAX_IMAGE_PIXELS)",
        )


def scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(width, height) of a picture of `shape` (height, width, ...) scaled by `scale`, never 0."""
    return (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))


def draft_request(width: int, height: int, min_side: int) -> tuple[int, int]:
    """The size asked of a JPEG's draft for a long side of `min_side` (within DRAFT_SLACK):
    Pillow then picks the smallest DCT scale (1/8, 1/4, 1/2) that gives at least that."""
    return scaled_size((height, width), min_side * DRAFT_SLACK / max(width, height))


def _turbo_decode(data: bytes, image: Image.Image) -> np.ndarray | None:
    """The JPEG's pixels, RGB, at the size Pillow's draft set up (`image.size`), or None for
    Pillow to decode: CMYK and YCCK JPEGs, pictures under 8 px (where libjpeg-turbo may pick
    another scale of the same size), and whatever simplejpeg refuses (strict: a corrupt or
    truncated stream, any decoder warning)."""
    if not (image.mode == "RGB" and image.layers == 3 or image.mode == "L" and image.layers == 1):
        return None
    if max(image.size) < 8:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=image.width, min_height=image.height,
                                        fastdct=False, fastupsample=False, strict=True)
    except (ValueError, RuntimeError):
        return None
    if pixels.shape != (image.height, image.width, 3):
        return None
    return pixels


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if 1 <= int(value) <= 8 else 1
    except Exception:  # broken EXIF must not make the image unreadable
        return 1


_TRANSPOSES = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    for op in _TRANSPOSES.get(orientation, []):
        image = image.transpose(op)
    return image


# -- the memory a decode takes -----------------------------------------------------------------

# Bytes a pixel takes in Pillow's buffers: 1 for bilevel, greyscale and palette pictures, 2 for
# 16-bit greyscale, 4 for every other mode (RGB is kept as 4 bytes).
_BUFFER_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Modes Pillow's reduce() shrinks as they are; "LA" and "RGBA" through a premultiplied copy.
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})
_PREMULTIPLIED = frozenset({"LA", "RGBA"})
# A decoder that fills buffers of its own before Pillow's: simplejpeg's RGB array (3 bytes a
# pixel), which Pillow copies when the picture is shrunk or turned; libheif's and libavif's (a
# 6000×4000 photo measured 7 and 9 bytes a pixel in all, Pillow's 4 included); libwebp's animation
# decoder, which Pillow reads every WebP through: two canvases, the frame, and the bytes handed
# over (16 bytes a pixel in all, one frame or several: 376 MB for a 6000×4000 photo).
_DECODER_BYTES = {"JPEG": 3, "HEIF": 4, "AVIF": 6, "WEBP": 12}
# Pillow keeps a pointer to each row of a picture: a mutated 1×16,777,216 PNG took 128 MB of them.
_ROW_BYTES = 8
# Bytes a pixel of the picture returned takes while it is made RGB: Pillow's RGBA copy, a white
# canvas and the composite of a transparent picture (4 each), its RGB conversion and EXIF turn
# (4 each), the RGB bytes handed to numpy (3); 16-bit greyscale goes through float64 (8) instead.
OUTPUT_BYTES = 24


def _reducible_mode(image: Image.Image) -> str:
    """The mode `image` is shrunk in: its own, or the one it is converted to first."""
    mode = image.mode
    if mode in _REDUCIBLE:
        return mode
    if mode == "1":
        return "L"
    if mode in ("P", "PA"):
        return "RGBA" if mode == "PA" or "transparency" in image.info else "RGB"
    if mode.startswith("I;16"):
        return "I"
    return "RGB"


def decode_bytes(image: Image.Image) -> int:
    """The memory (bytes) decoding an opened `image` takes at the size it will decode at: the
    decoder's buffers, and the full-size conversion and premultiplied copy shrinking it needs,
    with their row pointers. Known from the header alone, before any pixel is decoded."""
    mode, target = image.mode, _reducible_mode(image)
    per_pixel = _BUFFER_BYTES.get(mode, 4) + _DECODER_BYTES.get(image.format or "", 0)
    pictures = 1
    if target != mode:
        per_pixel += _BUFFER_BYTES.get(target, 4)
        pictures += 1
    if target in _PREMULTIPLIED:
        per_pixel += 4
        pictures += 1
    return image.width * image.height * per_pixel + image.height * _ROW_BYTES * pictures


def _check_budget(name: str, image: Image.Image, budget: int) -> None:
    need = decode_bytes(image)
    if need > budget:
        raise ImageError(
            name,
            f"{image.width}x{image.height} {image.mode} pixels would take {_mb(need)} to decode, over the "
            f"limit of {_mb(budget)} per image",
        )


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def _largest_side(width: int, height: int, pixels: int) -> int:
    """The long side of a picture shaped like width×height that holds `pixels` pixels."""
    long, short = max(width, height), min(width, height)
    return max(1, math.isqrt(pixels * long // short))


def _reduce_factor(size: tuple[int, int], min_side: int, max_side: int) -> int:
    """The integer shrink of a picture of `size`: the largest that keeps its long side at
    `min_side` or more, unless that leaves it over `max_side` (then the one that does not)."""
    long = max(size)
    factor = max(1, long // min_side)
    if -(-long // factor) > max_side:
        factor = -(-long // max_side)
    return factor


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Integer box reduction, for formats without DCT scaling (PNG, WebP, TIFF...) and for a
    JPEG beyond its 1/8 scale, in a mode that can be averaged (palette indices cannot be)."""
    if factor < 2:
        return image
    mode = _reducible_mode(image)
    if mode != image.mode:
        image = image.convert(mode)
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any mode to RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode.startswith("I") or mode == "F":
        return _wide_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale: scale to 8 bits instead of clipping at 255."""
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F" and top <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / 65535.0 if top > 255 else 1.0
    values *= scale
    grey = np.clip(values, 0, 255, out=values).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
