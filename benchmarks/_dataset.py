"""The accuracy benchmark's data: real product photos, a careful split, and edited copies.

Three steps, each cached under benchmarks/.cache/ and reused when its inputs and parameters are
the same:

1. Sources: ../shared/data/products when it is there (real e-commerce photos from 15 demo
   catalogs, never copied into the repo), else the photos scikit-image ships in skimage/data.
   Each photo's source catalog (its folder) is kept: accuracy.py makes folds of whole sources.
2. Grouping and split. The development photos are not independent: ORB + RANSAC finds a few
   hundred pairs sharing tens to hundreds of verified keypoints, a dHash check and the file
   names find more. Some pairs are the same photo (recolours, crops and details of one master,
   one photo pasted whole into another, one photo in two sources): split across catalog and
   distractors, a "negative" query would really be a copy and the false-positive rate would be
   wrong. Others share only a part (another garment on the same model in the same stance, another
   print on the same blank, a front and a back): those are the hard look-alikes the benchmark
   must keep on both sides. A dense check of each aligned pair tells them apart (see
   SAME_PHOTO); same-photo pairs are merged into groups with union-find, and whole groups go to
   the catalog or to the distractors, about half of each source on each side.
   Recolours: a recolour of one photo is the same photo, so a colour family stays on one side.
   A copy of one variant must rank that variant first; the family's other variants in the
   catalog are its "siblings" (Dataset.siblings), and a copy whose colour was removed (greyscale,
   sepia: tagged "colourless") cannot tell them apart.
3. Queries: "stolen copies" of catalog images in sixteen edit families (_edits.py: nine made with
   Meta's AugLy, seven drawn with Pillow and OpenCV) are the positives (ground truth = the exact
   source image); distractor images edited the same ways are the negatives (ground truth = no
   match). A JSON manifest lists them.
4. The recolour set (build_recolour_set): step 2 keeps a colour family on one side, so no
   negative above is a recolour of a catalog image. This small second set, with its own catalog,
   holds them: one photo of each colour family, edited in every family, against its other colours.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np

import _edits
from _edits import FAMILIES, EditContext, apply_family, load_rgb, patch_pillow_for_augly, save_copy

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED_PRODUCTS = REPO_ROOT.parent / "shared" / "data" / "products"
CACHE_DIR = BENCH_DIR / ".cache"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# skimage/data files that are not independent photos: a stereo twin, synthetic charts, masks.
SKIMAGE_EXCLUDE = {
    "motorcycle_right.png",  # stereo twin of motorcycle_left
    "chessboard_GRAY.png",
    "chessboard_RGB.png",
    "color.png",
    "logo.png",
    "phantom.png",
    "horse.png",
}

DATASET_VERSION = 3  # bump when the generation below changes: old caches are then not reused
MAX_SIDE = 1600  # copies are made from sources capped to this long side, as marketplaces serve


def publish(lines: list[str], out: Path | None) -> None:
    """Print a benchmark's Markdown tables, and write them to `out` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text, encoding="utf-8")


def shown(path: Path) -> str:
    """A path as the committed tables print it: relative to the repository (no absolute paths)."""
    return os.path.relpath(path, REPO_ROOT)



# ============================================================================================
# Sources


@dataclass(frozen=True)
class Sources:
    """Where the photos come from: a root folder and file paths relative to it."""

    kind: str  # "products" or "skimage"
    root: Path
    rels: tuple[str, ...]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def origin(self, rel: str) -> str:
        """The source catalog a photo comes from: its folder (prestashop16-fashion, thelia...).
        scikit-image's photos have none: each is its own source."""
        return rel.split("/", 1)[0] if self.kind == "products" else rel

    @functools.cached_property
    def fingerprint(self) -> str:
        """Changes when any file is added, removed or rewritten: names and contents, not mtimes,
        so a fresh copy of the same photos (../shared is re-provisioned) reuses the caches.
        Read once (~1 s for the shared photos)."""
        h = hashlib.sha1(self.kind.encode())
        for rel in self.rels:
            h.update(rel.encode() + b"\0" + hashlib.sha1(self.path(rel).read_bytes()).digest())
        return h.hexdigest()[:16]


def find_sources(products: Path | None = SHARED_PRODUCTS) -> Sources:
    """Real product photos when ../shared is there; scikit-image's sample photos otherwise
    (or when `products` is None)."""
    if products is not None and products.is_dir():
        rels = sorted(
            p.relative_to(products).as_posix()
            for p in products.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if rels:
            return Sources("products", products, tuple(rels))
    import skimage.data

    root = Path(skimage.data.__file__).parent
    rels = sorted(
        p.name
        for p in root.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in SKIMAGE_EXCLUDE
    )
    return Sources("skimage", root, tuple(rels))


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _write_json(path: Path, obj) -> None:
    """Write atomically: a cache file that exists is a complete one."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# ============================================================================================
# Grouping near-duplicates: candidate pairs found three ways, then checked densely

ORB_FEATURES = 700
ORB_SIDE = 512  # long side of the luma image ORB runs on
KNN = 16  # neighbours per descriptor: enough to see several near-identical images at once
RATIO = 0.8  # Lowe's ratio test, applied per candidate image (see _votes)
CANDIDATES = 6  # top-voted images verified with RANSAC, per image
MIN_VOTES = 8
MIN_INLIERS = 25  # a verified pair with this many inliers shares a photo, or a part of one
DHASH_SIZE = 16  # 256-bit dHash: the check SOURCES.md used for re-saves
DHASH_MAX_BITS = 24  # <= ~10 % of the bits differ: the same layout, recoloured, re-saved or alike

# --------------------------------------------------------------------------------------------
# Features


def _load_grey(path: str, side: int) -> np.ndarray:
    return np.asarray(load_rgb(path, max_side=side).convert("L"))


def _orb_and_dhash(path: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """ORB keypoints+descriptors at 512 px, and the 256-bit dHash of the image and its mirror."""
    import cv2
    import imagehash
    from PIL import Image, ImageOps

    cv2.setNumThreads(1)
    grey = _load_grey(path, ORB_SIDE)
    orb = cv2.ORB_create(nfeatures=ORB_FEATURES)
    kps, desc = orb.detectAndCompute(grey, None)
    if desc is None:
        desc = np.zeros((0, 32), np.uint8)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    im = Image.fromarray(grey)
    hashes = [
        int(str(imagehash.dhash(x, DHASH_SIZE)), 16) for x in (im, ImageOps.mirror(im))
    ]
    return pts, desc, hashes[0], hashes[1]


# --------------------------------------------------------------------------------------------
# Voting and verification


def _votes(
    desc_img: np.ndarray, nn_ids: np.ndarray, nn_dist: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query descriptor, vote for every other image whose best descriptor passes a ratio test.

    A plain 2-NN ratio test over the whole index would reject exactly the matches we look for
    when three or more images share a photo (the two nearest neighbours are equally good). So
    the test is done per candidate image: its best distance against its second best (or, if the
    image has no second descriptor among the KNN neighbours, against the farthest neighbour,
    which bounds it). Returns (query descriptor idx, reference descriptor id, reference image)
    of every vote.
    """
    k = nn_ids.shape[1]
    img = np.where(nn_ids >= 0, owner[np.clip(nn_ids, 0, None)], -1)
    same = img[:, :, None] == img[:, None, :]
    earlier = np.tril(np.ones((k, k), bool), -1)
    later = np.triu(np.ones((k, k), bool), 1)
    first = ~(same & earlier[None]).any(2)
    later_same = same & later[None]
    has_second = later_same.any(2)
    second_pos = later_same.argmax(2)
    d2 = np.where(has_second, np.take_along_axis(nn_dist, second_pos, 1), nn_dist[:, -1:])
    ok = first & (img >= 0) & (img != desc_img[:, None]) & (nn_dist < RATIO * d2)
    rows, cols = np.nonzero(ok)
    return rows, nn_ids[rows, cols], img[rows, cols]


def _ransac_inliers(src: np.ndarray, dst: np.ndarray) -> int:
    import cv2

    if len(src) < 8:
        return 0
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0, maxIters=2000, confidence=0.995)
    return 0 if mask is None else int(mask.sum())


def _orb_pairs(points: list[np.ndarray], descs: list[np.ndarray]) -> dict[tuple[int, int], int]:
    """All descriptors in one IndexBinaryFlat(256); vote; verify top candidates with RANSAC."""
    import faiss

    counts = np.array([len(d) for d in descs])
    if not counts.sum():
        return {}
    owner = np.repeat(np.arange(len(descs)), counts)
    all_desc = np.ascontiguousarray(np.concatenate(descs))
    all_pts = np.concatenate(points)
    index = faiss.IndexBinaryFlat(256)
    index.add(all_desc)

    q_rows, r_ids, r_imgs = [], [], []
    chunk = 20000
    for start in range(0, len(all_desc), chunk):
        stop = min(start + chunk, len(all_desc))
        dist, ids = index.search(all_desc[start:stop], min(KNN, len(all_desc)))
        rows, refs, imgs = _votes(owner[start:stop], ids, dist.astype(np.float32), owner)
        q_rows.append(rows + start)
        r_ids.append(refs)
        r_imgs.append(imgs)
    q_desc = np.concatenate(q_rows)
    r_desc = np.concatenate(r_ids)
    r_img = np.concatenate(r_imgs)
    q_img = owner[q_desc]

    # Votes per (query image, reference image); verify the best-voted candidates of each image.
    n = len(descs)
    votes = np.bincount(q_img * n + r_img, minlength=n * n).reshape(n, n)
    order = np.lexsort((r_img, q_img))
    q_desc, r_desc, r_img, q_img = q_desc[order], r_desc[order], r_img[order], q_img[order]
    pair_key = q_img.astype(np.int64) * n + r_img
    starts = np.searchsorted(pair_key, np.arange(n * n, dtype=np.int64).reshape(n, n))

    pairs: dict[tuple[int, int], int] = {}
    for i in range(n):
        for j in np.argsort(-votes[i])[:CANDIDATES]:
            if votes[i, j] < MIN_VOTES:
                break
            lo = starts[i, j]
            sel = slice(lo, lo + votes[i, j])
            # one correspondence per reference keypoint: duplicates would inflate the inliers
            refs, first = np.unique(r_desc[sel], return_index=True)
            src = all_pts[q_desc[sel][first]]
            dst = all_pts[refs]
            inliers = _ransac_inliers(src, dst)
            key = (min(i, j), max(i, j))
            if inliers >= MIN_INLIERS and inliers > pairs.get(key, 0):
                pairs[key] = inliers
    return pairs


def _dhash_pairs(plain: list[int], mirrored: list[int]) -> set[tuple[int, int]]:
    """Pairs whose 256-bit dHash (or one's mirror) differs in at most DHASH_MAX_BITS bits."""

    def to_bits(values: list[int]) -> np.ndarray:
        raw = b"".join(v.to_bytes(DHASH_SIZE * DHASH_SIZE // 8, "big") for v in values)
        return np.unpackbits(np.frombuffer(raw, np.uint8).reshape(len(values), -1), 1)

    a, m = to_bits(plain), to_bits(mirrored)
    pairs = set()
    for other in (a, m):
        dist = (a[:, None, :] != other[None, :, :]).sum(2)
        for i, j in zip(*np.nonzero(dist <= DHASH_MAX_BITS)):
            if i != j:
                pairs.add((int(min(i, j)), int(max(i, j))))
    return pairs


# --------------------------------------------------------------------------------------------
# Name families: candidates the file names say outright (variants of one product)

_OXID_DROP = re.compile(r"^(front|back|detail\d|deck|bottom|sb|sg|v|pi|z\d+[a-z]?|)$")
# Words that name a variant, not a product: the view, the colour, the print (spree's blanks carry
# a Rails or a Spree logo), the shop's "product" prefix; numbers are variants too.
_VARIANT_WORD = re.compile(
    r"^(\d*|front|back|detail\d*|black|white|red|blue|green|gray|grey|dark|product|ror|spree|apache|ruby|jr|t)$"
)
_NAMED_VARIANTS = {"opencart", "nopcommerce", "saleor", "saleor-demoproducts", "sylius", "spree"}


def name_family(rel: str) -> str | None:
    """Family key of a source file from its name, or None when the name says nothing.

    thelia PRODnnn-k are colour variants of one product (many are the same photo recoloured);
    oxideshop files are picture slots 1..4 of one product (front/back/detail, deck/bottom,
    recoloured jeans sb/sg); solidus caps and hoodies come in colours of one mockup. In the
    sources of _NAMED_VARIANTS a name less its variant words (_VARIANT_WORD, trailing digits)
    names the product: opencart's iphone_1..6, nopcommerce's NikonCamera_1/_2/_black/_red,
    saleor's white/blue-plimsolls-1..4, saleordemoproduct_cl_bogo01..04_k, spree's ror_tote_back
    and spree_tote_front. A family only proposes its pairs to the dense check.
    """
    folder, _, name = rel.partition("/")
    stem = name.rsplit(".", 1)[0]
    if folder == "thelia":
        m = re.match(r"(PROD\d+)", stem)
        return f"thelia/{m.group(1)}" if m else None
    if folder == "oxideshop-demodata":
        tokens = [t for t in stem.split("_")[1:] if not _OXID_DROP.match(t)]
        if len(tokens) > 1 and tokens[-1] == "1":
            tokens = tokens[:-1]
        return "oxideshop/" + "_".join(tokens) if tokens else None
    if folder == "solidus":
        m = re.match(r"solidus_(cap|hoodie)_", stem)
        return f"solidus/{m.group(1)}" if m else None
    if folder in _NAMED_VARIANTS:
        tokens = [re.sub(r"\d+$", "", t) for t in re.split(r"[_\-]+", stem.lower()) if not _VARIANT_WORD.match(t)]
        key = "".join(tokens)
        return f"{folder}/{key}" if key else None
    return None


def _name_pairs(rels: list[str]) -> set[tuple[int, int]]:
    """Every pair within a name family (not a star: a back and its detail must be checked too)."""
    by_family = defaultdict(list)
    for i, rel in enumerate(rels):
        fam = name_family(rel)
        if fam:
            by_family[fam].append(i)
    return {(a, b) for members in by_family.values() for k, a in enumerate(members) for b in members[k + 1:]}


# --------------------------------------------------------------------------------------------
# Which candidate pairs are the same photo: a dense check of the aligned pair
#
# The evidence above finds pairs that share something. Some share the whole picture (a recolour,
# a crop or detail of one master, one photo pasted into a bigger one, a re-save): a copy of one is
# a copy of the other, so they must stay on one side of the split. Others share only a part:
# another garment composited on the same model in the same stance, another print on the same
# blank mockup, one logo on two products, a front and a back. Those are the hardest look-alikes a
# seller meets, and the benchmark needs them on both sides. Local features cannot tell the two
# apart (a composite gets as many inliers as a copy); comparing the aligned pair block by block
# can: how much of one image's texture does the other reproduce, whatever the colours?

CHECK_SIDE = 512  # both images at this long side, as ORB_SIDE
CHECK_FEATURES = 1500  # pairwise ORB for the alignment: more than the search used, a pair is cheap
BLOCK = 16  # compared blocks, in pixels at CHECK_SIDE
TEXTURED = 6.0  # grey std of a block with texture to compare (flat white background is not)
BLOCK_NCC = 0.5  # normalised cross-correlation of a block that agrees: same structure, any colour
# A pair is the same photo when the other image reproduces at least this share of one image's
# textured blocks. Measured on the 917 candidate pairs of the 971 photos (dataset version 3), and
# the pairs near the line looked at: another garment on the same model, or one outfit in another
# pose, scored <= 0.55; one logo on two products <= 0.52; a front against a back <= 0.51 (plain
# dark jeans, whose outlines align mirrored, up to 0.62); two scans of one cover design 0.56-0.59;
# recolours of one photo 0.65-1.0; details against their master, and renders pasted whole into a
# bigger picture, 0.62-0.96, but a tablet's back pasted beside its front 0.54. Above the line too:
# another print on one blank mockup (0.56-0.96), two close angles of one laptop (0.62), two
# lifestyle photos on soft backgrounds (0.67): they stay together, which keeps copies out of the
# negatives at the cost of some look-alikes.
SAME_PHOTO = 0.6
RECOLOURED = 30.0  # RGB distance of the agreeing blocks' mean colours (75th pct): another colour


def _block_view(a: np.ndarray) -> np.ndarray:
    """(h, w[, c]) -> (rows, cols, BLOCK*BLOCK[, c]) blocks, the ragged edge dropped."""
    rows, cols = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    b = a[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK, *a.shape[2:])
    return b.swapaxes(1, 2).reshape(rows, cols, BLOCK * BLOCK, *a.shape[2:]).astype(np.float32)


def _reproduced(a: np.ndarray, b: np.ndarray, h_ab: np.ndarray) -> tuple[float, float]:
    """How much of `a` does `b` reproduce, `h_ab` mapping a's pixels onto b's: the share of a's
    textured blocks that agree with b warped onto a (blocks b does not cover count as not
    agreeing), and the colour distance over the agreeing ones.

    Where b shows a's content smaller (a detail against its master), b warped onto a is blurred by
    the upscaling, so a is blurred as much before the comparison."""
    import cv2

    h, w = a.shape[:2]
    warp = dict(dsize=(w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    b_on_a = cv2.warpPerspective(b, h_ab, **warp)
    covered = cv2.warpPerspective(np.full(b.shape[:2], 255, np.uint8), h_ab, **warp)
    centre = np.array([[w / 2, h / 2, 1], [w / 2 + 1, h / 2, 1], [w / 2, h / 2 + 1, 1]]).T
    mapped = h_ab @ centre
    mapped = mapped[:2] / mapped[2]
    area = abs(np.linalg.det(np.stack([mapped[:, 1] - mapped[:, 0], mapped[:, 2] - mapped[:, 0]], 1)))
    grey_a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    upscale = 1 / math.sqrt(max(area, 1e-6))
    if upscale > 1.1:
        grey_a = cv2.GaussianBlur(grey_a, (0, 0), 0.6 * math.sqrt(upscale**2 - 1))
    ga, gb = _block_view(grey_a), _block_view(cv2.cvtColor(b_on_a, cv2.COLOR_RGB2GRAY))
    textured = ga.std(2) > TEXTURED
    inside = _block_view(covered).min(2) > 0
    da, db = ga - ga.mean(2, keepdims=True), gb - gb.mean(2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncc = (da * db).sum(2) / np.sqrt((da**2).sum(2) * (db**2).sum(2))
    agree = textured & inside & (ncc > BLOCK_NCC)
    share = float(agree.sum() / max(1, textured.sum()))
    colours = np.linalg.norm(_block_view(a).mean(2) - _block_view(b_on_a).mean(2), axis=-1)[agree]
    return share, float(np.percentile(colours, 75)) if len(colours) else 0.0


def _pair_alignments(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Candidate maps of a's pixels onto b's: the pair's own ORB + RANSAC homography, plain and
    mirrored, and the two images' frames laid on each other, plain and mirrored (what a dHash
    match means)."""
    import cv2

    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    flip = np.array([[-1.0, 0, wb - 1], [0, 1, 0], [0, 0, 1]])
    stretch = np.diag([wb / wa, hb / ha, 1.0])
    out = [stretch, flip @ stretch]
    orb = cv2.ORB_create(nfeatures=CHECK_FEATURES)
    kps_a, desc_a = orb.detectAndCompute(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), None)
    grey_b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    for mirrored in (False, True):
        kps_b, desc_b = orb.detectAndCompute(cv2.flip(grey_b, 1) if mirrored else grey_b, None)
        if desc_a is None or desc_b is None or len(desc_a) < 2 or len(desc_b) < 2:
            continue
        knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_a, desc_b, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
        src = np.float32([kps_a[m.queryIdx].pt for m in good]).reshape(-1, 2)
        dst = np.float32([kps_b[m.trainIdx].pt for m in good]).reshape(-1, 2)
        if len(good) >= 8:
            h_ab, _ = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
            if h_ab is not None and abs(np.linalg.det(h_ab)) > 1e-6:
                out.append(flip @ h_ab if mirrored else h_ab)
    return out


def _both_ways(paths: tuple[str, str]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """For each candidate alignment of a pair: how much of the first image the second reproduces
    (share, colour distance), and of the second by the first."""
    import cv2

    cv2.setNumThreads(1)
    a, b = (np.asarray(load_rgb(p, max_side=CHECK_SIDE)) for p in paths)
    return [(_reproduced(a, b, h_ab), _reproduced(b, a, np.linalg.inv(h_ab))) for h_ab in _pair_alignments(a, b)]


def _check_pair(paths: tuple[str, str]) -> tuple[float, float]:
    """The dense check of one candidate pair, over its candidate alignments: the largest share of
    either image that the other reproduces, and the colour distance where it does."""
    best = (-1.0, 0.0)
    for ways in _both_ways(paths):
        for share, colour in ways:
            if share > best[0]:
                best = (round(share, 3), round(colour, 1))
    return best


def _whole_recolour(paths: tuple[str, str]) -> tuple[float, float]:
    """The stricter check of a recoloured pair: the share that each image reproduces of the
    other, the smaller of the two (a detail against its master, or a render pasted into a bigger
    photo, reproduces one side only), at the alignment where it is largest, and the smaller
    colour distance there."""
    best = (-1.0, 0.0)
    for (share_a, colour_a), (share_b, colour_b) in _both_ways(paths):
        if min(share_a, share_b) > best[0]:
            best = (round(min(share_a, share_b), 3), round(min(colour_a, colour_b), 1))
    return best


def _union_find(n: int, pairs) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return sorted(groups.values())


def _group_params() -> dict:
    return dict(
        orb=ORB_FEATURES, side=ORB_SIDE, knn=KNN, ratio=RATIO, cand=CANDIDATES,
        votes=MIN_VOTES, inliers=MIN_INLIERS, dhash=DHASH_SIZE, dbits=DHASH_MAX_BITS,
    )


def _check_params() -> dict:
    return dict(side=CHECK_SIDE, features=CHECK_FEATURES, block=BLOCK, textured=TEXTURED, ncc=BLOCK_NCC)


def find_pairs(sources: Sources, processes: int = 2, log=print) -> dict:
    """Candidate pairs of near-duplicates: verified local features, a dHash check (cached: ~10-25
    min on 2 busy cores, most of it the all-against-all descriptor search), the name families.

    Returns {"orb_pairs": [[rel, rel, inliers]], "dhash_pairs": [...], "name_pairs": [...],
    "seconds": float}.
    """
    rels = list(sources.rels)
    names = [[rels[i], rels[j]] for i, j in sorted(_name_pairs(rels))]
    key = _digest({"src": sources.fingerprint, **_group_params()})
    cache = CACHE_DIR / f"pairs-{key}.json"
    if cache.exists():
        return {**json.loads(cache.read_text()), "name_pairs": names}
    log(f"finding near-duplicate pairs among {len(sources.rels)} source images (ORB+RANSAC, dHash, names)...")
    t0 = time.perf_counter()
    with Pool(processes) as pool:
        feats = pool.map(_orb_and_dhash, [str(sources.path(r)) for r in rels], chunksize=8)
    orb = _orb_pairs([f[0] for f in feats], [f[1] for f in feats])
    dh = _dhash_pairs([f[2] for f in feats], [f[3] for f in feats])
    result = {
        "orb_pairs": [[rels[i], rels[j], n] for (i, j), n in sorted(orb.items())],
        "dhash_pairs": [[rels[i], rels[j]] for i, j in sorted(dh)],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _write_json(cache, result)
    return {**result, "name_pairs": names}


def group_sources(sources: Sources, processes: int = 2, log=print) -> dict:
    """Same-photo groups of the sources: the candidate pairs (`find_pairs`), each checked densely
    (`_check_pair`, cached: ~2 min on 2 cores), the pairs at SAME_PHOTO or more merged with
    union-find.

    Returns find_pairs' evidence and {"checks": [[rel, rel, same, colour]], "groups": [[rel, ...]],
    "colour_families": number of groups holding recolours}.
    """
    evidence = find_pairs(sources, processes, log)
    candidates = sorted({tuple(sorted(p[:2])) for k in ("orb_pairs", "dhash_pairs", "name_pairs")
                         for p in evidence[k]})
    key = _digest({"src": sources.fingerprint, "pairs": candidates, **_check_params()})
    cache = CACHE_DIR / f"pair-checks-{key}.json"
    if cache.exists():
        checks = json.loads(cache.read_text())
    else:
        log(f"checking {len(candidates)} candidate pairs densely...")
        with Pool(processes) as pool:
            results = pool.map(_check_pair, [(str(sources.path(a)), str(sources.path(b))) for a, b in candidates],
                               chunksize=4)
        checks = [[a, b, same, colour] for (a, b), (same, colour) in zip(candidates, results)]
        _write_json(cache, checks)
    index = {rel: i for i, rel in enumerate(sources.rels)}
    same = [(index[a], index[b]) for a, b, share, _ in checks if share >= SAME_PHOTO]
    groups = [[sources.rels[i] for i in g] for g in _union_find(len(sources.rels), same)]
    recoloured = {a for a, b, share, colour in checks if share >= SAME_PHOTO and colour >= RECOLOURED}
    return {**evidence, "checks": checks, "groups": groups,
            "colour_families": sum(any(r in recoloured for r in g) for g in groups)}


def grouping_summary(grouping: dict) -> str:
    sizes = sorted((len(g) for g in grouping["groups"]), reverse=True)
    multi = [s for s in sizes if s > 1]
    inliers = sorted(n for _, _, n in grouping["orb_pairs"])
    orb = f"{len(inliers)} ORB+RANSAC pairs (>= {MIN_INLIERS} inliers"
    orb += f"; median {inliers[len(inliers) // 2]}, max {inliers[-1]})" if inliers else ")"
    checks = grouping["checks"]
    same = [c for c in checks if c[2] >= SAME_PHOTO]
    return (
        f"{orb}, {len(grouping['dhash_pairs'])} dHash pairs, "
        f"{len(grouping['name_pairs'])} name-family pairs ({len(checks)} distinct); checked densely: "
        f"{len(same)} the same photo (reproduced ≥ {SAME_PHOTO:.0%}; "
        f"{sum(c[3] >= RECOLOURED for c in same)} of them recoloured), {len(checks) - len(same)} "
        f"look-alikes that may be split -> {len(sizes)} groups, {len(multi)} of 2+ images holding "
        f"{sum(multi)} images (largest: {', '.join(map(str, sizes[:5]))}; "
        f"{grouping['colour_families']} hold recolours)"
    )


def split_groups(groups: list[list[str]], origin, seed: int, catalog_share: float = 0.5):
    """Assign whole groups to the catalog or the distractors, about `catalog_share` of each
    source's images (`origin(rel)` names the source), so that every source has copies and
    look-alikes to measure when folds are made of sources.

    Groups are shuffled with the seed, then placed largest first (so the big ones cannot tip the
    balance at the end) on whichever side is short of its share in the group's main source.
    """
    rng = random.Random(f"split/{seed}")
    order = list(groups)
    rng.shuffle(order)
    order.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    placed: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # source -> [catalog, distractors]
    catalog, distractors = [], []
    for g in order:
        origins = [origin(rel) for rel in g]
        main = max(sorted(set(origins)), key=origins.count)  # sorted: ties go the same way every run
        to_catalog = placed[main][0] <= catalog_share * sum(placed[main])
        (catalog if to_catalog else distractors).extend(g)
        for o in origins:
            placed[o][0 if to_catalog else 1] += 1
    return sorted(catalog), sorted(distractors)


# ============================================================================================
# Making the copies (the edits themselves are in _edits.py)

_WORKER_BACKGROUNDS: list[str] = []


def _init_worker(backgrounds: list[str]) -> None:
    import cv2

    global _WORKER_BACKGROUNDS
    _WORKER_BACKGROUNDS = backgrounds
    patch_pillow_for_augly()
    cv2.setNumThreads(1)  # one process per core already: OpenCV's threads would only contend


def _make_copy(task: dict) -> dict:
    """Worker: make one query file. Deterministic: everything random comes from task["seed"]."""
    rng = random.Random(task["seed"])
    ctx = EditContext(rng, _WORKER_BACKGROUNDS, task["source_path"])
    img = load_rgb(task["source_path"], max_side=MAX_SIDE)
    img, chain, label = apply_family(img, task["family"], ctx)
    path = save_copy(img, Path(task["stem"]), rng, low_quality="resize_jpeg" in chain)
    return {"path": path.name, "edit": label, "size": list(img.size), "colourless": ctx.colourless}


# ============================================================================================
# The dataset

FULL_POSITIVES_PER_FAMILY = 300  # 16 families -> 4,800 positives from a ~485-image catalog
# Every distractor in every family: 16 x ~485 = ~7,800 negatives, so that FPR 0.1 % is ~8 of them
# overall and ~1.5 in each fold of sources (accuracy.py): fewer and 0.1 % could not be measured.
FULL_NEGATIVES_PER_FAMILY = None
QUICK_CATALOG = 60
QUICK_PER_FAMILY = 20


@dataclass
class Dataset:
    """A built benchmark: catalog and distractor sources, and the query files with their truth."""

    root: Path  # this dataset's cache folder
    sources: Sources
    params: dict
    grouping: dict
    catalog: list[str]  # source rels
    distractors: list[str]
    # {"path", "family", "reference": source rel or None, "source": the rel it was made from,
    #  "origin": that photo's source catalog, "edit", "size", "colourless"}
    queries: list[dict]
    failures: list[dict] = field(default_factory=list)
    build_seconds: float = 0.0

    @functools.cached_property
    def group_of(self) -> dict[str, int]:
        return {rel: k for k, g in enumerate(self.grouping["groups"]) for rel in g}

    def siblings(self, rel: str) -> set[str]:
        """The other catalog images of a catalog image's same-photo group (its recolours,
        crops, ...): what a copy of it may be confused with, and must rank under it."""
        group = self.group_of.get(rel)
        return {r for r in self.catalog_set if r != rel and self.group_of.get(r) == group}

    @functools.cached_property
    def catalog_set(self) -> set[str]:
        return set(self.catalog)

    def catalog_paths(self) -> list[str]:
        return [str(self.sources.path(r)) for r in self.catalog]

    def query_path(self, query: dict) -> str:
        return str(self.root / query["path"])

    def reference_path(self, query: dict) -> str | None:
        ref = query["reference"]
        return None if ref is None else str(self.sources.path(ref))


def _per_family(quick: bool, limit: int | None) -> tuple[int, int | None]:
    if limit is not None:
        return limit, limit
    if quick:
        return QUICK_PER_FAMILY, QUICK_PER_FAMILY
    return FULL_POSITIVES_PER_FAMILY, FULL_NEGATIVES_PER_FAMILY


def cut_out_sources(sources: Sources, processes: int = 2) -> set[str]:
    """The photos the cut-out family is made from, positives and negatives alike (see
    _edits.can_cut_out; cached: ~30 s on 2 cores)."""
    params = {"src": sources.fingerprint, "side": _edits.MASK_SIDE, "plain": _edits.PLAIN_BORDER,
              "near": _edits.NEAR_BORDER, "product": _edits.PRODUCT_DISTANCE}
    cache = CACHE_DIR / f"cut-out-{_digest(params)}.json"
    if not cache.exists():
        with Pool(processes) as pool:
            ok = pool.map(_edits.can_cut_out, [str(sources.path(r)) for r in sources.rels], chunksize=16)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _write_json(cache, [r for r, yes in zip(sources.rels, ok) if yes])
    return set(json.loads(cache.read_text()))


def _plan(catalog, distractors, n_pos, n_neg, seed, qdir: Path, cut_out: set[str]) -> list[dict]:
    """Which source each query is made from, with its own seed: independent of worker order."""
    tasks = []
    for family in FAMILIES:
        rng = random.Random(f"queries/{seed}/{family}")
        pools = (catalog, distractors)
        if family == "cutout":
            pools = tuple([r for r in pool if r in cut_out] for pool in pools)
        for kind, pool, n in (("pos", pools[0], n_pos), ("neg", pools[1], n_neg)):
            n = len(pool) if n is None else min(n, len(pool))
            for k, rel in enumerate(sorted(rng.sample(pool, n))):
                tasks.append({
                    "family": family,
                    "reference": rel if kind == "pos" else None,
                    "source": rel,
                    "stem": str(qdir / f"{family}-{kind}-{k:04d}"),
                    "seed": rng.getrandbits(48),
                })
    return tasks


def _make_copy_safe(task: dict) -> dict:
    try:
        return _make_copy(task)
    except Exception as exc:  # one AugLy edit failing must not sink a 5,000-file build
        return {"error": f"{type(exc).__name__}: {exc}"}


def build_dataset(
    seed: int = 0,
    quick: bool = False,
    limit_per_family: int | None = None,
    processes: int = 2,
    sources: Sources | None = None,
    log=print,
) -> Dataset:
    """Build (or load from the cache) the benchmark for these parameters."""
    sources = sources or find_sources()
    grouping = group_sources(sources, processes, log)
    catalog, distractors = split_groups(grouping["groups"], sources.origin, seed)
    backgrounds = [str(sources.path(r)) for r in distractors]
    if quick:
        rng = random.Random(f"quick/{seed}")
        catalog = sorted(rng.sample(catalog, min(QUICK_CATALOG, len(catalog))))
        distractors = sorted(rng.sample(distractors, min(QUICK_CATALOG, len(distractors))))
    n_pos, n_neg = _per_family(quick, limit_per_family)
    params = _params(sources, grouping, seed, quick, n_pos, n_neg)
    return _built(CACHE_DIR / f"dataset-{_digest(params)}", sources, params, grouping, catalog, distractors,
                  backgrounds, processes, log)


def _params(sources: Sources, grouping: dict, seed: int, quick: bool, n_pos: int, n_neg: int | None) -> dict:
    """What a dataset's files depend on: its cache folder is named by their digest."""
    return {
        "version": DATASET_VERSION,
        "sources": sources.kind,
        "fingerprint": sources.fingerprint,
        "grouping": {**_group_params(), **_check_params(), "same_photo": SAME_PHOTO,
                     "groups": _digest(grouping["groups"])},
        "seed": seed,
        "quick": quick,
        "positives_per_family": n_pos,
        "negatives_per_family": n_neg,
        "max_side": MAX_SIDE,
    }


def _built(root: Path, sources: Sources, params: dict, grouping: dict, catalog: list[str],
           distractors: list[str], backgrounds: list[str], processes: int, log) -> Dataset:
    """The dataset in `root`, generated first when the cache does not hold it."""
    if not (root / "manifest.json").exists():
        _generate(root, sources, params, catalog, distractors, backgrounds, processes, log)
    m = json.loads((root / "manifest.json").read_text())
    return Dataset(root, sources, params, grouping, m["catalog"], m["distractors"],
                   m["queries"], m["failures"], m["build_seconds"])


def _generate(root: Path, sources: Sources, params: dict, catalog: list[str],
              distractors: list[str], backgrounds: list[str], processes: int, log) -> None:
    """Make the query files and the manifest in a private folder, then move it into place.

    The move is atomic, so a dataset folder that exists is complete, and two runs building the
    same dataset at once cannot clobber each other (the second one to finish drops its copy).
    """
    work = root.with_name(f"{root.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "queries").mkdir(parents=True)
    tasks = _plan(catalog, distractors, params["positives_per_family"], params["negatives_per_family"],
                  params["seed"], work / "queries", cut_out_sources(sources, processes))
    for t in tasks:
        t["source_path"] = str(sources.path(t["source"]))
    log(f"making {len(tasks)} query images ({processes} processes)...")
    t0 = time.perf_counter()
    queries, failures = [], []
    with Pool(processes, initializer=_init_worker, initargs=(backgrounds,)) as pool:
        for k, (task, out) in enumerate(zip(tasks, pool.imap(_make_copy_safe, tasks, chunksize=4))):
            if "error" in out:
                failures.append({"family": task["family"], "source": task["source"], **out})
            else:
                queries.append({
                    "path": f"queries/{out['path']}",
                    "family": task["family"],
                    "reference": task["reference"],
                    "source": task["source"],
                    "origin": sources.origin(task["source"]),
                    "edit": out["edit"],
                    "size": out["size"],
                    "colourless": out["colourless"],
                })
            if (k + 1) % 500 == 0:
                log(f"  {k + 1}/{len(tasks)} ({time.perf_counter() - t0:.0f} s)")
    _write_json(work / "manifest.json", {
        "params": params,
        "source_root": str(sources.root),
        "catalog": catalog,
        "distractors": distractors,
        "queries": queries,
        "failures": failures,
        "build_seconds": round(time.perf_counter() - t0, 1),
    })
    try:
        work.rename(root)
    except OSError:  # another run finished the same dataset first, or a stale folder is there
        if (root / "manifest.json").exists():
            shutil.rmtree(work)
        else:
            shutil.rmtree(root, ignore_errors=True)
            work.rename(root)


# ============================================================================================
# Recolour look-alikes: one render in another colour
#
# The split above keeps a recolour family on one side (a copy of one variant would otherwise be
# a negative that is really a copy), so the main benchmark never asks whether a copy of the RED
# vase is flagged when only the BLUE one is in the catalog. A seller with one colour in stock
# and a competitor selling another colour of the same render meets exactly that, and it is a
# look-alike, not a theft (issue 21, points 4 and 7). This small second set asks it, with its
# own catalog, so the main dataset is not rebuilt.

QUICK_RECOLOUR_GROUPS = 12


def recolour_pairs(sources: Sources, grouping: dict, processes: int = 2) -> dict[str, list[str]]:
    """{held-out photo: its catalog images}, one held-out photo per same-photo group that holds
    whole-frame recolours.

    The grouping's "recoloured" pairs (share >= SAME_PHOTO, colour distance >= RECOLOURED) include
    a detail of a master and a render pasted into a bigger photo, whose colour distance comes from
    the blur or the new background: a copy of one of those is a real copy of the other. So each
    is checked again both ways (_whole_recolour, cached: ~1 min on 2 cores), and only pairs where
    each image reproduces SAME_PHOTO of the other in another colour are kept.

    The held-out photo is the member with the most such recolours (the hardest case: the most
    other colours to confuse it with; ties by name); its catalog images are exactly those
    recolours. Members linked to it only through others (a crop of a recolour, a same-colour
    re-save) are left out, since one of its own colour would make the query a real copy.
    """
    candidates = sorted(tuple(sorted((a, b))) for a, b, share, colour in grouping["checks"]
                        if share >= SAME_PHOTO and colour >= RECOLOURED)
    key = _digest({"src": sources.fingerprint, "pairs": candidates, **_check_params()})
    cache = CACHE_DIR / f"recolour-checks-{key}.json"
    if not cache.exists():
        with Pool(processes) as pool:
            results = pool.map(_whole_recolour, [(str(sources.path(a)), str(sources.path(b))) for a, b in candidates],
                               chunksize=4)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _write_json(cache, [[a, b, share, colour] for (a, b), (share, colour) in zip(candidates, results)])
    partners: dict[str, set[str]] = defaultdict(set)
    for a, b, share, colour in json.loads(cache.read_text()):
        if share >= SAME_PHOTO and colour >= RECOLOURED:
            partners[a].add(b)
            partners[b].add(a)
    out = {}
    for group in grouping["groups"]:
        members = sorted(r for r in group if partners[r])
        if members:
            pick = max(members, key=lambda r: len(partners[r]))  # max keeps the first of equals
            out[pick] = sorted(partners[pick])
    return out


def build_recolour_set(seed: int = 0, quick: bool = False, processes: int = 2,
                       sources: Sources | None = None, log=print) -> Dataset:
    """The recolour set (cached like the main dataset): each held-out photo of recolour_pairs
    edited in every family, all negatives, against a catalog of the other colours only. The
    backgrounds some edits paste onto are photos of no group in the set. --quick keeps
    QUICK_RECOLOUR_GROUPS groups."""
    sources = sources or find_sources()
    grouping = group_sources(sources, processes, log)
    pairs = recolour_pairs(sources, grouping, processes)
    held_out = sorted(pairs)
    if quick:
        held_out = sorted(random.Random(f"quick-recolour/{seed}").sample(held_out, min(QUICK_RECOLOUR_GROUPS,
                                                                                       len(held_out))))
    catalog = sorted({r for h in held_out for r in pairs[h]})
    used = {r for g in grouping["groups"] if set(g) & set(held_out) for r in g}
    backgrounds = [str(sources.path(r)) for r in sources.rels if r not in used]
    params = {**_params(sources, grouping, seed, quick, 0, None), "set": "recolour", "recoloured": RECOLOURED,
              "held_out": _digest(held_out)}
    return _built(CACHE_DIR / f"recolour-{_digest(params)}", sources, params, grouping, catalog, held_out,
                  backgrounds, processes, log)
