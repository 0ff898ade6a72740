"""Where per-chunk work runs: in this process, or on a local process pool.

Work is cut into chunks of paths (FAISS searches are batched per chunk), at most a few chunks are
in flight at a time (memory stays bounded however many files stream in), and results come back
in input order, so that a parallel run gives exactly the output of a single-process run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 16


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# The worker's state: set before the pool forks (inherited, not pickled), or by the initializer.
_STATE: Any = None


def single_thread_faiss() -> None:
    """FAISS searches in this process on one thread: imguard's parallelism is processes, and
    OpenMP's start-up costs more than it saves on the small searches of one image (a 700-code
    search took 68 ms instead of 1 ms on a busy 2-core machine)."""
    import faiss

    faiss.omp_set_num_threads(1)


def _init(state: Any) -> None:
    global _STATE
    _STATE = state
    _die_with_parent()
    single_thread_faiss()  # parallelism comes from processes; threads would fight


def _die_with_parent() -> None:
    """A worker of a run that is killed (SIGKILL: no clean-up) must not live on, holding memory
    and, waiting for work that never comes, the files it inherited: Linux signals it when its
    parent dies (prctl PR_SET_PDEATHSIG). Elsewhere a pool's workers notice a broken pipe."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the signal was asked for
        os._exit(1)


def _call(task: Callable[[Any, list], list], chunk: list) -> list:
    return task(_STATE, chunk)


def run_chunks(
    task: Callable[[Any, list[T]], list[R]],
    state: Any,
    items: Iterable[T],
    *,
    jobs: int = 1,
    chunk_size: int = CHUNK,
) -> Iterator[list[R]]:
    """Yield `task(state, chunk)` for consecutive chunks of `items`, in order.

    `task` must be a module-level function. With jobs > 1 it runs in a process pool whose workers
    receive `state` once (by fork where available, else pickled once per worker).
    """
    chunks = chunked(items, chunk_size)
    # OpenMP start-up on small batched searches costs more than it saves, in workers and here: a
    # 2-job `index` of 209 photos, FAISS at two threads here, built its index after the pool in
    # 1.7 s instead of 0.14 s and ran 1.6x slower (at one thread as a 1-job run always had it).
    single_thread_faiss()
    if jobs <= 1:
        for chunk in chunks:
            yield task(state, chunk)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init, initargs=(state,)) as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_call, task, chunk))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
