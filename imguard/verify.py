"""Candidates → verified matches: geometric verification and the dense check of the aligned pair.

A candidate (a hash hit or a catalog image that local features voted for) is aligned to the query,
either by the identity of the two canonical views (hash path) or by an affine transform that RANSAC
fits to matched ORB keypoints (feature path). The aligned pair then gets a dense check: over the
reference's textured foreground blocks (not its plain background) that the query covers, the share
whose normalised cross-correlation agrees. Look-alike products shot the same way, and composites that share a model's face or legs,
can gather as many keypoint inliers as a real copy; they fail the dense check
(../shared/notes/measured.md, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import cv2
import faiss
import numpy as np

from . import load

Box = tuple[int, int, int, int]

BLOCK = 16  # block side in reference-thumbnail pixels (256 px long side: up to 16×16 blocks)
TEXTURE_STD = 6.0  # grey-level std above which a block has structure to compare
# A block agrees by its normalised cross-correlation: not at all up to NCC_LOW, fully from
# NCC_HIGH, in between in part. Copies agree at 0.9 and above nearly everywhere; another photo of
# the same product, aligned as well as it can be, mostly between 0.6 and 0.9.
NCC_LOW = 0.6
NCC_HIGH = 0.9
MIN_BLOCKS = 6  # fewer compared blocks than this is no evidence at all
PRIOR_BLOCKS = 6.0  # shrinks the share of small regions towards 0: few blocks, weak evidence
# Two pictures that share a region pixel for pixel while each has content the other lacks (a
# model's legs under two different shirts, one wallpaper on two devices) are a partial match,
# listed for review and never a complaint: PARTIAL_SHARE or more of the compared blocks agree
# fully (NCC_HIGH) and PARTIAL_SHARE or more are textured in both and do not agree at all
# (NCC_LOW). In the scoring lab, 1 of 1,493 copies scoring 0.5 or more (a watermarked one) met both.
PARTIAL_SHARE = 0.25
EXTRA_WEIGHT = 0.5  # a foreground block textured in the query only counts half: it may be a stamp or a caption
COLOUR_WEIGHT = 0.2  # colour ranks recolours of one photo; it must not reject a colour-shifted copy
CHROMA_SCALE = 16.0
CHROMA_FLOOR = 4.0  # weight of a grey block in the colour agreement (a saturated one weighs ~40)
# A copy whose colour was removed (greyscale, sepia, a duotone) shows at most one faint tint: 90 %
# of its blocks under TINT_CHROMA (sepia's mid-tones reach ~20 in Lab a*b*, a product's own
# colour usually 30-60), all of one hue (their chroma-weighted hue vectors add up to at least
# ONE_HUE of their lengths), and clearly less colour than the reference (REMOVED_CHROMA less).
# It cannot tell colour variants of one photo apart (see scan.rank_siblings).
TINT_CHROMA = 30.0
ONE_HUE = 0.9
REMOVED_CHROMA = 10.0
# Another colour of the product, not an edited copy: where both pictures have colour, their hues
# turned by more than RECOLOUR_TURN degrees (weighted mean over blocks with HUE_CHROMA of chroma
# in both). Recolour renders of one photo turn them by 60-180°. Such a pair scores
# RECOLOUR_FACTOR of what it would: under the default threshold however well its shapes agree.
# Between two faint tints (both pictures under TINT_CHROMA at the 90th percentile of their blocks'
# chroma) a turn says nothing: of the accuracy benchmark's 300 colour-edited copies, 13 turned
# over 90°, most of them a near-grey product (p90 chroma 7-21) and its sepia or hue-shifted copy
# (p90 7-28), 6 of them lost to this rule before. A turn from or to a product's own colour still
# counts: exempting pairs with a faint tint on one side only flagged 20 more of the benchmark's
# 661 recolour renders (a grey variant against a coloured one, 65 % -> 68 %).
RECOLOUR_TURN = 90.0
HUE_CHROMA = 6.0
RECOLOUR_FACTOR = 0.5

# A product photo's plain background (studio white, a flat colour) is no part of the work: a copy
# may replace it (a cut-out on a new background), and two photos of look-alike products agree on
# it and along its contours. Its pixels are within BACKGROUND_NEAR (Lab distance) of the border's
# median colour and connected to the border, when PLAIN_BORDER of the border is that colour and
# at least MIN_FOREGROUND of the picture is not: a low-contrast photo (the moon's surface) is
# within BACKGROUND_NEAR of its border's colour nearly everywhere, and has no background.
BACKGROUND_NEAR = 10.0
# A white product on white (a T-shirt, a tank top, a sneaker) is the border's colour too, and a
# faint grey line is all that outlines it: a flood within BACKGROUND_NEAR ran through that line
# and took the product's body for background, so a print was all that was compared and the same
# print on another product matched (a logo on a tee, a tank top and a tote: 40 of the 53
# look-alikes the accuracy benchmark flagged on 2026-12-03; after, see RESULTS.md and the commit
# that made the change). A second flood stops at outlines: a
# change of lightness over OUTLINE_STEP (L*, 0-100) within a pixel's 3×3 neighbourhood, widened by
# OUTLINE_GAP pixels to close the gaps of a faint line; it takes back the pixels within
# OUTLINE_GAP + EDGE_BACK of what it reached (the product's blended edge). What the first flood
# reached and the second did not is product when it is one piece of ENCLOSED_BLOCKS blocks or
# more: a narrow gap between a tail and a leg, or the white between a shoe's laces, stays
# background (with it as product, a cut-out of a horse-shaped product on a photo scored 0.75 for
# 0.86). 1.5 stopped at the outlines of the benchmark's white tee and tank top (2.5 did not).
OUTLINE_STEP = 1.5
OUTLINE_GAP = 1
EDGE_BACK = 2
ENCLOSED_BLOCKS = 4
PLAIN_BORDER = 0.6
MIN_FOREGROUND = 0.05
# A block is compared when this share of its pixels is foreground (the rest, background, is left
# out of its correlation); its colour is judged when INNER_SHARE is. In the scoring lab (the
# accuracy benchmark's sample, one scan's block grids) 0.25 and 0.5 ranked alike; 0.9 and 0.99 too.
FOREGROUND_SHARE = 0.25
EDGE = 2  # pixels of the foreground's edge left out: anti-aliasing blends the product with its background
INNER_SHARE = 0.9
# Thin detail on the plain background's colour (text on a white book cover, the seams of a white
# coat) is no foreground once its edge is left out, and the white around it reads as background:
# a crop of such a product had nothing left to compare. A block where the edge took away most of
# the non-background pixels (its foreground share after EDGE under THIN_KEPT of the share before,
# which is at least THIN_MIN) and that has texture is compared over all its pixels, wherever the
# copy kept the reference's background there (its pixels on the background within KEPT_RGB of the
# reference's, mean per block): a cut-out on a new background is still judged on its product.
# On the accuracy benchmark (RESULTS.md, 2026-12-03): heavy crops found 0.820 -> 0.847, every copy
# 0.939 -> 0.949, cut-outs not lower (0.840 -> 0.843), look-alikes flagged 55 -> 53 of 7,591.
THIN_MIN = 0.03
THIN_KEPT = 0.25
KEPT_RGB = 20.0

REFINE_SIDE = 64  # long side of the grey pair the alignment is refined on
REFINE_ITERATIONS = 10
MAX_CORRECTION = 0.15  # of the side (shift) or of the scale: more is a different alignment
PRECISE_INLIERS = 50  # a RANSAC fit to this many keypoints is not refined further
REFINE_FROM = 0.2  # structure at the given alignment below which no refinement is tried

RATIO = 0.85  # Lowe's ratio test within one candidate
MAX_DESCRIPTOR_DISTANCE = 72  # of 256 bits
MIN_MATCHES = 8
MIN_INLIERS = 8
RANSAC_PIXELS = 4.0  # reprojection tolerance in canonical-view pixels (512 px long side)
MAX_ANISOTROPY = 3.0  # a copy may be stretched, not squashed into a line


@dataclass(frozen=True)
class Alignment:
    """How the query maps onto the reference: `matrix` takes query-view pixels (of the mirrored
    view when `mirrored`) to reference-view pixels."""

    matrix: np.ndarray  # 2×3 affine
    mirrored: bool
    inliers: int


@dataclass(frozen=True)
class DenseCheck:
    structure: float  # shrunk share of agreeing textured blocks, [0, 1]
    colour: float  # chroma agreement of the covered blocks, colourful ones weighing most, [0, 1]
    blocks: int  # textured blocks compared
    covered: Box  # bounding box of the part of the reference the query covers, reference-view pixels
    alignment: Alignment  # the alignment after refinement: what the blocks were compared under
    colour_removed: bool = False  # the query shows no colour, or one faint tint, where the reference has colour
    hue_turn: float = 0.0  # degrees the colourful blocks' hues turned from reference to query, [0, 180]
    faint: bool = False  # both pictures show at most a faint tint: their hue turn tells no recolour
    identical: float = 0.0  # share of the compared blocks that agree fully
    different: float = 0.0  # share of the compared blocks that are textured in the query too and do not agree at all
    covered_blocks: int = 0  # blocks of the reference the query covers: `blocks` of them compared

    @property
    def partial(self) -> bool:
        """A shared region, each picture with content the other lacks (see PARTIAL_SHARE)."""
        return self.identical >= PARTIAL_SHARE and self.different >= PARTIAL_SHARE

    @property
    def recoloured(self) -> bool:
        return self.hue_turn > RECOLOUR_TURN and not self.colour_removed and not self.faint

    @property
    def score(self) -> float:
        score = self.structure * (1.0 - COLOUR_WEIGHT + COLOUR_WEIGHT * self.colour)
        return score * RECOLOUR_FACTOR if self.recoloured else score


_NO_ALIGNMENT = Alignment(matrix=np.eye(2, 3), mirrored=False, inliers=0)


def box_alignment(box: Box, query_size: tuple[int, int], reference_size: tuple[int, int], mirrored: bool) -> Alignment:
    """The alignment a global-hash hit implies: `box` of the query view (the whole view, or a
    region of it) shows the whole reference view."""
    x0, y0, x1, y1 = box
    if mirrored:  # the box as it lies in the mirrored view
        x0, x1 = query_size[0] - x1, query_size[0] - x0
    rw, rh = reference_size
    sx, sy = rw / max(1, x1 - x0), rh / max(1, y1 - y0)
    matrix = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])
    return Alignment(matrix=matrix, mirrored=mirrored, inliers=0)


def match_keypoints(
    query_points: np.ndarray,
    query_descriptors: np.ndarray,
    reference_points: np.ndarray,
    reference_descriptors: np.ndarray,
    mirrored: bool,
) -> Alignment | None:
    """RANSAC affine fit on ratio-tested ORB matches; None when no plausible geometry is found."""
    if len(query_descriptors) < MIN_MATCHES or len(reference_descriptors) < MIN_MATCHES:
        return None
    # Exact 2-NN by brute force: FAISS's popcount Hamming search, ~10x OpenCV's BFMatcher here.
    index = faiss.IndexBinaryFlat(reference_descriptors.shape[1] * 8)
    index.add(np.ascontiguousarray(reference_descriptors))
    distances, nearest = index.search(np.ascontiguousarray(query_descriptors), 2)
    good = (distances[:, 0] <= MAX_DESCRIPTOR_DISTANCE) & (distances[:, 0] < RATIO * distances[:, 1])
    if good.sum() < MIN_MATCHES:
        return None
    source = query_points[good]
    target = reference_points[nearest[good, 0]]
    matrix, mask = cv2.estimateAffine2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000, confidence=0.995
    )
    if matrix is None or mask is None:
        return None
    inliers = int(mask.sum())
    if inliers < MIN_INLIERS or not plausible(matrix):
        return None
    return Alignment(matrix=matrix, mirrored=mirrored, inliers=inliers)


def plausible(matrix: np.ndarray) -> bool:
    """Reject degenerate fits: reflections (the mirrored view handles mirrors), collapse, and
    extreme stretch or scale."""
    linear = matrix[:, :2]
    det = float(np.linalg.det(linear))
    if det <= 0:
        return False
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular[1] <= 1e-6 or singular[0] / singular[1] > MAX_ANISOTROPY:
        return False
    return 1 / 16 <= math.sqrt(det) <= 16


@dataclass(frozen=True, eq=False)
class Canvas:
    """A reference thumbnail prepared for dense checks, once per reference: stretched by at most
    a block to whole blocks (so that no edge of the picture falls outside the block grid), with
    its grey block statistics over its foreground (what is not its plain background, see
    `plain_background`), and the small grey copy the alignment is refined on."""

    rgb: np.ndarray  # ch × cw × 3, uint8
    grey: np.ndarray  # float32
    small: np.ndarray  # grey, REFINE_SIDE long side, float32
    foreground: np.ndarray  # 1 on the foreground, 0 on the plain background, float32, ch × cw
    foreground_share: np.ndarray  # block means of foreground (at least 1e-6: a divisor)
    foreground_mean: np.ndarray  # mean grey over each block's foreground pixels
    foreground_std: np.ndarray  # standard deviation of grey over each block's foreground pixels
    block_lab: np.ndarray  # Lab of each block's mean colour, float32: what colour agreement reads
    thin: np.ndarray  # blocks of thin detail on the background (see THIN_KEPT), bool
    background: np.ndarray  # 1 on the plain background (before EDGE), float32, ch × cw
    background_share: np.ndarray  # block means of background (at least 1e-6: a divisor)

    @classmethod
    def of(cls, thumb: np.ndarray) -> Canvas:
        th, tw = thumb.shape[:2]
        cw, ch = -(-tw // BLOCK) * BLOCK, -(-th // BLOCK) * BLOCK
        rgb = cv2.resize(thumb, (cw, ch), interpolation=cv2.INTER_LINEAR) if (cw, ch) != (tw, th) else thumb
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        f = REFINE_SIDE / max(cw, ch)
        small = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        background = plain_background(rgb)
        # the product's edge pixels blend in the background: they are left out with it
        foreground = cv2.erode((~background).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=EDGE)
        canvas = cls._of(rgb, grey, small, foreground.astype(np.float32), background.astype(np.float32))
        if canvas.textured_blocks() < MIN_BLOCKS:  # a thin product (a chain, a frame, line art): all of it
            canvas = cls._of(rgb, grey, small, np.ones(rgb.shape[:2], np.float32), np.zeros(rgb.shape[:2], np.float32))
        return canvas

    def textured_blocks(self) -> int:
        """Foreground blocks with texture to compare: what a copy of all of it is judged on."""
        return int(((self.foreground_share >= FOREGROUND_SHARE) & (self.foreground_std > TEXTURE_STD)).sum())

    @classmethod
    def _of(cls, rgb: np.ndarray, grey: np.ndarray, small: np.ndarray, foreground: np.ndarray,
            background: np.ndarray, known: Canvas | None = None) -> Canvas:
        """The canvas with its block statistics, made once per canvas (every comparison with it
        reads them); what depends on the masks only is taken from `known` when given."""
        share = np.maximum(_block_means(foreground), 1e-6) if known is None else known.foreground_share
        mean, std, _ = _mean_std(grey, foreground, share)
        block_lab = cv2.cvtColor(_block_means(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
        if known is not None:  # the texture test is the comparison's (see _compare_blocks)
            return cls(rgb, grey, small, foreground, share, mean, std, block_lab, known.thin, background,
                       known.background_share)
        before = 1.0 - _block_means(background)
        thin = (share < FOREGROUND_SHARE) & (before >= THIN_MIN) & (share < THIN_KEPT * before)
        canvas = cls(rgb, grey, small, foreground, share, mean, std, block_lab, thin, background,
                     np.maximum(_block_means(background), 1e-6))
        # with texture only; set while the canvas is made, its all-pixel statistics kept for later
        object.__setattr__(canvas, "thin", thin & (canvas.block_std > TEXTURE_STD))
        return canvas

    # Statistics of every pixel of a block and of its background's colour: only a comparison with
    # thin detail in it reads them (most canvases, and most of their coarser copies, never do).
    @functools.cached_property
    def _all_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        mean, std, _ = _mean_std(self.grey)
        return mean, std

    @property
    def block_mean(self) -> np.ndarray:
        """Mean grey over each block's pixels, all of them."""
        return self._all_pixels[0]

    @property
    def block_std(self) -> np.ndarray:
        """Standard deviation of grey over each block's pixels."""
        return self._all_pixels[1]

    @functools.cached_property
    def background_rgb(self) -> np.ndarray:
        """Mean colour of each block's background pixels."""
        return _block_means(self.rgb.astype(np.float32) * self.background[..., None]) / self.background_share[..., None]

    @property
    def size(self) -> tuple[int, int]:
        return (self.rgb.shape[1], self.rgb.shape[0])

    def coarser(self, factor: float) -> Canvas:
        """The canvas as a copy at 1/`factor` of its resolution would show it."""
        cw, ch = self.size
        small = cv2.resize(self.rgb, (max(1, round(cw / factor)), max(1, round(ch / factor))), interpolation=cv2.INTER_AREA)
        rgb = cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return Canvas._of(rgb, grey, self.small, self.foreground, self.background, known=self)


class QueryImage:
    """A query picture as dense checks see it, against however many references: its mirror
    image and its area-shrunk copies are made once (each costs about as much as a comparison)."""

    CACHED = 8  # shrunk copies kept: a query's candidates share a few scales
    SHRINK_STEPS = 8

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self._mirror: np.ndarray | None = None
        self._shrunk: dict[tuple[bool, tuple[int, int]], tuple[np.ndarray, float]] = {}

    def oriented(self, mirrored: bool) -> np.ndarray:
        if not mirrored:
            return self.rgb
        if self._mirror is None:
            self._mirror = _frozen(cv2.flip(self.rgb, 1))  # 10x faster than a reversed numpy copy
        return self._mirror

    def shrunk(self, mirrored: bool, scale: float) -> tuple[np.ndarray, float]:
        """The oriented picture shrunk by about `scale`, and the scale used (see `_shrunk`).
        `scale` is rounded up to a step of SHRINK_STEPS per octave: every reference asks for a
        slightly different one (thumbnails differ in shape), and the warp that follows takes up
        the few per cent left, too few to alias."""
        scale = _step_up(scale, self.SHRINK_STEPS)
        key = (mirrored, load.scaled_size(self.rgb.shape, scale))
        if key not in self._shrunk:
            if len(self._shrunk) >= self.CACHED:
                self._shrunk.clear()
            image, used = _shrunk(self.oriented(mirrored), scale)
            self._shrunk[key] = (_frozen(image), used)
        return self._shrunk[key]


def _step_up(scale: float, steps: int) -> float:
    """The smallest 2^(k/steps) at or above `scale` (a whole k), 1 at most."""
    exponent = math.ceil(math.log2(max(scale, 1e-6)) * steps - 1e-9)  # 1e-9: float error is no step
    return min(1.0, 2 ** (exponent / steps))


def _frozen(array: np.ndarray) -> np.ndarray:
    """Read-only: a cached picture must never be changed by the check that borrows it."""
    array.setflags(write=False)
    return array


def dense_check(canvas: Canvas, reference_view_size: tuple[int, int], query_view: np.ndarray | QueryImage,
                alignment: Alignment, *, query_detail: float = 1.0) -> DenseCheck:
    """Refine the alignment, warp the query onto the reference canvas, compare block by block.

    `query_view`: the query picture (its canonical view or a region), best as a QueryImage
    when it is checked against several references. `query_detail`: original query pixels per
    query-view pixel (below 1 when a small query was upscaled to its view); the reference is
    brought down to the query's real resolution, so that detail the copy never had does not
    count against it.
    """
    if not isinstance(query_view, QueryImage):
        query_view = QueryImage(query_view)
    cw, ch = canvas.size
    to_canvas = np.diag([cw / reference_view_size[0], ch / reference_view_size[1], 1.0])
    query = query_view.oriented(alignment.mirrored)
    initial = to_canvas @ _square(alignment.matrix)
    # A query larger than the canvas is shrunk once (area averaging: a bilinear warp alone would
    # alias), not at each of the warps below.
    shrink = min(1.0, _scale(initial))
    if shrink < 0.7:
        query, shrink = query_view.shrunk(alignment.mirrored, shrink)
        initial, query_detail = initial @ np.diag([1 / shrink, 1 / shrink, 1.0]), query_detail / shrink
    else:
        shrink = 1.0
    best = (_compare_at(canvas, query, initial, query_detail), initial)
    # The refinement works on a coarse pair: it polishes a rough alignment (a hash hit's, or a
    # fit to few keypoints) and can spoil a precise one (RANSAC's on many): both are compared.
    # A pair that agrees nowhere at its alignment is not a copy a few pixels off: no refinement.
    if alignment.inliers < PRECISE_INLIERS and best[0].structure >= REFINE_FROM:
        grey = cv2.cvtColor(query, cv2.COLOR_RGB2GRAY)
        # a hash hit is located only by its frame; a keypoint fit is located by the keypoints
        shifted = _shift(canvas, grey, initial) if alignment.inliers == 0 else initial
        for refined in (shifted, _refine(canvas, grey, shifted)):
            if refined is initial:  # no correction found: compared already
                continue
            check = _compare_at(canvas, query, refined, query_detail)
            if check.structure > best[0].structure:
                best = (check, refined)
    check, matrix = best
    x0, y0, x1, y1 = check.covered
    fx, fy = reference_view_size[0] / cw, reference_view_size[1] / ch
    view_matrix = np.linalg.inv(to_canvas) @ matrix @ np.diag([shrink, shrink, 1.0])
    refined_alignment = Alignment(matrix=view_matrix[:2], mirrored=alignment.mirrored,
                                  inliers=alignment.inliers)
    return dataclasses.replace(check, covered=(round(x0 * fx), round(y0 * fy), round(x1 * fx), round(y1 * fy)),
                               alignment=refined_alignment)


def _compare_at(canvas: Canvas, query: np.ndarray, matrix: np.ndarray, query_detail: float) -> DenseCheck:
    cw, ch = canvas.size
    warped, mask = _warp(query, matrix, (cw, ch))
    coarser = _scale(matrix) / max(query_detail, 1e-6)  # canvas pixels per real query pixel
    reference = canvas.coarser(coarser) if coarser > 1.25 else canvas
    return _compare_blocks(reference, warped, mask, max(1.0, coarser) ** 2)


def _square(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def _scale(matrix: np.ndarray) -> float:
    return math.sqrt(abs(float(np.linalg.det(matrix[:2, :2]))))


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`image` mapped by the 3×3 `matrix` into a canvas of `size`, and the mask of what it covers.
    A big reduction is shrunk with area averaging first: a bilinear warp alone would alias."""
    scale = _scale(matrix)
    if scale < 0.7:
        image, scale = _shrunk(image, scale)
        matrix = matrix @ np.diag([1 / scale, 1 / scale, 1.0])
    warped = cv2.warpAffine(image, matrix[:2], size, flags=cv2.INTER_LINEAR, borderValue=0)
    ones = np.full(image.shape[:2], 255, np.uint8)
    mask = cv2.warpAffine(ones, matrix[:2], size, flags=cv2.INTER_NEAREST, borderValue=0)
    return warped, mask


def _shrunk(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """`image` shrunk by about `scale` (area averaging), never to nothing, and the scale used."""
    size = load.scaled_size(image.shape, scale)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / image.shape[1]


def _shift(canvas: Canvas, query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Correct the translation of a query→canvas map by phase correlation (sub-pixel, cheap):
    a hash hit's frame (a trimmed picture or region) a pixel or two off is enough to decorrelate
    fine texture."""
    warped, mask = _warp(query, matrix, canvas.size)
    warped = warped.astype(np.float32)
    inside = mask > 0
    if inside.mean() < 0.05:
        return matrix
    warped[~inside] = warped[inside].mean()
    # phaseCorrelate windows its inputs in place: the cached canvas is given a copy
    (dx, dy), _ = cv2.phaseCorrelate(canvas.grey.copy(), warped, _hanning(canvas.size))
    if max(abs(dx), abs(dy)) > MAX_CORRECTION * max(canvas.size):
        return matrix
    return np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]]) @ matrix


@functools.lru_cache(maxsize=64)
def _hanning(size: tuple[int, int]) -> np.ndarray:
    return cv2.createHanningWindow(size, cv2.CV_32F)


def _refine(canvas: Canvas, query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Polish a query→reference map with ECC (OpenCV's enhanced correlation coefficient) on a
    small grey pair. Hash hits are aligned only by their trimmed frames and RANSAC fits only by
    a few keypoints: a few pixels off, fine texture stops agreeing. ECC is invariant to
    brightness and contrast, so colour-edited copies refine as well as plain ones. A refinement
    that fails, or moves the map far, is dropped: the map is then taken as it was."""
    small_ref = canvas.small
    down = np.diag([small_ref.shape[1] / canvas.size[0], small_ref.shape[0] / canvas.size[1], 1.0])
    small_query, mask = _warp(query, down @ matrix, (small_ref.shape[1], small_ref.shape[0]))
    if (mask > 0).mean() < 0.05:
        return matrix
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, REFINE_ITERATIONS, 1e-4)
    try:
        _, warp = cv2.findTransformECC(small_ref, small_query.astype(np.float32), warp, cv2.MOTION_AFFINE,
                                       criteria, mask, 3)
    except cv2.error:  # no texture to align on, or no convergence
        return matrix
    linear = warp[:, :2].astype(np.float64)
    shift = np.abs(warp[:, 2]).max() / max(small_ref.shape)
    if not np.all(np.isfinite(warp)) or shift > MAX_CORRECTION or np.abs(linear - np.eye(2)).max() > MAX_CORRECTION:
        return matrix
    # warp maps small-reference pixels to small-query pixels: the refined map is its inverse
    # composed after the original one.
    return np.linalg.inv(down) @ np.linalg.inv(_square(warp.astype(np.float64))) @ down @ matrix


def plain_background(rgb: np.ndarray) -> np.ndarray:
    """Pixels (True) of the plain background of a picture: the border's colour, reached from the
    border without crossing an outline; none when the border is not plain (a scene, a textured
    backdrop)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    colour = np.median(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]), axis=0)
    near = np.linalg.norm(lab - colour, axis=2) < BACKGROUND_NEAR
    nothing = np.zeros(rgb.shape[:2], bool)
    if np.concatenate([near[0], near[-1], near[:, 0], near[:, -1]]).mean() < PLAIN_BORDER:
        return nothing
    background = _reached(near, 8)
    # what the flood reaches only through an outline, when it is large, is a product of the colour
    outside = _reached(near & ~_outlines(lab[..., 0]), 4).astype(np.uint8)
    outside = cv2.dilate(outside, np.ones((3, 3), np.uint8), iterations=OUTLINE_GAP + EDGE_BACK) > 0
    _, labels, stats, _ = cv2.connectedComponentsWithStats((background & ~outside).astype(np.uint8), connectivity=8)
    large = np.nonzero(stats[:, cv2.CC_STAT_AREA] >= ENCLOSED_BLOCKS * BLOCK * BLOCK)[0]
    background &= ~np.isin(labels, large[large > 0])
    return background if background.mean() <= 1.0 - MIN_FOREGROUND else nothing


def _reached(passable: np.ndarray, connectivity: int) -> np.ndarray:
    """The `passable` pixels connected to the picture's border."""
    _, labels = cv2.connectedComponents(passable.astype(np.uint8), connectivity=connectivity)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _outlines(lightness: np.ndarray) -> np.ndarray:
    """Where lightness changes by more than OUTLINE_STEP within a 3×3 neighbourhood, widened to
    close the gaps of a faint line: what a flood from the border must not cross. A frame line
    along the picture's own edge is no outline."""
    kernel = np.ones((3, 3), np.uint8)
    steps = (cv2.dilate(lightness, kernel) - cv2.erode(lightness, kernel)) > OUTLINE_STEP
    outlines = cv2.dilate(steps.astype(np.uint8), kernel, iterations=OUTLINE_GAP) > 0
    margin = OUTLINE_GAP + 2
    outlines[:margin], outlines[-margin:], outlines[:, :margin], outlines[:, -margin:] = False, False, False, False
    return outlines


def _block_means(image: np.ndarray) -> np.ndarray:
    """Mean of each BLOCK × BLOCK block (the image is whole blocks): an exact box average."""
    h, w = image.shape[:2]
    return cv2.resize(image, (w // BLOCK, h // BLOCK), interpolation=cv2.INTER_AREA)


def _mean_std(values: np.ndarray, weight: np.ndarray | None = None,
              share: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block: the mean and standard deviation of `values` over the pixels `weight` keeps (all
    of them without), `share` being the block means of `weight`; and the weighted values."""
    inside = values if weight is None else weight * values
    mean = _block_means(inside) / share
    return mean, np.sqrt(np.maximum(_block_means(inside * values) / share - mean**2, 0)), inside


def _correlation(reference_grey: np.ndarray, reference_mean: np.ndarray, reference_std: np.ndarray,
                 query: np.ndarray, weight: np.ndarray | None = None,
                 share: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per block: the normalised cross-correlation of the query with the reference over the
    pixels `weight` keeps (see `_mean_std`), and the query's standard deviation there."""
    query_mean, query_std, inside = _mean_std(query, weight, share)
    product = _block_means(inside * reference_grey) / share
    return (product - reference_mean * query_mean) / (reference_std * query_std + 1e-6), query_std


def _compare_blocks(reference: Canvas, warped: np.ndarray, mask: np.ndarray, blocks_per_view: float = 1.0) -> DenseCheck:
    """The share of the reference's textured foreground blocks that the query reproduces (each by
    how well it correlates over the block's foreground pixels, see NCC_LOW and NCC_HIGH).

    The reference's plain background (see `plain_background`) is compared nowhere: two photos of
    look-alike products on white agree on it and along the contours it draws, and a copy may
    have replaced it (a cut-out on a new background). Texture the query has where the reference's
    foreground is flat counts against it, at half weight: a copy may carry a stamp or a caption.

    The share is shrunk towards 0 by the amount of evidence: PRIOR_BLOCKS pseudo-blocks that
    disagree. A copy smaller than the canvas has fewer independent blocks than the canvas shows,
    `blocks_per_view` canvas blocks for each of its own."""
    covered = _block_means(mask.astype(np.float32)) > 254.5
    if not covered.any():
        return DenseCheck(0.0, 0.0, 0, (0, 0, 0, 0), _NO_ALIGNMENT)
    query = cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY).astype(np.float32)
    ref_std = reference.foreground_std
    ncc, query_std = _correlation(reference.grey, reference.foreground_mean, ref_std, query,
                                  reference.foreground, reference.foreground_share)
    foreground = covered & (reference.foreground_share >= FOREGROUND_SHARE)
    compared = foreground & (ref_std > TEXTURE_STD)
    thin = covered & reference.thin
    if thin.any():  # thin detail, compared over all its block where the copy kept the background
        thin &= reference.block_std > TEXTURE_STD
        kept = _block_means(warped.astype(np.float32) * reference.background[..., None]) / reference.background_share[..., None]
        thin &= np.linalg.norm(kept - reference.background_rgb, axis=2) < KEPT_RGB
    if thin.any():
        all_ncc, all_std = _correlation(reference.grey, reference.block_mean, reference.block_std, query)
        ncc, query_std = np.where(thin, all_ncc, ncc), np.where(thin, all_std, query_std)
        compared = compared | thin
    extra = foreground & ~compared & (query_std > TEXTURE_STD)
    count = int(compared.sum())
    agree = float(np.clip((ncc[compared] - NCC_LOW) / (NCC_HIGH - NCC_LOW), 0.0, 1.0).sum())
    identical = float((ncc[compared] >= NCC_HIGH).mean()) if count else 0.0
    different = float(((ncc < NCC_LOW) & (query_std > TEXTURE_STD))[compared].mean()) if count else 0.0
    weight = count + EXTRA_WEIGHT * int(extra.sum())
    structure = agree / (weight + PRIOR_BLOCKS * blocks_per_view) if count >= MIN_BLOCKS else 0.0

    # Colour agreement, weighted by how colourful each block is: on a product photographed on
    # white, the product's blocks tell its red variant from the blue one, not the background's.
    # Blocks inside the foreground only, when there are some: a block on its edge mixes in the
    # background, which a cut-out copy replaced.
    inner = covered & (reference.foreground_share >= INNER_SHARE)
    judged = inner if inner.sum() >= MIN_BLOCKS else foreground if foreground.any() else covered
    ref_lab = reference.block_lab
    query_lab = cv2.cvtColor(_block_means(warped), cv2.COLOR_RGB2LAB).astype(np.float32)
    ref_ab, query_ab = ref_lab[..., 1:][judged] - 128, query_lab[..., 1:][judged] - 128
    distance = np.linalg.norm(ref_ab - query_ab, axis=-1)
    ref_chroma, query_chroma = np.linalg.norm(ref_ab, axis=-1), np.linalg.norm(query_ab, axis=-1)
    ref_p90, query_p90 = _p90(ref_chroma), _p90(query_chroma)
    colourful = np.maximum(ref_chroma, query_chroma) + CHROMA_FLOOR
    colour = float((colourful * np.exp(-distance / CHROMA_SCALE)).sum() / colourful.sum())

    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return DenseCheck(structure=structure, colour=colour, blocks=count, covered=box, alignment=_NO_ALIGNMENT,
                      colour_removed=colour_removed(query_ab, query_chroma, ref_p90, query_p90),
                      hue_turn=hue_turn(ref_ab, query_ab), faint=max(ref_p90, query_p90) < TINT_CHROMA,
                      identical=identical, different=different, covered_blocks=int(covered.sum()))


def colour_removed(query_ab: np.ndarray, query_chroma: np.ndarray, reference_p90: float, query_p90: float) -> bool:
    """Do the query's blocks (N×2 Lab a*b*, and their chroma) show no colour, or one faint tint,
    where the reference's show colour (see TINT_CHROMA)? `*_p90`: each picture's 90th percentile
    of block chroma."""
    if query_p90 >= TINT_CHROMA or reference_p90 < query_p90 + REMOVED_CHROMA:
        return False
    weight = np.maximum(query_chroma - CHROMA_FLOOR, 0.0)  # JPEG noise on grey has no hue
    if weight.sum() < 1e-6:
        return True
    hues = query_ab / np.maximum(query_chroma, 1e-6)[:, None]
    return float(np.linalg.norm((hues * weight[:, None]).sum(axis=0))) >= ONE_HUE * float(weight.sum())


def hue_turn(reference_ab: np.ndarray, query_ab: np.ndarray) -> float:
    """How many degrees the hues turned from reference to query blocks (N×2 Lab a*b*): the
    chroma-weighted circular mean of the turn over blocks with colour in both; 0 without such."""
    ref = reference_ab[:, 0] + 1j * reference_ab[:, 1]
    query = query_ab[:, 0] + 1j * query_ab[:, 1]
    weight = np.minimum(np.abs(ref), np.abs(query)) - HUE_CHROMA
    both = weight > 0
    if both.sum() < MIN_BLOCKS:  # a few tinted blocks are no colour to speak of
        return 0.0
    turns = query[both] / ref[both]
    return abs(math.degrees(float(np.angle((weight[both] * turns / np.abs(turns)).sum()))))


def _p90(values: np.ndarray) -> float:
    """The 90th percentile (nearest rank): np.percentile costs 30x more on a few hundred blocks."""
    if not len(values):
        return 0.0
    k = (len(values) - 1) * 9 // 10
    return float(np.partition(values, k)[k])


def textured_centres(grey: np.ndarray) -> np.ndarray:
    """Centres (N×2, x and y) of the textured blocks of a grey picture; of all its blocks when
    none is textured (a flat picture: every part of it counts alike)."""
    height, width = grey.shape[0] // BLOCK * BLOCK, grey.shape[1] // BLOCK * BLOCK
    if not height or not width:  # a sliver of a banner: one block's worth, at its centre
        return np.array([[grey.shape[1] / 2, grey.shape[0] / 2]], np.float32)
    whole = grey[:height, :width].astype(np.float32)
    std = np.sqrt(np.maximum(_block_means(whole * whole) - _block_means(whole) ** 2, 0))
    textured = std > TEXTURE_STD
    rows, cols = np.nonzero(textured if textured.any() else np.ones_like(textured))
    return np.column_stack([(cols + 0.5) * BLOCK, (rows + 0.5) * BLOCK]).astype(np.float32)


def share_inside(points: np.ndarray, quad: np.ndarray) -> float:
    """Share of `points` inside the convex quadrilateral `quad` (4×2, corners in order); 0 for a
    quad without area (a check that covered nothing)."""
    if not len(points) or abs(cv2.contourArea(quad.astype(np.float32))) < 1.0:
        return 0.0
    edges = np.roll(quad, -1, axis=0) - quad
    relative = points[:, None, :] - quad[None]
    cross = edges[None, :, 0] * relative[..., 1] - edges[None, :, 1] * relative[..., 0]
    return float(((cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)).mean())


def similarity_parts(matrix: np.ndarray) -> tuple[float, float]:
    """(scale, rotation in degrees, counter-clockwise as seen) of a reference→query affine map."""
    linear = matrix[:, :2]
    scale = math.sqrt(abs(float(np.linalg.det(linear))))
    rotation = -math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
    return scale, rotation
