"""Queries → matches: find catalog images in competitor images.

Per chunk of query files (one unit of parallel work):
1. decode to the canonical view and hash it, and the sub-pictures of a composite (a collage's
   cells, the photo in a screenshot); a byte-identical file is a match at 1.0;
2. search the pHash/dHash indexes (both orientations, batched); each hash hit is verified where
   the hash says it is (the dense check of `verify`): a confident one is the fast path, and ends there;
3. otherwise extract ORB features of the view (and of its mirror image), search the descriptor
   index (batched), and let the neighbours vote for catalog images; verify the best-voted with
   RANSAC, then the dense check;
4. a composite still without a confident match gets the same on each sub-picture, cut from the
   full-resolution image: a copy pasted small into a screenshot has too few pixels in the view;
5. rank siblings (see `rank_siblings`), keep what passes the threshold.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import shutil
import sqlite3
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import engine, features, fetch, fingerprint, hashing, load, verify
from ._version import __version__
from .errors import CatalogError, ImageError
from .index import CatalogIndex
from .limits import DEFAULT_DECODE_BYTES, Limits, time_limit
from .sources import Record
from .store import Reference, Store, connect_readonly

# Scores at or above this are reported. benchmarks/RESULTS.md's FPR <= 0.1 % cut-off moved between
# 0.43 and 0.47 over the last runs (look-alike products on white, a handful of images): the
# default sits above all of them, at the cost of ~0.3 point of recall there.
DEFAULT_THRESHOLD = 0.50
HASH_K = 8  # nearest catalog hashes looked at per query hash
# Of 64 bits: a hash hit worth a dense check. Products on white hash alike: in a scan of 209
# product photos against 209 others (benchmarks/speed.py's), 88 % of the hash hits lay at 13-18
# bits, their dense checks took a fifth of the scan's time, and the scan reported the same matches
# without them. On every 6th query of benchmarks/accuracy.py, radii 10, 12, 13 and 15 found the
# same copies as 18 did (local features find the edited copies a far hash hit would), and left
# some look-alikes' scores lower.
HASH_RADIUS = 12
HASH_VERIFIED = 4  # hash hits verified per query, nearest first
HASH_FEATURES = 0.2  # a hash hit verified at least this well is verified with local features too
FAST_ACCEPT = 0.85  # a verified hash hit this good needs no local features...
RESOLVED_COVERAGE = 0.8  # ...when such hits explain this share of the query's textured area
# Sub-pictures of a composite searched with local features, in `hashing.regions`' order (a
# grid's cells first): all 9 cells of a 3×3 grid. Only a query that neither its hashes nor its
# view's features explained pays for them.
REGION_SEARCHES = 9
REGION_SIDE = 512  # their long side when searched: the canonical view's
VOTE_K = 4  # neighbours per query descriptor
VOTE_DISTANCE = 44  # of 256 bits: a neighbour this near is a vote (random pairs lie near 128)
MIN_VOTES = 8  # distinct query descriptors that voted: fewer is what any image gets by chance
VOTED_CANDIDATES = 4  # catalog images verified per query, best-voted first
# Voted images looked at for colour variants of a verified copy (`Matcher._variants`): the
# benchmark's catalog holds up to 6 colours of one render; a copy pays for at most 8 more
# reference reads and their keypoint matching, a query without a copy for none.
VARIANT_CANDIDATES = 8
# Siblings: two catalog images that explain the same query (a photo and its zoomed detail, two
# recolours of one photo). See `rank_siblings`.
SIBLING_NEAR = 0.2  # a sibling this much less confident can still outrank by explaining better
SIBLING_COVERAGE = 0.2  # "explains more of the query" by at least this share
# ...or by this factor and SIBLING_GAP at least (a few blocks of a small region are noise), agreeing
# as well (structure no more than SIBLING_SAME lower): where the copy is a small
# part of the query (a listing screenshot's main image, a paste), a share says little. In the
# accuracy benchmark (2026-12-04), 4 copies of a photo ranked its zoomed detail shot first: the
# photo covered 0.36, 0.26, 0.21 and 0.13 of the query, the detail 0.19, 0.07, 0.10 and 0.05, both
# agreeing alike. The other way round, a detail copied, the photo's outline reaches past it onto
# the page, which disagrees: its structure falls, and the detail keeps its place.
SIBLING_WIDER = 1.5
SIBLING_GAP = 0.05
SIBLING_SAME = 0.1  # structure and coverage this close: the same photo
SIBLING_COLOUR = 0.15  # colour agreement this much better: the copied colour variant
# A render and its recolour trim to the same box but for an edge pixel the recolour changed
# (512 × 510 against 512 × 508 px views): views this close in each side (10 px of 512) may share
# an alignment; the dense check's refinement absorbs the pixel or two the trims differ by.
VIEW_SLACK = 0.02
# A lent alignment checks the borrower on its own textured blocks: one that compares under
# BORROWED_BLOCKS of what the lender compared is judged on too little of itself. Two tees of one
# blank with other prints share the outline, collar and sleeves: under the Rails tee's alignment
# (72 blocks compared) the Spree tee compared 38 (0.53), its small print barely, and took a
# colour-edited copy of the Rails tee. In the accuracy benchmark (2026-12-04) the lent checks
# that gave a copy its source compared 0.93-1.12 of the lender's blocks (colour variants of one
# render), 1.09 (a dash-print tee lent the alignment of a team-print tee of the same blank) and
# 0.69 (an orange stool, less shaded than the magenta one of the same render that lent).
BORROWED_BLOCKS = 0.6
SHARED_REGION = 0.7  # two matches whose query regions overlap this much explain the same copy
PLAUSIBLE_SCALE = 1.25  # a copy is rarely enlarged more than this from its source
ENLARGED_SCALE = 1.5
REVERSE_BATCH = 256  # stored competitor images searched at once by `reverse_candidates`


@dataclass(frozen=True)
class Explanation:
    """Why a competitor image matches a catalog image: what the copy did to the original."""

    matched_by: str  # "sha256" (byte-identical), "hash" (global hash + dense check), "features"
    scale: float  # query pixels per reference pixel
    rotation: float  # degrees, counter-clockwise as seen
    mirrored: bool
    inliers: int  # keypoint matches consistent with the geometry (0 off the feature path)
    reference_region: tuple[int, int, int, int]  # copied part of the reference, its pixels
    query_region: tuple[int, int, int, int]  # where that part sits in the query, its pixels
    structure: float  # share of the region's textured blocks that agree, [0, 1]
    colour: float  # colour agreement over the region, [0, 1]
    coverage: float = 0.0  # share of the query's textured area that the copied region accounts for
    # The copied region's outline in the query, its pixels: the four corners of the reference
    # region, mapped (top-left, top-right, bottom-right, bottom-left of the reference): a rotated
    # or skewed copy is outlined where it is, not by a box around it.
    query_outline: tuple[tuple[float, float], ...] = ()
    # The fitted map from reference pixels to query pixels, 2×3 affine (rows), mirror included.
    transform: tuple[tuple[float, float, float], ...] = ()
    # Shares of each picture's content (inside the plain borders a trim removes: a product's white
    # background is no part of what was copied): how much of the reference the copy shows (below
    # 1: cropped), and how much of the query it takes up (below 1: pasted into a bigger picture).
    reference_share: float = 1.0
    query_share: float = 1.0
    # The copy shows no colour, or one faint tint (greyscale, sepia), where the reference has
    # colour: colour variants of one photo cannot be told apart by it (see Match.variants).
    colour_removed: bool = False
    # Its hues turned by more than verify.RECOLOUR_TURN: another colour of the product, scored half.
    recoloured: bool = False


@dataclass(frozen=True)
class Evidence:
    """What makes a match checkable later, by the seller or a marketplace: both files' identity
    and size, when each was seen, and what found the match."""

    query_sha256: str
    reference_sha256: str
    query_size: tuple[int, int]  # pixels (width, height), after EXIF orientation
    reference_size: tuple[int, int]
    captured_at: str | None = None  # ISO 8601: when the competitor image was captured
    captured_from: str | None = None  # where that time comes from: "manifest", "download", "file mtime"
    reference_indexed_at: str | None = None  # when imguard first indexed the own image (None: unknown)
    imguard_version: str = __version__
    threshold: float = 0.0  # the scan's threshold


@dataclass(frozen=True)
class Match:
    """One catalog image found in one competitor image."""

    query: str
    reference: str
    score: float  # [0, 1], 1 = identical
    distance: int  # smallest Hamming distance of pHash/dHash, either orientation (of 64 bits)
    distances: dict[str, int]
    explanation: Explanation
    evidence: Evidence
    query_metadata: dict[str, str] = field(default_factory=dict)  # listing, asin, title, seller, ...
    reference_metadata: dict[str, str] = field(default_factory=dict)
    kind: str = "copy"  # "copy": the reference, edited; "partial": they share a region only
    reference_id: int = 0  # the catalog's id of the reference (ids are never reused)
    # Other catalog images that fit this copy as well as `reference` does: colour variants of one
    # photo, and the copy's colour was removed, so which one was copied cannot be told. Each of
    # them is reported too, naming the others here.
    variants: tuple[str, ...] = ()

    @property
    def matched_by(self) -> str:
        return self.explanation.matched_by

    @property
    def listing(self) -> str:
        """The competitor listing the query image belongs to (see `sources.Record`)."""
        return self.query_metadata.get("listing", "")

    def as_dict(self) -> dict[str, Any]:
        """Its fields as plain JSON-ready data (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        """The inverse of `as_dict`, read back from JSON (keys it does not know are ignored:
        `scan --format json` adds a description)."""
        explanation = dict(data["explanation"])
        for key in ("reference_region", "query_region"):
            explanation[key] = tuple(explanation[key])
        explanation["query_outline"] = tuple(tuple(p) for p in explanation.get("query_outline", ()))
        explanation["transform"] = tuple(tuple(r) for r in explanation.get("transform", ()))
        evidence = dict(data["evidence"])
        for key in ("query_size", "reference_size"):
            evidence[key] = tuple(evidence[key])
        names = {f.name for f in dataclasses.fields(cls)} - {"explanation", "evidence", "variants"}
        return cls(explanation=Explanation(**explanation), evidence=Evidence(**evidence),
                   variants=tuple(data.get("variants", ())), **{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ScanError:
    path: str
    error: str

    @classmethod
    def of(cls, path: str, exc: Exception, *, failed: str = "cannot process image") -> ScanError:
        """The error of one file: an ImageError's reason (unreadable, over a limit), or what
        `failed` on a hostile file (a decoder, OpenCV, FAISS, the store: the failure must not stop
        the other files either)."""
        if isinstance(exc, ImageError):
            return cls(path, exc.reason)
        return cls(path, f"{failed} ({type(exc).__name__}: {exc})")


@dataclass(frozen=True)
class QueryPrints:
    """What a nightly run keeps of a competitor image it read (see imguard.history): enough to
    look for a new own image in it later without reading it again, and to show it once gone."""

    sha256: str
    nbytes: int
    size: tuple[int, int]
    box: tuple[int, int, int, int]  # the canonical view's part of the image, its pixels
    view_size: tuple[int, int]
    hashes: bytes  # pHash, dHash, pHash of the mirror, dHash of the mirror: 4 × 8 bytes
    keypoints: bytes  # N × 2 float32, view pixels
    descriptors: bytes  # ORB of the canonical view, N × 32
    # per descriptor, the distance of its VOTE_K-th nearest catalog descriptor (uint8): a new
    # catalog image's descriptor nearer than that would have been among its neighbours
    neighbour_distances: bytes
    thumbnail: bytes  # JPEG of the canonical view, fingerprint.THUMB_SIDE (as the catalog keeps its own)
    # What a new catalog image must beat to have been a candidate of this scan: the Hamming
    # distance of the last hash hit verified, and the votes of the last voted candidate (the
    # scan's radius and minimum when it had fewer). See `reverse_candidates`.
    hash_floor: int = HASH_RADIUS
    vote_floor: int = MIN_VOTES


HASH_KEYS = ("phash", "dhash", "phash_mirror", "dhash_mirror")


def split_hashes(packed: bytes) -> dict[str, bytes]:
    """QueryPrints.hashes (HASH_KEYS' 8 bytes each, in order) by name."""
    return {key: packed[i * 8:(i + 1) * 8] for i, key in enumerate(HASH_KEYS)}


@dataclass
class Outcome:
    """The result of one query file: its matches, or the error that stopped it (or of something
    in the sources that is no query, a folder that could not be listed or a manifest row that
    names nothing: an error, and `folder`)."""

    record: Record
    matches: list[Match] = field(default_factory=list)
    error: ScanError | None = None
    fast_path: bool = False
    folder: bool = False
    prints: QueryPrints | None = None  # with Matcher(keep_prints=True)

    @property
    def path(self) -> str:
        return self.record.location


@dataclass(eq=False)
class _Picture:
    """Part of a query that can hold a copy: its canonical view, or a sub-picture of it."""

    rgb: np.ndarray
    box: hashing.Box  # what it shows of the query file, in original pixels
    hashes: dict[str, bytes] = field(default_factory=dict)
    points: features.Features | None = None  # ORB keypoints and descriptors, when extracted
    mirror_points: features.Features | None = None
    _checked: verify.QueryImage | None = field(default=None, init=False, repr=False)

    @property
    def checked(self) -> verify.QueryImage:
        """The picture as dense checks take it, made once for all its candidates."""
        if self._checked is None:
            self._checked = verify.QueryImage(self.rgb)
        return self._checked

    @property
    def size(self) -> tuple[int, int]:
        return (self.rgb.shape[1], self.rgb.shape[0])

    @property
    def detail(self) -> float:
        """Original pixels per picture pixel (below 1 when a small original was upscaled)."""
        return (self.box[2] - self.box[0]) / self.size[0]

    @property
    def frame(self) -> np.ndarray:
        """Picture pixels → original pixels (3×3)."""
        return np.linalg.inv(_frame(self.box, self.size))

    def extract_features(self) -> None:
        grey = cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)
        self.points, self.mirror_points = features.features_and_mirror(grey)


@dataclass(eq=False)
class _Query:
    record: Record
    data: bytes
    captured: tuple[str | None, str | None]  # (ISO time, where it comes from): see Evidence
    fp: fingerprint.Fingerprint
    view: _Picture
    regions: list[_Picture]  # sub-pictures of a composite view (cut from the view)
    hash_floor: int = HASH_RADIUS  # see QueryPrints
    vote_floor: int = MIN_VOTES
    budget: int = DEFAULT_DECODE_BYTES  # bytes its decodes may take: Limits.decode_bytes
    results: dict[int, Match] = field(default_factory=dict)
    # catalog image id → the hash hits on it: (picture, mirrored, Hamming distance)
    hash_hits: dict[int, list[tuple[_Picture, bool, int]]] = field(default_factory=dict)
    # catalog image id → its best dense check yet and where: (picture, method, check)
    checks: dict[int, tuple[_Picture, str, verify.DenseCheck]] = field(default_factory=dict)
    _texture: np.ndarray | None = None

    @property
    def path(self) -> str:
        return self.record.location

    @property
    def texture(self) -> np.ndarray:
        """Centres (x, y) of the query view's textured blocks: what a match's coverage counts."""
        if self._texture is None:
            self._texture = verify.textured_centres(cv2.cvtColor(self.view.rgb, cv2.COLOR_RGB2GRAY))
        return self._texture


class Matcher:
    """What one worker needs to match queries against a catalog: its indexes and its store.

    The store connection is opened lazily in each process (SQLite connections do not survive a
    fork), read-only. Workers share the catalog rather than each holding a copy: a forked one
    inherits the parent's memory-mapped index; a pickled one (a spawn pool, a Dask worker) maps
    the same index files and opens the same store, by path, when the catalog's files are on its
    disk. `portable()` gives a matcher that carries the index and the store's bytes instead, for
    workers without that disk.
    """

    def __init__(self, index: CatalogIndex, store_path: str, *, threshold: float = DEFAULT_THRESHOLD,
                 top: int | None = None, keep_prints: bool = False,
                 fetch_options: dict[str, Any] | None = None, limits: Limits = Limits()) -> None:
        self.index = index
        self.store_path = store_path
        self.threshold = threshold
        self.top = top
        self.keep_prints = keep_prints  # each outcome carries its QueryPrints
        self.fetch_options = dict(fetch_options or {})  # timeout, max_bytes, retries of downloads
        self.limits = limits
        # Verifications under this are never reported and cannot settle a query on the fast
        # path: they are not explained (see `_verified`).
        self.explains_from = min(threshold, FAST_ACCEPT)
        self.carries_catalog = index is not None and index.files is None  # pickled with its index and store bytes
        self._store: Store | None = None
        self._pid = -1
        self._cache: dict[int, Reference] = {}
        self._canvases: dict[int, verify.Canvas] = {}

    # -- shipping to other processes --------------------------------------------------------

    def portable(self) -> Matcher:
        """This matcher, pickled with its catalog (the index and a snapshot of the store) rather
        than by the paths of its files: for workers that do not share the catalog's disk."""
        if self.carries_catalog:
            return self
        other = object.__new__(Matcher)  # not copy.copy: it would go through the pickled form
        other.__dict__.update(self.__dict__, carries_catalog=True)
        return other

    def __getstate__(self) -> dict:
        import faiss

        settings = {"generation": self.index.generation, "threshold": self.threshold, "top": self.top,
                    "keep_prints": self.keep_prints, "fetch_options": self.fetch_options, "limits": self.limits}
        if not self.carries_catalog:
            return {**settings, "files": self.index.files, "store_path": self.store_path}
        parts = {n: faiss.serialize_index_binary(getattr(self.index, n).index) for n in ("phash", "dhash", "features")}
        return {**settings, "parts": parts, "store": _snapshot(self.store_path)}

    def __setstate__(self, state: dict) -> None:
        import faiss

        from .index import BinaryIndex

        if "files" in state:
            if not os.path.exists(state["store_path"]):
                raise CatalogError(f"{state['store_path']}: the catalog's store is not on this worker's disk")
            index = CatalogIndex.mapped(state["generation"], state["files"])
            store_path = state["store_path"]
        else:
            parts = {n: BinaryIndex(faiss.deserialize_index_binary(blob)) for n, blob in state["parts"].items()}
            index = CatalogIndex(generation=state["generation"], **parts)
            folder = tempfile.mkdtemp(prefix="imguard-worker-")
            weakref.finalize(self, shutil.rmtree, folder, True)
            store_path = os.path.join(folder, "catalog.sqlite")
            with open(store_path, "wb") as handle:
                handle.write(state["store"])
        self.__init__(index, store_path, threshold=state["threshold"], top=state["top"],
                      keep_prints=state["keep_prints"], fetch_options=state["fetch_options"], limits=state["limits"])

    @property
    def store(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store.open(os.path.dirname(self.store_path), create=False, readonly=True)
            self._pid = os.getpid()
            self._cache = {}
            self._canvases = {}
        return self._store

    def reference(self, image_id: int) -> Reference:
        ref = self._cache.get(image_id)
        if ref is None:
            if len(self._cache) > 512:  # the oldest goes: a big catalog's others stay cached
                del self._cache[next(iter(self._cache))]
            ref = self._cache[image_id] = self.store.reference(image_id)
        return ref

    def _canvas(self, ref: Reference) -> verify.Canvas:
        """The reference's thumbnail prepared for dense checks, once per worker while cached."""
        canvas = self._canvases.get(ref.id)
        if canvas is None:
            if len(self._canvases) > 512:  # the oldest goes: a big catalog's others stay cached
                del self._canvases[next(iter(self._canvases))]
            canvas = self._canvases[ref.id] = verify.Canvas.of(fingerprint.decode_thumbnail(ref.thumbnail))
        return canvas

    # -- the pipeline -----------------------------------------------------------------------

    def match_chunk(self, records: list[Record]) -> list[Outcome]:
        """Match one chunk of query files; one outcome per record, in order. A file that fails,
        for whatever reason (a decoder, OpenCV, FAISS, the store, its time limit), becomes that
        file's error: it never stops the others."""
        outcomes = [Outcome(r) for r in records]
        queries: list[tuple[Outcome, _Query]] = []
        seconds = self.limits.seconds
        # the URLs among the records, downloaded concurrently; {} if none
        fetched = fetch.fetch_remote([r.location for r in records],
                                     **{"max_bytes": self.limits.file_bytes, **self.fetch_options})
        for outcome in outcomes:
            try:
                with time_limit(outcome.path, seconds):
                    data, captured = _read(outcome.record, fetched, self.limits.file_bytes)
                    queries.append((outcome, _query(outcome.record, data, captured, self.limits.decode_bytes)))
            except Exception as exc:
                outcome.error = ScanError.of(outcome.path, exc)
        try:
            with time_limit(f"{len(queries)} files", seconds * len(queries)):
                self._match_queries(queries)
        except Exception:
            for one in queries:  # find the file that breaks the batch; the others still match
                one[1].results.clear()
                one[1].hash_hits.clear()
                one[1].checks.clear()
                try:
                    with time_limit(one[1].path, seconds):
                        self._match_queries([one])
                except Exception as exc:
                    one[0].matches = []
                    one[0].error = ScanError.of(one[1].path, exc, failed="matching failed")
        return outcomes

    def _match_queries(self, batch: list[tuple[Outcome, _Query]]) -> None:
        queries = [q for _, q in batch]
        self._exact(queries)
        self._hash_candidates(queries)
        for q in queries:
            self._verify_hash_hits(q)
        unresolved = []
        for outcome, q in batch:
            outcome.fast_path = _resolved(q)
            if not outcome.fast_path:
                unresolved.append(q)
        self._feature_candidates([(q, q.view) for q in unresolved])
        # the view's keypoints may have explained a composite already
        composites = [q for q in unresolved if q.regions and not _resolved(q)]
        self._feature_candidates([(q, picture) for q in composites for picture in _fine_regions(q)])
        for outcome, q in batch:
            self._borrow_alignments(q)
            outcome.matches = select(list(q.results.values()), self.threshold, self.top)
            if self.keep_prints:
                outcome.prints = self._prints(q)

    def _prints(self, q: _Query) -> QueryPrints:
        if q.view.points is None:  # settled on the fast path: the features a later search needs
            q.view.extract_features()
        assert q.view.points is not None
        descriptors = np.ascontiguousarray(q.view.points[1], np.uint8)
        distances, _ = self.index.features.search(descriptors, VOTE_K)
        kth = distances[:, -1] if distances.shape[1] == VOTE_K else np.full(len(descriptors), 255)
        return QueryPrints(
            sha256=q.fp.sha256, nbytes=q.fp.nbytes, size=(q.fp.width, q.fp.height), box=q.view.box,
            view_size=q.view.size, hashes=b"".join(q.fp.hashes[k] for k in HASH_KEYS),
            keypoints=np.ascontiguousarray(q.view.points[0], np.float32).tobytes(), descriptors=descriptors.tobytes(),
            neighbour_distances=np.clip(kth, 0, 255).astype(np.uint8).tobytes(),
            thumbnail=fingerprint.encode_thumbnail(q.view.rgb), hash_floor=q.hash_floor, vote_floor=q.vote_floor,
        )

    def verify_prints(self, record: Record, prints: QueryPrints, candidates: dict[int, features.Features]) -> dict[int, float]:
        """The scores a scan would give `candidates` (catalog ids → the keypoints and descriptors
        of their mirror images) in a competitor image known only by what a nightly run kept of it
        (`prints`): hash alignment, and RANSAC on its kept keypoints (against the catalog
        image, and against its mirror image for a mirrored copy), then the dense check of its
        thumbnail -- the resolution the dense check compares at anyway. No file is read."""
        thumb = fingerprint.decode_thumbnail(prints.thumbnail)
        picture = _Picture(thumb, prints.box)
        scale = picture.size[0] / max(1, prints.view_size[0])  # thumbnail pixels per view pixel
        points = np.frombuffer(prints.keypoints, np.float32).reshape(-1, 2) * scale
        descriptors = np.frombuffer(prints.descriptors, np.uint8).reshape(-1, 32)
        hashes = split_hashes(prints.hashes)
        fp = fingerprint.Fingerprint(prints.sha256, prints.nbytes, *prints.size, prints.box, picture.size, hashes,
                                     points, descriptors)
        q = _Query(record, b"", (None, None), fp, picture, [])
        flip_query = _flip(picture.size[0])
        scores: dict[int, float] = {}
        for image_id, (mirror_points, mirror_descriptors) in candidates.items():
            ref = self.reference(image_id)
            # the frame alignment only where the scan would have made it: a hash hit
            tries = [verify.box_alignment((0, 0, *picture.size), picture.size, ref.view_size, m) for m in (False, True)
                     if _hash_distance(hashes, ref.hashes, m) <= prints.hash_floor]
            plain = verify.match_keypoints(points, descriptors, ref.keypoints, ref.descriptors, False)
            mirrored = verify.match_keypoints(points, descriptors, mirror_points, mirror_descriptors, False)
            if plain is not None:
                tries.append(plain)
            if mirrored is not None:  # query → mirrored reference, as the mirrored query → the reference
                matrix = _flip(ref.view_size[0]) @ np.vstack([mirrored.matrix, [0, 0, 1]]) @ flip_query
                tries.append(verify.Alignment(matrix[:2], True, mirrored.inliers))
            scores[image_id] = max((self._verified(q, picture, ref, a, "features").score for a in tries), default=0.0)
        return scores

    def _exact(self, queries: list[_Query]) -> None:
        for q in queries:
            for image_id in self.store.ids_with_sha256(q.fp.sha256):
                ref = self.reference(image_id)
                full = (0, 0, ref.width, ref.height)
                sx, sy = q.fp.width / ref.width, q.fp.height / ref.height
                explanation = Explanation("sha256", 1.0, 0.0, False, 0, full, (0, 0, q.fp.width, q.fp.height),
                                          1.0, 1.0, 1.0, _corners((0, 0, q.fp.width, q.fp.height)),
                                          ((sx, 0.0, 0.0), (0.0, sy, 0.0)))
                q.results[image_id] = self._match(q, ref, 1.0, explanation)

    def _hash_candidates(self, queries: list[_Query]) -> None:
        """Search every picture's hashes (each query's view, then its regions) in one batch."""
        if not queries or self.index.phash.size == 0:
            return
        pictures = [(q, q.view) for q in queries] + [(q, r) for q in queries for r in q.regions]
        for name in ("phash", "dhash"):
            part = getattr(self.index, name)
            for mirrored in (False, True):
                key = f"{name}_mirror" if mirrored else name
                codes = np.frombuffer(b"".join(p.hashes[key] for _, p in pictures), np.uint8).reshape(-1, 8)
                distances, owners = part.search(codes, HASH_K)
                for (q, picture), row_d, row_o in zip(pictures, distances, owners):
                    for d, owner in zip(row_d, row_o):
                        if owner < 0 or d > HASH_RADIUS:
                            continue
                        hits = q.hash_hits.setdefault(int(owner), [])
                        same = [k for k, (p, m, _) in enumerate(hits) if p is picture and m == mirrored]
                        if not same:
                            hits.append((picture, mirrored, int(d)))
                        elif d < hits[same[0]][2]:
                            hits[same[0]] = (picture, mirrored, int(d))

    def _verify_hash_hits(self, q: _Query) -> None:
        """A hash hit says where the copy is: the whole picture that was hashed. The nearest
        HASH_VERIFIED catalog images are verified there (products on white hash alike: many
        images fall within the radius of some picture's hash)."""
        nearest = sorted(q.hash_hits, key=lambda image_id: min(d for _, _, d in q.hash_hits[image_id]))
        if len(nearest) >= HASH_VERIFIED:
            q.hash_floor = min(d for _, _, d in q.hash_hits[nearest[HASH_VERIFIED - 1]])
        for image_id in list(nearest[HASH_VERIFIED:]):
            del q.hash_hits[image_id]
        for image_id, hits in q.hash_hits.items():
            if image_id in q.results:  # byte-identical already
                continue
            ref = self.reference(image_id)
            for picture, mirrored, _ in hits:
                alignment = verify.box_alignment((0, 0, *picture.size), picture.size, ref.view_size, mirrored)
                self._keep(q, image_id, self._verified(q, picture, ref, alignment, "hash"))

    def _feature_candidates(self, pictures: list[tuple[_Query, _Picture]]) -> None:
        """Local features of the pictures, searched in one batch. The catalog images most of a
        picture's descriptors have a near neighbour in, and the query's hash hits, are verified:
        keypoints matched exactly, RANSAC, the dense check."""
        if not pictures or self.index.features.size == 0:
            return
        for _, picture in pictures:
            if picture.points is None:
                picture.extract_features()
        orientations = [p.points for _, p in pictures] + [p.mirror_points for _, p in pictures]
        descriptors = [points[1] for points in orientations]
        bounds = np.cumsum([0] + [len(d) for d in descriptors])
        distances, owners = self.index.features.search(np.concatenate(descriptors), VOTE_K)
        owners[distances > VOTE_DISTANCE] = -1
        n = len(pictures)
        for i, (q, picture) in enumerate(pictures):
            plain, mirror = (_votes(owners[bounds[k]:bounds[k + 1]]) for k in (i, i + n))
            # A copy has one orientation: each candidate is verified in the one that voted most
            # for it (both on a tie, as a symmetric product may get). On 1,500 queries of
            # benchmarks/accuracy.py the other orientation never verified a copy better, and it
            # was 44 % of the keypoint matchings.
            mirrors: dict[int, list[bool]] = {}
            for image_id, count in (plain | mirror).most_common(VOTED_CANDIDATES):
                if count < MIN_VOTES:
                    break
                mirrors[image_id] = _orientations(image_id, plain, mirror)
                if picture is q.view and len(mirrors) == VOTED_CANDIDATES:
                    q.vote_floor = count
            if picture is q.view:  # hash hits that verified in part: their alignment may be off
                for image_id in q.hash_hits:
                    known = q.results.get(image_id)
                    if known is not None and known.score >= HASH_FEATURES:
                        mirrors.setdefault(image_id, [False, True])
            for image_id, mirrored in mirrors.items():
                self._verify_candidate(q, picture, image_id, mirrored)
            for image_id, mirrored in self._variants(q, plain, mirror, mirrors).items():
                self._verify_candidate(q, picture, image_id, mirrored)

    def _verify_candidate(self, q: _Query, picture: _Picture, image_id: int, mirrored: list[bool]) -> None:
        known = q.results.get(image_id)
        if known is not None and known.matched_by == "sha256":
            return
        ref = self.reference(image_id)
        match = self._geometric(q, picture, ref, mirrored)
        if match is not None:
            self._keep(q, image_id, match)
        elif known is None:
            q.results[image_id] = self._unverified(q, ref)

    def _variants(self, q: _Query, plain: Counter[int], mirror: Counter[int],
                  verified: dict[int, list[bool]]) -> dict[int, list[bool]]:
        """The colour variants of a render share its keypoints, so they split a copy's votes,
        and the copied one may rank below VOTED_CANDIDATES (a heavy crop of one of four colours
        of a sofa got 21, 19, 19 and 15 votes, after two unrelated pictures with 55 and 47). When
        a candidate verified a copy (DEFAULT_THRESHOLD, whatever the scan's threshold), the next
        VARIANT_CANDIDATES most voted with MIN_VOTES and its view size (see `_same_size`) are
        verified too, in the orientation that voted most for each."""
        sizes = [self.reference(i).view_size for i in verified
                 if i in q.checks and q.checks[i][2].score >= DEFAULT_THRESHOLD]
        if not sizes:
            return {}
        votes = plain | mirror
        variants: dict[int, list[bool]] = {}
        for image_id, count in votes.most_common(VOTED_CANDIDATES + VARIANT_CANDIDATES):
            if count < MIN_VOTES:
                break
            if image_id not in verified and any(_same_size(self.reference(image_id).view_size, s) for s in sizes):
                variants[image_id] = _orientations(image_id, plain, mirror)
        return variants

    def _geometric(self, q: _Query, picture: _Picture, ref: Reference, mirrored: list[bool]) -> Match | None:
        assert picture.points is not None and picture.mirror_points is not None
        best: verify.Alignment | None = None
        for mirror in mirrored:
            points, descriptors = picture.mirror_points if mirror else picture.points
            alignment = verify.match_keypoints(points, descriptors, ref.keypoints, ref.descriptors, mirror)
            if alignment is not None and (best is None or alignment.inliers > best.inliers):
                best = alignment
        if best is None:
            return None
        return self._verified(q, picture, ref, best, "features")

    def _keep(self, q: _Query, image_id: int, match: Match) -> None:
        """Keep the better of two verifications of one catalog image (of the whole query and of
        a part of it, say). One at or above the threshold beats one under it, and an explained
        one beats one that is not (see `_verified`); between two explained ones, the better
        explanation, as between siblings; between two that are not, the higher score. Nothing
        reported, nor the hash hits verified again with keypoints, thus depends on what is left
        out of the explanations."""
        known = q.results.get(image_id)
        if known is None:
            q.results[image_id] = match
            return
        tier, known_tier = self._tier(match), self._tier(known)
        if tier != known_tier:
            replace = tier > known_tier
        elif tier == 0:
            replace = match.score > known.score
        else:
            replace = _better(match, known, before=match.score > known.score)
        if replace:
            q.results[image_id] = match

    def _tier(self, match: Match) -> int:
        """2: reported; 1: explained; 0: neither."""
        return 2 if match.score >= self.threshold else 1 if match.score >= self.explains_from else 0

    def _dense_check(self, picture: _Picture, ref: Reference, alignment: verify.Alignment) -> verify.DenseCheck:
        return verify.dense_check(self._canvas(ref), ref.view_size, picture.checked, alignment,
                                  query_detail=picture.detail)

    def _verified(self, q: _Query, picture: _Picture, ref: Reference, alignment: verify.Alignment,
                  method: str, check: verify.DenseCheck | None = None) -> Match:
        """The match a dense check at `alignment` makes (`check`: that check, made already)."""
        if check is None:
            check = self._dense_check(picture, ref, alignment)
        score = round(check.score, 4)
        known = q.checks.get(ref.id)
        if known is None or check.score > known[2].score:
            q.checks[ref.id] = (picture, method, check)
        if score < self.explains_from:
            # no regions and coverage: ~1 ms a verification, and most of a non-matching query's
            # verifications are this weak
            return self._match(q, ref, score, _unexplained(method, check))
        match = self._match(q, ref, score, _explain(q, picture, ref, check, method))
        return dataclasses.replace(match, kind="partial") if check.partial else match

    def _borrow_alignments(self, q: _Query) -> None:
        """Colour variants of one render share its geometry, but each found its own alignment
        (its own keypoints, its own refinement), and the copied variant's may be the worse one:
        a copy of a purple chair aligned less well on the purple render than on the magenta
        one, whose shapes then agreed more and outscored it, its colours wrong. A candidate the
        query agrees with in colour better than with a better-aligned one of the same view size
        (within VIEW_SLACK) is checked again under that one's alignment, when it verified a copy
        (DEFAULT_THRESHOLD, whatever the scan's threshold), and the better match of the two is
        kept (see `_keep`) when that check compared BORROWED_BLOCKS of what the lender's did."""
        checks = list(q.checks.items())  # as verified: a borrowed check lends nothing further
        lenders = [(other, picture, check) for other, (picture, _, check) in checks if check.score >= DEFAULT_THRESHOLD]
        if not lenders:  # most queries: no copy verified
            return
        sizes = {image_id: self.reference(image_id).view_size for image_id, _ in checks}
        for image_id, (_, found_by, own) in checks:
            ref = self.reference(image_id)
            donors = [(check.structure, picture, check, sizes[other]) for other, picture, check in lenders
                      if other != image_id and check.structure > own.structure and check.colour < own.colour
                      and _same_size(sizes[other], ref.view_size)]
            if donors:
                _, picture, lender, size = max(donors, key=lambda donor: donor[0])
                to_own = np.diag([ref.view_size[0] / size[0], ref.view_size[1] / size[1]])
                borrowed = dataclasses.replace(lender.alignment, matrix=to_own @ lender.alignment.matrix)
                check = self._dense_check(picture, ref, borrowed)
                if check.blocks >= BORROWED_BLOCKS * lender.blocks:
                    self._keep(q, image_id, self._verified(q, picture, ref, borrowed, found_by, check))

    def _unverified(self, q: _Query, ref: Reference) -> Match:
        """A candidate that failed verification: reported only with threshold 0 (evaluation)."""
        return self._match(q, ref, 0.0, _unexplained("features"))

    def _match(self, q: _Query, ref: Reference, score: float, explanation: Explanation) -> Match:
        distances = {
            name: min(hashing.hamming(q.fp.hashes[name], ref.hashes[name]),
                      hashing.hamming(q.fp.hashes[f"{name}_mirror"], ref.hashes[name]))
            for name in ("phash", "dhash")
        }
        evidence = Evidence(
            query_sha256=q.fp.sha256, reference_sha256=ref.sha256, query_size=(q.fp.width, q.fp.height),
            reference_size=(ref.width, ref.height), captured_at=q.captured[0], captured_from=q.captured[1],
            reference_indexed_at=_iso(ref.indexed_at), threshold=self.threshold,
        )
        return Match(
            query=q.path, reference=ref.path, score=score, distance=min(distances.values()),
            distances=distances, explanation=explanation, evidence=evidence,
            query_metadata=dict(q.record.metadata), reference_metadata=dict(ref.metadata), reference_id=ref.id,
        )


def _resolved(q: _Query) -> bool:
    """Is the query explained by hash hits alone? When confident ones account for most of it:
    a collage whose one cell was found by hash may hold another copy, found by keypoints."""
    confident = rank_siblings([m for m in q.results.values() if m.score >= FAST_ACCEPT])
    # colour variants kept side by side explain one region: counted once
    distinct = [m for i, m in enumerate(confident) if not any(_indistinct(m, o) for o in confident[:i])]
    return sum(m.explanation.coverage for m in distinct) >= RESOLVED_COVERAGE


def _hash_distance(query: dict[str, bytes], reference: dict[str, bytes], mirrored: bool) -> int:
    """Hamming distance of the nearer of pHash and dHash, of the query or of its mirror image."""
    suffix = "_mirror" if mirrored else ""
    return min(hashing.hamming(query[f"{name}{suffix}"], reference[name]) for name in ("phash", "dhash"))


def _votes(owners: np.ndarray) -> Counter[int]:
    """Catalog image id → how many of the query descriptors (rows of `owners`, their neighbours'
    image ids, -1 for none) have a neighbour in it."""
    rows, ranks = np.nonzero(owners >= 0)
    pairs = np.unique(owners[rows, ranks] * len(owners) + rows)  # (image, descriptor), each once
    images, counts = np.unique(pairs // max(1, len(owners)), return_counts=True)
    return Counter(dict(zip(images.tolist(), counts.tolist())))


def verify_chunk(state: tuple[Matcher, dict[int, features.Features]],
                 items: list[tuple[int, Record, QueryPrints, set[int]]]) -> list[tuple[int, float]]:
    """`Matcher.verify_prints` of stored competitor images (id, record, prints, the own image ids
    to look for), each with the features of those own images' mirrors in `state`: (id, the best
    score). The task the engines run per chunk of a nightly run's reverse search."""
    matcher, mirrors = state
    return [(competitor_id, max(matcher.verify_prints(record, prints, {i: mirrors[i] for i in image_ids}).values(),
                                default=0.0))
            for competitor_id, record, prints, image_ids in items]


def match_chunk(matcher: Matcher, records: list[Record]) -> list[Outcome]:
    """`Matcher.match_chunk` as a module-level function: the task the engines run per chunk."""
    return matcher.match_chunk(records)


def _read(record: Record, fetched: dict[str, fetch.Download | ImageError],
          max_bytes: int) -> tuple[bytes, tuple[str | None, str | None]]:
    """A query's bytes, and when it was captured: the manifest's `captured_at` when it gives one,
    else the download time of a URL, else the file's modification time."""
    download = fetched.get(record.location)
    if isinstance(download, ImageError):
        raise download
    if download is not None:
        data, captured = download.data, (_iso(download.fetched_at), "download")
    else:
        data, mtime = load.read_file(record.location, max_bytes)
        captured = (_iso(mtime), "file mtime")
    if record.metadata.get("captured_at"):
        captured = (record.metadata["captured_at"], "manifest")
    return data, captured


def _iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601, UTC, to the second."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


def _query(record: Record, data: bytes, captured: tuple[str | None, str | None], budget: int) -> _Query:
    """Decode a query file (within `budget` bytes of memory) into its canonical view and the
    sub-pictures of a composite, hashed."""
    path = record.location
    decoded = load.decode(data, path, features.FEATURE_SIDE, budget=budget)
    view = fingerprint.canonical_view(decoded)
    fp = fingerprint.fingerprint_view(view, decoded, with_features=False)
    picture = _Picture(view.rgb, view.box, fp.hashes)
    frame = picture.frame
    regions = []
    for box, crop, hashes in fingerprint.region_hashes(view):
        (x0, y0), (x1, y1) = (frame @ [box[0], box[1], 1])[:2], (frame @ [box[2], box[3], 1])[:2]
        regions.append(_Picture(crop, (round(x0), round(y0), round(x1), round(y1)), hashes))
    return _Query(record, data, captured, fp, picture, regions, budget=budget)




def reverse_candidates(own: list[tuple[int, np.ndarray, dict[str, bytes]]],
                       stored: Iterable[tuple[int, bytes, bytes, bytes, int, int]]) -> dict[int, set[int]]:
    """Competitor images (kept by a nightly run: id, hashes, descriptors, their neighbour
    distances, hash floor, vote floor; see QueryPrints) that may hold one of the `own` images
    (id, descriptors of it and of its mirror image stacked, its hashes): the scan's candidate
    tests run the other way round, so that a new catalog photo is looked for in competitor
    images without reading them again. A competitor image is a candidate when the new image
    would have been one of its scan's candidates: a hash at least as near as the last hash hit
    it verified, or at least as many votes as its last voted candidate had, a descriptor voting
    when the new image has a descriptor as near as its VOTE_K-th catalog neighbour was.
    Returns competitor id → the own images it may hold, to be verified (`verify_prints`)."""
    if not own:
        return {}
    from .index import build_binary

    owners = np.concatenate([np.full(len(d), image_id, np.int64) for image_id, d, _ in own])
    codes = np.concatenate([d for _, d, _ in own])
    # Inverted lists even for one image: a night's competitor descriptors (millions) each
    # compare with one list of the new images' codes, not with all of them.
    search = build_binary(owners, codes, exact_limit=0, nprobe=1)
    own_hashes = [(image_id, h) for image_id, _, h in own]
    found: dict[int, set[int]] = {}
    for batch in engine.chunked(stored, REVERSE_BATCH):
        voters = []
        for competitor_id, hashes, descriptors, neighbours, hash_floor, vote_floor in batch:
            view = split_hashes(hashes)
            near = {image_id for image_id, h in own_hashes
                    if min(_hash_distance(view, h, m) for m in (False, True)) <= hash_floor}
            if near:
                found.setdefault(competitor_id, set()).update(near)
            if len(descriptors) >= vote_floor * 32:
                voters.append((competitor_id, np.frombuffer(descriptors, np.uint8).reshape(-1, 32),
                               np.frombuffer(neighbours, np.uint8), vote_floor))
        if not voters:
            continue
        bounds = np.cumsum([0] + [len(d) for _, d, _, _ in voters])
        distances, owner = search.search(np.concatenate([d for _, d, _, _ in voters]), VOTE_K)
        reach = np.minimum(VOTE_DISTANCE, np.concatenate([n for _, _, n, _ in voters]).astype(np.int32))
        owner[distances > reach[:, None]] = -1
        for k, (competitor_id, _, _, vote_floor) in enumerate(voters):
            voted = {i for i, count in _votes(owner[bounds[k]:bounds[k + 1]]).items() if count >= vote_floor}
            if voted:
                found.setdefault(competitor_id, set()).update(voted)
    return found


def _fine_regions(q: _Query) -> list[_Picture]:
    """The largest regions, cut from the image decoded at the size that gives each of them
    REGION_SIDE pixels (full size at most): in the view, a photo pasted small into a
    screenshot spans a hundred pixels, too few for local features."""
    chosen = q.regions[:REGION_SEARCHES]
    smallest = min(max(r.box[2] - r.box[0], r.box[3] - r.box[1]) for r in chosen)
    need = min(1.0, REGION_SIDE / max(1, smallest))
    full = load.decode(q.data, q.path, math.ceil(max(q.fp.width, q.fp.height) * need), budget=q.budget).rgb
    fx, fy = full.shape[1] / q.fp.width, full.shape[0] / q.fp.height
    pictures = []
    for region in chosen:
        x0, y0, x1, y1 = region.box
        crop = full[round(y0 * fy):round(y1 * fy), round(x0 * fx):round(x1 * fx)]
        scale = min(1.0, REGION_SIDE / max(crop.shape[:2]))
        if scale < 1:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pictures.append(_Picture(np.ascontiguousarray(crop), region.box))
    return pictures


def rank_key(match: Match) -> tuple[float, int, str]:
    """Best first: higher score, then nearer global hash, then reference path (deterministic)."""
    return (-match.score, match.distance, match.reference)


def select(matches: list[Match], threshold: float, top: int | None) -> list[Match]:
    """What a query reports: matches at or above the threshold, one per copied region (see
    `rank_siblings`), best first, at most `top`. The threshold comes first: a sibling that is
    not reported must not hide one that is. Colour variants that fit a colour-less copy alike
    name each other in `variants`, among the matches reported."""
    ranked = rank_siblings([m for m in matches if m.score >= threshold])
    ranked = ranked if top is None else ranked[:top]
    return [_with_variants(m, ranked) for m in ranked]


def rank_siblings(matches: list[Match]) -> list[Match]:
    """One query's matches, best first, one per copied region of the query.

    Catalogs hold near-copies of their own images: a photo and its zoomed detail, crops of one
    master, recolours of one photo. A copy of one of them matches the others too, in the same
    region of the query and with almost the same score. Of matches that share a region, only
    the best explanation is kept: the one that explains more of the query (the photo, not the
    detail it contains), at a plausible scale (a copy is not sharper than its source), or, for
    the same photo, in its colours; otherwise the higher score. Matches in different regions
    of the query (a collage of two catalog images) are all kept, and so are catalog entries that
    hold the same file (they explain the query equally well). So are colour variants of one
    photo when the copy's colour was removed: nothing tells which was copied (`select` has
    each name the others in `variants`) rather than one being chosen at random."""
    ranked = sorted(matches, key=rank_key)
    kept = []
    for i, b in enumerate(ranked):
        if not any(_better(a, b, before=j < i) for j, a in enumerate(ranked)
                   if j != i and not _same_file(a, b) and _shares_region(b, a)):
            kept.append(b)
    return kept


def _with_variants(match: Match, kept: list[Match]) -> Match:
    variants = tuple(m.reference for m in kept if m is not match and _indistinct(m, match))
    return dataclasses.replace(match, variants=variants) if variants else match


def _indistinct(a: Match, b: Match) -> bool:
    """Colour variants of one photo, in one region of a copy without colour (see `rank_siblings`)."""
    return (a.explanation.colour_removed and b.explanation.colour_removed and not _same_file(a, b)
            and _same_photo(a.explanation, b.explanation) and _shares_region(a, b) and _shares_region(b, a))


def _better(a: Match, b: Match, *, before: bool) -> bool:
    """Is `a` the better explanation of the query region that `a` and `b` share?"""
    a_wins = a.score >= b.score - SIBLING_NEAR and _outranks(a.explanation, b.explanation)
    b_wins = b.score >= a.score - SIBLING_NEAR and _outranks(b.explanation, a.explanation)
    if not a_wins and not b_wins and _indistinct(a, b):
        return False
    return a_wins if a_wins != b_wins else before


def _same_file(a: Match, b: Match) -> bool:
    return a.evidence.reference_sha256 == b.evidence.reference_sha256


def _shares_region(b: Match, a: Match) -> bool:
    """Does most of `b`'s copied region of the query lie inside `a`'s?"""
    inside = hashing.overlap(b.explanation.query_region, a.explanation.query_region)
    return inside >= SHARED_REGION * max(1, hashing.area(b.explanation.query_region))


def _orientations(image_id: int, plain: Counter[int], mirror: Counter[int]) -> list[bool]:
    """The orientations (mirrored or not) that voted most for a candidate: both on a tie."""
    most = max(plain[image_id], mirror[image_id])
    return [m for m, votes in ((False, plain), (True, mirror)) if votes[image_id] == most]


def _same_size(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return all(abs(x - y) <= VIEW_SLACK * max(x, y) for x, y in zip(a, b))


def _same_photo(a: Explanation, b: Explanation) -> bool:
    return abs(a.structure - b.structure) <= SIBLING_SAME and abs(a.coverage - b.coverage) <= SIBLING_SAME


def _outranks(a: Explanation, b: Explanation) -> bool:
    if a.matched_by == "sha256" or b.matched_by == "sha256":
        return a.matched_by == "sha256" and b.matched_by != "sha256"
    if a.coverage >= b.coverage + SIBLING_COVERAGE:
        return True
    if (0 < SIBLING_WIDER * b.coverage <= a.coverage and a.coverage >= b.coverage + SIBLING_GAP
            and a.structure >= b.structure - SIBLING_SAME):
        return True
    # The same part of the query, which shows all of `a` and only a part of `b`: `a` is the picture
    # copied (a detail shot pasted into a tile, not the photo whose middle it shows). All of `a`,
    # not merely more of it: a tight crop of the photo shows most of a detail taken from it too.
    if (abs(a.coverage - b.coverage) <= SIBLING_SAME and a.reference_share >= 1 - SIBLING_SAME
            and a.reference_share >= b.reference_share + SIBLING_COVERAGE):
        return True
    if a.coverage >= b.coverage - SIBLING_SAME and a.scale <= PLAUSIBLE_SCALE and b.scale >= ENLARGED_SCALE:
        return True
    colour_tells = not (a.colour_removed and b.colour_removed)
    return _same_photo(a, b) and colour_tells and a.colour >= b.colour + SIBLING_COLOUR


def _snapshot(path: str) -> bytes:
    """The store as one self-contained SQLite file. The store is in WAL mode: its main file alone
    misses whatever is still in the write-ahead log (after a fresh `add`, everything)."""
    source = connect_readonly(path)
    try:
        with tempfile.TemporaryDirectory(prefix="imguard-ship-") as folder:
            copy_path = os.path.join(folder, "catalog.sqlite")
            copy = sqlite3.connect(copy_path)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one file: no -wal/-shm on the worker
            finally:
                copy.close()
            with open(copy_path, "rb") as handle:
                return handle.read()
    finally:
        source.close()


def _explain(q: _Query, picture: _Picture, ref: Reference, check: verify.DenseCheck, method: str) -> Explanation:
    """Express the (refined) alignment in original pixels of both files."""
    alignment = check.alignment
    # reference original → reference view → (inverse alignment) → picture → query original
    ref_to_view = _frame(ref.box, ref.view_size)
    picture_to_query = picture.frame
    ref_view_to_picture = np.linalg.inv(np.vstack([alignment.matrix, [0, 0, 1]]))
    # Scale and rotation of the copy, mirror left out (it is reported on its own).
    scale, rotation = verify.similarity_parts((picture_to_query @ ref_view_to_picture @ ref_to_view)[:2])
    if alignment.mirrored:
        ref_view_to_picture = _flip(picture.size[0]) @ ref_view_to_picture

    cx0, cy0, cx1, cy1 = check.covered
    corners_view = np.array([[cx0, cy0, 1], [cx1, cy0, 1], [cx0, cy1, 1], [cx1, cy1, 1]], float).T
    ref_region = _bbox((np.linalg.inv(ref_to_view) @ corners_view), ref.width, ref.height)
    corners_query = picture_to_query @ ref_view_to_picture @ corners_view
    query_region = _bbox(corners_query, q.fp.width, q.fp.height)
    quad = (np.linalg.inv(q.view.frame) @ corners_query)[:2].T[[0, 1, 3, 2]]  # in view pixels, in order
    outline = tuple((round(float(x), 1), round(float(y), 1)) for x, y in corners_query[:2].T[[0, 1, 3, 2]])
    transform = (picture_to_query @ ref_view_to_picture @ ref_to_view)[:2]
    query_content = corners_query[:2].T[[0, 1, 3, 2]]
    qx0, qy0, qx1, qy1 = q.view.box
    query_share = abs(cv2.contourArea(np.clip(query_content, [qx0, qy0], [qx1, qy1]).astype(np.float32)))
    return Explanation(
        matched_by=method, scale=round(scale, 3), rotation=round(rotation, 1), mirrored=alignment.mirrored,
        inliers=alignment.inliers, reference_region=ref_region, query_region=query_region,
        structure=round(check.structure, 3), colour=round(check.colour, 3),
        coverage=round(verify.share_inside(q.texture, quad), 3), query_outline=outline,
        transform=tuple(tuple(round(float(v), 5) for v in row) for row in transform),
        reference_share=round(hashing.overlap(ref_region, ref.box) / max(1, hashing.area(ref.box)), 3),
        query_share=round(min(1.0, query_share / max(1, hashing.area(q.view.box))), 3),
        colour_removed=check.colour_removed, recoloured=check.recoloured,
    )


def _unexplained(method: str, check: verify.DenseCheck | None = None) -> Explanation:
    """A verification too weak to report (or a candidate that failed verification, no `check`):
    its agreement, no geometry."""
    zero = (0, 0, 0, 0)
    if check is None:
        return Explanation(method, 0.0, 0.0, False, 0, zero, zero, 0.0, 0.0, 0.0)
    return Explanation(method, 0.0, 0.0, check.alignment.mirrored, check.alignment.inliers, zero, zero,
                       round(check.structure, 3), round(check.colour, 3), 0.0)


def _corners(box: tuple[int, int, int, int]) -> tuple[tuple[float, float], ...]:
    """A box's four corners, clockwise from the top left (an outline)."""
    x0, y0, x1, y1 = box
    return ((float(x0), float(y0)), (float(x1), float(y0)), (float(x1), float(y1)), (float(x0), float(y1)))


def _flip(width: int) -> np.ndarray:
    """The mirror image's pixels → the picture's (3×3), for a picture `width` pixels wide: its own inverse."""
    return np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]])


def _frame(box: tuple[int, int, int, int], view_size: tuple[int, int]) -> np.ndarray:
    """Affine map from original pixels to canonical-view pixels."""
    x0, y0, x1, y1 = box
    sx, sy = view_size[0] / max(1, x1 - x0), view_size[1] / max(1, y1 - y0)
    return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy], [0, 0, 1.0]])


def _bbox(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    xs, ys = points[0], points[1]
    return (int(max(0, np.floor(xs.min()))), int(max(0, np.floor(ys.min()))),
            int(min(width, np.ceil(xs.max()))), int(min(height, np.ceil(ys.max()))))
