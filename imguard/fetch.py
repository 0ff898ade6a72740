"""Remote I/O: what counts as a URL, and downloads with limits, retries and a cache.

Optional extra ``imguard[remote]`` (fsspec, aiohttp, requests). Nothing here imports them until a
remote URL is actually read, so local scans never pay for them.

Downloads (`fetch_many`) run in a thread pool with a time limit per request, a size limit, retries
with exponential backoff on connection errors, timeouts and 5xx/429 answers (never on 404 or other
4xx), and a content-addressed cache: ``<cache_dir>/objects/ab/<sha256>`` holds each distinct
content once, ``<cache_dir>/index.sqlite`` maps URL → sha256, the time it was downloaded and its
validator (ETag or Last-Modified). URLs are assumed immutable (as product-image URLs on CDNs are):
a cached URL is not downloaded again, unless asked to `revalidate` (a nightly run wants to know
whether the image changed or is gone): then a conditional request (If-None-Match /
If-Modified-Since; for object stores, the object's ETag) downloads only what changed.
Delete the cache folder, or pass ``cache=False``, to force fresh downloads. Errors are per URL
(`ImageError`): one bad URL never stops the others.

``file://`` URLs are not remote (imguard refuses them where a source is given: see `sources`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import DependencyError, ImageError, ImguardError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "REMOTE_PROTOCOLS",
    "Download",
    "default_cache_dir",
    "fetch_many",
    "fetch_one",
    "fetch_remote",
    "is_remote",
]

# Bytes of one image read or downloaded at most (`Limits.file_bytes`): a marketplace photo is a
# few MB; more is not a product photo, and reading it whole would cost memory.
DEFAULT_MAX_BYTES = 50 * 2**20
_BLOCK = 64 * 1024
INSTALL_HINT = "install the extra: pip install 'imguard[remote]' (fsspec, aiohttp, requests)"

# fsspec protocols that name storage somewhere else. Local ("file", "local") and wrapping
# protocols ("simplecache", "zip", ...) are not in the list; a chained URL
# ("simplecache::s3://bucket/key") counts as remote when its innermost target is.
REMOTE_PROTOCOLS = frozenset({
    "http", "https", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "ftp", "sftp", "ssh",
    "hdfs", "webhdfs", "oss", "oci", "ocilake", "dbfs", "smb", "webdav", "hf", "github", "gdrive",
    "dropbox", "box", "lakefs", "tos", "tosfs", "memory",
})
_NOT_REMOTE = frozenset({"file", "local", "asynclocal"})
_WRAPPERS = frozenset({"simplecache", "filecache", "blockcache", "cached", "dir", "zip", "tar",
                       "libarchive", "reference", "generic", "async_wrapper", "asyncwrapper"})


# -- what a URL is ---------------------------------------------------------------------------


def protocol_of(source: str) -> str | None:
    """The protocol of the innermost target of a (possibly chained) URL; None for a plain path."""
    target = source.rsplit("::", 1)[-1]
    scheme, sep, _ = target.partition("://")
    if not sep or not scheme or not all(c.isalnum() or c in "+-._" for c in scheme):
        return None
    return scheme.lower()


def is_remote(source: str | os.PathLike[str]) -> bool:
    """True for a URL that imguard reads through fsspec: http(s)://, s3://, gs:// and the other
    fsspec protocols. False for local paths and for ``file://`` URLs (refused, see the module
    docstring). Pure string check: imports nothing."""
    if not isinstance(source, str):
        return False
    protocol = protocol_of(source)
    if protocol is None or protocol in _NOT_REMOTE or protocol in _WRAPPERS:
        return False
    if protocol in REMOTE_PROTOCOLS:
        return True
    # A protocol registered with an installed fsspec (a third-party implementation).
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return False
    return protocol in known_implementations or protocol in registry


def is_http(url: str) -> bool:
    return "::" not in url and protocol_of(url) in ("http", "https")


def fsspec_module() -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise DependencyError(f"remote sources need fsspec: {INSTALL_HINT}") from exc
    return fsspec


# -- downloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """The bytes of one URL and when they were downloaded (seconds since the epoch): for a URL
    served from the cache, the time of the download that filled it, not of this call."""

    data: bytes = field(repr=False)
    fetched_at: float
    validator: str | None = None  # "etag:…", "modified:…" (http) or the object store's ETag


@dataclass(frozen=True)
class _Body:
    """A download's outcome: the bytes (None when the server said they did not change since
    `validator`), and the validator of what was downloaded."""

    data: bytes | None
    validator: str | None


def default_cache_dir() -> str:
    """``$IMGUARD_CACHE``, else ``~/.cache/imguard``."""
    return os.environ.get("IMGUARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imguard")


class _Transient(Exception):
    """A failure worth another attempt: connection error, timeout, 5xx or 429."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cache:
    """``objects/ab/<sha256>`` files, one per distinct content, and ``index.sqlite``: url → sha256.

    Safe for several threads of one process (the index is touched by the calling thread only)
    and for several processes sharing the folder (object files are written atomically under their
    final name; the index is SQLite with a busy timeout).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(os.path.join(folder, "objects"), exist_ok=True)
        self.db = sqlite3.connect(os.path.join(folder, "index.sqlite"), timeout=30)
        with contextlib.suppress(sqlite3.DatabaseError):
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                        "nbytes INTEGER NOT NULL, fetched REAL NOT NULL, validator TEXT)")
        if "validator" not in {row[1] for row in self.db.execute("PRAGMA table_info(urls)")}:
            self.db.execute("ALTER TABLE urls ADD COLUMN validator TEXT")  # a cache of imguard 0.1
        self.db.commit()

    def lookup(self, urls: list[str]) -> dict[str, tuple[str, int, float, str | None]]:
        """url → (sha256, size, download time, validator) of the cached ones."""
        out: dict[str, tuple[str, int, float, str | None]] = {}
        for start in range(0, len(urls), 500):
            batch = urls[start:start + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT url, sha256, nbytes, fetched, validator FROM urls WHERE url IN ({marks})"
            for url, sha, nbytes, fetched, validator in self.db.execute(query, batch):
                out[url] = (sha, nbytes, fetched, validator)
        return out

    def object_path(self, sha: str) -> str:
        return os.path.join(self.folder, "objects", sha[:2], sha)

    def read(self, sha: str, nbytes: int) -> bytes | None:
        """The cached content, or None when it is missing or damaged."""
        try:
            with open(self.object_path(sha), "rb") as handle:
                data = handle.read(nbytes + 1)
        except OSError:
            return None
        if len(data) != nbytes or hashlib.sha256(data).hexdigest() != sha:
            return None
        return data

    def write(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if os.path.exists(path) and os.path.getsize(path) == len(data):
            return sha  # identical content is stored once
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return sha

    def record(self, rows: list[tuple[str, str, int, float, str | None]]) -> None:
        """Note (url, sha256, size, download time, validator) rows."""
        self.db.executemany("INSERT OR REPLACE INTO urls (url, sha256, nbytes, fetched, validator)"
                            " VALUES (?, ?, ?, ?, ?)", rows)
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def fetch_many(
    urls: Iterable[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 2,
    workers: int = 8,
    cache: bool = True,
    backoff: float = 0.5,
    storage_options: dict[str, Any] | None = None,
    revalidate: bool = False,
) -> dict[str, Download | ImageError]:
    """Download `urls` concurrently; return ``{url: Download}`` or ``{url: ImageError(url, reason)}``.

    * `timeout`: seconds per request (connect, each read, and the whole body; for fsspec
      protocols other than http(s) the body time is checked between 64 KiB blocks).
    * `max_bytes`: a larger body is not read past the limit (a Content-Length over it is refused
      before the body is read); the error says so.
    * `retries`: further attempts after a connection error, a timeout, or an HTTP 5xx/429 answer,
      waiting `backoff` × 2^attempt seconds in between. 404 and other 4xx answers are not retried.
    * cache (see the module docstring): in `cache_dir` (default `default_cache_dir()`); a URL in
      the index whose content file is intact is not downloaded again. A cache that cannot be
      written is skipped with a warning; downloads still work.
    * `storage_options`: passed to fsspec for non-http protocols (credentials, ``anon=True``...).
    * `revalidate`: ask again about cached URLs, conditionally (see the module docstring): a URL
      that is gone (404) is then an error, whatever the cache holds.

    Duplicates in `urls` are fetched once. Never raises for a single URL's failure.
    """
    unique = list(dict.fromkeys(os.fspath(u) for u in urls))
    if not unique:
        return {}
    if max_bytes <= 0 or timeout <= 0 or retries < 0 or workers < 1:
        raise ValueError("fetch_many needs max_bytes > 0, timeout > 0, retries >= 0, workers >= 1")
    store: _Cache | None = None
    if cache:
        folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            store = _Cache(folder)
        except (OSError, sqlite3.Error) as exc:
            warnings.warn(f"imguard: download cache {folder} unusable ({exc}); downloading without it",
                          RuntimeWarning, stacklevel=2)
    results: dict[str, Download | ImageError] = {}
    try:
        known: dict[str, tuple[str, int, float, str | None]] = {}
        if store is not None:
            try:
                known = store.lookup(unique)
            except sqlite3.Error as exc:  # a damaged index: download, and try to record again
                warnings.warn(f"imguard: cannot read the download cache index ({exc})", RuntimeWarning, stacklevel=2)
        todo = unique if revalidate else [u for u in unique if u not in known]
        fetcher = _Fetcher(timeout=timeout, max_bytes=max_bytes, retries=retries, backoff=backoff,
                           storage_options=storage_options, http=any(is_http(u) for u in todo),
                           other=any(not is_http(u) for u in todo))
        try:
            def one(url: str) -> tuple[str, Download | ImageError, str | None]:
                cached = None
                if store is not None and url in known:
                    sha, nbytes, fetched, validator = known[url]
                    data = store.read(sha, nbytes)
                    if data is not None:
                        cached = Download(data, fetched, validator)
                        if not revalidate:
                            return url, cached, None
                outcome = fetcher.fetch(url, cached.validator if cached is not None else None)
                if isinstance(outcome, ImageError):
                    return url, outcome, None
                if outcome.data is None and cached is not None:  # not modified: still there, as cached
                    return url, Download(cached.data, time.time(), cached.validator), known[url][0]
                body = outcome.data or b""
                sha = None
                if store is not None:
                    try:
                        sha = store.write(body)
                    except OSError:
                        sha = None  # a full disk costs the cache, not the download
                return url, Download(body, time.time(), outcome.validator), sha

            new_rows: list[tuple[str, str, int, float, str | None]] = []
            with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="imguard-fetch") as pool:
                for url, outcome, sha in pool.map(one, unique):
                    results[url] = outcome
                    if sha is not None and isinstance(outcome, Download):
                        new_rows.append((url, sha, len(outcome.data), outcome.fetched_at, outcome.validator))
            if store is not None and new_rows:
                try:
                    store.record(new_rows)
                except sqlite3.Error as exc:
                    warnings.warn(f"imguard: cannot update the download cache index ({exc})", RuntimeWarning, stacklevel=2)
        finally:
            fetcher.close()
    finally:
        if store is not None:
            store.close()
    return results


def fetch_one(url: str, **options: Any) -> Download:
    """Download one URL (same options as `fetch_many`); raises ImageError."""
    outcome = fetch_many([url], **options)[url]
    if isinstance(outcome, ImageError):
        raise outcome
    return outcome


def fetch_remote(paths: Iterable[str], **options: Any) -> dict[str, Download | ImageError]:
    """`fetch_many` of the remote URLs among `paths` (local paths are left out); ``{}`` without
    importing anything when there is none. The hook a scan chunk calls before decoding."""
    urls = [p for p in paths if is_remote(p)]
    return fetch_many(urls, **options) if urls else {}


class _Fetcher:
    """One download with retries; http(s) through requests (a session per thread), anything
    else through fsspec."""

    def __init__(self, *, timeout: float, max_bytes: int, retries: int, backoff: float,
                 storage_options: dict[str, Any] | None, http: bool, other: bool) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retries = retries
        self.backoff = backoff
        self.storage_options = storage_options or {}
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._requests = _requests() if http else None
        if other:
            fsspec_module()  # a missing extra is one error for the whole call, not one per URL

    def close(self) -> None:
        for session in self._sessions:
            with contextlib.suppress(Exception):
                session.close()

    def fetch(self, url: str, validator: str | None = None) -> _Body | ImageError:
        """Download `url`; with the `validator` of a cached copy, only if it changed since."""
        attempts = self.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return self._http(url, validator) if is_http(url) else self._fsspec(url, validator)
            except _Transient as exc:
                last = exc.reason
                if attempt + 1 < attempts:
                    time.sleep(self.backoff * 2**attempt)
            except ImageError as exc:
                return exc
            except ImguardError as exc:  # DependencyError, SourceError: say it for this URL
                return ImageError(url, str(exc))
            except Exception as exc:  # a bug or an odd library error must not stop other URLs
                return ImageError(url, f"download failed ({type(exc).__name__}: {exc})")
        tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        return ImageError(url, last + tries)

    # -- http(s) --

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._requests.Session()
            session.headers["User-Agent"] = "imguard"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _http(self, url: str, validator: str | None) -> _Body:
        requests = self._requests
        if requests is None:  # pragma: no cover - set when any http URL needs downloading
            requests = self._requests = _requests()
        start = time.monotonic()
        headers = {}
        if validator and validator.startswith("etag:"):
            headers["If-None-Match"] = validator[5:]
        elif validator and validator.startswith("modified:"):
            headers["If-Modified-Since"] = validator[9:]
        try:
            with self._session().get(url, stream=True, timeout=(self.timeout, self.timeout),
                                     headers=headers) as response:
                status = response.status_code
                if status == 304 and headers:
                    return _Body(None, validator)
                if status >= 500 or status == 429:
                    raise _Transient(f"HTTP {status} {response.reason or ''}".rstrip())
                if status == 404:
                    raise ImageError(url, "not found (HTTP 404)")
                if status >= 400:
                    raise ImageError(url, f"HTTP {status} {response.reason or ''}".rstrip())
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > self.max_bytes:
                    raise ImageError(url, f"too large: {int(length)} bytes, over the limit of "
                                          f"{self.max_bytes} bytes (max_bytes); not downloaded")
                data = self._read_limited(url, response.iter_content(_BLOCK), start)
                etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
                return _Body(data, f"etag:{etag}" if etag else f"modified:{modified}" if modified else None)
        except requests.Timeout:
            raise _Transient(f"timed out after {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            if "timed out" in str(exc).lower():
                raise _Transient(f"timed out after {self.timeout:g} s") from None
            raise _Transient(f"connection failed ({_short(exc)})") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient(f"connection broken ({_short(exc)})") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ImageError(url, f"invalid URL ({_short(exc)})") from None
        except requests.exceptions.TooManyRedirects:
            raise ImageError(url, "too many redirects") from None

    def _read_limited(self, url: str, blocks: Iterable[bytes], start: float) -> bytes:
        """Read a body block by block, stopping at the size limit and at the time limit."""
        body = bytearray()
        for block in blocks:
            body += block
            if len(body) > self.max_bytes:
                raise ImageError(url, f"too large: over the limit of {self.max_bytes} bytes "
                                      f"(max_bytes); download aborted")
            if time.monotonic() - start > self.timeout:
                raise _Transient(f"timed out after {self.timeout:g} s")
        return bytes(body)

    # -- other fsspec protocols --

    def _fsspec(self, url: str, validator: str | None) -> _Body:
        fsspec = fsspec_module()
        start = time.monotonic()
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
            tag = _object_tag(fs.info(path))
            if validator and tag == validator:
                return _Body(None, validator)
            with fs.open(path, "rb") as handle:
                return _Body(self._read_limited(url, iter(lambda: handle.read(_BLOCK), b""), start), tag)
        except (ImageError, _Transient):
            raise
        except FileNotFoundError:
            raise ImageError(url, "not found") from None
        except IsADirectoryError:
            raise ImageError(url, "a folder, not an image") from None
        except PermissionError as exc:
            raise ImageError(url, f"permission denied ({_short(exc)})") from None
        except ImportError as exc:  # s3fs, gcsfs... missing
            raise ImageError(url, f"{exc}") from None
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise _Transient(f"{type(exc).__name__}: {_short(exc)}") from None


def _object_tag(info: dict[str, Any]) -> str | None:
    """What says an object store's object changed: its ETag (s3), MD5 (gs), else size and
    modification time."""
    for key in ("ETag", "etag", "md5Hash", "md5"):
        if info.get(key):
            return f"{key}:{info[key]}"
    if info.get("size") is not None and (info.get("mtime") or info.get("LastModified") or info.get("updated")):
        return f"size:{info['size']}:{info.get('mtime') or info.get('LastModified') or info.get('updated')}"
    return None


def _requests() -> Any:
    try:
        import requests
    except ImportError as exc:
        raise DependencyError(f"http(s) downloads need requests: {INSTALL_HINT}") from exc
    return requests


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
