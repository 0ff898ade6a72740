"""The accuracy benchmark's data: real product photos, a careful split, and AugLy-made copies.

Three steps, each cached under benchmarks/.cache/ and reused when its inputs and parameters are
the same:

1. Sources: ../shared/data/products when it is there (real e-commerce photos, never copied into
   the repo), else the photos scikit-image ships in skimage/data.
2. Grouping and split. The development photos are not independent: ORB + RANSAC finds a couple of
   hundred pairs sharing tens to hundreds of verified keypoints (recolours of one photo, views and
   crops of one product, shared cover templates, one photo present in two sources). If such a pair
   were split across catalog and distractors, a "negative" query would really be a copy of a
   catalog image and the measured false-positive rate would be wrong. So pairs are found three
   ways -- verified local features, a dHash check, obvious name families -- merged into groups
   with union-find, and whole groups go to the catalog or to the distractors.
3. Queries: "stolen copies" of catalog images made with Meta's AugLy in nine edit families
   (positives, ground truth = the exact source image), and distractor images edited the same
   ways (negatives, ground truth = no match). A JSON manifest lists them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import random
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np

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

DATASET_VERSION = 2  # bump when the generation below changes: old caches are then not reused
FAMILIES = (
    "resize_jpeg",
    "crop",
    "pad",
    "mirror",
    "rotate",
    "overlay",
    "colour",
    "embedded",
    "combined",
)
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


def load_rgb(path: str | Path, max_side: int | None = None):
    """Decode an image as RGB, flattening transparency onto white (how a shop page shows it)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
        else:
            out = im.convert("RGB")
    if max_side and max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.LANCZOS)
    return out


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _write_json(path: Path, obj) -> None:
    """Write atomically: a cache file that exists is a complete one."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# ============================================================================================
# Grouping near-duplicates

ORB_FEATURES = 700
ORB_SIDE = 512  # long side of the luma image ORB runs on
KNN = 16  # neighbours per descriptor: enough to see several near-identical images at once
RATIO = 0.8  # Lowe's ratio test, applied per candidate image (see _votes)
CANDIDATES = 6  # top-voted images verified with RANSAC, per image
MIN_VOTES = 8
MIN_INLIERS = 25  # a verified pair with at least this many inliers: same photo or product
DHASH_SIZE = 16  # 256-bit dHash: the check SOURCES.md used for re-saves
DHASH_MAX_BITS = 24  # <= ~10 % of the bits differ: the same picture, recoloured or re-saved

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
# Name families: safe extra grouping for what the file names say outright

_OXID_DROP = re.compile(r"^(front|back|detail\d|deck|bottom|sb|sg|v|pi|z\d+[a-z]?|)$")


def name_family(rel: str) -> str | None:
    """Family key of a source file from its name, or None when the name says nothing.

    thelia PRODnnn-k are colour variants of one product (many are the same photo recoloured);
    oxideshop files are picture slots 1..4 of one product (front/back/detail, deck/bottom,
    recoloured jeans sb/sg); solidus caps and hoodies come in colours of one mockup.
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
    return None


def _name_pairs(rels: list[str]) -> set[tuple[int, int]]:
    by_family = defaultdict(list)
    for i, rel in enumerate(rels):
        fam = name_family(rel)
        if fam:
            by_family[fam].append(i)
    return {(m[0], j) for m in by_family.values() for j in m[1:]}


# --------------------------------------------------------------------------------------------


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


def group_sources(sources: Sources, processes: int = 2, log=print) -> dict:
    """Near-duplicate groups of the sources, with the evidence per pair (cached: ~2 min on 2 cores).

    Returns {"groups": [[rel, ...]], "orb_pairs": [[rel, rel, inliers]], "dhash_pairs": [...],
    "name_pairs": [...], "seconds": float}.
    """
    key = _digest({"src": sources.fingerprint, **_group_params()})
    cache = CACHE_DIR / f"groups-{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    log(f"grouping {len(sources.rels)} source images (ORB+RANSAC, dHash, names)...")
    t0 = time.perf_counter()
    rels = list(sources.rels)
    with Pool(processes) as pool:
        feats = pool.map(_orb_and_dhash, [str(sources.path(r)) for r in rels], chunksize=8)
    orb = _orb_pairs([f[0] for f in feats], [f[1] for f in feats])
    dh = _dhash_pairs([f[2] for f in feats], [f[3] for f in feats])
    names = _name_pairs(rels)
    groups = _union_find(len(rels), list(orb) + list(dh) + list(names))
    result = {
        "groups": [[rels[i] for i in g] for g in groups],
        "orb_pairs": [[rels[i], rels[j], n] for (i, j), n in sorted(orb.items())],
        "dhash_pairs": [[rels[i], rels[j]] for i, j in sorted(dh)],
        "name_pairs": [[rels[i], rels[j]] for i, j in sorted(names)],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _write_json(cache, result)
    return result


def grouping_summary(grouping: dict) -> str:
    sizes = sorted((len(g) for g in grouping["groups"]), reverse=True)
    multi = [s for s in sizes if s > 1]
    inliers = sorted(n for _, _, n in grouping["orb_pairs"])
    orb = f"{len(inliers)} ORB+RANSAC pairs (>= {MIN_INLIERS} inliers"
    orb += f"; median {inliers[len(inliers) // 2]}, max {inliers[-1]})" if inliers else ")"
    all_pairs = {tuple(p[:2]) for k in ("orb_pairs", "dhash_pairs", "name_pairs") for p in grouping[k]}
    return (
        f"{orb}, {len(grouping['dhash_pairs'])} dHash pairs, "
        f"{len(grouping['name_pairs'])} name-family pairs ({len(all_pairs)} distinct) -> "
        f"{len(sizes)} groups, {len(multi)} of 2+ images holding {sum(multi)} images "
        f"(largest: {', '.join(map(str, sizes[:5]))})"
    )


def split_groups(groups: list[list[str]], seed: int, catalog_share: float = 0.5):
    """Assign whole groups to the catalog or the distractors, about `catalog_share` of images.

    Groups are shuffled with the seed, then placed largest first (so the big ones cannot tip the
    balance at the end) on whichever side is short of its share.
    """
    rng = random.Random(f"split/{seed}")
    order = list(groups)
    rng.shuffle(order)
    order.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    catalog, distractors = [], []
    for g in order:
        total = len(catalog) + len(distractors)
        (catalog if len(catalog) <= catalog_share * total else distractors).extend(g)
    return sorted(catalog), sorted(distractors)


# ============================================================================================
# Stolen copies (AugLy)

READABLE_FONTS = (
    "Raleway-ExtraBold.ttf",
    "Montserrat-Bold.ttf",
    "OpenSans-Bold.ttf",
    "Ubuntu-B.ttf",
    "IBMPlexSans-Bold.ttf",
    "LeagueSpartan-Bold.ttf",
    "Impact.ttf",
    "Lobster_1.3.ttf",
)
# AugLy's fonts hold no space glyph: overlay texts are single tokens or one token per line.
STAMP_TEXTS = ("SALE", "-30%", "NEW", "HOT!", "BESTPRICE", "TOP", "FREE-SHIPPING", "ORIGINAL")
SHOP_NAMES = ("shop24.com", "BESTDEALS", "megastore.net", "@cheap_finds", "outlet-express", "DEALZ")
CAPTIONS = (
    "WHEN YOU FIND\nTHE PERFECT ONE",
    "ONLY TODAY",
    "MUST HAVE!",
    "ME AFTER PAYDAY",
    "LIMITED OFFER\n50% OFF",
    "GIFT IDEA",
)
PALETTE = ((255, 255, 255), (0, 0, 0), (230, 30, 40), (250, 200, 20), (20, 90, 200), (240, 240, 235))


@dataclass
class EditContext:
    """What an edit may use besides the image: its rng and pictures to embed it into."""

    rng: random.Random
    backgrounds: list[str]  # distractor photos only: never a catalog image
    source: str

    def colour(self, white_share: float = 0.5) -> tuple[int, int, int]:
        if self.rng.random() < white_share:
            return (255, 255, 255)
        return tuple(self.rng.randint(0, 255) for _ in range(3))

    def background(self, size: int):
        """A distractor photo (not the source) at `size` long side, for collages and pastes."""
        choices = [b for b in self.backgrounds if b != self.source]
        if not choices:
            from PIL import Image

            return Image.new("RGB", (size, size), self.colour(0.3))
        from PIL import Image

        bg = load_rgb(self.rng.choice(choices))
        f = size / max(bg.size)  # small photos are scaled up: the paste must fit inside
        return bg.resize((max(1, round(bg.width * f)), max(1, round(bg.height * f))), Image.LANCZOS)


def patch_pillow_for_augly() -> None:
    """AugLy 1.0.0's meme_format calls FreeTypeFont.getsize_multiline, removed in Pillow 10.

    Supply that one method from multiline_textbbox (same meaning: the text's width and height).
    """
    from PIL import Image, ImageDraw, ImageFont

    if hasattr(ImageFont.FreeTypeFont, "getsize_multiline"):
        return

    def getsize_multiline(self, text, direction=None, spacing=4, features=None, *a, **k):
        draw = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=self, spacing=spacing)
        return right, bottom

    ImageFont.FreeTypeFont.getsize_multiline = getsize_multiline


def _font(name: str) -> str:
    import augly.utils

    return os.path.join(augly.utils.FONTS_DIR, name)


def _text_indices(font_file: str, lines: list[str]) -> list[list[int]]:
    """overlay_text takes indices into the font's glyph list (its .pkl), not a string."""
    with open(os.path.splitext(font_file)[0] + ".pkl", "rb") as f:
        chars = pickle.load(f)
    where = {c: i for i, c in enumerate(chars)}
    return [[where[ord(c)] for c in line if ord(c) in where] for line in lines]


def edit_resize_jpeg(img, ctx: EditContext):
    """Downscale (a third to ~300 px thumbnails, else 400-1000 px); JPEG 30-80 on save."""
    import augly.image as imaugs

    rng = ctx.rng
    target = rng.randint(240, 360) if rng.random() < 0.35 else rng.randint(400, 1000)
    factor = min(0.9, target / max(img.size))  # always smaller than the source
    return imaugs.scale(img, factor=factor), f"scale {factor:.2f}"


def edit_crop(img, ctx: EditContext):
    """Keep 45-80 % of the area, aspect a little changed, at a random position."""
    import augly.image as imaugs

    rng = ctx.rng
    area = rng.uniform(0.45, 0.80)
    w = min(1.0, math.sqrt(area) * rng.uniform(0.85, 1.15))
    h = min(1.0, area / w)
    x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    out = imaugs.crop(img, x1=x1, y1=y1, x2=x1 + w, y2=y1 + h)
    return out, f"crop {w * h:.2f} of area"


def edit_pad(img, ctx: EditContext):
    """Pad to a square, letterbox, or frame; white half of the time, else a random colour."""
    import augly.image as imaugs

    rng = ctx.rng
    colour = ctx.colour()
    w, h = img.size
    if abs(w / h - 1) > 0.08 and rng.random() < 0.6:
        return imaugs.pad_square(img, color=colour), f"pad_square {colour}"
    if rng.random() < 0.6:  # letterbox / pillarbox to a wide or tall format
        f = rng.uniform(0.12, 0.4)
        wf, hf = (f, 0.0) if rng.random() < 0.5 else (0.0, f)
    else:  # frame on every side
        wf = hf = rng.uniform(0.05, 0.2)
    return imaugs.pad(img, w_factor=wf, h_factor=hf, color=colour), f"pad {wf:.2f},{hf:.2f} {colour}"


def edit_mirror(img, ctx: EditContext):
    """Horizontal flip; the re-encode happens on save."""
    import augly.image as imaugs

    return imaugs.hflip(img), "hflip"


def _rotate_keep_corners(im, degrees: float, fill):
    from PIL import Image

    return im.rotate(degrees, resample=Image.BICUBIC, expand=True, fillcolor=fill)


def edit_rotate(img, ctx: EditContext):
    """Rotate 3-15 degrees either way: mostly cropped to the largest inner rectangle (AugLy's
    rotate), else expanded with the corners filled."""
    import augly.image as imaugs

    rng = ctx.rng
    deg = rng.uniform(3, 15) * rng.choice((-1, 1))
    if rng.random() < 0.6:
        return imaugs.rotate(img, degrees=deg), f"rotate {deg:.1f} cropped"
    fill = ctx.colour(0.6)
    out = imaugs.apply_lambda(img, aug_function=_rotate_keep_corners, degrees=deg, fill=fill)
    return out, f"rotate {deg:.1f} corners {fill}"


def _stamp(text: str, font_file: str, fg, bg):
    """A small shop logo / price sticker: text on a coloured rounded box."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_file, 64)
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    pad = 18
    im = Image.new("RGBA", (r - l + 2 * pad, b - t + 2 * pad), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((0, 0, im.width - 1, im.height - 1), radius=pad, fill=bg + (255,))
    d.text((pad - l, pad - t), text, font=font, fill=fg + (255,))
    return im


def edit_overlay(img, ctx: EditContext):
    """Text, an emoji, a logo stamp or a semi-transparent watermark over the photo."""
    import augly.image as imaugs
    import augly.utils

    rng = ctx.rng
    kind = rng.choice(("text", "emoji", "stamp", "watermark"))
    font = _font(rng.choice(READABLE_FONTS))
    if kind == "text":
        words = [rng.choice(STAMP_TEXTS + SHOP_NAMES) for _ in range(rng.randint(1, 2))]
        out = imaugs.overlay_text(
            img, text=_text_indices(font, words), font_file=font,
            font_size=rng.uniform(0.06, 0.14), color=ctx.colour(0.2),
            x_pos=rng.uniform(0, 0.45), y_pos=rng.uniform(0, 0.75),
        )
        return out, f"text {words}"
    if kind == "emoji":
        folder = os.path.join(augly.utils.EMOJI_DIR, rng.choice(sorted(os.listdir(augly.utils.EMOJI_DIR))))
        emoji = os.path.join(folder, rng.choice(sorted(os.listdir(folder))))
        size = rng.uniform(0.12, 0.3)
        out = imaugs.overlay_emoji(
            img, emoji_path=emoji, emoji_size=size, opacity=rng.uniform(0.8, 1.0),
            x_pos=rng.uniform(0, 1 - size), y_pos=rng.uniform(0, 1 - size),
        )
        return out, f"emoji {os.path.basename(emoji)} {size:.2f}"
    if kind == "stamp":
        text = rng.choice(STAMP_TEXTS + SHOP_NAMES)
        bg = rng.choice(PALETTE[1:5])  # black, red, yellow, blue: the stamp must stand out
        stamp = _stamp(text, font, (0, 0, 0) if bg == PALETTE[3] else (255, 255, 255), bg)
        size = rng.uniform(0.08, 0.18)
        width = stamp.width * size * img.height / stamp.height / img.width
        out = imaugs.overlay_image(
            img, overlay=stamp, overlay_size=size, opacity=rng.uniform(0.85, 1.0),
            x_pos=rng.uniform(0, max(0.0, 1 - width)), y_pos=rng.uniform(0, 1 - size),
        )
        return out, f"stamp {text}"
    # A watermark: large semi-transparent text. AugLy's overlay_text ignores `opacity` on RGB
    # images (it draws RGBA values into the image and the alpha is dropped), so blend instead.
    name = rng.choice(SHOP_NAMES)
    lines = [name] * rng.randint(1, 3)
    opacity = rng.uniform(0.3, 0.55)
    texted = imaugs.overlay_text(
        img, text=_text_indices(font, lines), font_file=font, font_size=rng.uniform(0.08, 0.14),
        color=rng.choice(((255, 255, 255), (128, 128, 128), (0, 0, 0))),
        x_pos=rng.uniform(0.02, 0.3), y_pos=rng.uniform(0.15, 0.5),
    ).convert("RGB")
    from PIL import Image

    return Image.blend(img, texted, opacity), f"watermark {name} x{len(lines)} opacity {opacity:.2f}"


def _hue_shift(im, shift: int):
    from PIL import Image

    hsv = np.array(im.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def edit_colour(img, ctx: EditContext):
    """One or two of: brightness, contrast, saturation, colour jitter, hue shift (never grey)."""
    import augly.image as imaugs

    rng = ctx.rng

    def factor(lo: float, hi: float) -> float:  # away from 1: a visible change
        return rng.uniform(lo, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, hi)

    ops = {
        "brightness": lambda im: imaugs.brightness(im, factor=factor(0.6, 1.45)),
        "contrast": lambda im: imaugs.contrast(im, factor=factor(0.55, 1.6)),
        "saturation": lambda im: imaugs.saturation(im, factor=factor(0.35, 2.0)),
        "jitter": lambda im: imaugs.color_jitter(
            im, brightness_factor=rng.uniform(0.75, 1.3), contrast_factor=rng.uniform(0.75, 1.3),
            saturation_factor=rng.uniform(0.5, 1.6),
        ),
        "hue": lambda im: imaugs.apply_lambda(
            im, aug_function=_hue_shift, shift=rng.randint(12, 50) * rng.choice((-1, 1))
        ),
    }
    names = rng.sample(sorted(ops), rng.randint(1, 2))
    for name in names:
        img = ops[name](img)
    return img, "+".join(names)


def _meme(img, ctx: EditContext):
    import augly.image as imaugs

    patch_pillow_for_augly()
    caption = ctx.rng.choice(CAPTIONS)
    bg = ctx.rng.choice(((255, 255, 255), (0, 0, 0)))
    fg = (0, 0, 0) if bg == (255, 255, 255) else (255, 255, 255)
    out = imaugs.meme_format(
        img, text=caption, font_file=_font(ctx.rng.choice(("Impact.ttf", "Raleway-ExtraBold.ttf"))),
        caption_height=max(40, int(img.height * ctx.rng.uniform(0.15, 0.3))),
        text_color=fg, meme_bg_color=bg,
    )
    return out, f"meme {caption!r}"


def _screenshot(img, ctx: EditContext):
    import augly.image as imaugs
    import augly.utils

    template = ctx.rng.choice(("web.png", "mobile.png"))
    out = imaugs.overlay_onto_screenshot(
        img, template_filepath=os.path.join(augly.utils.SCREENSHOT_TEMPLATES_DIR, template),
        crop_src_to_fit=False,
    )
    return out, f"screenshot {template}"


def _paste_on_background(img, ctx: EditContext):
    import augly.image as imaugs

    rng = ctx.rng
    bg = ctx.background(rng.randint(1000, 1400))
    size = rng.uniform(0.45, 0.75)
    width = img.width * size * bg.height / img.height / bg.width
    out = imaugs.overlay_onto_background_image(
        img, background_image=bg, overlay_size=size,
        x_pos=rng.uniform(0, max(0.0, 1 - width)), y_pos=rng.uniform(0, 1 - size),
    )
    return out, f"pasted {size:.2f} of background height"


def _collage(img, ctx: EditContext):
    """A 2x2 or 1x3 grid: the photo in one cell, other (distractor) photos in the rest."""
    import augly.image as imaugs
    from PIL import Image

    rng = ctx.rng
    cols, rows = rng.choice(((2, 2), (3, 1), (2, 1)))
    cell = rng.randint(450, 650)
    canvas = Image.new("RGB", (cols * cell, rows * cell), ctx.colour(0.7))
    mine = rng.randrange(cols * rows)
    for k in range(cols * rows):
        pic = img.copy() if k == mine else ctx.background(cell)
        pic.thumbnail((cell - 16, cell - 16), Image.LANCZOS)
        x = (k % cols) * cell + (cell - pic.width) // 2
        y = (k // cols) * cell + (cell - pic.height) // 2
        canvas = imaugs.overlay_image(
            canvas, overlay=pic, overlay_size=pic.height / canvas.height,
            x_pos=x / canvas.width, y_pos=y / canvas.height,
        ).convert("RGB")
    return canvas, f"collage {cols}x{rows}"


def edit_embedded(img, ctx: EditContext):
    """The photo inside a larger picture: meme, screenshot, pasted on a photo, or a collage."""
    kind = ctx.rng.choice((_meme, _screenshot, _paste_on_background, _collage))
    return kind(img, ctx)


EDITS = {
    "resize_jpeg": edit_resize_jpeg,
    "crop": edit_crop,
    "pad": edit_pad,
    "mirror": edit_mirror,
    "rotate": edit_rotate,
    "overlay": edit_overlay,
    "colour": edit_colour,
    "embedded": edit_embedded,
}
# The order edits are chained in when combined: geometry, then pixels, then framing, then size.
CHAIN_ORDER = ("crop", "rotate", "mirror", "colour", "overlay", "pad", "embedded", "resize_jpeg")


def apply_family(img, family: str, ctx: EditContext):
    """Apply one family's edit (for "combined": 2-3 other families chained); return the chain."""
    if family == "combined":
        chain = ctx.rng.sample(CHAIN_ORDER, ctx.rng.choice((2, 2, 3)))
        chain.sort(key=CHAIN_ORDER.index)
    else:
        chain = [family]
    labels = []
    for name in chain:
        img, label = EDITS[name](img, ctx)
        img = img.convert("RGB")
        labels.append(f"{name}: {label}")
    return img, chain, "; ".join(labels)


def save_copy(img, stem: Path, rng: random.Random, low_quality: bool) -> Path:
    """Save as a re-upload would be: JPEG 75-95 mostly (30-80 after a resize), a few PNG/WebP."""
    r = rng.random()
    if low_quality or r < 0.86:
        path = stem.with_suffix(".jpg")
        q = rng.randint(30, 80) if low_quality else rng.randint(75, 95)
        img.save(path, "JPEG", quality=q)
    elif r < 0.93:
        path = stem.with_suffix(".png")
        img.save(path, "PNG", compress_level=3)
    else:
        path = stem.with_suffix(".webp")
        img.save(path, "WEBP", quality=rng.randint(80, 95))
    return path


_WORKER_BACKGROUNDS: list[str] = []


def _init_worker(backgrounds: list[str]) -> None:
    global _WORKER_BACKGROUNDS
    _WORKER_BACKGROUNDS = backgrounds
    patch_pillow_for_augly()


def _make_copy(task: dict) -> dict:
    """Worker: make one query file. Deterministic: everything random comes from task["seed"]."""
    rng = random.Random(task["seed"])
    ctx = EditContext(rng, _WORKER_BACKGROUNDS, task["source_path"])
    img = load_rgb(task["source_path"], max_side=MAX_SIDE)
    img, chain, label = apply_family(img, task["family"], ctx)
    path = save_copy(img, Path(task["stem"]), rng, low_quality="resize_jpeg" in chain)
    return {"path": path.name, "edit": label, "size": list(img.size)}


# ============================================================================================
# The dataset

FULL_POSITIVES_PER_FAMILY = 280  # 9 families -> ~2,500 positives from a ~330-image catalog
FULL_NEGATIVES_PER_FAMILY = 240  # 9 families -> ~2,160 negatives: FPR 0.1 % = 2 false positives
QUICK_CATALOG = 60
QUICK_PER_FAMILY = 30


@dataclass
class Dataset:
    """A built benchmark: catalog and distractor sources, and the query files with their truth."""

    root: Path  # this dataset's cache folder
    sources: Sources
    params: dict
    grouping: dict
    catalog: list[str]  # source rels
    distractors: list[str]
    queries: list[dict]  # {"path", "family", "reference": source rel or None, "edit"}
    failures: list[dict] = field(default_factory=list)
    build_seconds: float = 0.0

    def catalog_paths(self) -> list[str]:
        return [str(self.sources.path(r)) for r in self.catalog]

    def query_path(self, query: dict) -> str:
        return str(self.root / query["path"])

    def reference_path(self, query: dict) -> str | None:
        ref = query["reference"]
        return None if ref is None else str(self.sources.path(ref))


def _per_family(quick: bool, limit: int | None) -> tuple[int, int]:
    if limit is not None:
        return limit, limit
    if quick:
        return QUICK_PER_FAMILY, QUICK_PER_FAMILY
    return FULL_POSITIVES_PER_FAMILY, FULL_NEGATIVES_PER_FAMILY


def _plan(catalog, distractors, n_pos, n_neg, seed, qdir: Path) -> list[dict]:
    """Which source each query is made from, with its own seed: independent of worker order."""
    tasks = []
    for family in FAMILIES:
        rng = random.Random(f"queries/{seed}/{family}")
        for kind, pool, n in (("pos", catalog, n_pos), ("neg", distractors, n_neg)):
            for k, rel in enumerate(sorted(rng.sample(pool, min(n, len(pool))))):
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
    catalog, distractors = split_groups(grouping["groups"], seed)
    backgrounds = [str(sources.path(r)) for r in distractors]
    if quick:
        rng = random.Random(f"quick/{seed}")
        catalog = sorted(rng.sample(catalog, min(QUICK_CATALOG, len(catalog))))
        distractors = sorted(rng.sample(distractors, min(QUICK_CATALOG, len(distractors))))
    n_pos, n_neg = _per_family(quick, limit_per_family)
    params = {
        "version": DATASET_VERSION,
        "sources": sources.kind,
        "fingerprint": sources.fingerprint,
        "grouping": _group_params(),
        "seed": seed,
        "quick": quick,
        "positives_per_family": n_pos,
        "negatives_per_family": n_neg,
        "max_side": MAX_SIDE,
    }
    root = CACHE_DIR / f"dataset-{_digest(params)}"
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
    tasks = _plan(catalog, distractors, params["positives_per_family"],
                  params["negatives_per_family"], params["seed"], work / "queries")
    for t in tasks:
        t["source_path"] = str(sources.path(t["source"]))
    log(f"making {len(tasks)} query images with AugLy ({processes} processes)...")
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
                    "edit": out["edit"],
                    "size": out["size"],
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
