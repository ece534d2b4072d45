"""Opening the target an audit names: ``local``, ``rekognition://...`` or ``csv:FILE``."""

from __future__ import annotations

import os

from faceaudit.audit.targets.base import Target
from faceaudit.audit.targets.cache import ResponseCache, default_cache_dir
from faceaudit.audit.targets.csv_predictions import CsvTarget
from faceaudit.audit.targets.local import LocalBackend
from faceaudit.audit.targets.rekognition import RekognitionTarget
from faceaudit.audit.targets.transport import Backend, botocore_backend
from faceaudit.settings import Settings


def open_target(spec: str, *, cache_dir: str | os.PathLike[str] | None = None, workers: int | None = None,
                cache: bool = True, progress: bool = True) -> Target:
    """The target named by ``spec``:

    * ``local`` -- faceaudit's engine in-process, ``workers`` processes (default: one per core);
    * ``rekognition://HOST:PORT`` -- a Rekognition-compatible endpoint over http (faceaudit's
      own server), ``workers`` threads (default 4). Credentials: FACEAUDIT_ACCESS_KEY_ID /
      FACEAUDIT_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+
      AWS_SESSION_TOKEN), else botocore's default chain; region AWS_DEFAULT_REGION or us-east-1;
    * ``rekognition://aws`` -- Amazon Rekognition itself (botocore's endpoint for the region,
      credentials from botocore's default chain);
    * ``csv:FILE`` -- predictions of another system (see faceaudit.audit.targets.csv_predictions).

    ``cache_dir``: where answers are cached so an interrupted audit resumes (default
    ~/.cache/faceaudit/audit); ``cache=False`` keeps them in memory only.
    """
    spec = spec.strip()
    if spec.startswith("csv:"):
        return CsvTarget(spec[len("csv:"):])

    settings = Settings.from_env()
    region = settings.aws_region
    directory = (cache_dir or default_cache_dir()) if cache else None
    backend: Backend
    if spec == "local":
        store_dir = None if directory is None else os.path.join(os.path.expanduser(str(directory)), "local-store")
        backend = LocalBackend(workers, store_dir)
    elif spec in ("rekognition://aws", "rekognition://aws/"):
        backend = botocore_backend(None, region=region, threads=workers)
    elif spec.startswith("rekognition://"):
        address = spec[len("rekognition://"):].rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or "/" in address:
            raise ValueError(f"expected rekognition://HOST:PORT or rekognition://aws, got {spec!r}")
        keys: tuple[str | None, str | None] = (None, None)
        for access, secret in ((settings.access_key_id, settings.secret_access_key),
                               (settings.aws_access_key_id, settings.aws_secret_access_key)):
            if access and secret:
                keys = (access, secret)
                break
        aws_keys = keys[0] is not None and keys[0] == settings.aws_access_key_id
        token = settings.aws_session_token if aws_keys else None
        backend = botocore_backend(f"http://{address}", region=region, access_key_id=keys[0],
                                   secret_access_key=keys[1], session_token=token, threads=workers)
    else:
        raise ValueError(f"unknown target {spec!r}: use local, rekognition://HOST:PORT, "
                         f"rekognition://aws or csv:FILE")
    # The local engine's name says which optional models it runs (see local.local_endpoint).
    name = backend.endpoint if spec == "local" else spec
    return RekognitionTarget(backend, name=name, cache=ResponseCache(directory), progress=progress)
