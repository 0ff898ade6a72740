"""Hostile inputs never crash a run nor blur an exit code: one regression test per defect found."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import numpy as np
from PIL import Image

from conftest import run_script


def _strip(path, width: int, height: int) -> None:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_thin_strips_are_indexed_and_scanned(script, fixtures, tmp_path):
    """A 150-byte 10000×2 PNG, scanned alone, crashed ORB (an OpenCV error, exit 1). A valid image
    is an image: it is indexed, and found in a scan, whatever its shape."""
    strips = tmp_path / "strips"
    strips.mkdir()
    for width, height in ((10000, 2), (2, 10000), (3000, 5), (1, 1), (600, 20)):
        _strip(strips / f"strip_{width}x{height}.png", width, height)
    shutil.copytree(fixtures.catalog, tmp_path / "catalog")
    done = run_script(script, tmp_path, "index", "catalog", "--db", "guard", "--quiet")
    assert done.returncode == 0, done.stderr
    for strip in sorted(strips.iterdir()):  # each alone: the chunk holds nothing else
        done = run_script(script, tmp_path, "scan", str(strip), "--db", "guard", "--format", "json",
                          "--fail-on-match", "--quiet")
        assert done.returncode == 0 and "Traceback" not in done.stderr, (strip.name, done.stderr)
        assert json.loads(done.stdout)["errors"] == []
    done = run_script(script, tmp_path, "index", "strips", "--db", "guard", "--format", "json", "--quiet")
    assert done.returncode == 0 and json.loads(done.stdout)["errors"] == [], done.stdout
    done = run_script(script, tmp_path, "scan", "strips", "--db", "guard", "--format", "json", "--quiet")
    found = {os.path.basename(m["query"]): m["matched_by"] for m in json.loads(done.stdout)["matches"]}
    assert found == {p.name: "sha256" for p in strips.iterdir()}


def test_a_file_name_that_is_not_utf8_is_indexed_scanned_and_shown_safely(script, fixtures, tmp_path):
    """`index` aborted on such a name (UnicodeEncodeError in the store), and `scan --format json`
    wrote its raw byte: not JSON. Now it is stored as it is, and every format shows it safely."""
    (tmp_path / "catalog").mkdir()
    (tmp_path / "shop").mkdir()
    name = b"caf\xe9 \xff\x1b[31m.jpg"  # Latin-1 é, a stray byte, a terminal escape
    shutil.copyfile(fixtures.catalog / "chelsea.jpg", os.path.join(bytes(tmp_path / "catalog"), name))
    shutil.copyfile(fixtures.competitor("chelsea__resize.jpg"), os.path.join(bytes(tmp_path / "shop"), name))
    done = run_script(script, tmp_path, "index", "catalog", "--db", "guard", "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 1

    done = run_script(script, tmp_path, "scan", "shop", "--db", "guard", "--format", "json", "--quiet", text=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")  # valid UTF-8...
    assert "\x1b" not in text  # ...with no raw escape
    [match] = json.loads(text)["matches"]
    assert os.fsencode(match["query"]) == b"shop/" + name  # lossless: the name as the file system has it
    assert os.fsencode(match["reference"]) == b"catalog/" + name

    for fmt in ("csv", "table"):
        done = run_script(script, tmp_path, "scan", "shop", "--db", "guard", "--format", fmt, "--quiet", text=False)
        shown = done.stdout.decode("utf-8")
        assert done.returncode == 0 and "\x1b" not in shown, (fmt, shown)
        assert "caf\\xe9 \\xff\\u001b[31m.jpg" in shown, (fmt, shown)
    rows = list(csv.DictReader(io.StringIO(run_script(script, tmp_path, "scan", "shop", "--db", "guard", "--format",
                                                      "csv", "--quiet").stdout)))
    assert [os.path.basename(r["reference"]) for r in rows] == ["caf\\xe9 \\xff\\u001b[31m.jpg"]
