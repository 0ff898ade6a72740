"""Decoded images → fingerprints: the compact, storable description of one image file.

A fingerprint is computed from the *canonical view* of an image: near-uniform borders trimmed,
scaled so that its long side is FEATURE_SIDE. Catalog and queries take the same path, so that
their hashes agree (a different decode path moves a 64-bit hash by a few bits: the hashes alone,
`fingerprint_file(with_features=False)`, come from a HASH_SIDE view and differ by that much).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import features, hashing, load
from .limits import Limits, time_limit

# Bumped whenever a change makes fingerprints incomparable with the previous ones (2: hashes on an
# area-averaged shrink; 3: dHash shrunk from pHash's 32×32; 4: JPEG drafts within DRAFT_SLACK;
# 5: borders searched on an averaged grid, edges placed to the pixel; 6: palette, bilevel and
# 16-bit pictures reduced before their conversion to RGB, within the decode budget):
# the store records it per image, and `Catalog.add` redoes older ones.
FINGERPRINT_VERSION = 6
THUMB_SIDE = 256  # reference pixels kept in the store for verification and evidence
THUMB_QUALITY = 90
HASH_SIDE = hashing.TRIM_GRID  # the view hashes alone need: the trim's grid (pHash itself, 32 px)
REGION_MIN_SIDE = 48  # original pixels: a smaller sub-picture holds too little to be verified


@dataclass(frozen=True)
class View:
    """The canonical picture of one file: trimmed, RGB, long side <= FEATURE_SIDE."""

    rgb: np.ndarray
    box: hashing.Box  # the kept region, in pixels of the original image
    width: int  # original size
    height: int

    @property
    def grey(self) -> np.ndarray:
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """Everything imguard keeps of one image file."""

    sha256: str
    nbytes: int
    width: int
    height: int
    box: hashing.Box  # canonical view's region in original pixels
    view_size: tuple[int, int]  # canonical view's (width, height): the frame of the keypoints
    hashes: dict[str, bytes]  # phash, dhash and their mirrored variants, 8 bytes each
    keypoints: np.ndarray = field(repr=False)  # N×2 float32, view pixels
    descriptors: np.ndarray = field(repr=False)  # N×32 uint8 (ORB)
    thumbnail: bytes | None = field(default=None, repr=False)  # JPEG of the view, THUMB_SIDE


def canonical_view(decoded: load.Decoded, side: int = features.FEATURE_SIDE) -> View:
    """Trim padding and letterboxes, then scale so that the long side is at most `side`."""
    rgb = decoded.rgb
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = hashing.trim_box(rgb)
    rgb = rgb[y0:y1, x0:x1]
    # Small copies (thumbnails, pasted-in pictures) are brought up to the same size as the
    # catalog's views, so that ORB sees them at the scales it saw the original.
    rgb = _fit(rgb, side, upscale=True)
    sx, sy = decoded.width / width, decoded.height / height
    box = (round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy))
    return View(rgb=np.ascontiguousarray(rgb), box=box, width=decoded.width, height=decoded.height)


def _fit(rgb: np.ndarray, side: int, *, upscale: bool = False) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale == 1 or (scale > 1 and not upscale):
        return rgb
    size = load.scaled_size(rgb.shape, scale)
    # Area averaging is only needed against aliasing when shrinking by 2x or more; for the
    # last, smaller step bilinear is 6x faster.
    interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def fingerprint_view(
    view: View, decoded: load.Decoded, *, with_features: bool = True, with_thumbnail: bool = False
) -> Fingerprint:
    grey = view.grey
    hashes = hashing.global_hashes(grey)
    if with_features:
        keypoints, descriptors = features.orb_features(grey)
    else:
        keypoints = np.zeros((0, 2), np.float32)
        descriptors = np.zeros((0, features.DESCRIPTOR_BYTES), np.uint8)
    return Fingerprint(
        sha256=decoded.sha256,
        nbytes=decoded.nbytes,
        width=decoded.width,
        height=decoded.height,
        box=view.box,
        view_size=(view.rgb.shape[1], view.rgb.shape[0]),
        hashes=hashes,
        keypoints=keypoints,
        descriptors=descriptors,
        thumbnail=encode_thumbnail(view.rgb) if with_thumbnail else None,
    )


def region_hashes(view: View) -> list[tuple[hashing.Box, np.ndarray, dict[str, bytes]]]:
    """The sub-pictures of a composite view (see `hashing.regions`), each trimmed like a
    canonical view: box (view pixels), RGB crop and global hashes. A photo pasted into a
    collage, a screenshot or a meme is found by the hash of its own region."""
    out = []
    original_per_view = (view.box[2] - view.box[0]) / view.rgb.shape[1]
    for box in hashing.regions(view.rgb):
        if min(box[2] - box[0], box[3] - box[1]) * original_per_view < REGION_MIN_SIDE:
            continue
        crop = np.ascontiguousarray(view.rgb[box[1]:box[3], box[0]:box[2]])
        out.append((box, crop, hashing.global_hashes(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))))
    return out


def features_of_file(path: str | os.PathLike[str]) -> tuple[features.Features, features.Features]:
    """The ORB features of an image file's canonical view and of its mirror image (in the mirror
    image's coordinates), as a scan extracts them from a query: what a catalog image needs to be
    looked for in what a nightly run kept of competitor images."""
    view = canonical_view(load.load(path, features.FEATURE_SIDE))
    return features.features_and_mirror(view.grey)


def encode_thumbnail(rgb: np.ndarray) -> bytes:
    small = _fit(rgb, THUMB_SIDE)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise ValueError("thumbnail encoding failed")
    return data.tobytes()


def decode_thumbnail(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fingerprint_file(
    path: str | os.PathLike[str], *, with_features: bool = True, with_thumbnail: bool = False,
    limits: Limits = Limits(),
) -> Fingerprint:
    """Fingerprint one image file, decoding no more pixels than the parts asked for need (hashes
    alone: a JPEG at 1/8 scale), within `limits` (bytes read, memory decoded, seconds). Raises
    ImageError (path and reason) when it is not readable or over a limit."""
    side = max(HASH_SIDE, features.FEATURE_SIDE if with_features else 0, THUMB_SIDE if with_thumbnail else 0)
    with time_limit(os.fspath(path), limits.seconds):
        decoded = load.load(path, side, limits)
        view = canonical_view(decoded, side)
        return fingerprint_view(view, decoded, with_features=with_features, with_thumbnail=with_thumbnail)
