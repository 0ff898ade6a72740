"""Every night, only what changed: the scheduled comparison of `imguard nightly --config FILE`.

One run, under the catalog's writer lock:

1. index the catalog incrementally (new and changed own images);
2. list every source; a competitor image whose size and mtime (a URL: whose content, asked
   conditionally) did not change since it was last read is not read again, and its findings are
   seen again as they were; new and changed ones are scanned, and what the scan keeps of them
   (hashes, ORB descriptors, a thumbnail) goes into the history. An image that cannot be read
   tonight (a decoder error, a server error) keeps its findings as they were;
3. own images new or changed since the last complete run are looked for in the unchanged
   competitor images from what the history kept of them (`scan.reverse_candidates`), and the
   candidates are scanned again: a new catalog photo stolen last month is a finding on its first
   night;
4. complete the run: in the sources read completely, findings whose image is gone, or was read
   again and no longer matches, are resolved (see imguard.history for the statuses);
5. write the evidence report, with each finding's status and mark, and return only what changed.

Every chunk of scanned images commits with its findings: a run killed at any point loses what it
was doing, never what it committed, and the next run takes over. The configuration is a TOML
file (see `load_config`); `Catalog.nightly` and `imguard nightly` are thin calls of `run_nightly`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import engine, fetch, fingerprint, scan
from ._version import __version__
from .errors import ImageError, ImguardError
from .evidence import Picture, ReportFolder, complaint_drafter, file_picture
from .history import ACTIVE, CompetitorState, Finding, History, metadata_json
from .scan import Outcome, ScanError
from .sources import Record, iter_records

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REMOTE_BATCH = 64  # URLs asked about (conditionally) at a time: what one batch holds in memory
GONE = ("not found", "HTTP 410")  # what fetch says of a URL whose image was taken down
# A new own image verified this close under the threshold in the thumbnail a run kept of a
# competitor image is read again in full: the thumbnail is the resolution the dense check
# compares at, but its keypoints are those of the view, and JPEG noise moves a score a little.
REVERSE_MARGIN = 0.15


class ConfigError(ImguardError):
    """The configuration file is missing, not TOML, or has a key that is unknown, of the wrong
    type, or names a path that does not exist."""


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A set of competitor images read every night, under a name of its own: a folder (of listing
    folders), a manifest CSV, or a URL (with its download options)."""

    name: str
    location: str  # a path (relative to the config file's folder when given so) or a URL
    allowed_roots: tuple[str, ...] = ()
    fetch_options: dict[str, Any] = field(default_factory=dict)  # timeout, max_bytes, retries

    @property
    def remote(self) -> bool:
        return fetch.is_remote(self.location)


@dataclass(frozen=True)
class Config:
    path: str
    catalog: tuple[str, ...]
    db: str
    sources: tuple[Source, ...]
    manifest: str | None = None
    report: str | None = None
    threshold: float = scan.DEFAULT_THRESHOLD
    still_online_days: float = 7.0  # a finding reported this long ago and still online is listed
    keep_runs_days: float = 90.0  # runs older than this are forgotten (findings stay)
    jobs: int | None = None
    complaint_template: str | None = None


_NUMBER = (int, float)
# key → (types, what it is): every key of the file, and nothing else, is accepted.
CONFIG_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "catalog": ((str, list), "your images: a folder or file, or a list of them"),
    "manifest": ((str,), "the CSV of your images' listings"),
    "db": ((str,), "the catalog folder"),
    "report": ((str,), "the report folder"),
    "threshold": (_NUMBER, "the minimum score, 0 to 1"),
    "still_online_days": (_NUMBER, "days after which a reported finding still online is listed"),
    "keep_runs_days": (_NUMBER, "days of runs kept"),
    "jobs": ((int,), "worker processes"),
    "complaint_template": ((str,), "a Jinja2 template replacing the complaint draft"),
    "source": ((list,), "the competitor sources, [[source]] tables"),
}
SOURCE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "the source's name"),
    "path": ((str,), "a folder of listing folders, or a manifest CSV"),
    "url": ((str,), "an http(s), s3 or gs folder, manifest or image"),
    "allow_roots": ((list,), "folders a manifest's rows may point under"),
    "timeout": (_NUMBER, "seconds per download"),
    "max_bytes": ((int,), "bytes per download at most"),
    "retries": ((int,), "further attempts of a failed download"),
}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a nightly configuration (TOML). Relative paths are relative to the file's
    folder. ConfigError names the key at fault: unknown, of the wrong type, out of range, or a
    path that does not exist (a source's folder may be missing on a given night: that is that
    night's error, not the file's)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    base = os.path.dirname(os.path.abspath(path))

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {why}")

    _check_keys(data, CONFIG_KEYS, "", fail)
    for key in ("catalog", "db", "source"):
        if key not in data:
            raise fail(key, f"missing ({CONFIG_KEYS[key][1]})")

    def local(key: str, value: str, must_exist: bool = True) -> str:
        resolved = value if os.path.isabs(value) else os.path.join(base, value)
        if must_exist and not os.path.exists(resolved):
            raise fail(key, f"{value}: no such file or folder")
        return resolved

    catalog = [data["catalog"]] if isinstance(data["catalog"], str) else data["catalog"]
    if not catalog or not all(isinstance(c, str) for c in catalog):
        raise fail("catalog", "a folder or file, or a list of them")
    threshold = float(data.get("threshold", scan.DEFAULT_THRESHOLD))
    if not 0 <= threshold <= 1:
        raise fail("threshold", f"{threshold}: must be within 0 and 1")
    for key in ("still_online_days", "keep_runs_days"):
        if key in data and data[key] < 0:
            raise fail(key, "must not be negative")
    if "jobs" in data and data["jobs"] < 1:
        raise fail("jobs", "at least 1")
    sources, names = [], set()
    for number, table in enumerate(data["source"], start=1):
        where = f"source {number}"
        if not isinstance(table, dict):
            raise fail(where, "a [[source]] table")
        _check_keys(table, SOURCE_KEYS, f"{where}: ", fail)
        name = table.get("name") or f"source-{number}"
        if name in names:
            raise fail(f"{where}: name", f"{name!r} is the name of another source")
        names.add(name)
        if ("path" in table) == ("url" in table):
            raise fail(where, "give it a path or a url (one of them)")
        location = table["url"] if "url" in table else local(f"{where}: path", table["path"], must_exist=False)
        if "url" in table and not fetch.is_remote(location):
            raise fail(f"{where}: url", f"{location}: not a URL (http, https, s3, gs)")
        roots = table.get("allow_roots", [])
        if not all(isinstance(r, str) for r in roots):
            raise fail(f"{where}: allow_roots", "a list of folders")
        options = {k: table[k] for k in ("timeout", "max_bytes", "retries") if k in table}
        sources.append(Source(name, location, tuple(local(f"{where}: allow_roots", r) for r in roots), options))
    return Config(
        path=path, catalog=tuple(local("catalog", c) for c in catalog), db=local("db", data["db"], must_exist=False),
        sources=tuple(sources), manifest=local("manifest", data["manifest"]) if "manifest" in data else None,
        report=local("report", data["report"], must_exist=False) if "report" in data else None,
        threshold=threshold, still_online_days=float(data.get("still_online_days", 7.0)),
        keep_runs_days=float(data.get("keep_runs_days", 90.0)), jobs=data.get("jobs"),
        complaint_template=_template(local("complaint_template", data["complaint_template"]), fail)
        if "complaint_template" in data else None,
    )


def _template(path: str, fail: Callable[[str, str], ConfigError]) -> str:
    """A complaint template that compiles: a broken one stops the run before it starts, not
    after it has recorded what it found."""
    try:
        complaint_drafter(path)
    except ImguardError as exc:
        raise fail("complaint_template", str(exc)) from exc
    return path


def _check_keys(data: dict[str, Any], known: dict[str, tuple[tuple[type, ...], str]], prefix: str,
                fail: Callable[[str, str], ConfigError]) -> None:
    for key, value in data.items():
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")
        types, what = known[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise fail(f"{prefix}{key}", f"expected {what}, not {type(value).__name__} {value!r}")


# -- the run ----------------------------------------------------------------------------------


CHANGES = ("new", "reappeared", "resolved", "still_online_after_report", "ongoing")


@dataclass
class NightlyResult:
    """What a nightly run did, and what changed since the last run that reported."""

    run_id: int | None
    dry_run: bool = False
    changes: dict[str, list[Finding]] = field(default_factory=lambda: {k: [] for k in CHANGES})
    sources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    index: Any = None  # the catalog step's IndexResult
    report: ReportFolder | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def alert(self) -> bool:
        """Something the seller must hear about: a new finding, or one that came back."""
        return bool(self.changes["new"] or self.changes["reappeared"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "dry_run": self.dry_run,
            **{k: [f.as_dict() for f in v] for k, v in self.changes.items()},
            "sources": self.sources, "errors": [{"path": e.path, "error": e.error} for e in self.errors],
            "index": self.index.as_dict() if self.index is not None else None,
            "report": self.report.index if self.report else None, "stats": self.stats,
        }


def run_nightly(catalog: Any, config: Config, *, dry_run: bool = False, wait: float = 0.0,
                progress: Callable[[int], None] | None = None) -> NightlyResult:
    """One nightly run of `config` on `catalog` (an imguard.Catalog); see the module docstring.
    `dry_run` checks the configuration and the sources and changes nothing. `wait`: seconds to
    wait for another run holding the catalog's writer lock (LockHeld after that)."""
    if dry_run:
        return _dry_run(config)
    with catalog.writing(wait):
        return _Night(catalog, config, progress).run()


def _dry_run(config: Config) -> NightlyResult:
    """What a run would read: each source listed, nothing written."""
    result = NightlyResult(run_id=None, dry_run=True)
    for source in config.sources:
        listing_errors: list[ScanError] = []
        try:
            count = sum(1 for _ in iter_records(source.location, allowed_roots=source.allowed_roots,
                                                on_error=lambda p, r: listing_errors.append(ScanError(p, r))))
            error = None
        except ImguardError as exc:
            count, error = 0, str(exc)
            result.errors.append(ScanError(source.location, error))
        result.errors += listing_errors
        result.sources.append({"name": source.name, "location": source.location, "listed": count,
                               "complete": error is None and not listing_errors, "error": error})
    return result


def _settings(config: Config) -> dict[str, Any]:
    """What a run's findings depend on: when it changes, every competitor image is read again."""
    return {"threshold": config.threshold, "fingerprint_version": fingerprint.FINGERPRINT_VERSION,
            "imguard": __version__}


class _Night:
    def __init__(self, catalog: Any, config: Config, progress: Callable[[int], None] | None) -> None:
        self.catalog = catalog
        self.config = config
        self.progress = progress
        self.store = catalog.store
        self.history = History(self.store)
        self.result = NightlyResult(run_id=None)
        self.stats = {"listed": 0, "unchanged": 0, "scanned": 0, "rescanned_for_new_own_images": 0,
                      "new_own_images": 0, "seconds": 0.0}

    def run(self) -> NightlyResult:
        start = time.perf_counter()
        last = self.history.last_complete_run()  # what was read: the base of what changed
        self.since = self.history.last_reported_run()  # what was said: the base of the summary
        settings = _settings(self.config)
        self.full = last is None or {k: last.settings.get(k) for k in settings} != settings
        self.run_id = self.history.start_run({**settings, "sources": [s.name for s in self.config.sources]},
                                             self.store.generation, __version__)
        self.result.run_id = self.run_id
        lap = _Laps(self.stats)
        self.result.index = self.catalog.add(list(self.config.catalog), manifest=self.config.manifest,
                                             jobs=self.config.jobs)
        lap("catalog")
        self.result.errors += self.result.index.errors
        self.history.catalog_indexed(self.run_id, self.store.generation)
        changed_own = [] if self.full else self.store.fingerprinted_since(last.indexed_at)
        self.stats["new_own_images"] = len(changed_own)

        unchanged: dict[int, tuple[Source, CompetitorState]] = {}
        complete: list[str] = []
        for source in self.config.sources:
            kept, whole = self._source(source)
            unchanged.update({state.id: (source, state) for state in kept})
            if whole:
                complete.append(source.name)
        lap("sources")
        if changed_own:
            again = self._look_for(changed_own, set(unchanged))
            self.stats["rescanned_for_new_own_images"] = len(again)
            by_source: dict[str, list[Record]] = {}
            facts: dict[str, tuple[float | None, str | None]] = {}
            for cid, name, location, metadata in self.history.competitors(again):
                by_source.setdefault(name, []).append(Record(location, metadata))
                state = unchanged.pop(cid)[1]
                facts[location] = (state.mtime, state.etag)  # unchanged: what made it so, kept
            for source in self.config.sources:
                self._scan(source, by_source.get(source.name, []), facts)
            lap("new_own_images")
        self.history.sight_unchanged(self.run_id, self.since, unchanged, skip=set(changed_own))
        self.stats["unchanged"] = len(unchanged)
        self.history.complete(self.run_id, complete)
        self.history.prune_runs(time.time() - self.config.keep_runs_days * 86400)
        self.result.changes = self._changes()
        lap("findings")
        if self.config.report:
            try:
                self.result.report = self._report()
            except (ImguardError, OSError) as exc:  # the run is recorded: say so, and go on
                self.result.errors.append(ScanError(self.config.report, f"the report was not written ({exc})"))
            lap("report")
        self.history.reported(self.run_id)
        self.stats["seconds"] = round(time.perf_counter() - start, 3)
        self.result.stats = self.stats
        return self.result

    # -- sources --

    def _source(self, source: Source) -> tuple[list[CompetitorState], bool]:
        """List a source, scan what is new or changed; (the unchanged images, whether the
        source was listed completely)."""
        errors: list[ScanError] = []
        try:
            records = list(iter_records(source.location, allowed_roots=source.allowed_roots,
                                        on_error=lambda p, r: errors.append(ScanError(p, r))))
        except ImguardError as exc:
            self.result.errors.append(ScanError(source.location, str(exc)))
            self.history.source_read(self.run_id, source.name, complete=False, error=str(exc), listed=0, scanned=0)
            self.result.sources.append({"name": source.name, "complete": False, "error": str(exc), "listed": 0,
                                        "scanned": 0})
            return [], False
        self.states = states = self.history.competitor_states(source.name)
        listing_errors = len(errors)  # a folder or a manifest row that could not be read
        kept: list[CompetitorState] = []
        held: list[int] = []
        todo: list[Record] = []
        facts: dict[str, tuple[float | None, str | None]] = {}  # location → (mtime, validator)
        metadata_changes = []
        for batch in engine.chunked(records, REMOTE_BATCH):
            for record, verdict in self._changed(source, batch, states, facts, errors):
                state = states.get(record.location)
                if verdict == "unchanged" and state is not None:
                    kept.append(state)
                    if state.metadata != metadata_json(record.metadata):
                        metadata_changes.append((state.id, record.metadata))
                elif verdict == "changed":
                    todo.append(record)
                elif verdict == "unreadable" and state is not None:
                    held.append(state.id)  # there, but not read tonight: its findings stay as they are
                # "gone": not listed, so its findings are resolved when the run completes
        self.history.seen(self.run_id, [state.id for state in kept] + held)
        self.history.set_metadata(metadata_changes)
        scanned = self._scan(source, todo, facts)
        self.result.errors += errors
        self.stats["listed"] += len(records)
        complete = not listing_errors
        error = "; ".join(e.error for e in errors[:3]) or None
        self.history.source_read(self.run_id, source.name, complete=complete, error=error, listed=len(records),
                                 scanned=scanned)
        self.result.sources.append({"name": source.name, "complete": complete, "error": error,
                                    "listed": len(records), "scanned": scanned})
        return kept, complete

    def _changed(self, source: Source, batch: list[Record], states: dict, facts: dict,
                 errors: list[ScanError]) -> Iterable[tuple[Record, str]]:
        """Each record's verdict: "unchanged", "changed" (new, or to read again), "gone" (a file
        no longer there, a URL that answers 404 or 410) or "unreadable" (an error that says
        nothing about the image: a server error, a timeout)."""
        remote = [r.location for r in batch if fetch.is_remote(r.location)]
        downloads = fetch.fetch_many(remote, revalidate=True, **source.fetch_options) if remote else {}
        for record in batch:
            state = states.get(record.location)
            if record.location in downloads:
                got = downloads[record.location]
                if isinstance(got, ImageError):
                    errors.append(ScanError(record.location, got.reason))
                    yield record, "gone" if got.reason.startswith(GONE) else "unreadable"
                    continue
                facts[record.location] = (None, got.validator)
                same = state is not None and state.sha256 == hashlib.sha256(got.data).hexdigest()
            else:
                try:
                    st = os.stat(record.location)
                except OSError:
                    yield record, "gone"  # listed a moment ago, gone now
                    continue
                facts[record.location] = (st.st_mtime, None)
                same = state is not None and (state.nbytes, state.mtime) == (st.st_size, st.st_mtime)
            yield record, "unchanged" if same and not self.full and not state.gone else "changed"

    def _scan(self, source: Source, records: list[Record], facts: dict) -> int:
        """Scan records in chunks; each chunk's images and findings commit together."""
        if not records:
            return 0
        matcher = self.catalog.matcher(threshold=self.config.threshold, keep_prints=True,
                                       fetch_options=source.fetch_options)
        done = 0
        jobs = self.config.jobs or engine.default_jobs()
        for chunk in engine.run_chunks(scan.match_chunk, matcher, records, jobs=jobs):
            with self.history.db:
                for outcome in chunk:
                    self._record(source, outcome, facts)
            done += len(chunk)
            if self.progress:
                self.progress(len(chunk))
        self.stats["scanned"] += done
        return done

    def _record(self, source: Source, outcome: Outcome, facts: dict) -> None:
        if outcome.error is not None or outcome.prints is None:
            self.result.errors.append(outcome.error or ScanError(outcome.path, "not read"))
            known = self.states.get(outcome.path)
            if known is not None:  # there, but unreadable tonight: its findings stay as they are
                self.history.seen(self.run_id, [known.id])
            return
        mtime, validator = facts.get(outcome.path, (None, None))
        cid = self.history.record_competitor(self.run_id, source.name, outcome.record, outcome.prints, mtime=mtime,
                                             etag=validator)
        matched = set()
        for match in outcome.matches:
            self.history.sight(self.run_id, self.since, cid, match.reference_id, match)
            matched.add(match.reference_id)
        self.history.missing(self.run_id, cid, matched)

    # -- own images new since the last run --

    def _look_for(self, image_ids: list[int], competitor_ids: set[int]) -> set[int]:
        """Unchanged competitor images to read again for these own images (new or changed since
        the last complete run): those holding a finding of one of them (an own image that changed
        is checked again wherever it was found), and those in which one of them verifies, from
        what the history kept of the image (`scan.reverse_candidates`, then
        `Matcher.verify_prints`), within REVERSE_MARGIN of the threshold."""
        own, mirrors = [], {}
        for image_id in image_ids:
            ref = self.store.reference(image_id)
            try:
                plain, mirror = fingerprint.features_of_file(ref.abspath or ref.path)
            except ImageError as exc:
                self.result.errors.append(ScanError(ref.path, exc.reason))
                continue
            own.append((image_id, np.concatenate([plain[1], mirror[1]]), ref.hashes))
            mirrors[image_id] = mirror
        engine.single_thread_faiss()
        candidates = scan.reverse_candidates(own, self.history.iter_fingerprints(sorted(competitor_ids)))
        matcher = self.catalog.matcher(threshold=self.config.threshold)
        # on the run's processes, as a scan: half of the 10,000-image benchmark's night after
        # 10 new own images went here on one core (6,400 candidates, ~6 ms each)
        work = ((competitor_id, *self.history.prints(competitor_id), image_ids_there)
                for competitor_id, image_ids_there in candidates.items())
        again = set()
        for chunk in engine.run_chunks(scan.verify_chunk, (matcher, mirrors), work,
                                       jobs=self.config.jobs or engine.default_jobs()):
            again.update(competitor_id for competitor_id, best in chunk
                         if best >= self.config.threshold - REVERSE_MARGIN)
        self.stats["reverse_candidates"] = len(candidates)
        return (again | self.history.findings_of_images(image_ids)) & competitor_ids

    # -- what changed, and the report --

    def _current(self, found: list[Finding]) -> list[Finding]:
        """Findings of own images still in the catalog, in sources still configured (a source
        renamed or removed keeps its history, out of sight)."""
        in_catalog, sources = self.store.ids(), {s.name for s in self.config.sources}
        return [f for f in found if f.image_id in in_catalog and f.source in sources]

    def _changes(self) -> dict[str, list[Finding]]:
        h, since = self.history, self.since

        def alerts(found: list[Finding]) -> list[Finding]:
            return [f for f in self._current(found) if not f.silenced]

        seen_now = h.findings(statuses=ACTIVE, seen_since_run=since)
        days = self.config.still_online_days * 86400
        return {
            "new": alerts(h.findings(statuses=["new"], status_since_run=since)),
            "reappeared": alerts(h.findings(statuses=["reappeared"], status_since_run=since)),
            "resolved": alerts(h.findings(statuses=["resolved"], status_since_run=since)),
            "still_online_after_report": alerts([
                f for f in seen_now if f.mark == "reported" and f.marked_at is not None
                and f.last_seen - f.marked_at >= days]),
            "ongoing": alerts([f for f in seen_now if f.status == "ongoing"]),
        }

    def _report(self) -> ReportFolder:
        """The evidence report of every finding still online, and of those resolved tonight,
        each with its status and mark."""
        from .evidence import write_report

        shown = self._current(self.history.findings(statuses=ACTIVE, with_match=True) + self.history.findings(
            statuses=["resolved"], status_since_run=self.since, with_match=True))
        # each pair as its competitor image is listed now (a manifest edited since its sighting)
        matches = [dataclasses.replace(f.match, query_metadata=f.metadata or f.match.query_metadata) for f in shown]
        return write_report(matches, self.config.report, store=self.store,
                            complaint_template=self.config.complaint_template,
                            annotations=[_annotation(f, self.config.db) for f in shown],
                            query_pictures=self._competitor_picture,
                            stats={"run": self.run_id, **{k: len(v) for k, v in self.result.changes.items()}})

    def _competitor_picture(self, location: str, sha256: str) -> Picture | str:
        """The competitor image itself, else the thumbnail of its last sighting."""
        shown = file_picture(location, sha256)
        if isinstance(shown, Picture):
            return shown
        sighting = self.history.last_sighting(location)
        if sighting is None:
            return shown
        thumbnail, box = sighting
        return Picture(fingerprint.decode_thumbnail(thumbnail), box, note="as last seen")


class _Laps:
    """Seconds spent in each step of a run, into its stats (`seconds_<step>`)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.stats[f"seconds_{step}"] = round(now - self.last, 3)
        self.last = now


def _annotation(finding: Finding, db: str) -> dict[str, Any]:
    """What the report shows of a finding beside its pair: status, mark, dates, the command (its
    catalog path quoted for a shell); a silenced finding is never put in a complaint."""
    shown = finding.as_dict()
    return {"finding": finding.id, "status": finding.status, "mark": finding.mark, "mark_note": finding.mark_note,
            "silenced": finding.silenced, "first_seen": shown["first_seen"], "last_seen": shown["last_seen"],
            "db": shlex.quote(db)}

