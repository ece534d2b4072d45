"""faceaudit: self-hosted face recognition with Rekognition's API that measures its own errors.

Rekognition's operations need nothing from here: ``boto3.client("rekognition",
endpoint_url=...)``. faceaudit's own operations (``FaceAuditService``: blind review, reading
the search log and the transparency report) are
described by a service model that ships inside this package; :func:`client_model_path`
is the folder to add to botocore's data path, and :func:`client` makes a boto3 client
for them in one line (docs/accountability.md, "Blind review").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

SERVICE_NAME = "faceaudit"  # boto3's name for faceaudit's own operations


def client_model_path() -> str:
    """The folder holding faceaudit's service model in botocore's layout (for ``AWS_DATA_PATH``)."""
    return str(Path(__file__).resolve().parent / "server" / "models")


def client(endpoint_url: str, **options: Any) -> Any:
    """A boto3 client for faceaudit's own operations, e.g. ``faceaudit.client("http://host:8000")``.

    ``options`` go to ``boto3.Session.client`` (region_name, aws_access_key_id, config, ...);
    credentials are found as for any boto3 client. Signed like Rekognition requests (signing
    name ``rekognition``), so the same key works for both.
    """
    import boto3
    import botocore.session

    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    if client_model_path() not in loader.search_paths:
        loader.search_paths.insert(0, client_model_path())
    return boto3.Session(botocore_session=session).client(SERVICE_NAME, endpoint_url=endpoint_url, **options)
