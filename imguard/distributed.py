"""The Dask engine: per-chunk work on a Dask cluster, with the contract of `engine.run_chunks`.

Optional extra ``imguard[dask]``. The state (for a scan: the `scan.Matcher`) is sent to every
worker once with ``client.scatter(state, broadcast=True)``. A matcher pickles by the paths of the
catalog's files, which each worker maps and opens read-only, when every worker sees them (tried
first: each worker unpickles it); else its `portable()` form, which carries the FAISS indexes and
the store's bytes. Chunks of items are submitted as tasks, at most
`window` of them in flight (memory stays bounded however many files stream in), and results come
back in input order, so that a cluster run gives exactly the output of a single-process run.

Workers read the items themselves: local paths must be readable on every worker (a shared
folder), URLs are downloaded by the workers (see `imguard.fetch`), which is what makes a
cluster worth it for remote competitor images.
"""

from __future__ import annotations

import pickle
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .engine import CHUNK, chunked
from .errors import DependencyError, ImguardError

T = TypeVar("T")
R = TypeVar("R")

_INSTALL_HINT = "install the extra: pip install 'imguard[dask]' (dask[distributed])"


def require() -> Any:
    """The `distributed` package, or DependencyError with the install hint."""
    try:
        import distributed
    except ImportError as exc:
        raise DependencyError(f"the Dask engine needs dask.distributed: {_INSTALL_HINT}") from exc
    return distributed


def _call(task: Callable[[Any, list], list], state: Any, chunk: list) -> list:
    """Runs on a worker. Parallelism comes from Dask's workers: FAISS's OpenMP threads would
    fight them, as in the local process pool."""
    try:
        import faiss

        if faiss.omp_get_max_threads() != 1:
            faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    return task(state, chunk)


def _unpickles(blob: bytes) -> bool:
    """Runs on each worker: can it rebuild the state (the files it names are on its disk)?"""
    pickle.loads(blob)
    return True


def _for_workers(client: Any, state: Any) -> Any:
    """What to scatter: `state`, if every worker can unpickle it, else its `portable()` form
    (a state without one, or that is its own, is shipped as it is)."""
    if not hasattr(state, "portable") or state.portable() is state:
        return state
    try:
        client.run(_unpickles, pickle.dumps(state))
    except Exception:  # a worker without the catalog's disk: whatever it raised, carry the catalog
        return state.portable()
    return state


def run_chunks(
    task: Callable[[Any, list[T]], list[R]],
    state: Any,
    items: Iterable[T],
    *,
    scheduler: Any = None,
    chunk_size: int = CHUNK,
    window: int | None = None,
) -> Iterator[list[R]]:
    """Yield `task(state, chunk)` for consecutive chunks of `items`, in order, computed on Dask.

    `scheduler`: a scheduler address (``"tcp://127.0.0.1:8786"``), connected to for this run and
    closed after; or an existing ``distributed.Client`` (left open); or None for the client
    already current in this process (``distributed.get_client()``).
    `task` must be a module-level function (it is pickled by reference: workers import it).
    `window`: chunks in flight at most; default twice the cluster's worker threads (at least 2).

    The dependency and the arguments are checked here, when called; the connection is made when
    the iterator is first advanced, and closed (pending work cancelled) when it is exhausted,
    fails, or is closed early.
    """
    distributed = require()
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if window is not None and window < 1:
        raise ValueError("window must be at least 1")
    if scheduler is not None and not isinstance(scheduler, (str, distributed.Client)):
        raise TypeError(f"scheduler must be an address string or a distributed.Client, not {type(scheduler).__name__}")
    return _run(distributed, task, state, items, scheduler, chunk_size, window)


def _connect(distributed: Any, scheduler: Any) -> tuple[Any, bool]:
    """(client, owned): owned clients are closed by us."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    if scheduler is None:
        try:
            return distributed.get_client(), False
        except ValueError as exc:
            raise ImguardError("the Dask engine needs a scheduler: an address like tcp://host:8786, "
                               "or a distributed.Client") from exc
    try:
        return distributed.Client(scheduler, set_as_default=False), True
    except (OSError, TimeoutError, ValueError) as exc:
        raise ImguardError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc


def _run(distributed: Any, task: Callable, state: Any, items: Iterable, scheduler: Any,
         chunk_size: int, window: int | None) -> Iterator[list]:
    client, owned = _connect(distributed, scheduler)
    pending: deque = deque()
    shipped = None
    try:
        if window is None:
            threads = sum(client.nthreads().values()) if client.nthreads() else 1
            window = max(2, 2 * threads)
        if state is not None:
            # hash=False: tokenizing the state would pickle it a second time only to name it.
            # A one-element list, so that a list or dict state is shipped whole, not element-wise.
            [shipped] = client.scatter([_for_workers(client, state)], broadcast=True, hash=False)
        run = uuid.uuid4().hex[:12]
        for number, chunk in enumerate(chunked(items, chunk_size)):
            pending.append(client.submit(_call, task, shipped, chunk, pure=False,
                                         key=f"imguard-chunk-{run}-{number}"))
            if len(pending) >= window:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        if pending:
            try:
                client.cancel(list(pending))
            except Exception:  # pragma: no cover - the client may already be gone
                pass
        pending.clear()
        if shipped is not None:
            try:
                shipped.release()
            except Exception:  # pragma: no cover
                pass
        if owned:
            client.close()


def _result(future: Any) -> list:
    try:
        return future.result()
    finally:
        future.release()  # also on failure: a kept traceback must not keep the result alive
