"""One exception hierarchy: catch `ImguardError` to catch everything imguard raises on purpose."""

from __future__ import annotations


class ImguardError(Exception):
    """Base class of every error imguard raises deliberately."""


class ImageError(ImguardError):
    """One file could not be read as an image; scans record it and go on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SourceError(ImguardError):
    """A folder, file list, manifest or URL given by the user cannot be read at all."""


class CatalogError(ImguardError):
    """The catalog store is missing, unreadable, or written by an incompatible imguard."""


class StoreError(CatalogError):
    """The catalog store or its FAISS indexes failed while in use (a corrupt file, an I/O error, a
    full disk): the catalog needs repair, not the command line. Wraps the SQLite or FAISS error."""


class ManifestError(SourceError):
    """A CSV manifest is malformed: missing columns, or rows that point at nothing."""


class DependencyError(ImguardError):
    """An optional feature was asked for without its extra installed."""
