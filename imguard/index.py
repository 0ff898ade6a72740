"""Fingerprints → FAISS binary indexes (Hamming distance), derived from the store and saved beside it.

Exact search (IndexBinaryFlat) is used while it pays; above a size an inverted-file index
(IndexBinaryIVF) is built instead, its lists centred by binary k-medians on a sample, with
`nprobe` set for the copies found in benchmarks/accuracy.py at the cost measured by benchmarks/speed.py.
Index files carry the store generation they were built from: a stale or missing file is rebuilt.
The three files are one set: a stamp written after them names each one's size and CRC-32, so that
a reader never mixes files of two sets (one being replaced, a writer killed halfway), nor loads a
damaged file.
Saved indexes are memory-mapped when loaded, not copied: the processes of a scan (a pool's
workers, a spawned or Dask worker on the same disk) then share one copy of the catalog's codes,
the page cache's. Files are only ever replaced by a rename, never rewritten in place, so that a
mapped file keeps its content for as long as it is mapped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import faiss
import numpy as np

from .errors import StoreError
from .store import Store

INDEX_FORMAT = 4  # 3: lists centred by k-medians; coarse probes set by `tune`; 4: files checksummed
PARTS = ("phash", "dhash", "features")
STAMP = "index.json"
# Loads tried while the stamp keeps changing under the reader (a writer replacing the set), before
# the index is built from the store instead.
LOAD_ATTEMPTS = 3
# Above these sizes (codes), exact flat search stops paying for itself (benchmarks/speed.py): an
# ORB query searches ~1,400 descriptors, so flat costs 1,400 × catalog descriptors per image.
# For features that is ~2 ns a pair: 4,096 codes (7 photos) cost ~12 ms a query image, about a
# scan's whole decode; 56,000 (80 photos) cost 163 ms, where one inverted list costs 3.8 ms
# (benchmarks/SPEED.md, the 80-image row).
# On a 60-photo catalog (benchmarks/SMALL-CATALOG.md) inverted lists found 93.1 % of the copies
# against exact search's 93.4 %, flagged the same look-alikes, and indexed and scanned 3.2x faster.
HASH_EXACT_LIMIT = 250_000
FEATURE_EXACT_LIMIT = 4_096
# Inverted lists hold about this many codes; more lists mean shorter scans but a costlier
# quantizer, which is why large list counts get a two-level quantizer (see `_quantizer`).
LIST_SIZE = 384
# Lists probed per query code. Descriptors vote in bulk (hundreds per image), so a descriptor
# whose neighbour lies in an unprobed list costs little for a photo copied whole. A copy that
# shares few keypoints with its source does not have that margin: a product cut out onto a new
# background, a heavy crop. Diagnosed on benchmarks/accuracy.py's dataset (2026-12-04): 7 lost
# cut-outs that verify well against their source were never candidates; with one probe the
# source got 5-12 votes and ranked 5th or lower, with eight 10-27 and first in 4 of the 7. Four
# probes: on every 4th accuracy query, 5 more copies of 1,200 found (cut-outs 65 -> 67 of 75),
# no look-alike more; two found 3, eight as many as four (RESULTS.md: cut-outs 0.837 -> 0.850).
# A search costs about 1.8 times one probe's (1,400 descriptors against 296,000 codes: 6.8 ->
# 12.3 ms), a scan a sixth more CPU per image on the benchmark's small queries (303 of them on
# one CPU, rounds interleaved: 15.4 -> 18.1 s). A hash has no redundancy at all: it probes more.
HASH_NPROBE = 32
FEATURE_NPROBE = 4
# Coarse lists of the two-level quantizer probed per code, at least: see `coarse_nprobe`.
COARSE_NPROBE = 4
# Training: codes sampled per list (about: the sample is sized before nlist is rounded to a
# power of two), and k-medians rounds. On speed.py's synthetic 10,000-image feature catalog,
# three rounds took neighbour recall per probe from 0.56 (random centroids) to 0.76
# (benchmarks/SPEED.md), and kept it at 4 coarse probes instead of 8; more rounds added little.
TRAIN_SAMPLE = 16
TRAIN_ROUNDS = 3
TRAIN_BLOCK = 1 << 16  # sample codes whose bits are unpacked at once
SEED = 0
# Bytes of an index file read at a time while its CRC-32 is checked before it is mapped: the
# check costs a buffer of this size, not a copy of the file (2.4 GB at 100,000 catalog images).
CHECK_BLOCK = 1 << 22
# How FAISS maps a saved index: IO_FLAG_MMAP_IFC maps the codes of both kinds imguard saves (an
# IDMap's ids are still copied: 8 B a code, the hash indexes only). IO_FLAG_MMAP copies a flat
# index whole and turns inverted lists into OnDiskInvertedLists, which searched slower (measured
# on 10M codes, faiss 1.15: flat 400 MB mapped, IVF lists mapped and searched as fast as in memory).
MAP_FLAG = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
T = TypeVar("T")
FileId = tuple[int, int, int]  # (inode, size, mtime in ns): a file that was replaced has another


@dataclass
class BinaryIndex:
    """A FAISS binary index whose ids are catalog image ids (many rows may share one)."""

    index: faiss.IndexBinary

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, owners: np.ndarray, codes: np.ndarray) -> None:
        """Add codes, each owned by a catalog image id (the order of the store's rows)."""
        if len(codes):
            self.index.add_with_ids(np.ascontiguousarray(codes, np.uint8), np.ascontiguousarray(owners, np.int64))

    def add_batches(self, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> None:
        """Add (owners, codes) batches from `batches()`, which an inverted-file index calls twice,
        and which must give the same batches both times: once to count the new codes of each
        list and reserve exactly that room, once to fill the lists. Appending alone grows each
        list by doubling, up to twice the memory the codes need (~2.4 GB of codes and ids for
        100,000 catalog images, benchmarks/speed.py)."""
        index = faiss.downcast_IndexBinary(self.index)
        if not isinstance(index, faiss.IndexBinaryIVF):
            for owners, codes in batches():
                self.add(owners, codes)
            return
        assigned, counts = [], np.zeros(index.nlist, np.int64)
        for _, codes in batches():
            # int32 while held between the passes (4 B a code); add_core takes int64
            lists = index.quantizer.assign(np.ascontiguousarray(codes, np.uint8), 1).ravel().astype(np.int32)
            counts += np.bincount(lists, minlength=index.nlist)
            assigned.append(lists)
        invlists = faiss.downcast_InvertedLists(index.invlists)
        for number in np.flatnonzero(counts).tolist():
            held = invlists.list_size(number)
            invlists.resize(number, held + int(counts[number]))  # allocates exactly this much...
            invlists.resize(number, held)  # ...and keeps the room: a vector never shrinks its capacity
        for (owners, codes), lists in zip(batches(), assigned, strict=True):
            # swig_ptr holds no reference: every array must outlive the call
            codes, owners = np.ascontiguousarray(codes, np.uint8), np.ascontiguousarray(owners, np.int64)
            if not len(codes) == len(owners) == len(lists):  # add_core would read past the arrays
                raise ValueError("add_batches: batches() gave other batches the second time")
            lists = lists.astype(np.int64)
            index.add_core(len(codes), faiss.swig_ptr(codes), faiss.swig_ptr(owners), faiss.swig_ptr(lists))

    def search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows of each code: (Hamming distances, owner image ids); -1 when empty."""
        n = len(codes)
        k = min(k, self.size)
        if n == 0 or k == 0:
            empty = np.full((n, max(k, 0)), -1, np.int64)
            return empty.astype(np.int32), empty
        distances, owners = self.index.search(np.ascontiguousarray(codes, np.uint8), k)
        return distances, owners

    @property
    def kind(self) -> str:
        """What was built, for stats and benchmarks: "Flat" or "IVF nlist=… nprobe=…"."""
        index = faiss.downcast_IndexBinary(self.index)
        if isinstance(index, faiss.IndexBinaryIVF):
            return f"IVF nlist={index.nlist} nprobe={index.nprobe}"
        return "Flat"

    def tune(self, nprobe: int) -> None:
        """Set the lists probed per query, and the coarse lists its quantizer probes to find them
        (an IVF index; a flat one has nothing to tune). `CatalogIndex.load` tunes every index it
        reads, so the probes never depend on what a file holds."""
        index = faiss.downcast_IndexBinary(self.index)
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = nprobe
            quantizer = faiss.downcast_IndexBinary(index.quantizer)
            if isinstance(quantizer, faiss.IndexBinaryIVF):
                quantizer.nprobe = coarse_nprobe(nprobe)


def coarse_nprobe(nprobe: int) -> int:
    """A code that probes many lists (a hash) needs more of their coarse lists found."""
    return max(COARSE_NPROBE, nprobe // 4)


def new_binary(bits: int, size: int, sample: np.ndarray, *, exact_limit: int, nprobe: int) -> BinaryIndex:
    """An empty index for `size` codes: exact (flat) up to `exact_limit`, inverted lists above,
    centred on the `k_medians` of `sample` (a random sample of the codes to come, in random
    order), which start from its first codes."""
    if size <= exact_limit:
        return BinaryIndex(faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(bits)))
    sample = np.ascontiguousarray(sample, np.uint8)
    nlist = int(np.clip(2 ** round(np.log2(size / LIST_SIZE)), 16, len(sample)))
    coarse = coarse_nprobe(nprobe)
    centroids = k_medians(sample, sample[:nlist], lambda c: _quantizer(c, bits, coarse))
    quantizer = _quantizer(centroids, bits, coarse)
    ivf = faiss.IndexBinaryIVF(quantizer, bits, nlist)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.is_trained = True
    part = BinaryIndex(ivf)
    part.tune(nprobe)
    return part


def k_medians(codes: np.ndarray, centroids: np.ndarray,
              assigner: Callable[[np.ndarray], faiss.IndexBinary]) -> np.ndarray:
    """`centroids` after TRAIN_ROUNDS rounds of `k_medians_step`, each assigning the codes with
    `assigner(centroids)`: an index that holds them."""
    for _ in range(TRAIN_ROUNDS):
        centroids = k_medians_step(codes, centroids, assigner(centroids))
    return centroids


def k_medians_step(codes: np.ndarray, centroids: np.ndarray, assigner: faiss.IndexBinary) -> np.ndarray:
    """One Lloyd round in Hamming space: each centroid moves to the bitwise majority of the codes
    nearest to it (`assigner` holds `centroids`), the point nearest to all of them in sum. A
    centroid no code chose stays; a code no probed list held moves nothing. A round costs one
    search of the codes, which the two-level quantizer keeps at ~√lists comparisons a code for
    many lists."""
    _, nearest = assigner.search(codes, 1)
    nearest = nearest.ravel()
    members = np.bincount(nearest[nearest >= 0], minlength=len(centroids))
    ones = np.zeros((len(centroids), codes.shape[1] * 8), np.int32)
    for start in range(0, len(codes), TRAIN_BLOCK):  # bits unpacked a block at a time
        block = nearest[start:start + TRAIN_BLOCK]
        order = np.argsort(block, kind="stable")
        order = order[block[order] >= 0]
        if len(order):
            owner = block[order]
            firsts = np.flatnonzero(np.r_[True, np.diff(owner) != 0])  # each centroid's first code
            bits = np.unpackbits(codes[start:start + TRAIN_BLOCK][order], axis=1)
            ones[owner[firsts]] += np.add.reduceat(bits, firsts, axis=0, dtype=np.int32)
    moved = np.packbits(ones > (members // 2)[:, None], axis=1)  # more than half of them
    return np.where((members > 0)[:, None], moved, centroids)


def _quantizer(centroids: np.ndarray, bits: int, nprobe: int) -> faiss.IndexBinary:
    """Finds a code's nearest lists. Flat while that is cheap; for many lists, itself an inverted
    file over the centroids (√nlist coarse lists, centred by k-medians of the centroids, probed
    `nprobe` at a time), so that assigning a code costs ~√nlist comparisons instead of nlist."""
    centroids = np.ascontiguousarray(centroids, np.uint8)
    if len(centroids) <= 1024:
        return _flat(centroids, bits)
    n_coarse = int(2 ** round(np.log2(np.sqrt(len(centroids)))))
    coarse_centroids = k_medians(centroids, centroids[np.linspace(0, len(centroids) - 1, n_coarse).astype(int)],
                                 lambda c: _flat(c, bits))
    # A coarse list left empty would waste a probe, and as many empty ones as are probed would
    # find no list at all.
    _, owner = _flat(coarse_centroids, bits).search(centroids, 1)
    coarse = _flat(coarse_centroids[np.unique(owner)], bits)
    quantizer = faiss.IndexBinaryIVF(coarse, bits, coarse.ntotal)
    quantizer.own_fields = True
    coarse.this.disown()
    quantizer.is_trained = True
    quantizer.nprobe = nprobe
    quantizer.add(centroids)
    return quantizer


def _flat(codes: np.ndarray, bits: int) -> faiss.IndexBinaryFlat:
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(np.ascontiguousarray(codes, np.uint8))
    return flat


def random_rows(n: int, k: int) -> np.ndarray:
    """k distinct row numbers out of n, sorted, the same every time (seeded)."""
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def build_binary(owners: np.ndarray, codes: np.ndarray, *, exact_limit: int, nprobe: int) -> BinaryIndex:
    """An index of `codes` in memory (the hashes): `build_streamed` of one batch."""
    codes = np.ascontiguousarray(codes, np.uint8)
    bits = codes.shape[1] * 8 if codes.ndim == 2 and codes.shape[1] else 64
    return build_streamed(bits, len(codes), lambda: [(owners, codes)], exact_limit=exact_limit, nprobe=nprobe)


def build_streamed(bits: int, total: int, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *,
                   exact_limit: int, nprobe: int) -> BinaryIndex:
    """An index of `total` codes, flat up to `exact_limit` codes and inverted lists above, read a
    batch at a time (ORB descriptors: 100,000 catalog images are ~60M of them): `batches()` gives
    (owners, codes), the same every call. One pass picks the random sample the lists are trained
    on, two more fill them (see `add_batches`). The build holds the index, its lists'
    assignments and one batch (and, while the lists are trained, the sample), never every code twice."""
    rows = random_rows(total, max(16, total // LIST_SIZE) * TRAIN_SAMPLE)
    picked, start = [], 0
    for _, codes in batches():
        lo, hi = np.searchsorted(rows, [start, start + len(codes)])
        picked.append(codes[rows[lo:hi] - start])
        start += len(codes)
    if start != total:
        raise ValueError(f"build_streamed: batches() gave {start} codes, not {total}")
    sample = np.concatenate(picked) if picked else np.zeros((0, bits // 8), np.uint8)
    del picked
    part = new_binary(bits, total, sample[np.random.default_rng(SEED).permutation(len(sample))],
                      exact_limit=exact_limit, nprobe=nprobe)
    del sample  # not held through the fill
    part.add_batches(batches)
    return part


@dataclass
class CatalogIndex:
    """The searchable form of a catalog: pHash and dHash indexes and the ORB descriptor index."""

    generation: int
    phash: BinaryIndex
    dhash: BinaryIndex
    features: BinaryIndex
    # The saved files mapped (part name → path and identity), when loaded from them; None when
    # built in memory. Another process on the same disk maps the same files (see `mapped`).
    files: dict[str, tuple[str, FileId]] | None = field(default=None, compare=False)

    @classmethod
    def build(cls, store: Store) -> CatalogIndex:
        """Built from one snapshot of the store: an `index` run writing meanwhile cannot mix
        two generations into one index. FAISS's failures (it raises RuntimeError) and running out
        of memory are StoreErrors."""
        try:
            with store.snapshot():
                generation = store.generation
                ids, phashes, dhashes = store.hash_table()
                features = build_streamed(256, store.descriptor_count(), store.iter_descriptor_batches,
                                          exact_limit=FEATURE_EXACT_LIMIT, nprobe=FEATURE_NPROBE)
            return cls(
                generation=generation,
                phash=build_binary(ids, phashes, exact_limit=HASH_EXACT_LIMIT, nprobe=HASH_NPROBE),
                dhash=build_binary(ids, dhashes, exact_limit=HASH_EXACT_LIMIT, nprobe=HASH_NPROBE),
                features=features,
            )
        except (RuntimeError, MemoryError) as exc:
            raise StoreError(f"{store.path}: building the FAISS indexes failed ({type(exc).__name__}: {exc})") from exc

    def save(self, folder: str, catalog_id: str) -> None:
        """Write the three files as one set (their sizes and CRC-32s taken as they are written),
        then the stamp naming them: a reader takes the files only if they are the stamp's."""
        written = _replace_together(folder, {f"{name}.faiss": functools.partial(_write_summed, getattr(self, name).index)
                                             for name in PARTS})
        stamp = {"format": INDEX_FORMAT, "catalog_id": catalog_id, "generation": self.generation,
                 "sizes": {n: getattr(self, n).size for n in PARTS},
                 "files": {n: written[f"{n}.faiss"] for n in PARTS}}
        _replace_together(folder, {STAMP: lambda handle: handle.write(json.dumps(stamp).encode())})

    @classmethod
    def load(cls, folder: str, store: Store) -> CatalogIndex | None:
        """The saved index if it was built from this very store at its current generation and its
        files are the ones its stamp names, else None."""
        generation = store.generation
        stamp = _read_stamp(folder)
        for _ in range(LOAD_ATTEMPTS):
            if (stamp is None or stamp.get("format") != INDEX_FORMAT or stamp.get("generation") != generation
                    or stamp.get("catalog_id") != store.catalog_id or stamp["sizes"]["phash"] != store.count()):
                return None
            read = _read_parts(folder, stamp)
            if read is not None:
                parts, files = read
                return cls(generation=generation, **parts, files=files)
            again = _read_stamp(folder)
            if again == stamp:  # the files are not the stamp's, and no writer is replacing them
                return None
            stamp = again
        return None

    @classmethod
    def mapped(cls, generation: int, files: dict[str, tuple[str, FileId]]) -> CatalogIndex:
        """The index another process loaded (`files`, its identities), mapped again here without
        reading the files: StoreError when one is missing or was replaced since (a new `index`
        run, or a disk that is not shared)."""
        parts = {}
        for name, (path, identity) in files.items():
            part = _map_same(path, identity)
            if part is None:
                raise StoreError(f"{path}: not the index file the scan started with (replaced since, or on "
                                 "another disk)")
            parts[name] = _tuned(name, part)
        return cls(generation=generation, **parts, files=dict(files))

    @classmethod
    def for_store(cls, store: Store, folder: str, *, rebuild: bool = False, save: bool = True) -> CatalogIndex:
        """Load the saved index, or build it when missing, stale or asked to, and save it (unless
        not `save`: a reader builds it in memory). A saved index is mapped again from its files:
        a scan in this process (a nightly run's) then shares them with its workers."""
        index = None if rebuild else cls.load(folder, store)
        if index is None:
            index = cls.build(store)
            if save:
                try:
                    index.save(folder, store.catalog_id)
                except (OSError, RuntimeError):
                    return index  # a catalog folder that cannot be written still scans, it rebuilds every time
                index = cls.load(folder, store) or index
        return index


def _read_stamp(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, STAMP), encoding="utf-8") as handle:
            stamp = json.load(handle)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _read_parts(folder: str, stamp: dict[str, Any]) -> tuple[dict[str, BinaryIndex], dict[str, tuple[str, FileId]]] | None:
    """The three indexes, mapped, if each file is the one the stamp names (size and CRC-32 as
    read); and the files' identities."""
    parts, files = {}, {}
    try:
        for name in PARTS:
            path = os.path.join(folder, f"{name}.faiss")
            read = _map_summed(path, stamp["files"][name])
            if read is None or read[0].ntotal != stamp["sizes"][name]:
                return None
            parts[name], files[name] = _tuned(name, read[0]), (path, read[1])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    return parts, files


def _tuned(name: str, index: faiss.IndexBinary) -> BinaryIndex:
    part = BinaryIndex(index)
    part.tune(FEATURE_NPROBE if name == "features" else HASH_NPROBE)
    return part


def _write_summed(index: faiss.IndexBinary, handle: BinaryIO) -> dict[str, int]:
    """Write `index` to `handle`; its size and CRC-32."""
    summed = {"bytes": 0, "crc32": 0}

    def write(block: bytes) -> None:
        handle.write(block)
        summed["bytes"] += len(block)
        summed["crc32"] = zlib.crc32(block, summed["crc32"])

    faiss.write_index_binary(index, faiss.PyCallbackIOWriter(write))
    return summed


def _identity(st: os.stat_result) -> FileId:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _map_summed(path: str, expected: dict[str, int]) -> tuple[faiss.IndexBinary, FileId] | None:
    """The index in `path`, mapped, and the file's identity, if its bytes have the size and
    CRC-32 `expected` (checked a block at a time, before it is mapped); else None."""
    with open(path, "rb") as handle:
        identity = _identity(os.fstat(handle.fileno()))
        if identity[1] != expected["bytes"]:
            return None
        crc = 0
        while block := handle.read(CHECK_BLOCK):
            crc = zlib.crc32(block, crc)
    if crc != expected["crc32"]:
        return None
    index = _map_same(path, identity)
    return None if index is None else (index, identity)


def _map_same(path: str, identity: FileId) -> faiss.IndexBinary | None:
    """The index in `path` mapped, if the file is still the one of `identity` once mapped (the
    file checked, not one renamed into its place meanwhile); else None."""
    try:
        if _identity(os.stat(path)) != identity:
            return None
        try:
            index = faiss.read_index_binary(path, MAP_FLAG)
        except RuntimeError:  # a FAISS that cannot map this file here: read (a copy)
            index = faiss.read_index_binary(path)
        return index if _identity(os.stat(path)) == identity else None
    except (OSError, RuntimeError):
        return None


def _replace_together(folder: str, writers: dict[str, Callable[[BinaryIO], T]]) -> dict[str, T]:
    """Write each file of `writers` (name → what writes it, and returns what to keep) under a
    temporary name, then rename them all into place: a failure or a kill before the renames
    leaves the old files as they were."""
    kept: dict[str, T] = {}
    temporary: dict[str, str] = {}
    try:
        for name, write in writers.items():
            fd, temporary[name] = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as handle:
                kept[name] = write(handle)
        for name in writers:
            os.replace(temporary.pop(name), os.path.join(folder, name))
    finally:
        for path in temporary.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
    return kept
