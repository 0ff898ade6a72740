"""Images → global fingerprints: canonical views and 64-bit perceptual hashes.

Every function here is a small, pure function of its input, in the spirit of imagehash.
"""

from __future__ import annotations

import numpy as np
import imagehash
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

# A border line counts as padding when this share of its pixels is within TRIM_TOLERANCE of the
# line's median colour: JPEG ringing and a few stray pixels must not stop the trim.
TRIM_SHARE = 0.98
TRIM_TOLERANCE = 14
# Never trim an image down to less than this share of either side: a near-uniform picture
# (a plain sheet, a blank banner) keeps its frame.
MIN_KEPT = 0.08


def trim_box(rgb: np.ndarray) -> Box:
    """Bounding box of the content inside near-uniform borders (padding, letterboxes, white studio
    background), found independently from each side and repeated so that nested pads
    (a coloured pad around a white background) are all removed.

    Borders are searched on every `step`-th pixel (a free strided view, ~160 px on the long side)
    and the box is widened by one step, so that at most a sliver of padding is kept.
    """
    height, width = rgb.shape[:2]
    step = max(1, max(height, width) // 160)
    small = rgb[::step, ::step]
    sh, sw = small.shape[:2]
    x0, y0, x1, y1 = 0, 0, sw, sh
    for _ in range(3):
        box = _trim_once(small[y0:y1, x0:x1])
        if box == (0, 0, x1 - x0, y1 - y0):
            break
        x0, y0, x1, y1 = x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]
    if (x1 - x0) < MIN_KEPT * sw or (y1 - y0) < MIN_KEPT * sh:
        return (0, 0, width, height)
    return (
        max(0, (x0 - 1) * step + 1),
        max(0, (y0 - 1) * step + 1),
        min(width, x1 * step),
        min(height, y1 * step),
    )


def _uniform_run(lines: np.ndarray) -> int:
    """Number of leading lines (axis 0 of `lines`: line, pixel, channel) that are near-uniform
    and close in colour to the first line. Lines are checked in small chunks, so an image without
    padding costs one chunk, not a pass over every pixel."""
    reference = np.median(lines[0], axis=0).astype(np.int16)
    count = 0
    chunk = 8
    while count < len(lines):
        block = lines[count : count + chunk].astype(np.int16)
        close = np.abs(block - reference).max(axis=2) <= TRIM_TOLERANCE
        uniform = close.mean(axis=1) >= TRIM_SHARE
        if not uniform.all():
            return count + int(np.argmin(uniform))
        count += len(block)
        chunk = min(chunk * 2, 64)
    return count


def _trim_once(rgb: np.ndarray) -> Box:
    height, width = rgb.shape[:2]
    if height < 8 or width < 8:
        return (0, 0, width, height)
    top = _uniform_run(rgb)
    bottom = _uniform_run(rgb[::-1])
    columns = rgb.transpose(1, 0, 2)
    left = _uniform_run(columns)
    right = _uniform_run(columns[::-1])
    if top + bottom >= height or left + right >= width:
        return (0, 0, width, height)
    return (left, top, width - right, height - bottom)


def hash_bytes(value: imagehash.ImageHash) -> bytes:
    """Pack an imagehash bit matrix into bytes, row-major: the layout FAISS binary indexes use."""
    return np.packbits(np.asarray(value.hash, dtype=bool).ravel()).tobytes()


def phash(image: Image.Image) -> bytes:
    """64-bit DCT hash (imagehash.phash): robust to resizing, re-compression and colour shifts."""
    return hash_bytes(imagehash.phash(image))


def dhash(image: Image.Image) -> bytes:
    """64-bit gradient hash (imagehash.dhash): a second, differently-failing opinion to pHash."""
    return hash_bytes(imagehash.dhash(image))


def global_hashes(grey: Image.Image) -> dict[str, bytes]:
    """pHash and dHash of a greyscale view and of its mirror image.

    The view is shrunk once to each hash's input size and mirrored there: mirroring commutes with
    the resize, and it saves resizing the full view four times.
    """
    small_p = grey.resize((32, 32), Image.Resampling.LANCZOS)
    small_d = grey.resize((9, 8), Image.Resampling.LANCZOS)
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    return {
        "phash": phash(small_p),
        "dhash": dhash(small_d),
        "phash_mirror": phash(small_p.transpose(flip)),
        "dhash_mirror": dhash(small_d.transpose(flip)),
    }


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two packed hashes of equal length."""
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())
