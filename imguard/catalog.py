"""The Catalog: a seller's own images, indexed; the one object most users need.

Every CLI command is a thin call of a method here (`index` → `Catalog.add`, `scan` →
`Catalog.scan`, `report` and `scan --report` → `Catalog.write_report`, `nightly` →
`Catalog.nightly`, `findings` → `Catalog.findings`, `mark` → `Catalog.mark` / `Catalog.mark_from`,
`rebuild` → `Catalog.rebuild`, `stats` → `Catalog.stats`). The methods that write take the
catalog's writer lock (see imguard.lock); reading ones never wait for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import engine, evidence, history, nightly, scan
from .errors import CatalogError, SourceError
from .fingerprint import FINGERPRINT_VERSION, Fingerprint, fingerprint_file
from .index import CatalogIndex
from .limits import Limits
from .lock import CatalogLock
from .scan import Match, Matcher, ScanError
from .sources import Record, iter_records, read_manifest
from .store import FileState, Store

# Files fingerprinted per chunk of `index` (scan keeps engine.CHUNK: its FAISS searches are
# batched per chunk). Indexing batches nothing, and at the end of a run a worker waits for the
# other's last chunk, half a chunk on average: 2 images' time instead of 8 (at 100 images/s, 0.06 s
# of a 2-job run of 200 full-size JPEGs, ~1.2 s). It costs a transaction and a round trip per
# chunk, ~1 ms. Not told apart from 16 by measurement: on the loaded machine of 2026-12-03 (load
# average 7 on 2 cores) 2 jobs' speed-up moved by ±0.3 from round to round either way.
INDEX_CHUNK = 4
PathLike = str | os.PathLike[str]
Sources = PathLike | Iterable[PathLike]
Progress = Callable[[int], None]


@dataclass
class IndexResult:
    """What `Catalog.add` did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: list[ScanError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def nothing_read(self) -> bool:
        """Did every file of the run fail? (Errors, and not one file indexed or found unchanged.)"""
        return bool(self.errors) and not (self.added or self.updated or self.unchanged)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "removed": self.removed, "errors": [e.__dict__ for e in self.errors],
            "seconds": round(self.seconds, 3),
        }


class ScanRun:
    """The matches of one scan, produced lazily: iterate it for `Match` objects; afterwards
    `errors` holds the files that could not be read and `stats` the counts and timing."""

    def __init__(self, outcomes: Iterator[scan.Outcome]) -> None:
        self._outcomes = outcomes
        self.matches: list[Match] = []  # what the iteration gave so far
        self._read = 0  # files read and matched (with or without a match)
        self.errors: list[ScanError] = []
        self.stats: dict[str, Any] = {"queries": 0, "matched_queries": 0, "matches": 0, "errors": 0,
                                      "fast_path": 0, "seconds": 0.0}

    def __iter__(self) -> Iterator[Match]:
        start = time.perf_counter() - self.stats["seconds"]  # a second iteration goes on where it was
        for outcome in self._outcomes:
            self.stats["queries"] += not outcome.folder
            if outcome.error is not None:
                self.errors.append(outcome.error)
                self.stats["errors"] += 1
                continue
            self._read += 1
            self.stats["fast_path"] += outcome.fast_path
            if outcome.matches:
                self.stats["matched_queries"] += 1
                self.stats["matches"] += len(outcome.matches)
            self.matches.extend(outcome.matches)
            yield from outcome.matches
            self.stats["seconds"] = round(time.perf_counter() - start, 3)
        self.stats["seconds"] = round(time.perf_counter() - start, 3)

    @property
    def nothing_read(self) -> bool:
        """Did every file of the run fail? (After the iteration: errors, and not one file read.)"""
        return bool(self.errors) and not self._read


def _fingerprint_chunk(limits: Limits, items: list[tuple[str, str, float]]) -> list[tuple[tuple[str, str, float], Fingerprint | ScanError]]:
    out: list[tuple[tuple[str, str, float], Fingerprint | ScanError]] = []
    for item in items:
        try:
            out.append((item, fingerprint_file(item[0], with_thumbnail=True, limits=limits)))
        except Exception as exc:
            out.append((item, ScanError.of(item[0], exc)))
    return out


class Catalog:
    """A folder holding the catalog store (SQLite, the truth) and its FAISS indexes."""

    def __init__(self, folder: str, store: Store, *, readonly: bool = False) -> None:
        self.folder = folder
        self.store = store
        self.readonly = readonly
        self._index: CatalogIndex | None = None
        self._lock = CatalogLock(folder)

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the catalog's writer lock (one writer at a time; re-entrant): LockHeld, naming
        the holder, when another run keeps it beyond `wait` seconds."""
        self._lock.acquire(wait)
        try:
            yield
        finally:
            self._lock.release()

    @classmethod
    def open(cls, folder: PathLike, *, create: bool = True, readonly: bool = False) -> Catalog:
        """Open the catalog in `folder`; create it when missing (unless `create=False`, then a
        missing catalog raises CatalogError).

        `readonly` (what `scan` and `stats` use): nothing in the folder is written or locked, so
        that a catalog on read-only media can be scanned and an `index` running meanwhile never
        waits for a reader; index files that are missing or stale are built in memory instead
        of saved. `add`, `prune` and `rebuild` then raise CatalogError."""
        folder = os.fspath(folder)
        if readonly:
            return cls(folder, Store.open(folder, create=False, readonly=True), readonly=True)
        return cls(folder, Store.open(folder, create=create))

    def _writable(self) -> None:
        if self.readonly:
            raise CatalogError(f"{self.folder}: the catalog was opened read-only")

    def _derive_index(self, *, rebuild: bool = False) -> CatalogIndex:
        self._index = CatalogIndex.for_store(self.store, self.folder, rebuild=rebuild, save=not self.readonly)
        return self._index

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    # -- indexing ---------------------------------------------------------------------------

    def add(self, sources: Sources, *, manifest: PathLike | None = None, prune: bool = False,
            force_prune: bool = False, jobs: int | None = None, progress: Progress | None = None,
            limits: Limits = Limits(), wait: float = 0.0) -> IndexResult:
        """Index image files and folders (recursively). Only new or changed files are
        fingerprinted; `manifest` is a CSV of metadata (columns: path, and any of sku, asin,
        url, title; others are kept). Manifest rows that name no readable file, or no file
        among `sources`, are errors, and so is a file over `limits` (bytes, memory to decode,
        seconds). `wait`: seconds to wait for another writer (see `writing`).

        `prune` drops the entries whose files are gone, anywhere in the catalog. When a folder that
        held some of them is itself missing or empty (so would be a drive not mounted), it raises
        SourceError before anything is done, unless `force_prune` (which prunes too)."""
        self._writable()
        with self.writing(wait):
            return self._add(sources, manifest=manifest, prune=prune, force_prune=force_prune, jobs=jobs,
                             progress=progress, limits=limits)

    def _add(self, sources: Sources, *, manifest: PathLike | None, prune: bool, force_prune: bool,
             jobs: int | None, progress: Progress | None, limits: Limits) -> IndexResult:
        start = time.perf_counter()
        result = IndexResult()
        known = self.store.file_states()
        if prune and not force_prune:
            _refuse_vanished(known)

        def unreadable(path: str, reason: str) -> None:
            result.errors.append(ScanError(path, reason))

        metadata = {}
        if manifest is not None:
            # its rows may name files under the manifest's folder, or under the folders indexed
            roots = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
            rows = read_manifest(manifest, on_error=unreadable, allowed_roots=roots, local_only=True)
            metadata = {os.path.abspath(r.location): r.metadata for r in rows}
        seen: set[str] = set()

        def todo() -> Iterator[tuple[str, str, float]]:
            for record in iter_records(sources, remote=False, on_error=unreadable):
                path = record.location
                abspath = os.path.abspath(path)
                seen.add(abspath)
                try:
                    st = os.stat(path)
                except OSError as exc:
                    result.errors.append(ScanError(path, f"cannot read file ({exc.strerror})"))
                    continue
                state = known.get(abspath)
                if (state is not None and state.nbytes == st.st_size and state.mtime == st.st_mtime
                        and state.fingerprint_version == FINGERPRINT_VERSION):
                    result.unchanged += 1
                    if progress:
                        progress(1)
                    continue
                yield path, abspath, st.st_mtime

        jobs = jobs or engine.default_jobs()
        for chunk in engine.run_chunks(_fingerprint_chunk, limits, todo(), jobs=jobs, chunk_size=INDEX_CHUNK):
            rows = []
            for (path, abspath, mtime), output in chunk:
                if isinstance(output, ScanError):
                    result.errors.append(output)
                    continue
                if abspath in known:
                    result.updated += 1
                else:
                    result.added += 1
                rows.append((path, abspath, mtime, output, metadata.get(abspath) if manifest is not None else None))
            self.store.put_many(rows)  # committed per chunk: a kill loses at most this chunk
            if progress:
                progress(len(chunk))
        for abspath, meta in metadata.items():
            if abspath not in seen:
                unreadable(os.fspath(manifest), f"{abspath}: in the manifest, but not among the files indexed")
            elif abspath in known:
                self.store.set_metadata(abspath, meta)
        if prune or force_prune:
            result.removed = self.store.delete(_gone(known))
        self._derive_index()
        result.seconds = time.perf_counter() - start
        return result

    def prune(self, *, force: bool = False, wait: float = 0.0) -> int:
        """Drop catalog entries whose files are gone; returns how many. Refuses (SourceError) when
        a folder that held some of them is missing or empty, unless `force` (see `add`)."""
        self._writable()
        with self.writing(wait):
            states = self.store.file_states()
            if not force:
                _refuse_vanished(states)
            removed = self.store.delete(_gone(states))
            if removed:
                self._derive_index()
        return removed

    def rebuild(self, *, wait: float = 0.0) -> CatalogIndex:
        """Rebuild the FAISS indexes from the store (they are derived data)."""
        self._writable()
        with self.writing(wait):
            return self._derive_index(rebuild=True)

    @property
    def index(self) -> CatalogIndex:
        """The FAISS indexes, loaded from disk, or rebuilt when missing or stale."""
        if self._index is None or self._index.generation != self.store.generation:
            return self._derive_index()
        return self._index

    def stats(self) -> dict[str, Any]:
        stats = self.store.stats()
        stats["folder"] = self.folder
        stats["index"] = {n: getattr(self.index, n).size for n in ("phash", "dhash", "features")}
        return stats

    # -- scanning ---------------------------------------------------------------------------

    def matcher(self, *, threshold: float = scan.DEFAULT_THRESHOLD, top: int | None = None,
                keep_prints: bool = False, fetch_options: dict[str, Any] | None = None,
                limits: Limits = Limits()) -> Matcher:
        """What a scan runs on. Refuses a catalog with fingerprints of an older imguard: they would
        silently miss copies."""
        outdated = self.store.outdated()
        if outdated:
            raise CatalogError(
                f"{self.folder}: {len(outdated)} catalog image(s) (first: {outdated[0]}) were fingerprinted "
                "by an older imguard; run `imguard index` on the catalog folders again"
            )
        return Matcher(self.index, self.store.path, threshold=threshold, top=top, keep_prints=keep_prints,
                       fetch_options=fetch_options, limits=limits)

    def scan(self, sources: Sources, *, threshold: float = scan.DEFAULT_THRESHOLD, top: int | None = None,
             jobs: int | None = None, progress: Progress | None = None,
             engine: str = "local", scheduler: Any = None, limits: Limits = Limits()) -> ScanRun:
        """Look for catalog images in competitor images (files or folders, recursively; URLs and
        CSV manifests of URLs with the extra `imguard[remote]`).

        Returns a ScanRun: iterate it for matches (query order, best first per query). With
        `threshold=0` every query's best candidates are reported whatever their score.
        `engine="dask"` runs the chunks on a Dask cluster (extra `imguard[dask]`): `scheduler` is
        its address (tcp://host:8786) or a distributed.Client; `jobs` is then ignored.
        A file over `limits` (bytes read or downloaded, memory to decode, seconds) is an error.
        """
        if threshold < 0 or threshold > 1:
            raise ValueError("threshold must be within [0, 1]")
        run_chunks = _runner(engine, jobs, scheduler)
        matcher = self.matcher(threshold=threshold, top=top, limits=limits)

        unreadable: list[scan.Outcome] = []  # folders and manifest rows that could not be read

        def outcomes() -> Iterator[scan.Outcome]:
            records = iter_records(sources, on_error=lambda path, reason: unreadable.append(
                scan.Outcome(Record(path), error=ScanError(path, reason), folder=True)))
            for chunk in run_chunks(scan.match_chunk, matcher, records):
                if progress:
                    progress(len(chunk))
                yield from chunk
                yield from unreadable
                unreadable.clear()
            yield from unreadable

        return ScanRun(outcomes())


    # -- reporting --------------------------------------------------------------------------

    def write_report(self, matches: ScanRun | Iterable[Match], folder: PathLike, *,
                     errors: Iterable[ScanError] = (), stats: dict[str, Any] | None = None,
                     complaint_template: PathLike | None = None) -> evidence.ReportFolder:
        """Write the evidence report of a scan into `folder`: index.html to review in a browser,
        one evidence PNG per pair, a complaint draft per infringing listing, matches.json/.csv
        (see `imguard.evidence`). `matches`: a ScanRun (run to its end; its errors and stats
        come along) or matches read back with `imguard.report.read_scan`. Own images whose files
        are gone are shown from the catalog's thumbnails."""
        if isinstance(matches, ScanRun):
            for _ in matches:
                pass
            errors, stats, matches = matches.errors, matches.stats, matches.matches
        return evidence.write_report(matches, folder, errors=list(errors), stats=stats, store=self.store,
                                     complaint_template=complaint_template)


    # -- every night ------------------------------------------------------------------------

    def nightly(self, config: nightly.Config | PathLike, *, dry_run: bool = False, wait: float = 0.0,
                progress: Progress | None = None) -> nightly.NightlyResult:
        """One nightly run (see imguard.nightly): index the catalog incrementally, scan what is new
        or changed in the configured sources, update the findings, write the report; returns what
        changed since the last run that reported. `config`: a Config or the path of its TOML file."""
        if not isinstance(config, nightly.Config):
            config = nightly.load_config(config)
        if not dry_run:
            self._writable()
        return nightly.run_nightly(self, config, dry_run=dry_run, wait=wait, progress=progress)

    def findings(self, *, status: str | None = None, listing: str | None = None,
                 older_than_days: float | None = None) -> list[history.Finding]:
        """The findings of the nightly runs, newest first: by status (new, ongoing, resolved,
        reappeared), listing, or age (first seen more than `older_than_days` ago)."""
        if status is not None and status not in history.STATUSES:
            raise ValueError(f"status must be one of {', '.join(history.STATUSES)}")
        before = None if older_than_days is None else time.time() - older_than_days * 86400
        return history.History(self.store).findings(statuses=[status] if status else None, listing=listing,
                                                    first_seen_before=before)

    def mark(self, mark: str, *, finding: int | None = None, listing: str | None = None,
             seller: str | None = None, note: str | None = None, wait: float = 0.0) -> int:
        """Record a decision about a finding (reported, ignored, licensed, not-a-copy), or mark a
        whole listing or seller licensed: it is never alerted again. Returns the mark's id."""
        self._writable()
        with self.writing(wait):
            return history.History(self.store).mark(mark, finding_id=finding, listing=listing, seller=seller,
                                                    note=note)

    def mark_from(self, path: PathLike, *, wait: float = 0.0) -> int:
        """Apply the decisions a report page exported (a JSON file: {"decisions": [{"finding": id,
        "mark": ..., "note": ...}]}); all of them or, when one is wrong, none. Returns how many."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                decisions = json.load(handle)["decisions"]
            rows = [(str(d["mark"]), int(d["finding"]), None, None, d.get("note")) for d in decisions]
        except OSError as exc:
            raise history.MarkError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise history.MarkError(f"{path}: not a decisions file exported by the report ({exc!r})") from exc
        self._writable()
        with self.writing(wait):
            try:
                history.History(self.store).mark_many(rows)
            except history.MarkError as exc:
                raise history.MarkError(f"{path}: {exc}") from exc
        return len(rows)


def _runner(kind: str, jobs: int | None, scheduler: Any) -> Callable[..., Iterator[list]]:
    """The chunk runner of a scan engine: "local" (this process, or a local process pool) or
    "dask" (a Dask cluster). Checked when the scan is asked for, not at its first match."""
    if kind == "local":
        return functools.partial(engine.run_chunks, jobs=jobs or engine.default_jobs())
    if kind == "dask":
        from . import distributed

        distributed.require()  # DependencyError with the install hint
        return functools.partial(distributed.run_chunks, scheduler=scheduler)
    raise ValueError(f"engine must be 'local' or 'dask', not {kind!r}")


def _gone(states: dict[str, FileState]) -> list[int]:
    """Ids of catalog entries whose files no longer exist."""
    return [state.id for path, state in states.items() if not os.path.exists(path)]


def _refuse_vanished(states: dict[str, FileState]) -> None:
    """SourceError when a folder that held catalog images whose files are gone is itself missing,
    empty or unreadable: an unmounted drive (its mount point empty, its folders missing) must not
    empty the catalog of everything indexed from it."""
    folders = Counter(os.path.dirname(path) for path in states if not os.path.exists(path))
    vanished = sorted(folder for folder in folders if not _holds_anything(folder))
    if vanished:
        count = sum(folders[folder] for folder in vanished)
        more = f" and {len(vanished) - 1} more" if len(vanished) > 1 else ""
        raise SourceError(
            f"not pruning: {count} catalog image(s) are in folders that are missing or empty ({vanished[0]}"
            f"{more}), as they would be on a drive that is not mounted. Nothing was changed; "
            "to drop them, prune with force (--force-prune)"
        )


def _holds_anything(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError:  # missing, or unreadable: its files may be there
        return False
