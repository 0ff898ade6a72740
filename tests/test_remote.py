"""Remote competitor sources (imguard.sources, imguard.fetch) against a real HTTP server on loopback.

The server is `http.server` in a thread, on port 0, serving a folder of real photos made from
scikit-image's shipped data, with its HTML directory listings; a few extra routes answer slowly,
with errors, or without a Content-Length. Every request is counted, so that tests can check what
was (not) sent. No network beyond 127.0.0.1.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
pytest.importorskip("requests")
skdata = pytest.importorskip("skimage.data")

from PIL import Image  # noqa: E402

import imguard  # noqa: E402
from imguard import fetch, sources  # noqa: E402
from imguard.errors import DependencyError, ImageError, ManifestError, SourceError  # noqa: E402


# -- images ----------------------------------------------------------------------------------


def _save(array, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """catalog/: the seller's photos; site/: what the competitor's server publishes."""
    root = tmp_path_factory.mktemp("remote")
    catalog = root / "catalog"
    site = root / "site"
    astronaut = _save(skdata.astronaut(), catalog / "astronaut.jpg", quality=92)
    _save(skdata.chelsea(), catalog / "chelsea.jpg", quality=92)
    _save(skdata.coffee(), catalog / "coffee.jpg", quality=92)

    (site / "sub" / "deeper").mkdir(parents=True)
    (site / "astronaut.jpg").write_bytes(astronaut.read_bytes())  # byte-identical copy
    (site / "same content.jpg").write_bytes(astronaut.read_bytes())  # same bytes, other URL
    small = Image.open(astronaut).resize((256, 256), Image.LANCZOS)
    small.save(site / "sub" / "astronaut_small.jpg", quality=80)  # resized, re-compressed
    chelsea = Image.fromarray(skdata.chelsea())
    chelsea.resize((360, 240), Image.LANCZOS).save(site / "sub" / "deeper" / "chelsea_copy.png")
    _save(skdata.camera(), site / "camera.png")  # unrelated: must not match
    # Not images, or hidden: never listed.
    (site / "notes.txt").write_text("not an image")
    (site / "index.csv.bak").write_text("x")
    _save(skdata.astronaut(), site / ".hidden.jpg")
    _save(skdata.astronaut(), site / ".private" / "secret.jpg")
    # A big file for the size limit (noise does not compress).
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    _save(noise, site / "big" / "noise.png")
    return {"root": root, "catalog": catalog, "site": site}


# -- server ----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site folder (with listings), plus test routes:

    /slow/NAME        sleeps 1.5 s, then serves NAME
    /error500/NAME    always HTTP 500
    /flaky/N/NAME     HTTP 500 for the first N requests of this URL, then serves NAME
    /nolength/NAME    serves NAME without Content-Length (the body ends when the connection does)
    /blob/STEM        serves STEM.png as image/png: an image URL without a suffix
    """

    counts: Counter = Counter()
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        with self.lock:
            self.counts[self.path] += 1
            seen = self.counts[self.path]
        parts = self.path.split("/")
        route = parts[1] if len(parts) > 1 else ""
        if route == "slow":
            time.sleep(1.5)
            self.path = "/" + "/".join(parts[2:])
        elif route == "error500":
            self.send_error(500)
            return
        elif route == "flaky":
            if seen <= int(parts[2]):
                self.send_error(503)
                return
            self.path = "/" + "/".join(parts[3:])
        elif route == "blob":
            data = (Path(self.directory) / (parts[2] + ".png")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        elif route == "nolength":
            data = (Path(self.directory) / "/".join(parts[2:])).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        with self.lock:
            self.counts["HEAD " + self.path] += 1
        super().do_HEAD()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (timeout, size limit) leaves a broken pipe: expected here.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(images):
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(images["site"])))
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def counts():
    """Request counts by path, from zero for this test."""
    with _Handler.lock:
        _Handler.counts.clear()
    return _Handler.counts


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMGUARD_CACHE", str(folder))  # also the default of the scan's downloads
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- what a source is ------------------------------------------------------------------------


def test_is_remote():
    for url in ("http://x/a.jpg", "https://x/", "s3://bucket/p/", "gs://bucket/p", "HTTPS://X/",
                "memory://m/", "simplecache::s3://bucket/key.jpg", "abfs://c/p/"):
        assert fetch.is_remote(url), url
    for path in ("photos/a.jpg", "/abs/a.jpg", "file:///tmp/a.jpg", "C:\\photos\\a.jpg", "./x://y",
                 "local://x", "", "weird scheme://x"):
        assert not fetch.is_remote(path), path
    assert not fetch.is_remote(Path("http://x"))  # a Path is a local path
    assert sources.is_manifest("list.csv") and sources.is_manifest("https://x/list.CSV?sig=1")
    assert not sources.is_manifest("photos/") and not sources.is_manifest("photos/a.jpg")


def test_file_urls_are_refused():
    with pytest.raises(SourceError, match=r"file:// URLs are not supported.*\(/tmp/some folder\)"):
        list(sources.iter_remote_source("file:///tmp/some%20folder"))


def test_is_remote_imports_nothing():
    code = ("import sys; from imguard import fetch, sources; "
            "assert fetch.is_remote('https://x/a.jpg') and not fetch.is_remote('a.jpg'); "
            "fetch.fetch_remote(['a.jpg', 'b/c.png']); "
            "assert not {'fsspec', 'requests', 'aiohttp'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(DependencyError, match=r"imguard\[remote\]"):
        list(sources.iter_remote_source("s3://bucket/prefix/"))
    monkeypatch.setitem(sys.modules, "requests", None)
    with pytest.raises(DependencyError, match=r"pip install 'imguard\[remote\]'"):
        fetch.fetch_many(["https://127.0.0.1:9/a.jpg"], cache=False)


# -- folder URLs -----------------------------------------------------------------------------


def test_folder_url_expands_to_image_urls(server, counts):
    urls = list(sources.iter_remote_source(server))
    assert urls == [
        server + "astronaut.jpg",
        server + "camera.png",
        server + "same%20content.jpg",
        server + "big/noise.png",
        server + "sub/astronaut_small.jpg",
        server + "sub/deeper/chelsea_copy.png",
    ]
    assert not any(path.startswith("/.private") for path in counts)  # hidden folders not even listed
    # A sub-folder, with or without the trailing slash.
    expected = [server + "sub/astronaut_small.jpg", server + "sub/deeper/chelsea_copy.png"]
    assert list(sources.iter_remote_source(server + "sub/")) == expected
    assert list(sources.iter_remote_source(server + "sub")) == expected
    # max_depth stops the walk.
    assert list(sources.iter_remote_source(server + "sub/", max_depth=0)) == expected[:1]


def test_single_image_url_yields_itself_without_a_request(server, counts):
    url = server + "sub/astronaut_small.jpg?width=800"
    assert list(sources.iter_remote_source(url)) == [url]
    assert sum(counts.values()) == 0


def test_url_without_suffix_that_is_not_a_listing_is_one_image(server):
    url = server + "blob/camera"  # served as image/png
    assert list(sources.iter_remote_source(url)) == [url]
    assert isinstance(fetch.fetch_many([url], cache=False)[url], fetch.Download)


def test_unreachable_folder_url_is_a_source_error(server):
    missing = server + "no-such-folder/"
    with pytest.raises(SourceError, match=re.escape(missing) + ".*not found"):
        list(sources.iter_remote_source(missing))
    refused = f"http://127.0.0.1:{_closed_port()}/photos/"
    with pytest.raises(SourceError, match=re.escape(refused) + ": cannot read"):
        list(sources.iter_remote_source(refused))


# -- manifests -------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read(manifest, **options) -> tuple[list[str], list[tuple[str, str]]]:
    """(locations, per-row errors) of a manifest."""
    errors: list[tuple[str, str]] = []
    records = sources.read_manifest(str(manifest), on_error=lambda where, why: errors.append((where, why)), **options)
    return [r.location for r in records], errors


def test_manifest_of_urls(server, tmp_path, images):
    local = images["site"] / "camera.png"  # outside the manifest's folder: read only where allowed
    manifest = _write_csv(tmp_path / "competitors.csv", ["title", "URL"], [
        ["astro", server + "astronaut.jpg"],
        ["", ""],  # a blank line is skipped
        ["small", server + "sub/astronaut_small.jpg"],
        ["local file", str(local)],
    ])
    urls = [server + "astronaut.jpg", server + "sub/astronaut_small.jpg"]
    assert _read(manifest, allowed_roots=[images["site"]]) == (urls + [str(local)], [])
    located, errors = _read(manifest)
    assert located == urls
    assert errors == [(f"{manifest}:5", f"manifest row: {local}: leads outside the manifest's folder "
                                        "(allow its folder explicitly to read it)")]


def test_manifest_path_column_relative_to_the_manifest(tmp_path, images):
    manifest = _write_csv(images["site"] / "list.csv", ["path", "sku"], [["camera.png", "1"], ["sub/astronaut_small.jpg", "2"]])
    try:
        records = sources.read_manifest(str(manifest))
        assert [r.location for r in records] == [
            os.path.join(images["site"], "camera.png"), os.path.join(images["site"], "sub/astronaut_small.jpg")]
        assert [r.metadata for r in records] == [{"sku": "1"}, {"sku": "2"}]
    finally:
        manifest.unlink()


def test_remote_manifest_with_relative_entries(server, images):
    manifest = _write_csv(images["site"] / "sub" / "list.csv", ["url"], [["astronaut_small.jpg"], ["../camera.png"],
                                                                         ["https://cdn.example/x.jpg"]])
    try:
        assert _read(server + "sub/list.csv") == ([
            server + "sub/astronaut_small.jpg", server + "camera.png", "https://cdn.example/x.jpg"], [])
    finally:
        manifest.unlink()


@pytest.mark.parametrize("header, rows, message", [
    (["url", "sku"], [["http://h/a.jpg", "1"], ["http://h/b.jpg", "2"], ["  ", "3"]], r":4: manifest row: no url$"),
    (["url", "title"], [["http://h/a.jpg", "x"], ["", "no url on this row"]], r":3: manifest row: no url$"),
    (["url"], [["http://h/a.jpg"], ["http://h/a.jpg"]], r":3: manifest row: http://h/a.jpg: the same image as line 2"),
    (["path"], [["missing.jpg"]], r":2: manifest row: missing.jpg: no such file$"),
    (["url"], [["file:///tmp/a.jpg"]], r":2: .*file:// URLs are not supported"),
    (["url"], [["http:///a.jpg"]], r":2: .*without a host"),
    (["url"], [["nosuch://h/a.jpg"]], r":2: .*not a supported URL \(http, https, s3 or gs\)"),
    (["url"], [["ftp://h/a.jpg"]], r":2: .*not a supported URL"),
    (["path"], [["../outside.jpg"]], r":2: .*leads outside the manifest's folder"),
    (["path"], [["/etc/passwd"]], r":2: .*/etc/passwd: leads outside the manifest's folder"),
    (["path"], [["~/photo.jpg"]], r":2: .*'~' is not expanded"),
])
def test_a_bad_manifest_row_is_its_own_error(tmp_path, header, rows, message):
    """One error naming the row; every other row is read (a good row follows the bad ones)."""
    (tmp_path / "outside.jpg").write_bytes(b"x")
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(b"x")
    manifest = _write_csv(folder / "bad.csv", header, [*rows, ["ok.jpg"] + [""] * (len(header) - 1)])
    located, errors = _read(manifest)
    assert len(errors) == 1 and errors[0][0].startswith(f"{manifest}:")
    assert re.search(message, ": ".join(errors[0])[len(str(manifest)):]), errors
    assert len(located) == len(rows) and located[-1] == str(folder / "ok.jpg")


def test_a_symlink_leading_outside_is_refused(tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "link.jpg").symlink_to(outside)
    manifest = _write_csv(folder / "list.csv", ["path"], [["link.jpg"]])
    assert _read(manifest)[1] == [(f"{manifest}:2", "manifest row: link.jpg: leads outside the manifest's folder "
                                                    "(allow its folder explicitly to read it)")]
    assert _read(manifest, allowed_roots=[tmp_path]) == ([str(folder / "link.jpg")], [])


def test_a_manifest_without_a_location_column_is_refused(tmp_path):
    manifest = _write_csv(tmp_path / "bad.csv", ["title", "sku"], [["a", "1"]])
    with pytest.raises(ManifestError, match=r"bad\.csv: no 'url' or 'path' column \(columns: title, sku\)"):
        sources.read_manifest(str(manifest))


def test_unreadable_manifest(server, tmp_path):
    with pytest.raises(ManifestError, match=r"nope\.csv: cannot read manifest"):
        sources.read_manifest(str(tmp_path / "nope.csv"))
    with pytest.raises(ManifestError, match=r"nope\.csv: cannot read manifest \(not found \(HTTP 404\)\)"):
        sources.read_manifest(server + "nope.csv")


# -- downloads -------------------------------------------------------------------------------


def test_fetch_many_downloads_and_caches_by_content(server, images, counts, cache):
    site = images["site"]
    names = ["astronaut.jpg", "same%20content.jpg", "sub/astronaut_small.jpg", "camera.png"]
    urls = [server + n for n in names] + [server + "missing.jpg", server + "astronaut.jpg"]  # + a 404, a duplicate
    result = fetch.fetch_many(urls, workers=4)
    assert set(result) == set(urls)
    for name in names:
        assert result[server + name].data == (site / name.replace("%20", " ")).read_bytes()
    assert isinstance(result[server + "missing.jpg"], ImageError)  # one bad URL stops nothing
    assert counts["/astronaut.jpg"] == 1  # the duplicate was fetched once

    # Content-addressed: the two URLs with identical bytes share one file.
    objects = sorted(p.name for p in (cache / "objects").rglob("*") if p.is_file())
    distinct = {hashlib.sha256((site / n.replace("%20", " ")).read_bytes()).hexdigest() for n in names}
    assert objects == sorted(distinct) and len(objects) == 3
    assert (cache / "index.sqlite").is_file()

    # A second run sends no request for what it has (the 404 is asked again: errors are not cached).
    before = sum(counts.values())
    again = fetch.fetch_many(urls)
    assert {u: again[u] for u in urls if not isinstance(again[u], ImageError)} == \
           {u: result[u] for u in urls if not isinstance(result[u], ImageError)}
    assert sum(counts.values()) - before == 1 and counts["/missing.jpg"] == 2

    # A damaged cache file is noticed (sha256 checked) and downloaded again.
    victim = cache / "objects" / objects[0][:2] / objects[0]
    victim.write_bytes(b"garbage")
    before = sum(counts.values())
    healed = fetch.fetch_many(urls[:4])
    assert all(isinstance(healed[u], fetch.Download) for u in urls[:4])
    assert sum(counts.values()) - before >= 1
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == objects[0]

    # cache=False always downloads and writes nothing.
    before = sum(counts.values())
    fetch.fetch_many(urls[:2], cache=False, cache_dir=str(cache / "unused"))
    assert sum(counts.values()) - before == 2 and not (cache / "unused").exists()


def test_fetch_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGUARD_CACHE", str(tmp_path / "c"))
    assert fetch.default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("IMGUARD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch.default_cache_dir() == os.path.join(str(tmp_path), ".cache", "imguard")


def test_unwritable_cache_warns_and_still_downloads(server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="download cache"):
        result = fetch.fetch_many([server + "camera.png"], cache_dir=str(blocker / "cache"))
    assert isinstance(result[server + "camera.png"], fetch.Download)


def test_size_limit(server, images, counts, cache):
    size = (images["site"] / "big" / "noise.png").stat().st_size
    assert size > 1_000_000
    url = server + "big/noise.png"
    error = fetch.fetch_many([url], max_bytes=100_000, retries=3)[url]
    assert isinstance(error, ImageError) and error.path == url
    assert f"{size} bytes" in error.reason and "max_bytes" in error.reason and "limit of 100000" in error.reason
    # Without a Content-Length the body is read up to the limit, then the download is aborted.
    url = server + "nolength/big/noise.png"
    error = fetch.fetch_many([url], max_bytes=100_000, retries=3)[url]
    assert isinstance(error, ImageError)
    assert "download aborted" in error.reason and "max_bytes" in error.reason
    assert counts["/big/noise.png"] == 1 and counts["/nolength/big/noise.png"] == 1  # not retried
    assert not [p for p in (cache / "objects").rglob("*") if p.is_file()]  # nothing kept
    # Under the limit it is fine.
    assert isinstance(fetch.fetch_many([url], max_bytes=size)[url], fetch.Download)


def test_timeout(server, counts, cache):
    url = server + "slow/camera.png"  # the server sleeps 1.5 s before answering
    results = fetch.fetch_many([url, server + "camera.png"], timeout=0.3, retries=1, backoff=0.05)
    assert isinstance(results[url], ImageError)
    assert "timed out after 0.3 s" in results[url].reason and "2 attempts" in results[url].reason
    assert counts["/slow/camera.png"] == 2  # a timeout is worth another try
    assert isinstance(results[server + "camera.png"], fetch.Download)


def test_404_is_not_retried(server, counts, cache):
    url = server + "no/such/image.jpg"
    error = fetch.fetch_many([url], retries=3, backoff=0.01)[url]
    assert isinstance(error, ImageError) and error.reason == "not found (HTTP 404)"
    assert counts["/no/such/image.jpg"] == 1


def test_500_is_retried_with_backoff(server, counts, cache):
    url = server + "error500/camera.png"
    start = time.monotonic()
    error = fetch.fetch_many([url], retries=2, backoff=0.1)[url]
    assert isinstance(error, ImageError)
    assert error.reason == "HTTP 500 Internal Server Error (gave up after 3 attempts)"
    assert counts["/error500/camera.png"] == 3
    assert time.monotonic() - start >= 0.1 + 0.2  # backoff doubles
    # A server that recovers: two 503s, then the image.
    url = server + "flaky/2/camera.png"
    assert isinstance(fetch.fetch_many([url], retries=2, backoff=0.01)[url], fetch.Download)
    assert counts["/flaky/2/camera.png"] == 3


def test_connection_refused_is_a_per_url_error(server, cache):
    bad = f"http://127.0.0.1:{_closed_port()}/a.jpg"
    results = fetch.fetch_many([bad, server + "camera.png"], retries=1, backoff=0.01)
    assert isinstance(results[bad], ImageError) and "connection failed" in results[bad].reason
    assert isinstance(results[server + "camera.png"], fetch.Download)
    with pytest.raises(ImageError, match="connection failed"):
        fetch.fetch_one(bad, retries=0)


# -- other fsspec protocols (object-store code path, in memory) ------------------------------


def test_object_store_listing_and_download(images):
    import fsspec

    fs = fsspec.filesystem("memory")
    site = images["site"]
    blobs = {
        "/shop-bucket/photos/astronaut.jpg": (site / "astronaut.jpg").read_bytes(),
        "/shop-bucket/photos/a/b/chelsea.png": (site / "sub/deeper/chelsea_copy.png").read_bytes(),
        "/shop-bucket/photos/.cache/x.jpg": b"hidden",
        "/shop-bucket/photos/readme.md": b"text",
        "/shop-bucket/other/unrelated.jpg": b"elsewhere",
    }
    try:
        for path, data in blobs.items():
            fs.pipe(path, data)
        expected = ["memory:///shop-bucket/photos/a/b/chelsea.png", "memory:///shop-bucket/photos/astronaut.jpg"]
        assert list(sources.iter_remote_source("memory://shop-bucket/photos/")) == expected
        with pytest.raises(SourceError, match="memory://shop-bucket/nothing/: cannot read"):
            list(sources.iter_remote_source("memory://shop-bucket/nothing/"))
        results = fetch.fetch_many(expected + ["memory://shop-bucket/gone.jpg"], cache=False)
        assert results[expected[1]].data == blobs["/shop-bucket/photos/astronaut.jpg"]
        assert results["memory://shop-bucket/gone.jpg"].reason == "not found"
        big = fetch.fetch_many(expected[:1], cache=False, max_bytes=1000)[expected[0]]
        assert isinstance(big, ImageError) and "max_bytes" in big.reason
    finally:
        fs.rm("/shop-bucket", recursive=True)


# -- the whole scan --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(images, tmp_path_factory):
    with imguard.Catalog.open(tmp_path_factory.mktemp("guard")) as catalog:
        result = catalog.add(str(images["catalog"]), jobs=1)
        assert result.added == 3 and not result.errors
        yield catalog


EXPECTED = {  # competitor file -> catalog file; camera.png and noise.png match nothing
    "astronaut.jpg": "astronaut.jpg",
    "same%20content.jpg": "astronaut.jpg",
    "astronaut_small.jpg": "astronaut.jpg",
    "chelsea_copy.png": "chelsea.jpg",
}


def _found(matches) -> dict[str, str]:
    best: dict[str, str] = {}
    for m in matches:
        best.setdefault(m.query.rsplit("/", 1)[-1], os.path.basename(m.reference))
    return best


def test_scan_of_a_folder_url_finds_the_copies(server, catalog, counts, cache):
    run = catalog.scan([server], jobs=1)
    matches = list(run)
    assert _found(matches) == EXPECTED
    assert run.stats["queries"] == 6 and not run.errors
    assert all(m.query.startswith(server) for m in matches)
    exact = [m for m in matches if m.query == server + "astronaut.jpg"]
    assert exact[0].matched_by == "sha256" and exact[0].score == 1.0
    # The second scan reads everything from the download cache.
    image_requests = sum(n for path, n in counts.items() if not path.endswith("/"))
    assert _found(catalog.scan([server], jobs=1)) == EXPECTED
    assert sum(n for path, n in counts.items() if not path.endswith("/")) == image_requests


def test_scan_of_a_manifest_reports_bad_urls_as_errors(server, catalog, tmp_path, cache):
    manifest = _write_csv(tmp_path / "urls.csv", ["url"], [
        [server + "sub/astronaut_small.jpg"], [server + "gone.jpg"], [server + "camera.png"],
        [server + "notes.txt"]])
    run = catalog.scan(str(manifest), jobs=1)
    assert _found(run) == {"astronaut_small.jpg": "astronaut.jpg"}
    assert {(e.path, e.error) for e in run.errors} == {
        (server + "gone.jpg", "not found (HTTP 404)"),
        (server + "notes.txt", "not an image, or a format imguard does not read"),
    }


def test_scan_mixes_local_and_remote_sources(server, catalog, images, cache):
    local = str(images["site"] / "sub" / "deeper")
    found = _found(catalog.scan([local, server + "sub/astronaut_small.jpg"], jobs=2))
    assert found == {"chelsea_copy.png": "chelsea.jpg", "astronaut_small.jpg": "astronaut.jpg"}


def test_catalog_add_keeps_refusing_urls(catalog, server):
    with pytest.raises(SourceError):
        catalog.add(server)
