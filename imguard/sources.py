"""Remote competitor sources: http(s)://, s3://, gs:// and the other fsspec protocols.

Optional extra ``imguard[remote]`` (fsspec, aiohttp, requests). Nothing here imports fsspec or
requests until a remote source is actually used, so local scans never pay for them.

What a source may be (see `iter_remote_source`):

* a folder URL -- ``s3://bucket/prefix/``, ``gs://bucket/prefix/``, or an http(s) page that
  lists links (an HTML directory index, as served by ``python -m http.server``, nginx
  ``autoindex`` or Apache): expands to the image URLs under it, recursively;
* a CSV manifest (a URL or a local path ending in ``.csv``) with a ``url`` (or ``path``) column,
  one image per row;
* a single image URL: yields itself.

``file://`` URLs are refused (`SourceError` with the local path to give instead): local files
take imguard's own walker, which keeps paths as the user wrote them, skips symlink loops and is
what the catalog's change detection relies on. Giving the same folder two ways would give two
names for each file.

Downloads (`fetch_many`) run in a thread pool with a time limit per request, a size limit, retries
with exponential backoff on connection errors, timeouts and 5xx/429 answers (never on 404 or other
4xx), and a content-addressed cache: ``<cache_dir>/objects/ab/<sha256>`` holds each distinct
content once, ``<cache_dir>/index.sqlite`` maps URL → sha256. URLs are assumed immutable (as
product-image URLs on CDNs are): a cached URL is not downloaded again. Delete the cache folder, or
pass ``cache=False``, to force fresh downloads. Errors are per URL (`ImageError`): one bad URL
never stops the others.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from .errors import DependencyError, ImageError, ImguardError, ManifestError, SourceError
from .load import is_image_name

__all__ = [
    "DEFAULT_MAX_BYTES",
    "REMOTE_PROTOCOLS",
    "default_cache_dir",
    "fetch_many",
    "fetch_one",
    "fetch_remote",
    "handles",
    "is_remote",
    "iter_remote_source",
]

DEFAULT_MAX_BYTES = 50 * 2**20
_BLOCK = 64 * 1024
_INSTALL_HINT = "install the extra: pip install 'imguard[remote]' (fsspec, aiohttp, requests)"

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


# -- what a source is ------------------------------------------------------------------------


def _protocol(source: str) -> str | None:
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
    protocol = _protocol(source)
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


def handles(source: str | os.PathLike[str]) -> bool:
    """True when `source` is for `iter_remote_source` rather than the local walker: a remote URL,
    a CSV manifest (local or remote), or a ``file://`` URL (which it refuses with a clear error)."""
    source = os.fspath(source)
    return is_remote(source) or _protocol(source) == "file" or _is_manifest(source)


def _is_manifest(source: str) -> bool:
    path = urlparse(source).path if _protocol(source) else source
    return path.lower().endswith(".csv")


def _is_http(url: str) -> bool:
    return "::" not in url and _protocol(url) in ("http", "https")


def _name(url: str) -> str:
    """The last segment of a URL's path ('' for a folder URL); decoded for http(s), where the
    query string is not part of the name."""
    if _is_http(url):
        path = urlparse(url).path
        return "" if path.endswith("/") else unquote(path.rsplit("/", 1)[-1])
    path = url.split("://", 1)[-1]
    return "" if path.endswith("/") else path.rsplit("/", 1)[-1]


def _has_image_suffix(url: str) -> bool:
    name = _name(url)
    return bool(name) and is_image_name(name)


# -- listing ---------------------------------------------------------------------------------


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise DependencyError(f"remote sources need fsspec: {_INSTALL_HINT}") from exc
    return fsspec


def _filesystem(url: str, timeout: float, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fsspec = _fsspec()
    options = dict(storage_options or {})
    if _is_http(url):
        try:
            import aiohttp
        except ImportError as exc:
            raise DependencyError(f"http(s) folder listings need aiohttp: {_INSTALL_HINT}") from exc
        client_kwargs = dict(options.pop("client_kwargs", {}))
        client_kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=timeout))
        fs = fsspec.filesystem("http", client_kwargs=client_kwargs, skip_instance_cache=True,
                               use_listings_cache=False, **options)
        return fs, url
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:  # e.g. s3fs / gcsfs missing
        raise DependencyError(f"{url}: {exc}") from exc
    except ValueError as exc:  # unknown protocol
        raise SourceError(f"{url}: {exc}") from exc


def _unreachable(url: str, exc: BaseException) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"{url}: cannot read (not found)")
    return SourceError(f"{url}: cannot read ({type(exc).__name__}: {exc})")


def iter_remote_source(source: str | os.PathLike[str], *, timeout: float = 30,
                       storage_options: dict[str, Any] | None = None,
                       max_depth: int = 32) -> Iterator[str]:
    """Yield the image URLs (or, for a local manifest, paths) of one remote source.

    * ``*.csv`` (local path or URL): a manifest; see `read_source_manifest`.
    * A URL whose name has an image suffix: yields itself, without any request (a missing image
      is reported per file when it is fetched, like any other unreadable image).
    * Any other URL: a folder. On object stores (s3, gs, ...) every object under the prefix is
      listed at once (``find``); an http(s) folder is an HTML page whose links are followed down
      (links to deeper URLs only, at most `max_depth` levels). Only image suffixes are kept;
      hidden names (a segment starting with '.') are skipped, folders included. An http(s) URL
      that answers with something other than an HTML page is a single image (CDN URLs often
      have no suffix) and yields itself.

    Raises SourceError naming the URL when the folder (or manifest) cannot be read at all;
    DependencyError when the extra is not installed.
    """
    source = os.fspath(source)
    if _protocol(source) == "file":
        local = unquote(urlparse(source).path)
        raise SourceError(f"{source}: file:// URLs are not supported; give the local path ({local}) instead")
    if _is_manifest(source):
        yield from read_source_manifest(source, timeout=timeout, storage_options=storage_options)
        return
    if not is_remote(source):
        raise SourceError(f"{source}: not a remote URL (http://, https://, s3://, gs://, ...)")
    if _has_image_suffix(source):
        yield source
        return
    fs, root = _filesystem(source, timeout, storage_options)
    if _is_http(source):
        yield from _walk_http(fs, source, max_depth)
    else:
        yield from _find(fs, source, root)


def _walk_http(fs: Any, root: str, max_depth: int) -> Iterator[str]:
    """Depth-first over HTML link listings: a page's images in name order, then its sub-pages."""
    stack: list[tuple[str, int]] = [(root, 0)]
    seen: set[str] = set()
    while stack:
        url, depth = stack.pop()
        if url.rstrip("/") in seen:
            continue
        seen.add(url.rstrip("/"))
        try:
            entries = fs.ls(url, detail=True)
        except ImguardError:
            raise
        except Exception as exc:
            if url == root:
                raise _unreachable(root, exc) from exc
            continue  # a broken sub-page loses only its own images
        if url == root and not entries and not root.endswith("/"):
            yield root  # not an HTML page: a single image without a suffix
            return
        files: list[str] = []
        folders: list[str] = []
        for entry in sorted(entries, key=lambda e: e["name"]):
            name = entry["name"]
            parsed = urlparse(name)
            if parsed.path.endswith("/"):
                # a sub-page; links with a query string are the index page's sort links
                base = unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1])
                if base and not base.startswith(".") and not parsed.query and depth < max_depth:
                    folders.append(name)
            elif is_image_name(_name(name)):  # also skips hidden names
                files.append(name)
        yield from files
        stack.extend((f, depth + 1) for f in reversed(folders))


def _find(fs: Any, source: str, root: str) -> Iterator[str]:
    """Object stores: one recursive listing of the prefix."""
    try:
        if not fs.isdir(root):
            if fs.exists(root):
                yield source  # a single object, whatever its suffix (as for a local file)
                return
            raise FileNotFoundError(root)
        found = fs.find(root, withdirs=False, detail=False)
    except ImguardError:
        raise
    except Exception as exc:
        raise _unreachable(source, exc) from exc
    prefix = root.rstrip("/") + "/"
    protocol = source.split("://", 1)[0] if "::" not in source else None
    for path in sorted(found):
        relative = path[len(prefix):] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
        parts = relative.split("/")
        if any(p.startswith(".") for p in parts) or not is_image_name(parts[-1]):
            continue
        yield _unstrip(fs, path, protocol)


def _unstrip(fs: Any, path: str, protocol: str | None) -> str:
    if hasattr(fs, "unstrip_protocol"):
        url = fs.unstrip_protocol(path)
        if protocol and not url.startswith(protocol + "://"):  # gs:// listed as gcs://, s3a:// as s3://
            url = protocol + "://" + url.split("://", 1)[-1]
        return url
    return f"{protocol}://{path}" if protocol else path  # pragma: no cover - old fsspec


# -- manifests -------------------------------------------------------------------------------


def read_source_manifest(manifest: str | os.PathLike[str], *, timeout: float = 30,
                         storage_options: dict[str, Any] | None = None) -> list[str]:
    """Read a CSV manifest of competitor images: one image per row, in a ``url`` column (or, when
    there is none, a ``path`` column; a row whose url cell is empty falls back to its path cell).

    Entries are URLs, absolute local paths, or paths relative to the manifest (for a remote
    manifest, relative to its URL). The whole manifest is checked before anything is yielded:
    an empty row, a ``file://`` or unknown-protocol URL, a missing local file or a local folder
    raises ManifestError naming the manifest and the line. URLs are not requested here (a
    missing image URL is a per-file error of the scan, like an unreadable local image).
    """
    manifest = os.fspath(manifest)
    remote = is_remote(manifest)
    text = _read_manifest_text(manifest, remote, timeout, storage_options)
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip().lower(): c for c in (reader.fieldnames or []) if c}
        if "url" not in columns and "path" not in columns:
            raise ManifestError(f"{manifest}: no 'url' or 'path' column (columns: {', '.join(columns) or 'none'})")
        out: list[str] = []
        for line, row in enumerate(reader, start=2):
            url = (row.get(columns["url"]) or "").strip() if "url" in columns else ""
            path = (row.get(columns["path"]) or "").strip() if "path" in columns else ""
            entry = url or path
            if not entry:
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # a blank line
                raise ManifestError(f"{manifest}:{line}: empty {'url' if 'url' in columns else 'path'}")
            out.append(_manifest_entry(manifest, remote, line, entry))
        return out
    except csv.Error as exc:
        raise ManifestError(f"{manifest}: not a readable CSV ({exc})") from exc


def _read_manifest_text(manifest: str, remote: bool, timeout: float,
                        storage_options: dict[str, Any] | None) -> str:
    try:
        if remote:
            data = fetch_one(manifest, cache=False, timeout=timeout, storage_options=storage_options)
        else:
            with open(manifest, "rb") as handle:
                data = handle.read()
        return data.decode("utf-8-sig")
    except ImageError as exc:
        raise ManifestError(f"{manifest}: cannot read manifest ({exc.reason})") from exc
    except OSError as exc:
        raise ManifestError(f"{manifest}: cannot read manifest ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}: not a readable CSV ({exc})") from exc


def _manifest_entry(manifest: str, remote: bool, line: int, entry: str) -> str:
    protocol = _protocol(entry)
    if protocol is not None:
        if protocol == "file":
            raise ManifestError(f"{manifest}:{line}: {entry}: file:// URLs are not supported; give the local path")
        if not is_remote(entry):
            raise ManifestError(f"{manifest}:{line}: {entry}: not a supported URL")
        if _is_http(entry) and not urlparse(entry).netloc:
            raise ManifestError(f"{manifest}:{line}: {entry}: URL without a host")
        return entry
    if remote:
        if not _is_http(manifest):
            base = manifest.rsplit("/", 1)[0]
            return f"{base}/{entry.lstrip('/')}"
        return urljoin(manifest, entry)
    path = os.path.join(os.path.dirname(manifest), os.path.expanduser(entry))
    if not os.path.exists(path):
        raise ManifestError(f"{manifest}:{line}: {entry}: no such file")
    if os.path.isdir(path):
        raise ManifestError(f"{manifest}:{line}: {entry}: a folder, not an image file")
    return path


# -- downloads -------------------------------------------------------------------------------


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
                        "nbytes INTEGER NOT NULL, fetched REAL NOT NULL)")
        self.db.commit()

    def lookup(self, urls: list[str]) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for start in range(0, len(urls), 500):
            batch = urls[start:start + 500]
            marks = ",".join("?" * len(batch))
            for url, sha, nbytes in self.db.execute(f"SELECT url, sha256, nbytes FROM urls WHERE url IN ({marks})", batch):
                out[url] = (sha, nbytes)
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

    def record(self, rows: list[tuple[str, str, int]]) -> None:
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO urls (url, sha256, nbytes, fetched) VALUES (?, ?, ?, ?)",
                            [(url, sha, n, now) for url, sha, n in rows])
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
) -> dict[str, bytes | ImageError]:
    """Download `urls` concurrently; return ``{url: bytes}`` or ``{url: ImageError(url, reason)}``.

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
    results: dict[str, bytes | ImageError] = {}
    try:
        known: dict[str, tuple[str, int]] = {}
        if store is not None:
            try:
                known = store.lookup(unique)
            except sqlite3.Error as exc:  # a damaged index: download, and try to record again
                warnings.warn(f"imguard: cannot read the download cache index ({exc})", RuntimeWarning, stacklevel=2)
        todo = [u for u in unique if u not in known]
        fetcher = _Fetcher(timeout=timeout, max_bytes=max_bytes, retries=retries, backoff=backoff,
                           storage_options=storage_options, http=any(_is_http(u) for u in todo),
                           other=any(not _is_http(u) for u in todo))
        try:
            def one(url: str) -> tuple[str, bytes | ImageError, str | None]:
                if store is not None and url in known:
                    data = store.read(*known[url])
                    if data is not None:
                        return url, data, None
                outcome = fetcher.fetch(url)
                sha = None
                if store is not None and isinstance(outcome, bytes):
                    try:
                        sha = store.write(outcome)
                    except OSError:
                        sha = None  # a full disk costs the cache, not the download
                return url, outcome, sha

            new_rows: list[tuple[str, str, int]] = []
            with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="imguard-fetch") as pool:
                for url, outcome, sha in pool.map(one, unique):
                    results[url] = outcome
                    if sha is not None and isinstance(outcome, bytes):
                        new_rows.append((url, sha, len(outcome)))
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


def fetch_one(url: str, **options: Any) -> bytes:
    """Download one URL (same options as `fetch_many`); raises ImageError."""
    outcome = fetch_many([url], **options)[url]
    if isinstance(outcome, ImageError):
        raise outcome
    return outcome


def fetch_remote(paths: Iterable[str], **options: Any) -> dict[str, bytes | ImageError]:
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
            _fsspec()  # a missing extra is one error for the whole call, not one per URL

    def close(self) -> None:
        for session in self._sessions:
            with contextlib.suppress(Exception):
                session.close()

    def fetch(self, url: str) -> bytes | ImageError:
        attempts = self.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return self._http(url) if _is_http(url) else self._fsspec(url)
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

    def _http(self, url: str) -> bytes:
        requests = self._requests
        if requests is None:  # pragma: no cover - set when any http URL needs downloading
            requests = self._requests = _requests()
        start = time.monotonic()
        try:
            with self._session().get(url, stream=True, timeout=(self.timeout, self.timeout)) as response:
                status = response.status_code
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
                return self._read_limited(url, response.iter_content(_BLOCK), start)
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

    def _fsspec(self, url: str) -> bytes:
        fsspec = _fsspec()
        start = time.monotonic()
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
            with fs.open(path, "rb") as handle:
                return self._read_limited(url, iter(lambda: handle.read(_BLOCK), b""), start)
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


def _requests() -> Any:
    try:
        import requests
    except ImportError as exc:
        raise DependencyError(f"http(s) downloads need requests: {_INSTALL_HINT}") from exc
    return requests


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
