"""imguard: find copies of your own product photos among competitors' images.

    import imguard
    catalog = imguard.Catalog.open("./guard")      # created when missing
    catalog.add("./my-images")                      # file or folder, recursive
    for match in catalog.scan("./competitor-images"):
        print(match.query, match.reference, match.score)
"""

from ._version import __version__
from .catalog import Catalog, IndexResult, ScanRun, read_manifest
from .errors import CatalogError, DependencyError, ImageError, ImguardError, ManifestError, SourceError
from .fingerprint import Fingerprint, fingerprint_file
from .scan import DEFAULT_THRESHOLD, Explanation, Match, ScanError

__all__ = [
    "__version__",
    "Catalog",
    "CatalogError",
    "DEFAULT_THRESHOLD",
    "DependencyError",
    "Explanation",
    "Fingerprint",
    "ImageError",
    "ImguardError",
    "IndexResult",
    "ManifestError",
    "Match",
    "ScanError",
    "ScanRun",
    "SourceError",
    "fingerprint_file",
    "read_manifest",
]
