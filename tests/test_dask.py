"""The Dask engine (imguard.distributed) on a real LocalCluster: two worker processes.

One cluster for the module (starting one costs about two seconds). The scan tests use the shared
fixture catalog of conftest.py and compare with the local engine's scan of the same files.
"""

from __future__ import annotations

import functools
import http.server
import inspect
import os
import socket
import sys
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from imguard import catalog as catalog_module  # noqa: E402
from imguard import distributed as dask_engine  # noqa: E402
from imguard.errors import DependencyError, ImguardError  # noqa: E402

# The scan tests need the `engine=`/`scheduler=` hook in Catalog.scan; skipped, and said so,
# until it is in.
HOOKED = "engine" in inspect.signature(catalog_module.Catalog.scan).parameters
needs_hook = pytest.mark.skipif(not HOOKED, reason="needs the engine='dask' hook in Catalog.scan")


# -- tasks: module-level, so that workers import them by name ---------------------------------


def tag(state: dict, chunk: list[int]) -> list[tuple[str, int, int]]:
    """Uneven durations, so that later chunks often finish first: order must still hold."""
    if chunk[0] % 3 == 0:
        time.sleep(0.02)
    return [(state["prefix"], x, os.getpid()) for x in chunk]


def fail_on_13(state: None, chunk: list[int]) -> list[int]:
    if 13 in chunk:
        raise ValueError("thirteen")
    return chunk


def whole_state(state: list, chunk: list[int]) -> list[tuple[int, int]]:
    return [(len(state), x) for x in chunk]


# -- the cluster -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Workers inherit the environment when they start: their download cache goes to a temp folder.
    cache = str(tmp_path_factory.mktemp("worker-cache"))
    previous = os.environ.get("IMGUARD_CACHE")
    os.environ["IMGUARD_CACHE"] = cache
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, worker_dashboard_address=None)
    finally:
        if previous is None:
            del os.environ["IMGUARD_CACHE"]
        else:
            os.environ["IMGUARD_CACHE"] = previous
    try:
        cluster.worker_cache = cache
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=30)
        yield client


def _released(client, timeout: float = 5) -> bool:
    """True once the client holds no future (releases reach its event loop asynchronously)."""
    deadline = time.monotonic() + timeout
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.02)
    return not client.futures


def _flat(chunks) -> list:
    return [x for chunk in chunks for x in chunk]


# -- run_chunks ------------------------------------------------------------------------------


def test_order_and_completeness(cluster, client):
    worker_pids = set(client.run(os.getpid).values())
    chunks = list(dask_engine.run_chunks(tag, {"prefix": "s"}, iter(range(103)),
                                         scheduler=cluster.scheduler_address, chunk_size=5, window=3))
    assert [len(c) for c in chunks] == [5] * 20 + [3]
    out = _flat(chunks)
    assert [x for _, x, _ in out] == list(range(103))
    assert {p for p, _, _ in out} == {"s"}
    pids = {pid for _, _, pid in out}
    assert pids <= worker_pids and os.getpid() not in pids  # ran on the workers


def test_with_an_existing_client_and_default_window(client):
    out = _flat(dask_engine.run_chunks(tag, {"prefix": "c"}, range(40), scheduler=client, chunk_size=3))
    assert [x for _, x, _ in out] == list(range(40))
    assert client.status == "running"  # not ours to close
    assert _released(client)  # everything released


def test_state_is_broadcast_once_and_released(client):
    seen: list[set[str]] = []
    chunks = dask_engine.run_chunks(whole_state, [1, 2, 3], range(10), scheduler=client, chunk_size=2, window=2)
    first = next(chunks)
    # While the run goes on, the state is one key held by both workers (scattered with broadcast);
    # a list state arrives whole (3 elements), not scattered element by element.
    for key, holders in client.who_has().items():
        if not str(key).startswith("imguard-chunk-"):
            seen.append(set(holders))
    assert seen == [set(client.scheduler_info()["workers"])]
    assert first + _flat(chunks) == [(3, x) for x in range(10)]
    assert _released(client)


def test_closing_early_cancels_pending_chunks(client):
    chunks = dask_engine.run_chunks(tag, {"prefix": "e"}, range(10_000), scheduler=client, chunk_size=2, window=4)
    assert [x for _, x, _ in next(chunks)] == [0, 1]
    assert 0 < len(client.futures) <= 4 + 1  # the window, plus the state
    chunks.close()
    assert _released(client)


def test_errors_propagate_and_clean_up(client):
    chunks = dask_engine.run_chunks(fail_on_13, None, range(40), scheduler=client, chunk_size=4, window=2)
    assert next(chunks) == [0, 1, 2, 3]
    assert next(chunks) == [4, 5, 6, 7]
    assert next(chunks) == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="thirteen"):
        next(chunks)
    assert _released(client)


def test_no_items(client):
    assert list(dask_engine.run_chunks(tag, {"prefix": "x"}, [], scheduler=client)) == []


def test_arguments_are_checked_when_called(client):
    with pytest.raises(ValueError, match="window"):
        dask_engine.run_chunks(tag, None, [1], scheduler=client, window=0)
    with pytest.raises(ValueError, match="chunk_size"):
        dask_engine.run_chunks(tag, None, [1], scheduler=client, chunk_size=0)
    with pytest.raises(TypeError, match="address string or a distributed.Client"):
        dask_engine.run_chunks(tag, None, [1], scheduler=8786)


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DependencyError, match=r"pip install 'imguard\[dask\]'"):
        dask_engine.run_chunks(tag, None, [1], scheduler="tcp://127.0.0.1:8786")


def test_unreachable_scheduler():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ImguardError, match=f"cannot reach the Dask scheduler at {address}"):
            list(dask_engine.run_chunks(tag, None, [1], scheduler=address))


def test_no_scheduler_and_no_current_client():
    with pytest.raises(ImguardError, match="needs a scheduler"):
        list(dask_engine.run_chunks(tag, None, [1]))


# -- the scan --------------------------------------------------------------------------------


def _key(matches) -> list[tuple]:
    return [(os.path.basename(m.query), m.reference, m.score, m.matched_by, m.explanation) for m in matches]


@pytest.fixture(scope="module")
def local_scan(fixtures, indexed) -> list:
    """The local engine's scan of the fixture competitors (a process pool: the quickest here)."""
    run = indexed.scan(fixtures.competitors, jobs=2)
    matches = list(run)
    assert not run.errors
    return matches


@needs_hook
def test_scan_on_dask_equals_the_local_scan(cluster, fixtures, indexed, local_scan):
    run = indexed.scan(fixtures.competitors, engine="dask", scheduler=cluster.scheduler_address)
    matches = list(run)
    assert not run.errors
    assert run.stats["queries"] == len(fixtures.competitor_files)
    assert matches == local_scan  # same matches, same order, same scores and explanations
    expected = {n for n, ref in fixtures.expected.items() if ref}
    assert {os.path.basename(m.query) for m in matches} == expected


@needs_hook
def test_scan_with_a_client_and_broken_files(client, fixtures, indexed, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    name = fixtures.copy_of("chelsea.jpg", "resize")
    (folder / name).write_bytes(fixtures.competitor(name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    run = indexed.scan(folder, engine="dask", scheduler=client)
    matches = list(run)
    assert [(os.path.basename(m.query), os.path.basename(m.reference)) for m in matches][:1] == [(name, "chelsea.jpg")]
    assert [os.path.basename(e.path) for e in run.errors] == ["broken.jpg"]


class _OnlyHere:
    """A state the workers cannot unpickle, as a matcher naming files not on their disk."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __setstate__(self, state: dict) -> None:
        if os.getpid() != state["pid"]:
            raise FileNotFoundError("not on this worker's disk")
        self.__dict__.update(state)

    def portable(self) -> str:
        return "carries what it needs"


def test_the_catalog_travels_by_its_files_where_every_worker_sees_them(client, indexed):
    matcher = indexed.matcher()
    assert dask_engine._for_workers(client, matcher) is matcher  # paths: the workers map the same files
    assert dask_engine._for_workers(client, _OnlyHere()) == "carries what it needs"


@needs_hook
def test_scan_engine_is_checked(indexed, fixtures):
    with pytest.raises(ValueError, match="engine must be 'local' or 'dask'"):
        indexed.scan(fixtures.competitors, engine="ray")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@needs_hook
def test_workers_download_urls(cluster, fixtures, indexed, local_scan, tmp_path):
    pytest.importorskip("requests")
    pytest.importorskip("fsspec")
    # A few competitor files (three copies and an unrelated photo) published over loopback HTTP.
    site = tmp_path / "site"
    site.mkdir()
    names = [fixtures.copy_of("astronaut.png", "exact"), fixtures.copy_of("chelsea.jpg", "meme"),
             fixtures.copy_of("coffee.jpg", "crop90"),
             next(n for n, ref in sorted(fixtures.expected.items()) if ref is None)]
    for name in names:
        (site / name).write_bytes(fixtures.competitor(name).read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        run = indexed.scan([base], engine="dask", scheduler=cluster.scheduler_address)
        remote = [(m.query[len(base):], m.reference, m.score, m.explanation) for m in run]
        assert not run.errors and run.stats["queries"] == 4
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    local = [(os.path.basename(m.query), m.reference, m.score, m.explanation)
             for m in local_scan if os.path.basename(m.query) in names]
    assert remote and sorted(remote) == sorted(local)  # listing order is by name, the local walk's by directory
    # The workers downloaded (and cached) the images themselves.
    assert os.listdir(os.path.join(cluster.worker_cache, "objects"))
