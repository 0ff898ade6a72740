"""Matches → the evidence report: the folder a seller reviews, keeps, and files complaints from.

`write_report(matches, folder)` writes, for one scan:

    index.html      one self-contained page (no external resource: its pictures are files in
                    images/, its style and script are inline), grouped by infringing listing →
                    stolen images → own originals; each pair side by side, the copied region
                    outlined in both pictures, score, explanation in words, both SHA-256s;
                    filters and sorting in the page, a summary on top
    images/         one JPEG thumbnail per distinct picture, named by its SHA-256
    evidence/       one PNG per pair: both pictures side by side, regions outlined, a caption
                    with both names, SHA-256 prefixes, score and explanation
    complaints/     one draft per infringing listing, `<listing>.txt`, from a template
    complaints.csv  one row per infringing listing: what a marketplace's complaint form asks
    matches.json    what the page shows, as `imguard scan --format json` prints it
    matches.csv
    imguard-report.json  what the report wrote, for the next report into the same folder

Writing a report again into the same folder (every night) reuses the thumbnails and evidence
pictures that have not changed (an evidence PNG is named by its content) and removes the others.
Pairs may carry annotations (the nightly run's finding id, status and mark): the page then shows
them and lets the seller decide per pair, and export the decisions as one JSON file for
`imguard mark --from`.

Competitors' strings (file names, listing titles, sellers, URLs) are untrusted: the page is
rendered by Jinja2 with autoescape on and a Content-Security-Policy that runs only its own
script, only http(s) URLs become links, file names derived from them keep safe characters only,
and CSV cells are defused (`report`). A match of kind "partial" (the two images share a region
only) is shown for review and never put in a complaint.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import load, report
from ._version import __version__
from .errors import ImguardError, SourceError
from .scan import Match, ScanError
from .store import Store

INFRINGEMENT = "Copyright — unauthorized images for product detail pages"
# Sizes that keep a report of 2,000 pairs under 100 MB and a minute (benchmarks/REPORT.md): page
# thumbnails of 240 px, and evidence PNGs of two 260 px panels in 128 colours (~30 KB, against
# ~120 KB in full colour, and faster to encode).
THUMB_SIDE = 240
THUMB_QUALITY = 75
PANEL_SIDE = 260  # each picture of an evidence PNG fits in this square
PNG_COLOURS = 128
# The evidence PNG's layout, in pixels: the border, the space between the two pictures, the
# height of their labels above them, and of a caption line (13 px text and its leading).
MARGIN, GAP, LABEL_HEIGHT, LINE_HEIGHT = 12, 16, 22, 19
DECODE_SIDE = PANEL_SIDE  # pictures are decoded (JPEG draft) no larger than the panels need
OUTLINE = (230, 20, 60)  # the copied region, in both pictures (the page uses the same colour)
TEMPLATES = Path(__file__).resolve().parent / "templates"
COMPLAINT_TEMPLATE = TEMPLATES / "complaint.txt.j2"
CSV_COLUMNS = ("marketplace", "listing", "listing_url", "seller", "title", "infringing_images",
               "infringement_type", "own_listings", "description", "evidence", "pairs", "best_score")


@dataclass(frozen=True)
class ReportFolder:
    """What `write_report` wrote."""

    folder: str
    index: str  # index.html
    listings: int  # infringing listings (with at least one pair)
    images: int  # stolen images
    pairs: int
    complaints: int  # drafts written (listings with at least one copy, not only partial matches)


# -- pictures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """A picture as the report shows it: its pixels, and which part of the original they show
    (`box`, original pixels), so that regions in original pixels can be drawn on it."""

    rgb: np.ndarray
    box: tuple[float, float, float, float]
    note: str = ""  # said under it: where it comes from, when not from the file itself

    def to_shown(self, points: Iterable[Sequence[float]]) -> list[tuple[float, float]]:
        x0, y0, x1, y1 = self.box
        sx, sy = self.rgb.shape[1] / max(1e-6, x1 - x0), self.rgb.shape[0] / max(1e-6, y1 - y0)
        return [((x - x0) * sx, (y - y0) * sy) for x, y in points]


PictureSource = Callable[[str, str], "Picture | str"]  # (location, sha256) -> picture, or why not


def file_picture(location: str, sha256: str) -> Picture | str:
    """The picture of a file (local, or a URL through the download cache), if it still is the
    file the match was made on; else the reason it cannot be shown."""
    try:
        decoded = load.decode(load.read_bytes(location), location, DECODE_SIDE)
    except ImguardError as exc:
        return getattr(exc, "reason", str(exc))
    if decoded.sha256 != sha256:
        return "the file has changed since the scan"
    return Picture(decoded.rgb, (0, 0, decoded.width, decoded.height))


def catalog_pictures(store: Store | None) -> PictureSource:
    """Own images: the file where it was indexed (or as named), else the 256 px thumbnail the
    catalog keeps of it (which shows its trimmed region)."""

    def picture(location: str, sha256: str) -> Picture | str:
        references = [store.reference(i) for i in store.ids_with_sha256(sha256)] if store is not None else []
        for candidate in [r.abspath for r in references if r.abspath] + [location]:
            shown = file_picture(candidate, sha256)
            if isinstance(shown, Picture):
                return shown
        if references and references[0].thumbnail:
            from .fingerprint import decode_thumbnail

            ref = references[0]
            return Picture(decode_thumbnail(ref.thumbnail), ref.box, note="the catalog's thumbnail")
        return shown

    return picture


# -- what the page and the drafts show ----------------------------------------------------------


@dataclass
class PairView:
    number: int
    match: Match
    annotation: dict[str, Any] | None  # a nightly finding: id, status, mark, dates
    evidence_png: str  # relative to the report folder
    query_thumb: str | None
    reference_thumb: str | None
    query_view_box: str
    reference_view_box: str
    query_points: str  # the outline, "x,y x,y ..." in original pixels
    reference_rect: tuple[int, int, int, int]  # x, y, width, height in original pixels
    notes: list[str]
    description: str

    @property
    def reference_name(self) -> str:
        return os.path.basename(self.match.reference)

    @property
    def complainable(self) -> bool:
        """May a complaint name it: a copy (not a partial match) the seller did not silence
        (ignored, licensed, not a copy)."""
        return self.match.kind == "copy" and not (self.annotation and self.annotation.get("silenced"))


@dataclass
class StolenView:
    location: str
    name: str
    position: str
    url: str | None  # an http(s) link to the image, or None
    captured: str
    pairs: list[PairView] = field(default_factory=list)


@dataclass
class ListingView:
    id: str
    slug: str
    metadata: dict[str, str]
    url: str | None
    stolen: list[StolenView] = field(default_factory=list)
    complaint: str | None = None  # relative path of its draft

    @property
    def pairs(self) -> list[PairView]:
        return [p for s in self.stolen for p in s.pairs]

    @property
    def copies(self) -> list[StolenView]:
        """Stolen images with at least one complainable pair: what a complaint may name."""
        return [s for s in self.stolen if any(p.complainable for p in s.pairs)]

    @property
    def best_score(self) -> float:
        return max(p.match.score for p in self.pairs)

    @property
    def own_listings(self) -> list[str]:
        """The seller's own listings the copied photos belong to (see `own_listing`)."""
        found = []
        for stolen in self.copies:
            for pair in stolen.pairs:
                own = own_listing(pair.match.reference_metadata)
                if pair.complainable and own and own not in found:
                    found.append(own)
        return found


def own_listing(metadata: dict[str, str]) -> str:
    """The seller's listing of an own image, from the catalog's manifest: its URL, else its ASIN,
    else its SKU ("" when the manifest says none)."""
    return metadata.get("listing_url") or metadata.get("url") or metadata.get("asin") or metadata.get("sku") or ""


def http_url(value: str | None) -> str | None:
    """`value` when it is an http(s) URL with a host, else None: nothing else becomes a link
    (a `javascript:` or `data:` URL in a manifest must never be clickable)."""
    if not value:
        return None
    parsed = urlparse(value.strip())
    return value.strip() if parsed.scheme.lower() in ("http", "https") and parsed.netloc else None


def slug(text: str, taken: set[str]) -> str:
    """A file name made from an untrusted string: safe characters only, never empty, never one
    already taken (two listings whose ids differ only in unsafe characters)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "listing"
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name.lower())
    return name


# -- writing ---------------------------------------------------------------------------------


def write_report(
    matches: Iterable[Match],
    folder: str | os.PathLike[str],
    *,
    errors: Sequence[ScanError] = (),
    stats: dict[str, Any] | None = None,
    store: Store | None = None,
    complaint_template: str | os.PathLike[str] | None = None,
    query_pictures: PictureSource = file_picture,
    annotations: Sequence[dict[str, Any] | None] | None = None,
    now: datetime.datetime | None = None,
) -> ReportFolder:
    """Write the evidence report of `matches` into `folder` (created; a report already there is
    replaced, reusing what did not change; other files are left alone). `store`: the catalog, to
    show an own image whose file is gone from its thumbnail. `complaint_template`: a Jinja2 text
    template replacing the default draft (imguard/templates/complaint.txt.j2; it runs sandboxed).
    `query_pictures`: where competitor pictures come from (default: the files, or the download
    cache). `annotations`: one per match, what a nightly run knows of the pair (`finding` id,
    `status`, `mark`, `mark_note`, `silenced`: never in a complaint, `first_seen`, `last_seen`,
    `db`: the catalog path for the `imguard mark` command, quoted for a shell)."""
    folder = Path(folder)
    matches = list(matches)
    pairs = sorted(zip(matches, annotations if annotations is not None else [None] * len(matches), strict=True),
                   key=lambda pair: report.output_order(pair[0]))
    matches = [m for m, _ in pairs]
    template = complaint_drafter(complaint_template)
    for part in ("images", "evidence", "complaints"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    generated = (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
    writer = _Writer(folder, query_pictures, catalog_pictures(store), [a for _, a in pairs])
    listings = writer.listings(matches)

    rows = []
    for listing in listings:
        if not listing.copies:
            continue
        listing.complaint = f"complaints/{listing.slug}.txt"
        context = _complaint_context(listing, generated)
        (folder / listing.complaint).write_text(template(context), encoding="utf-8")
        rows.append(_complaint_row(listing, context))
    with open(folder / "complaints.csv", "w", newline="", encoding="utf-8") as handle:
        report.write_csv(rows, CSV_COLUMNS, handle)
    with open(folder / "matches.json", "w", encoding="utf-8") as handle:
        report.write_json(report.scan_payload(matches, list(errors), dict(stats or {})), handle)
    with open(folder / "matches.csv", "w", newline="", encoding="utf-8") as handle:
        report.write_csv((report.match_row(m) for m in matches), report.MATCH_COLUMNS, handle)

    page = _page(listings, errors, stats or {}, generated, matches)
    (folder / "index.html").write_text(page, encoding="utf-8")
    writer.finish({listing.complaint for listing in listings if listing.complaint})
    return ReportFolder(
        folder=str(folder), index=str(folder / "index.html"), listings=len(listings),
        images=sum(len(x.stolen) for x in listings), pairs=len(matches), complaints=len(rows),
    )


class _Writer:
    """Pictures, thumbnails and evidence PNGs of the pairs: each picture decoded once, and not
    at all when the files a previous report made of it are still there."""

    def __init__(self, folder: Path, query_pictures: PictureSource, own_pictures: PictureSource,
                 annotations: list[dict[str, Any] | None]) -> None:
        self.folder = folder
        self.query_pictures = query_pictures
        self.own_pictures = own_pictures
        self.annotations = annotations
        # sha256 → the thumbnail made of it: file, the part of the original it shows, a note
        self.thumbs: dict[str, dict[str, Any]] = {}
        self._made_before, self._files_before = _read_manifest(folder / MANIFEST)
        self._written: set[str] = set()
        self._pictures: dict[tuple[str, str], Picture | str] = {}
        self._font = _font(13)
        self._bold = _font(14)

    def picture(self, location: str, sha256: str, own: bool) -> Picture | str:
        key = (location, sha256)
        if key not in self._pictures:
            if len(self._pictures) > 256:  # pairs come grouped by query: old queries are done
                self._pictures.clear()
            self._pictures[key] = (self.own_pictures if own else self.query_pictures)(location, sha256)
        return self._pictures[key]

    def thumbnail(self, picture: Picture | str, sha256: str) -> dict[str, Any] | None:
        """The thumbnail of a picture: {"file", "box", "note"}, made once."""
        if isinstance(picture, str):
            return None
        if sha256 not in self.thumbs:
            name = f"images/{sha256[:24]}.jpg"
            small = cv2.cvtColor(_fit(picture.rgb, THUMB_SIDE), cv2.COLOR_RGB2BGR)
            (self.folder / name).write_bytes(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])[1])
            self.thumbs[sha256] = {"file": name, "box": list(picture.box), "note": picture.note}
        return self.thumbs[sha256]

    def reused_thumbnail(self, sha256: str) -> dict[str, Any] | None:
        """The thumbnail a previous report made of this picture, when its file is still there."""
        if sha256 not in self.thumbs:
            made = self._made_before.get(sha256)
            if made is None or not (self.folder / made["file"]).is_file():
                return None
            self.thumbs[sha256] = made
        return self.thumbs[sha256]

    def finish(self, complaints: set[str]) -> None:
        """Note what this report wrote and what part of its original each thumbnail shows, for
        the next report, and remove what the last one wrote and this one no longer shows
        (pictures of pairs gone, drafts of listings gone). Files imguard did not write stay."""
        keep = {t["file"] for t in self.thumbs.values()} | self._written | complaints
        (self.folder / MANIFEST).write_text(json.dumps({"files": sorted(keep), "thumbnails": self.thumbs}, indent=0),
                                            encoding="utf-8")
        for name in self._files_before - keep:
            path = self.folder / name
            if path.parent.parent == self.folder and path.parent.name in ("images", "evidence", "complaints"):
                path.unlink(missing_ok=True)

    def listings(self, matches: list[Match]) -> list[ListingView]:
        grouped: dict[str, ListingView] = {}
        taken: set[str] = set()
        stolen: dict[tuple[str, str], StolenView] = {}
        for number, match in enumerate(matches, start=1):
            listing_id = match.listing or "(no listing)"
            listing = grouped.get(listing_id)
            if listing is None:
                meta = dict(match.query_metadata)
                listing = grouped[listing_id] = ListingView(listing_id, slug(listing_id, taken), meta,
                                                            http_url(meta.get("listing_url")))
            key = (listing_id, match.query)
            if key not in stolen:
                meta = match.query_metadata
                v = match.evidence
                captured = f"{v.captured_at} ({v.captured_from})" if v.captured_at else "unknown"
                stolen[key] = StolenView(match.query, os.path.basename(match.query.rstrip("/")) or match.query,
                                         meta.get("image_position", ""), http_url(match.query), captured)
                listing.stolen.append(stolen[key])
            stolen[key].pairs.append(self.pair(number, listing, match))
        return sorted(grouped.values(), key=lambda x: (-x.best_score, x.id))

    def pair(self, number: int, listing: ListingView, match: Match) -> PairView:
        v, e = match.evidence, match.explanation
        x0, y0, x1, y1 = e.reference_region
        outline = e.query_outline or ((0, 0), (v.query_size[0], 0), v.query_size, (0, v.query_size[1]))
        key = hashlib.sha1(json.dumps(match.as_dict(), sort_keys=True).encode()).hexdigest()[:12]
        png = f"evidence/{listing.slug}-{key}.png"
        query_thumb, own_thumb = self.reused_thumbnail(v.query_sha256), self.reused_thumbnail(v.reference_sha256)
        notes = []
        if query_thumb is None or own_thumb is None or not (self.folder / png).is_file():
            query = self.picture(match.query, v.query_sha256, own=False)
            own = self.picture(match.reference, v.reference_sha256, own=True)
            _evidence_png(self.folder / png, match, query, own, outline, self._font, self._bold)
            query_thumb, own_thumb = self.thumbnail(query, v.query_sha256), self.thumbnail(own, v.reference_sha256)
            notes += [f"their image: {query}" if isinstance(query, str) else "",
                      f"your original: {own}" if isinstance(own, str) else ""]
        self._written.add(png)
        notes += [f"their image: {query_thumb['note']}" if query_thumb and query_thumb["note"] else "",
                  f"your original: {own_thumb['note']}" if own_thumb and own_thumb["note"] else ""]
        return PairView(
            number=number, match=match, annotation=self.annotations[number - 1],
            evidence_png=png, query_thumb=query_thumb and query_thumb["file"],
            reference_thumb=own_thumb and own_thumb["file"],
            query_view_box=_view_box(query_thumb, v.query_size), reference_view_box=_view_box(own_thumb, v.reference_size),
            query_points=" ".join(f"{x:g},{y:g}" for x, y in outline),
            reference_rect=(x0, y0, x1 - x0, y1 - y0), notes=[n for n in notes if n],
            description=report.describe(match),
        )


# What a report wrote (files relative to its folder) and what each thumbnail shows: the next
# report reuses those and removes those it no longer needs, and nothing else.
MANIFEST = "imguard-report.json"


def _read_manifest(path: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
        thumbs = {k: v for k, v in made["thumbnails"].items()
                  if isinstance(v, dict) and {"file", "box", "note"} <= set(v)}
        return thumbs, {f for f in made["files"] if isinstance(f, str)}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return {}, set()


def _view_box(thumb: dict[str, Any] | None, size: tuple[int, int]) -> str:
    """The SVG viewBox that puts original pixel coordinates onto a thumbnail: the part of the
    original it shows (all of it, or the trimmed view of the catalog's own thumbnail)."""
    x0, y0, x1, y1 = thumb["box"] if thumb else (0, 0, *size)
    return f"{x0:g} {y0:g} {x1 - x0:g} {y1 - y0:g}"


# -- the evidence PNG ------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans where the system has it (most Linux systems: it covers most scripts of file
    names), else Pillow's built-in font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _panel(picture: Picture | str, points: Sequence[Sequence[float]], closed_box: bool) -> Image.Image:
    """One side of an evidence PNG: the picture fitted in PANEL_SIDE, the region outlined."""
    if isinstance(picture, str):
        panel = Image.new("RGB", (PANEL_SIDE, PANEL_SIDE // 2), (235, 235, 235))
        ImageDraw.Draw(panel).text((10, 10), "not available:\n" + report.safe_text(picture)[:80], fill=(90, 90, 90),
                                   font=_font(13))
        return panel
    rgb = _fit(picture.rgb, PANEL_SIDE)
    scale = rgb.shape[1] / picture.rgb.shape[1]
    image = Image.fromarray(rgb)
    shown = [(x * scale, y * scale) for x, y in picture.to_shown(points)]
    draw = ImageDraw.Draw(image)
    if closed_box:
        (ax, ay), (bx, by) = shown
        draw.rectangle((min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)), outline=OUTLINE, width=3)
    else:
        draw.line([*shown, shown[0]], fill=OUTLINE, width=3, joint="curve")
    return image


def _fit(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` shrunk (area averaging) to fit in a `side` square; as it is when it fits."""
    scale = side / max(rgb.shape[:2])
    return rgb if scale >= 1 else cv2.resize(rgb, load.scaled_size(rgb.shape, scale), interpolation=cv2.INTER_AREA)


def _evidence_png(path: Path, match: Match, query: Picture | str, own: Picture | str,
                  outline: Sequence[Sequence[float]], font: Any, bold: Any) -> None:
    v, e = match.evidence, match.explanation
    x0, y0, x1, y1 = e.reference_region
    left = _panel(query, outline, closed_box=False)
    right = _panel(own, ((x0, y0), (x1, y1)), closed_box=True)
    margin, gap, label = MARGIN, GAP, LABEL_HEIGHT
    width = margin * 2 + gap + left.width + right.width
    # The caption says what identifies the pair; dates and sizes are in matches.json and the page
    # (every glyph drawn costs: text is half of the picture's time).
    lines = [
        (bold, f"Score {match.score:.3f} ({match.kind}): {report.describe(match)}"),
        (font, f"Their image: {report.safe_text(_basename(match.query))} (SHA-256 {v.query_sha256[:16]}...), "
               f"listing {report.safe_text(match.listing)}"),
        (font, f"Your original: {report.safe_text(_basename(match.reference))} (SHA-256 {v.reference_sha256[:16]}...)"),
    ]
    wrapped = [(f, line) for f, text in lines for line in _wrap(text, f, width - 2 * margin)]
    height = margin + label + max(left.height, right.height) + margin + LINE_HEIGHT * len(wrapped) + margin
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, margin), "Their image", fill=(0, 0, 0), font=bold)
    draw.text((margin + left.width + gap, margin), "Your original", fill=(0, 0, 0), font=bold)
    canvas.paste(left, (margin, margin + label))
    canvas.paste(right, (margin + left.width + gap, margin + label))
    y = margin + label + max(left.height, right.height) + margin
    for f, line in wrapped:
        draw.text((margin, y), line, fill=(20, 20, 20), font=f)
        y += LINE_HEIGHT
    canvas.quantize(PNG_COLOURS, method=Image.Quantize.FASTOCTREE).save(path, compress_level=6)


def _basename(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] or location


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Break `text` into lines about `width` pixels wide (at spaces, or inside a long unbroken
    name), by the mean width of its characters: measuring every candidate line costs more than
    drawing it."""
    chars = max(10, int(len(text) * width / max(1.0, font.getlength(text))))
    return textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False) or [""]


def _jinja2() -> Any:
    """jinja2, imported when a report is written: `index` and a scan without `--report` never
    need it, and it was a tenth of the command's start-up (65 of 750 ms, measured with
    benchmarks/speed.py's machine)."""
    import jinja2
    import jinja2.sandbox

    return jinja2


# -- complaints ------------------------------------------------------------------------------


def complaint_drafter(path: str | os.PathLike[str] | None) -> Callable[[dict[str, Any]], str]:
    """The draft's template, as a function of its context: a text template, rendered sandboxed
    (a replaced one is the user's file, and the values it shows are competitors' strings).
    Whatever goes wrong in it is a SourceError naming the file."""
    jinja2 = _jinja2()
    env = jinja2.sandbox.SandboxedEnvironment(autoescape=False, keep_trailing_newline=True,
                                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    source_path = Path(path) if path is not None else COMPLAINT_TEMPLATE
    try:
        template = env.from_string(source_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SourceError(f"{source_path}: cannot read the complaint template ({exc.strerror or exc})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise SourceError(f"{source_path}:{exc.lineno}: not a valid template ({exc.message})") from exc

    def render(context: dict[str, Any]) -> str:
        try:
            return template.render(**context)
        except jinja2.exceptions.SecurityError as exc:
            raise SourceError(f"{source_path}: {exc} (not allowed in a complaint template)") from exc
        except jinja2.TemplateError as exc:
            raise SourceError(f"{source_path}: {exc.message or exc}") from exc

    return render


def _complaint_context(listing: ListingView, generated: str) -> dict[str, Any]:
    """What a complaint template sees: plain strings and lists, nothing to call; every string
    safe to show (control characters, such as a newline in a manifest cell that would add a line
    to the draft, made visible)."""
    images = []
    for number, stolen in enumerate(listing.copies, start=1):
        copies = [p for p in stolen.pairs if p.complainable]
        images.append({
            "number": number,
            "position": stolen.position,
            "location": stolen.location,
            "url": stolen.url or "",
            "captured": stolen.captured,
            "originals": [{
                "name": p.reference_name,
                "sha256": p.match.evidence.reference_sha256,
                "query_sha256": p.match.evidence.query_sha256,
                "first_indexed": p.match.evidence.reference_indexed_at or "",
                "own_listing": own_listing(p.match.reference_metadata),
                "title": p.match.reference_metadata.get("title", ""),
                "edits": p.description,
                "score": f"{p.match.score:.3f}",
                "evidence": p.evidence_png,
            } for p in copies],
        })
    meta = listing.metadata
    return _shown({
        "marketplace": meta.get("marketplace", ""),
        "listing": listing.id,
        "listing_url": listing.url or "",
        "asin": meta.get("asin", ""),
        "title": meta.get("title", ""),
        "seller": meta.get("seller", ""),
        "infringement_type": INFRINGEMENT,
        "images": images,
        "own_listings": listing.own_listings,
        "generated": generated,
        "imguard_version": __version__,
    })


def _shown(value: Any) -> Any:
    """Every string in nested lists and dicts made safe to show (`report.safe_text`)."""
    if isinstance(value, str):
        return report.safe_text(value)
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def _complaint_row(listing: ListingView, context: dict[str, Any]) -> dict[str, Any]:
    images = context["images"]
    described = "; ".join(
        f"image {i['position'] or i['number']} copies our photo {o['name']} (SHA-256 {o['sha256']}): {o['edits']}"
        for i in images for o in i["originals"])
    return {
        "marketplace": context["marketplace"], "listing": listing.id, "listing_url": context["listing_url"],
        "seller": context["seller"], "title": context["title"],
        "infringing_images": "; ".join(i["url"] or i["position"] or i["location"] for i in images),
        "infringement_type": INFRINGEMENT, "own_listings": "; ".join(context["own_listings"]),
        "description": described,
        "evidence": "; ".join(o["evidence"] for i in images for o in i["originals"]),
        "pairs": sum(len(i["originals"]) for i in images), "best_score": f"{listing.best_score:.3f}",
    }


# -- the page --------------------------------------------------------------------------------


def _page(listings: list[ListingView], errors: Sequence[ScanError], stats: dict[str, Any], generated: str,
          matches: list[Match]) -> str:
    jinja2 = _jinja2()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["shown"] = report.safe_text
    env.filters["http_url"] = http_url
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    threshold = {m.evidence.threshold for m in matches}
    return env.get_template("report.html.j2").render(
        listings=listings, errors=errors, stats=stats, generated=generated, version=__version__,
        threshold=", ".join(f"{t:g}" for t in sorted(threshold)) or "-", script=script, style=style,
        script_hash=_csp_hash(script), style_hash=_csp_hash(style),
        images=sum(len(x.stolen) for x in listings), pairs=len(matches),
        originals=len({m.evidence.reference_sha256 for m in matches}), outline=_hex(OUTLINE),
        decisions=any(p.annotation for x in listings for p in x.pairs),
        db=next((p.annotation["db"] for x in listings for p in x.pairs if p.annotation), ""),
    )


def _csp_hash(text: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _hex(colour: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)

