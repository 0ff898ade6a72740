"""Images → global fingerprints: canonical views and 64-bit perceptual hashes.

Every function here is a small, pure function of its input, in the spirit of imagehash. The hashes
are imagehash's pHash and dHash (tests check them bit for bit against imagehash), computed on an
area-averaged shrink with NumPy: the hashes then cost a small fraction of decoding the image.
"""

from __future__ import annotations

import cv2
import numpy as np

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
    small = np.ascontiguousarray(rgb[::step, ::step])
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


def _uniform_lines(lines: np.ndarray) -> int:
    """Number of leading lines (axis 0 of `lines`: line, pixel, channel) that are near-uniform
    and close in colour to the first line. One vectorised pass over the small strided image."""
    reference = np.median(lines[0], axis=0).astype(np.int16)
    close = (np.abs(lines.astype(np.int16) - reference).max(axis=2) <= TRIM_TOLERANCE).mean(axis=1)
    uniform = close >= TRIM_SHARE
    return len(uniform) if uniform.all() else int(np.argmin(uniform))


def _trim_once(rgb: np.ndarray) -> Box:
    height, width = rgb.shape[:2]
    if height < 8 or width < 8:
        return (0, 0, width, height)
    top = _uniform_lines(rgb)
    bottom = _uniform_lines(rgb[::-1])
    columns = rgb.transpose(1, 0, 2)
    left = _uniform_lines(columns)
    right = _uniform_lines(columns[::-1])
    if top + bottom >= height or left + right >= width:
        return (0, 0, width, height)
    return (left, top, width - right, height - bottom)


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix: the transform scipy.fftpack.dct applies (imagehash's)."""
    k = np.arange(n)[:, None]
    return 2 * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))


_DCT32 = _dct_matrix(32)


def shrink(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a greyscale array to (width, height): every pixel counts, which is what a
    hash of the whole picture wants, and it is 10x faster than Lanczos on a 512 px view."""
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def phash_bits(small: np.ndarray) -> np.ndarray:
    """imagehash.phash on a 32x32 greyscale array (bit for bit, tested), without scipy."""
    dct = _DCT32 @ small.astype(np.float64) @ _DCT32.T
    low = dct[:8, :8]
    return low > np.median(low)


def dhash_bits(small: np.ndarray) -> np.ndarray:
    """imagehash.dhash on a 9 wide, 8 high greyscale array: is each pixel brighter than its left
    neighbour."""
    return small[:, 1:] > small[:, :-1]


def pack(bits: np.ndarray) -> bytes:
    """Pack a bit matrix into bytes, row-major: the layout of imagehash and of FAISS binary codes."""
    return np.packbits(bits.ravel()).tobytes()


def global_hashes(grey: np.ndarray) -> dict[str, bytes]:
    """pHash and dHash of a greyscale view and of its mirror image.

    The view is shrunk once to each hash's input size and mirrored there: mirroring commutes with
    the area resize, and it saves shrinking the full view four times.
    """
    small_p = shrink(grey, (32, 32))
    small_d = shrink(grey, (9, 8))
    return {
        "phash": pack(phash_bits(small_p)),
        "dhash": pack(dhash_bits(small_d)),
        "phash_mirror": pack(phash_bits(small_p[:, ::-1])),
        "dhash_mirror": pack(dhash_bits(small_d[:, ::-1])),
    }


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two packed hashes of equal length."""
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())
