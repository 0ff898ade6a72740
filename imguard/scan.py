"""Queries → matches: find catalog images in competitor images.

Per chunk of query files (one unit of parallel work):
1. decode to the canonical view, compute the global hashes; a byte-identical file is a match at 1.0;
2. search the pHash/dHash indexes (both orientations, batched); each hash hit gets the cheap
   dense check at the identity alignment: a confident one is the fast path, and ends there;
3. otherwise extract ORB features (and those of the mirror image), search the descriptor index
   (batched), and let the neighbours vote for catalog images;
4. verify the best-voted candidates: RANSAC affine fit, then the dense check of the aligned pair;
5. score, explain, keep what passes the threshold.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import features, fingerprint, hashing, load, sources, verify
from .errors import ImageError
from .index import CatalogIndex
from .store import Reference, Store

DEFAULT_THRESHOLD = 0.77
HASH_K = 4  # nearest catalog hashes looked at per query hash
HASH_RADIUS = 18  # of 64 bits: a hash hit worth the cheap check
FAST_ACCEPT = 0.6  # dense score at identity alignment that needs no local features
VOTE_K = 4  # neighbours per query descriptor
VOTE_DISTANCE = 64  # of 256 bits
MIN_VOTES = 4
VOTED_CANDIDATES = 4  # catalog images verified per query, best-voted first
RECOLOUR_BEST = 0.6  # colour agreement of the best match above which recolour siblings are dropped
RECOLOUR_GAP = 0.4
RECOLOUR_STRUCTURE = 0.1


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


@dataclass(frozen=True)
class Match:
    """One catalog image found in one competitor image."""

    query: str
    reference: str
    score: float  # [0, 1], 1 = identical
    distance: int  # smallest Hamming distance of pHash/dHash, either orientation (of 64 bits)
    distances: dict[str, int]
    explanation: Explanation
    reference_metadata: dict[str, str] = field(default_factory=dict)
    query_sha256: str = ""
    reference_sha256: str = ""

    @property
    def matched_by(self) -> str:
        return self.explanation.matched_by


@dataclass(frozen=True)
class ScanError:
    path: str
    error: str


@dataclass
class Outcome:
    """The result of one query file: its matches, or the error that stopped it."""

    path: str
    matches: list[Match] = field(default_factory=list)
    error: ScanError | None = None
    fast_path: bool = False


@dataclass(eq=False)
class _Query:
    path: str
    decoded: load.Decoded
    view: fingerprint.View
    fp: fingerprint.Fingerprint
    results: dict[int, Match] = field(default_factory=dict)
    hash_hits: dict[int, bool] = field(default_factory=dict)  # candidate id → mirrored
    points: tuple[np.ndarray, np.ndarray] | None = None
    mirror_points: tuple[np.ndarray, np.ndarray] | None = None


class Matcher:
    """What one worker needs to match queries against a catalog: its indexes and its store.

    The store connection is opened lazily in each process (SQLite connections do not survive a
    fork). Pickled (for a spawn pool or a Dask cluster), the matcher carries the index and the
    store bytes, so that workers need no shared disk.
    """

    def __init__(self, index: CatalogIndex, store_path: str, *, threshold: float = DEFAULT_THRESHOLD,
                 top: int | None = None) -> None:
        self.index = index
        self.store_path = store_path
        self.threshold = threshold
        self.top = top
        self._store: Store | None = None
        self._pid = -1
        self._cache: dict[int, Reference] = {}
        self._thumbs: dict[int, np.ndarray] = {}

    # -- shipping to other processes --------------------------------------------------------

    def __getstate__(self) -> dict:
        import faiss

        store_bytes = _snapshot(self.store_path)
        parts = {n: faiss.serialize_index_binary(getattr(self.index, n).index) for n in ("phash", "dhash", "features")}
        return {"parts": parts, "generation": self.index.generation, "store": store_bytes,
                "threshold": self.threshold, "top": self.top}

    def __setstate__(self, state: dict) -> None:
        import faiss

        from .index import BinaryIndex

        parts = {n: BinaryIndex(faiss.deserialize_index_binary(blob)) for n, blob in state["parts"].items()}
        folder = tempfile.mkdtemp(prefix="imguard-worker-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        store_path = os.path.join(folder, "catalog.sqlite")
        with open(store_path, "wb") as handle:
            handle.write(state["store"])
        self.__init__(CatalogIndex(generation=state["generation"], **parts), store_path,
                      threshold=state["threshold"], top=state["top"])

    @property
    def store(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store.open(os.path.dirname(self.store_path), create=False, readonly=True)
            self._pid = os.getpid()
            self._cache = {}
            self._thumbs = {}
        return self._store

    def reference(self, image_id: int) -> Reference:
        ref = self._cache.get(image_id)
        if ref is None:
            if len(self._cache) > 512:
                self._cache.clear()
            ref = self._cache[image_id] = self.store.reference(image_id)
        return ref

    def _thumbnail(self, ref: Reference) -> np.ndarray:
        """The reference's decoded thumbnail, decoded once per worker while it stays cached."""
        thumb = self._thumbs.get(ref.id)
        if thumb is None:
            if len(self._thumbs) > 512:
                self._thumbs.clear()
            thumb = self._thumbs[ref.id] = fingerprint.decode_thumbnail(ref.thumbnail)
        return thumb

    # -- the pipeline -----------------------------------------------------------------------

    def match_chunk(self, paths: list[str]) -> list[Outcome]:
        """Match one chunk of query files; one outcome per path, in order. A file that fails,
        for whatever reason, becomes that file's error: it never stops the others."""
        outcomes = [Outcome(p) for p in paths]
        queries: list[tuple[Outcome, _Query]] = []
        fetched = sources.fetch_remote(paths)  # the URLs among paths, downloaded concurrently; {} if none
        for outcome in outcomes:
            path = outcome.path
            try:
                data = fetched[path] if path in fetched else load.read_bytes(path)
                if isinstance(data, ImageError):
                    raise data
                decoded = load.decode(data, path, features.FEATURE_SIDE)
                view = fingerprint.canonical_view(decoded)
                fp = fingerprint.fingerprint_view(view, decoded, with_features=False)
            except ImageError as exc:
                outcome.error = ScanError(path, exc.reason)
                continue
            except Exception as exc:  # a decoder or OpenCV failure on one hostile file
                outcome.error = ScanError(path, f"cannot process image ({type(exc).__name__}: {exc})")
                continue
            queries.append((outcome, _Query(path, decoded, view, fp)))
        try:
            self._match_queries(queries)
        except Exception:
            if len(queries) <= 1:
                raise
            for one in queries:  # find the file that breaks the batch; the others still match
                try:
                    self._match_queries([one])
                except Exception as exc:
                    one[0].error = ScanError(one[1].path, f"matching failed ({type(exc).__name__}: {exc})")
        return outcomes

    def _match_queries(self, batch: list[tuple[Outcome, _Query]]) -> None:
        queries = [q for _, q in batch]
        self._exact(queries)
        self._hash_candidates(queries)
        unresolved = []
        for outcome, q in batch:
            outcome.fast_path = self._fast_path(q)
            if not outcome.fast_path:
                unresolved.append(q)
        self._feature_candidates(unresolved)
        for outcome, q in batch:
            outcome.matches = self._select(q)

    def _exact(self, queries: list[_Query]) -> None:
        for q in queries:
            for image_id in self.store.ids_with_sha256(q.fp.sha256):
                ref = self.reference(image_id)
                full = (0, 0, ref.width, ref.height)
                explanation = Explanation("sha256", 1.0, 0.0, False, 0, full, (0, 0, q.fp.width, q.fp.height), 1.0, 1.0)
                q.results[image_id] = self._match(q, ref, 1.0, explanation)

    def _hash_candidates(self, queries: list[_Query]) -> None:
        if not queries or self.index.phash.size == 0:
            return
        for name in ("phash", "dhash"):
            part = getattr(self.index, name)
            for mirrored in (False, True):
                key = f"{name}_mirror" if mirrored else name
                codes = np.frombuffer(b"".join(q.fp.hashes[key] for q in queries), np.uint8).reshape(-1, 8)
                distances, owners = part.search(codes, HASH_K)
                for q, row_d, row_o in zip(queries, distances, owners):
                    for d, owner in zip(row_d, row_o):
                        if owner >= 0 and d <= HASH_RADIUS and int(owner) not in q.hash_hits:
                            q.hash_hits[int(owner)] = mirrored

    def _fast_path(self, q: _Query) -> bool:
        """Check hash hits at the identity alignment; True when one is confident enough that
        local features would add nothing."""
        confident = any(m.score >= FAST_ACCEPT for m in q.results.values())
        for image_id, mirrored in q.hash_hits.items():
            if image_id in q.results:
                continue
            ref = self.reference(image_id)
            alignment = verify.identity_alignment(q.fp.view_size, ref.view_size, mirrored)
            match = self._verified(q, ref, alignment, "hash")
            if match.score > 0:
                q.results[image_id] = match
                confident = confident or match.score >= FAST_ACCEPT
        return confident

    def _feature_candidates(self, queries: list[_Query]) -> None:
        if not queries or self.index.features.size == 0:
            return
        grey_views = [q.view.grey for q in queries]
        for q, grey in zip(queries, grey_views):
            q.points, q.mirror_points = features.features_and_mirror(grey)
        descriptors = [d for q in queries for d in (q.points[1], q.mirror_points[1])]
        counts = [len(d) for d in descriptors]
        distances, owners = self.index.features.search(np.concatenate(descriptors), VOTE_K)
        bounds = np.cumsum([0] + counts)
        for i, q in enumerate(queries):
            votes: Counter[int] = Counter()
            for part in (2 * i, 2 * i + 1):
                d = distances[bounds[part]: bounds[part + 1]]
                o = owners[bounds[part]: bounds[part + 1]]
                for row_d, row_o in zip(d, o):
                    votes.update({int(x) for x, dist in zip(row_o, row_d) if x >= 0 and dist <= VOTE_DISTANCE})
            candidates = [c for c, n in votes.most_common(VOTED_CANDIDATES) if n >= MIN_VOTES]
            candidates += [c for c in q.hash_hits if c not in candidates]
            for image_id in candidates:
                known = q.results.get(image_id)
                if known is not None and known.explanation.matched_by == "sha256":
                    continue
                match = self._geometric(q, self.reference(image_id))
                if match is not None and (known is None or match.score > known.score):
                    q.results[image_id] = match
                elif known is None:
                    q.results.setdefault(image_id, self._unverified(q, self.reference(image_id)))

    def _geometric(self, q: _Query, ref: Reference) -> Match | None:
        assert q.points is not None and q.mirror_points is not None
        best: verify.Alignment | None = None
        for mirrored, (points, descriptors) in ((False, q.points), (True, q.mirror_points)):
            alignment = verify.match_keypoints(points, descriptors, ref.keypoints, ref.descriptors, mirrored)
            if alignment is not None and (best is None or alignment.inliers > best.inliers):
                best = alignment
        if best is None:
            return None
        return self._verified(q, ref, best, "features")

    def _verified(self, q: _Query, ref: Reference, alignment: verify.Alignment, method: str) -> Match:
        thumb = self._thumbnail(ref)
        check = verify.dense_check(thumb, ref.view_size, q.view.rgb, alignment)
        explanation = _explain(q, ref, alignment, check, thumb.shape[1], thumb.shape[0], method)
        return self._match(q, ref, round(check.score, 4), explanation)

    def _unverified(self, q: _Query, ref: Reference) -> Match:
        """A candidate that failed verification: reported only with threshold 0 (evaluation)."""
        zero = (0, 0, 0, 0)
        return self._match(q, ref, 0.0, Explanation("features", 0.0, 0.0, False, 0, zero, zero, 0.0, 0.0))

    def _match(self, q: _Query, ref: Reference, score: float, explanation: Explanation) -> Match:
        distances = {
            name: min(hashing.hamming(q.fp.hashes[name], ref.hashes[name]),
                      hashing.hamming(q.fp.hashes[f"{name}_mirror"], ref.hashes[name]))
            for name in ("phash", "dhash")
        }
        return Match(
            query=q.path, reference=ref.path, score=score, distance=min(distances.values()),
            distances=distances, explanation=explanation, reference_metadata=dict(ref.metadata),
            query_sha256=q.fp.sha256, reference_sha256=ref.sha256,
        )

    def _select(self, q: _Query) -> list[Match]:
        ranked = _drop_recolours(sorted(q.results.values(), key=rank_key))
        if self.threshold > 0:
            ranked = [m for m in ranked if m.score >= self.threshold]
        if self.top is not None:
            ranked = ranked[: self.top]
        return ranked


def rank_key(match: Match) -> tuple[float, int, str]:
    """Best first: higher score, then nearer global hash, then reference path (deterministic)."""
    return (-match.score, match.distance, match.reference)


def _drop_recolours(ranked: list[Match]) -> list[Match]:
    """Catalogs hold recolours of one photo (the red, blue and black shirt). When the best match
    agrees in colour, a sibling that agrees as well in structure but not in colour is that other
    variant, not the copied image: it is dropped rather than reported as a second copy."""
    if not ranked or ranked[0].explanation.colour < RECOLOUR_BEST:
        return ranked
    best = ranked[0].explanation
    return [ranked[0]] + [
        m for m in ranked[1:]
        if not (m.explanation.colour < best.colour - RECOLOUR_GAP
                and m.explanation.structure >= best.structure - RECOLOUR_STRUCTURE)
    ]


def _snapshot(path: str) -> bytes:
    """The store as one self-contained SQLite file. The store is in WAL mode: its main file alone
    misses whatever is still in the write-ahead log (after a fresh `add`, everything)."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
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


def _explain(q: _Query, ref: Reference, alignment: verify.Alignment, check: verify.DenseCheck,
             thumb_w: int, thumb_h: int, method: str) -> Explanation:
    """Express the alignment in original pixels of both files."""
    # reference original → reference view → (inverse alignment) → query view → query original
    ref_to_view = _frame(ref.box, ref.view_size)
    view_to_query = np.linalg.inv(_frame(q.fp.box, q.fp.view_size))  # query view → query original
    ref_view_to_query_view = np.linalg.inv(np.vstack([alignment.matrix, [0, 0, 1]]))
    # Scale and rotation of the copy, mirror left out (it is reported on its own).
    scale, rotation = verify.similarity_parts((view_to_query @ ref_view_to_query_view @ ref_to_view)[:2])
    if alignment.mirrored:
        unmirror = np.array([[-1.0, 0, q.fp.view_size[0]], [0, 1, 0], [0, 0, 1]])
        ref_view_to_query_view = unmirror @ ref_view_to_query_view

    cx0, cy0, cx1, cy1 = check.covered
    fx, fy = ref.view_size[0] / thumb_w, ref.view_size[1] / thumb_h
    corners_view = np.array([[cx0 * fx, cy0 * fy, 1], [cx1 * fx, cy0 * fy, 1],
                             [cx0 * fx, cy1 * fy, 1], [cx1 * fx, cy1 * fy, 1]]).T
    ref_region = _bbox((np.linalg.inv(ref_to_view) @ corners_view), ref.width, ref.height)
    query_region = _bbox(view_to_query @ ref_view_to_query_view @ corners_view, q.fp.width, q.fp.height)
    return Explanation(
        matched_by=method, scale=round(scale, 3), rotation=round(rotation, 1), mirrored=alignment.mirrored,
        inliers=alignment.inliers, reference_region=ref_region, query_region=query_region,
        structure=round(check.structure, 3), colour=round(check.colour, 3),
    )


def _frame(box: tuple[int, int, int, int], view_size: tuple[int, int]) -> np.ndarray:
    """Affine map from original pixels to canonical-view pixels."""
    x0, y0, x1, y1 = box
    sx, sy = view_size[0] / max(1, x1 - x0), view_size[1] / max(1, y1 - y0)
    return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy], [0, 0, 1.0]])


def _bbox(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    xs, ys = points[0], points[1]
    return (int(max(0, np.floor(xs.min()))), int(max(0, np.floor(ys.min()))),
            int(min(width, np.ceil(xs.max()))), int(min(height, np.ceil(ys.max()))))
