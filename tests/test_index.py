"""FAISS indexes built from the store: the streamed, exactly reserved build and its snapshot."""

from __future__ import annotations

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
