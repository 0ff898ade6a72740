"""Candidates → verified matches: geometric verification and the dense check of the aligned pair.

A candidate (a hash hit or a catalog image that local features voted for) is aligned to the query,
either by the identity of the two canonical views (hash path) or by an affine transform that RANSAC
fits to matched ORB keypoints (feature path). The aligned pair then gets a dense check: over the
reference's textured blocks that the query covers, the share whose normalised cross-correlation
agrees. Look-alike products shot the same way, and composites that share a model's face or legs,
can gather as many keypoint inliers as a real copy; they fail the dense check
(../shared/notes/measured.md, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]

BLOCK = 16  # block side in reference-thumbnail pixels (256 px long side: up to 16×16 blocks)
TEXTURE_STD = 6.0  # grey-level std above which a block has structure to compare
NCC_AGREE = 0.5
MIN_BLOCKS = 6  # fewer compared blocks than this is no evidence at all
PRIOR_BLOCKS = 3.0  # shrinks the share of small regions towards 0: few blocks, weak evidence
COLOUR_WEIGHT = 0.2  # colour ranks recolours of one photo; it must not reject a colour-shifted copy
CHROMA_SCALE = 16.0

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
    colour: float  # chroma agreement of the covered blocks, [0, 1]
    blocks: int  # textured blocks compared
    covered: Box  # covered part of the reference, thumbnail pixels

    @property
    def score(self) -> float:
        return self.structure * (1.0 - COLOUR_WEIGHT + COLOUR_WEIGHT * self.colour)


def identity_alignment(query_size: tuple[int, int], reference_size: tuple[int, int], mirrored: bool) -> Alignment:
    """The alignment a global-hash hit implies: the two canonical views cover the same picture."""
    qw, qh = query_size
    rw, rh = reference_size
    matrix = np.array([[rw / qw, 0.0, 0.0], [0.0, rh / qh, 0.0]])
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
    pairs = _BF.knnMatch(query_descriptors, reference_descriptors, k=2)
    good = [
        p[0]
        for p in pairs
        if len(p) == 2 and p[0].distance <= MAX_DESCRIPTOR_DISTANCE and p[0].distance < RATIO * p[1].distance
    ]
    if len(good) < MIN_MATCHES:
        return None
    source = query_points[[m.queryIdx for m in good]]
    target = reference_points[[m.trainIdx for m in good]]
    matrix, mask = cv2.estimateAffine2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000, confidence=0.995
    )
    if matrix is None or mask is None:
        return None
    inliers = int(mask.sum())
    if inliers < MIN_INLIERS or not plausible(matrix):
        return None
    return Alignment(matrix=matrix, mirrored=mirrored, inliers=inliers)


_BF = cv2.BFMatcher(cv2.NORM_HAMMING)


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


def dense_check(reference_thumb: np.ndarray, reference_view_size: tuple[int, int], query_view: np.ndarray,
                alignment: Alignment) -> DenseCheck:
    """Warp the query onto the reference thumbnail and compare them block by block."""
    th, tw = reference_thumb.shape[:2]
    to_thumb = np.diag([tw / reference_view_size[0], th / reference_view_size[1], 1.0])
    query = query_view[:, ::-1] if alignment.mirrored else query_view
    matrix = to_thumb[:2] @ np.vstack([alignment.matrix, [0, 0, 1]])
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.7:  # shrink first with area averaging: a bilinear warp alone would alias
        small = cv2.resize(np.ascontiguousarray(query), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / scale, 1 / scale, 1.0])
        query = small
    query = np.ascontiguousarray(query)
    warped = cv2.warpAffine(query, matrix, (tw, th), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    ones = np.full(query.shape[:2], 255, np.uint8)
    mask = cv2.warpAffine(ones, matrix, (tw, th), flags=cv2.INTER_NEAREST, borderValue=0)
    return _compare_blocks(reference_thumb, warped, mask)


def _blocks(array: np.ndarray) -> np.ndarray:
    """Cut an H×W(×C) array into (rows, cols, BLOCK*BLOCK(, C)) blocks, dropping the ragged edge."""
    rows, cols = array.shape[0] // BLOCK, array.shape[1] // BLOCK
    cut = array[: rows * BLOCK, : cols * BLOCK]
    shape = (rows, BLOCK, cols, BLOCK) + cut.shape[2:]
    return cut.reshape(shape).swapaxes(1, 2).reshape((rows, cols, BLOCK * BLOCK) + cut.shape[2:])


def _compare_blocks(reference: np.ndarray, warped: np.ndarray, mask: np.ndarray) -> DenseCheck:
    covered = _blocks(mask).min(axis=2) == 255
    if not covered.any():
        return DenseCheck(0.0, 0.0, 0, (0, 0, 0, 0))
    ref_grey = _blocks(cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY).astype(np.float32))
    query_grey = _blocks(cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY).astype(np.float32))
    ref_centred = ref_grey - ref_grey.mean(axis=2, keepdims=True)
    query_centred = query_grey - query_grey.mean(axis=2, keepdims=True)
    ref_std = np.sqrt((ref_centred**2).mean(axis=2))
    query_std = np.sqrt((query_centred**2).mean(axis=2))
    ncc = (ref_centred * query_centred).mean(axis=2) / (ref_std * query_std + 1e-6)
    compared = covered & (ref_std > TEXTURE_STD)
    count = int(compared.sum())
    agree = int((compared & (ncc > NCC_AGREE)).sum())
    structure = agree / (count + PRIOR_BLOCKS) if count >= MIN_BLOCKS else 0.0

    ref_lab = _blocks(cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)).mean(axis=2)
    query_lab = _blocks(cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float32)).mean(axis=2)
    chroma = np.linalg.norm(ref_lab[..., 1:] - query_lab[..., 1:], axis=-1)[covered]
    colour = float(np.exp(-chroma / CHROMA_SCALE).mean())

    rows, cols = np.nonzero(covered)
    box = (int(cols.min()) * BLOCK, int(rows.min()) * BLOCK, (int(cols.max()) + 1) * BLOCK, (int(rows.max()) + 1) * BLOCK)
    return DenseCheck(structure=structure, colour=colour, blocks=count, covered=box)


def similarity_parts(matrix: np.ndarray) -> tuple[float, float]:
    """(scale, rotation in degrees, counter-clockwise as seen) of a reference→query affine map."""
    linear = matrix[:, :2]
    scale = math.sqrt(abs(float(np.linalg.det(linear))))
    rotation = -math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
    return scale, rotation
