"""What a batch runs over: the image files of a folder (recursively), or a CSV listing of them."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from faceaudit.datasets.readers import IMAGE_EXTENSIONS
from faceaudit.errors import InvalidParameterException

_EXTERNAL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_.\-:]")  # Rekognition's ExternalImageId pattern
EXTERNAL_ID_MAX = 255


@dataclass(frozen=True)
class Source:
    """One image: its file and the ExternalImageId it is indexed under."""

    path: str
    external_image_id: str


def external_id_for(relative: str) -> str:
    """The file's path relative to the folder, in Rekognition's ExternalImageId alphabet
    ("/" becomes ":", any other character outside [a-zA-Z0-9_.-:] becomes "_")."""
    text = _EXTERNAL_ID_INVALID.sub("_", relative.replace(os.sep, "/").replace("/", ":"))
    return text[-EXTERNAL_ID_MAX:]


def list_sources(location: str | os.PathLike[str]) -> list[Source]:
    """The images of a folder (sorted, recursive), or the rows of a CSV file with a ``path``
    column (relative paths are relative to the CSV's folder) and an optional
    ``external_image_id`` column."""
    location = Path(location)
    if location.is_dir():
        files = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return [Source(str(p), external_id_for(str(p.relative_to(location)))) for p in files]
    if location.is_file() and location.suffix.lower() == ".csv":
        with open(location, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise InvalidParameterException(f"{location}: a listing needs a 'path' column")
            sources = []
            for line, row in enumerate(reader, start=2):
                path = (row.get("path") or "").strip()
                if not path:
                    raise InvalidParameterException(f"{location}, line {line}: empty path")
                full = Path(path) if os.path.isabs(path) else location.parent / path
                given = (row.get("external_image_id") or "").strip()
                if given and (_EXTERNAL_ID_INVALID.search(given) or len(given) > EXTERNAL_ID_MAX):
                    raise InvalidParameterException(
                        f"{location}, line {line}: external_image_id {given!r} is not a valid ExternalImageId")
                sources.append(Source(str(full), given or external_id_for(path)))
            return sources
    raise InvalidParameterException(f"{location}: expected a folder of images or a CSV listing (.csv)")
