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


@functools.lru_cache(maxsize=4)
def _orb(n_features: int) -> cv2.ORB:
    # fastThreshold below the default finds corners on the soft, low-contrast edges of products
    # photographed on white, where the default finds too few.
    return cv2.ORB_create(nfeatures=n_features, scaleFactor=1.2, nlevels=8, fastThreshold=12)


def orb_features(grey: np.ndarray, n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (N×2 float32, pixels of `grey`) and descriptors (N×32 uint8)."""
    keypoints, descriptors = _orb(n_features).detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    return points, np.ascontiguousarray(descriptors, dtype=np.uint8)


def mirrored_features(grey: np.ndarray, n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Features of the left-right mirror image, in the coordinates of the mirror image.

    ORB descriptors are not mirror-invariant: a mirrored copy needs a mirrored view.
    """
    return orb_features(np.ascontiguousarray(grey[:, ::-1]), n_features)
