"""Why copies are missed: for each copy imguard does not find at its default threshold, what its
source shows of it at each stage. A diagnosis for detection work, on accuracy.py's dataset.

For every missed copy of the chosen families (default: the families short of 0.85 in RESULTS.md):
- keypoints: how many of the copy's ORB descriptors have a near neighbour (within
  scan.VOTE_DISTANCE) among its source's, by exact search in the orientation that has more:
  what the local-feature votes can at best give the source (fewer than scan.MIN_VOTES: it can
  never be a candidate by features);
- geometry: RANSAC inliers of the copy's keypoints against its source's (verify.match_keypoints);
- compared: the blocks the dense check compared under that alignment, against the blocks of the
  source the copy covers: few compared of many covered means the covered part of the source
  reads as its plain background (a white product on white, say).

Run: python benchmarks/missed.py [--families cutout,heavy_crop] [--out FILE]
(accuracy.py must have built its dataset first: this reads benchmarks/.cache/dataset-*.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

import imguard
from imguard import features, fingerprint, load, scan, verify
from imguard.store import Reference

CACHE = Path(__file__).resolve().parent / ".cache"

# The buckets of the table, in the order a copy is lost.
FEW_KEYPOINTS = "too few keypoints shared with the source"
NO_GEOMETRY = "keypoints shared, no geometry"
NOTHING_COMPARED = "aligned, little of the covered source compared"
WEAK = "aligned and compared, scored under the threshold"
OTHER = "aligned and compared well, another answer first"
BUCKETS = (FEW_KEYPOINTS, NO_GEOMETRY, NOTHING_COMPARED, WEAK, OTHER)
LITTLE = 0.25  # compared blocks under this share of the covered ones: "little compared"


def newest_dataset() -> Path:
    """The most recent full (not --quick) dataset accuracy.py built."""
    made = []
    for folder in CACHE.glob("dataset-*"):
        manifest = folder / "manifest.json"
        if manifest.exists() and not json.loads(manifest.read_text())["params"].get("quick"):
            made.append((manifest.stat().st_mtime, folder))
    if not made:
        sys.exit("no dataset: run benchmarks/accuracy.py first")
    return max(made)[1]


def shared_keypoints(query: np.ndarray, reference: np.ndarray) -> int:
    """Query descriptors with a neighbour within scan.VOTE_DISTANCE among the reference's."""
    if len(query) == 0 or len(reference) == 0:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).match(query, reference)
    return sum(1 for m in matches if m.distance <= scan.VOTE_DISTANCE)


def diagnose(path: str, reference: Reference, canvas: verify.Canvas) -> dict:
    """What the copy at `path` shares with its source `reference` at each stage."""
    view = fingerprint.canonical_view(load.load(path, features.FEATURE_SIDE))
    grey = cv2.cvtColor(view.rgb, cv2.COLOR_RGB2GRAY)
    plain, mirror = features.features_and_mirror(grey)
    shared = [shared_keypoints(d, reference.descriptors) for _, d in (plain, mirror)]
    mirrored = shared[1] > shared[0]
    points, descriptors = mirror if mirrored else plain
    alignment = verify.match_keypoints(points, descriptors, reference.keypoints, reference.descriptors, mirrored)
    out = {"shared": max(shared), "inliers": alignment.inliers if alignment else 0, "compared": 0, "covered": 0}
    if alignment is not None:
        check = verify.dense_check(canvas, reference.view_size, view.rgb, alignment)
        out["compared"], out["covered"] = check.blocks, check.covered_blocks
    return out


def bucket(row: dict, reported_first: bool) -> str:
    if row["shared"] < scan.MIN_VOTES:
        return FEW_KEYPOINTS
    if row["inliers"] == 0:
        return NO_GEOMETRY
    if row["compared"] < LITTLE * max(1, row["covered"]):
        return NOTHING_COMPARED
    return OTHER if reported_first else WEAK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="cutout,heavy_crop")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    dataset = newest_dataset()
    manifest = json.loads((dataset / "manifest.json").read_text())
    root = Path(manifest["source_root"])
    families = args.families.split(",")
    queries = [q for q in manifest["queries"] if q["family"] in families and q["reference"]]
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        catalog = imguard.Catalog.open(folder)
        catalog.add([str(root / name) for name in manifest["catalog"]], jobs=2)
        best: dict[str, imguard.Match] = {}
        for match in catalog.scan([str(dataset / q["path"]) for q in queries], jobs=2):
            if match.kind == "copy" and match.query not in best:
                best[match.query] = match
        ids = {os.path.relpath(path, root): state.id for path, state in catalog.store.file_states().items()}
        counts: dict[str, Counter] = {f: Counter() for f in families}
        for q in queries:
            path = str(dataset / q["path"])
            found = best.get(path)
            if found is not None and os.path.relpath(found.reference, root) == q["reference"]:
                counts[q["family"]]["found"] += 1
                continue
            reference = catalog.store.reference(ids[q["reference"]])
            row = diagnose(path, reference, verify.Canvas.of(fingerprint.decode_thumbnail(reference.thumbnail)))
            counts[q["family"]][bucket(row, found is not None)] += 1
        catalog.close()
    lines = [
        "# Why copies are missed",
        "",
        f"- command: `python benchmarks/missed.py --families {args.families}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; dataset: {dataset.name} ({len(manifest['catalog'])} catalog "
        f"images); default threshold {imguard.DEFAULT_THRESHOLD}; {time.time() - started:.0f} s",
        "",
        "| family | copies | found | " + " | ".join(BUCKETS) + " |",
        "|---|---:|---:|" + "---:|" * len(BUCKETS),
    ]
    for family in families:
        c = counts[family]
        total = sum(c.values())
        lines.append(f"| {family} | {total} | {c['found']} | " + " | ".join(str(c[b]) for b in BUCKETS) + " |")
    lines += ["", (
        f"Too few keypoints: fewer than {scan.MIN_VOTES} of the copy's descriptors have a neighbour among its "
        "source's within the vote distance, even by exact search: local features cannot bring it up. "
        "No geometry: enough shared, but RANSAC finds no consistent map. Little compared: aligned, but the "
        f"dense check compared under {LITTLE:.0%} of the source's blocks the copy covers (the rest reads as "
        "the source's plain background). Under the threshold: aligned and compared, the agreement too low. "
        "Another answer first: the source verifies well here, yet another catalog image was reported first."
    )]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
