"""Speed benchmark: imguard against the plain imagehash loop and the JPEG decode floor, in one run.

    python benchmarks/speed.py [--quick] [--out FILE] [--timeout SECONDS] [--repeat N]

Why it is built this way:
- Every rate in the main table comes from the same JPEG files in the same run, after a warm-up
  and with the files already in the page cache, so that ratios between rows mean something on a
  noisy machine. The targets are judged on the full-size JPEGs (long side >= 1000 px, the
  marketplace size the speed issue measured on): on small files decoding is cheap and ORB's
  fixed cost per 512 px view weighs more, so every ratio to the plain loop falls. A second
  table gives every JPEG. PNGs get their own small table: PNG has no scaled decode, so one PNG costs as
  much as several JPEGs and would blur the JPEG figures.
- "One core" is one job, pinned to one CPU (sched_setaffinity) with FAISS at one thread, so that
  OpenCV, FAISS or numpy threads cannot hide in the one-job figure; "all cores" is one job per CPU.
- The index experiments (hash search over 1M codes, every near pair among 100k codes against
  imagededup's find_duplicates, local-feature search over 10k/100k images) run each in a fresh
  subprocess: every peak-memory figure (VmHWM) is then that index's own.
  Their codes are synthesised from the real pHashes and ORB descriptors of the photos (random bit
  flips), because real collections of that size are not at hand and purely random codes are the
  easy case for exact search and the hard case for an inverted file.
- `index` is also timed as the `imguard index` command and the plain loop as the script a user
  writes, each a process of its own (start-up included): the speed issue measured them so.
- The same full-size photos re-encoded baseline and progressive (the same pixels) get their own
  table: a progressive JPEG decodes several times slower, at any scale.
- A scan's memory is measured against a large catalog made through imguard's own store and index
  code from the photos' real fingerprints, each scan in a fresh process, every process of it
  sampled (VmHWM and Pss), for the local pool and, where installed, a Dask cluster.
- Each target of the speed issues is printed with its measured value (the ratio of the best
  rounds, and the same ratio's spread round by round) and PASS/FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import multiprocessing
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import imguard  # first: it sets how FAISS's threads wait, which FAISS reads when it loads

import cv2
import faiss
import imagehash
import numpy as np
import simplejpeg
from PIL import Image

from imguard import engine, features, fingerprint, hashing, index, load, scan, sources
from imguard.errors import ImageError

REPO = Path(__file__).resolve().parents[1]
PRODUCTS = REPO.parent / "shared/data/products"
PRODUCTS_SHOWN = os.path.relpath(PRODUCTS, REPO)  # as the committed table prints it: no absolute path
JPEG_SUFFIXES = {".jpg", ".jpeg"}
# skimage/data files that are photographs (the fallback corpus when ../shared is absent).
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
                  "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
                  "microaneurysms.png", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg",
                  "rocket.jpg", "text.png")
FALLBACK_SIDE = 1000  # marketplace-like size for the upscaled fallback photos
WARM_FILES = 8
FEATURE_SEARCH_ROUNDS = 3  # passes over the feature queries: the best is kept, as for throughput
FULL_SIZE_SIDE = 1000  # a "full-size" product JPEG: marketplaces ask >= 1000 px on the long side for zoom
HASH_RADIUS = scan.HASH_RADIUS  # a hash hit worth a check in scan.py: recall is measured there
HASH_K = scan.HASH_K
DEDUP_RADIUS = 10  # imagededup's default max_distance_threshold
GB = 1024**3
SKIPPED = "not run in this run (--skip)"
HEADROOM = GB  # interpreter, FAISS temporaries: memory an index experiment needs beyond its arrays


@dataclass(frozen=True)
class Sizes:
    files: int | None  # JPEGs in the throughput table (None = all)
    pngs: int | None
    hash_codes: int
    hash_queries: int
    numpy_queries: int  # the NumPy brute force runs on this many queries, then is extrapolated
    feature_catalogs: tuple[int, ...]  # images in the local-feature catalogs; the targets judge the last two
    feature_queries: int  # query images per feature catalog
    flat_queries: int  # query images for the slow exact (flat) feature search
    flat_max_images: int  # no exact feature search above this catalog size: minutes per query
    dedup_codes: int  # imagededup's find_duplicates, all pairs (O(n²): ~20 min at 100k on 2 cores)
    scan_catalog: int  # images in the catalog whose scan's memory is measured
    scan_queries: int  # full-size JPEGs scanned against it


# 80 images: a small seller's catalog, just above index.FEATURE_EXACT_LIMIT, where exact search
# (the flat column) was used up to 50,000 codes.
FULL = Sizes(None, None, 1_000_000, 10_000, 200, (80, 10_000, 100_000), 32, 2, 10_000, 100_000, 100_000, 64)
# Small enough for a check in a few minutes; the larger feature catalog still crosses
# index.FEATURE_EXACT_LIMIT, so that the IVF path runs.
QUICK = Sizes(100, 20, 100_000, 10_000, 100, (100, 800), 16, 2, 10_000, 5_000, 2_000, 16)


# ================================================================================================
# Files


@dataclass
class Corpus:
    """The benchmark's files: JPEGs for the main table, PNGs for theirs, and where they came from."""

    jpegs: list[str]
    pngs: list[str]
    source: str

    @property
    def full_size(self) -> list[str]:
        """The JPEGs whose long side is at least FULL_SIZE_SIDE (every JPEG when none is)."""
        return [p for p in self.jpegs if max(image_size(p)) >= FULL_SIZE_SIDE] or self.jpegs


def spread(items: list[str], limit: int | None) -> list[str]:
    """`limit` items evenly spaced over the sorted list: a subset that samples every source folder."""
    if limit is None or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def find_corpus(sizes: Sizes, workdir: Path) -> Corpus:
    if PRODUCTS.is_dir():
        files = sorted(str(p) for p in PRODUCTS.rglob("*") if p.is_file() and sources.is_image_name(p.name))
        jpegs = [p for p in files if Path(p).suffix.lower() in JPEG_SUFFIXES]
        pngs = [p for p in files if Path(p).suffix.lower() == ".png"]
        return Corpus(spread(jpegs, sizes.files), spread(pngs, sizes.pngs), f"product photos in {PRODUCTS_SHOWN}")
    return skimage_corpus(workdir / "skimage")


def skimage_corpus(folder: Path) -> Corpus:
    """scikit-image's photos upscaled to ~FALLBACK_SIDE px, as JPEG (q 90) and PNG: a stand-in of
    marketplace sizes when the product photos are absent (the shipped files are ~512 px)."""
    import skimage.data

    folder.mkdir(parents=True)
    data = Path(skimage.data.__file__).parent
    jpegs, pngs = [], []
    for name in SKIMAGE_PHOTOS:
        if not (data / name).exists():
            continue
        image = Image.open(data / name).convert("RGB")
        scale = FALLBACK_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        stem = folder / Path(name).stem
        image.save(f"{stem}.jpg", quality=90)
        image.save(f"{stem}.png")
        jpegs.append(f"{stem}.jpg")
        pngs.append(f"{stem}.png")
    return Corpus(jpegs, pngs, f"scikit-image photos upscaled to {FALLBACK_SIDE} px (no {PRODUCTS_SHOWN})")


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def mean_megapixels(paths: list[str]) -> float:
    return float(np.mean([np.prod(image_size(p)) for p in paths]) / 1e6) if paths else 0.0


def preload(paths: list[str]) -> None:
    """Read every file once, so that the page cache holds them and no row pays for the disk."""
    for p in paths:
        load.read_bytes(p)


# ================================================================================================
# Throughput: per-file methods (module level, so that a fork Pool can run them)


def plain_phash(path: str) -> None:
    """The baseline everyone writes first: full decode, then imagehash's pHash."""
    imagehash.phash(Image.open(path))


def decode_full(path: str) -> None:
    Image.open(path).convert("RGB")


def decode_draft8(path: str) -> None:
    """The decode floor: JPEG DCT scaling to 1/8, the least a decoder can do for a 64-bit hash,
    by the decoder imguard uses for JPEGs (simplejpeg; see imguard/load.py)."""
    with open(path, "rb") as handle:
        data = handle.read()
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-width // 8), min_height=-(-height // 8))


def decode_draft8_pillow(path: str) -> None:
    """The same with Pillow's draft mode (the same libjpeg-turbo, through Pillow's loader)."""
    image = Image.open(path)
    image.draft("RGB", (image.width // 8, image.height // 8))
    image.load()


def _draft_grey(path: str) -> np.ndarray:
    """The JPEG decoded at the draft that gives a 512 px view, grey, shrunk to that view."""
    grey = cv2.cvtColor(load.load(path, features.FEATURE_SIDE).rgb, cv2.COLOR_RGB2GRAY)
    scale = features.FEATURE_SIDE / max(grey.shape)
    return cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def draft_orb(path: str) -> None:
    """The floor of a pipeline with local features, the speed issue's reference row: the JPEG
    decoded at the draft that gives a 512 px view, and ORB on it, nothing else."""
    features.orb_features(_draft_grey(path))


def draft_orb_mirror(path: str) -> None:
    """The floor of a scan: a query is matched in both orientations, so its ORB descriptors
    are computed for the mirror image too (`features.features_and_mirror`), nothing else."""
    features.features_and_mirror(_draft_grey(path))


def imguard_fingerprint(path: str) -> None:
    """What any `index` must do per file (decode, hashes, ORB): the floor the issue names for it."""
    fingerprint.fingerprint_file(path)


def imguard_hashes(path: str) -> None:
    """imguard's hashes alone, as the library computes them (a JPEG decodes at 1/8)."""
    fingerprint.fingerprint_file(path, with_features=False)


def hash_agreement(paths: list[str]) -> list[list[str]]:
    """Hamming distance of the hashes of imguard's reduced decodes to the same hashes of a
    full-size decode: the speed issue's point 1. Hashes alone are `fingerprint_file`'s; the full
    fingerprint's are those of its 512 px view (computed without the ORB it does not change)."""
    labels = ("hashes alone (1/8 draft, 128 px view)", f"full fingerprint ({features.FEATURE_SIDE} px draft)")
    bits = {(label, name): [] for label in labels for name in ("phash", "dhash")}
    for p in paths:
        data = load.read_bytes(p)
        full = hashing.global_hashes(fingerprint.canonical_view(load.decode(data, p, 10**9)).grey)
        reduced = (fingerprint.fingerprint_file(p, with_features=False).hashes,
                   hashing.global_hashes(fingerprint.canonical_view(load.decode(data, p, features.FEATURE_SIDE)).grey))
        for label, hashes in zip(labels, reduced):
            for name in ("phash", "dhash"):
                bits[label, name].append(hashing.hamming(hashes[name], full[name]))
    lines = []
    for (label, name), values in bits.items():
        v = np.array(values)
        lines.append([label, name, fmt(v.mean(), 2), fmt(np.percentile(v, 95), 0), fmt(np.percentile(v, 99), 0),
                      fmt(v.max(), 0), f"{(v <= 8).mean():.3f}"])
    return lines


def _discard(fn: Callable[[str], object], path: str) -> None:
    """Run `fn` and return nothing: pickling decoded images back to the parent would be timed too."""
    fn(path)


def map_files(fn: Callable[[str], object], paths: list[str], jobs: int) -> None:
    """The plain loop, or the same loop over a fork Pool (pool start-up timed, as in imguard)."""
    if jobs <= 1:
        for p in paths:
            fn(p)
        return
    # FAISS on one thread in each worker, as imguard's own pool sets it: OpenMP's threads do not
    # survive a fork, and a forked worker's first search would wait for them forever.
    with multiprocessing.get_context("fork").Pool(jobs, initializer=engine.single_thread_faiss) as pool:
        for _ in pool.imap_unordered(functools.partial(_discard, fn), paths, chunksize=8):
            pass


# Throughput: whole-run methods


def imagededup_run(paths: list[str], jobs: int) -> None:
    """imagededup's PHash over a folder of symlinks (it encodes folders, not lists of files)."""
    from imagededup.methods import PHash

    with tempfile.TemporaryDirectory(prefix="speed-dedup-") as folder:
        for i, p in enumerate(paths):
            os.symlink(os.path.abspath(p), os.path.join(folder, f"{i:06d}{Path(p).suffix.lower()}"))
        PHash(verbose=False).encode_images(image_dir=folder, num_enc_workers=jobs)


def imguard_index_run(paths: list[str], jobs: int) -> None:
    """`imguard index`: fingerprints, thumbnails, SQLite store and FAISS indexes, fresh catalog."""
    with tempfile.TemporaryDirectory(prefix="speed-index-") as folder:
        with imguard.Catalog.open(folder) as catalog:
            catalog.add(paths, jobs=jobs)


# The plain loop as the script a new user writes: its own process, start-up included, and for
# more jobs a fork Pool as `map_files` runs it.
PLAIN_SCRIPT = """
import multiprocessing, sys
import imagehash
from PIL import Image

def phash(path):
    imagehash.phash(Image.open(path))

jobs, paths = int(sys.argv[1]), sys.argv[2:]
if jobs <= 1:
    for p in paths:
        phash(p)
else:
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for _ in pool.imap_unordered(phash, paths, chunksize=8):
            pass
"""


def _pinned(command: list[str], jobs: int) -> list[str]:
    """`command` run on one CPU for one job (as `cores` pins this process)."""
    return ["taskset", "-c", str(min(os.sched_getaffinity(0))), *command] if jobs == 1 else command


def plain_script_run(paths: list[str], jobs: int) -> None:
    subprocess.run(_pinned([sys.executable, "-c", PLAIN_SCRIPT, str(jobs), *paths], jobs), check=True, env=USER_ENV)


def imguard_index_cli_run(paths: list[str], jobs: int) -> None:
    """`imguard index FILES --db NEW --jobs N`, as a user runs it: a process of its own."""
    with tempfile.TemporaryDirectory(prefix="speed-index-cli-") as folder:
        subprocess.run(_pinned([*IMGUARD_COMMAND, "index", *paths, "--db", folder, "--jobs", str(jobs), "--quiet"],
                               jobs), check=True, stdout=subprocess.DEVNULL, env=USER_ENV)


# A user's environment: Python caches the modules it compiles (the warm-up run writes them), which
# PYTHONDONTWRITEBYTECODE, set on some development machines, would stop: every run of the command
# would then compile imguard again.
USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# The `imguard` command installed beside this interpreter (the console script), else its entry point.
_SCRIPT = Path(sys.executable).parent / "imguard"
IMGUARD_COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from imguard_cli.main import app; app()"]


class ScanBench:
    """`imguard scan` where most queries are non-matches, as in real scans: the files are split
    into two halves, each half is indexed, and every file is scanned against the other half's
    catalog. Every file is thus scanned once, against a catalog it is not in."""

    def __init__(self, paths: list[str], workdir: Path, jobs: int) -> None:
        self.home: dict[str, str] = {}  # query path → catalog folder to scan it against
        halves = (paths[0::2], paths[1::2])
        for i, half in enumerate(halves):
            folder = str(workdir / f"scan-catalog-{i}")
            with imguard.Catalog.open(folder) as catalog:
                catalog.add(half, jobs=jobs)
            for p in halves[1 - i]:
                self.home[p] = folder
        self.stats: dict[str, int] = {}

    def __call__(self, paths: list[str], jobs: int) -> None:
        stats = {"queries": 0, "matched_queries": 0, "fast_path": 0}
        for folder in sorted(set(self.home.values())):
            queries = [p for p in paths if self.home[p] == folder]
            with imguard.Catalog.open(folder, create=False) as catalog:
                run = catalog.scan(queries, jobs=jobs)
                for _ in run:
                    pass
            for key in stats:
                stats[key] += run.stats[key]
        self.stats = stats


# The matcher each query file of a scan-floor run is searched with (set before the files are
# mapped: a forked worker inherits it).
_FLOOR_MATCHERS: dict[str, scan.Matcher] = {}


def scan_floor_one(path: str) -> None:
    """A scan's work on one file that no verification can save: decode, the view's and regions'
    hashes and their search, ORB of both orientations and their one feature search. What is
    left of `Catalog.scan` after this is the verification of candidates."""
    matcher = _FLOOR_MATCHERS[path]
    data, _ = load.read_file(path, matcher.limits.file_bytes)
    q = scan._query(sources.Record(path), data, (None, None), matcher.limits.decode_bytes)
    matcher._exact([q])
    matcher._hash_candidates([q])
    q.view.extract_features()
    matcher.index.features.search(np.concatenate([q.view.points[1], q.view.mirror_points[1]]), scan.VOTE_K)


class ScanFloor:
    """`scan_floor_one` over the files, each against the catalog ScanBench scans it against."""

    def __init__(self, bench: ScanBench) -> None:
        self.bench = bench

    def __call__(self, paths: list[str], jobs: int) -> None:
        for folder in sorted(set(self.bench.home.values())):
            with imguard.Catalog.open(folder, create=False) as catalog:
                matcher = catalog.matcher()
                _FLOOR_MATCHERS.update({p: matcher for p in paths if self.bench.home[p] == folder})
        try:
            map_files(scan_floor_one, paths, jobs)
        finally:
            _FLOOR_MATCHERS.clear()


@dataclass
class Method:
    key: str  # how the report and the targets refer to it
    name: str
    run: Callable[[list[str], int], None] | None  # None: not available, `note` says why
    note: str = ""
    png: bool = False  # also measured on PNGs


def per_file(fn: Callable[[str], object]) -> Callable[[list[str], int], None]:
    return functools.partial(map_files, fn)


def methods(scan_bench: ScanBench) -> list[Method]:
    if importlib.util.find_spec("imagededup"):  # not imported here: it pulls torch (the warm-up does)
        dedup = Method("dedup", "imagededup `PHash.encode_images`", imagededup_run)
    else:
        dedup = Method("dedup", "imagededup `PHash.encode_images`", None, "not installed")
    return [
        Method("plain", "plain loop `imagehash.phash(Image.open(p))`", per_file(plain_phash), "baseline", png=True),
        dedup,
        Method("full", "Pillow full decode to RGB", per_file(decode_full), "decode only, full size", png=True),
        Method("floor", "JPEG decode at 1/8 (simplejpeg)", per_file(decode_draft8), "decode floor for hashes"),
        Method("floor_pillow", "JPEG decode at 1/8 (Pillow draft)", per_file(decode_draft8_pillow),
               "the same through Pillow"),
        Method("orb", f"JPEG draft to {features.FEATURE_SIDE} px + ORB", per_file(draft_orb),
               "floor with local features"),
        Method("orb_mirror", f"JPEG draft to {features.FEATURE_SIDE} px + ORB + mirror descriptors",
               per_file(draft_orb_mirror), "floor of a scan (both orientations)"),
        Method("hashes", "imguard hashes: `fingerprint_file(with_features=False)`", per_file(imguard_hashes),
               f"decodes for a {fingerprint.HASH_SIDE} px view (a JPEG at 1/8)", png=True),
        Method("fingerprint", "imguard fingerprints: `fingerprint_file` (hashes + ORB)", per_file(imguard_fingerprint),
               "what index must do per file: its floor"),
        Method("index", "imguard index: `Catalog.add` (hashes + ORB + thumbnail + store + index)",
               imguard_index_run, "fresh catalog, end to end"),
        Method("plain_script", "plain loop as a script (its own process)", plain_script_run,
               "baseline, start-up included"),
        Method("index_cli", "imguard index: the `imguard index` command", imguard_index_cli_run,
               "fresh catalog, start-up included"),
        Method("scan_floor", "imguard scan without verifying: decode, hashes, ORB of both orientations, "
               "their searches", ScanFloor(scan_bench), "what no verification can save: the ceiling of a scan"),
        Method("scan", "imguard scan: `Catalog.scan`, catalog = the other half", scan_bench,
               "end to end, iterator consumed"),
    ]


PROGRESSIVE_ROWS = ("plain", "full", "floor", "fingerprint", "index")
ENCODINGS = ("baseline", "progressive")


def reencode(paths: list[str], folder: Path) -> dict[str, dict[str, str]]:
    """Each photo re-encoded by Pillow (quality 90, EXIF kept), baseline and progressive: the same
    pixels both ways. Encoding → original path → its copy."""
    out: dict[str, dict[str, str]] = {kind: {} for kind in ENCODINGS}
    for number, path in enumerate(paths):
        with Image.open(path) as image:
            exif = image.info.get("exif", b"")
            rgb = image.convert("RGB")
        for kind in ENCODINGS:
            target = folder / kind / f"{number:04d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            rgb.save(target, quality=90, progressive=kind == "progressive", exif=exif)
            out[kind][path] = str(target)
    return out


def encoded_methods(rows: list[Method], copies: dict[str, dict[str, str]]) -> list[Method]:
    """PROGRESSIVE_ROWS run on each encoding's copies (key "row/encoding"), so that one
    `throughput` call times both encodings in the same rounds."""
    out = []
    for m in rows:
        if m.key in PROGRESSIVE_ROWS and m.run is not None:
            for kind in ENCODINGS:
                run = functools.partial(lambda paths, jobs, run, mapping: run([mapping[p] for p in paths], jobs),
                                        run=m.run, mapping=copies[kind])
                out.append(Method(f"{m.key}/{kind}", m.name, run, m.note))
    return out


def progressive_section(rows: list[Method], rates: dict) -> str:
    lines = []
    for m in rows:
        if m.key not in PROGRESSIVE_ROWS or f"{m.key}/baseline" not in rates:
            continue
        line = [m.name]
        for kind in ENCODINGS:
            r = rates[f"{m.key}/{kind}"].get(1)
            line += [fmt(r), fmt(ratio(r, rates[f"plain/{kind}"].get(1)), 2)]
        line.append(fmt(ratio(rates[f"{m.key}/progressive"].get(1), rates[f"{m.key}/baseline"].get(1)), 2))
        lines.append(line)
    return table(["method", "baseline: images/s", "× plain loop", "progressive: images/s", "× plain loop",
                  "progressive / baseline"], lines)


@contextmanager
def cores(jobs: int) -> Iterator[None]:
    """One job runs pinned to one CPU with FAISS at one thread; more jobs get every CPU."""
    cpus = os.sched_getaffinity(0)
    threads = faiss.omp_get_max_threads()
    if jobs == 1:
        os.sched_setaffinity(0, {min(cpus)})
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)
        faiss.omp_set_num_threads(threads)


def rate(method: Method, paths: list[str], jobs: int) -> float:
    """Images per second of one timed run, after a warm-up run on a few files (imports, ORB and
    pool set-up, first-call caches)."""
    with cores(jobs):
        method.run(paths[:WARM_FILES], jobs)
        start = time.perf_counter()
        method.run(paths, jobs)
        return len(paths) / (time.perf_counter() - start)


def throughput(rows: list[Method], paths: list[str], job_counts: list[int], repeat: int,
               log: Callable[[str], None]) -> dict[str, dict[int, list[float]]]:
    """Images/s of every round, per method key and job count (an empty dict for a method that is
    not available): `repeat` rounds, each timing every method once, so that a burst of load on
    this shared machine slows one round of every method rather than every run of one."""
    rounds: dict[str, dict[int, list[float]]] = {m.key: {} for m in rows}
    for round_ in range(1, repeat + 1):
        for method in rows:
            if method.run is None:
                continue
            for jobs in job_counts:
                value = rate(method, paths, jobs)
                rounds[method.key].setdefault(jobs, []).append(value)
                log(f"  round {round_}: {method.name[:60]:60s} jobs={jobs}: {value:7.1f} images/s")
    return rounds


def best(rounds: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    """The best round of each method and job count: the figure the tables and targets use."""
    return {key: {jobs: max(values) for jobs, values in per_jobs.items()} for key, per_jobs in rounds.items()}


def spread_note(rows: list[Method], rounds: dict[str, dict[int, list[float]]]) -> str:
    """The slowest and the fastest round of each method, one job: how far one figure can move."""
    parts = [f"{m.key} {min(rounds[m.key][1]):.1f}–{max(rounds[m.key][1]):.1f}" for m in rows if rounds[m.key].get(1)]
    return "Slowest–fastest round, 1 job, images/s: " + ", ".join(parts) + "."


# ================================================================================================
# Real codes for the index experiments


def real_codes(path: str) -> tuple[bytes, np.ndarray, np.ndarray] | None:
    """pHash (plain + mirror, 16 bytes) and ORB descriptors (plain + mirrored view) of one photo,
    computed exactly as imguard computes them."""
    try:
        decoded = load.load(path, features.FEATURE_SIDE)
    except ImageError:
        return None
    grey = fingerprint.canonical_view(decoded).grey
    hashes = hashing.global_hashes(grey)
    (_, plain), (_, mirror) = features.features_and_mirror(grey)
    return hashes["phash"] + hashes["phash_mirror"], plain, mirror


def save_real_codes(paths: list[str], target: Path, jobs: int) -> dict[str, int]:
    """Compute the real codes of every photo and store them for the index subprocesses."""
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        found = [r for r in pool.map(real_codes, paths, chunksize=4) if r is not None and len(r[1])]
    hashes = np.frombuffer(b"".join(r[0] for r in found), np.uint8).reshape(-1, 8)
    np.savez(target, hashes=hashes,
             descs=np.concatenate([r[1] for r in found]), counts=np.array([len(r[1]) for r in found]),
             mirror=np.concatenate([r[2] for r in found]), mirror_counts=np.array([len(r[2]) for r in found]))
    return {"photos": len(found), "hashes": len(hashes), "mean_descriptors": int(np.mean([len(r[1]) for r in found]))}


def split(rows: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(counts)[:-1])


def flip_bits(rng: np.random.Generator, codes: np.ndarray, p: float, chunk: int = 1 << 16) -> np.ndarray:
    """Flip every bit of `codes` (in place) with probability p (to 1/256), chunk by chunk so that
    the random bytes of a 70M-row catalog never sit in memory at once."""
    threshold = round(p * 256)
    for start in range(0, len(codes), chunk):
        block = codes[start:start + chunk]
        block ^= np.packbits(rng.integers(0, 256, (len(block), block.shape[1] * 8), dtype=np.uint8) < threshold,
                             axis=1)
    return codes


# ================================================================================================
# Index experiments (each in its own subprocess)


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: a child's ru_maxrss starts at its
    parent's peak (Linux carries it over the fork and exec), so the parent's imports would count."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GB
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / GB


def rss_gb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GB


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def is_ivf(part: index.BinaryIndex) -> bool:
    return isinstance(part.index, faiss.IndexBinaryIVF)


def kind_of(part: index.BinaryIndex) -> str:
    if is_ivf(part):
        return f"IVF nlist={part.index.nlist} nprobe={part.index.nprobe}"
    return type(part.index).__name__.replace("IndexBinary", "")


def recall_within(exact: np.ndarray, approx: np.ndarray, radius: int) -> float:
    """Share of the exact k nearest neighbours within `radius` that the approximate search also
    returned. Counted by distance, not by row: equal distances make row ids ambiguous. (Both
    report true distances, so per query the approximate count never exceeds the exact one.)"""
    wanted = int((exact <= radius).sum())
    return float((approx <= radius).sum()) / wanted if wanted else 1.0


def numpy_knn(catalog: np.ndarray, queries: np.ndarray, k: int, batch: int = 8) -> np.ndarray:
    """Exact k-NN Hamming distances by XOR + popcount, `batch` queries at a time (memory bounded)."""
    db = catalog.view(np.uint64).ravel()
    out = []
    for start in range(0, len(queries), batch):
        q = queries[start:start + batch].view(np.uint64)
        d = np.bitwise_count(db[None, :] ^ q)
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        out.append(np.sort(nearest, axis=1))
    return np.concatenate(out).astype(np.int32)


def search_seconds(part: index.BinaryIndex, queries: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, float]:
    faiss.omp_set_num_threads(threads)
    part.search(queries[:16], k)  # warm-up
    (distances, _), seconds = timed(lambda: part.search(queries, k))
    return distances, seconds


def hash_catalog(rng: np.random.Generator, hashes: np.ndarray, size: int) -> np.ndarray:
    """`size` catalog pHashes: the real ones in turn, every bit flipped with p = 1/4."""
    return flip_bits(rng, hashes[np.arange(size) % len(hashes)].copy(), 1 / 4)


def dedup_experiment(real: dict, size: int) -> dict:
    """Every pair within DEDUP_RADIUS bits among `size` catalog pHashes (the hash experiment's
    first rows), as imagededup's `find_duplicates` finds them (all pairs, its default Cython brute
    force, one worker per CPU) and as imguard's hash index finds them (FAISS range search, one
    thread per CPU). The pair counts must agree: both are exact."""
    try:
        from imagededup.methods import PHash
    except ImportError:
        return {"skipped": "imagededup not installed (it pulls torch: `pip install -e \".[bench-dedup]\"`)"}
    codes = hash_catalog(np.random.default_rng(1), real["hashes"], size)
    threads = os.cpu_count() or 1
    encodings = {str(i): code.tobytes().hex() for i, code in enumerate(codes)}
    with warnings.catch_warnings():  # it warns that encoding workers are unused: the codes are given
        warnings.simplefilter("ignore")
        found, dedup_s = timed(lambda: PHash(verbose=False).find_duplicates(
            encoding_map=encodings, max_distance_threshold=DEDUP_RADIUS, num_dist_workers=threads))
    dedup_pairs = sum(len(v) for v in found.values()) // 2  # each pair is listed under both images
    part = index.build_binary(np.arange(size), codes, exact_limit=index.HASH_EXACT_LIMIT, nprobe=index.HASH_NPROBE)
    assert not is_ivf(part), f"{size:,} codes: above HASH_EXACT_LIMIT the index is approximate, the counts may differ"
    faiss.omp_set_num_threads(threads)
    # range_search on binary codes is strict (<): r + 1 gives d <= r. Each image finds itself too.
    (lims, _, _), ours_s = timed(lambda: part.index.range_search(codes, DEDUP_RADIUS + 1))
    ours_pairs = (int(lims[-1]) - size) // 2
    assert ours_pairs == dedup_pairs, f"imagededup found {dedup_pairs} pairs, imguard's index {ours_pairs}"
    return {"size": size, "threads": threads, "pairs": ours_pairs, "dedup_s": dedup_s, "imguard_s": ours_s,
            "kind": kind_of(part)}


def hash_experiment(real: dict, size: int, n_queries: int, numpy_queries: int) -> dict:
    """1M (or `size`) catalog pHashes against 10k queries: imguard's index, the other FAISS kind,
    and the NumPy brute force. Catalog rows: real pHashes with every bit flipped with p = 1/4
    (16 bits on average); queries: real pHashes with p = 1/16 (copies, 4 bits)."""
    rng = np.random.default_rng(1)
    hashes = real["hashes"]
    catalog = hash_catalog(rng, hashes, size)
    queries = flip_bits(rng, hashes[rng.integers(0, len(hashes), n_queries)].copy(), 1 / 16)
    owners = np.arange(size)
    threads = os.cpu_count() or 1
    out: dict = {"size": size, "queries": n_queries, "threads": threads, "rss_before_gb": rss_gb()}
    built = {}
    ours, seconds = timed(lambda: index.build_binary(owners, catalog, exact_limit=index.HASH_EXACT_LIMIT,
                                                     nprobe=index.HASH_NPROBE))
    out["peak_rss_gb"] = peak_rss_gb()  # now, before the comparison index adds its own
    out["imguard"] = "ivf" if is_ivf(ours) else "flat"
    built[out["imguard"]] = ours, seconds
    other = "flat" if is_ivf(ours) else "ivf"
    built[other] = timed(lambda: index.build_binary(owners, catalog, exact_limit=size if other == "flat" else 0,
                                                    nprobe=index.HASH_NPROBE))
    rows = {}
    for name, (part, build_s) in built.items():
        _, all_s = search_seconds(part, queries, HASH_K, threads)
        distances, one_s = search_seconds(part, queries, HASH_K, 1)
        rows[name] = {"kind": kind_of(part), "build_s": build_s, "all_threads_s": all_s, "one_thread_s": one_s,
                      "distances": distances}
    exact = rows["flat"].pop("distances")
    rows["ivf"]["recall"] = recall_within(exact, rows["ivf"].pop("distances"), HASH_RADIUS)
    rows["flat"]["recall"] = 1.0
    subset = queries[:numpy_queries]
    brute, seconds = timed(lambda: numpy_knn(catalog, subset, HASH_K))
    assert np.array_equal(brute, exact[:numpy_queries]), "NumPy brute force disagrees with FAISS flat"
    rows["numpy"] = {"kind": f"XOR + bitwise_count, {numpy_queries} queries", "build_s": 0.0,
                     "one_thread_s": seconds * n_queries / len(subset), "extrapolated": len(subset) < n_queries}
    out["rows"] = rows
    return out


class SyntheticFeatures:
    """A catalog of `n_images` ORB descriptor sets, made a batch of images at a time, the same at
    every pass (as `Store.iter_descriptor_batches` reads the store): the real photos' sets in
    turn, every bit flipped with p = 0.15 (38 of 256 bits: the same keypoints seen again after an
    edit)."""

    BATCH = 1024  # images, as the store reads them

    def __init__(self, real: dict, n_images: int) -> None:
        self.sets = split(real["descs"], real["counts"])
        self.n_images = n_images
        self.total = sum(len(self.sets[i % len(self.sets)]) for i in range(n_images))

    def __call__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for number, first in enumerate(range(0, self.n_images, self.BATCH)):
            images = range(first, min(first + self.BATCH, self.n_images))
            codes = np.concatenate([self.sets[i % len(self.sets)] for i in images])
            owners = np.repeat(np.array(images, np.int64), [len(self.sets[i % len(self.sets)]) for i in images])
            yield owners, flip_bits(np.random.default_rng((2, number)), codes, 0.15)


def feature_queries(real: dict, n: int) -> list[np.ndarray]:
    """Per query image, what scan.py searches: its descriptors and its mirror view's."""
    plain = split(real["descs"], real["counts"])
    mirror = split(real["mirror"], real["mirror_counts"])
    picks = np.linspace(0, len(plain) - 1, min(n, len(plain))).round().astype(int)
    return [np.concatenate([plain[i], mirror[i]]) for i in picks]


def per_query_ms(part: index.BinaryIndex, queries: list[np.ndarray], rounds: int = 1) -> tuple[float, list[np.ndarray]]:
    """Search as scan.py does (a chunk of engine.CHUNK query images per FAISS call), one thread;
    the best of `rounds` passes over the queries."""
    faiss.omp_set_num_threads(1)
    part.search(queries[0], scan.VOTE_K)  # warm-up
    best = math.inf
    for _ in range(rounds):
        distances = []
        start = time.perf_counter()
        for first in range(0, len(queries), engine.CHUNK):
            chunk = queries[first:first + engine.CHUNK]
            d, _ = part.search(np.concatenate(chunk), scan.VOTE_K)
            distances.extend(split(d, [len(q) for q in chunk]))
        best = min(best, time.perf_counter() - start)
    return best * 1000 / len(queries), distances


def feature_experiment(real: dict, n_images: int, n_queries: int, flat_queries: int, flat_max_images: int) -> dict:
    catalog = SyntheticFeatures(real, n_images)
    out: dict = {"codes": catalog.total, "rss_before_gb": rss_gb()}
    # Making the synthetic batches (random bit flips) costs time a store read does not: one
    # pass is timed alone and taken off each pass a build makes (3 for IVF, 1 for flat).
    _, synthesis_s = timed(lambda: sum(len(codes) for _, codes in catalog()))

    def build(exact_limit: int) -> tuple[index.BinaryIndex, float]:
        part, seconds = timed(lambda: index.build_streamed(256, catalog.total, catalog, exact_limit=exact_limit,
                                                           nprobe=index.FEATURE_NPROBE))
        return part, max(0.0, seconds - (3 if is_ivf(part) else 1) * synthesis_s)

    ours, out["build_s"] = build(index.FEATURE_EXACT_LIMIT)
    out["peak_rss_gb"] = peak_rss_gb()
    out["kind"] = kind_of(ours)
    queries = feature_queries(real, n_queries)
    out["query_images"] = len(queries)
    out["ms_per_query"], found = per_query_ms(ours, queries, rounds=FEATURE_SEARCH_ROUNDS)
    if is_ivf(ours) and n_images <= flat_max_images:
        del ours
        flat, out["flat_build_s"] = build(catalog.total)
        few = queries[:flat_queries]
        out["flat_ms_per_query"], exact = per_query_ms(flat, few)
        out["flat_query_images"] = len(few)
        out["recall"] = recall_within(np.concatenate(exact), np.concatenate(found[:len(few)]), scan.VOTE_DISTANCE)
    return out


def feature_bytes_lower_bound(n_codes: int, ivf: bool) -> int:
    """What building the feature index must hold at once: its codes (32 B) and row ids (8 B),
    and for IVF each code's list while the lists are filled (4 B)."""
    return n_codes * (32 + 8 + (4 if ivf else 0))


# ================================================================================================
# A scan's memory against a large catalog (issue 23, point 4)


def _fingerprint_with_thumbnail(path: str) -> fingerprint.Fingerprint | None:
    try:
        return fingerprint.fingerprint_file(path, with_thumbnail=True)
    except ImageError:
        return None


def save_real_prints(paths: list[str], target: Path, jobs: int) -> int:
    """The photos' fingerprints as `imguard index` stores them (thumbnails included), for the
    subprocess that makes the large synthetic catalog."""
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        prints = [fp for fp in pool.map(_fingerprint_with_thumbnail, paths, chunksize=4) if fp is not None]
    target.write_bytes(pickle.dumps(prints))
    return len(prints)


STORE_BATCH = 1000  # synthetic catalog images written per transaction (put_many)


def make_large_catalog(folder: str, prints: list[fingerprint.Fingerprint], n_images: int) -> dict:
    """A catalog of `n_images` made through imguard's own store and index code: image i is
    photo i mod n with its ORB descriptors' bits flipped with p = 0.15 (as the feature catalogs
    above) and its hashes' with p = 1/4 (as the hash catalog), a made-up path and SHA-256, and
    the photo's keypoints and thumbnail. Written by `Store.put_many` a batch at a time, then
    `CatalogIndex.for_store` builds and saves the FAISS indexes, as `imguard index` does."""
    rng = np.random.default_rng(3)
    out: dict = {}
    with imguard.Catalog.open(folder) as catalog:
        start = time.perf_counter()
        for first in range(0, n_images, STORE_BATCH):
            rows = []
            for i in range(first, min(first + STORE_BATCH, n_images)):
                fp = prints[i % len(prints)]
                hashes = {k: flip_bits(rng, np.frombuffer(v, np.uint8).reshape(1, -1).copy(), 1 / 4).tobytes()
                          for k, v in fp.hashes.items()}
                made = dataclasses.replace(fp, sha256=f"{i:064x}", hashes=hashes,
                                           descriptors=flip_bits(rng, fp.descriptors.copy(), 0.15))
                rows.append((f"/synthetic/{i:06d}.jpg", f"/synthetic/{i:06d}.jpg", 0.0, made, None))
            catalog.store.put_many(rows)
        out["store_s"] = time.perf_counter() - start
        (_, out["index_s"]) = timed(lambda: index.CatalogIndex.for_store(catalog.store, folder, rebuild=True))
        stats = catalog.store.stats()
    out.update(images=stats["images"], descriptors=stats["descriptors"], store_gb=stats["store_bytes"] / GB,
               index_gb=sum(os.path.getsize(os.path.join(folder, f"{n}.faiss")) for n in index.PARTS) / GB,
               build_peak_rss_gb=peak_rss_gb())
    return out


def vm_hwm_gb(pid: int) -> float | None:
    """Peak resident memory of process `pid` (VmHWM), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) * 1024 / GB for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def pss_gb(pid: int) -> float:
    """What process `pid` holds with shared pages divided among their sharers (Pss)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            return next(int(line.split()[1]) * 1024 / GB for line in handle if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0.0


class MemoryWatch:
    """Samples this process and its descendants every `interval` s while a scan runs: each one's
    last VmHWM (a worker's is read before it exits, its last sample) and the peak of their summed
    Pss. VmHWM counts shared pages (a mapped index, the page cache's) in every process that
    touched them; Pss divides them among their sharers: the sum of VmHWM is the issue's measure
    and an upper bound, the peak summed Pss is what the machine held."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.hwm: dict[int, float] = {}
        self.peak_pss = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = [self.me.pid] + [c.pid for c in self.me.children(recursive=True)]
        for pid in pids:
            value = vm_hwm_gb(pid)
            if value is not None:
                self.hwm[pid] = value
        self.peak_pss = max(self.peak_pss, sum(pss_gb(pid) for pid in pids))

    def _run(self) -> None:
        while not self._stop:
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self._sample()

    def report(self) -> dict:
        return {"processes": len(self.hwm), "sum_vm_hwm_gb": sum(self.hwm.values()),
                "vm_hwm_gb": sorted(self.hwm.values(), reverse=True), "peak_pss_gb": self.peak_pss}


def scan_memory_experiment(folder: str, queries: list[str], jobs: int, engine_name: str) -> dict:
    """A scan of `queries` against the catalog in `folder`, `jobs` worker processes (a local
    pool, or a Dask LocalCluster of that many one-thread workers), watched by MemoryWatch."""
    out: dict = {"jobs": jobs, "engine": engine_name, "queries": len(queries), "rss_before_gb": rss_gb()}
    cluster = None
    if engine_name == "dask":
        import distributed

        from imguard import distributed as dask_engine

        cluster = distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None, worker_dashboard_address=None)
    try:
        with MemoryWatch() as watch:
            start = time.perf_counter()
            with imguard.Catalog.open(folder, readonly=True) as catalog:
                if cluster is not None:
                    with distributed.Client(cluster, set_as_default=False) as client:
                        matcher = catalog.matcher()
                        shipped = dask_engine._for_workers(client, matcher)
                        out["shipped_bytes"] = len(pickle.dumps(shipped)) if shipped is matcher else None
                        run = catalog.scan(queries, engine="dask", scheduler=client)
                        found = list(run)
                else:
                    run = catalog.scan(queries, jobs=jobs)
                    found = list(run)
            out["seconds"] = time.perf_counter() - start
    finally:
        if cluster is not None:
            cluster.close()
    out.update(watch.report(), matches=len(found), errors=len(run.errors))
    return out


def run_child(args: list[str], timeout: float) -> dict:
    """Run one index experiment in a fresh interpreter; its result comes back as JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, __file__, "--child-result", result.name, *args]
        try:
            subprocess.run(command, check=True, timeout=timeout, stdout=sys.stderr)
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish within {timeout:.0f} s"}
        except subprocess.CalledProcessError as exc:
            code = exc.returncode
            return {"error": f"killed by signal {-code}" if code < 0 else f"failed (exit {code})"}
        return json.loads(Path(result.name).read_text())


def child_main(args: argparse.Namespace) -> None:
    if args.child == "make-catalog":
        out = make_large_catalog(args.folder, pickle.loads(Path(args.prints).read_bytes()), args.size)
        Path(args.child_result).write_text(json.dumps(out))
        return
    if args.child == "scan-memory":
        queries = Path(args.query_list).read_text().splitlines()
        out = scan_memory_experiment(args.folder, queries, args.size, args.engine)
        Path(args.child_result).write_text(json.dumps(out))
        return
    real = dict(np.load(args.codes))
    if args.child == "hash":
        out = hash_experiment(real, args.size, args.queries, args.numpy_queries)
    elif args.child == "dedup":
        out = dedup_experiment(real, args.size)
    else:
        out = feature_experiment(real, args.size, args.queries, args.flat_queries, args.flat_max_images)
    Path(args.child_result).write_text(json.dumps(out))


# ================================================================================================
# Report


def table(headers: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


@dataclass
class Target:
    text: str
    value: str
    ok: bool | None  # None: not measured

    def row(self) -> list[str]:
        return [self.text, self.value, {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[self.ok]]


def throughput_section(rows: list[Method], rates: dict, job_counts: list[int], *, with_floor: bool = True) -> str:
    """One row per method: images/s per job count, ratios to the plain loop and to the 1/8 decode
    floor (same job count), and the speed-up of all jobs over one."""
    headers = ["method"]
    for j in job_counts:
        headers += [f"{j} job{'s' * (j > 1)}: images/s", "× plain loop"] + (["× 1/8 floor"] if with_floor else [])
    if len(job_counts) > 1:
        headers.append(f"{job_counts[-1]} jobs / 1 job")
    headers.append("note")
    lines = []
    for m in rows:
        r = rates[m.key]
        line = [m.name]
        for j in job_counts:
            line += [fmt(r.get(j)) if m.run else m.note, fmt(ratio(r.get(j), rates["plain"].get(j)), 2)]
            if with_floor:
                line.append(fmt(ratio(r.get(j), rates["floor"].get(j)), 2))
        if len(job_counts) > 1:
            line.append(fmt(ratio(r.get(job_counts[-1]), r.get(1)), 2))
        line.append(m.note)
        lines.append(line)
    return table(headers, lines, "l" + "r" * (len(headers) - 2) + "l")


def hash_section(h: dict) -> str:
    if "error" in h:
        return f"Hash search: {h['error']}."
    labels = {"flat": "FAISS `IndexBinaryFlat`", "ivf": "FAISS `IndexBinaryIVF`", "numpy": "NumPy brute force"}
    lines = []
    for name in ("flat", "ivf", "numpy"):
        r = h["rows"][name]
        label = labels[name] + (" (imguard's index)" if name == h["imguard"] else "")
        one = fmt(r["one_thread_s"], 2) + (" (extrapolated)" if r.get("extrapolated") else "")
        recall = "exact" if name != "ivf" else fmt(r["recall"], 3)
        lines.append([label, r["kind"], fmt(r["build_s"], 2), fmt(r.get("all_threads_s"), 2), one, recall])
    return table(["search", "index", "build s", f"{h['threads']} threads, s", "1 thread, s",
                  f"recall at ≤ {HASH_RADIUS} bits"], lines, "llrrrr")


def dedup_section(d: dict) -> str:
    if "pairs" not in d:
        return f"Not measured: {d.get('error') or d['skipped']}."
    lines = [["imagededup `PHash.find_duplicates` (Cython brute force, every pair)", fmt(d["dedup_s"], 2)],
             [f"imguard's hash index ({d['kind']}, FAISS range search)", fmt(d["imguard_s"], 2)]]
    return (table(["search", f"{d['threads']} workers / threads, s"], lines, "lr") + "\n\n"
            f"The first {d['size']:,} codes of the hash-search catalog above. Both found the same "
            f"{d['pairs']:,} pairs (checked in the run): imguard is {d['dedup_s'] / d['imguard_s']:,.0f}× faster.")


def feature_section(results: list[dict]) -> str:
    lines = []
    for f in results:
        if "codes" not in f:
            lines.append([fmt(f["images"], 0), "–", "–", "–", "–", "–", "–", f.get("error") or f["skipped"]])
            continue
        flat = "–"
        if "flat_ms_per_query" in f:
            flat = (f"{fmt(f['flat_ms_per_query'], 0)} ({f['flat_query_images']} queries; "
                    f"build {fmt(f['flat_build_s'], 1)} s)")
        lines.append([fmt(f["images"], 0), fmt(f["codes"], 0), f["kind"], fmt(f["build_s"], 1),
                      fmt(f["ms_per_query"], 2), flat, fmt(f.get("recall"), 3),
                      f"{fmt(f['peak_rss_gb'], 2)} (before build {fmt(f['rss_before_gb'], 2)})"])
    return table(["catalog images", "descriptors", "imguard index", "build s", "ms / query image, 1 thread",
                  "exact flat, ms / query", f"recall at ≤ {scan.VOTE_DISTANCE} bits", "peak RSS GB"], lines,
                 "rrlrrlrl")


def scan_note(stats: dict, n_jpegs: int) -> str:
    return (f"Scan: {stats.get('queries', 0)} queries, {stats.get('matched_queries', 0)} matched, "
            f"{stats.get('fast_path', 0)} settled by the hash fast path (each file scanned against a catalog "
            f"of the other half of every JPEG, {n_jpegs // 2} images).")


def at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def per_round(rounds: dict[str, dict[int, list[float]]], value: Callable[[Callable[[str, int], float]], float]) -> str:
    """The spread of a ratio over the rounds: `value(rate)` computed with each round's rates
    (rate(key, jobs)), every method having run once a round; "" when a rate is missing."""
    try:
        count = min(len(v) for per_jobs in rounds.values() for v in per_jobs.values())
        values = [value(lambda key, jobs, r=r: rounds[key][jobs][r]) for r in range(count)]
    except (KeyError, ValueError, ZeroDivisionError):
        return ""
    return f" (rounds {min(values):.2f}–{max(values):.2f})"


def targets(rows: list[Method], rates: dict, rounds: dict, jobs: int, h: dict, feats: list[dict],
            memory: dict) -> list[Target]:
    """The speed issues' targets, each with its measured value: the ratio of the best rounds, and
    the spread of the same ratio round by round."""
    short = {m.key: m.name.split(":")[0] for m in rows}
    base, floor = rates["plain"].get(1), rates["floor"].get(1)
    out = []

    def times(key: str, over: str, bound: float, text: str, job: int = 1, note: str = "") -> None:
        value = ratio(rates[key].get(job), rates[over].get(job))
        spread_ = per_round(rounds, lambda rate: rate(key, job) / rate(over, job))
        out.append(Target(text, f"{fmt(value, 2)}×{spread_}{note}", at_least(value, bound)))

    r = rates["hashes"].get(1)
    times("hashes", "plain", 3, f"{short['hashes']} ≥ 3× plain imagehash loop (1 job)")
    out.append(Target(f"{short['hashes']} within 1.2× of the 1/8 decode floor (1 job)",
                      f"floor is {fmt(ratio(floor, r), 2)}× faster", at_least(ratio(r, floor), 1 / 1.2)))
    def ceiling(over: str) -> str:  # what the scan would reach if verifying cost nothing
        return f" (without verifying: {fmt(ratio(rates['scan_floor'].get(1), rates[over].get(1)), 2)}×)"

    times("scan", "plain", 1.0, "imguard scan ≥ 1.0× plain loop (1 job; issue 23.1)", note=ceiling("plain"))
    times("scan", "fingerprint", 0.6, "imguard scan ≥ 0.6× `fingerprint_file` (1 job; issue 23.1)",
          note=ceiling("fingerprint"))
    times("index", "plain", 1.5, "imguard index (`Catalog.add`) ≥ 1.5× plain loop (1 job; issue 23.2)")
    times("index_cli", "plain_script", 1.5, "`imguard index` command ≥ 1.5× the plain loop's script, "
          "start-up included (1 job; issue 23.2)")
    if jobs > 1:
        for key in ("index", "index_cli", "scan"):
            over = "plain_script" if key == "index_cli" else "plain"
            value = ratio(ratio(rates[key].get(jobs), rates[key].get(1)), ratio(rates[over].get(jobs), rates[over].get(1)))
            spread_ = per_round(rounds, lambda rate, k=key, o=over: (rate(k, jobs) / rate(k, 1)) / (rate(o, jobs) / rate(o, 1)))
            out.append(Target(f"{short[key] if key != 'index_cli' else '`imguard index` command'}: {jobs} jobs' "
                              f"speed-up ≥ 0.9× the {'script' if key == 'index_cli' else 'plain loop'}'s (issue 23.3)",
                              f"{fmt(value, 2)}×{spread_}: {fmt(ratio(rates[key].get(jobs), rates[key].get(1)), 2)}× "
                              f"against {fmt(ratio(rates[over].get(jobs), rates[over].get(1)), 2)}×",
                              at_least(value, 0.9)))
    out.extend(memory_targets(memory))
    if "error" in h:
        out.append(Target("hash search 1M × 10k ≤ 10 s", h["error"], None))
        out.append(Target("peak memory, hash index of 1M images < 2 GB", h["error"], None))
    else:
        ours = h["rows"][h["imguard"]]
        out.append(Target(f"hash search {h['size']:,} × {h['queries']:,} ≤ 10 s ({h['threads']} threads)",
                          f"{fmt(ours['all_threads_s'], 2)} s (1 thread: {fmt(ours['one_thread_s'], 2)} s)",
                          ours["all_threads_s"] <= 10))
        out.append(Target(f"peak memory, hash index of {h['size']:,} images < 2 GB",
                          f"{fmt(h['peak_rss_gb'], 2)} GB", h["peak_rss_gb"] < 2))
    for f, limit in zip(feats[-2:], (10, 50)):
        label = f"local-feature search ≤ {limit} ms/query at {f['images']:,} images"
        if "ms_per_query" in f:
            out.append(Target(label, f"{fmt(f['ms_per_query'], 2)} ms", f["ms_per_query"] <= limit))
        else:
            out.append(Target(label, f.get("error") or f["skipped"], None))
    big = feats[-1]
    label = f"peak memory, local features of {big['images']:,} images < 4 GB"
    if "peak_rss_gb" in big:
        out.append(Target(label, f"{fmt(big['peak_rss_gb'], 2)} GB", big["peak_rss_gb"] < 4))
    else:  # not measured: the lower bound of what the build must hold may already decide
        why = big.get("error") or big["skipped"].split(":")[0]
        out.append(Target(label, f"{why}; lower bound {fmt(big['bound_gb'], 2)} GB",
                          False if big["bound_gb"] >= 4 else None))
    return out


SCAN_MEMORY_LIMIT_GB = 3  # issue 23.4: a 2-job scan against 100,000 catalog images, every process


def memory_targets(memory: dict) -> list[Target]:
    catalog = memory.get("catalog", {})
    n = catalog.get("images")
    out = []
    for scan_ in memory.get("scans", []) or [{"engine": "local"}]:
        engine_name = scan_.get("engine", "local")
        label = (f"peak memory, {scan_.get('jobs', 2)}-{'worker Dask' if engine_name == 'dask' else 'job'} scan "
                 f"against {n or 100_000:,} catalog images ≤ {SCAN_MEMORY_LIMIT_GB} GB (sum of VmHWM; issue 23.4)")
        if "sum_vm_hwm_gb" not in scan_:
            out.append(Target(label, scan_.get("error") or catalog.get("error") or "not run", None))
            continue
        shipped = ""
        if engine_name == "dask":
            shipped = (f"; catalog shipped once per worker by its files, {scan_['shipped_bytes']:,} bytes"
                       if scan_.get("shipped_bytes") else "; catalog shipped once per worker, carried whole")
        out.append(Target(label, f"{fmt(scan_['sum_vm_hwm_gb'], 2)} GB over {scan_['processes']} processes "
                                 f"(peak summed Pss {fmt(scan_['peak_pss_gb'], 2)} GB){shipped}",
                          scan_["sum_vm_hwm_gb"] <= SCAN_MEMORY_LIMIT_GB))
    return out


def memory_section(memory: dict) -> str:
    catalog = memory.get("catalog", {})
    if "images" not in catalog:
        return f"Not measured: {catalog.get('error', 'skipped')}."
    lines = []
    for scan_ in memory["scans"]:
        if "sum_vm_hwm_gb" not in scan_:
            lines.append([scan_.get("engine", "?"), "–", "–", "–", "–", "–", scan_.get("error", "")])
            continue
        lines.append([f"{scan_['engine']}, {scan_['jobs']} workers", fmt(scan_["queries"], 0), fmt(scan_["seconds"], 1),
                      fmt(scan_["sum_vm_hwm_gb"], 2), ", ".join(fmt(v, 2) for v in scan_["vm_hwm_gb"]),
                      fmt(scan_["peak_pss_gb"], 2),
                      f"{scan_['shipped_bytes']:,} B" if scan_.get("shipped_bytes") else "fork" if scan_["engine"] == "local" else "whole"])
    reused = " Made by an earlier run of this command (kept in `--large-catalog`), reused." if catalog.get("reused") else ""
    return (f"Catalog: {catalog['images']:,} images, {catalog['descriptors']:,} descriptors; store "
            f"{fmt(catalog['store_gb'], 2)} GB (written in {fmt(catalog['store_s'], 0)} s), index files "
            f"{fmt(catalog['index_gb'], 2)} GB (built in {fmt(catalog['index_s'], 0)} s; that process peaked at "
            f"{fmt(catalog['build_peak_rss_gb'], 2)} GB).{reused}\n\n"
            + table(["scan", "queries", "s", "sum of VmHWM, GB", "VmHWM per process, GB", "peak summed Pss, GB",
                     "catalog shipped"], lines, "lrrrlrl"))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return (f"{len(os.sched_getaffinity(0))} cores ({model}), {memory:.0f} GB RAM, Python {platform.python_version()}, "
            f"numpy {np.__version__}, faiss {faiss.__version__}, Pillow {Image.__version__}, "
            f"imagehash {imagehash.__version__}, imguard {imguard.__version__}")


# ================================================================================================
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a check in a few minutes")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per index experiment")
    # 5, not 3: the same method's rounds of one run differ by up to 30 % on this shared machine
    # (SPEED.md's slowest–fastest line), and a ratio of two bests needs each method to have had a
    # quiet round.
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per throughput figure (the best is kept)")
    parser.add_argument("--skip", type=lambda text: set(text.split(",")), default=set(),
                        help="comma-separated parts not to run: every-jpeg, png, index-experiments (the "
                        "report says they were not run)")
    parser.add_argument("--large-catalog", type=Path, help="folder of the large catalog whose scans' memory is measured: "
                        "made there if it holds none of the run's size, else reused (making 100,000 images takes "
                        "a quarter of an hour or more)")
    # Internal: one index experiment in a subprocess (see run_child).
    for name, kind in (("--child", str), ("--child-result", str), ("--codes", str), ("--size", int),
                       ("--queries", int), ("--numpy-queries", int), ("--flat-queries", int),
                       ("--flat-max-images", int), ("--folder", str), ("--engine", str),
                       ("--prints", str), ("--query-list", str)):
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def index_experiments(sizes: Sizes, codes: Path, timeout: float,
                      mean_descriptors: int) -> tuple[dict, dict, list[dict]]:
    common = ["--codes", str(codes)]
    log(f"hash search: {sizes.hash_codes:,} codes × {sizes.hash_queries:,} queries")
    h = run_child([*common, "--child", "hash", "--size", str(sizes.hash_codes), "--queries", str(sizes.hash_queries),
                   "--numpy-queries", str(sizes.numpy_queries)], timeout)
    log(f"all pairs within {DEDUP_RADIUS} bits among {sizes.dedup_codes:,} codes: imagededup and imguard")
    dedup = run_child([*common, "--child", "dedup", "--size", str(sizes.dedup_codes)], timeout)
    feats = []
    for n in sizes.feature_catalogs:
        n_codes = n * mean_descriptors
        need = feature_bytes_lower_bound(n_codes, n_codes > index.FEATURE_EXACT_LIMIT)
        available = _available_bytes()
        if available is not None and need + HEADROOM > available:  # the OOM killer might pick another job
            feats.append({"images": n, "bound_gb": need / GB, "skipped": f"not run: needs ≥ {need / GB:.1f} GB + {HEADROOM / GB:.0f} GB headroom, "
                                     f"{available / GB:.1f} GB available"})
            log(f"local features, {n:,} images: skipped ({feats[-1]['skipped']})")
            continue
        log(f"local features: {n:,} images (~{n_codes:,} descriptors)")
        result = run_child([*common, "--child", "features", "--size", str(n), "--queries", str(sizes.feature_queries),
                            "--flat-queries", str(sizes.flat_queries), "--flat-max-images",
                            str(sizes.flat_max_images)], timeout)
        feats.append({"images": n, "bound_gb": need / GB, **result})
    return h, dedup, feats


MADE = "made.json"  # what making a large catalog measured, kept in its folder for a later run


def memory_experiments(sizes: Sizes, workdir: Path, prints: Path, queries: list[str], jobs: int,
                       timeout: float, folder: Path | None) -> dict:
    """The large catalog made once (a subprocess) in `folder` (a temporary one if None), or taken
    from there if an earlier run made it at this size; then each scan of it in a fresh
    subprocess: a local pool of `jobs` workers, and a Dask cluster of `jobs` workers where Dask
    is installed."""
    folder = folder or workdir / "large-catalog"
    query_list = workdir / "scan-queries.txt"
    query_list.write_text("\n".join(queries))
    made = json.loads((folder / MADE).read_text()) if (folder / MADE).exists() else {}
    if folder.exists() and any(folder.iterdir()) and made.get("images") != sizes.scan_catalog:
        return {"catalog": {"error": f"{folder} holds something other than a catalog of {sizes.scan_catalog:,} "
                                     "images made by this command: give a new or empty folder"}, "scans": []}
    if made.get("images") != sizes.scan_catalog:
        log(f"scan memory: making a catalog of {sizes.scan_catalog:,} images in {folder}")
        made = run_child(["--child", "make-catalog", "--folder", str(folder), "--prints", str(prints),
                          "--size", str(sizes.scan_catalog)], timeout)
        if "error" not in made:
            (folder / MADE).write_text(json.dumps(made))
    else:
        made["reused"] = str(folder)
    out = {"catalog": made, "scans": []}
    if "error" in made:
        return out
    engines = ["local"] + (["dask"] if importlib.util.find_spec("distributed") else [])
    for name in engines:
        log(f"scan memory: {len(queries)} queries, {jobs} {name} workers")
        out["scans"].append(run_child(["--child", "scan-memory", "--folder", folder, "--query-list", str(query_list),
                                       "--size", str(jobs), "--engine", name], timeout))
    return out


def _available_bytes() -> int | None:
    """Memory that a child may take without pushing the machine into the OOM killer."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    sizes = QUICK if args.quick else FULL
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    job_counts = sorted({1, engine.default_jobs()})
    with tempfile.TemporaryDirectory(prefix="imguard-speed-") as tmp:
        workdir = Path(tmp)
        corpus = find_corpus(sizes, workdir)
        log(f"{len(corpus.jpegs)} JPEGs, {len(corpus.pngs)} PNGs from {corpus.source}")
        preload(corpus.jpegs + corpus.pngs)
        scan_bench = ScanBench(corpus.jpegs, workdir, job_counts[-1])
        rows = methods(scan_bench)
        full_size = corpus.full_size
        log(f"throughput, full-size JPEG ({len(full_size)} files):")
        rounds = throughput(rows, full_size, job_counts, args.repeat, log)
        rates = best(rounds)
        scan_stats = dict(scan_bench.stats)
        all_rates, all_scan_stats, png_rates = None, {}, {}
        if "every-jpeg" not in args.skip:
            log(f"throughput, every JPEG ({len(corpus.jpegs)} files):")
            all_rates = best(throughput(rows, corpus.jpegs, job_counts, args.repeat, log))
            all_scan_stats = dict(scan_bench.stats)
        png_rows = [m for m in rows if m.png]
        if corpus.pngs and "png" not in args.skip:
            log("throughput, PNG:")
            png_rates = best(throughput(png_rows, corpus.pngs, [1], args.repeat, log))
        log(f"throughput, the full-size JPEGs re-encoded baseline and progressive ({len(full_size)} files):")
        copies = reencode(full_size, workdir / "reencoded")
        preload([p for kind in ENCODINGS for p in copies[kind].values()])
        encoded_rates = best(throughput(encoded_methods(rows, copies), full_size, [1], args.repeat, log))
        log("hashes of reduced decodes against full decodes")
        agreement = hash_agreement(full_size)
        log("real pHashes and ORB descriptors of the photos")
        codes = workdir / "codes.npz"
        real = save_real_codes(corpus.jpegs + corpus.pngs, codes, job_counts[-1])
        load_mid = os.getloadavg()
        if "index-experiments" in args.skip:
            h, dedup = {"error": SKIPPED}, {"skipped": SKIPPED}
            feats = [{"images": n, "skipped": SKIPPED, "bound_gb": feature_bytes_lower_bound(
                n * real["mean_descriptors"], True) / GB} for n in sizes.feature_catalogs]
        else:
            h, dedup, feats = index_experiments(sizes, codes, args.timeout, real["mean_descriptors"])
        log("fingerprints of the photos, for the large catalog")
        prints = workdir / "prints.pickle"
        save_real_prints(corpus.jpegs, prints, job_counts[-1])
        memory = memory_experiments(sizes, workdir, prints, spread(full_size, sizes.scan_queries), job_counts[-1],
                                    args.timeout, args.large_catalog)
    load_end = os.getloadavg()

    command = " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])
    parts = [
        "# imguard speed benchmark",
        "",
        f"- Command: `{command}`{' (quick sizes: PASS/FAIL below are indicative only)' if args.quick else ''}",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Load average (1 min) at start / after throughput / at end: "
        f"{load_start[0]:.2f} / {load_mid[0]:.2f} / {load_end[0]:.2f}",
        f"- Files: {corpus.source}: {len(corpus.jpegs)} JPEGs, mean {mean_megapixels(corpus.jpegs):.2f} MP; "
        f"{len(corpus.pngs)} PNGs, mean {mean_megapixels(corpus.pngs):.2f} MP (own table: no scaled decode)",
        "",
        "## Targets",
        "",
        table(["target", "measured", "result"], [t.row() for t in targets(rows, rates, rounds, job_counts[-1], h, feats, memory)], "lll"),
        "",
        f"## Images per second, full-size JPEG ({len(full_size)} files, long side ≥ {FULL_SIZE_SIDE} px, mean "
        f"{mean_megapixels(full_size):.2f} MP; same files for every row; the targets above)",
        "",
        "One job: pinned to one CPU, FAISS at one thread. More jobs: imguard's process pool, or a fork "
        "`multiprocessing.Pool` for the per-file loops (pool start-up included). Each figure is the best of "
        f"{args.repeat} timed rounds (every method once a round), each run after a warm-up on {WARM_FILES} files; "
        "files are in the page cache.",
        "",
        throughput_section(rows, rates, job_counts),
        "",
        spread_note(rows, rounds),
        "",
        scan_note(scan_stats, len(corpus.jpegs)),
        "",
        f"## Images per second, every JPEG ({len(corpus.jpegs)} files, mean {mean_megapixels(corpus.jpegs):.2f} MP)",
        "",
        "The same rows on every JPEG, small ones included (for reference; the targets use the table above).",
        "",
        throughput_section(rows, all_rates, job_counts) if all_rates else f"{SKIPPED.capitalize()}.",
        "",
        scan_note(all_scan_stats, len(corpus.jpegs)) if all_rates else "",
        "",
    ]
    if corpus.pngs:
        parts += [f"## Images per second, PNG ({len(corpus.pngs)} files, 1 job)", "",
                  throughput_section(png_rows, png_rates, [1], with_floor=False) if png_rates
                  else f"{SKIPPED.capitalize()}.", ""]
    parts += [
        f"## Progressive against baseline JPEG ({len(full_size)} full-size JPEGs re-encoded, 1 job)",
        "",
        "The full-size JPEGs above re-encoded by Pillow at quality 90, baseline and progressive (the same pixels), "
        "timed in the same rounds. A progressive JPEG's scans must all be entropy-decoded whatever the scale it "
        "is decoded at (every scan refines every coefficient), so DCT scaling saves it little: the decode, not "
        "imguard's work, sets these rates.",
        "",
        progressive_section(rows, encoded_rates),
        "",
        f"## Scan memory against a {sizes.scan_catalog:,}-image catalog",
        "",
        f"A catalog made through `Store.put_many` and `CatalogIndex.for_store` from the fingerprints of the "
        f"{len(corpus.jpegs)} JPEGs: image i is photo i mod n, its ORB descriptors' bits flipped with p = 0.15, "
        "its hashes' with p = 1/4, a made-up path and SHA-256, the photo's keypoints and thumbnail. Each scan "
        f"runs {sizes.scan_queries} of the full-size JPEGs in a fresh process; every process of it (that one, the "
        "pool's or the cluster's workers, Dask's scheduler and nannies) is sampled every 50 ms: VmHWM, each "
        "one's peak resident memory, counts pages shared between processes (the mapped index, the page "
        "cache's store) in each process that touched them, so their sum is an upper bound; the peak of "
        "their summed Pss (shared pages divided among their sharers) is what the machine held.",
        "",
        memory_section(memory),
        "",
        f"## Reduced decode against full decode ({len(full_size)} full-size JPEGs)",
        "",
        "Hamming distance (bits of 64) of each hash to the same hash of the canonical view of a full-size decode.",
        "",
        table(["fingerprint", "hash", "mean", "p95", "p99", "max", "share ≤ 8 bits"], agreement, "llrrrrr"),
        "",
        f"## Hash search: {sizes.hash_codes:,} catalog codes × {sizes.hash_queries:,} queries, k = {HASH_K}",
        "",
        f"Codes derived from {real['hashes']} real pHashes (plain and mirrored) of {real['photos']} photos: "
        "catalog rows flip each bit with p = 1/4 (16 bits on average), queries with p = 1/16. "
        f"The forced IVF is `build_binary(..., exact_limit=0, nprobe=HASH_NPROBE = {index.HASH_NPROBE})`. "
        f"imguard builds Flat up to `HASH_EXACT_LIMIT` = {index.HASH_EXACT_LIMIT:,} codes.",
        "",
        hash_section(h),
        "",
        f"Peak RSS of the process that built imguard's hash index: {fmt(h.get('peak_rss_gb'), 2)} GB "
        f"(before the build: {fmt(h.get('rss_before_gb'), 2)} GB).",
        "",
        f"### Every pair within {DEDUP_RADIUS} bits among {sizes.dedup_codes:,} catalog codes (imagededup's `find_duplicates`)",
        "",
        dedup_section(dedup),
        "",
        "## Local-feature search (ORB, 256-bit descriptors), k = " + str(scan.VOTE_K),
        "",
        f"Catalogs synthesised from the {real['photos']} photos' real ORB descriptors (~{real['mean_descriptors']} per "
        "image, 512 px views): image i is photo i mod n with every bit flipped with p = 0.15. Queries: real "
        "photos, descriptors of the view and of its mirror (~1400 per image), searched in chunks of "
        f"{engine.CHUNK} images like scan.py, the best of {FEATURE_SEARCH_ROUNDS} passes. Index: `build_streamed(..., exact_limit=FEATURE_EXACT_LIMIT = "
        f"{index.FEATURE_EXACT_LIMIT:,}, nprobe=FEATURE_NPROBE = {index.FEATURE_NPROBE})`, as "
        "`CatalogIndex.build` calls it, fed by batches of 1,024 synthesised images as the store feeds it. "
        f"Build s: making the synthetic batches excluded. Peak RSS: the subprocess that built the index (the "
        f"{real['photos']} photos' real codes included).",
        "",
        feature_section(feats),
        "",
    ]
    report = "\n".join(parts)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
