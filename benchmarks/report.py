"""Report benchmark: how long the evidence report of a big scan takes to write, and how big it is.

Issue target: a report of 2,000 pairs over 300 listings is written in under a minute on one core,
and the folder stays under 100 MB.

The pairs are real: a catalog of real product photos (../shared/data/products when it is there,
else scikit-image's photos, repeated with edits), and 2,000 competitor images -- each a resized,
re-compressed, sometimes cropped or mirrored copy of a catalog photo -- in 300 listing folders,
indexed and scanned by imguard (not timed). Only `Catalog.write_report` is timed, in this process
(it runs on one core), then the folder is measured.

Run: python benchmarks/report.py [--pairs 2000] [--listings 300] [--out benchmarks/REPORT.md]
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _dataset  # noqa: E402

import imguard  # noqa: E402

CATALOG = 300  # own photos (at most: fewer when the source has fewer)
SECONDS_TARGET = 60.0
MEGABYTES_TARGET = 100.0


def make_corpus(folder: Path, pairs: int, listings: int, seed: int) -> tuple[Path, Path]:
    """catalog/ (own photos, ≤ 1600 px, JPEG) and competitors/<listing>/ (edited copies)."""
    catalog, competitors = folder / "catalog", folder / "competitors"
    done = folder / "done"
    if done.exists():
        return catalog, competitors
    shutil.rmtree(folder, ignore_errors=True)
    catalog.mkdir(parents=True)
    sources = _dataset.find_sources()
    rng = random.Random(seed)
    rels = sorted(sources.rels)
    rng.shuffle(rels)
    own = []
    for number, rel in enumerate(rels[:CATALOG]):
        image = _dataset.load_rgb(sources.path(rel), max_side=1600)
        path = catalog / f"own{number:04d}.jpg"
        image.save(path, quality=90)
        own.append(path)
    for number in range(pairs):
        listing = competitors / f"B0LIST{number % listings:04d}"
        listing.mkdir(parents=True, exist_ok=True)
        with Image.open(own[number % len(own)]) as original:
            image = original.convert("RGB")
        scale = rng.uniform(0.5, 0.9)
        image = image.resize((max(64, round(image.width * scale)), max(64, round(image.height * scale))))
        if rng.random() < 0.3:  # a crop keeping ~80 %
            w, h = image.size
            image = image.crop((round(w * 0.1), round(h * 0.1), w, h))
        if rng.random() < 0.2:
            image = ImageOps.mirror(image)
        image.save(listing / f"image{number:05d}.jpg", quality=rng.randint(70, 90))
    done.write_text("ok\n")
    return catalog, competitors


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--listings", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)

    work = _dataset.CACHE_DIR / f"report-{args.pairs}-{args.listings}-{args.seed}-{_dataset.find_sources().fingerprint}"
    catalog, competitors = make_corpus(work, args.pairs, args.listings, args.seed)
    with imguard.Catalog.open(work / "guard") as guard:
        guard.add(catalog, jobs=2)
        run = guard.scan(competitors, jobs=2)
        matches = list(run)
        out = work / "report"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        written = guard.write_report(run, out)
        seconds = time.perf_counter() - start

    sizes = {part: folder_bytes(out / part) / 2**20 for part in ("images", "evidence", "complaints")}
    total = folder_bytes(out) / 2**20
    pngs = list((out / "evidence").iterdir())
    lines = [
        "# Evidence report benchmark",
        "",
        f"- command: `python {shlex.join(['benchmarks/report.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- photos: {_dataset.find_sources().kind}; {len(list(catalog.iterdir()))} own photos, "
        f"{sum(1 for _ in competitors.rglob('*.jpg'))} competitor images in {args.listings} listing folders",
        f"- scan: {len(matches)} pairs over {written.listings} listings ({len(run.errors)} unreadable files)",
        "",
        "| pairs | listings | seconds (one core) | ms per pair | folder MB | thumbnails MB | evidence PNGs MB "
        "| mean PNG KB | complaints MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {written.pairs} | {written.listings} | {seconds:.1f} | {1000 * seconds / max(1, written.pairs):.1f} "
        f"| {total:.1f} | {sizes['images']:.1f} | {sizes['evidence']:.1f} "
        f"| {1024 * sizes['evidence'] / max(1, len(pngs)):.0f} | {sizes['complaints']:.2f} |",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
        f"| written in under {SECONDS_TARGET:.0f} s on one core | {seconds:.1f} s | "
        f"{'PASS' if seconds < SECONDS_TARGET else 'FAIL'} |",
        f"| folder under {MEGABYTES_TARGET:.0f} MB | {total:.1f} MB | {'PASS' if total < MEGABYTES_TARGET else 'FAIL'} |",
    ]
    _dataset.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
