"""Images → local features: ORB keypoints and 256-bit binary descriptors (OpenCV).

Global hashes fail on crops, rotations and copies pasted into a bigger picture; local features
survive those edits, and ORB's binary descriptors go straight into FAISS binary indexes.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

# Measured (benchmarks/accuracy.py, ../shared/notes/measured.md): 700 features on a 512 px view
# found more copies than more features on bigger views, where look-alikes gain matches too.
FEATURE_SIDE = 512
N_FEATURES = 700
DESCRIPTOR_BYTES = 32
SCALE_FACTOR = 1.2  # between ORB's pyramid levels


@functools.lru_cache(maxsize=4)
def _orb(n_features: int) -> cv2.ORB:
    # fastThreshold below the default finds corners on the soft, low-contrast edges of products
    # photographed on white, where the default finds too few.
    return cv2.ORB_create(nfeatures=n_features, scaleFactor=SCALE_FACTOR, nlevels=8, fastThreshold=12)


# ORB describes a 31 px patch around each keypoint and finds none closer to an edge: a picture
# thinner than that has no features, and the pyramid of a thin strip (a 10000×2 banner, shown at
# 512×1) would shrink a level to nothing, which OpenCV refuses with an error.
MIN_SIDE = 32


def _detect(grey: np.ndarray, n_features: int) -> tuple[list[cv2.KeyPoint], np.ndarray | None]:
    if min(grey.shape[:2]) < MIN_SIDE:
        return [], None
    return _orb(n_features).detectAndCompute(grey, None)


def _as_arrays(keypoints, descriptors) -> tuple[np.ndarray, np.ndarray]:
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
    points = cv2.KeyPoint.convert(keypoints)  # N×2 float32, 40x faster than a list of kp.pt
    return points, np.ascontiguousarray(descriptors, dtype=np.uint8)


def orb_features(grey: np.ndarray, n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (N×2 float32, pixels of `grey`) and descriptors (N×32 uint8)."""
    return _as_arrays(*_detect(grey, n_features))


Features = tuple[np.ndarray, np.ndarray]


def features_and_mirror(grey: np.ndarray, n_features: int = N_FEATURES) -> tuple[Features, Features]:
    """The features of `grey` and those of its left-right mirror image (in the mirror image's
    coordinates). ORB descriptors are not mirror-invariant, so a mirrored copy needs them.

    FAST corners and their scores are mirror-symmetric, so the mirror's keypoints are the mirrored
    keypoints, reflected in the pyramid level each was found on, with the orientation reflected
    (180° − angle): only the descriptors are computed again. That costs half of a second
    detection and gives the very same keypoints and descriptors for ~99% of them (tested).
    """
    keypoints, descriptors = _detect(grey, n_features)
    width = grey.shape[1]
    levels: dict[int, tuple[float, int]] = {}  # octave -> its scale, the last column at that level
    reflected = []
    for kp in keypoints:
        if kp.octave not in levels:
            scale = SCALE_FACTOR ** kp.octave
            levels[kp.octave] = (scale, round(width / scale) - 1)
        scale, edge = levels[kp.octave]
        x, y = kp.pt
        angle = (180.0 - kp.angle) % 360.0
        reflected.append(cv2.KeyPoint((edge - x / scale) * scale, y, kp.size, angle, kp.response, kp.octave))
    if reflected:
        reflected, mirror_descriptors = _orb(n_features).compute(cv2.flip(grey, 1), reflected)
    else:
        mirror_descriptors = None
    return _as_arrays(keypoints, descriptors), _as_arrays(reflected, mirror_descriptors)
