"""Accuracy benchmark: does a method find stolen copies of catalog photos, and only those?

Builds (or reuses from benchmarks/.cache/) a seeded benchmark from real product photos -- see
_dataset.py: same-photo groups are found first so that no distractor is a copy of a catalog
image, then copies of catalog images are made in sixteen edit families (positives) and
distractors are edited the same ways (negatives; the hard ones are look-alikes: another garment
on the same model, another print on the same blank, a front and a back). Every method runs on
the same files:

- baselines: imagehash pHash / dHash / wHash (64 bits, brute-force Hamming), imagehash
  crop_resistant_hash (slow: on a seeded subset of queries, see --crh-limit), PDQ with its 8
  dihedral variants on the query side;
- imguard through its public API (Catalog.open / add / scan at threshold 0), when it imports and
  works.

Each method's answers are cached in the dataset's folder, keyed by the code that produced them
(imguard: every file of the package), so that evaluating another threshold (--threshold) or
changing this report re-runs no scan.

Metrics:
- at imguard's default threshold (imguard.DEFAULT_THRESHOLD, or --threshold), per family: copies
  found with their exact original first, copies ranked under another catalog image (colour-less
  copies apart: they cannot tell recolours apart), look-alikes flagged;
- across sources: folds of whole sources; on each, the threshold chosen on the other folds'
  negatives (FPR <= 0.1 %) and the default, judged on the held-out fold (worst fold and spread);
- in-sample, per family: recall at FPR <= 1 % and <= 0.1 % (thresholds from all the negatives'
  best scores; a positive counts only if its best-scoring reference is its exact source image),
  micro-average precision as in DISC21 (all predictions pooled, right only when naming the exact
  source), and how often a wrong reference ranked first.
The worst cases go to benchmarks/.cache/worst-cases.md (and .png), for a detection engineer.

Run: python benchmarks/accuracy.py [--quick] [--methods phash,pdq,imguard] [--threshold T] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _dataset  # noqa: E402  (the helper module next to this file)
from _dataset import FAMILIES, Dataset, build_dataset, load_rgb  # noqa: E402

HASH_METHODS = ("phash", "dhash", "whash", "crh", "pdq")
IMGUARD_METHODS = ("imguard", "imguard-exact", "imguard-10k")
ALL_METHODS = HASH_METHODS + IMGUARD_METHODS
SCALE_IMAGES = 10_000  # imguard-10k: the feature index gets the inverted lists of this many catalog images
METHOD_LABELS = {
    "phash": "pHash",
    "dhash": "dHash",
    "whash": "wHash",
    "crh": "crop-resistant",
    "pdq": "PDQ (dihedral)",
    "imguard": "imguard",
    "imguard-exact": "imguard, exact search",
    "imguard-10k": "imguard, lists as at 10k images",
}
FPR_TARGETS = (0.01, 0.001)
FOLD_FPR = 0.001  # the cross-source threshold accepts at most this share of the other folds' negatives
# Folds of whole sources: 5 keep ~1,500 negatives in each (0.1 % = 1.5 of them) with 15 sources.
FOLDS = 5
CRH_BIT_ERROR_RATE = 0.25  # imagehash's default segment cutoff: 16 of 64 bits


# ============================================================================================
# Fingerprints (run in worker processes)


def _bits_to_u64(bits: np.ndarray) -> np.ndarray:
    """Boolean hash bits (..., 64) -> uint64 words, for XOR + popcount distances."""
    packed = np.ascontiguousarray(np.packbits(bits.astype(bool), axis=-1))
    return packed.view(">u8").astype(np.uint64)


def _fingerprint(job: tuple[str, str, bool]) -> np.ndarray:
    """One image's code(s) for a hash method, as uint64 words: shape (variants, words).

    Every method decodes through the benchmark's loader (transparency flattened onto white, as
    the copies were made), so the comparison is between hashes, not between alpha handling.
    """
    method, path, is_query = job
    import imagehash

    img = load_rgb(path)
    if method in ("phash", "dhash", "whash"):
        fn = getattr(imagehash, method)
        return _bits_to_u64(fn(img).hash.reshape(1, 64))
    if method == "crh":  # one 64-bit dHash per segment
        segs = imagehash.crop_resistant_hash(img).segment_hashes
        return _bits_to_u64(np.array([s.hash.reshape(64) for s in segs]))
    if method == "pdq":
        import pdqhash

        arr = np.asarray(img)
        if is_query:  # the 8 rotations/mirrors of the query against the plain catalog codes
            codes = np.asarray(pdqhash.compute_dihedral(arr)[0])
        else:
            codes = np.asarray(pdqhash.compute(arr)[0])[None]
        return _bits_to_u64(codes.astype(bool))
    raise ValueError(method)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per uint64 word (np.bitwise_count exists from numpy 2.0 on)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(*words.shape, 8)
    return _POPCOUNT8[as_bytes].sum(-1, dtype=np.int64)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between rows of uint64 word arrays (n, w) and (m, w)."""
    return _popcount(a[:, None, :] ^ b[None, :, :]).sum(-1)


# ============================================================================================
# Methods


@dataclass
class MethodRun:
    """What one method answered, and what it cost."""

    name: str
    label: str
    query_ids: list[int]  # the queries it was run on
    # query id -> [(catalog image, score, kind)], best first; kind is the library's Match.kind
    # when it has one, else "copy"
    predictions: dict[int, list[tuple[str, float, str]]] = field(default_factory=dict)
    images: int = 0  # catalog + queries fingerprinted
    seconds: float = 0.0
    note: str = ""
    error: str | None = None
    measured: str = ""  # when the answers were computed (a cached run keeps its date)
    cached: bool = False  # the answers come from an earlier run of the same code
    # imguard: each query's top answer from a second scan at the default threshold itself
    at_default: dict[int, tuple[str, float, str]] | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")

    def answers(self, qid: int) -> list[tuple[str, float, str]]:
        """A query's predictions, best first (none: an empty list)."""
        return self.predictions.get(qid, [])

    def top(self, qid: int) -> tuple[str | None, float, str]:
        """A query's top prediction: (catalog image, score, kind), or (None, -inf, "") without one."""
        preds = self.predictions.get(qid)
        return preds[0] if preds else (None, -math.inf, "")


def _cached(ds: Dataset, name: str, key: dict, fresh: bool, compute, log) -> MethodRun:
    """A method's answers from ds.root/runs/ when the same code already answered the same queries;
    else `compute()`d (and stored when it worked). So --threshold and report changes cost no scan."""
    path = ds.root / "runs" / f"{name}-{_dataset._digest(key)}.json"
    if path.exists() and not fresh:
        d = json.loads(path.read_text())
        preds: dict[int, list] = {}
        for qid, ref, score, kind in d.pop("predictions"):
            preds.setdefault(qid, []).append((ref, score, kind))
        at_default = d.pop("at_default")
        log(f"{name}: answers from the cache ({_dataset.shown(path)})")
        return MethodRun(**d, predictions=preds, cached=True,
                         at_default=None if at_default is None else {int(q): tuple(t) for q, t in at_default.items()})
    log(f"running {name}...")
    run = compute()
    run.measured = time.strftime("%Y-%m-%d %H:%M")
    if run.error is None:
        path.parent.mkdir(exist_ok=True)
        d = {k: getattr(run, k) for k in ("name", "label", "query_ids", "images", "seconds", "note", "measured")}
        d["predictions"] = [[qid, *p] for qid, preds in run.predictions.items() for p in preds]
        d["at_default"] = run.at_default
        _dataset._write_json(path, d)
    return run


def _timed_map(pool: Pool, jobs: list) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = pool.map(_fingerprint, jobs, chunksize=8)
    return out, time.perf_counter() - t0


def _scores_global(cat: list[np.ndarray], queries: list[np.ndarray], bits: int) -> np.ndarray:
    """Score matrix (queries x catalog): 1 - min Hamming over the query's variants / bits."""
    c = np.stack([x[0] for x in cat])  # one code per catalog image
    scores = np.empty((len(queries), len(c)))
    for qi, q in enumerate(queries):
        scores[qi] = 1.0 - _hamming(q, c).min(0) / bits
    return scores


def _scores_crh(cat: list[np.ndarray], queries: list[np.ndarray]) -> np.ndarray:
    """imagehash's multi-hash distance, vectorised, turned into a score in [0, 1].

    ImageMultiHash.__sub__ is n_query_segments - (matches - sum_d / (matches * 64)), where a
    query segment matches when its nearest catalog segment is within 25 % of the bits. The
    score is 1 - that distance / n_query_segments: the share of matched segments, minus a
    tie-breaker for their mean distance.
    """
    all_segs = np.concatenate(cat)
    starts = np.cumsum([0] + [len(x) for x in cat[:-1]])
    cutoff = 64 * CRH_BIT_ERROR_RATE
    scores = np.zeros((len(queries), len(cat)))
    for qi, q in enumerate(queries):
        nearest = np.minimum.reduceat(_hamming(q, all_segs), starts, axis=1)  # (segs, catalog)
        hit = nearest <= cutoff
        matches = hit.sum(0)
        dist = np.where(hit, nearest, 0).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (matches - dist / (matches * 64.0)) / len(q)
        scores[qi] = np.where(matches > 0, score, 0.0)
    return scores


def _hash_code_key(method: str) -> dict:
    """What a baseline's answers depend on: its libraries and this file's code that computes them."""
    from importlib.metadata import version

    code = "".join(inspect.getsource(f) for f in (_fingerprint, _scores_global, _scores_crh, _bits_to_u64))
    return {"method": method, "code": _dataset._digest(code),
            "versions": [version(p) for p in ("imagehash", "pdqhash", "numpy", "pillow")]}


def run_hash(method: str, ds: Dataset, query_ids: list[int], pool: Pool, note: str = "") -> MethodRun:
    """Fingerprint catalog + queries in the pool (timed), then brute-force the best reference."""
    run = MethodRun(method, METHOD_LABELS[method], query_ids, note=note)
    cat_paths = ds.catalog_paths()
    q_paths = [ds.query_path(ds.queries[i]) for i in query_ids]
    cat, t_cat = _timed_map(pool, [(method, p, False) for p in cat_paths])
    qs, t_q = _timed_map(pool, [(method, p, True) for p in q_paths])
    run.images, run.seconds = len(cat_paths) + len(q_paths), t_cat + t_q
    if method == "crh":
        scores = _scores_crh(cat, qs)
    else:
        scores = _scores_global(cat, qs, 256 if method == "pdq" else 64)
    best = scores.argmax(1)  # top-1 per query: ties go to the first catalog image
    for row, qid in enumerate(query_ids):
        run.predictions[qid] = [(ds.catalog[best[row]], float(scores[row, best[row]]), "copy")]
    return run


def _imguard_code_key(name: str) -> dict:
    """What imguard's answers depend on: its code (every .py file of the package) and libraries."""
    from importlib.metadata import version

    import imguard

    root = Path(imguard.__file__).parent
    code = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        code.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return {"method": name, "code": code.hexdigest()[:12],
            "versions": [version(p) for p in ("opencv-python-headless", "faiss-cpu", "numpy", "simplejpeg", "pillow")]}


def _scan(cat, q_paths: list[str], qid_of: dict, ref_of: dict, threshold: float, jobs: int):
    """One scan through the public API: {query id: [(catalog image, score, kind)]}, in the
    library's order (best first)."""
    kwargs = {"threshold": threshold}
    if "jobs" in inspect.signature(cat.scan).parameters:
        kwargs["jobs"] = jobs
    out: dict[int, list[tuple[str, float, str]]] = {}
    for m in cat.scan(q_paths, **kwargs):
        qid = qid_of.get(str(m.query), qid_of.get(os.path.realpath(str(m.query))))
        ref = ref_of.get(str(m.reference), ref_of.get(os.path.realpath(str(m.reference))))
        if qid is not None:
            out.setdefault(qid, []).append((ref or str(m.reference), float(m.score), str(getattr(m, "kind", "copy"))))
    for preds in out.values():
        preds.sort(key=lambda p: -p[1])  # stable: the library's order among equal scores
    return out


def run_imguard(ds: Dataset, query_ids: list[int], jobs: int, name: str = "imguard") -> MethodRun:
    """imguard through its public API; any failure is reported, never fatal to the baselines.

    Scanned with threshold 0: every verified candidate and its score, so that any threshold can
    be evaluated afterwards. "imguard" scans a second time at the library's default threshold,
    to check the figures derived from the first scan (a scan at a threshold ranks siblings among
    the matches that pass it only, so its top answer may differ).

    "imguard-exact": flat (exact) FAISS search whatever the catalog size, the reference that the
    approximate indexes are held to (at most 2 points of recall lost). "imguard-10k": the
    feature index split into as many inverted lists as a 10,000-image catalog gets (each list
    then holds a few codes), probed as imguard probes them: the share of neighbours a probe
    finds, and so the votes the approximate search loses, are then those of a 10,000-image
    catalog (its 30x more distractors competing for votes are not reproduced)."""
    run = MethodRun(name, METHOD_LABELS[name], query_ids)
    try:
        import imguard
        from imguard import index as imguard_index

        overrides = {
            "imguard": {},
            "imguard-exact": {"HASH_EXACT_LIMIT": 2**62, "FEATURE_EXACT_LIMIT": 2**62},
            "imguard-10k": {"FEATURE_EXACT_LIMIT": 0,  # inverted lists at any size, as at 10,000 images
                            "LIST_SIZE": max(1, round(imguard_index.LIST_SIZE * len(ds.catalog) / SCALE_IMAGES))},
        }[name]
        limits = {key: getattr(imguard_index, key) for key in overrides}
        catalog_cls = imguard.Catalog
    except (ImportError, AttributeError) as exc:
        run.error = f"imguard API not available ({type(exc).__name__}: {exc})"
        return run
    ref_of = {}
    for rel, path in zip(ds.catalog, ds.catalog_paths()):
        ref_of[path] = ref_of[os.path.realpath(path)] = rel
    q_paths = [ds.query_path(ds.queries[i]) for i in query_ids]
    qid_of = {p: qid for p, qid in zip(q_paths, query_ids)}
    qid_of.update({os.path.realpath(p): qid for p, qid in zip(q_paths, query_ids)})
    _dataset.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        for key, value in overrides.items():  # set before the worker processes fork, restored below
            setattr(imguard_index, key, value)
        with tempfile.TemporaryDirectory(dir=_dataset.CACHE_DIR, prefix="imguard-db-") as db:
            t0 = time.perf_counter()
            cat = catalog_cls.open(db)
            cat.add(ds.catalog_paths())
            run.note = "index: " + ", ".join(f"{n} {getattr(cat.index, n).kind}" for n in ("phash", "features")) + "; "
            run.predictions = _scan(cat, q_paths, qid_of, ref_of, 0.0, jobs)
            run.seconds = time.perf_counter() - t0
            if name == "imguard":
                checked = _scan(cat, q_paths, qid_of, ref_of, default_threshold(), jobs)
                run.at_default = {qid: preds[0] for qid, preds in checked.items()}
        run.images = len(ds.catalog) + len(q_paths)
        run.note += f"add + scan at threshold 0 (incl. search and verification), jobs={jobs}"
    except Exception as exc:  # the library is being written in parallel: report, go on
        traceback.print_exc()
        run.error = f"imguard failed: {type(exc).__name__}: {exc}"
    finally:
        for key, value in limits.items():
            setattr(imguard_index, key, value)
    return run


def default_threshold() -> float:
    """The library's default score threshold (imguard.DEFAULT_THRESHOLD), read, never copied."""
    import imguard

    return float(imguard.DEFAULT_THRESHOLD)


# ============================================================================================
# Metrics


def _micro_ap(preds: list[tuple[float, bool]], n_truth: int) -> float:
    """DISC21 micro-AP: pooled predictions by descending score; ties count as one threshold."""
    if not n_truth:
        return float("nan")
    if not preds:
        return 0.0
    scores = np.array([s for s, _ in preds])
    correct = np.array([c for _, c in preds])
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    tp = np.cumsum(correct)
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # end of each tie block
    precision = tp[last] / (last + 1)
    recall = tp[last] / n_truth
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_threshold(negative_best: list[float], fpr: float) -> float:
    """Scores strictly above this are accepted with at most `fpr` of the negatives accepted: the
    lowest such threshold, above all of the negatives' best scores but that share."""
    allowed = math.floor(fpr * len(negative_best))
    ranked = sorted(negative_best, reverse=True)
    return ranked[allowed] if allowed < len(ranked) else -math.inf


@dataclass
class Scores:
    """One method's metrics for one row (a family, or all), thresholds from all the negatives."""

    positives: int
    recall: dict[float, float]
    micro_ap: float
    wrong_first: float  # share of positives whose top-1 reference is not the source
    wrong_confident: float  # ... and scored above the FPR 0.1 % threshold


def _rows(ds: Dataset, ids: list[int]) -> dict[str, list[int]]:
    """Query ids per family row, and all of them under "all"."""
    rows = {f: [i for i in ids if ds.queries[i]["family"] == f] for f in FAMILIES}
    rows["all"] = list(ids)
    return {f: r for f, r in rows.items() if r}


def evaluate(run: MethodRun, ds: Dataset) -> tuple[dict[str, Scores], dict[float, float], int]:
    """Per-family and overall metrics; thresholds from all of this method's negatives."""
    neg_ids = [i for i in run.query_ids if ds.queries[i]["reference"] is None]
    pos_ids = [i for i in run.query_ids if ds.queries[i]["reference"] is not None]

    thresholds = {f: fpr_threshold([run.top(i)[1] for i in neg_ids], f) for f in FPR_TARGETS}
    neg_preds = [(p[1], False) for i in neg_ids for p in run.predictions.get(i, [])]
    rows = {}
    for family, ids in _rows(ds, pos_ids).items():
        truth = {i: ds.queries[i]["reference"] for i in ids}
        tops = {i: run.top(i) for i in ids}
        right = [i for i in ids if tops[i][0] == truth[i]]
        wrong = [i for i in ids if tops[i][0] is not None and tops[i][0] != truth[i]]
        strict = thresholds[min(FPR_TARGETS)]
        preds = neg_preds + [(p[1], p[0] == truth[i]) for i in ids for p in run.predictions.get(i, [])]
        rows[family] = Scores(
            positives=len(ids),
            recall={f: sum(tops[i][1] > t for i in right) / len(ids) for f, t in thresholds.items()},
            micro_ap=_micro_ap(preds, len(ids)),
            wrong_first=len(wrong) / len(ids),
            wrong_confident=sum(tops[i][1] > strict for i in wrong) / len(ids),
        )
    return rows, thresholds, len(neg_ids)


@dataclass
class AtThreshold:
    """What a user of one threshold gets (scores >= it reported), for one row of queries.

    A positive is found when its first reported match is its exact source. Another catalog image
    reported first is a wrong reference: a sibling (same-photo group: a recolour, a crop...) or
    any other image. Copies whose colour was removed cannot tell recolours apart: their wrong
    references are counted apart, not in `wrong_*`."""

    positives: int = 0
    found: int = 0
    wrong_sibling: int = 0  # copies keeping colour, a sibling of the source reported first
    wrong_other: int = 0  # copies keeping colour, an unrelated catalog image reported first
    kept_colour: int = 0  # positives whose copy keeps colour
    colourless: int = 0
    colourless_found: int = 0
    colourless_sibling: int = 0  # a colour-less copy, a sibling of the source first
    colourless_listed: int = 0  # a colour-less copy, its source among the matches reported
    negatives: int = 0
    flagged: int = 0  # negatives with a match reported: look-alikes flagged

    @property
    def recall(self) -> float:
        return self.found / self.positives if self.positives else float("nan")

    @property
    def fpr(self) -> float:
        return self.flagged / self.negatives if self.negatives else float("nan")

    @property
    def wrong(self) -> float:
        """Share of the copies that keep colour ranked under another catalog image."""
        return (self.wrong_sibling + self.wrong_other) / self.kept_colour if self.kept_colour else float("nan")


def at_threshold(ds: Dataset, ids: list[int], answers, threshold: float) -> AtThreshold:
    """Counts for queries `ids` when matches score >= `threshold`; `answers(qid)` gives a query's
    answers [(ref, score, kind)] best first, e.g. those of a threshold-0 scan: the ones at or
    above the threshold are what a scan at it reports (approximately: see run_imguard)."""
    out = AtThreshold()
    for i in ids:
        q = ds.queries[i]
        reported = [a for a in answers(i) if a[1] >= threshold]
        if q["reference"] is None:
            out.negatives += 1
            out.flagged += bool(reported)
            continue
        out.positives += 1
        first = reported[0][0] if reported else None
        found = first == q["reference"]
        out.found += found
        sibling = first in ds.siblings(q["reference"])
        if q.get("colourless"):
            out.colourless += 1
            out.colourless_found += found
            out.colourless_sibling += sibling
            out.colourless_listed += any(a[0] == q["reference"] for a in reported)
        else:
            out.kept_colour += 1
            out.wrong_sibling += sibling
            out.wrong_other += bool(reported) and not found and not sibling
    return out


def _source_score(answers: list[tuple[str, float, str]], source: str) -> float | None:
    """The score a query got against its own source, None when that was never a candidate."""
    return max((a[1] for a in answers if a[0] == source), default=None)


def _losses(ds: Dataset, ids: list[int], answers, threshold: float) -> dict[str, list[float]]:
    """The positives among `ids` not found at `threshold`, by where they were lost (with the
    source's own score where it had one)."""
    out: dict[str, list[float]] = {k: [] for k in ("another catalog image first", "verified under the threshold",
                                                    "a candidate that failed verification", "never a candidate")}
    for i in ids:
        source, got = ds.queries[i]["reference"], answers(i)
        reported = [a for a in got if a[1] >= threshold]
        if reported and reported[0][0] == source:
            continue
        own = _source_score(got, source)
        if reported:
            out["another catalog image first"].append(own or 0.0)
        elif own is None:
            out["never a candidate"].append(0.0)
        elif own <= 0:
            out["a candidate that failed verification"].append(own)
        else:
            out["verified under the threshold"].append(own)
    return out


def source_folds(ds: Dataset, k: int = FOLDS) -> list[list[str]]:
    """k folds of whole sources, about equal in negatives: each source goes, largest first, to the
    fold with the fewest negatives so far."""
    negatives: dict[str, int] = {}
    for q in ds.queries:
        negatives[q["origin"]] = negatives.get(q["origin"], 0) + (q["reference"] is None)
    folds: list[list[str]] = [[] for _ in range(min(k, len(negatives)))]
    load = [0] * len(folds)
    for origin in sorted(negatives, key=lambda o: (-negatives[o], o)):
        f = load.index(min(load))
        folds[f].append(origin)
        load[f] += negatives[origin]
    return [sorted(f) for f in folds]


@dataclass
class Fold:
    """One fold of sources held out: the threshold chosen on the other folds' negatives, and
    what it and the default give on the fold."""

    sources: list[str]
    threshold: float  # scores strictly above it are accepted
    chosen: AtThreshold  # at the threshold chosen on the other folds
    default: AtThreshold | None  # at the library's default (imguard only)
    own: float  # the threshold the fold's own negatives would give (for the spread)


def cross_source(run: MethodRun, ds: Dataset, folds: list[list[str]], default: float | None) -> list[Fold]:
    """For each fold of sources: choose the FPR <= FOLD_FPR threshold on the other folds'
    negatives, measure FPR and recall on the fold (as a new user with photos nobody tuned on)."""
    out = []
    for sources in folds:
        inside = [i for i in run.query_ids if ds.queries[i]["origin"] in sources]
        others = [run.top(i)[1] for i in run.query_ids
                  if ds.queries[i]["origin"] not in sources and ds.queries[i]["reference"] is None]
        threshold = fpr_threshold(others, FOLD_FPR)
        own = fpr_threshold([run.top(i)[1] for i in inside if ds.queries[i]["reference"] is None], FOLD_FPR)
        strictly_above = math.nextafter(threshold, math.inf)
        out.append(Fold(sources, threshold, at_threshold(ds, inside, run.answers, strictly_above),
                        None if default is None else at_threshold(ds, inside, run.answers, default), own))
    return out


# ============================================================================================
# Report


def _table(header: list[str], rows: list[list[str]], align: str = "l") -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:" if align == "r" else "---"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _pct(n: int, d: int, digits: int = 1) -> str:
    return f"{n}/{d} ({100 * n / d:.{digits}f} %)" if d else "–"


def _column(run: MethodRun) -> str:
    if run.error is None and run.name == "crh":
        return f"{run.label} (n={len(run.query_ids)})"
    return run.label


def _at_threshold_section(ds: Dataset, run: MethodRun, threshold: float, default: float) -> list[str]:
    """imguard per family at one threshold: what the issue's targets are judged on."""
    which = "its default threshold" if threshold == default else f"--threshold {threshold} (the default is {default})"
    out = ["", f"## imguard at {which}: score ≥ {threshold}", ""]
    rows, totals = [], None
    for family, ids in _rows(ds, run.query_ids).items():
        a = at_threshold(ds, ids, run.answers, threshold)
        totals = a if family == "all" else totals
        colourless = (f"{a.colourless_found}/{a.colourless} exact first, {a.colourless_sibling} a sibling first, "
                      f"source listed {a.colourless_listed}" if a.colourless else "–")
        rows.append([f"**{family}**" if family == "all" else family, str(a.positives), _fmt(a.recall),
                     f"{_fmt(a.wrong)} ({a.wrong_sibling} sibling, {a.wrong_other} other)", colourless,
                     _pct(a.flagged, a.negatives, 2)])
    out.append(_table(["family", "copies", "found, exact original first",
                       "copies keeping colour ranked under another catalog image", "colour-less copies",
                       "look-alikes flagged"], rows, align="r"))
    out += ["", (
        "Found: the first match reported is the exact source. A sibling is another catalog image of the "
        "source's same-photo group (a recolour, a crop or detail of one master); a copy whose colour was "
        "removed (greyscale, sepia) cannot tell recolours apart, so its answers are counted in their own "
        "column, not as wrong references. Look-alikes: edited distractors (no catalog image in them), "
        "flagged when any match is reported."
    )]
    kinds: dict[str, int] = {}
    for i in run.query_ids:
        for a in run.answers(i):
            if a[1] >= threshold:
                kinds[a[2]] = kinds.get(a[2], 0) + 1
    out += ["", "Matches reported, by kind (the library's Match.kind, \"copy\" where it has none): "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + "."]
    if totals is not None:
        fams = {f: at_threshold(ds, ids, run.answers, threshold).recall
                for f, ids in _rows(ds, run.query_ids).items() if f != "all"}
        short = [f"{f} {_fmt(r)}" for f, r in fams.items() if r < 0.85]
        targets = [
            ("copies found with their exact original first ≥ 0.95", totals.recall >= 0.95, _fmt(totals.recall)),
            ("every family ≥ 0.85", not short, "short: " + ", ".join(short) if short else "all are"),
            ("look-alikes flagged ≤ 0.1 %", totals.fpr <= 0.001, f"{100 * totals.fpr:.2f} %"),
            ("copies keeping colour ranked under another catalog image ≤ 0.5 %", totals.wrong <= 0.005,
             f"{100 * totals.wrong:.1f} %"),
        ]
        out += ["", "Issue 21's targets at this threshold, on this benchmark: " + "; ".join(
            f"{name}: {value} ({'met' if ok else 'NOT met'})" for name, ok, value in targets) + "."]
        out += ["", "Where the copies that were not found were lost (at this threshold):", ""]
        rows = []
        for family, ids in _rows(ds, [i for i in run.query_ids if ds.queries[i]["reference"]]).items():
            lost = _losses(ds, ids, run.answers, threshold)
            under = lost["verified under the threshold"]
            rows.append([f"**{family}**" if family == "all" else family, str(sum(map(len, lost.values()))),
                         str(len(lost["another catalog image first"])),
                         f"{len(under)}" + (f" (median {_fmt(float(np.median(under)))})" if under else ""),
                         str(len(lost["a candidate that failed verification"])), str(len(lost["never a candidate"]))])
        out.append(_table(["family", "missed", "another catalog image first", "verified under the threshold",
                           "a candidate that failed verification", "never a candidate"], rows, align="r"))
        out += ["", (
            "Never a candidate: neither a global hash nor the local-feature votes brought the source up; "
            "failed verification: keypoint matching and RANSAC found no geometry (score 0); verified under "
            "the threshold: the dense check of the aligned pair scored it below."
        )]
    if threshold == default and run.at_default is not None:
        checked = at_threshold(ds, run.query_ids, lambda i: [run.at_default[i]] if i in run.at_default else [],
                               threshold)
        differ = sum((run.top(i)[0] if run.top(i)[1] >= threshold else None)
                     != run.at_default.get(i, (None,))[0] for i in run.query_ids)
        out += ["", (
            f"Checked by a second scan at the default threshold itself (the figures above come from the "
            f"threshold-0 scan's scores): recall {_fmt(checked.recall)}, look-alikes flagged "
            f"{_pct(checked.flagged, checked.negatives, 2)}, copies keeping colour under another catalog image "
            f"{_fmt(checked.wrong)}; its first answer differs on {differ} of {len(run.query_ids)} queries."
        )]
    return out


def _cross_source_section(ds: Dataset, ok: list[MethodRun], folds: list[list[str]], default: float) -> list[str]:
    """Thresholds chosen on some sources, judged on the others: what a new user gets."""
    neg = {o: 0 for f in folds for o in f}
    for q in ds.queries:
        neg[q["origin"]] += q["reference"] is None
    fold_neg = [sum(neg[o] for o in f) for f in folds]
    few, most = min(n for n in neg.values() if n) if any(neg.values()) else 1, max(1, max(neg.values()))
    out = ["", f"## Across sources: a threshold chosen on other sources (FPR ≤ {FOLD_FPR:.1%})", "", (
        f"{len(folds)} folds of whole sources, about equal in look-alikes (each source, largest first, to the "
        f"fold with the fewest so far). For each fold, the threshold is the lowest accepting at most "
        f"{FOLD_FPR:.1%} of the other folds' look-alikes (their best scores); FPR and recall are then "
        f"measured on the held-out fold, whose photos that threshold never saw. Not leave-one-source-out: "
        f"single sources hold {few}–{most} look-alikes, and in {sum(0 < n < 1 / FOLD_FPR for n in neg.values())} "
        f"of the {len(neg)} one false positive is more than {FOLD_FPR:.1%} ({100 / few:.1f} % in the smallest), "
        f"so {FOLD_FPR:.1%} could not be measured there; a fold holds {min(fold_neg)}–{max(fold_neg)}."
    ), ""]
    rows = []
    per_method = {r.name: cross_source(r, ds, folds, default if r.name in IMGUARD_METHODS else None) for r in ok}
    for r in ok:
        fs = per_method[r.name]
        fpr = [f.chosen.fpr for f in fs]
        rec = [f.chosen.recall for f in fs]
        worst = max(range(len(fs)), key=lambda k: (fpr[k], -rec[k]))
        row = [_column(r), f"{_fmt(min(f.threshold for f in fs))}–{_fmt(max(f.threshold for f in fs))}",
               f"{100 * fpr[worst]:.2f} % (fold {worst + 1}); {100 * min(fpr):.2f}–{100 * max(fpr):.2f} %",
               f"{_fmt(min(rec))} (fold {rec.index(min(rec)) + 1}); {_fmt(min(rec))}–{_fmt(max(rec))}"]
        if default is not None:
            dfpr = [f.default.fpr for f in fs] if fs[0].default is not None else None
            row.append("–" if dfpr is None else f"{100 * max(dfpr):.2f} % (fold {dfpr.index(max(dfpr)) + 1}); "
                                                f"{100 * min(dfpr):.2f}–{100 * max(dfpr):.2f} %")
        rows.append(row)
    header = ["method", "thresholds chosen", "held-out FPR: worst fold; spread", "held-out recall: worst; spread"]
    if default is not None:
        header.append(f"imguard's FPR at its default ({default}): worst fold; spread")
    out.append(_table(header, rows))
    imguard_folds = per_method.get("imguard")
    if imguard_folds:
        out += ["", "imguard, fold by fold (recall: exact original first):", ""]
        rows = []
        for k, f in enumerate(imguard_folds):
            rows.append([str(k + 1), ", ".join(f.sources), str(f.chosen.negatives), str(f.chosen.positives),
                         f"> {_fmt(f.threshold)}", _pct(f.chosen.flagged, f.chosen.negatives, 2), _fmt(f.chosen.recall),
                         _pct(f.default.flagged, f.default.negatives, 2), _fmt(f.default.recall), f"> {_fmt(f.own)}"])
        out.append(_table(["fold", "sources", "look-alikes", "copies", "threshold chosen on the other folds",
                           "FPR there", "recall there", "FPR at the default", "recall at the default",
                           "the fold's own 0.1 % threshold"], rows))
        out += ["", (
            f"A default under which every fold accepts at most {FOLD_FPR:.1%} of its look-alikes must be above "
            f"{_fmt(max(f.own for f in imguard_folds))} (the largest of the folds' own thresholds: chosen on all "
            f"the data, for information, not a held-out figure)."
        ), "", f"imguard per source at the default threshold ({default}):", ""]
        run = next(r for r in ok if r.name == "imguard")
        rows = []
        for origin in sorted(neg):
            ids = [i for i in run.query_ids if ds.queries[i]["origin"] == origin]
            a = at_threshold(ds, ids, run.answers, default)
            rows.append([origin, _pct(a.flagged, a.negatives, 2), _fmt(a.recall),
                         f"{a.wrong_sibling + a.wrong_other}/{a.kept_colour}"])
        out.append(_table(["source", "look-alikes flagged", "copies found",
                           "copies keeping colour under another image"], rows))
    return out


def render_report(ds: Dataset, runs: list[MethodRun], argv: list[str], seconds: dict,
                  threshold: float, worst_path: Path | None) -> str:
    """The markdown report: how it was run, the data, what a user of the default gets, the
    cross-source check, cost per method, one table per metric."""
    ok = [r for r in runs if r.error is None]
    results = {r.name: evaluate(r, ds) for r in ok}
    n_pos = sum(q["reference"] is not None for q in ds.queries)
    n_neg = len(ds.queries) - n_pos
    fam_counts = {f: [0, 0] for f in FAMILIES}
    for q in ds.queries:
        fam_counts[q["family"]][q["reference"] is None] += 1
    per_source = {}
    for rel in ds.catalog + ds.distractors:
        per_source.setdefault(ds.sources.origin(rel), [0, 0])[rel not in ds.catalog_set] += 1
    out = ["# imguard accuracy benchmark", ""]
    out.append(f"- command: `{' '.join(shlex.quote(a) for a in argv)}`")
    out.append(f"- seed: {ds.params['seed']}; quick: {ds.params['quick']}; machine: {os.cpu_count()} cores")
    out.append(
        f"- sources: {ds.sources.kind} ({len(ds.sources.rels)} images from "
        f"{len({ds.sources.origin(r) for r in ds.sources.rels})} sources, "
        f"{_dataset.shown(ds.sources.root)}); grouping: {_dataset.grouping_summary(ds.grouping)}"
    )
    out.append(
        f"- split by whole groups, about half of each source on each side: catalog {len(ds.catalog)} images, "
        f"distractors {len(ds.distractors)} (catalog/distractors per source: "
        + ", ".join(f"{o} {c}/{d}" for o, (c, d) in sorted(per_source.items())) + ")"
    )
    out.append(
        f"- queries: {len(ds.queries)} = {n_pos} positives (copies of catalog images) + {n_neg} "
        f"negatives (distractors edited the same ways); per family positives/negatives: "
        + ", ".join(f"{f} {p}/{n}" for f, (p, n) in fam_counts.items())
        + f"; {sum(bool(q.get('colourless')) and q['reference'] is not None for q in ds.queries)} positives "
        "have their colour removed (greyscale or sepia)"
    )
    allowed = ", ".join(f"FPR ≤ {f:.1%} allows {math.floor(f * n_neg)}" for f in FPR_TARGETS)
    out.append(f"- false positives allowed among the {n_neg} negatives: {allowed}")
    if ds.failures:
        out.append(f"- {len(ds.failures)} copies failed to generate and were left out (see manifest)")
    cached = [r.label for r in runs if r.cached]
    out.append(
        f"- dataset build: {ds.build_seconds:.0f} s when made (cached in {ds.root.relative_to(_dataset.BENCH_DIR)}); "
        f"this run: dataset {seconds['dataset']:.1f} s, methods {seconds['methods']:.0f} s"
        + (f" (answers from an earlier run of the same code: {', '.join(cached)})" if cached else "")
    )
    default = default_threshold() if any(r.name in IMGUARD_METHODS for r in ok) else None
    imguard_run = next((r for r in ok if r.name == "imguard"), None)
    if imguard_run is not None:
        out += _at_threshold_section(ds, imguard_run, threshold, default)
        for r in ok:
            if r.name in IMGUARD_METHODS and r is not imguard_run:
                a = at_threshold(ds, r.query_ids, r.answers, threshold)
                out.append(f"{r.label} at score ≥ {threshold}: found {_fmt(a.recall)}, copies keeping colour "
                           f"under another catalog image {_fmt(a.wrong)}, look-alikes flagged "
                           f"{_pct(a.flagged, a.negatives, 2)}.")
    if ok:
        out += _cross_source_section(ds, ok, source_folds(ds), default)
    out += ["", "## Methods: cost (wall clock, fingerprinting catalog + queries)", ""]
    rows = []
    for r in runs:
        if r.error:
            rows.append([r.label, "–", "–", "–", "–", f"**not run**: {r.error}"])
            continue
        th = results[r.name][1]
        rows.append([
            _column(r), str(r.images), f"{r.seconds:.1f}", f"{r.images_per_s:.1f}",
            " / ".join(_fmt(th[f]) for f in FPR_TARGETS), r.note + (f" (measured {r.measured})" if r.measured else ""),
        ])
    out.append(_table(["method", "images", "seconds", "images/s", "threshold at FPR 1% / 0.1%", "note"], rows))
    out.append("")
    out.append(
        "Thresholds: a query is a match when its best score is strictly above the threshold. "
        "Global hashes score 1 - Hamming/bits; crop-resistant scores the share of matched segments. "
        "The tables below choose the threshold on all the negatives at once (in-sample)."
    )
    metrics = [
        ("Recall at FPR ≤ 1%", lambda s: s.recall[0.01]),
        ("Recall at FPR ≤ 0.1%", lambda s: s.recall[0.001]),
        ("Micro-average precision (DISC21 µAP)", lambda s: s.micro_ap),
        ("Wrong reference ranked first (share of positives; above the FPR 0.1% threshold in brackets)",
         lambda s: f"{_fmt(s.wrong_first)} ({_fmt(s.wrong_confident)})"),
    ]
    header = ["family"] + [_column(r) for r in ok]
    for title, get in metrics:
        out += ["", f"## {title}", ""]
        body = []
        for family in FAMILIES + ("all",):
            cells = []
            for r in ok:
                s = results[r.name][0].get(family)
                v = get(s) if s else None
                cells.append(v if isinstance(v, str) else _fmt(v))
            body.append([f"**{family}**" if family == "all" else family] + cells)
        out.append(_table(header, body, align="r"))
    out += ["", (
        "A positive counts only when its top-1 reference is its exact source image (another member "
        "of its near-duplicate group is a miss). Per-family µAP pools that family's positives with "
        "all negatives. Baselines submit one prediction (the best catalog image) per query."
    )]
    for r in runs:
        if r.name == "crh" and r.error is None:
            out.append(
                f"crop-resistant ran on a seeded subset of {len(r.query_ids)} queries "
                "(--crh-limit): its FPR ≤ 0.1% column rests on few negatives."
            )
    if imguard_run is not None:
        out.append(f"imguard score threshold for FPR ≤ 0.1% (in-sample): "
                   f"score > {_fmt(results['imguard'][1][0.001])}")
    exact = results.get("imguard-exact")
    for name, what in (("imguard", "imguard's indexes as chosen by size"),
                       ("imguard-10k", f"the feature lists of a {SCALE_IMAGES:,}-image catalog")):
        approximate = results.get(name)
        if not approximate or not exact:
            continue
        lost = {f: exact[0]["all"].recall[f] - approximate[0]["all"].recall[f] for f in FPR_TARGETS}
        out.append("")
        out.append(f"Approximate against exact search ({what}, against flat indexes): "
                   + "; ".join(f"recall at FPR ≤ {f:.1%} {_fmt(exact[0]['all'].recall[f])} → "
                               f"{_fmt(approximate[0]['all'].recall[f])} ({100 * lost[f]:+.1f} points lost)"
                               for f in FPR_TARGETS)
                   + f" (target: at most 2 points lost: {'met' if max(lost.values()) <= 0.02 else 'NOT met'})")
    if worst_path is not None:
        out += ["", f"The worst cases (highest-scoring look-alikes, lowest-scoring copies per family, wrong "
                    f"references) are listed in {_dataset.shown(worst_path)} (not committed)."]
    return "\n".join(out) + "\n"


# ============================================================================================
# Worst cases, for a detection engineer to look at


def write_worst_cases(ds: Dataset, run: MethodRun, threshold: float, path: Path,
                      negatives: int = 25, per_family: int = 5) -> None:
    """The look-alikes that scored highest, the copies whose source scored lowest in each family,
    and the copies answered with another catalog image: a markdown list with the files (paths
    relative to the repository) and a contact sheet next to it (query | what it was matched to |
    what it was made from)."""
    checked = {}
    for a, b, share, _ in ds.grouping["checks"]:
        checked[a, b] = checked[b, a] = share
    src = lambda rel: _dataset.shown(ds.sources.path(rel))  # noqa: E731
    qpath = lambda i: _dataset.shown(Path(ds.query_path(ds.queries[i])))  # noqa: E731
    lines = [f"# Worst cases of {run.label} on {ds.root.name}, threshold {threshold}", ""]
    sheet: list[tuple[str, list[str]]] = []

    neg = sorted((i for i in run.query_ids if ds.queries[i]["reference"] is None), key=lambda i: -run.top(i)[1])
    lines += [f"## The {negatives} highest-scoring look-alikes (negatives)", "",
              "| score | family | source | matched catalog image | pair's dense check | query | made from | edit |",
              "|---:|---|---|---|---:|---|---|---|"]
    for i in neg[:negatives]:
        q, (ref, score, _) = ds.queries[i], run.top(i)
        if ref is None:
            break
        pair = checked.get((q["source"], ref))
        lines.append(f"| {score:.3f} | {q['family']} | {q['origin']} | {src(ref)} | "
                     f"{'–' if pair is None else f'{pair:.2f}'} | {qpath(i)} | {src(q['source'])} | {q['edit']} |")
        sheet.append((f"NEG {q['family']} {score:.2f}", [ds.query_path(q), str(ds.sources.path(ref)),
                                                          str(ds.sources.path(q["source"]))]))

    lines += ["", f"## The {per_family} lowest-scoring copies of each family (positives)", "",
              "| family | source's score | top answer (score) | query | source | edit |", "|---|---:|---|---|---|---|"]
    for family, ids in _rows(ds, [i for i in run.query_ids if ds.queries[i]["reference"]]).items():
        if family == "all":
            continue
        own_score = {i: _source_score(run.answers(i), ds.queries[i]["reference"]) or 0.0 for i in ids}
        for k, i in enumerate(sorted(ids, key=own_score.get)[:per_family]):
            q, (ref, score, _) = ds.queries[i], run.top(i)
            own = own_score[i]
            answer = "none" if ref is None else f"{'the source' if ref == q['reference'] else src(ref)} ({score:.3f})"
            lines.append(f"| {family} | {own:.3f} | {answer} | {qpath(i)} | {src(q['reference'])} | {q['edit']} |")
            if k < 2:
                sheet.append((f"POS {family} {own:.2f}", [ds.query_path(q)] + [str(ds.sources.path(r)) for r in
                              ([ref] if ref and ref != q["reference"] else []) + [q["reference"]]]))

    wrong = [i for i in run.query_ids if ds.queries[i]["reference"] and run.top(i)[1] >= threshold
             and run.top(i)[0] != ds.queries[i]["reference"]]
    lines += ["", f"## Copies answered first with another catalog image at score ≥ {threshold} ({len(wrong)})", "",
              "| family | answer (score) | sibling? | colour-less? | source's score | query | source | edit |",
              "|---|---|---|---|---:|---|---|---|"]
    for i in sorted(wrong, key=lambda i: (ds.queries[i]["family"], -run.top(i)[1])):
        q, (ref, score, _) = ds.queries[i], run.top(i)
        sibling = "yes" if ref in ds.siblings(q["reference"]) else "no"
        own = _source_score(run.answers(i), q["reference"]) or 0.0
        lines.append(f"| {q['family']} | {src(ref)} ({score:.3f}) | {sibling} | "
                     f"{'yes' if q.get('colourless') else 'no'} | {own:.3f} | "
                     f"{qpath(i)} | {src(q['reference'])} | {q['edit']} |")
    path.write_text("\n".join(lines) + "\n")
    _contact_sheet(sheet, path.with_suffix(".png"))


def _contact_sheet(cases: list[tuple[str, list[str]]], out: Path, cell: int = 220) -> None:
    """Cases side by side, three pictures a case, three cases a row, each with its caption."""
    from PIL import Image, ImageDraw

    per_row, width = 3, 3 * cell + 20
    rows = (len(cases) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * width, rows * (cell + 18)), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for k, (caption, paths) in enumerate(cases):
        x0, y0 = (k % per_row) * width, (k // per_row) * (cell + 18)
        draw.text((x0 + 4, y0 + 2), caption, fill=(0, 0, 0))
        for j, p in enumerate(paths[:3]):
            im = load_rgb(p)
            im.thumbnail((cell - 6, cell - 6))
            sheet.paste(im, (x0 + j * cell + 3, y0 + 16))
    sheet.save(out)


# ============================================================================================
# CLI


def _subset(ds: Dataset, limit: int, seed: int) -> list[int]:
    """A seeded subset of queries, stratified by family and positive/negative."""
    if not limit or limit >= len(ds.queries):
        return list(range(len(ds.queries)))
    import random

    cells: dict[tuple, list[int]] = {}
    for i, q in enumerate(ds.queries):
        cells.setdefault((q["family"], q["reference"] is None), []).append(i)
    per_cell = max(1, limit // len(cells))
    rng = random.Random(f"subset/{seed}")
    return sorted(i for ids in cells.values() for i in rng.sample(ids, min(per_cell, len(ids))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"small subset for iteration: {_dataset.QUICK_CATALOG} catalog images, "
                        f"{_dataset.QUICK_PER_FAMILY} positives and negatives per family")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the copies (default 0)")
    p.add_argument("--limit-per-family", type=int, metavar="N",
                   help="positives and negatives per family (default: "
                        f"{_dataset.FULL_POSITIVES_PER_FAMILY} positives, every distractor as a negative)")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)} (default: all)")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="evaluate imguard at this score threshold instead of its default "
                        "(imguard.DEFAULT_THRESHOLD), from the cached scans: no scan is re-run")
    p.add_argument("--fresh", action="store_true",
                   help="re-run every method even when the cache holds its answers for the same code")
    p.add_argument("--crh-limit", type=int, default=360, metavar="N",
                   help="run crop_resistant_hash (~4 images/s per core) on a seeded subset of N "
                        "queries, stratified by family; 0 = all (default 360)")
    p.add_argument("--processes", type=int, default=2,
                   help="worker processes for building copies and hashing, and imguard's jobs")
    p.add_argument("--skimage", action="store_true",
                   help="use scikit-image's sample photos even when ../shared/data/products is there")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="also write the markdown report there (e.g. benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(ALL_METHODS)
    if unknown:
        p.error(f"unknown method(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    sources = _dataset.find_sources(None if args.skimage else _dataset.SHARED_PRODUCTS)
    ds = build_dataset(args.seed, args.quick, args.limit_per_family, args.processes, sources, log)
    t_data = time.perf_counter() - t0
    log(f"dataset: {len(ds.catalog)} catalog images, {len(ds.queries)} queries ({t_data:.0f} s)")

    all_ids = list(range(len(ds.queries)))
    runs = []
    t1 = time.perf_counter()
    hashes = [m for m in args.methods if m in HASH_METHODS]
    with Pool(args.processes) as pool:
        for m in hashes:
            ids = _subset(ds, args.crh_limit, args.seed) if m == "crh" else all_ids
            note = f"seeded subset of {len(ids)} queries (--crh-limit)" if len(ids) < len(all_ids) else ""
            key = {**_hash_code_key(m), "queries": _dataset._digest(ids)}
            runs.append(_cached(ds, m, key, args.fresh, functools.partial(run_hash, m, ds, ids, pool, note), log))
    for name in IMGUARD_METHODS:
        if name in args.methods:
            try:
                key = {**_imguard_code_key(name), "queries": _dataset._digest(all_ids)}
            except ImportError as exc:
                runs.append(MethodRun(name, METHOD_LABELS[name], all_ids, error=f"imguard not importable: {exc}"))
                continue
            runs.append(_cached(ds, name, key, args.fresh,
                                functools.partial(run_imguard, ds, all_ids, args.processes, name), log))
            if runs[-1].error:
                log(f"{name}: {runs[-1].error}")
    seconds = {"dataset": t_data, "methods": time.perf_counter() - t1}

    imguard_run = next((r for r in runs if r.name == "imguard" and r.error is None), None)
    threshold = args.threshold if args.threshold is not None else (default_threshold() if imguard_run else None)
    worst = None
    if imguard_run is not None:
        worst = _dataset.CACHE_DIR / "worst-cases.md"
        write_worst_cases(ds, imguard_run, threshold, worst)
        log(f"wrote {_dataset.shown(worst)} and {_dataset.shown(worst.with_suffix('.png'))}")
    report = render_report(ds, runs, ["python", "benchmarks/accuracy.py"] + (argv or sys.argv[1:]), seconds,
                           threshold, worst)
    print(report)
    if args.out:
        args.out.write_text(report)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
