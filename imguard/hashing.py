"""Images → global fingerprints: canonical views and 64-bit perceptual hashes.

Every function here is a small, pure function of its input, in the spirit of imagehash. The hashes
are imagehash's pHash and dHash algorithms (tests check the bits against imagehash on the same
input), computed on an area-averaged shrink with NumPy: the hashes then cost a small fraction of
decoding the image. dHash's 9×8 input is shrunk from pHash's 32×32, not from the view.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from . import load

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

# A border line counts as padding when this share of its pixels is within TRIM_TOLERANCE of the
# line's median colour: JPEG ringing and a few stray pixels must not stop the trim.
TRIM_SHARE = 0.98
TRIM_TOLERANCE = 14
# Never trim an image down to less than this share of either side: a near-uniform picture
# (a plain sheet, a blank banner) keeps its frame.
MIN_KEPT = 0.08
# Long side of the averaged picture borders are searched on: 1/8 of a 1000 px marketplace photo,
# so that a hashes-only decode at 1/8 finds the same box as a full one.
TRIM_GRID = 128


def trim_box(rgb: np.ndarray) -> Box:
    """Bounding box of the content inside near-uniform borders (padding, letterboxes, white studio
    background), found independently from each side and repeated so that nested pads
    (a coloured pad around a white background) are all removed.

    Borders are searched on an averaged copy TRIM_GRID pixels on the long side, whatever the
    size of `rgb`: a thumbnail, a JPEG draft and a full decode of one photo then see the same
    borders (point samples of a big picture keep the JPEG noise that a small one has averaged
    away). Each edge is then placed to the pixel, within one sample of where the grid put it. A
    border thinner than about one sample (1/128 of the long side) is kept: it blends into the
    first sample of content.
    """
    height, width = rgb.shape[:2]
    small = _averaged(rgb, TRIM_GRID)
    sh, sw = small.shape[:2]
    x0, y0, x1, y1 = 0, 0, sw, sh
    # Until nothing changes: each nested pad takes a pass, and so may the averaged line where
    # two pads meet.
    for _ in range(6):
        box = _trim_once(small[y0:y1, x0:x1])
        if box == (0, 0, x1 - x0, y1 - y0):
            break
        x0, y0, x1, y1 = x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]
    if (x1 - x0) < MIN_KEPT * sw or (y1 - y0) < MIN_KEPT * sh:
        return (0, 0, width, height)
    # Each edge to the pixel: looked for on the full pixels, within a sample of the grid's.
    sx, sy = width / sw, height / sh
    rows = rgb[:, math.floor(x0 * sx):math.ceil(x1 * sx)]
    columns = rgb[math.floor(y0 * sy):math.ceil(y1 * sy)].transpose(1, 0, 2)
    top, bottom = _refine(rows, y0, sy), height - _refine(rows[::-1], sh - y1, sy)
    left, right = _refine(columns, x0, sx), width - _refine(columns[::-1], sw - x1, sx)
    # On a smooth gradient the edges may keep moving in: never past MIN_KEPT, nor each other.
    if right - left < MIN_KEPT * width or bottom - top < MIN_KEPT * height:
        return (0, 0, width, height)
    return (left, top, right, bottom)


def _refine(lines: np.ndarray, edge: int, scale: float) -> int:
    """The number of padding lines (axis 0 of `lines`, from the border inward) of a side whose
    first `edge` samples of the grid, `scale` lines each, were found uniform."""
    if edge == 0:
        return 0
    start, stop = math.floor((edge - 1) * scale), min(len(lines), math.ceil((edge + 1) * scale))
    return start + _uniform_lines(lines[start:stop])


def _averaged(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` averaged down to `side` pixels on its long side (as it is, when smaller): bilinear
    to twice that, then 2×2 area. OpenCV's area resize alone costs ~1.7 ms on a 600 px picture;
    these two steps cost 0.2 ms and average up to 16 pixels into each sample (on the JPEG drafts
    imguard decodes, up to ~1000 px, that is most of them)."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return rgb
    size = load.scaled_size(rgb.shape, scale)
    if scale < 0.5:
        rgb = cv2.resize(rgb, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
    return shrink(rgb, size)


def _uniform_lines(lines: np.ndarray) -> int:
    """Number of leading lines (axis 0 of `lines`: line, pixel, channel) that are near-uniform
    and close in colour to the first line. Looked at in growing chunks from the edge: most
    pictures stop within the first."""
    low, high = _tolerance_range(_median_colour(lines[0]))
    start, chunk = 0, 8
    while start < len(lines):
        uniform = _in_range(lines[start:start + chunk], low, high)
        if not uniform.all():
            return start + int(np.argmin(uniform))
        start, chunk = start + chunk, chunk * 2
    return len(lines)


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


# Sub-pictures of a composite (see `regions`).
GAP_SHARE = 0.01  # a gap between sub-pictures: uniform lines over at least this share of the side
REGION_MIN_AREA = 0.02  # of the picture: smaller content is a logo or a line of text
REGION_MAX_AREA = 0.85  # of the picture: larger is the picture itself, hashed already
REGION_DEPTH = 4
# A 3×3 grid of pictures (a "shop the look" tile) has 9 cells and 3 strips of them: all are kept.
# With 8, ranked by area, the strips and 5 cells were: the accuracy benchmark's 3×3 collages were
# found at 0.40 (2×2: 0.90), most lost ones never a candidate; cells first and 12 of them (with
# scan.REGION_SEARCHES 9) took its collage family from 0.64 to 0.77, grid seams (below) to 0.89.
REGION_LIMIT = 12


def regions(rgb: np.ndarray) -> list[Box]:
    """Sub-pictures of a composite: a collage's cells, the photo in a screenshot of a listing,
    the picture under a meme's caption. Blocks of content separated by near-uniform gaps, found
    by recursive XY-cut (the classic page-layout split); at most REGION_LIMIT, each trimmed like a
    canonical view. Blocks not cut further (a grid's cells: the pictures themselves) come first,
    largest first, then the blocks that hold several. A picture without such gaps has none.

    Cuts on a strided view (~192 px on the long side), trims on the full pixels.
    """
    height, width = rgb.shape[:2]
    step = max(1, max(height, width) // 192)
    small = np.ascontiguousarray(rgb[::step, ::step])
    sh, sw = small.shape[:2]
    gap_rows, gap_cols = max(2, round(GAP_SHARE * sh)), max(2, round(GAP_SHARE * sw))
    found: dict[Box, bool] = {}  # box → not cut further
    stack: list[tuple[Box, int]] = [((0, 0, sw, sh), REGION_DEPTH)]
    while stack:
        (x0, y0, x1, y1), depth = stack.pop()
        block = small[y0:y1, x0:x1]
        rows = _content_runs(_uniform_each(block), gap_rows)
        cols = _content_runs(_uniform_each(block.transpose(1, 0, 2)), gap_cols)
        if not rows or not cols:
            continue
        box = (x0 + cols[0][0], y0 + rows[0][0], x0 + cols[-1][1], y0 + rows[-1][1])
        parts = []
        if depth > 0 and (len(rows) > 1 or len(cols) > 1):
            # Split along the axis with the widest gap; the other axis is split one level down.
            if len(cols) == 1 or (len(rows) > 1 and _widest_gap(rows) / (y1 - y0) >= _widest_gap(cols) / (x1 - x0)):
                parts = [(box[0], y0 + a, box[2], y0 + b) for a, b in rows]
            else:
                parts = [(x0 + a, box[1], x0 + b, box[3]) for a, b in cols]
            # Parts too small to hold a region are not split further (lines of text, icons).
            parts = [p for p in parts if (p[2] - p[0]) * (p[3] - p[1]) >= REGION_MIN_AREA * sw * sh]
        if depth < REGION_DEPTH:
            found[box] = found.get(box, True) and not parts
        stack.extend((p, depth - 1) for p in parts)
    area = float(sw * sh)
    kept = [b for b in found if REGION_MIN_AREA <= (b[2] - b[0]) * (b[3] - b[1]) / area <= REGION_MAX_AREA
            and min(b[2] - b[0], b[3] - b[1]) >= 8]
    ranked = sorted(kept, key=lambda b: (not found[b], -(b[2] - b[0]) * (b[3] - b[1]), b))
    cells = grid_cells(rgb)
    boxes = cells + [box for box in (_trim_within(rgb, b, step) for b in ranked)
                     if not any(iou(box, cell) > 0.8 for cell in cells)]
    return boxes[:REGION_LIMIT]


# A grid of pictures put edge to edge has no gap for the XY-cut to find: each seam is a straight
# line across the whole picture where the grey level steps. A seam is where SEAM_SHARE of the
# lines across it step by more than SEAM_STEP over 2 pixels (a resized seam spreads over two),
# and by more than twice the step on either side of it (a seam, not a textured area), within
# SEAM_SLACK of the side from the k-th fraction of it (the view's trim may have cut a little of
# the outer cells' plain margins). Every seam of a k × k grid must be found.
# On the accuracy benchmark's queries: the seams of 40 of its 43 gap-free 2×2 collages and 73 of its
# 87 gap-free 3×3 ones are found; 12 of 1,700 other queries (a seventh of every other family)
# show a grid that is not there, which costs only the search of its cells.
GRIDS = (3, 2)
SEAM_STEP = 12
SEAM_SHARE = 0.3
SEAM_SLACK = 0.04


def grid_cells(rgb: np.ndarray) -> list[Box]:
    """The cells of a 3 × 3 or 2 × 2 grid of pictures put edge to edge (a "shop the look" tile),
    each trimmed; none when its seams are not all there."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.int16)
    height, width = grey.shape
    for k in GRIDS:
        if min(height, width) < k * 16:
            continue
        xs = [_seam(grey, round(width * i / k), round(SEAM_SLACK * width)) for i in range(1, k)]
        if None in xs:
            continue
        ys = [_seam(grey.T, round(height * i / k), round(SEAM_SLACK * height)) for i in range(1, k)]
        if None in ys:
            continue
        xs, ys = [0, *xs, width], [0, *ys, height]
        cells = []
        for row in range(k):
            for col in range(k):
                x0, y0, x1, y1 = xs[col], ys[row], xs[col + 1], ys[row + 1]
                tx0, ty0, tx1, ty1 = trim_box(rgb[y0:y1, x0:x1])
                cells.append((x0 + tx0, y0 + ty0, x0 + tx1, y0 + ty1))
        return cells
    return []


def _seam(grey: np.ndarray, at: int, slack: int) -> int | None:
    """The column within `slack` of `at` where most rows of `grey` step (see SEAM_SHARE), if any:
    every candidate column at once (one at a time cost a query's view 2.7 ms)."""
    xs = np.arange(max(3, at - slack), min(grey.shape[1] - 3, at + slack + 1))
    if not len(xs):
        return None
    step = np.abs(grey[:, xs + 1] - grey[:, xs - 1])
    beside = np.maximum(np.abs(grey[:, xs - 1] - grey[:, xs - 3]), np.abs(grey[:, xs + 3] - grey[:, xs + 1]))
    share = ((step > SEAM_STEP) & (step > 2 * beside)).mean(axis=0)
    best = int(np.argmax(share))  # the first of equals, left to right
    return int(xs[best]) if share[best] >= SEAM_SHARE else None


def area(box: Box) -> int:
    """Pixels of a box; none when it is empty."""
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def overlap(a: Box, b: Box) -> int:
    """Pixels two boxes share."""
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = overlap(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def _trim_within(rgb: np.ndarray, box: Box, step: int) -> Box:
    """A box found on the strided view, mapped back and trimmed on the full pixels: its edges
    are exact, not multiples of the stride (a few pixels off shift a verification)."""
    height, width = rgb.shape[:2]
    x0, y0 = max(0, (box[0] - 1) * step), max(0, (box[1] - 1) * step)
    x1, y1 = min(width, (box[2] + 1) * step), min(height, (box[3] + 1) * step)
    tx0, ty0, tx1, ty1 = trim_box(rgb[y0:y1, x0:x1])
    return (x0 + tx0, y0 + ty0, x0 + tx1, y0 + ty1)


def _uniform_each(lines: np.ndarray) -> np.ndarray:
    """Per line (axis 0 of line × pixel × channel): is it near-uniform? Each line is judged
    against its own median colour, taken over a few of its pixels."""
    samples = lines[:, np.linspace(0, lines.shape[1] - 1, 9).astype(int)]
    return _near_each(lines, _median_colour(samples, axis=1)[:, None, :])


def _median_colour(pixels: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-channel median of uint8 pixels along `axis`, rounded down, as int16: np.median's
    result, 4× faster on the few hundred pixels of a border line (no float detour)."""
    ordered = np.sort(pixels, axis=axis)
    count = pixels.shape[axis]
    upper = ordered.take(count // 2, axis=axis).astype(np.int16)
    return upper if count % 2 else (ordered.take(count // 2 - 1, axis=axis) + upper) // 2


def _tolerance_range(colour: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel range within TRIM_TOLERANCE of `colour`, as OpenCV scalars."""
    values = colour.tolist()
    return (tuple(float(max(0, c - TRIM_TOLERANCE)) for c in values),
            tuple(float(min(255, c + TRIM_TOLERANCE)) for c in values))


def _in_range(lines: np.ndarray, low: tuple[float, ...], high: tuple[float, ...]) -> np.ndarray:
    """Per line: are TRIM_SHARE of its pixels within `low`..`high` in every channel? One colour
    for all lines, TRIM_TOLERANCE around it: `_near_each`'s test, 1.5-4x faster in OpenCV."""
    inside = cv2.inRange(lines, low, high)
    counts = cv2.reduce(inside, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255
    return counts / lines.shape[1] >= TRIM_SHARE


def _near_each(lines: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Per line: are TRIM_SHARE of its pixels within TRIM_TOLERANCE of its colour in every
    channel? `colours` must be int16, as `_median_colour` gives: uint8 pixels minus int16 is
    int16, where uint8 minus uint8 would wrap. (Channel by channel: numpy's reductions over a
    last axis of 3 are slow.)"""
    d = np.abs(lines - colours)
    distance = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])
    return np.count_nonzero(distance <= TRIM_TOLERANCE, axis=1) / lines.shape[1] >= TRIM_SHARE


def _content_runs(uniform: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """(start, stop) of the runs of non-uniform lines, merged across gaps shorter than min_gap."""
    edges = np.diff(np.r_[1, uniform.astype(np.int8), 1])
    runs = list(zip(np.nonzero(edges == -1)[0].tolist(), np.nonzero(edges == 1)[0].tolist()))
    merged: list[list[int]] = []
    for start, stop in runs:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def _widest_gap(runs: list[tuple[int, int]]) -> int:
    return max((b[0] - a[1] for a, b in zip(runs, runs[1:])), default=0)


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix: the transform scipy.fftpack.dct applies (imagehash's)."""
    k = np.arange(n)[:, None]
    return 2 * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))


_DCT32 = _dct_matrix(32)


def shrink(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a greyscale or RGB array to (width, height): every pixel counts, which is what
    a hash of the whole picture wants, and it is 10x faster than Lanczos on a 512 px view."""
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def phash_bits(small: np.ndarray) -> np.ndarray:
    """imagehash.phash on a 32x32 greyscale array (bit for bit, tested), without scipy."""
    dct = _DCT32 @ small.astype(np.float64) @ _DCT32.T
    low = dct[:8, :8]
    ordered = np.sort(low, axis=None)  # 64 values: the median is the mean of the middle two
    return low > (ordered[31] + ordered[32]) / 2  # np.median's value, 10x faster


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
    small_d = shrink(small_p, (9, 8))  # from the 32×32: OpenCV's area shrink is slow at big ratios
    return {
        "phash": pack(phash_bits(small_p)),
        "dhash": pack(dhash_bits(small_d)),
        "phash_mirror": pack(phash_bits(small_p[:, ::-1])),
        "dhash_mirror": pack(dhash_bits(small_d[:, ::-1])),
    }


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two packed hashes of equal length (ValueError if not)."""
    if len(a) != len(b):
        raise ValueError(f"hashes of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()
