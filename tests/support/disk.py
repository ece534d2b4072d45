"""A disk that is full, for real: tests of what a full disk does to the stores and the search log."""

from __future__ import annotations

from pathlib import Path


def fill_disk(directory: Path) -> Path:
    """Write zeros into ``directory/filler`` until the filesystem refuses; returns the file (unlink to free)."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler
