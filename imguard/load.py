"""Files → images: read image files (local, or downloaded) and decode them into small, normalised
RGB pictures.

Decoding is the cost of the whole pipeline, so the decoder is asked for no more pixels than the
fingerprints need (JPEG DCT scaling at the scale `Image.draft` picks, integer `reduce` for other
formats). JPEGs decode with simplejpeg (libjpeg-turbo, as in Pillow's wheels) at the scale
Pillow's draft picks: Pillow's pixels (tested), straight into an array without Pillow's chunked
loader and copies, ~10 % less time at the 1/2 draft of a marketplace photo (benchmarks/SPEED.md
compares the two at 1/8). Pillow decodes the rest: CMYK and YCCK JPEGs (simplejpeg would convert
them otherwise), anything simplejpeg refuses, and every other format; its errors are the ones
reported.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from . import fetch
from .errors import ImageError

# Bytes read of one local file at most: a marketplace photo is a few MB; more is not a product
# photo, and reading it whole would cost memory (the same limit as a download's).
MAX_FILE_BYTES = fetch.DEFAULT_MAX_BYTES

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


def read_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, float]:
    """The bytes of one local file and its modification time. Regular files only: a FIFO, a
    device or a socket is never read (it could block forever or never end), and a file over
    `max_bytes` is refused rather than read into memory. Raises ImageError naming the file."""
    path = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(path, "not a regular file (a device, FIFO or socket is never read)")
        if st.st_size > max_bytes:
            raise ImageError(path, f"too large: {st.st_size} bytes, over the limit of {max_bytes} bytes")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while being read
        raise ImageError(path, f"too large: over the limit of {max_bytes} bytes")
    return data, st.st_mtime


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    """The bytes of a local file or of a URL (downloaded through the cache, see `fetch`)."""
    location = os.fspath(location)
    if fetch.is_remote(location):
        return fetch.fetch_one(location).data  # raises ImageError(url, reason)
    return read_file(location)[0]


# A JPEG draft may stop this much short of the side asked for: the 1000 px and 2000 px photos
# marketplaces ask for then decode at 1/2 and 1/4 scale (500 px) for a 512 px view, instead of
# at twice that side (4x the pixels); the view's 2.4 % upscale costs the features nothing
# measurable (benchmarks/RESULTS.md).
DRAFT_SLACK = 0.97


def decode(data: bytes, name: str, min_side: int) -> Decoded:
    """Decode image bytes to RGB whose long side is about `min_side` or more (never upscaled;
    a JPEG's may fall 1 - DRAFT_SLACK, 3 %, short of it).

    Raises ImageError naming `name` for anything that is not a readable image.
    """
    if not data:
        raise ImageError(name, "empty file")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            _check_pixels(name, width, height)
            pixels = None
            if image.format == "JPEG":
                if max(width, height) > min_side:
                    image.draft("RGB", draft_request(width, height, min_side))
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
        raise ImageError(name, "not an image, or a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"decompression-bomb limit: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(name, f"truncated or corrupt image ({exc})") from None
    except MemoryError:
        raise ImageError(name, "image too large to decode") from None
    if pixels is not None:
        if orientation <= 1 and _reduce_factor(image.size, min_side) < 2:
            pixels.setflags(write=False)  # as read-only as the frombuffer array below
            return Decoded(rgb=pixels, width=width, height=height, sha256=sha256, nbytes=len(data))
        image = Image.fromarray(pixels)
    try:
        image = _to_rgb(_reduce(image, min_side))
        if orientation > 1:
            image = _apply_orientation(image, orientation)
    except (OSError, ValueError) as exc:
        raise ImageError(name, f"cannot convert image ({exc})") from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    # frombuffer(tobytes()) is ~15x faster than np.asarray(image) with current Pillow.
    rgb = np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, 3)
    return Decoded(rgb=rgb, width=width, height=height, sha256=sha256, nbytes=len(data))


def load(path: str | os.PathLike[str], min_side: int) -> Decoded:
    """Read and decode one image file; see `decode`."""
    path = os.fspath(path)
    return decode(read_bytes(path), path, min_side)


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


def _reduce_factor(size: tuple[int, int], min_side: int) -> int:
    return max(size) // min_side


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Integer box reduction for formats without DCT scaling (PNG, WebP, TIFF...), and for a
    JPEG beyond its 1/8 scale."""
    factor = _reduce_factor(image.size, min_side)
    if factor >= 2 and image.mode in ("RGB", "RGBA", "L", "LA", "RGBa", "La", "CMYK"):
        return image.reduce(factor)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any mode to RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
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
    grey = np.clip(values * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
