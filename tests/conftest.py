"""Shared fixtures: the generated images (made once per session) and one indexed catalog.

Tests that only read use `fixtures` and `indexed`; tests that change files or the catalog work on
copies (`catalog_copy`, or their own tmp_path).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS / "fixtures"))
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import make_fixtures  # noqa: E402

import imguard  # noqa: E402

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "running as root: file permissions do not stop root from reading"


# What the fuzz test ran (tests/test_fuzz.py), said at the end of the run: CI's log records it.
FUZZ_CASES_RUN: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for line in FUZZ_CASES_RUN:
        terminalreporter.write_line(f"fuzz: {line}")


class Fixtures:
    """Paths of the generated fixture tree and what each file is."""

    def __init__(self, info: dict) -> None:
        self.root: Path = Path(info["root"])
        self.catalog = self.root / "catalog"
        self.competitors = self.root / "competitors"
        self.loader_dir = self.root / "loader"
        self.expected: dict[str, str | None] = info["expected"]
        self.params: dict[str, dict] = info["competitors"]
        self.catalog_names: list[str] = info["catalog"]
        self.loader_cases: dict[str, str] = info["loader"]

    def loader(self, case: str) -> Path:
        return self.loader_dir / self.loader_cases[case]

    def competitor(self, name: str) -> Path:
        """A competitor file, in its listing's folder."""
        return self.competitors / self.params[name]["listing"] / name

    @property
    def competitor_files(self) -> list[Path]:
        return sorted(p for p in self.competitors.rglob("*") if p.is_file())

    def copy_of(self, source: str, family: str) -> str:
        """Name of the competitor file made from `source` by `family`."""
        for name, p in self.params.items():
            if p["source"] == source and p["family"] == family:
                return name
        raise KeyError((source, family))


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    root = tmp_path_factory.mktemp("fixtures")
    return Fixtures(make_fixtures.make_fixtures(root))


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small files that declare huge pictures (see make_fixtures.make_hostile)."""
    return make_fixtures.make_hostile(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="session")
def indexed(fixtures: Fixtures, tmp_path_factory: pytest.TempPathFactory) -> imguard.Catalog:
    """The fixture catalog, indexed once; read-only for the tests that use it."""
    folder = tmp_path_factory.mktemp("guard")
    catalog = imguard.Catalog.open(folder)
    result = catalog.add(fixtures.catalog, jobs=1)
    assert result.added == len(fixtures.catalog_names) and not result.errors
    yield catalog
    catalog.close()


@pytest.fixture(scope="session")
def default_scan(fixtures: Fixtures, indexed: imguard.Catalog) -> list[imguard.Match]:
    """All competitors scanned once at the default threshold, in one process."""
    run = indexed.scan(fixtures.competitors, jobs=1)
    matches = list(run)
    assert not run.errors
    return matches


@pytest.fixture
def catalog_copy(fixtures: Fixtures, tmp_path: Path) -> Path:
    """A private copy of the catalog images, free to change."""
    target = tmp_path / "images"
    shutil.copytree(fixtures.catalog, target)
    return target


def by_query(matches: list[imguard.Match]) -> dict[str, list[imguard.Match]]:
    """Basename of the query → its matches, in the order the scan gave them (best first)."""
    out: dict[str, list[imguard.Match]] = {}
    for m in matches:
        out.setdefault(os.path.basename(m.query), []).append(m)
    return out


@pytest.fixture(scope="session")
def script() -> Path:
    """The installed `imguard` console script: the CLI as a user runs it."""
    path = Path(sys.executable).parent / ("imguard.exe" if os.name == "nt" else "imguard")
    if not path.exists():
        pytest.skip(f"the imguard console script is not installed next to {sys.executable} (pip install -e .)")
    return path


def run_script(script: Path, cwd: Path, *args: str | bytes, text: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the console script in `cwd` with wide, colourless output; `text=False` keeps stdout's
    bytes as they were written."""
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1"}
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=text, timeout=300,
                          **kwargs)


# Strings a competitor controls, each trying something: markup, a script link, a spreadsheet
# formula, a path out of the report folder, a bidi override. None may do anything.
HOSTILE_TITLE = "<script>window.__pwned = 1</script>Cheap cat print"
HOSTILE_LISTING = "../../evil<img src=x onerror=\"window.__pwned = 2\">"
HOSTILE_URL = "javascript:window.__pwned = 3"
HOSTILE_SELLER = "=HYPERLINK(\"http://evil.example\",\"click\")"
HOSTILE_MARKETPLACE = "amazon.de\x1b[2J\nOur listing(s) to link: https://evil.example/dp/FAKE"


@pytest.fixture(scope="session")
def reports(fixtures, script, tmp_path_factory) -> dict[str, Path]:
    """Evidence reports made as a user makes them, with the console script:

    - "folders": `scan competitors --report` (listing sub-folders, one clean), the catalog
      indexed with its manifest of own listings;
    - "saved": `scan --format json > scan.json`, then `report scan.json --out`;
    - "hostile": `scan hostile.csv --report`, a competitor manifest full of hostile strings.
    Also "root" (the working folder) and "scan.json"."""
    root = tmp_path_factory.mktemp("reports")
    shutil.copytree(fixtures.catalog, root / "catalog")
    shutil.copytree(fixtures.competitors, root / "competitors")
    done = run_script(script, root, "index", "catalog", "--db", "guard", "--manifest", "catalog/listings.csv", "--quiet")
    assert done.returncode == 0, done.stderr
    done = run_script(script, root, "scan", "competitors", "--db", "guard", "--report", "folders", "--quiet", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    done = run_script(script, root, "scan", "competitors", "--db", "guard", "--format", "json", "--quiet", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    (root / "scan.json").write_text(done.stdout, encoding="utf-8")
    done = run_script(script, root, "report", "scan.json", "--db", "guard", "--out", "saved")
    assert done.returncode == 0, done.stderr

    shots = root / "shots"
    shots.mkdir()
    for name in ("chelsea__resize.jpg", "coffee__png.png", "unrelated__moon.png"):
        shutil.copyfile(fixtures.competitor(name), shots / name)
    with open(root / "hostile.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "listing", "listing_url", "title", "seller", "marketplace", "captured_at",
                         "image_position"])
        writer.writerow(["shots/chelsea__resize.jpg", HOSTILE_LISTING, HOSTILE_URL, HOSTILE_TITLE, HOSTILE_SELLER,
                         HOSTILE_MARKETPLACE, "2026-11-30T10:00:00Z", "1\x1b]8;;http://evil.example\x07"])
        writer.writerow(["shots/coffee__png.png", "B0GOOD0001", "https://market.example/dp/B0GOOD0001",
                         "Cup & saucer", "Shop \u202eevil", "amazon.de", "", "2"])
        writer.writerow(["shots/unrelated__moon.png", "B0GOOD0001", "", "", "", "", "", "3"])
    done = run_script(script, root, "scan", "hostile.csv", "--db", "guard", "--report", "hostile", "--quiet", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    return {"root": root, "folders": root / "folders", "saved": root / "saved", "hostile": root / "hostile",
            "scan.json": root / "scan.json"}


# Chromium as Debian packages it (`apt-get install chromium`), driven by Playwright without its
# own browser download; the flags keep it off the network it has no business with.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium. Without one the browser tests skip, saying why, except under CI=true,
    where a missing browser fails them (.ci/run installs it)."""

    def missing(reason: str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    chromium = os.environ.get("IMGUARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        missing("no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


# The peak memory of this process, in bytes: Linux's VmHWM. Not ru_maxrss, which a child started
# by vfork (subprocess) inherits from its parent, pytest, however big it grew.
PEAK_MEMORY = """
def peak_memory():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
"""

# Runs the CLI in this interpreter and reports its peak memory on its last line of stderr,
# whatever the exit.
_MEASURED = PEAK_MEMORY + """
import sys
from imguard_cli.main import app
try:
    app(sys.argv[1:], prog_name="imguard")
finally:
    sys.stderr.write(f"\\npeak {peak_memory()}\\n")
"""


def run_measured(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`imguard ARGS` in a fresh interpreter in `cwd`: its result and its peak memory in bytes
    (with --jobs 1 the whole scan runs in that one process)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc (Linux)")
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURED, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.rstrip().splitlines()
    assert lines and lines[-1].startswith("peak "), done.stderr
    return done, int(lines[-1].split()[1])
