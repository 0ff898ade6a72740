"""Nightly benchmark: how much of a full scan's time an incremental nightly run costs.

Issue targets, on 10,000 competitor images: a nightly run with nothing changed takes ≤ 5 % of a
full scan's time; with 5 % of the competitor files changed ≤ 15 %; after 10 new own images ≤ 25 %.

The corpus: a catalog of 300 real product photos (../shared/data/products when it is there, else
scikit-image's photos, repeated with edits); 10,000 competitor images in 500 listing folders, a
tenth of them edited copies of catalog photos and the rest edited other photos -- among them
copies of 10 photos that are not in the catalog yet (they join it before the last run, and must
be found in files the run does not read again). In one run, on the same files:

1. `imguard scan` of all competitor images (the full scan: the reference time);
2. the first nightly run (everything is new: a full scan that also keeps fingerprints);
3. a nightly run with nothing changed;
4. a nightly run after 5 % of the competitor files were rewritten (re-encoded);
5. a nightly run after 10 own images were added to the catalog.

Run: python benchmarks/nightly.py [--images 10000] [--jobs 2] [--out benchmarks/NIGHTLY.md]
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _dataset  # noqa: E402

import imguard  # noqa: E402

CATALOG = 300
NEW_OWN = 10
LISTINGS = 500
COPY_SHARE = 0.1
CHANGED_SHARE = 0.05
TARGETS = {"nothing changed": 0.05, "5 % of files changed": 0.15, "10 new own images": 0.25}


def edited(image: Image.Image, rng: random.Random) -> Image.Image:
    """A competitor's version of a photo: resized, sometimes cropped, mirrored or recoloured."""
    scale = rng.uniform(0.45, 0.9)
    image = image.resize((max(64, round(image.width * scale)), max(64, round(image.height * scale))))
    if rng.random() < 0.3:
        w, h = image.size
        image = image.crop((round(w * rng.uniform(0, 0.15)), round(h * rng.uniform(0, 0.15)), w, h))
    if rng.random() < 0.2:
        image = ImageOps.mirror(image)
    if rng.random() < 0.2:
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    return image


def make_corpus(folder: Path, images: int, seed: int) -> tuple[Path, Path, Path]:
    """catalog/, later/ (the 10 own photos added before the last run), competitors/<listing>/."""
    catalog, later, competitors = folder / "catalog", folder / "later", folder / "competitors"
    if (folder / "done").exists():
        return catalog, later, competitors
    shutil.rmtree(folder, ignore_errors=True)
    for part in (catalog, later, competitors):
        part.mkdir(parents=True)
    sources = _dataset.find_sources()
    rng = random.Random(seed)
    rels = sorted(sources.rels)
    rng.shuffle(rels)
    photos = [_dataset.load_rgb(sources.path(rel), max_side=1200) for rel in rels]
    own, new_own, others = photos[:CATALOG], photos[CATALOG:CATALOG + NEW_OWN], photos[CATALOG + NEW_OWN:]
    for number, photo in enumerate(own):
        photo.save(catalog / f"own{number:04d}.jpg", quality=90)
    for number, photo in enumerate(new_own):
        photo.save(later / f"later{number:02d}.jpg", quality=90)
    for number in range(images):
        if number < NEW_OWN:
            photo = new_own[number]  # stolen before the seller indexed it
        elif rng.random() < COPY_SHARE:
            photo = own[rng.randrange(len(own))]
        else:
            photo = others[rng.randrange(len(others))]
        listing = competitors / f"B0LIST{number % LISTINGS:04d}"
        listing.mkdir(exist_ok=True)
        edited(photo, rng).save(listing / f"image{number:05d}.jpg", quality=rng.randint(70, 90))
    (folder / "done").write_text("ok\n")
    return catalog, later, competitors


def thumbnail_scores(guard: imguard.Catalog, findings: list) -> list[float]:
    """How far a verification on the thumbnail a nightly run keeps falls from the full scan's
    score, for these findings (thumbnail minus full): what REVERSE_MARGIN must cover."""
    from imguard import fingerprint, history

    past = history.History(guard.store)
    matcher = guard.matcher()
    differences = []
    for finding in findings:
        mirror = fingerprint.features_of_file(guard.store.reference(finding.image_id).abspath)[1]
        record, prints = past.prints(finding.competitor_id)
        score = matcher.verify_prints(record, prints, {finding.image_id: mirror})[finding.image_id]
        differences.append(round(score - finding.score, 3))
    return sorted(differences)


def timed(label: str, run, rows: list) -> object:
    start = time.perf_counter()
    result = run()
    rows.append((label, time.perf_counter() - start, result))
    print(f"{label}: {rows[-1][1]:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    corpus = _dataset.CACHE_DIR / f"nightly-{args.images}-{args.seed}-{_dataset.find_sources().fingerprint}"
    catalog, later, competitors = make_corpus(corpus, args.images, args.seed)
    work = corpus / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(competitors, work / "competitors")
    shutil.copytree(catalog, work / "catalog")
    (work / "imguard.toml").write_text(
        f'catalog = "catalog"\ndb = "guard"\njobs = {args.jobs}\n[[source]]\nname = "shops"\npath = "competitors"\n')
    rows: list = []
    with imguard.Catalog.open(work / "scan-guard") as scan_catalog:
        scan_catalog.add(work / "catalog", jobs=args.jobs)
        full = timed("full scan (imguard scan)", lambda: sum(1 for _ in scan_catalog.scan(work / "competitors",
                                                                                          jobs=args.jobs)), rows)
    with imguard.Catalog.open(work / "guard") as guard:
        config = work / "imguard.toml"
        first = timed("first nightly run (everything new)", lambda: guard.nightly(config), rows)
        timed("nothing changed", lambda: guard.nightly(config), rows)
        files = sorted((work / "competitors").rglob("*.jpg"))
        rng = random.Random(args.seed + 1)
        for path in rng.sample(files, round(CHANGED_SHARE * len(files))):
            with Image.open(path) as image:
                image.convert("RGB").save(path, quality=rng.randint(60, 95))  # new bytes, same picture
        changed = timed("5 % of files changed", lambda: guard.nightly(config), rows)
        for path in later.iterdir():
            shutil.copyfile(path, work / "catalog" / path.name)
        added = timed("10 new own images", lambda: guard.nightly(config), rows)
        margins = thumbnail_scores(guard, [f for f in added.changes["new"] if "/later" in f.reference])
    full_seconds = rows[0][1]
    found_later = {f.reference for f in added.changes["new"] if "/later" in f.reference}
    lines = [
        "# Nightly benchmark",
        "",
        f"- command: `python {shlex.join(['benchmarks/nightly.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- photos: {_dataset.find_sources().kind}; {CATALOG} own photos (+{NEW_OWN} added before the last run); "
        f"{args.images} competitor images in {LISTINGS} listing folders; jobs={args.jobs}",
        f"- the full scan found {full} matches; the first nightly run {len(first.changes['new'])} findings; "
        f"after 5 % of the files changed: {changed.stats['scanned']} files read, "
        f"{len(changed.changes['new'])} new, {len(changed.changes['resolved'])} resolved; after the new own images: "
        f"{added.stats['rescanned_for_new_own_images']} files read again, {len(added.changes['new'])} new findings, "
        f"{len(found_later)} of the {NEW_OWN} new own images found",
        f"- the new own images' findings verified on the kept thumbnails (`Matcher.verify_prints`) against their "
        f"full scans: score differences {', '.join(f'{d:+.3f}' for d in margins)} (nightly.REVERSE_MARGIN = "
        f"{imguard.nightly.REVERSE_MARGIN})",
        "",
        "| run | seconds | share of the full scan | target | result |",
        "|---|---:|---:|---:|---|",
    ]
    for label, seconds, result in rows:
        target = TARGETS.get(label)
        if isinstance(result, imguard.NightlyResult):
            steps = {k.removeprefix("seconds_"): v for k, v in result.stats.items() if k.startswith("seconds_")}
            label = f"{label} ({', '.join(f'{k} {v:.1f} s' for k, v in steps.items())})"
        share = seconds / full_seconds
        verdict = "" if target is None else ("PASS" if share <= target else "FAIL")
        lines.append(f"| {label} | {seconds:.1f} | {share:.1%} | {'' if target is None else f'≤ {target:.0%}'} | {verdict} |")
    _dataset.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
