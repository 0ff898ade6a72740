"""Matches → output: every output format (table, JSON, CSV) is produced here and only here.

File names and metadata come from competitors and are untrusted: tables render them as plain
text (never as console markup, control characters made visible), and CSV cells that a spreadsheet
would run as a formula are defused.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import SourceError
from .scan import Match, ScanError, rank_key

FORMATS = ("table", "json", "csv")

# CSV columns of a match: the competitor side (query, its listing and what the manifest says of
# it), the own image (reference, and its own manifest's sku, asin, title), the verdict, the
# geometry and the evidence.
MATCH_COLUMNS = ("query", "listing", "listing_url", "listing_asin", "listing_title", "seller", "marketplace",
                 "image_position", "reference", "own_sku", "own_asin", "own_title", "score", "kind", "matched_by",
                 "variants", "description", "distance", "mirrored", "rotation", "scale", "inliers", "reference_region",
                 "query_region", "query_outline", "query_sha256", "reference_sha256", "query_size",
                 "reference_size", "captured_at", "captured_from", "reference_indexed_at")
TABLE_COLUMNS = ("query", "listing", "reference", "score", "how")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def match_dict(match: Match) -> dict[str, Any]:
    """A match as plain JSON-ready data (the `matches` items of `scan --format json`): its
    fields, and how it was found and its explanation in words."""
    return {**match.as_dict(), "matched_by": match.explanation.matched_by, "description": describe(match)}


def read_scan(path: str) -> tuple[list[Match], list[ScanError], dict[str, Any]]:
    """(matches, errors, stats) of a saved `imguard scan --format json` output."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        matches = [Match.from_dict(m) for m in data["matches"]]
        errors = [ScanError(e["path"], e["error"]) for e in data.get("errors", [])]
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: not the JSON output of `imguard scan --format json` ({exc!r})") from exc
    return matches, errors, dict(data.get("stats", {}))


def output_order(match: Match) -> tuple:
    """The sort key of output: by query, then best first (the ranking the scan itself uses)."""
    return (match.query, *rank_key(match))


def sorted_matches(matches: Sequence[Match]) -> list[Match]:
    return sorted(matches, key=output_order)


def scan_payload(matches: Sequence[Match], errors: Sequence[ScanError], stats: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object `scan --format json` prints: matches by query, best first."""
    return {
        "matches": [match_dict(m) for m in sorted_matches(matches)],
        "errors": [{"path": e.path, "error": e.error} for e in sorted(errors, key=lambda e: e.path)],
        "stats": stats,
    }


def match_row(match: Match) -> dict[str, Any]:
    """A match flattened to one row (table and CSV)."""
    e, v = match.explanation, match.evidence
    meta, listing = match.reference_metadata, match.query_metadata
    return {
        "query": match.query, "listing": match.listing, "listing_url": listing.get("listing_url", ""),
        "listing_asin": listing.get("asin", ""), "listing_title": listing.get("title", ""),
        "seller": listing.get("seller", ""), "marketplace": listing.get("marketplace", ""),
        "image_position": listing.get("image_position", ""), "reference": match.reference,
        "own_sku": meta.get("sku", ""), "own_asin": meta.get("asin", ""), "own_title": meta.get("title", ""),
        "score": f"{match.score:.3f}",
        "kind": match.kind, "matched_by": e.matched_by, "variants": " | ".join(match.variants),
        "description": describe(match),
        "distance": match.distance, "mirrored": "yes" if e.mirrored else "",
        "rotation": f"{e.rotation:g}", "scale": f"{e.scale:g}", "inliers": e.inliers,
        "reference_region": " ".join(map(str, e.reference_region)),
        "query_region": " ".join(map(str, e.query_region)),
        "query_outline": " ".join(f"{x:g},{y:g}" for x, y in e.query_outline),
        "query_sha256": v.query_sha256, "reference_sha256": v.reference_sha256,
        "query_size": "x".join(map(str, v.query_size)), "reference_size": "x".join(map(str, v.reference_size)),
        "captured_at": v.captured_at or "", "captured_from": v.captured_from or "",
        "reference_indexed_at": v.reference_indexed_at or "",
        "how": describe(match),
    }


def describe(match: Match) -> str:
    """The explanation in words, built from the match's fields only (what the evidence shows):
    "mirrored, cropped to 62 % of the original, rotated 8° clockwise, pasted at 45 % of their
    picture; 104 matching keypoints, 93 % of the detail agrees"."""
    e = match.explanation
    if e.matched_by == "sha256":
        return "identical file"
    edits = []
    if match.kind == "partial":
        edits.append("shares a region with the original, each has content the other lacks")
    if e.mirrored:
        edits.append("mirrored")
    if 0 < e.reference_share < 0.95:
        edits.append(f"cropped to {_percent(e.reference_share)} of the original")
    if abs(e.rotation) >= 1:
        edits.append(f"rotated {abs(e.rotation):.0f}° {'anticlockwise' if e.rotation > 0 else 'clockwise'}")
    if e.scale and abs(e.scale - 1) >= 0.05:
        edits.append(f"resized to {_percent(e.scale)}")
    if 0 < e.query_share < 0.9:  # a part of a bigger picture: a collage cell, a screenshot, a banner
        edits.append(f"pasted at {_percent(e.query_share)} of their picture")
    if e.colour_removed:
        edits.append("colour removed" + (f": {len(match.variants) + 1} colour variants fit alike" if match.variants else ""))
    elif e.recoloured:
        edits.append("another colour of the product (hues turned over 90°; scored half)")
    elif e.structure and e.colour < 0.75:
        edits.append("colours changed")
    found = f"{e.inliers} matching keypoints" if e.inliers else "found by its global hash"
    agree = f"{_percent(e.structure)} of the detail agrees" if e.structure else "not verified"
    return f"{', '.join(edits) or 'a re-saved copy'}; {found}, {agree}"


def _percent(share: float) -> str:
    return f"{round(100 * share)} %"


def safe_text(value: object) -> str:
    """Make untrusted strings safe to show in a terminal or a spreadsheet: control and format
    characters (terminal escapes, newlines, bidi overrides, zero-width characters that can
    disguise a file name) become visible ``\\uXXXX`` escapes, and the bytes of a file name that
    is not valid UTF-8 (surrogate-escaped by Python) become ``\\xNN``. None, a missing value,
    shows as nothing."""
    text = "" if value is None else str(value)
    if text.isascii() and text.isprintable():  # most names and titles: nothing to do
        return text
    return "".join(_visible(c) if _unsafe(c) else c for c in text)


def _unsafe(c: str) -> bool:
    return bool(_CONTROL.match(c)) or unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cs")


def _visible(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # a byte of a non-UTF-8 file name
        return f"\\x{ord(c) - 0xdc00:02x}"
    return f"\\u{ord(c):04x}"


def _csv_cell(value: object) -> str:
    text = safe_text(value)  # None, as the table shows it: an empty cell
    # (a tab or a carriage return, which a spreadsheet would also act on, is escaped by safe_text)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_json(data: Any, stream: IO[str]) -> None:
    stream.write(json_text(data))
    stream.write("\n")


_NOT_ASCII = re.compile(r"[^\x00-\x7e]")


def json_text(data: Any) -> str:
    """JSON that is valid UTF-8 and safe in a terminal, losing nothing: readable text stays as
    it is, while control and format characters and the surrogate-escaped bytes of a non-UTF-8
    file name are written as ``\\uXXXX`` escapes (which decode back to the same string)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _NOT_ASCII.sub(lambda m: f"\\u{ord(m.group()):04x}" if _unsafe(m.group()) else m.group(), text)


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str], stream: IO[str]) -> None:
    writer = csv.writer(stream)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c, "")) for c in columns])


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], console: Console, *, title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(Text(safe_text(row.get(c))) for c in columns))
    console.print(table)


def mapping_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in data.items()]


def emit(data: Any, rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: Console,
         *, title: str | None = None, table_columns: Sequence[str] | None = None) -> None:
    """Print `data` as JSON, or `rows` as CSV (all columns) or a table (`table_columns`), on `out`."""
    if fmt == "json":
        write_json(data, out.file)
    elif fmt == "csv":
        write_csv(rows, columns, out.file)
    else:
        print_table(rows, table_columns or columns, out, title=title)
