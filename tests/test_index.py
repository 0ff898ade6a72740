"""FAISS indexes built from the store: the streamed, exactly reserved build and its snapshot."""

from __future__ import annotations

import numpy as np

from imguard import index
from imguard.store import Store


def _real_descriptors(indexed) -> tuple[np.ndarray, np.ndarray]:
    """(owners, descriptors) of the fixture catalog, as the store gives them."""
    batches = list(indexed.store.iter_descriptor_batches())
    return np.concatenate([o for o, _ in batches]), np.concatenate([c for _, c in batches])


def test_streamed_build_equals_one_add(indexed):
    """Reserving each inverted list and filling it batch by batch (add_batches) gives the very
    index a single add gives: same codes, same order, same neighbours."""
    owners, codes = _real_descriptors(indexed)
    assert len(codes) > 4000
    batches = lambda: ((owners[i:i + 997], codes[i:i + 997]) for i in range(0, len(codes), 997))  # noqa: E731
    sample = codes[::5]
    streamed = index.new_binary(256, len(codes), sample, exact_limit=0, nprobe=4)
    streamed.add_batches(batches)
    whole = index.new_binary(256, len(codes), sample, exact_limit=0, nprobe=4)
    whole.add(codes, owners)
    assert streamed.kind.startswith("IVF") and streamed.size == whole.size == len(codes)
    ivf_a, ivf_b = (index.faiss.downcast_IndexBinary(p.index) for p in (streamed, whole))
    lists_a, lists_b = (index.faiss.downcast_InvertedLists(i.invlists) for i in (ivf_a, ivf_b))
    sizes = [lists_a.list_size(n) for n in range(ivf_a.nlist)]
    assert sizes == [lists_b.list_size(n) for n in range(ivf_b.nlist)] and sum(sizes) == len(codes)
    queries = codes[::7] ^ np.uint8(1)  # one bit off each
    assert all((a == b).all() for a, b in zip(streamed.search(queries, 4), whole.search(queries, 4)))
    for limit, kind in ((0, "IVF"), (len(codes), "Flat")):
        built = index.build_streamed(256, len(codes), batches, exact_limit=limit, nprobe=4)
        assert built.kind.startswith(kind) and built.size == len(codes)
        _, found = built.search(codes[:50], 1)
        assert (found[:, 0] == owners[:50]).mean() > 0.9  # a catalog descriptor finds its own image


def test_snapshot_does_not_see_a_concurrent_write(indexed, tmp_path):
    """An index build reads the store several times; inside a snapshot another connection's
    write stays invisible until the snapshot ends, so one build sees one generation."""
    import shutil

    folder = tmp_path / "guard"
    shutil.copytree(indexed.folder, folder)
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
