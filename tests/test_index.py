"""FAISS indexes built from the store: the streamed, exactly reserved build and its snapshot."""

from __future__ import annotations

import os

import numpy as np
import pytest

from imguard import index
from imguard.store import Store


def _real_descriptors(indexed) -> tuple[np.ndarray, np.ndarray]:
    """(owners, descriptors) of the fixture catalog, as the store gives them."""
    batches = list(indexed.store.iter_descriptor_batches())
    return np.concatenate([o for o, _ in batches]), np.concatenate([c for _, c in batches])


def _lists(part: index.BinaryIndex) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, codes) of every inverted list, in list order."""
    ivf = index.faiss.downcast_IndexBinary(part.index)
    lists = index.faiss.downcast_InvertedLists(ivf.invlists)
    out = []
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        ids = index.faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
        codes = index.faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
        out.append((ids, codes))
    return out


def test_streamed_build_equals_one_add(indexed):
    """Reserving each inverted list and filling it batch by batch (add_batches) gives the very
    index a single add gives: the same ids and codes in every list, in the same order; batches
    added to an index that holds codes already keep those."""
    owners, codes = _real_descriptors(indexed)
    assert len(codes) > 4000
    batches = lambda: ((owners[i:i + 997], codes[i:i + 997]) for i in range(0, len(codes), 997))  # noqa: E731
    sample = codes[::5]
    whole = index.new_binary(256, len(codes), sample, exact_limit=0, nprobe=4)
    whole.add(owners, codes)
    streamed = index.new_binary(256, len(codes), sample, exact_limit=0, nprobe=4)
    streamed.add_batches(batches)
    half = len(codes) // 2
    in_two_goes = index.new_binary(256, len(codes), sample, exact_limit=0, nprobe=4)
    in_two_goes.add(owners[:half], codes[:half])
    in_two_goes.add_batches(lambda: iter([(owners[half:], codes[half:]), (owners[:0], codes[:0])]))
    assert streamed.kind.startswith("IVF") and streamed.size == whole.size == in_two_goes.size == len(codes)
    expected = _lists(whole)
    for built in (streamed, in_two_goes):
        got = _lists(built)
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, expected))
    assert sum(len(ids) for ids, _ in expected) == len(codes)


def test_streamed_build_by_size_and_of_nothing(indexed):
    owners, codes = _real_descriptors(indexed)
    batches = lambda: ((owners[i:i + 997], codes[i:i + 997]) for i in range(0, len(codes), 997))  # noqa: E731
    for limit, kind in ((0, "IVF"), (len(codes), "Flat")):
        built = index.build_streamed(256, len(codes), batches, exact_limit=limit, nprobe=4)
        assert built.kind.startswith(kind) and built.size == len(codes)
        _, found = built.search(codes[:50], 1)
        assert (found[:, 0] == owners[:50]).mean() > 0.9  # a catalog descriptor finds its own image
    empty = index.build_streamed(256, 0, lambda: iter([]), exact_limit=0, nprobe=4)
    assert empty.size == 0 and empty.search(codes[:3], 4)[1].shape == (3, 0)


def test_hash_index_in_memory_by_size(indexed):
    """The pHash index, flat or inverted lists (forced), finds every catalog hash at distance 0."""
    ids, phashes, _ = indexed.store.hash_table()
    for limit, kind in ((0, "IVF"), (len(ids), "Flat")):
        built = index.build_binary(ids, phashes, exact_limit=limit, nprobe=index.HASH_NPROBE)
        assert built.kind.startswith(kind) and built.size == len(ids)
        distances, found = built.search(phashes, 1)
        assert (distances[:, 0] == 0).all() and (found[:, 0] == ids).mean() > 0.9  # twins share a hash


def test_batches_that_change_between_passes_are_refused(indexed):
    """The fill pass must see the batches the counting pass saw: FAISS would read past them."""
    owners, codes = _real_descriptors(indexed)
    calls = []

    def growing():
        calls.append(1)
        n = 1000 * len(calls)
        return iter([(owners[:n], codes[:n])])

    part = index.new_binary(256, 3000, codes[::5], exact_limit=0, nprobe=4)
    with pytest.raises(ValueError, match="other batches"):
        part.add_batches(growing)
    with pytest.raises(ValueError, match="gave 1000 codes, not 3000"):
        index.build_streamed(256, 3000, lambda: iter([(owners[:1000], codes[:1000])]), exact_limit=0, nprobe=4)


def test_snapshot_does_not_see_a_concurrent_write(indexed, tmp_path):
    """An index build reads the store several times; inside a snapshot another connection's
    write stays invisible until the snapshot ends, so one build sees one generation."""
    import sqlite3
    from contextlib import closing

    folder = tmp_path / "guard"
    folder.mkdir()
    with closing(sqlite3.connect(indexed.store.path)) as source, \
            closing(sqlite3.connect(folder / "catalog.sqlite")) as copy:
        source.backup(copy)  # a consistent copy of a store the session still holds open
    reader, writer = Store.open(folder), Store.open(folder)
    try:
        before = reader.count()
        with reader.snapshot():
            assert reader.count() == before
            writer.delete([next(iter(writer.file_states().values())).id])
            assert writer.count() == before - 1
            assert reader.count() == before and reader.generation != writer.generation
        assert reader.count() == before - 1 and reader.generation == writer.generation
    finally:
        reader.close()
        writer.close()


def test_k_medians_step_moves_centroids_to_the_majority_of_their_codes():
    """Codes scattered around two cores (6 of 256 bits flipped each): one round moves each
    centroid that codes chose onto its core, the bitwise majority; a centroid no code chose
    stays where it was."""
    rng = np.random.default_rng(3)
    cores = rng.integers(0, 256, (2, 32), dtype=np.uint8)
    noise = np.zeros((400, 256), np.uint8)
    for row in noise:
        row[rng.choice(256, 6, replace=False)] = 1
    codes = cores[np.arange(400) % 2] ^ np.packbits(noise, axis=1)
    lonely = ~cores[0]  # 256 bits from the first core: nearer to nothing
    start = np.stack([codes[0], codes[1], lonely])  # two codes of the cores, and the lonely one
    moved = index.k_medians_step(codes, start, index._flat(start, 256))
    assert np.array_equal(moved[:2], cores) and not np.array_equal(start[:2], cores)
    assert np.array_equal(moved[2], lonely)


def _found_share(codes: np.ndarray, flipped_bits: int, nprobe: int) -> float:
    """Share of every 7th code, `flipped_bits` of its 256 bits flipped at random (an edited
    descriptor), that finds its original as nearest neighbour in an inverted-file index of all
    the codes probing `nprobe` lists (with index.LIST_SIZE as the caller set it)."""
    rows = np.arange(0, len(codes), 7)
    flips = np.random.default_rng(5).random((len(rows), 256)) < flipped_bits / 256
    queries = codes[rows] ^ np.packbits(flips, axis=1)
    part = index.build_streamed(256, len(codes), lambda: [(np.arange(len(codes)), codes)], exact_limit=0, nprobe=nprobe)
    _, nearest = part.search(queries, 1)
    return float((nearest[:, 0] == rows).mean())


def test_trained_lists_find_more_neighbours_per_probe(indexed, monkeypatch):
    """What training is for: on real ORB descriptors, an edited descriptor (20 bits flipped)
    finds its original in the one list it probes more often with k-medians centroids than with
    the random sample they start from."""
    _, codes = _real_descriptors(indexed)
    monkeypatch.setattr(index, "LIST_SIZE", 24)  # a few hundred lists, as at scale
    trained = _found_share(codes, 20, nprobe=1)
    monkeypatch.setattr(index, "TRAIN_ROUNDS", 0)
    untrained = _found_share(codes, 20, nprobe=1)
    assert trained > untrained + 0.05


def test_the_probed_lists_find_a_far_edited_descriptor(indexed, monkeypatch):
    """A copy that shares few keypoints with its source (a product cut out onto a new
    background) needs most of them to vote, and their descriptors lie far from the source's,
    up to the vote distance. With the lists of a large catalog, a real ORB descriptor with 30
    of its 256 bits flipped finds its original in the FEATURE_NPROBE lists it probes nine times
    in ten (one list: about three in four)."""
    _, codes = _real_descriptors(indexed)
    monkeypatch.setattr(index, "LIST_SIZE", 24)  # a few hundred lists, as at scale
    assert _found_share(codes, 30, nprobe=index.FEATURE_NPROBE) >= 0.9


def test_k_medians_step_is_the_same_block_by_block_and_skips_unassigned_codes(indexed, monkeypatch):
    """The majority is counted a block of codes at a time: any block size gives the same
    centroids. A code the assigner found no list for (-1) moves no centroid."""
    _, codes = _real_descriptors(indexed)
    start = np.ascontiguousarray(codes[::40])
    whole = index.k_medians_step(codes, start, index._flat(start, 256))
    monkeypatch.setattr(index, "TRAIN_BLOCK", 37)
    assert np.array_equal(index.k_medians_step(codes, start, index._flat(start, 256)), whole)
    assert not np.array_equal(whole, start)

    class Unassigned:  # finds a list for the first half of the codes only
        def search(self, x, k):
            found = index._flat(start, 256).search(x, 1)[1]
            found[len(x) // 2:] = -1
            return np.zeros_like(found, np.int32), found

    half = index.k_medians_step(codes[:len(codes) // 2], start, index._flat(start, 256))
    assert np.array_equal(index.k_medians_step(codes, start, Unassigned()), half)


def test_probes_are_set_by_size_and_restored_by_tune_on_load(tmp_path, indexed, monkeypatch):
    """A two-level quantizer probes more coarse lists for a code that probes many lists (a
    hash) than for a descriptor, and `tune` sets both on a loaded index."""
    _, codes = _real_descriptors(indexed)
    monkeypatch.setattr(index, "LIST_SIZE", 2)  # > 1024 lists: the two-level quantizer
    for nprobe in (1, index.HASH_NPROBE):
        part = index.build_binary(np.arange(len(codes)), codes, exact_limit=0, nprobe=nprobe)
        ivf = index.faiss.downcast_IndexBinary(part.index)
        quantizer = index.faiss.downcast_IndexBinary(ivf.quantizer)
        assert isinstance(quantizer, index.faiss.IndexBinaryIVF) and ivf.nlist > 1024
        assert (ivf.nprobe, quantizer.nprobe) == (nprobe, index.coarse_nprobe(nprobe))
        path = str(tmp_path / f"probe{nprobe}.faiss")
        quantizer.nprobe = 1
        index.faiss.write_index_binary(part.index, path)
        loaded = index.BinaryIndex(index.faiss.read_index_binary(path))
        loaded.tune(nprobe)
        assert index.faiss.downcast_IndexBinary(
            index.faiss.downcast_IndexBinary(loaded.index).quantizer).nprobe == index.coarse_nprobe(nprobe)
    assert index.coarse_nprobe(index.HASH_NPROBE) > index.coarse_nprobe(index.FEATURE_NPROBE)


def test_a_saved_index_is_mapped_not_copied(indexed):
    """Loaded from its files, each part maps its file (the page cache's pages, shared by every
    process of a scan) instead of holding a copy."""
    loaded = index.CatalogIndex.load(indexed.folder, indexed.store)
    assert loaded is not None and set(loaded.files) == set(index.PARTS)
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else None
    if maps is None:
        pytest.skip("no /proc/self/maps here to see the mappings")
    for name in index.PARTS:
        assert loaded.files[name][0] in maps
    again = index.CatalogIndex.mapped(loaded.generation, loaded.files)
    queries = np.frombuffer(indexed.store.hash_table()[1].tobytes(), np.uint8).reshape(-1, 8)
    assert np.array_equal(again.phash.search(queries, 3)[1], loaded.phash.search(queries, 3)[1])
