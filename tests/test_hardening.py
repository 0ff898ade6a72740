"""Hostile inputs never crash a run nor blur an exit code: one regression test per defect found."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import imguard
from imguard import fingerprint, limits, load, scan
from imguard_cli.main import app

from conftest import PEAK_MEMORY, run_measured, run_script


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


def test_small_files_that_decode_to_gigabytes_are_refused_from_their_header(fixtures, indexed, hostile, tmp_path):
    """A 172 KB 16-bit 9400×9400 PNG took 2.3 GB and 10 s to scan, a GIF with a 9000×9000 screen
    0.86 GB: a few at once, with a job per core, exhausted a small machine. Each is now refused
    from its header, saying what it would take, and the scan's peak memory stays near a plain
    scan's, far under one file's decode budget."""
    shop = tmp_path / "shop"
    shop.mkdir()
    for path in hostile.values():
        shutil.copyfile(path, shop / path.name)
    shutil.copyfile(fixtures.competitor("chelsea__resize.jpg"), shop / "chelsea.jpg")
    done, peak = run_measured(tmp_path, "scan", "shop", "--db", indexed.folder, "--jobs", "1", "--format", "json",
                              "--quiet")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    errors = {os.path.basename(e["path"]): e["error"] for e in data["errors"]}
    assert errors == {
        "grey16_9400.png": "9400x9400 I;16 pixels would take 506 MiB to decode, over the limit of 256 MiB per image",
        "screen_9000.gif": "9000x9000 P pixels would take 386 MiB to decode, over the limit of 256 MiB per image",
    }
    assert {os.path.basename(m["reference"]) for m in data["matches"]} == {"chelsea.jpg"}
    assert peak < limits.DEFAULT_DECODE_BYTES


def test_a_big_16_bit_png_is_shrunk_before_it_is_converted(hostile, tmp_path):
    """Allowed by a larger budget, the 9400×9400 16-bit PNG decodes within it: shrunk in its own
    mode's 32-bit form, then made 8-bit, never converted at full size (2.3 GB before)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc (Linux)")
    code = PEAK_MEMORY + f"""
import imguard
from imguard import load
decoded = load.load({str(hostile["png16"])!r}, 512, imguard.Limits(decode_bytes=600 * 2**20))
print(decoded.rgb.shape, decoded.rgb.max(), peak_memory())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shape, top, peak = done.stdout.rsplit(" ", 2)
    assert shape == "(523, 523, 3)" and top == "0"  # 9400 // 17: at least 512 px, all black
    assert int(peak) < 700 * 2**20


def test_the_decode_budget_is_known_before_decoding_and_shrinks_what_is_returned(fixtures):
    """A 512×512 RGB PNG takes 1 MiB in Pillow's 4 bytes a pixel: refused under that, decoded
    above it, and asked for every pixel, given no more than half the budget allows."""
    path = fixtures.catalog / "astronaut.png"
    with pytest.raises(imguard.ImageError, match=r"512x512 RGB pixels would take 1 MiB to decode, over the limit of"):
        load.load(path, 512, imguard.Limits(decode_bytes=2**20 - 1))
    assert load.load(path, 10**6, imguard.Limits(decode_bytes=2**20 * 64)).rgb.shape == (512, 512, 3)
    capped = load.load(path, 10**6, imguard.Limits(decode_bytes=2**20 * 4)).rgb
    assert capped.shape == (256, 256, 3)  # 4 MiB / 2 / OUTPUT_BYTES: 295 px at most: 512 // 2


def test_formats_imguard_does_not_list_are_not_parsed(fixtures, tmp_path):
    """Pillow reads dozens of formats, some through other programs (EPS, by Ghostscript): a file
    named .jpg reaches only the decoders of the formats imguard reads."""
    photo = Image.open(fixtures.catalog / "chelsea.jpg")
    for fmt in ("TGA", "PCX", "PPM", "EPS"):
        path = tmp_path / f"{fmt.lower()}.jpg"
        photo.save(path, fmt)
        assert Image.open(path).format == fmt  # Pillow itself would read it
        with pytest.raises(imguard.ImageError, match="not an image, or a format imguard does not read"):
            imguard.fingerprint_file(path)


def test_an_image_over_its_time_limit_is_its_error_and_leaves_no_timer(fixtures):
    """The time limit interrupts a file's work by a timer in the main thread; elsewhere it is
    checked between the steps. Either way the file is an ImageError, and nothing stays armed."""
    path = str(fixtures.catalog / "motorcycle.jpg")
    previous = signal.getsignal(signal.SIGALRM)
    with pytest.raises(imguard.ImageError, match=r"took longer than 1e-06 s \(the time limit per image\)") as info:
        imguard.fingerprint_file(path, limits=imguard.Limits(seconds=1e-6))
    assert info.value.path == path
    assert signal.getsignal(signal.SIGALRM) is previous and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert imguard.fingerprint_file(path).width == 1482

    outcome: list[BaseException | imguard.Fingerprint] = []

    def in_a_thread() -> None:
        try:
            outcome.append(imguard.fingerprint_file(path, limits=imguard.Limits(seconds=1e-6)))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], imguard.ImageError) and "time limit" in outcome[0].reason


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_time_limit_holds_in_index_and_scan_workers(fixtures, indexed, catalog_copy, tmp_path, jobs):
    """In this process (one job) and in the workers of a process pool, every file over its time
    limit is an error of its own; the run goes on and ends."""
    instant = imguard.Limits(seconds=1e-6)
    with imguard.Catalog.open(tmp_path / "guard") as cat:
        result = cat.add(catalog_copy, jobs=jobs, limits=instant)
    assert result.added == 0 and len(result.errors) == len(fixtures.catalog_names)
    assert all("time limit" in e.error for e in result.errors)
    run = indexed.scan(fixtures.competitors, jobs=jobs, limits=instant)
    assert list(run) == [] and run.stats["errors"] == run.stats["queries"] == len(fixtures.expected)
    assert all("time limit" in e.error for e in run.errors)


ERRORS = {  # what a library raises when a hostile file breaks it
    "the store": lambda: imguard.StoreError("catalog.sqlite: database disk image is malformed"),
    "OpenCV": lambda: cv2.error("OpenCV(4.x) resize.cpp: error: (-215:Assertion failed) in function 'resize'"),
    "FAISS": lambda: RuntimeError("Error in faiss::IndexBinaryFlat::search: k > ntotal"),
    "numpy": lambda: ValueError("array is too big; `arr.size * arr.dtype.itemsize` is larger than the maximum"),
}


@pytest.mark.parametrize("where", sorted(ERRORS))
def test_a_failure_inside_one_file_is_that_files_error(fixtures, indexed, monkeypatch, where):
    """Whatever raises while one file is decoded or matched (the store, OpenCV, FAISS, numpy),
    that file is an error saying what failed, and the other files of its chunk still match."""
    names = ["coffee__crop90.jpg", "rocket__thumb300.jpg", "chelsea__jpeg40.jpg", "astronaut__mirror.jpg"]
    decoded_victim, matched_victim = (str(fixtures.competitor(n)) for n in names[:2])
    decoded_sha = hashlib.sha256(fixtures.competitor(names[0]).read_bytes()).hexdigest()
    canonical_view, match_queries = fingerprint.canonical_view, scan.Matcher._match_queries

    def view(decoded, *args, **kwargs):
        if decoded.sha256 == decoded_sha:
            raise ERRORS[where]()
        return canonical_view(decoded, *args, **kwargs)

    def match(self, batch):
        if any(q.path == matched_victim for _, q in batch):
            raise ERRORS[where]()
        return match_queries(self, batch)

    monkeypatch.setattr(fingerprint, "canonical_view", view)
    monkeypatch.setattr(scan.Matcher, "_match_queries", match)
    run = indexed.scan([fixtures.competitor(n) for n in names], jobs=1)
    found = {os.path.basename(m.query) for m in run}
    kind = type(ERRORS[where]()).__name__
    assert {(e.path, e.error.split(" (")[0], kind in e.error) for e in run.errors} == {
        (decoded_victim, "cannot process image", True), (matched_victim, "matching failed", True)}
    assert found == set(names[2:])


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_fifos_and_devices_are_errors_never_read(script, fixtures, indexed, tmp_path):
    """A manifest row naming a FIFO hung the scan forever, one naming /dev/zero read until Python
    ran out of memory. Both, named by a manifest, walked in a folder or given as the source, are
    errors of their own (never opened for reading), and the run ends."""
    shop = tmp_path / "shop"
    shop.mkdir()
    os.mkfifo(shop / "stuck.jpg")
    os.symlink("/dev/zero", shop / "zero.jpg")
    shutil.copyfile(fixtures.competitor("chelsea__resize.jpg"), shop / "chelsea.jpg")
    (shop / "manifest.csv").write_text("path\nstuck.jpg\nzero.jpg\n/dev/zero\nchelsea.jpg\n")
    not_regular = "not a regular file (a device, FIFO or socket is never read)"
    outside = "leads outside the manifest's folder (allow its folder explicitly to read it)"
    cases = {
        "shop/manifest.csv": {"shop/stuck.jpg": not_regular, "shop/manifest.csv:3": f"manifest row: zero.jpg: {outside}",
                              "shop/manifest.csv:4": f"manifest row: /dev/zero: {outside}"},
        "shop": {"shop/stuck.jpg": not_regular, "shop/zero.jpg": not_regular},
    }
    for source, errors in cases.items():
        done = run_script_json(script, tmp_path, "scan", source, "--db", indexed.folder)
        assert {e["path"]: e["error"] for e in done["errors"]} == errors, source
        assert [os.path.basename(m["reference"]) for m in done["matches"]] == ["chelsea.jpg"]
    devices = ["/dev/zero", str(shop / "stuck.jpg")]
    done = run_script(script, tmp_path, "scan", *devices, "--db", indexed.folder, "--format", "json", "--quiet")
    assert done.returncode == 4, done.stderr  # its only files failed
    assert json.loads(done.stdout)["errors"] == [{"path": d, "error": not_regular} for d in sorted(devices)]
    done = run_script(script, tmp_path, "index", "shop", "--db", "guard", "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["added"] == 1 and sorted(e["path"] for e in data["errors"]) == ["shop/stuck.jpg", "shop/zero.jpg"]


HOSTILE_NAME = "red chair\n\u202egnp.jpg"  # a newline, and a right-to-left override: "red chair" / "jpg.png"
SHOWN_NAME = "red chair\\u000a\\u202egnp.jpg"


def test_names_with_newlines_and_bidi_controls_are_indexed_scanned_and_shown_safely(fixtures, tmp_path, monkeypatch):
    """A name with a newline (one record becomes two lines) or a bidi override (the text shown is
    not the name) is indexed and scanned as it is: JSON gives it back exactly, tables and CSV show
    its controls as visible escapes, in matches and in the errors."""
    for folder, source in (("catalog", fixtures.catalog / "chelsea.jpg"),
                           ("shop", fixtures.competitor("chelsea__resize.jpg"))):
        (tmp_path / folder).mkdir()
        shutil.copyfile(source, tmp_path / folder / HOSTILE_NAME)
    (tmp_path / "shop" / f"broken {HOSTILE_NAME}").write_bytes(b"")
    monkeypatch.chdir(tmp_path)

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--quiet", "--jobs", "1"], env={"COLUMNS": "240", "NO_COLOR": "1"},
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "\u202e" not in result.stdout  # escaped, as every format and control character
        return result.stdout

    assert json.loads(cli("index", "catalog", "--db", "guard", "--format", "json"))["added"] == 1
    scanned = json.loads(cli("scan", "shop", "--db", "guard", "--format", "json"))
    [match] = scanned["matches"]
    assert (match["query"], match["reference"]) == (f"shop/{HOSTILE_NAME}", f"catalog/{HOSTILE_NAME}")
    assert [e["path"] for e in scanned["errors"]] == [f"shop/broken {HOSTILE_NAME}"]
    # index: its errors (the broken file) in another catalog; scan: the match and the error
    for command in (["index", "catalog", "shop", "--db", "more"], ["scan", "shop", "--db", "guard"]):
        for fmt in ("table", "csv"):
            shown = cli(*command, "--format", fmt)
            assert HOSTILE_NAME not in shown and SHOWN_NAME in shown, (command, fmt, shown)
            if fmt == "csv" and command[0] == "scan":
                rows = list(csv.DictReader(io.StringIO(shown)))
                assert [(r["query"], r["reference"]) for r in rows] == [(f"shop/{SHOWN_NAME}", f"catalog/{SHOWN_NAME}")]


def run_script_json(script, cwd, *args: str) -> dict:
    """The JSON output of `imguard ARGS --format json --quiet` (exit 0)."""
    done = run_script(script, cwd, *args, "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
