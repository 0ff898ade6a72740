"""Matches over time → findings: what each nightly run saw, and what changed since the last one.

Kept in the catalog store (schema 4, tables created by `store`): `runs` (one per nightly run, and
whether it completed), `run_sources` (whether each source was read completely), `competitor_images`
(each competitor image seen: where, its SHA-256, size and mtime or ETag, listing metadata, and
its fingerprint, so that a new own image can be looked for in it without reading it again),
`findings` (one per own image × competitor image pair that matched) and `marks` (the seller's
decisions).

A finding's status, as each run sees it:

- ``new``: first seen (since the last run that reported what it found);
- ``ongoing``: seen before, and again;
- ``resolved``: seen before; its competitor image is gone, or was read again and no longer
  matches, in a source that was read completely, by a run that completed;
- ``reappeared``: resolved, then seen again.

A run that did not complete (killed, crashed) changes what it committed and resolves nothing; the
next run takes over, and reports as new what the killed one found first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine import chunked
from .errors import ImguardError
from .fingerprint import FINGERPRINT_VERSION
from .scan import Match, QueryPrints
from .sources import Record
from .store import Store, guarded, path_from_db, path_to_db

STATUSES = ("new", "ongoing", "resolved", "reappeared")
MARKS = ("reported", "ignored", "licensed", "not-a-copy")
SILENCED = frozenset({"ignored", "licensed", "not-a-copy"})  # never alerted again
ACTIVE = ("new", "ongoing", "reappeared")
# Ids per SQL statement at most: SQLite's limit on bound variables is 999 in older builds.
BATCH = 500


def metadata_json(metadata: dict[str, str]) -> str:
    """A competitor image's metadata as the history keeps it: comparing two is comparing these."""
    return json.dumps(metadata, sort_keys=True)


class MarkError(ImguardError):
    """A mark that cannot be applied: no such finding, or an unknown mark."""


@dataclass(frozen=True)
class Run:
    id: int
    started_at: float
    indexed_at: float  # when its catalog step ended
    complete: bool
    settings: dict[str, Any]


@dataclass(frozen=True)
class CompetitorState:
    """What a run needs to decide whether a competitor image changed."""

    id: int
    sha256: str | None
    nbytes: int | None
    mtime: float | None
    etag: str | None  # the URL's validator (ETag, Last-Modified) when it was read
    metadata: str  # metadata_json, as stored
    gone: bool


@dataclass(frozen=True)
class Finding:
    """One own image found in one competitor image, over time."""

    id: int
    image_id: int
    competitor_id: int
    reference: str
    query: str
    listing: str
    seller: str
    source: str
    status: str
    status_run: int
    score: float  # the best score it had
    first_seen: float
    last_seen: float
    last_run: int
    mark: str | None = None
    mark_note: str | None = None
    marked_at: float | None = None
    match: Match | None = field(default=None, repr=False)  # its last sighting
    metadata: dict[str, str] = field(default_factory=dict)  # its competitor image's, as listed last

    @property
    def silenced(self) -> bool:
        return self.mark in SILENCED

    def as_dict(self) -> dict[str, Any]:
        """What `imguard nightly --format json` and `imguard findings` show of a finding."""
        return {
            "id": self.id, "status": self.status, "reference": self.reference, "query": self.query,
            "listing": self.listing, "seller": self.seller, "source": self.source, "score": round(self.score, 4),
            "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen), "mark": self.mark,
            "mark_note": self.mark_note,
        }


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class History:
    """The history tables of one store."""

    def __init__(self, store: Store) -> None:
        self.db = store.connection
        self.path = store.path  # SQLite's errors name it: StoreError (see store.guarded)

    # -- runs -----------------------------------------------------------------------------

    @guarded
    def start_run(self, settings: dict[str, Any], generation: int, version: str) -> int:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO runs (started_at, imguard_version, catalog_generation, settings) VALUES (?, ?, ?, ?)",
                (time.time(), version, generation, json.dumps(settings, sort_keys=True)))
        return int(cursor.lastrowid)

    @guarded
    def last_complete_run(self) -> Run | None:
        row = self.db.execute("SELECT id, started_at, indexed_at, settings FROM runs WHERE complete = 1"
                              " ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else Run(row[0], row[1], row[2] or row[1], True, json.loads(row[3]))

    @guarded
    def last_reported_run(self) -> int:
        """The id of the last run whose report and summary were made (0: none): what changed
        after it is what the next summary says, even when a run in between was killed before it
        could say it."""
        row = self.db.execute("SELECT MAX(id) FROM runs WHERE reported = 1").fetchone()
        return int(row[0] or 0)

    @guarded
    def reported(self, run_id: int) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET reported = 1 WHERE id = ?", (run_id,))

    @guarded
    def catalog_indexed(self, run_id: int, generation: int) -> None:
        """The run's catalog step is done: own images fingerprinted after now are new to the
        next run."""
        with self.db:
            self.db.execute("UPDATE runs SET indexed_at = ?, catalog_generation = ? WHERE id = ?",
                            (time.time(), generation, run_id))

    @guarded
    def source_read(self, run_id: int, source: str, *, complete: bool, error: str | None, listed: int,
                    scanned: int) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO run_sources (run_id, source, complete, error, listed, scanned)"
                " VALUES (?, ?, ?, ?, ?, ?)", (run_id, source, int(complete), error, listed, scanned))

    @guarded
    def prune_runs(self, older_than: float) -> int:
        """Forget runs that started before `older_than` (seconds since the epoch); the last
        complete run is always kept (incremental runs start from it)."""
        last = self.last_complete_run()
        with self.db:
            cursor = self.db.execute("DELETE FROM runs WHERE started_at < ? AND id != ?",
                                     (older_than, last.id if last else -1))
        return cursor.rowcount

    # -- competitor images ----------------------------------------------------------------

    @guarded
    def competitor_states(self, source: str) -> dict[str, CompetitorState]:
        return {
            path_from_db(row[0]): CompetitorState(row[1], row[2], row[3], row[4], row[5], row[6], row[7] is not None)
            for row in self.db.execute(
                "SELECT location, id, sha256, nbytes, mtime, etag, metadata, gone_run FROM competitor_images"
                " WHERE source = ?", (source,))
        }

    @guarded
    def seen(self, run_id: int, ids: Iterable[int]) -> None:
        """These competitor images were listed in this run, unchanged."""
        with self.db:
            self.db.executemany("UPDATE competitor_images SET seen_run = ?, gone_run = NULL WHERE id = ?",
                                [(run_id, i) for i in ids])

    @guarded
    def set_metadata(self, ids_metadata: Iterable[tuple[int, dict[str, str]]]) -> None:
        """New metadata of unchanged competitor images (a manifest edited): their findings take
        the new listing and seller, which marks go by."""
        rows = list(ids_metadata)
        with self.db:
            self.db.executemany("UPDATE competitor_images SET metadata = ? WHERE id = ?",
                                [(metadata_json(m), i) for i, m in rows])
            self.db.executemany("UPDATE findings SET listing = ?, seller = ? WHERE competitor_id = ?",
                                [(path_to_db(m.get("listing", "")), path_to_db(m.get("seller", "")), i)
                                 for i, m in rows])

    @guarded
    def record_competitor(self, run_id: int, source: str, record: Record, prints: QueryPrints, *,
                          mtime: float | None, etag: str | None) -> int:
        """Insert or update a competitor image read in this run, with what the scan kept of it.
        Call inside the transaction that records its findings: a kill loses both or neither."""
        values = {
            "source": source, "location": path_to_db(record.location), "sha256": prints.sha256,
            "nbytes": prints.nbytes, "mtime": mtime, "etag": etag, "metadata": metadata_json(record.metadata),
            "width": prints.size[0], "height": prints.size[1], "box_x0": prints.box[0], "box_y0": prints.box[1],
            "box_x1": prints.box[2], "box_y1": prints.box[3], "view_w": prints.view_size[0],
            "view_h": prints.view_size[1], "hashes": prints.hashes, "keypoints": prints.keypoints,
            "descriptors": prints.descriptors, "neighbours": prints.neighbour_distances,
            "thumbnail": prints.thumbnail, "hash_floor": prints.hash_floor, "vote_floor": prints.vote_floor,
            "fingerprint_version": FINGERPRINT_VERSION, "fingerprinted_at": time.time(), "seen_run": run_id,
        }
        columns = ", ".join(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values if c not in ("source", "location"))
        self.db.execute(f"INSERT INTO competitor_images ({columns}, gone_run) VALUES ({', '.join('?' * len(values))},"
                        f" NULL) ON CONFLICT (source, location) DO UPDATE SET {updates}, gone_run = NULL",
                        list(values.values()))
        return int(self.db.execute("SELECT id FROM competitor_images WHERE source = ? AND location = ?",
                                   (source, values["location"])).fetchone()[0])

    @guarded
    def last_sighting(self, location: str) -> tuple[bytes, tuple[int, int, int, int]] | None:
        """The thumbnail a run kept of a competitor image (its canonical view), and the part of
        the image it shows."""
        row = self.db.execute("SELECT thumbnail, box_x0, box_y0, box_x1, box_y1 FROM competitor_images"
                              " WHERE location = ? AND thumbnail IS NOT NULL ORDER BY id DESC LIMIT 1",
                              (path_to_db(location),)).fetchone()
        return (row[0], tuple(row[1:5])) if row else None

    @guarded
    def iter_fingerprints(self, ids: Sequence[int], batch: int = 512):
        """(competitor id, hashes, descriptors N×32 bytes, their neighbour distances, hash floor,
        vote floor) of these competitor images, a batch of rows at a time: all of them never sit
        in memory at once."""
        yield from self._rows_in("SELECT id, hashes, descriptors, neighbours, hash_floor, vote_floor"
                                 " FROM competitor_images WHERE id IN ({ids}) AND hashes IS NOT NULL", ids, batch)

    def _rows_in(self, sql: str, ids: Iterable[int], batch: int = BATCH) -> Iterator[tuple]:
        """The rows of `sql`, whose `{ids}` is an IN list, for these ids: a batch of ids per
        statement (SQLite caps a statement's variables), the rows as they come."""
        for part in chunked(ids, batch):
            yield from self.db.execute(sql.format(ids=",".join("?" * len(part))), part)

    @guarded
    def prints(self, competitor_id: int) -> tuple[Record, QueryPrints]:
        """What a run kept of a competitor image, as the scan gave it."""
        row = self.db.execute(
            "SELECT location, metadata, sha256, nbytes, width, height, box_x0, box_y0, box_x1, box_y1, view_w, view_h,"
            " hashes, keypoints, descriptors, neighbours, thumbnail, hash_floor, vote_floor FROM competitor_images"
            " WHERE id = ?", (competitor_id,)).fetchone()
        return Record(path_from_db(row[0]), json.loads(row[1])), QueryPrints(
            sha256=row[2], nbytes=row[3], size=(row[4], row[5]), box=tuple(row[6:10]), view_size=(row[10], row[11]),
            hashes=row[12], keypoints=row[13], descriptors=row[14], neighbour_distances=row[15], thumbnail=row[16],
            hash_floor=row[17], vote_floor=row[18])

    @guarded
    def competitors(self, ids: Iterable[int]) -> list[tuple[int, str, str, dict[str, str]]]:
        """(id, source, location, metadata) of these competitor images."""
        return [(r[0], r[1], path_from_db(r[2]), json.loads(r[3])) for r in self._rows_in(
            "SELECT id, source, location, metadata FROM competitor_images WHERE id IN ({ids})", ids)]

    # -- findings -------------------------------------------------------------------------

    @guarded
    def sight(self, run_id: int, since: int, competitor_id: int, image_id: int, match: Match,
              now: float | None = None) -> int:
        """A finding seen in this run (with `match` as its evidence). `since`: the last reported
        run's id (0 for none): a status set after it is what the next summary says."""
        now = time.time() if now is None else now
        evidence = json.dumps(match.as_dict())  # ASCII: a non-UTF-8 file name is escaped, losslessly
        row = self.db.execute("SELECT id, status, status_run, best_score FROM findings"
                              " WHERE image_id = ? AND competitor_id = ?", (image_id, competitor_id)).fetchone()
        meta = match.query_metadata
        if row is None:
            cursor = self.db.execute(
                "INSERT INTO findings (image_id, competitor_id, listing, seller, status, status_run, first_seen,"
                " last_seen, first_run, last_run, best_score, evidence) VALUES (?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?)",
                (image_id, competitor_id, path_to_db(meta.get("listing", "")), path_to_db(meta.get("seller", "")),
                 run_id, now, now, run_id, run_id, match.score, evidence))
            return int(cursor.lastrowid)
        finding_id, status, status_run, best = row
        status, status_run = _sighted(status, status_run, run_id, since)
        self.db.execute(
            "UPDATE findings SET status = ?, status_run = ?, last_seen = ?, last_run = ?, missing_run = NULL,"
            " best_score = ?, evidence = ?, listing = ?, seller = ? WHERE id = ?",
            (status, status_run, now, run_id, max(best, match.score), evidence,
             path_to_db(meta.get("listing", "")), path_to_db(meta.get("seller", "")), finding_id))
        return int(finding_id)

    @guarded
    def sight_unchanged(self, run_id: int, since: int, competitor_ids: Iterable[int], skip: set[int]) -> int:
        """The findings of competitor images listed unchanged in this run are seen again, with
        the evidence they had (the file and the own image are what they were). Findings of own
        images in `skip` (changed since) are left to their rescan, and those found no longer
        matching by an earlier run that did not complete stay so, to be resolved."""
        now = time.time()
        rows = list(self._rows_in(  # the findings of own images still in the catalog
            "SELECT id, status, status_run, image_id FROM findings WHERE competitor_id IN ({ids})"
            " AND status != 'resolved' AND missing_run IS NULL AND image_id IN (SELECT id FROM images)", competitor_ids))
        updates = [(*_sighted(status, status_run, run_id, since), now, run_id, fid)
                   for fid, status, status_run, image_id in rows if image_id not in skip]
        with self.db:
            self.db.executemany("UPDATE findings SET status = ?, status_run = ?, last_seen = ?, last_run = ?"
                                " WHERE id = ?", updates)
        return len(updates)

    @guarded
    def missing(self, run_id: int, competitor_id: int, matched: set[int]) -> None:
        """A competitor image read again in this run: its active findings that did not match
        again are to be resolved when a run completes."""
        for fid, image_id in self.db.execute(
                "SELECT id, image_id FROM findings WHERE competitor_id = ? AND status != 'resolved'",
                (competitor_id,)).fetchall():
            if image_id not in matched:
                self.db.execute("UPDATE findings SET missing_run = COALESCE(missing_run, ?) WHERE id = ?",
                                (run_id, fid))

    @guarded
    def findings_of_images(self, image_ids: Iterable[int]) -> set[int]:
        """Competitor images with an active finding on one of these own images."""
        return {r[0] for r in self._rows_in(
            "SELECT competitor_id FROM findings WHERE image_id IN ({ids}) AND status != 'resolved'", image_ids)}

    @guarded
    def complete(self, run_id: int, sources: Sequence[str]) -> None:
        """End a run: in the sources it read completely, competitor images it did not list are
        gone and their findings resolved, as are the findings read again and no longer matched.
        One transaction: a kill here resolves nothing, and the next run does it."""
        with self.db:
            for source in sources:
                self.db.execute("UPDATE competitor_images SET gone_run = ? WHERE source = ? AND gone_run IS NULL"
                                " AND (seen_run IS NULL OR seen_run < ?)", (run_id, source, run_id))
            marks = ",".join("?" * len(sources))
            if sources:
                self.db.execute(
                    "UPDATE findings SET status = 'resolved', status_run = ?, missing_run = NULL"
                    f" WHERE status != 'resolved' AND competitor_id IN (SELECT id FROM competitor_images"
                    f" WHERE source IN ({marks}) AND (gone_run IS NOT NULL))", (run_id, *sources))
                self.db.execute(
                    "UPDATE findings SET status = 'resolved', status_run = ?, missing_run = NULL"
                    f" WHERE status != 'resolved' AND missing_run IS NOT NULL AND competitor_id IN"
                    f" (SELECT id FROM competitor_images WHERE source IN ({marks}))", (run_id, *sources))
            self.db.execute("UPDATE runs SET complete = 1, ended_at = ? WHERE id = ?", (time.time(), run_id))

    # -- reading findings -----------------------------------------------------------------

    @guarded
    def findings(self, *, ids: Iterable[int] | None = None, statuses: Sequence[str] | None = None,
                 listing: str | None = None, seen_since_run: int | None = None,
                 status_since_run: int | None = None, first_seen_before: float | None = None,
                 with_match: bool = False) -> list[Finding]:
        """Findings, newest first, with their mark (the latest of their own, their listing's and
        their seller's); filtered by id, status, listing, the runs that saw them or set their
        status, or age (first seen before a time)."""
        ids = None if ids is None else list(ids)
        conditions = [
            (ids is not None, f"f.id IN ({','.join('?' * len(ids or [])) or 'NULL'})", ids or []),
            (bool(statuses), f"f.status IN ({','.join('?' * len(statuses or []))})", list(statuses or [])),
            (listing is not None, "f.listing = ?", [path_to_db(listing or "")]),
            (seen_since_run is not None, "f.last_run > ?", [seen_since_run]),
            (status_since_run is not None, "f.status_run > ?", [status_since_run]),
            (first_seen_before is not None, "f.first_seen < ?", [first_seen_before]),
        ]
        where = ["1 = 1"] + [sql for wanted, sql, _ in conditions if wanted]
        args = [value for wanted, _, values in conditions if wanted for value in values]
        rows = self.db.execute(
            "SELECT f.id, f.image_id, f.competitor_id, f.listing, f.seller, c.source, c.location, f.status,"
            " f.status_run, f.best_score, f.first_seen, f.last_seen, f.last_run, f.evidence, c.metadata"
            " FROM findings f JOIN competitor_images c ON c.id = f.competitor_id"
            f" WHERE {' AND '.join(where)} ORDER BY f.id DESC", args).fetchall()
        marks = self._marks()
        out = []
        for row in rows:
            evidence = json.loads(row[13])
            # the latest of the marks that apply (by id: a listing licensed after a finding was
            # reported silences it)
            mark = max((m for m in (marks.get(("finding", row[0])), marks.get(("listing", row[3])),
                                    marks.get(("seller", row[4]))) if m), default=None)
            out.append(Finding(
                id=row[0], image_id=row[1], competitor_id=row[2], listing=path_from_db(row[3]),
                seller=path_from_db(row[4]), source=row[5], query=evidence["query"],
                reference=evidence["reference"], status=row[7], status_run=row[8], score=row[9], first_seen=row[10],
                last_seen=row[11], last_run=row[12], mark=mark[1] if mark else None,
                mark_note=mark[2] if mark else None, marked_at=mark[3] if mark else None,
                match=Match.from_dict(evidence) if with_match else None, metadata=json.loads(row[14])))
        return out

    def _marks(self) -> dict[tuple[str, Any], tuple[int, str, str | None, float]]:
        """The latest mark of each finding, listing and seller: (id, mark, note, time)."""
        latest: dict[tuple[str, Any], tuple[int, str, str | None, float]] = {}
        for mark_id, finding_id, listing, seller, mark, note, created in self.db.execute(
                "SELECT id, finding_id, listing, seller, mark, note, created_at FROM marks ORDER BY id"):
            key = ("finding", finding_id) if finding_id is not None else (
                ("listing", listing) if listing is not None else ("seller", seller))
            latest[key] = (mark_id, mark, note, created)
        return latest

    # -- marks ----------------------------------------------------------------------------

    @guarded
    def mark(self, mark: str, *, finding_id: int | None = None, listing: str | None = None,
             seller: str | None = None, note: str | None = None) -> int:
        """Record the seller's decision about one finding, or (``licensed`` only) every finding,
        present and future, of a listing or a seller. The latest mark that applies counts."""
        return self.mark_many([(mark, finding_id, listing, seller, note)], numbered=False)[0]

    @guarded
    def mark_many(self, marks: Sequence[tuple[str, int | None, str | None, str | None, str | None]], *,
                  numbered: bool = True) -> list[int]:
        """Several marks (mark, finding id, listing, seller, note) in one transaction: every one
        is checked first, and one that is wrong (MarkError, naming it by its number) records
        none of them."""
        for number, (mark, finding_id, listing, seller, note) in enumerate(marks, start=1):
            where = f"decision {number}: " if numbered else ""
            if mark not in MARKS:
                raise MarkError(f"{where}unknown mark {mark!r}: one of {', '.join(MARKS)}")
            if (finding_id is None) == (listing is None and seller is None) or (listing is not None and seller is not None):
                raise MarkError(f"{where}mark one finding (its id), or one listing or one seller")
            if listing == "" or seller == "":
                raise MarkError(f"{where}an empty listing or seller names nothing to mark")
            if finding_id is None and mark != "licensed":
                raise MarkError(f"{where}a whole listing or seller can only be marked licensed")
            if note is not None and not isinstance(note, str):
                raise MarkError(f"{where}a note is text, not {type(note).__name__}")
            if finding_id is not None and not self.db.execute("SELECT 1 FROM findings WHERE id = ?",
                                                              (finding_id,)).fetchone():
                raise MarkError(f"{where}no finding with id {finding_id}")
        now = time.time()
        with self.db:
            return [int(self.db.execute(
                "INSERT INTO marks (finding_id, listing, seller, mark, note, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (finding_id, None if listing is None else path_to_db(listing),
                 None if seller is None else path_to_db(seller), mark, note, now)).lastrowid)
                    for mark, finding_id, listing, seller, note in marks]


def _sighted(status: str, status_run: int, run_id: int, since: int) -> tuple[str, int]:
    """The status of a finding seen again in run `run_id`: resolved ones reappear; a status set
    since the last reported run (`since`) stands, so that the next summary still says it;
    anything older is ongoing."""
    if status == "resolved":
        return "reappeared", run_id
    if status_run > since:
        return status, status_run
    return "ongoing", run_id
