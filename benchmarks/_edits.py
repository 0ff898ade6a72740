"""The stolen copies' edits: what a copier does to a catalog photo, in edit families.

Each family is a function `edit_<family>(img, ctx) -> (image, label)` drawing everything random
from `ctx.rng`, so that one seed gives one copy whatever the worker. The first nine families use
Meta's AugLy where it has the edit; the later seven (stretch, rot90, cutout, screenshot,
watermark, collage, heavy_crop) are what copiers do that AugLy lacks, drawn with Pillow and
OpenCV. Distractors get exactly the same edits (the negatives), so a family's false positives
and its recall are measured on the same kind of picture.
"""

from __future__ import annotations

import math
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
    colourless: bool = False  # set by an edit that removes colour (greyscale, sepia)

    def colour(self, white_share: float = 0.5) -> tuple[int, int, int]:
        if self.rng.random() < white_share:
            return (255, 255, 255)
        return tuple(self.rng.randint(0, 255) for _ in range(3))

    def source_alpha(self, size: tuple[int, int]) -> np.ndarray | None:
        """The source photo's own transparency at `size` (0-255), when it has any: the cut-out a
        copier gets for free from a PNG on a transparent background. Only for edits of the
        source photo itself (the cut-out family is never chained after another edit)."""
        from PIL import Image

        with Image.open(self.source) as im:
            if not (im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)):
                return None
            alpha = im.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] == 255:
            return None
        return np.asarray(alpha.resize(size, Image.LANCZOS))

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


def _sepia(im):
    from PIL import Image

    tone = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    out = np.asarray(im.convert("RGB"), np.float32) @ tone.T
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


# Share of colour-family copies whose colour is removed (greyscale or sepia). Such a copy cannot
# tell recolours of one photo apart, so it is tagged (EditContext.colourless) and the benchmark
# counts its "wrong reference" answers apart.
COLOURLESS_SHARE = 0.2


def edit_colour(img, ctx: EditContext):
    """One or two of: brightness, contrast, saturation, colour jitter, hue shift; or, for
    COLOURLESS_SHARE of the copies, greyscale or sepia (and maybe brightness or contrast)."""
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
        "greyscale": lambda im: imaugs.grayscale(im).convert("RGB"),
        "sepia": lambda im: imaugs.apply_lambda(im, aug_function=_sepia),
    }
    if rng.random() < COLOURLESS_SHARE:
        names = [rng.choice(("greyscale", "sepia"))]
        if rng.random() < 0.5:
            names.append(rng.choice(("brightness", "contrast")))
        ctx.colourless = True
    else:
        names = rng.sample(("brightness", "contrast", "saturation", "jitter", "hue"), rng.randint(1, 2))
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


# --------------------------------------------------------------------------------------------
# Families AugLy lacks (issue 21): what copiers do to product photos on marketplaces


def _ui_font(bold: bool, size: int):
    """A sans-serif font shipped with AugLy (Pillow draws its spaces, unlike overlay_text)."""
    from PIL import ImageFont

    return ImageFont.truetype(_font("OpenSans-Bold.ttf" if bold else "OpenSans-Regular.ttf"), size)


def _fit(img, box: tuple[int, int], cover: bool = False):
    """The image scaled to fit inside `box` (or, with `cover`, to fill it, centre-cropped)."""
    from PIL import Image

    w, h = box
    f = (max if cover else min)(w / img.width, h / img.height)
    out = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    if cover:
        x, y = (out.width - w) // 2, (out.height - h) // 2
        out = out.crop((x, y, x + w, y + h))
    return out


def edit_stretch(img, ctx: EditContext):
    """Stretched towards a square, as listing templates that force 1:1 without padding do: one
    axis scaled 15-30 % more than the other, then sized as a marketplace serves it."""
    rng = ctx.rng
    f = rng.uniform(1.15, 1.30)
    w, h = img.size
    taller = w > h or (w == h and rng.random() < 0.5)
    w, h = (w, h * f) if taller else (w * f, h)
    side = min(max(w, h), rng.randint(500, 1000))
    s = side / max(w, h)
    out = img.resize((round(w * s), round(h * s)), resample=3)  # bicubic
    return out, f"stretch {'height' if taller else 'width'} x{f:.2f}"


def edit_rot90(img, ctx: EditContext):
    """A quarter or half turn, or a mirror and a quarter turn: a photo uploaded sideways, or
    flipped and turned to dodge a check that knows mirrors."""
    from PIL import Image

    turns = {
        "rot90": Image.Transpose.ROTATE_90,
        "rot180": Image.Transpose.ROTATE_180,
        "rot270": Image.Transpose.ROTATE_270,
        "mirror+rot90": Image.Transpose.TRANSPOSE,
    }
    name = ctx.rng.choice(sorted(turns))
    return img.transpose(turns[name]), name


# The cut-out: found on a small copy (GrabCut's cost grows with the pixels), then scaled up.
MASK_SIDE = 400
PLAIN_BORDER = 0.8  # share of the border pixels near its median colour: a plain background
NEAR_BORDER = 12  # Lab distance that counts as "the background colour" on the border
PRODUCT_DISTANCE = 28  # Lab distance from the background colour that counts as product


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill what the background cannot reach from the border (white print on a white shirt)."""
    import cv2

    h, w = mask.shape
    flood = np.pad(mask, 1).copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 255)
    return mask | (255 - flood[1:-1, 1:-1])


def product_mask(img, refine: bool = True) -> tuple[np.ndarray, str]:
    """Where the product is in a photo (0/255 at the image's size), as a shop's cut-out tool
    finds it, and how it was found.

    Most product photos are on a plain background: the pixels far (in Lab) from the border's
    colour, closed and hole-filled, seed GrabCut, which settles the edges. A photo whose border
    is not plain (or whose product is too close to it in colour to seed anything) gets GrabCut
    from a rectangle inset 4 %, its usual seeding. Without `refine`, no GrabCut: the seed, or the
    whole photo when there is none (enough to know where the product lies, and 5x faster)."""
    import cv2
    from PIL import Image

    small = img.copy()
    small.thumbnail((MASK_SIDE, MASK_SIDE), Image.LANCZOS)
    rgb = np.ascontiguousarray(np.asarray(small))
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    colour = np.median(border, 0)
    fg = (np.linalg.norm(lab - colour, axis=2) > PRODUCT_DISTANCE).astype(np.uint8) * 255
    fg = _fill_holes(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8), iterations=2))
    far = cv2.dilate(fg, np.ones((15, 15), np.uint8)) == 0
    plain = ((np.linalg.norm(border - colour, axis=1) < NEAR_BORDER).mean() >= PLAIN_BORDER
             and (fg > 0).mean() >= 0.02 and far.any())
    if refine:
        cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's global RNG: one photo, one mask
        seed = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        rect = None
        if plain:
            seed[fg > 0] = cv2.GC_PR_FGD
            seed[cv2.erode(fg, np.ones((9, 9), np.uint8)) > 0] = cv2.GC_FGD
            seed[far] = cv2.GC_BGD
        else:
            m = max(1, round(0.04 * min(w, h)))
            rect = (m, m, w - 2 * m, h - 2 * m)
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), seed, rect, *models, 3,
                    cv2.GC_INIT_WITH_RECT if rect else cv2.GC_INIT_WITH_MASK)
        fg = np.where((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
        fg = _fill_holes(cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)))
    elif not plain:
        fg[:] = 255
    how = ("plain background" if plain else "grabcut") if refine else ("plain background" if plain else "whole photo")
    return cv2.resize(fg, img.size, interpolation=cv2.INTER_LINEAR), how


def can_cut_out(path: str) -> bool:
    """Is there a product to cut out: a transparent background, or a plain one? A lifestyle photo
    or a flat cover scan has none, and a copier would not cut it out (GrabCut cuts fragments)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            if im.convert("RGBA").getchannel("A").getextrema()[0] < 255:
                return True
    return product_mask(load_rgb(path, max_side=MASK_SIDE), refine=False)[1] == "plain background"


def _gradient(size: tuple[int, int], rng: random.Random):
    """A linear gradient between two random colours, at a random angle."""
    from PIL import Image

    w, h = size
    a = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    c0, c1 = (np.array([rng.randint(0, 255) for _ in range(3)], np.float32) for _ in range(2))
    return Image.fromarray((c0 + t[..., None] * (c1 - c0)).astype(np.uint8))


def edit_cutout(img, ctx: EditContext):
    """The product cut out of its photo (its transparency when it has one, else `product_mask`)
    and put, reframed, on a solid colour, a gradient or another photo: what a seller does to make
    a stolen photo look like their own. Made only from photos that `can_cut_out`; a cut-out that
    still finds almost nothing (or everything) keeps the whole photo, as the label says."""
    from PIL import Image, ImageFilter

    rng = ctx.rng
    mask = ctx.source_alpha(img.size)
    how = "transparency"
    if mask is None or not 0.02 <= (mask > 127).mean() <= 0.97:
        mask, how = product_mask(img)
    share = float((mask > 127).mean())
    if not 0.02 <= share <= 0.97:
        mask = np.full_like(mask, 255)
        how += f" failed ({share:.0%} of the photo): whole photo"
    alpha = Image.fromarray(mask)
    box = alpha.getbbox()
    product, alpha = img.crop(box), alpha.crop(box).filter(ImageFilter.GaussianBlur(1.2))
    side = rng.randint(700, 1200)
    aspect = rng.choice((1.0, 1.0, 4 / 3, 3 / 4))
    size = (round(side * min(1, aspect)), round(side * min(1, 1 / aspect)))
    kind = rng.choice(("solid", "gradient", "photo"))
    if kind == "solid":
        canvas = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    elif kind == "gradient":
        canvas = _gradient(size, rng)
    else:
        canvas = _fit(ctx.background(max(size)), size, cover=True)
    fill = rng.uniform(0.55, 0.9)
    f = fill * min(size[0] / product.width, size[1] / product.height)
    new = (max(1, round(product.width * f)), max(1, round(product.height * f)))
    product, alpha = product.resize(new, Image.LANCZOS), alpha.resize(new, Image.LANCZOS)
    x, y = rng.randint(0, size[0] - new[0]), rng.randint(0, size[1] - new[1])
    canvas.paste(product, (x, y), alpha)
    return canvas, f"cutout ({how}, {share:.0%} of the photo) on {kind}, {fill:.2f} of the frame"


TITLE_WORDS = (
    ("Premium", "Classic", "New", "Original", "Limited", "Best-selling", "Deluxe", "Vintage"),
    ("Cotton", "Leather", "Designer", "Modern", "Handmade", "Lightweight", "Unisex", "Wooden"),
    ("T-Shirt", "Bag", "Chair", "Lamp", "Sneakers", "Jacket", "Dress", "Camera", "Bottle", "Set"),
)
PRICES = ("$19.99", "$24.95", "€ 39,90", "£12.50", "$149.00", "€ 9,99", "$64.99")


def _title(rng: random.Random) -> str:
    words = [rng.choice(options) for options in TITLE_WORDS]
    return " ".join(words) + rng.choice(("", " for Men", " for Women", " - Free Shipping", " 2 Pack"))


def _button(draw, box, fill, text: str, font, text_fill=(255, 255, 255)) -> None:
    draw.rounded_rectangle(box, radius=(box[3] - box[1]) // 4, fill=fill)
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    draw.text(((box[0] + box[2] - (r - l)) // 2 - l, (box[1] + box[3] - (b - t)) // 2 - t), text,
              font=font, fill=text_fill)


def _stars(draw, x: int, y: int, size: int, rating: float) -> None:
    """Five rating stars, the first `rating` of them gold."""
    for k in range(5):
        cx, cy = x + k * (size + 4) + size / 2, y + size / 2
        points = [(cx + (size / 2 if i % 2 == 0 else size / 5) * math.sin(i * math.pi / 5),
                   cy - (size / 2 if i % 2 == 0 else size / 5) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(points, fill=(245, 170, 20) if k < rating else (210, 210, 210))


def _thumbnails(img, ctx: EditContext, count: int, side: int) -> list:
    """A listing's thumbnail strip: the photo itself and other (distractor) photos."""
    from PIL import Image

    thumbs = [_fit(img, (side, side))] + [_fit(ctx.background(side), (side, side)) for _ in range(count - 1)]
    cells = []
    for t in thumbs:
        cell = Image.new("RGB", (side, side), (255, 255, 255))
        cell.paste(t, ((side - t.width) // 2, (side - t.height) // 2))
        cells.append(cell)
    return cells


def _listing_desktop(img, ctx: EditContext, main: int):
    """A desktop product page: shop bar, breadcrumb, thumbnails beside the main image, and the
    title, rating, price, options, buttons and description to its right."""
    from PIL import Image, ImageDraw

    rng = ctx.rng
    width = rng.choice((1280, 1366, 1440))
    height = max(760, main + 330)
    accent = rng.choice(((35, 47, 62), (0, 113, 206), (230, 80, 20), (20, 130, 90), (120, 40, 140)))
    page = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(page)
    d.rectangle((0, 0, width, 60), fill=accent)
    d.text((24, 14), rng.choice(SHOP_NAMES), font=_ui_font(True, 24), fill=(255, 255, 255))
    d.rounded_rectangle((300, 12, width - 260, 48), radius=6, fill=(255, 255, 255))
    d.text((314, 18), "Search products", font=_ui_font(False, 17), fill=(150, 150, 150))
    d.text((width - 220, 18), "Sign in    Cart (0)", font=_ui_font(False, 17), fill=(255, 255, 255))
    d.text((40, 78), "Home  >  " + rng.choice(("Fashion", "Home & Living", "Electronics", "Sale")) + "  >  Product",
           font=_ui_font(False, 14), fill=(110, 110, 110))
    thumb, top = 64, 112
    left = 40 + thumb + 16
    for k, cell in enumerate(_thumbnails(img, ctx, rng.randint(3, 5), thumb)):
        page.paste(cell, (40, top + k * (thumb + 10)))
        d.rectangle((40, top + k * (thumb + 10), 40 + thumb, top + k * (thumb + 10) + thumb),
                    outline=accent if k == 0 else (220, 220, 220), width=2 if k == 0 else 1)
    shown = _fit(img, (main, main))
    page.paste(shown, (left + (main - shown.width) // 2, top + (main - shown.height) // 2))
    x = left + main + 48
    title_font = _ui_font(True, 26)
    words, line, y = _title(rng).split(), "", top
    for word in words:  # wrap the title to the column
        if d.textlength(f"{line} {word}".strip(), font=title_font) > width - x - 40 and line:
            d.text((x, y), line, font=title_font, fill=(20, 20, 20))
            y, line = y + 36, word
        else:
            line = f"{line} {word}".strip()
    d.text((x, y), line, font=title_font, fill=(20, 20, 20))
    y += 48
    _stars(d, x, y, 18, rng.randint(3, 5))
    d.text((x + 120, y - 2), f"{rng.randint(3, 2400)} ratings", font=_ui_font(False, 15), fill=(0, 102, 192))
    y += 40
    d.text((x, y), rng.choice(PRICES), font=_ui_font(True, 34), fill=(200, 30, 30))
    y += 62
    d.text((x, y), "Size", font=_ui_font(True, 16), fill=(40, 40, 40))
    for k, size in enumerate(("S", "M", "L", "XL")):
        d.rounded_rectangle((x + k * 56, y + 26, x + k * 56 + 46, y + 62), radius=4, outline=(160, 160, 160), width=1)
        d.text((x + k * 56 + 14, y + 32), size, font=_ui_font(False, 17), fill=(40, 40, 40))
    y += 86
    _button(d, (x, y, x + 260, y + 50), (250, 190, 30), "Add to cart", _ui_font(True, 19), (20, 20, 20))
    _button(d, (x + 280, y, x + 480, y + 50), accent, "Buy now", _ui_font(True, 19))
    y += 78
    for k in range(rng.randint(3, 6)):
        d.text((x, y + k * 24), "• " + _title(rng).lower(), font=_ui_font(False, 15), fill=(70, 70, 70))
    return page


def _listing_phone(img, ctx: EditContext, main: int):
    """A phone product page: status bar, app bar, the main image at full width with its pager
    dots, a thumbnail strip, title, price, rating and a sticky add-to-cart bar."""
    from PIL import Image, ImageDraw

    rng = ctx.rng
    width = main
    height = round(width * rng.uniform(2.0, 2.17))
    accent = rng.choice(((255, 90, 0), (0, 113, 206), (230, 30, 80), (20, 20, 20)))
    page = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(page)
    small, body = _ui_font(True, max(11, width // 32)), _ui_font(False, max(12, width // 28))
    d.text((16, 8), f"{rng.randint(7, 22)}:{rng.randint(0, 59):02d}", font=small, fill=(0, 0, 0))
    d.rectangle((width - 44, 12, width - 18, 24), outline=(0, 0, 0), width=2)
    bar = 36 + width // 9
    d.rectangle((0, 36, width, bar), fill=accent)
    d.text((16, 44), "<  " + rng.choice(SHOP_NAMES), font=_ui_font(True, max(14, width // 22)), fill=(255, 255, 255))
    shown = _fit(img, (main, main))
    page.paste(shown, ((width - shown.width) // 2, bar + (main - shown.height) // 2))
    y = bar + main + 10
    n = rng.randint(3, 6)
    for k in range(n):
        d.ellipse((width // 2 - n * 8 + k * 16, y, width // 2 - n * 8 + k * 16 + 8, y + 8),
                  fill=accent if k == 0 else (200, 200, 200))
    y += 20
    thumb = width // 6
    for k, cell in enumerate(_thumbnails(img, ctx, 4, thumb)):
        page.paste(cell, (12 + k * (thumb + 8), y))
    y += thumb + 14
    d.text((12, y), rng.choice(PRICES), font=_ui_font(True, max(18, width // 14)), fill=(200, 30, 30))
    y += width // 10
    d.text((12, y), _title(rng), font=body, fill=(20, 20, 20))
    y += width // 12
    _stars(d, 12, y, max(10, width // 30), rng.randint(3, 5))
    y += width // 12
    for k in range(4):
        d.text((12, y + k * (width // 18)), _title(rng).lower(), font=body, fill=(90, 90, 90))
    foot = height - width // 6
    d.rectangle((0, foot, width, height), fill=(245, 245, 245))
    _button(d, (12, foot + 10, width // 2 - 6, height - 10), (250, 190, 30), "Add to cart", small, (20, 20, 20))
    _button(d, (width // 2 + 6, foot + 10, width - 12, height - 10), accent, "Buy now", small)
    return page


def edit_screenshot(img, ctx: EditContext):
    """A screenshot of a marketplace listing, desktop or phone, drawn with Pillow: the photo is
    the listing's main image at 350-500 px and its first thumbnail."""
    main = ctx.rng.randint(350, 500)
    if ctx.rng.random() < 0.5:
        return _listing_desktop(img, ctx, main), f"desktop listing, main image {main} px"
    return _listing_phone(img, ctx, main), f"phone listing, main image {main} px"


WATERMARKS = SHOP_NAMES + ("SAMPLE", "© PHOTO-STOCK", "PREVIEW")


def edit_watermark(img, ctx: EditContext):
    """A frame around the photo (sometimes with the shop's name under it) and a large
    semi-transparent watermark across its centre, level or slanted."""
    from PIL import Image, ImageDraw

    rng = ctx.rng
    w, h = img.size
    edge = max(4, round(min(w, h) * rng.uniform(0.03, 0.08)))
    band = round(min(w, h) * 0.09) if rng.random() < 0.4 else 0
    frame_colour = rng.choice(PALETTE[1:]) if rng.random() < 0.7 else tuple(rng.randint(0, 255) for _ in range(3))
    framed = Image.new("RGB", (w + 2 * edge, h + 2 * edge + band), frame_colour)
    framed.paste(img, (edge, edge))
    if band:
        text_colour = (255, 255, 255) if sum(frame_colour) < 380 else (0, 0, 0)
        ImageDraw.Draw(framed).text((edge + 8, h + edge + band // 6), rng.choice(SHOP_NAMES),
                                    font=_ui_font(True, max(10, band * 2 // 3)), fill=text_colour)
    text = rng.choice(WATERMARKS)
    font = _ui_font(True, 100)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    l, t, r, b = probe.textbbox((0, 0), text, font=font)
    layer = Image.new("L", (r - l + 20, b - t + 20), 0)
    ImageDraw.Draw(layer).text((10 - l, 10 - t), text, font=font, fill=255)
    angle = rng.choice((0.0, rng.uniform(-35, 35)))
    layer = layer.rotate(angle, expand=True, resample=Image.BICUBIC)
    span = rng.uniform(0.6, 0.9)
    f = span * min(w / layer.width, h / layer.height * 2)
    layer = layer.resize((max(1, round(layer.width * f)), max(1, round(layer.height * f))), Image.LANCZOS)
    opacity = rng.uniform(0.3, 0.6)
    ink = rng.choice(((255, 255, 255), (128, 128, 128), (0, 0, 0)))
    alpha = layer.point(lambda v: round(v * opacity))
    x, y = edge + (w - layer.width) // 2, edge + (h - layer.height) // 2
    framed.paste(Image.new("RGB", layer.size, ink), (x, y), alpha)
    label = f"frame {edge} px{' + name band' if band else ''}, watermark {text!r} {angle:.0f}° opacity {opacity:.2f}"
    return framed, label


def edit_collage(img, ctx: EditContext):
    """A 2x2 or 3x3 grid of small cells (a 'shop the look' or 'bestsellers' tile): the photo in
    one cell, distractor photos in the others; cells fitted or filled (centre-cropped)."""
    from PIL import Image

    rng = ctx.rng
    n = rng.choice((2, 3))
    cell = rng.randint(250, 400) if n == 2 else rng.randint(180, 300)
    gap = rng.choice((0, 4, 8, 12))
    cover = rng.random() < 0.5
    canvas = Image.new("RGB", (n * cell + (n + 1) * gap,) * 2, ctx.colour(0.7))
    mine = rng.randrange(n * n)
    for k in range(n * n):
        pic = _fit(img if k == mine else ctx.background(cell), (cell, cell), cover)
        x = gap + (k % n) * (cell + gap) + (cell - pic.width) // 2
        y = gap + (k // n) * (cell + gap) + (cell - pic.height) // 2
        canvas.paste(pic, (x, y))
    return canvas, f"collage {n}x{n}, cells {cell} px {'filled' if cover else 'fitted'}, photo in cell {mine}"


MIN_LISTING_SIDE = 500  # marketplaces reject listing images whose long side is shorter


def edit_heavy_crop(img, ctx: EditContext):
    """Keep 25-40 % of the area, on the product (see `product_mask`): a copier zooming on a
    detail, not on the empty background around it; enlarged to MIN_LISTING_SIDE when smaller."""
    rng = ctx.rng
    area = rng.uniform(0.25, 0.40)
    w = min(1.0, math.sqrt(area) * rng.uniform(0.8, 1.25))
    h = min(1.0, area / w)
    mask, _ = product_mask(img, refine=False)
    ys, xs = np.nonzero(mask > 127)
    if len(xs):  # the crop's centre falls on a product pixel
        k = rng.randrange(len(xs))
        cx, cy = xs[k] / img.width, ys[k] / img.height
    else:
        cx, cy = rng.uniform(0, 1), rng.uniform(0, 1)
    x0, y0 = min(max(0.0, cx - w / 2), 1 - w), min(max(0.0, cy - h / 2), 1 - h)
    out = img.crop((round(x0 * img.width), round(y0 * img.height),
                    round((x0 + w) * img.width), round((y0 + h) * img.height)))
    label = f"crop {w * h:.2f} of area around ({cx:.2f}, {cy:.2f})"
    if max(out.size) < MIN_LISTING_SIDE:  # a crop of a small photo, enlarged to be accepted
        f = MIN_LISTING_SIDE / max(out.size)
        out = out.resize((round(out.width * f), round(out.height * f)), resample=3)  # bicubic
        label += f", enlarged x{f:.2f}"
    return out, label


EDITS = {
    "resize_jpeg": edit_resize_jpeg,
    "crop": edit_crop,
    "pad": edit_pad,
    "mirror": edit_mirror,
    "rotate": edit_rotate,
    "overlay": edit_overlay,
    "colour": edit_colour,
    "embedded": edit_embedded,
    "stretch": edit_stretch,
    "rot90": edit_rot90,
    "cutout": edit_cutout,
    "screenshot": edit_screenshot,
    "watermark": edit_watermark,
    "collage": edit_collage,
    "heavy_crop": edit_heavy_crop,
}
# The families, in the tables' order: the first nine as before issue 21, then its seven.
FAMILIES = tuple(EDITS)[:8] + ("combined",) + tuple(EDITS)[8:]
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
