"""Fuzzing: real photos in every format imguard reads (make_fixtures.make_fuzz_corpus), mutated
(bits flipped, cut short, bytes spliced in or out, widths and heights set to anything, frames
repeated, TIFF directories looped, PNG checksums made right again so that the damage reaches the
decoder) end as a decoded picture or the file's ImageError in the loader, and as a match, no
match or a per-file error in a full scan, whose peak memory stays under 1 GB -- never an
exception out of either, never a hang.

A few hundred cases by default (CI); IMGUARD_FUZZ_CASES=5000 runs more, and random ones instead
of the same ones every run. The number of cases is printed at the end of the test run.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import make_fixtures
from imguard import load
from imguard.errors import ImageError
from imguard.limits import time_limit

from conftest import FUZZ_CASES_RUN, run_measured

CASES = int(os.environ.get("IMGUARD_FUZZ_CASES", "300"))
# The requirement: a scan with --jobs 1 stays under this, whatever the file.
PEAK_LIMIT = 2**30
# Field values that break decoders and allocators: zero, one, powers of two and their edges.
EDGE_VALUES = (0, 1, 2**14, 2**15 - 1, 2**16 - 1, 2**24, 2**31 - 1, 2**32 - 1)
# A mutated file grows at most to this (repeated frames): over a few MB it only costs test time.
MAX_GROWN = 4 * 2**20


# -- where the sizes and frames of each format are ----------------------------------------------

Field = tuple[int, int, str]  # offset, length, byte order of a width or height


def size_fields(data: bytes) -> list[Field]:
    """The width and height fields of the image's header(s), where the format is recognised."""
    try:
        if data.startswith(b"\x89PNG"):
            return [(16, 4, "big"), (20, 4, "big")]
        if data.startswith(b"BM"):
            return [(18, 4, "little"), (22, 4, "little")]
        if data.startswith(b"GIF8"):
            descriptor = _gif_blocks_start(data)
            while data[descriptor] == 0x21:  # extensions before the image descriptor
                descriptor = _skip_sub_blocks(data, descriptor + 2)
            return [(6, 2, "little"), (8, 2, "little"), (descriptor + 5, 2, "little"), (descriptor + 7, 2, "little")]
        if data.startswith(b"\xff\xd8"):
            sof = min((i for i in (data.find(bytes([0xFF, m])) for m in (0xC0, 0xC1, 0xC2)) if i > 0), default=-1)
            return [(sof + 5, 2, "big"), (sof + 7, 2, "big")] if sof > 0 else []
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            order = "little" if data[:2] == b"II" else "big"
            ifd = int.from_bytes(data[4:8], order)
            fields = []
            for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd:ifd + 2], order), 12):
                if int.from_bytes(data[entry:entry + 2], order) in (256, 257):  # ImageWidth, ImageLength
                    kind = int.from_bytes(data[entry + 2:entry + 4], order)
                    fields.append((entry + 8, 2 if kind == 3 else 4, order))
            return fields
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return [(24, 3, "little"), (27, 3, "little")]
            if chunk == b"VP8 ":
                return [(26, 2, "little"), (28, 2, "little")]
            return []
        box = data.find(b"ispe")  # HEIF, AVIF: the image spatial extents property
        return [(box + 8, 4, "big"), (box + 12, 4, "big")] if box > 0 else []
    except IndexError:
        return []


def _gif_blocks_start(data: bytes) -> int:
    flags = data[10]
    return 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)


def _skip_sub_blocks(data: bytes, at: int) -> int:
    while data[at]:
        at += data[at] + 1
    return at + 1


def more_frames(data: bytes, count: int) -> bytes:
    """A GIF with its frames repeated `count` times; an APNG claiming `count` thousand frames; a
    TIFF whose first directory names itself as the next one (a loop)."""
    try:
        if data.startswith(b"GIF8"):
            start, end = _gif_blocks_start(data), data.rfind(b";")
            body = data[start:end]
            return data[:start] + body * max(1, min(count, MAX_GROWN // max(1, len(body)))) + data[end:]
        if data.startswith(b"\x89PNG") and b"acTL" in data:
            at = data.find(b"acTL") + 4
            return fix_png_checksums(data[:at] + (count * 1000).to_bytes(4, "big") + data[at + 4:])
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            order = "little" if data[:2] == b"II" else "big"
            ifd = int.from_bytes(data[4:8], order)
            at = ifd + 2 + 12 * int.from_bytes(data[ifd:ifd + 2], order)
            return data[:at] + ifd.to_bytes(4, order) + data[at + 4:]
    except IndexError:
        pass
    return data


def fix_png_checksums(data: bytes) -> bytes:
    """Every chunk's CRC made right: Pillow checks them, and damage must reach the decoder too."""
    if not data.startswith(b"\x89PNG"):
        return data
    out, at = bytearray(data[:8]), 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        body = data[at + 4:at + 8 + length]
        if at + 12 + length > len(data):
            break
        out += data[at:at + 8 + length] + zlib.crc32(body).to_bytes(4, "big")
        at += 12 + length
    return bytes(out + data[at:])


# -- mutations -------------------------------------------------------------------------------------

Op = tuple


def mutate(data: bytes, ops: list[Op]) -> bytes:
    for op in ops:
        kind, *args = op
        where = args[0] % (len(data) + 1) if args and kind not in ("size", "frames") else 0
        if kind == "flip" and where < len(data):
            data = data[:where] + bytes([data[where] ^ (1 << args[1])]) + data[where + 1:]
        elif kind == "truncate":
            data = data[:where]
        elif kind == "overwrite":
            data = data[:where] + args[1] + data[where + len(args[1]):]
        elif kind == "insert":
            data = data[:where] + args[1] + data[where:]
        elif kind == "delete":
            data = data[:where] + data[where + args[1]:]
        elif kind == "size":
            fields = size_fields(data)
            if fields:
                at, length, order = fields[args[0] % len(fields)]
                if at + length <= len(data):
                    value = (args[1] % 2 ** (8 * length)).to_bytes(length, order)
                    data = fix_png_checksums(data[:at] + value + data[at + length:])
        elif kind == "frames":
            data = more_frames(data, args[0])
        elif kind == "checksums":
            data = fix_png_checksums(data)
    return data


position = st.integers(0, 2**20)
OPS = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("overwrite"), position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), position, st.integers(1, 256)),
    st.tuples(st.just("size"), st.integers(0, 7), st.sampled_from(EDGE_VALUES) | st.integers(0, 2**32 - 1)),
    st.tuples(st.just("frames"), st.integers(2, 1000)),
    st.tuples(st.just("checksums")),
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("corpus")
    return {name: path.read_bytes() for name, path in make_fixtures.make_fuzz_corpus(folder).items()}


def test_the_corpus_holds_every_format_and_decodes(corpus):
    """Before mutation every seed is a readable image, and every format has its seeds."""
    suffixes = {os.path.splitext(name)[1] for name in corpus}
    assert {".jpg", ".png", ".webp", ".gif", ".tiff", ".bmp"} <= suffixes
    assert {f".{ext}" for ext in make_fixtures.phone_formats()} <= suffixes
    for name, data in corpus.items():
        assert load.decode(data, name, 512).rgb.shape[2] == 3, name
        if not name.endswith((".heic", ".avif", ".webp")):
            assert size_fields(data), name  # the mutations find its sizes


def test_mutated_images_end_as_a_picture_or_their_error_in_the_loader_and_a_scan(corpus, indexed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed")
    outcomes = {"decoded": 0, "errors": 0}

    @settings(max_examples=CASES, deadline=None, database=None, derandomize="IMGUARD_FUZZ_CASES" not in os.environ,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(seed=st.sampled_from(sorted(corpus)), ops=st.lists(OPS, min_size=1, max_size=4))
    def one_case(seed: str, ops: list[Op]) -> None:
        data = mutate(corpus[seed], ops)
        name = f"case{sum(outcomes.values()):05d}-{seed}"
        try:
            with time_limit(name, 30):
                decoded = load.decode(data, name, 512)
        except ImageError as exc:
            assert exc.path == name and exc.reason
            outcomes["errors"] += 1
        else:
            assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3
            assert decoded.width >= 1 and decoded.height >= 1
            outcomes["decoded"] += 1
        (folder / name).write_bytes(data)  # its suffix kept: the scan's walk takes it

    one_case()
    files = len(list(folder.iterdir()))
    done, peak = run_measured(folder, "scan", ".", "--db", indexed.folder, "--jobs", "1", "--format", "json",
                              "--quiet")
    assert done.returncode in (0, 4), done.stderr  # 4 only if every case failed
    data = json.loads(done.stdout)
    assert data["stats"]["queries"] == files and data["stats"]["errors"] == len(data["errors"])
    assert {Path(e["path"]).name for e in data["errors"]} <= {p.name for p in folder.iterdir()}
    assert all(e["error"] for e in data["errors"])
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.0f} MiB"
    FUZZ_CASES_RUN.append(f"{files} mutated images: {outcomes['decoded']} decoded, {outcomes['errors']} errors "
                          f"in the loader; in a scan {files - data['stats']['errors']} read, "
                          f"{data['stats']['errors']} errors, peak {peak / 2**20:.0f} MiB")
