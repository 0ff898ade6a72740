"""Fingerprints → FAISS binary indexes (Hamming distance), derived from the store and saved beside it.

Exact search (IndexBinaryFlat) is used while it pays; above a size an inverted-file index
(IndexBinaryIVF) is built instead, with `nprobe` set for the recall measured by benchmarks/speed.py.
Index files carry the store generation they were built from: a stale or missing file is rebuilt.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import faiss
import numpy as np

from .store import Store

INDEX_FORMAT = 1
# Above these sizes (codes), exact flat search stops paying for itself (benchmarks/speed.py).
HASH_EXACT_LIMIT = 2_000_000
FEATURE_EXACT_LIMIT = 400_000
# Lists probed per query code. Descriptors vote in bulk (hundreds per image), so a descriptor
# whose neighbour lies in an unprobed list costs little: few probes, fast queries.
HASH_NPROBE = 16
FEATURE_NPROBE = 8


@dataclass
class BinaryIndex:
    """A FAISS binary index whose rows belong to catalog images (`owners[row]` = image id)."""

    index: faiss.IndexBinary
    owners: np.ndarray  # int64, one per row

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest rows of each code: (Hamming distances, rows, owner image ids); -1 when empty."""
        n = len(codes)
        k = min(k, self.size)
        if n == 0 or k == 0:
            empty = np.full((n, max(k, 0)), -1, np.int64)
            return empty.astype(np.int32), empty, empty
        distances, rows = self.index.search(np.ascontiguousarray(codes, np.uint8), k)
        owners = np.where(rows >= 0, self.owners[np.maximum(rows, 0)], -1)
        return distances, rows, owners


def build_binary(codes: np.ndarray, owners: np.ndarray, *, exact_limit: int, nprobe: int = HASH_NPROBE) -> BinaryIndex:
    """Flat (exact) up to `exact_limit` codes, IVF above, trained on a sample of the codes."""
    codes = np.ascontiguousarray(codes, np.uint8)
    bits = codes.shape[1] * 8 if codes.ndim == 2 and codes.shape[1] else 64
    if len(codes) <= exact_limit:
        index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
    else:
        nlist = int(min(65536, 2 ** round(np.log2(4 * np.sqrt(len(codes))))))
        quantizer = faiss.IndexBinaryFlat(bits)
        ivf = faiss.IndexBinaryIVF(quantizer, bits, nlist)
        ivf.own_fields = True
        quantizer.this.disown()
        rng = np.random.default_rng(0)
        sample = codes[rng.choice(len(codes), size=min(len(codes), 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.nprobe = nprobe
        index = ivf
    if len(codes):
        index.add(codes)
    return BinaryIndex(index, np.ascontiguousarray(owners, np.int64))


@dataclass
class CatalogIndex:
    """The searchable form of a catalog: pHash and dHash indexes and the ORB descriptor index."""

    generation: int
    phash: BinaryIndex
    dhash: BinaryIndex
    features: BinaryIndex

    @classmethod
    def build(cls, store: Store) -> CatalogIndex:
        generation = store.generation
        ids, phashes, dhashes = store.hash_table()
        owner_chunks, code_chunks = [], []
        for image_id, descriptors in store.iter_descriptors():
            owner_chunks.append(np.full(len(descriptors), image_id, np.int64))
            code_chunks.append(descriptors)
        descriptors = np.concatenate(code_chunks) if code_chunks else np.zeros((0, 32), np.uint8)
        owners = np.concatenate(owner_chunks) if owner_chunks else np.zeros(0, np.int64)
        return cls(
            generation=generation,
            phash=build_binary(phashes, ids, exact_limit=HASH_EXACT_LIMIT, nprobe=HASH_NPROBE),
            dhash=build_binary(dhashes, ids, exact_limit=HASH_EXACT_LIMIT, nprobe=HASH_NPROBE),
            features=build_binary(descriptors, owners, exact_limit=FEATURE_EXACT_LIMIT, nprobe=FEATURE_NPROBE),
        )

    def save(self, folder: str, catalog_id: str) -> None:
        """Write every file atomically (temp file + rename); the JSON stamp goes last."""
        for name in ("phash", "dhash", "features"):
            part: BinaryIndex = getattr(self, name)
            _atomic(folder, f"{name}.faiss", lambda p, part=part: faiss.write_index_binary(part.index, p))
            _atomic(folder, f"{name}.owners.npy", lambda p, part=part: _write_npy(p, part.owners))
        stamp = {"format": INDEX_FORMAT, "catalog_id": catalog_id, "generation": self.generation,
                 "sizes": {n: getattr(self, n).size for n in ("phash", "dhash", "features")}}
        _atomic(folder, "index.json", lambda p: _write_text(p, json.dumps(stamp)))

    @classmethod
    def load(cls, folder: str, store: Store) -> CatalogIndex | None:
        """The saved index if it was built from this very store at its current generation, else None."""
        generation = store.generation
        try:
            with open(os.path.join(folder, "index.json"), encoding="utf-8") as handle:
                stamp = json.load(handle)
            if (stamp.get("format") != INDEX_FORMAT or stamp.get("generation") != generation
                    or stamp.get("catalog_id") != store.catalog_id or stamp["sizes"]["phash"] != store.count()):
                return None
            parts = {}
            for name in ("phash", "dhash", "features"):
                index = faiss.read_index_binary(os.path.join(folder, f"{name}.faiss"))
                owners = np.load(os.path.join(folder, f"{name}.owners.npy"))
                if index.ntotal != len(owners) or index.ntotal != stamp["sizes"][name]:
                    return None
                parts[name] = BinaryIndex(index, owners)
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        return cls(generation=generation, **parts)

    @classmethod
    def for_store(cls, store: Store, folder: str, *, rebuild: bool = False) -> CatalogIndex:
        """Load the saved index, rebuilding (and saving) it when missing, stale or asked to."""
        index = None if rebuild else cls.load(folder, store)
        if index is None:
            index = cls.build(store)
            try:
                index.save(folder, store.catalog_id)
            except (OSError, RuntimeError):
                pass  # a read-only catalog folder still scans, it just rebuilds every time
        return index


def _write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save(path) would append ".npy" to a temp name
        np.save(handle, array)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _atomic(folder: str, name: str, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, os.path.join(folder, name))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
