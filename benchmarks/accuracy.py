"""Accuracy benchmark: does a method find stolen copies of catalog photos, and only those?

Builds (or reuses from benchmarks/.cache/) a seeded benchmark from real product photos -- see
_dataset.py: near-duplicate groups are found first so that no distractor is a copy of a catalog
image, then AugLy makes copies of catalog images (positives) and edits distractors the same way
(negatives) in nine families. Every method runs on the same files in the same run:

- baselines: imagehash pHash / dHash / wHash (64 bits, brute-force Hamming), imagehash
  crop_resistant_hash (slow: on a seeded subset of queries, see --crh-limit), PDQ with its 8
  dihedral variants on the query side;
- imguard through its public API (Catalog.open / add / scan), when it imports and works.

Metrics, per edit family and overall:
- recall at FPR <= 1 % and <= 0.1 %: the threshold comes from the negatives' best scores, and a
  positive counts only if its best-scoring reference is its exact source image;
- micro-average precision as in DISC21: all (query, reference, score) predictions pooled, sorted
  by score, AP over the number of ground-truth pairs; a prediction is right only when it names
  the exact source;
- how often a wrong reference ranked first (e.g. another colour of the same product).

Run: python benchmarks/accuracy.py [--quick] [--methods phash,pdq,imguard] [--out FILE]
"""

from __future__ import annotations

import argparse
import inspect
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
    predictions: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    images: int = 0  # catalog + queries fingerprinted
    seconds: float = 0.0
    note: str = ""
    error: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


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
        run.predictions[qid] = [(ds.catalog[best[row]], float(scores[row, best[row]]))]
    return run


def run_imguard(ds: Dataset, query_ids: list[int], jobs: int, name: str = "imguard") -> MethodRun:
    """imguard through its public API; any failure is reported, never fatal to the baselines.

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
            kwargs = {"threshold": 0.0}
            if "jobs" in inspect.signature(cat.scan).parameters:
                kwargs["jobs"] = jobs
            for m in cat.scan(q_paths, **kwargs):
                qid = qid_of.get(str(m.query), qid_of.get(os.path.realpath(str(m.query))))
                ref = ref_of.get(str(m.reference), ref_of.get(os.path.realpath(str(m.reference))))
                if qid is not None:
                    run.predictions.setdefault(qid, []).append((ref or str(m.reference), float(m.score)))
            run.seconds = time.perf_counter() - t0
        run.images = len(ds.catalog) + len(q_paths)
        run.note += "add + scan (incl. search and verification), jobs=%s" % kwargs.get("jobs", "-")
    except Exception as exc:  # the library is being written in parallel: report, go on
        traceback.print_exc()
        run.error = f"imguard failed: {type(exc).__name__}: {exc}"
    finally:
        for key, value in limits.items():
            setattr(imguard_index, key, value)
    for preds in run.predictions.values():
        preds.sort(key=lambda p: -p[1])
    return run


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
    """Scores strictly above this are accepted with at most `fpr` of the negatives accepted."""
    allowed = math.floor(fpr * len(negative_best))
    ranked = sorted(negative_best, reverse=True)
    return ranked[allowed] if allowed < len(ranked) else -math.inf


def _best(run: MethodRun, qid: int) -> tuple[str | None, float]:
    """A query's top prediction: (catalog image, score), or (None, -inf) without one."""
    preds = run.predictions.get(qid)
    return preds[0] if preds else (None, -math.inf)


def at_threshold(run: MethodRun, ds: Dataset, threshold: float) -> tuple[float, int, int]:
    """(recall, negatives accepted, negatives) when scores >= `threshold` are matches: what a
    user of the default gets, approximately. Taken from the threshold-0 run; a scan at the
    threshold itself drops a sibling under it before ranking, so it finds the source at least
    as often."""
    queries = [(i, ds.queries[i]["reference"]) for i in run.query_ids]
    positives = [(i, ref) for i, ref in queries if ref is not None]
    found = sum(_best(run, i)[0] == ref and _best(run, i)[1] >= threshold for i, ref in positives)
    accepted = sum(_best(run, i)[1] >= threshold for i, ref in queries if ref is None)
    return found / max(1, len(positives)), accepted, len(queries) - len(positives)


@dataclass
class Scores:
    """One method's metrics for one row (a family, or all)."""

    positives: int
    recall: dict[float, float]
    micro_ap: float
    wrong_first: float  # share of positives whose top-1 reference is not the source
    wrong_confident: float  # ... and scored above the FPR 0.1 % threshold


def evaluate(run: MethodRun, ds: Dataset) -> tuple[dict[str, Scores], dict[float, float], int]:
    """Per-family and overall metrics; thresholds from all of this method's negatives."""
    neg_ids = [i for i in run.query_ids if ds.queries[i]["reference"] is None]
    pos_ids = [i for i in run.query_ids if ds.queries[i]["reference"] is not None]

    thresholds = {f: fpr_threshold([_best(run, i)[1] for i in neg_ids], f) for f in FPR_TARGETS}
    neg_preds = [(s, False) for i in neg_ids for _, s in run.predictions.get(i, [])]
    rows = {}
    for family in FAMILIES + ("all",):
        ids = [i for i in pos_ids if family == "all" or ds.queries[i]["family"] == family]
        if not ids:
            continue
        truth = {i: ds.queries[i]["reference"] for i in ids}
        tops = {i: _best(run, i) for i in ids}
        right = [i for i in ids if tops[i][0] == truth[i]]
        wrong = [i for i in ids if tops[i][0] is not None and tops[i][0] != truth[i]]
        strict = thresholds[min(FPR_TARGETS)]
        preds = neg_preds + [
            (s, ref == truth[i]) for i in ids for ref, s in run.predictions.get(i, [])
        ]
        rows[family] = Scores(
            positives=len(ids),
            recall={f: sum(tops[i][1] > t for i in right) / len(ids) for f, t in thresholds.items()},
            micro_ap=_micro_ap(preds, len(ids)),
            wrong_first=len(wrong) / len(ids),
            wrong_confident=sum(tops[i][1] > strict for i in wrong) / len(ids),
        )
    return rows, thresholds, len(neg_ids)


# ============================================================================================
# Report


def _table(header: list[str], rows: list[list[str]], align: str = "l") -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:" if align == "r" else "---"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _column(run: MethodRun) -> str:
    if run.error is None and run.name == "crh":
        return f"{run.label} (n={len(run.query_ids)})"
    return run.label


def render_report(ds: Dataset, runs: list[MethodRun], argv: list[str], seconds: dict) -> str:
    """The markdown report: how it was run, the data, cost per method, one table per metric."""
    ok = [r for r in runs if r.error is None]
    results = {r.name: evaluate(r, ds) for r in ok}
    n_pos = sum(q["reference"] is not None for q in ds.queries)
    n_neg = len(ds.queries) - n_pos
    fam_counts = {f: [0, 0] for f in FAMILIES}
    for q in ds.queries:
        fam_counts[q["family"]][q["reference"] is None] += 1
    out = ["# imguard accuracy benchmark", ""]
    out.append(f"- command: `{' '.join(shlex.quote(a) for a in argv)}`")
    out.append(f"- seed: {ds.params['seed']}; quick: {ds.params['quick']}; machine: {os.cpu_count()} cores")
    out.append(
        f"- sources: {ds.sources.kind} ({len(ds.sources.rels)} images, {_dataset.shown(ds.sources.root)}); "
        f"grouping: {_dataset.grouping_summary(ds.grouping)}"
    )
    out.append(
        f"- split by whole groups: catalog {len(ds.catalog)} images, distractors "
        f"{len(ds.distractors)} images"
    )
    out.append(
        f"- queries: {len(ds.queries)} = {n_pos} positives (copies of catalog images) + {n_neg} "
        f"negatives (edited distractors); per family positives/negatives: "
        + ", ".join(f"{f} {p}/{n}" for f, (p, n) in fam_counts.items())
    )
    allowed = ", ".join(f"FPR ≤ {f:.1%} allows {math.floor(f * n_neg)}" for f in FPR_TARGETS)
    out.append(f"- false positives allowed among the {n_neg} negatives: {allowed}")
    if ds.failures:
        out.append(f"- {len(ds.failures)} copies failed to generate and were left out (see manifest)")
    out.append(
        f"- dataset build: {ds.build_seconds:.0f} s when made (cached in {ds.root.relative_to(_dataset.BENCH_DIR)}); "
        f"this run: dataset {seconds['dataset']:.1f} s, methods {seconds['methods']:.0f} s"
    )
    out.append("")
    out.append("## Methods: cost (wall clock, fingerprinting catalog + queries)")
    out.append("")
    rows = []
    for r in runs:
        if r.error:
            rows.append([r.label, "–", "–", "–", "–", f"**not run**: {r.error}"])
            continue
        th = results[r.name][1]
        rows.append([
            _column(r), str(r.images), f"{r.seconds:.1f}", f"{r.images_per_s:.1f}",
            " / ".join(_fmt(th[f]) for f in FPR_TARGETS), r.note,
        ])
    out.append(_table(["method", "images", "seconds", "images/s", "threshold at FPR 1% / 0.1%", "note"], rows))
    out.append("")
    out.append(
        "Thresholds: a query is a match when its best score is strictly above the threshold. "
        "Global hashes score 1 - Hamming/bits; crop-resistant scores the share of matched segments."
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
    imguard = results.get("imguard")
    if imguard:
        out.append(f"imguard score threshold for FPR ≤ 0.1%: score > {_fmt(imguard[1][0.001])}")
        from imguard.scan import DEFAULT_THRESHOLD

        run = next(r for r in ok if r.name == "imguard")
        recall, accepted, negatives = at_threshold(run, ds, DEFAULT_THRESHOLD)
        out.append("")
        out.append(f"At imguard's default threshold (score ≥ `scan.DEFAULT_THRESHOLD` = {DEFAULT_THRESHOLD}): "
                   f"recall {recall:.3f}; {accepted} of {negatives} negatives accepted "
                   f"(FPR {100 * accepted / max(1, negatives):.2f} %).")
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
    return "\n".join(out) + "\n"


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
                        f"{_dataset.FULL_POSITIVES_PER_FAMILY}/{_dataset.FULL_NEGATIVES_PER_FAMILY})")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)} (default: all)")
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
    if hashes:
        with Pool(args.processes) as pool:
            for m in hashes:
                log(f"running {m}...")
                if m == "crh":
                    ids = _subset(ds, args.crh_limit, args.seed)
                    note = f"seeded subset of {len(ids)} queries (--crh-limit)" if len(ids) < len(all_ids) else ""
                    runs.append(run_hash(m, ds, ids, pool, note))
                else:
                    runs.append(run_hash(m, ds, all_ids, pool))
    for name in IMGUARD_METHODS:
        if name in args.methods:
            log(f"running {name}...")
            runs.append(run_imguard(ds, all_ids, args.processes, name))
            if runs[-1].error:
                log(f"{name}: {runs[-1].error}")
    seconds = {"dataset": t_data, "methods": time.perf_counter() - t1}

    report = render_report(ds, runs, ["python", "benchmarks/accuracy.py"] + (argv or sys.argv[1:]), seconds)
    print(report)
    if args.out:
        args.out.write_text(report)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
