"""The `imguard` command: a thin shell over the library (every command calls one Catalog method).

Exit codes: see `ExitCode` (the help's epilog and README.md say the same). A file that cannot be
read is never a code of its own, only with --strict; an unexpected exception is a short message,
its traceback written to a file (or shown with IMGUARD_DEBUG=1), never a bare traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from enum import Enum, IntEnum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import imguard
from imguard import report
from imguard.fetch import is_remote


class ExitCode(IntEnum):
    """The exit codes, all of them (codes 6 to 129 are left for later ones)."""

    OK = 0  # the run completed, with or without matches
    FOUND = 1  # --fail-on-match and something matched, --fail-on-new and something new, or --strict
    USAGE = 2  # bad usage or configuration, a missing catalog, an unreadable source folder, a refused --prune
    INTERNAL = 3  # imguard's own failure: a bug, or a broken catalog store
    NOTHING_READ = 4  # the run had files and every one of them failed (over 1 with --strict)
    LOCKED = 5  # another run writes to the catalog: try again later (cron: next time)
    INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: click's own 1 would read as FOUND


EXIT_CODES = """Exit codes: 0 run completed (matches or not); 1 --fail-on-match and a match was found,
--fail-on-new and something new or reappeared, or --strict and a file could not be read; 2 bad
usage or configuration, missing catalog, unreadable source folder or refused --prune; 3 imguard's
own failure (a bug or a broken catalog store: the message says where the traceback is); 4 every
file of the run failed; 5 another run holds the catalog's writer lock; 130 interrupted (Ctrl-C)."""
# Set to print the traceback of an internal failure on stderr as well.
DEBUG_VARIABLE = "IMGUARD_DEBUG"

app = typer.Typer(
    help=f"Find copies of your own product images among competitors' images.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Engine(str, Enum):
    local = "local"
    dask = "dask"


# Choices the library defines, as the options' enums.
Status = Enum("Status", [(s, s) for s in imguard.history.STATUSES], type=str)
MarkAs = Enum("MarkAs", [(m.replace("-", "_"), m) for m in imguard.history.MARKS], type=str)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


DbOption = Annotated[
    Path, typer.Option("--db", help="Catalog folder (SQLite store + FAISS indexes).", envvar="IMGUARD_DB")
]
ReportOption = Annotated[Optional[Path], typer.Option(
    "--report", help="Also write the evidence report here: index.html, evidence PNGs, complaint drafts.")]
TemplateOption = Annotated[Optional[Path], typer.Option(
    "--complaint-template", help="Jinja2 text template replacing the default complaint draft.")]
WaitOption = Annotated[float, typer.Option(
    "--wait", min=0.0, help="Seconds to wait for another run that writes to the catalog.")]
JobsOption = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes [default: all cores].")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
MAX_FILE_MB = imguard.Limits.file_bytes / 2**20
MAX_DECODE_MB = imguard.Limits.decode_bytes / 2**20
FileMbOption = Annotated[float, typer.Option("--max-file-mb", min=0.001, help="Largest image file read or downloaded (MiB).")]
DecodeMbOption = Annotated[float, typer.Option("--max-decode-mb", min=0.001, help="Memory one image may take to decode (MiB).")]
TimeLimitOption = Annotated[float, typer.Option("--time-limit", min=0.001, help="Seconds one image may take.")]


def _limits(max_file_mb: float, max_decode_mb: float, time_limit: float) -> imguard.Limits:
    """The per-image limits of the options: a file over one is that file's error."""
    return imguard.Limits(file_bytes=round(max_file_mb * 2**20), decode_bytes=round(max_decode_mb * 2**20),
                          seconds=time_limit)


def _out() -> Console:
    # Piped output gets wide tables, so that file names are not folded mid-word for grep.
    width = None if sys.stdout.isatty() else 240
    return Console(file=sys.stdout, soft_wrap=True, highlight=False, width=width)


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    Console(file=sys.stderr, highlight=False, soft_wrap=True).print(f"imguard: {report.safe_text(message)}", markup=False)
    return typer.Exit(code)


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator[imguard.catalog.Progress | None]:
    """A progress line on stderr with images/s; hidden with --quiet or when stderr is no terminal."""
    err = Console(file=sys.stderr)
    if quiet or not err.is_terminal:
        yield None
        return
    columns = (SpinnerColumn(), TextColumn(f"{label} {{task.completed}} images"), BarColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            bar.update(task, rate=f"{speed:.0f} img/s" if speed else "")

        yield advance


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Whatever stops a whole run becomes a message and an exit code, never a traceback: errors
    imguard raises on purpose exit 2 (a broken store: 3, a held lock: 5), Ctrl-C 130; anything
    else is a bug (3), whose traceback goes to a file the message names."""
    try:
        yield
    except (typer.Exit, click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted", ExitCode.INTERRUPTED) from None
    except imguard.StoreError as exc:
        raise _fail(f"the catalog store failed: {exc}", ExitCode.INTERNAL) from None
    except imguard.LockHeld as exc:
        raise _fail(str(exc), ExitCode.LOCKED) from None
    except imguard.ImguardError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"internal error ({type(exc).__name__}: {exc}); {_keep_traceback()}", ExitCode.INTERNAL) from None


def _keep_traceback() -> str:
    """Write the traceback being handled to a file (and to stderr with IMGUARD_DEBUG=1); say where."""
    text = traceback.format_exc()
    if os.environ.get(DEBUG_VARIABLE):
        sys.stderr.write(text)
    try:
        fd, path = tempfile.mkstemp(prefix="imguard-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
    except OSError:
        sys.stderr.write(text)
        return "the traceback is above; please report it"
    return f"the traceback is in {path} (or set {DEBUG_VARIABLE}=1 to print it); please report it"


def _end(nothing_read: bool, tried: int, *, strict: bool, failed: bool, found: bool) -> None:
    """The exit of a run that completed: 4 when every file failed (it says so), 1 for --strict and
    a failed file or --fail-on-match and a match, else 0."""
    if nothing_read:
        raise _fail(f"none of the {tried} file(s) could be read", ExitCode.NOTHING_READ)
    if (strict and failed) or found:
        raise typer.Exit(ExitCode.FOUND)


def _open(db: Path, *, readonly: bool = False) -> imguard.Catalog:
    """An existing catalog; readers (scan, stats) open it read-only: see Catalog.open."""
    return imguard.Catalog.open(db, create=False, readonly=readonly)


@app.command(epilog=EXIT_CODES)
def index(
    sources: Annotated[list[Path], typer.Argument(help="Image files or folders (walked recursively).")],
    db: DbOption = Path("imguard-db"),
    manifest: Annotated[Optional[Path], typer.Option(help="CSV: path, and any of sku, asin, url, title.")] = None,
    prune: Annotated[bool, typer.Option(help="Drop catalog entries whose files are gone (refused when a folder of theirs is missing or empty).")] = False,
    force_prune: Annotated[bool, typer.Option(help="--prune even when a folder of theirs is missing or empty (an unmounted drive looks the same).")] = False,
    jobs: JobsOption = None,
    quiet: QuietOption = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    max_file_mb: FileMbOption = MAX_FILE_MB,
    max_decode_mb: DecodeMbOption = MAX_DECODE_MB,
    time_limit: TimeLimitOption = imguard.Limits.seconds,
    wait: WaitOption = 0.0,
) -> None:
    """Add your own images to the catalog (only new or changed files are fingerprinted)."""
    with _errors():
        for source in sources:
            if not source.exists():
                raise _fail(f"{source}: no such file or folder")
        catalog = imguard.Catalog.open(db)
        with catalog, _progress("indexing", quiet) as progress:
            result = catalog.add([str(s) for s in sources], manifest=manifest, prune=prune,
                                 force_prune=force_prune, jobs=jobs, progress=progress,
                                 limits=_limits(max_file_mb, max_decode_mb, time_limit), wait=wait)
            data = result.as_dict()
            data["images"] = len(catalog)
        out = _out()
        if fmt is Format.table:
            if result.errors:
                report.print_table(data["errors"], ("path", "error"), out, title="files that could not be read")
            summary = {k: data[k] for k in ("images", "added", "updated", "unchanged", "removed", "seconds")}
            report.print_table(report.mapping_rows(summary), ("key", "value"), out, title="catalog")
        else:
            report.emit(data, data["errors"], ("path", "error"), fmt.value, out)
        _end(result.nothing_read, len(result.errors), strict=False, failed=False, found=False)


@app.command(epilog=EXIT_CODES)
def scan(
    sources: Annotated[list[str], typer.Argument(help="Competitor image files or folders (recursively).")],
    db: DbOption = Path("imguard-db"),
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Minimum score; 0 reports every query's best candidate.")] = imguard.DEFAULT_THRESHOLD,
    top: Annotated[Optional[int], typer.Option(min=1, help="At most K matches per competitor image.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    jobs: JobsOption = None,
    quiet: QuietOption = False,
    fail_on_match: Annotated[bool, typer.Option(help="Exit 1 when anything matched.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a file could not be read.")] = False,
    engine: Annotated[Engine, typer.Option(help="Where to run: local processes, or a Dask cluster.")] = Engine.local,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address (with --engine dask).")] = None,
    report_folder: ReportOption = None,
    complaint_template: TemplateOption = None,
    max_file_mb: FileMbOption = MAX_FILE_MB,
    max_decode_mb: DecodeMbOption = MAX_DECODE_MB,
    time_limit: TimeLimitOption = imguard.Limits.seconds,
) -> None:
    """Look for your catalog images in competitor images; print the matches.

    SOURCES are folders (each image's listing is the name of its folder: competitors/<listing>/),
    image files, CSV manifests (a url or path column, listing columns) or URLs (http(s)://,
    s3://, gs:// folders or images; needs the `remote` extra)."""
    with _errors():
        for source in sources:
            if not is_remote(source) and not os.path.exists(source):
                raise _fail(f"{source}: no such file or folder")
        if engine is Engine.dask and not scheduler:
            raise _fail("--engine dask needs --scheduler ADDRESS")
        catalog = _open(db, readonly=True)
        with catalog, _progress("scanning", quiet) as progress:
            run = catalog.scan(sources, threshold=threshold, top=top, jobs=jobs, progress=progress,
                               engine=engine.value, scheduler=scheduler,
                               limits=_limits(max_file_mb, max_decode_mb, time_limit))
            matches = list(run)
            written = None
            if report_folder is not None:
                written = catalog.write_report(run, report_folder, complaint_template=complaint_template)
        payload = report.scan_payload(matches, run.errors, run.stats)
        rows = [report.match_row(m) for m in report.sorted_matches(matches)]
        out = _out()
        report.emit(payload, rows, report.MATCH_COLUMNS, fmt.value, out, title="matches",
                    table_columns=report.TABLE_COLUMNS)
        if fmt is Format.table:
            if run.errors:
                report.print_table(payload["errors"], ("path", "error"), out, title="files that could not be read")
            s = run.stats
            out.print(f"{s['queries']} images scanned, {s['matched_queries']} with a match, "
                      f"{s['errors']} unreadable, {s['seconds']:.1f} s", markup=False)
        if written is not None:
            _report_written(written, fmt)
        _end(run.nothing_read, run.stats["errors"], strict=strict, failed=bool(run.errors),
             found=fail_on_match and bool(matches))


@app.command("report", epilog=EXIT_CODES)
def report_command(
    scan_json: Annotated[Path, typer.Argument(help="A saved `imguard scan --format json` output.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The report folder to write.")],
    db: DbOption = Path("imguard-db"),
    complaint_template: TemplateOption = None,
) -> None:
    """Write the evidence report of a saved scan: index.html to review in a browser, one
    evidence PNG per pair, a complaint draft per infringing listing, matches.json and .csv."""
    with _errors(), _open(db, readonly=True) as catalog:
        matches, errors, stats = imguard.report.read_scan(str(scan_json))
        written = catalog.write_report(matches, out, errors=errors, stats=stats, complaint_template=complaint_template)
    _report_written(written, Format.table)


def _report_written(written: imguard.evidence.ReportFolder, fmt: Format) -> None:
    """Say where the report is: on stdout after a table, on stderr when stdout is JSON or CSV."""
    console = _out() if fmt is Format.table else Console(file=sys.stderr, highlight=False)
    console.print(f"report: {report.safe_text(written.index)} ({written.listings} listings, {written.pairs} pairs, "
                  f"{written.complaints} complaint drafts)", markup=False)


@app.command(epilog=EXIT_CODES)
def nightly(
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML configuration.")],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    fail_on_new: Annotated[bool, typer.Option(help="Exit 1 when a finding is new or reappeared.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a file or a source could not be read.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Check the configuration and the sources; change nothing.")] = False,
    wait: WaitOption = 0.0,
    quiet: QuietOption = False,
) -> None:
    """The scheduled comparison: index the catalog, scan what changed, update the findings and the
    report, and print only what changed since the last complete run."""
    with _errors():
        settings = imguard.nightly.load_config(config)
        if dry_run:  # opens nothing: a dry run changes nothing, not even an old store's schema
            result = imguard.nightly.run_nightly(None, settings, dry_run=True)
        else:
            with imguard.Catalog.open(settings.db) as catalog, _progress("scanning", quiet) as progress:
                result = catalog.nightly(settings, dry_run=dry_run, wait=wait, progress=progress)
    out = _out()
    if fmt is Format.json:
        report.write_json(result.as_dict(), out.file)
    else:
        rows = [{"change": change, **f.as_dict()} for change in imguard.nightly.CHANGES[:-1]
                for f in result.changes[change]]
        columns = ("change", "id", "listing", "query", "reference", "score", "first_seen", "last_seen", "mark")
        if fmt is Format.csv:
            report.write_csv(rows, columns, out.file)
        else:
            if rows:
                report.print_table(rows, columns, out, title="what changed")
            if result.errors:
                report.print_table([{"path": e.path, "error": e.error} for e in result.errors], ("path", "error"),
                                   out, title="could not be read")
            counts = ", ".join(f"{len(result.changes[c])} {c.replace('_', ' ')}" for c in imguard.nightly.CHANGES)
            verb = "would read" if result.dry_run else "read"
            listed = sum(s["listed"] for s in result.sources)
            out.print(f"{'dry run: ' if result.dry_run else ''}{len(result.sources)} sources {verb}, {listed} images listed"
                      + ("" if result.dry_run else f"; {counts}"), markup=False)
            if result.report is not None:
                out.print(f"report: {report.safe_text(result.report.index)}", markup=False)
    if dry_run and result.errors:
        raise typer.Exit(ExitCode.USAGE)
    if (fail_on_new and result.alert) or (strict and result.errors):
        raise typer.Exit(ExitCode.FOUND)


@app.command(epilog=EXIT_CODES)
def findings(
    db: DbOption = Path("imguard-db"),
    status: Annotated[Optional[Status], typer.Option(help="Only findings with this status.")] = None,
    listing: Annotated[Optional[str], typer.Option(help="Only this listing's findings.")] = None,
    older_than: Annotated[Optional[float], typer.Option(min=0.0, help="Only findings first seen more than DAYS ago.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List the findings of the nightly runs: by status, listing or age."""
    with _errors(), _open(db, readonly=True) as catalog:
        found = catalog.findings(status=status.value if status else None, listing=listing, older_than_days=older_than)
    rows = [f.as_dict() for f in found]
    columns = ("id", "status", "listing", "query", "reference", "score", "first_seen", "last_seen", "mark")
    report.emit(rows, rows, columns, fmt.value, _out(), title="findings")


@app.command(epilog=EXIT_CODES)
def mark(
    finding: Annotated[Optional[int], typer.Argument(help="The finding's id (see `imguard findings`).")] = None,
    as_: Annotated[Optional[MarkAs], typer.Option("--as", help="Your decision.")] = None,
    db: DbOption = Path("imguard-db"),
    note: Annotated[Optional[str], typer.Option(help="Why, for your records.")] = None,
    listing: Annotated[Optional[str], typer.Option(help="Mark every finding of this listing (licensed only).")] = None,
    seller: Annotated[Optional[str], typer.Option(help="Mark every finding of this seller (licensed only).")] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from", help="Apply the decisions a report page exported.")] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Record your decision about a finding: reported, ignored, licensed or not-a-copy. A licensed
    listing or seller is never alerted again; a reported finding still online after some days is
    listed by `nightly` as still_online_after_report."""
    with _errors(), _open(db) as catalog:
        if from_file is not None:
            if finding is not None or as_ is not None or listing or seller:
                raise _fail("--from takes the decisions from the file: no ID, --as, --listing or --seller with it")
            count = catalog.mark_from(from_file, wait=wait)
            _out().print(f"{count} decisions applied", markup=False)
            return
        if as_ is None:
            raise _fail("say what the finding is: --as reported|ignored|licensed|not-a-copy")
        catalog.mark(as_.value, finding=finding, listing=listing, seller=seller, note=note, wait=wait)
    target = f"finding {finding}" if finding is not None else f"listing {listing}" if listing else f"seller {seller}"
    _out().print(f"{report.safe_text(target)} marked {as_.value}", markup=False)


@app.command(epilog=EXIT_CODES)
def rebuild(db: DbOption = Path("imguard-db"), wait: WaitOption = 0.0) -> None:
    """Rebuild the FAISS indexes from the SQLite store (they are derived data)."""
    with _errors():
        with _open(db) as catalog:
            index = catalog.rebuild(wait=wait)
        _out().print(f"rebuilt: {index.phash.size} images, {index.features.size} local features", markup=False)


@app.command(epilog=EXIT_CODES)
def stats(
    db: DbOption = Path("imguard-db"),
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """What the catalog holds."""
    with _errors():
        with _open(db, readonly=True) as catalog:
            data = catalog.stats()
        report.emit(data, report.mapping_rows(data), ("key", "value"), fmt.value, _out(), title="catalog")


def main() -> None:  # pragma: no cover - console-script shim
    app()
