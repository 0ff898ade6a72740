"""imguard: find copies of your own product photos among competitors' images.

    import imguard
    catalog = imguard.Catalog.open("./guard")      # created when missing
    catalog.add("./my-images")                      # file or folder, recursive
    for match in catalog.scan("./competitor-images"):
        print(match.query, match.reference, match.score)
"""

import os

# FAISS's OpenMP threads wait for each other by spinning unless told otherwise: on a busy machine
# (a shared server, other jobs, imguard's own workers) a spinning thread holds the core the one it
# waits for needs. Building the index of a 2,000-image catalog took 38-53 s with 2 threads on a
# loaded 2-core machine against 8-10 s with one; with passive waiting, 7-10 s with 2 threads
# (benchmarks/speed.py's machine, load average 7). Read once, when FAISS loads: set before it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import evidence, nightly, report  # noqa: E402  modules of their own: the report stage, the nightly run
from ._version import __version__
from .catalog import Catalog, IndexResult, ScanRun
from .errors import CatalogError, DependencyError, ImageError, ImguardError, ManifestError, SourceError, StoreError
from .fingerprint import Fingerprint, fingerprint_file
from .history import Finding, MarkError
from .limits import Limits
from .lock import LockHeld
from .nightly import Config, ConfigError, NightlyResult, load_config
from .scan import DEFAULT_THRESHOLD, Evidence, Explanation, Match, ScanError
from .sources import Record, iter_records, read_manifest

__all__ = [
    "__version__",
    "evidence",
    "nightly",
    "report",
    "Config",
    "ConfigError",
    "Finding",
    "LockHeld",
    "MarkError",
    "NightlyResult",
    "load_config",
    "Catalog",
    "CatalogError",
    "DEFAULT_THRESHOLD",
    "DependencyError",
    "Evidence",
    "Explanation",
    "Fingerprint",
    "ImageError",
    "ImguardError",
    "IndexResult",
    "Limits",
    "ManifestError",
    "Match",
    "Record",
    "ScanError",
    "ScanRun",
    "SourceError",
    "StoreError",
    "fingerprint_file",
    "iter_records",
    "read_manifest",
]
