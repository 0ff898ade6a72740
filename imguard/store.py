"""The embedded store: one SQLite file that is the truth about the catalog.

FAISS indexes are derived from it and rebuilt whenever they are missing or stale (see index.py).
The schema carries a version from the start, so that later features (evidence reports, nightly
history) add tables through migrations instead of a rewrite.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ._version import __version__
from .errors import CatalogError, StoreError
from .fingerprint import FINGERPRINT_VERSION, Fingerprint

# 2: images.fingerprint_version (a catalog fingerprinted by an older imguard is re-fingerprinted)
# 3: images.first_indexed_at (evidence: since when the seller's image is known); image ids are
#    never reused (AUTOINCREMENT): a pruned image's id never names another image
# 4: history (imguard.history): runs, run_sources, competitor_images, findings, marks
SCHEMA_VERSION = 4
DB_NAME = "catalog.sqlite"
BUSY_TIMEOUT = 30.0  # seconds a connection waits for another's write before it fails
METADATA_FIELDS = ("sku", "asin", "url", "title")
_FILE_COLUMNS = ("path", "abspath", "sha256", "nbytes", "mtime", "width", "height", "box_x0", "box_y0",
                 "box_x1", "box_y1", "view_w", "view_h", "phash", "dhash", "fingerprint_version", "added_at")

_IMAGES = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,              -- as the user gave it: what reports show
    abspath TEXT NOT NULL UNIQUE,    -- identity of the file across runs
    sha256 TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    box_x0 INTEGER NOT NULL, box_y0 INTEGER NOT NULL, box_x1 INTEGER NOT NULL, box_y1 INTEGER NOT NULL,
    view_w INTEGER NOT NULL,
    view_h INTEGER NOT NULL,
    phash BLOB NOT NULL,
    dhash BLOB NOT NULL,
    sku TEXT, asin TEXT, url TEXT, title TEXT,
    extra TEXT,                      -- other manifest columns, JSON
    added_at REAL NOT NULL,          -- when it was last fingerprinted
    fingerprint_version INTEGER NOT NULL DEFAULT 1,  -- fingerprint.FINGERPRINT_VERSION that made it
    first_indexed_at REAL            -- when it was first indexed (NULL: before schema 3, unknown)
)"""

# The nightly history (see imguard.history). Ids are AUTOINCREMENT: never reused. Findings name
# their own image by id without a foreign key: a pruned image's findings stay, as history.
_HISTORY = [
    """CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    ended_at REAL,
    complete INTEGER NOT NULL DEFAULT 0,   -- 1 once every source was read: only then is anything resolved
    reported INTEGER NOT NULL DEFAULT 0,   -- 1 once its report and summary were made: what changed since is news
    imguard_version TEXT NOT NULL,
    catalog_generation INTEGER NOT NULL,
    indexed_at REAL,                       -- when its catalog step ended: own images fingerprinted later are new to the next run
    settings TEXT NOT NULL                 -- JSON: threshold, sources, fingerprint version
)""",
    """CREATE TABLE run_sources (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    source TEXT NOT NULL,                  -- the config's name for it
    complete INTEGER NOT NULL DEFAULT 0,   -- listed and read completely in this run
    error TEXT,
    listed INTEGER NOT NULL DEFAULT 0,
    scanned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, source)
)""",
    """CREATE TABLE competitor_images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    location TEXT NOT NULL,                -- a path as listed (bytes when not UTF-8), or a URL
    sha256 TEXT, nbytes INTEGER, mtime REAL, etag TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',   -- JSON: listing, asin, title, seller, ...
    width INTEGER, height INTEGER,
    box_x0 INTEGER, box_y0 INTEGER, box_x1 INTEGER, box_y1 INTEGER,  -- its canonical view (scan.QueryPrints)
    view_w INTEGER, view_h INTEGER,
    hashes BLOB,                           -- pHash, dHash, and their mirrors: 4 × 8 bytes
    keypoints BLOB,                        -- N×2 float32, view pixels
    descriptors BLOB,                      -- N×32 uint8, ORB of the canonical view
    neighbours BLOB,                       -- N uint8: each descriptor's VOTE_K-th catalog neighbour distance
    thumbnail BLOB,                        -- JPEG of the canonical view: its last sighting
    hash_floor INTEGER, vote_floor INTEGER,  -- what a new own image must beat (scan.QueryPrints)
    fingerprint_version INTEGER,
    fingerprinted_at REAL,
    seen_run INTEGER,                      -- the last run that listed it
    gone_run INTEGER,                      -- the run that found it gone (NULL while it is there)
    UNIQUE (source, location)
)""",
    """CREATE TABLE findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL,             -- the seller's image (images.id)
    competitor_id INTEGER NOT NULL REFERENCES competitor_images(id),
    listing TEXT NOT NULL DEFAULT '',
    seller TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,                  -- new, ongoing, resolved, reappeared
    status_run INTEGER NOT NULL,           -- the run that set the status
    first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    first_run INTEGER NOT NULL, last_run INTEGER NOT NULL,
    missing_run INTEGER,                   -- read again, and no longer a match (resolved once a run completes)
    best_score REAL NOT NULL,
    evidence TEXT NOT NULL,                -- JSON: the match of its last sighting
    UNIQUE (image_id, competitor_id)
)""",
    "CREATE INDEX findings_competitor ON findings(competitor_id)",
    """CREATE TABLE marks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    finding_id INTEGER REFERENCES findings(id),  -- one finding, or (NULL) every finding of...
    listing TEXT,                          -- ...a listing
    seller TEXT,                           -- ...or a seller (licensed)
    mark TEXT NOT NULL,                    -- reported, ignored, licensed, not-a-copy
    note TEXT,
    created_at REAL NOT NULL
)""",
    "CREATE INDEX marks_finding ON marks(finding_id)",
]

_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    _IMAGES.format(name="images"),
    "CREATE INDEX images_sha256 ON images(sha256)",
    """CREATE TABLE features (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    keypoints BLOB NOT NULL,         -- N×2 float32, canonical-view pixels
    descriptors BLOB NOT NULL,       -- N×32 uint8, ORB
    thumbnail BLOB NOT NULL          -- JPEG of the canonical view
)""",
    *_HISTORY,
]

# Migrations: the script that takes a store from version N to N + 1, each run as one transaction
# (with foreign keys off: a table rebuilt must not cascade into its dependants). A store of any
# older version is brought up step by step; tests/fixtures/stores holds one of each.
_IMAGE_COLUMNS_2 = ("id", "path", "abspath", "sha256", "nbytes", "mtime", "width", "height", "box_x0", "box_y0",
                    "box_x1", "box_y1", "view_w", "view_h", "phash", "dhash", "sku", "asin", "url", "title",
                    "extra", "added_at", "fingerprint_version")
_MIGRATIONS = {
    # 1 → 2: every image of a version-1 store has version-1 fingerprints (the default)
    1: ["ALTER TABLE images ADD COLUMN fingerprint_version INTEGER NOT NULL DEFAULT 1"],
    # 2 → 3: the images table rebuilt with AUTOINCREMENT ids and first_indexed_at (unknown: NULL)
    2: [_IMAGES.format(name="images_3"),
        f"INSERT INTO images_3 ({', '.join(_IMAGE_COLUMNS_2)}) SELECT {', '.join(_IMAGE_COLUMNS_2)} FROM images",
        "DROP TABLE images",
        "ALTER TABLE images_3 RENAME TO images",
        "CREATE INDEX images_sha256 ON images(sha256)"],
    # 3 → 4: the history tables, empty
    3: _HISTORY,
}


def path_to_db(path: str) -> str | bytes:
    """A path as the store keeps it: text, or its bytes when the file system's name is not valid
    UTF-8 (a surrogate-escaped str, which SQLite cannot take as text): nothing is lost."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def path_from_db(value: str | bytes) -> str:
    """A path column read back: the str the file system's calls take."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def connect_readonly(path: str) -> sqlite3.Connection:
    """A connection that only reads the store at `path`: it never writes it nor takes its write
    lock, so that a reader never makes a writer wait. On read-only media, where SQLite cannot
    make the shared-memory file a reader of a WAL store needs, the store is opened immutable
    instead (nothing can change it there), unless a write-ahead log with content lies beside it
    (commits not yet in the store, which an immutable open would not see)."""
    uri = "file:" + urllib.parse.quote(os.fsencode(path))
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # connecting is lazy: read
        return db
    except sqlite3.OperationalError:
        db.close()
        wal = path + "-wal"
        if os.access(os.path.dirname(path) or ".", os.W_OK) or (os.path.exists(wal) and os.path.getsize(wal)):
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)


def write_ahead(db: sqlite3.Connection, timeout: float = BUSY_TIMEOUT) -> None:
    """Switch `db` to write-ahead logging. When two processes create a store at once (two cron
    jobs on a new catalog), SQLite answers "locked" to the second at once, without its busy wait
    (the switch needs the file alone, and waiting could deadlock): ask again until the first is
    done, as long as any other wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """A Store (or History) method whose SQLite (or file) errors become a StoreError naming the store and what
    failed: a corrupt page, an I/O error or a full disk is the catalog's failure, not a bug."""
    def failure(self: Any, exc: Exception) -> StoreError:
        return StoreError(f"{self.path}: {method.__name__.strip('_')} failed ({type(exc).__name__}: {exc})")

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from method(self, *args, **kwargs))
            except (sqlite3.Error, OSError) as exc:
                raise failure(self, exc) from exc
        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            raise failure(self, exc) from exc
    return call  # type: ignore[return-value]


@dataclass(frozen=True)
class Reference:
    """A catalog image as a match needs it: where it is, what it is, and its verification data."""

    id: int
    path: str
    sha256: str
    width: int
    height: int
    box: tuple[int, int, int, int]
    view_size: tuple[int, int]
    abspath: str = ""  # where the file was when indexed, whatever the current folder
    hashes: dict[str, bytes] = field(default_factory=dict, repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    indexed_at: float | None = None  # when imguard first indexed it (None: before schema 3, unknown)
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8), repr=False)
    thumbnail: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class FileState:
    id: int
    sha256: str
    nbytes: int
    mtime: float
    fingerprint_version: int = FINGERPRINT_VERSION


class Store:
    """SQLite store of the catalog. Writes happen in short transactions, so that a crash or a kill
    loses at most the chunk being written. Its SQLite errors are StoreErrors."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, folder: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> Store:
        """The store in `folder`, created when missing (unless `create=False` or `readonly`).
        `readonly`: see `connect_readonly`; such a store is never migrated (an older one is a
        CatalogError saying to run `imguard index`)."""
        folder = os.fspath(folder)
        path = os.path.join(folder, DB_NAME)
        exists = os.path.exists(path)
        if not exists and (not create or readonly):
            raise CatalogError(f"{folder}: no imguard catalog here (run `imguard index` first)")
        if not exists:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise CatalogError(f"{folder}: cannot create catalog folder ({exc.strerror})") from exc
        db = None
        try:
            if readonly:
                db = connect_readonly(path)
            else:
                db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False)
                write_ahead(db)
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path)
            if not readonly:
                store._migrate()
            store._check_version()
        except (sqlite3.Error, CatalogError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, CatalogError):
                raise
            raise StoreError(f"{path}: not a readable imguard catalog ({exc})") from exc  # corrupt, I/O error
        return store

    @guarded
    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, for the modules that keep tables of their own in it
        (imguard.history). Writes go in short transactions (`with store.connection:`)."""
        return self._db

    # -- schema -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema in a new store, or bring an older one up to SCHEMA_VERSION: one
        transaction per step, each taking the write lock first and looking at the version again
        inside it (two processes may open an old store at once; the second finds it done)."""
        while True:
            self._db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version_in_transaction()
                if version is None:
                    for statement in _SCHEMA:
                        self._db.execute(statement)
                    for key, value in (("schema_version", SCHEMA_VERSION), ("created_by", f"imguard {__version__}"),
                                       ("generation", 0), ("catalog_id", uuid.uuid4().hex)):
                        self._set_meta(key, str(value))
                elif version < SCHEMA_VERSION:
                    for statement in _MIGRATIONS[version]:
                        self._db.execute(statement)
                    self._set_meta("schema_version", str(version + 1))
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            finally:
                self._db.execute("PRAGMA foreign_keys=ON")
            if version is not None and version + 1 >= SCHEMA_VERSION:
                return

    def _version_in_transaction(self) -> int | None:
        """The schema version; None for a new, empty file; CatalogError for another database."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise CatalogError(f"{self.path}: not an imguard catalog (other tables, no schema version)")
            return None
        version = self._meta("schema_version")
        if version is None:
            raise CatalogError(f"{self.path}: not an imguard catalog (no schema version)")
        return int(version)

    def _check_version(self) -> None:
        version = self._meta("schema_version")
        if version is None:
            raise CatalogError(f"{self.path}: not an imguard catalog (no schema version)")
        if int(version) > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.path}: written by a newer imguard (schema {version}, this one reads "
                f"up to {SCHEMA_VERSION}); upgrade imguard"
            )
        if int(version) < SCHEMA_VERSION:  # only a read-only open gets here: writable ones migrate
            raise CatalogError(
                f"{self.path}: written by an older imguard (schema {version}); run `imguard index` "
                "on this catalog once to upgrade it"
            )

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    @guarded
    def schema_version(self) -> int:
        return int(self._meta("schema_version") or 0)

    @property
    @guarded
    def catalog_id(self) -> str:
        """Random id of this store: index files built from another store are never taken as current."""
        return self._meta("catalog_id") or ""

    @property
    @guarded
    def generation(self) -> int:
        """Bumped by every change to the catalog: derived indexes record the one they were built from."""
        return int(self._meta("generation") or 0)

    def _bump(self) -> None:
        self._db.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )

    # -- writes -----------------------------------------------------------------------------

    @guarded
    def put_many(self, rows: Iterable[tuple[str, str, float, Fingerprint, dict[str, str] | None]]) -> int:
        """Insert or update (path, abspath, mtime, fingerprint, metadata) rows in one transaction.

        An updated file keeps its id; with metadata None it also keeps the metadata it had (a
        re-index without the manifest must not forget the SKU)."""
        count = 0
        with self._db:
            for path, abspath, mtime, fp, metadata in rows:
                now = time.time()
                values = (path_to_db(path), path_to_db(abspath), fp.sha256, fp.nbytes, mtime, fp.width, fp.height,
                          *fp.box, *fp.view_size, fp.hashes["phash"], fp.hashes["dhash"], FINGERPRINT_VERSION,
                          now, now)
                self._db.execute(
                    f"INSERT INTO images({', '.join(_FILE_COLUMNS)}, first_indexed_at)"
                    f" VALUES ({', '.join('?' * (len(_FILE_COLUMNS) + 1))})"
                    f" ON CONFLICT(abspath) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in _FILE_COLUMNS if c != "abspath"),
                    values,
                )
                image_id = self._db.execute("SELECT id FROM images WHERE abspath = ?", (values[1],)).fetchone()[0]
                if metadata is not None:
                    self._write_metadata(image_id, metadata)
                self._db.execute(
                    "INSERT OR REPLACE INTO features(image_id, keypoints, descriptors, thumbnail) VALUES (?,?,?,?)",
                    (
                        image_id,
                        np.ascontiguousarray(fp.keypoints, np.float32).tobytes(),
                        np.ascontiguousarray(fp.descriptors, np.uint8).tobytes(),
                        fp.thumbnail or b"",
                    ),
                )
                count += 1
            if count:
                self._bump()
        return count

    def _write_metadata(self, image_id: int, metadata: dict[str, str]) -> None:
        known = [metadata.get(k) for k in METADATA_FIELDS]
        extra = {k: v for k, v in metadata.items() if k not in METADATA_FIELDS}
        self._db.execute(
            "UPDATE images SET sku = ?, asin = ?, url = ?, title = ?, extra = ? WHERE id = ?",
            (*known, json.dumps(extra) if extra else None, image_id),
        )

    @guarded
    def set_metadata(self, abspath: str, metadata: dict[str, str]) -> bool:
        with self._db:
            row = self._db.execute("SELECT id FROM images WHERE abspath = ?", (path_to_db(abspath),)).fetchone()
            if row is not None:
                self._write_metadata(row[0], metadata)
        return row is not None

    @guarded
    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._db:
            self._db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
            self._bump()
        return len(ids)

    # -- reads ------------------------------------------------------------------------------

    @contextlib.contextmanager
    @guarded
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the store (a read transaction; in WAL mode writers go
        on meanwhile): an index built by several reads is built from one generation. For reads
        only: a write inside would commit and end the snapshot."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.rollback()  # nothing to keep: the snapshot only read

    @guarded
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    @guarded
    def file_states(self) -> dict[str, FileState]:
        """abspath → what was indexed: the basis of incremental re-indexing and pruning."""
        return {
            path_from_db(row[0]): FileState(*row[1:])
            for row in self._db.execute("SELECT abspath, id, sha256, nbytes, mtime, fingerprint_version FROM images")
        }

    @guarded
    def outdated(self) -> list[str]:
        """Paths of images fingerprinted by an older imguard: their hashes do not compare with
        this version's, so they must be fingerprinted again before a scan."""
        return [path_from_db(r[0]) for r in self._db.execute(
            "SELECT path FROM images WHERE fingerprint_version != ? ORDER BY id", (FINGERPRINT_VERSION,))]

    @guarded
    def fingerprinted_since(self, timestamp: float) -> list[int]:
        """Ids of the images fingerprinted (added, or changed and fingerprinted again) after
        `timestamp`."""
        return [r[0] for r in self._db.execute("SELECT id FROM images WHERE added_at > ? ORDER BY id", (timestamp,))]

    @guarded
    def ids(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT id FROM images")}

    @guarded
    def ids_with_sha256(self, sha256: str) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT id FROM images WHERE sha256 = ? ORDER BY id", (sha256,))]

    @guarded
    def hash_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, pHash codes n×8, dHash codes n×8), ordered by id."""
        rows = self._db.execute("SELECT id, phash, dhash FROM images ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        phashes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(-1, 8)
        dhashes = np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(-1, 8)
        return ids, phashes, dhashes

    @guarded
    def descriptor_count(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(LENGTH(descriptors)), 0) / 32 FROM features").fetchone()[0])

    @guarded
    def iter_descriptor_batches(self, batch: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(owner image ids, descriptors N×32) of `batch` catalog images at a time, by image id:
        the whole catalog's descriptors never sit in memory at once."""
        cursor = self._db.execute("SELECT image_id, descriptors FROM features ORDER BY image_id")
        while rows := cursor.fetchmany(batch):
            counts = [len(blob) // 32 for _, blob in rows]
            owners = np.repeat(np.array([r[0] for r in rows], np.int64), counts)
            yield owners, np.frombuffer(b"".join(blob for _, blob in rows), np.uint8).reshape(-1, 32)

    @guarded
    def reference(self, image_id: int, *, with_features: bool = True) -> Reference:
        row = self._db.execute(
            "SELECT id, path, sha256, width, height, box_x0, box_y0, box_x1, box_y1, view_w, view_h,"
            " sku, asin, url, title, extra, phash, dhash, first_indexed_at, abspath FROM images WHERE id = ?",
            (image_id,),
        ).fetchone()
        if row is None:
            raise CatalogError(f"{self.path}: no catalog image with id {image_id}")
        metadata = {k: v for k, v in zip(METADATA_FIELDS, row[11:15]) if v}
        if row[15]:
            metadata.update(json.loads(row[15]))
        extras: dict[str, Any] = {}
        if with_features:
            keypoints, descriptors, thumbnail = self._db.execute(
                "SELECT keypoints, descriptors, thumbnail FROM features WHERE image_id = ?", (image_id,)
            ).fetchone()
            extras = {
                "keypoints": np.frombuffer(keypoints, np.float32).reshape(-1, 2),
                "descriptors": np.frombuffer(descriptors, np.uint8).reshape(-1, 32),
                "thumbnail": thumbnail,
            }
        return Reference(
            id=row[0], path=path_from_db(row[1]), sha256=row[2], width=row[3], height=row[4],
            box=tuple(row[5:9]), view_size=(row[9], row[10]), metadata=metadata,
            hashes={"phash": row[16], "dhash": row[17]}, indexed_at=row[18], abspath=path_from_db(row[19]), **extras,
        )

    @guarded
    def stats(self) -> dict[str, Any]:
        images, nbytes = self._db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM images").fetchone()
        with_metadata = self._db.execute(
            "SELECT COUNT(*) FROM images WHERE sku IS NOT NULL OR asin IS NOT NULL OR url IS NOT NULL"
            " OR title IS NOT NULL"
        ).fetchone()[0]
        descriptors = self.descriptor_count()
        return {
            "images": int(images),
            "bytes": int(nbytes),
            "with_metadata": int(with_metadata),
            "descriptors": int(descriptors),
            "schema_version": self.schema_version,
            "generation": self.generation,
            "store_bytes": os.path.getsize(self.path),
        }
