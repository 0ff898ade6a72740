"""Sources → records: what to read, and which listing each image belongs to.

A *source* is what a user names: an image file, a folder (walked recursively), a CSV manifest
(a local file or a URL), or a remote URL (an http(s) folder listing, an s3:// or gs:// prefix, or
one image). Each becomes a stream of `Record`s: the image's location (a local path as the user
wrote it, or a URL) and its metadata. A competitor image's listing -- the unit a seller files a
complaint about -- is its manifest row's `listing` (or `asin`) or, without a manifest, the name of
the folder it is in: ``competitors/<listing>/*.jpg``.

This is the first stage of the pipeline (sources → images → fingerprints → index → matches →
reports): nothing here decodes a pixel. Remote listings need the extra ``imguard[remote]``.

Manifests are untrusted input: a row is resolved against the manifest's folder and must stay under
it (or under a root allowed explicitly), a URL must be http(s), s3 or gs, and every bad row is an
error of its own, named by its line, while the other rows go on.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from . import fetch
from .errors import DependencyError, ImageError, ImguardError, ManifestError, SourceError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
     ".heic", ".heif", ".avif"}
)
# Manifest columns with a meaning of their own (any other column is kept as it is). A row names
# its image in `path` (relative to the manifest) or `url`.
LISTING_COLUMNS = ("listing", "asin", "listing_url", "title", "seller", "marketplace", "captured_at",
                   "image_position")
LOCATION_COLUMNS = ("url", "path")
# What a manifest row may point at besides local paths: the protocols imguard downloads with its
# own size and time limits.
MANIFEST_PROTOCOLS = frozenset({"http", "https", "s3", "gs", "gcs"})

Sources = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
OnError = Callable[[str, str], None]  # (location, reason) of something inside a source that cannot be read


@dataclass(frozen=True)
class Record:
    """One image to read: where it is, and what is known about it before it is read."""

    location: str  # a local path as the user wrote it, or a URL
    metadata: dict[str, str] = field(default_factory=dict)  # listing, asin, title, seller, ...

    @property
    def listing(self) -> str:
        return self.metadata.get("listing", "")




# -- records -----------------------------------------------------------------------------------


def iter_records(sources: Sources, *, remote: bool = True, on_error: OnError | None = None,
                 allowed_roots: Sequence[str | os.PathLike[str]] = ()) -> Iterator[Record]:
    """The records of one source or of several, in order. Folders and files are walked locally
    (see `iter_image_files`); with `remote` (scans), CSV manifests and URLs are read too. Every
    record has a listing: its manifest row's `listing`, else its `asin`, else its folder's name.

    What cannot be read inside a source (a sub-folder, a manifest row) goes to `on_error` as
    (location, reason) and the rest goes on; a source that cannot be read at all raises
    SourceError. `allowed_roots`: folders, besides each manifest's own, that its rows may name.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    for source in sources:
        source = os.fspath(source)
        if remote and is_manifest(source):
            for record in read_manifest(source, on_error=on_error, allowed_roots=allowed_roots):
                if not record.listing:
                    location = record.location
                    folder = _url_folder(location) if fetch.protocol_of(location) else _folder_name(location)
                    record.metadata["listing"] = record.metadata.get("asin") or folder
                yield record
        elif remote and (fetch.is_remote(source) or fetch.protocol_of(source) == "file"):
            for url in iter_remote_source(source, on_error=on_error):
                yield Record(url, {"listing": _url_folder(url)})
        else:
            for path in iter_image_files(source, on_error):
                yield Record(path, {"listing": _folder_name(path)})


def _folder_name(path: str) -> str:
    """The name of the folder a file is in: its listing when no manifest says otherwise."""
    return os.path.basename(os.path.dirname(os.path.abspath(path)))


def _url_folder(url: str) -> str:
    path = urlparse(url).path if fetch.is_http(url) else url.split("://", 1)[-1]
    return unquote(path.rstrip("/").rsplit("/", 2)[-2]) if path.count("/") >= 1 else ""


def is_manifest(source: str | os.PathLike[str]) -> bool:
    """Is `source` a CSV manifest (by its name: local or URL)?"""
    source = os.fspath(source)
    path = urlparse(source).path if fetch.protocol_of(source) else source
    return path.lower().endswith(".csv")


# -- local folders -----------------------------------------------------------------------------


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def iter_image_files(source: str | os.PathLike[str], on_error: OnError | None = None) -> Iterator[str]:
    """Yield image paths under `source` (a file or a folder, walked recursively).

    Paths keep the form the user gave (a relative folder gives relative paths). Hidden files and
    folders and non-image suffixes are skipped; a folder reached twice (symlink loop) is walked once.
    Anything else named like an image is yielded, regular file or not (see `load.read_file`).
    Entries stream in directory order: nothing holds the whole listing. An unreadable `source`
    raises SourceError; an unreadable folder inside it goes to `on_error` and the walk goes on.
    """
    root = os.fspath(source)
    try:
        st = os.stat(root)
    except OSError as exc:
        raise SourceError(f"{root}: cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISDIR(st.st_mode):
        yield root
        return
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            key = os.stat(folder)
            if (key.st_dev, key.st_ino) in seen:
                continue
            seen.add((key.st_dev, key.st_ino))
            entries = os.scandir(folder)
        except OSError as exc:
            if folder == root:
                raise SourceError(f"{root}: cannot read folder ({exc.strerror or exc})") from exc
            if on_error is not None:
                on_error(folder, f"cannot read folder ({exc.strerror or exc})")
            continue
        subfolders = []
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        subfolders.append(entry.path)
                    elif is_image_name(entry.name):
                        # a FIFO, a device or a dangling link named like an image too: reading it
                        # fails, as that file's error, instead of leaving it out unsaid
                        yield entry.path
                except OSError:
                    continue
        stack.extend(reversed(subfolders))

# -- remote folders ----------------------------------------------------------------------------


def _name(url: str) -> str:
    """The last segment of a URL's path ('' for a folder URL); decoded for http(s), where the
    query string is not part of the name."""
    if fetch.is_http(url):
        path = urlparse(url).path
        return "" if path.endswith("/") else unquote(path.rsplit("/", 1)[-1])
    path = url.split("://", 1)[-1]
    return "" if path.endswith("/") else path.rsplit("/", 1)[-1]


def _has_image_suffix(url: str) -> bool:
    name = _name(url)
    return bool(name) and is_image_name(name)


def _filesystem(url: str, timeout: float, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fsspec = fetch.fsspec_module()
    options = dict(storage_options or {})
    if fetch.is_http(url):
        try:
            import aiohttp
        except ImportError as exc:
            raise DependencyError(f"http(s) folder listings need aiohttp: {fetch.INSTALL_HINT}") from exc
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
                       max_depth: int = 32, on_error: OnError | None = None) -> Iterator[str]:
    """Yield the image URLs of one remote source.

    * A URL whose name has an image suffix: yields itself, without any request (a missing image
      is reported per file when it is fetched, like any other unreadable image).
    * Any other URL: a folder. On object stores (s3, gs, ...) every object under the prefix is
      listed at once (``find``); an http(s) folder is an HTML page whose links are followed down
      (links to deeper URLs only, at most `max_depth` levels). Only image suffixes are kept;
      hidden names (a segment starting with '.') are skipped, folders included. An http(s) URL
      that answers with something other than an HTML page is a single image (CDN URLs often
      have no suffix) and yields itself.

    Raises SourceError naming the URL when the folder cannot be read at all, or for a
    ``file://`` URL (give the local path instead: the local walker keeps paths as written);
    DependencyError when the extra is not installed.
    """
    source = os.fspath(source)
    if fetch.protocol_of(source) == "file":
        local = unquote(urlparse(source).path)
        raise SourceError(f"{source}: file:// URLs are not supported; give the local path ({local}) instead")
    if not fetch.is_remote(source):
        raise SourceError(f"{source}: not a remote URL (http://, https://, s3://, gs://, ...)")
    if _has_image_suffix(source):
        yield source
        return
    fs, root = _filesystem(source, timeout, storage_options)
    if fetch.is_http(source):
        yield from _walk_http(fs, source, max_depth, on_error)
    else:
        yield from _find(fs, source, root)


def _walk_http(fs: Any, root: str, max_depth: int, on_error: OnError | None) -> Iterator[str]:
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
            if on_error is not None:  # the listing is incomplete: what it misses is not gone
                on_error(url, f"cannot read folder ({type(exc).__name__}: {exc})")
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



# -- manifests ---------------------------------------------------------------------------------


class _RowError(Exception):
    """One manifest row that cannot be read: reported with its line, the other rows go on."""


def read_manifest(manifest: str | os.PathLike[str], *, on_error: OnError | None = None,
                  allowed_roots: Sequence[str | os.PathLike[str]] = (), local_only: bool = False,
                  timeout: float = 30, storage_options: dict[str, Any] | None = None) -> list[Record]:
    """The records of a CSV manifest: one image per row, named by its ``url`` cell or, when that
    is empty or missing, its ``path`` cell; the other columns are its metadata (see
    LISTING_COLUMNS; names are lower-cased, empty cells left out). With `local_only` (the
    catalog's manifest) images are named by ``path`` alone, and ``url`` is metadata: the link to
    the seller's own listing.

    A local path is taken relative to the manifest's folder and must stay under it or under one
    of `allowed_roots` once resolved: ``..``, absolute paths and symlinks leading elsewhere are
    errors, and ``~`` is not expanded. A URL row must be http(s), s3 or gs; in a remote manifest a
    relative entry is relative to the manifest's URL. A row that points at nothing, has no
    location, or repeats an earlier row's location goes to `on_error` as
    (``manifest:line``, reason) and the other rows go on. URLs are not requested here.

    Raises ManifestError when the manifest cannot be read at all or has neither a ``url`` nor a
    ``path`` column.
    """
    manifest = os.fspath(manifest)
    remote = fetch.is_remote(manifest)
    text = _read_manifest_text(manifest, remote, timeout, storage_options)
    records: list[Record] = []
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip().lower(): c for c in (reader.fieldnames or []) if c}
        locations = ("path",) if local_only else LOCATION_COLUMNS
        if not any(c in columns for c in locations):
            wanted = " or ".join(f"'{c}'" for c in locations)
            raise ManifestError(f"{manifest}: no {wanted} column (columns: {', '.join(columns) or 'none'})")
        roots = [_real_folder(manifest)] + [os.path.realpath(r) for r in allowed_roots] if not remote else []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            cells = {name: (row.get(original) or "").strip() for name, original in columns.items()
                     if isinstance(row.get(original), str)}
            entry = ("" if local_only else cells.pop("url", "")) or cells.get("path", "")
            cells.pop("path", None)
            try:
                if not entry:
                    if not any(cells.values()):
                        continue  # a blank line
                    raise _RowError(f"no {' or '.join(c for c in locations if c in columns)}")
                location = _manifest_entry(manifest, remote, entry, roots)
                same = location if fetch.protocol_of(location) else os.path.normpath(location)  # ./a, a//b
                if same in seen:
                    raise _RowError(f"{entry}: the same image as line {seen[same]}")
            except _RowError as exc:
                if on_error is not None:
                    on_error(f"{manifest}:{line}", f"manifest row: {exc}")
                continue
            seen[same] = line
            records.append(Record(location, {k: v for k, v in cells.items() if v}))
    except csv.Error as exc:
        raise ManifestError(f"{manifest}: not a readable CSV ({exc})") from exc
    return records


def _real_folder(manifest: str) -> str:
    return os.path.realpath(os.path.dirname(os.path.abspath(manifest)))


def _read_manifest_text(manifest: str, remote: bool, timeout: float,
                        storage_options: dict[str, Any] | None) -> str:
    try:
        if remote:
            data = fetch.fetch_one(manifest, cache=False, timeout=timeout, storage_options=storage_options).data
        else:
            if not stat.S_ISREG(os.stat(manifest).st_mode):
                raise ManifestError(f"{manifest}: cannot read manifest (not a regular file)")
            with open(manifest, "rb") as handle:
                data = handle.read(fetch.DEFAULT_MAX_BYTES + 1)
        if len(data) > fetch.DEFAULT_MAX_BYTES:
            raise ManifestError(f"{manifest}: cannot read manifest (over {fetch.DEFAULT_MAX_BYTES} bytes)")
        return data.decode("utf-8-sig")
    except ImageError as exc:
        raise ManifestError(f"{manifest}: cannot read manifest ({exc.reason})") from exc
    except OSError as exc:
        raise ManifestError(f"{manifest}: cannot read manifest ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}: not a readable CSV ({exc})") from exc


def _manifest_entry(manifest: str, remote: bool, entry: str, roots: list[str]) -> str:
    """The location a manifest cell names, or _RowError saying why it names nothing usable."""
    protocol = fetch.protocol_of(entry)
    if protocol is not None:
        if protocol == "file":
            raise _RowError(f"{entry}: file:// URLs are not supported; give the path")
        if protocol not in MANIFEST_PROTOCOLS:
            raise _RowError(f"{entry}: not a supported URL (http, https, s3 or gs)")
        if fetch.is_http(entry) and not urlparse(entry).netloc:
            raise _RowError(f"{entry}: URL without a host")
        return entry
    if remote:
        if not fetch.is_http(manifest):
            base = manifest.rsplit("/", 1)[0]
            return f"{base}/{entry.lstrip('/')}"
        return urljoin(manifest, entry)
    if entry.startswith("~"):
        raise _RowError(f"{entry}: '~' is not expanded; give the path relative to the manifest")
    path = os.path.join(os.path.dirname(manifest), entry)
    real = os.path.realpath(path)
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise _RowError(f"{entry}: leads outside the manifest's folder (allow its folder explicitly to read it)")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _RowError(f"{entry}: {'no such file' if isinstance(exc, FileNotFoundError) else exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise _RowError(f"{entry}: a folder, not an image file")
    return path
