"""Matches → output: every output format (table, JSON, CSV) is produced here and only here.

File names and metadata come from competitors and are untrusted: tables render them as plain
text (never as console markup, control characters made visible), and CSV cells that a spreadsheet
would run as a formula are defused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .scan import Match, ScanError, rank_key

FORMATS = ("table", "json", "csv")

MATCH_COLUMNS = ("query", "reference", "score", "distance", "matched_by", "mirrored", "rotation", "scale",
                 "inliers", "reference_region", "query_region", "sku", "asin", "title")
TABLE_COLUMNS = ("query", "reference", "score", "how")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def match_dict(match: Match) -> dict[str, Any]:
    """A match as plain JSON-ready data (the `matches` items of `scan --format json`)."""
    data = dataclasses.asdict(match)
    data["matched_by"] = match.explanation.matched_by
    for key in ("reference_region", "query_region"):
        data["explanation"][key] = list(data["explanation"][key])
    return data


def sorted_matches(matches: Sequence[Match]) -> list[Match]:
    """Output order: by query, then best first (the ranking the scan itself uses)."""
    return sorted(matches, key=lambda m: (m.query, *rank_key(m)))


def scan_payload(matches: Sequence[Match], errors: Sequence[ScanError], stats: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object `scan --format json` prints: matches by query, best first."""
    return {
        "matches": [match_dict(m) for m in sorted_matches(matches)],
        "errors": [{"path": e.path, "error": e.error} for e in sorted(errors, key=lambda e: e.path)],
        "stats": stats,
    }


def match_row(match: Match) -> dict[str, Any]:
    """A match flattened to one row (table and CSV)."""
    e = match.explanation
    meta = match.reference_metadata
    return {
        "query": match.query, "reference": match.reference, "score": f"{match.score:.3f}",
        "distance": match.distance, "matched_by": e.matched_by, "mirrored": "yes" if e.mirrored else "",
        "rotation": f"{e.rotation:g}", "scale": f"{e.scale:g}", "inliers": e.inliers,
        "reference_region": " ".join(map(str, e.reference_region)),
        "query_region": " ".join(map(str, e.query_region)),
        "sku": meta.get("sku", ""), "asin": meta.get("asin", ""), "title": meta.get("title", ""),
        "how": describe(match),
    }


def describe(match: Match) -> str:
    """The explanation in a few words, for people."""
    e = match.explanation
    if e.matched_by == "sha256":
        return "identical file"
    parts = [e.matched_by if not e.inliers else f"{e.inliers} keypoints"]
    if e.mirrored:
        parts.append("mirrored")
    if abs(e.rotation) >= 1:
        parts.append(f"rotated {e.rotation:+.0f}°")
    if e.scale and abs(e.scale - 1) >= 0.05:
        parts.append(f"scaled {e.scale:.2f}x")
    if e.structure and e.coverage < 0.9:  # a part of a bigger picture: a collage cell, a banner
        parts.append(f"{e.coverage:.0%} of their picture")
    parts.append(f"structure {e.structure:.2f}, colour {e.colour:.2f}")
    return ", ".join(parts)


def safe_text(value: object) -> str:
    """Make control and format characters in untrusted strings visible: terminal escapes,
    newlines, and the bidi overrides and zero-width characters that can disguise a file name."""
    return "".join(
        f"\\u{ord(c):04x}" if _CONTROL.match(c) or unicodedata.category(c) in ("Cf", "Zl", "Zp") else c
        for c in str(value)
    )


def _csv_cell(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_json(data: Any, stream: IO[str]) -> None:
    json.dump(data, stream, indent=2, ensure_ascii=False)
    stream.write("\n")


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
        table.add_row(*(Text(safe_text(row.get(c, ""))) for c in columns))
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
