"""The local engine: chunks come back in input order whatever the number of jobs, and the input
streams: `run_chunks` pulls paths only as far as the work in flight, so that the folder walk
feeding it (`sources.iter_records`, a generator) never lists a folder of a million files whole."""

from __future__ import annotations

import itertools

import pytest

from imguard import engine


def _times(state: int, chunk: list[int]) -> list[int]:
    return [state * x for x in chunk]


@pytest.mark.parametrize("jobs", [1, 2])
def test_chunks_come_back_in_input_order(jobs):
    chunks = list(engine.run_chunks(_times, 3, iter(range(100)), jobs=jobs, chunk_size=7))
    assert [len(c) for c in chunks] == [7] * 14 + [2]
    assert [x for c in chunks for x in c] == [3 * x for x in range(100)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_endless_input_is_pulled_only_as_far_as_the_work_in_flight(jobs):
    pulled = 0

    def endless():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    chunks = engine.run_chunks(_times, 1, endless(), jobs=jobs, chunk_size=5)
    assert next(chunks) == [0, 1, 2, 3, 4]
    assert next(chunks) == [5, 6, 7, 8, 9]
    # One job cuts a chunk when the previous one is done; a pool keeps 2 chunks per job in flight
    # beyond the ones returned.
    assert pulled == (10 if jobs == 1 else (2 * jobs + 1) * 5)
    chunks.close()
