"""The system under audit, used black-box through one interface.

An audit asks a target three kinds of question, which are what Rekognition-like
services answer and what the three protocols need:

- detect(paths): for each image, did it find a face, and what gender and age did
  it say for the largest one (DetectFaces with Attributes=ALL);
- similarities(pairs): for each pair of images, the similarity (0-100) between
  their largest faces, or None where either image had no face (IndexFaces +
  SearchFaces, so each image is analysed once, not once per pair);
- search(gallery, probes): for each probe image, the gallery images whose face
  it matched, with similarities, best first (IndexFaces + SearchFacesByImage):
  the ACLU's lineup.

Implementations: the local engine in-process, any Rekognition-compatible endpoint
through boto3 (faceaudit's own server or Amazon's), and a CSV of predictions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """What a target said about one image (its largest face)."""

    face_count: int
    gender: str | None = None  # "female" / "male" (lower case, as AuditImage.gender)
    gender_confidence: float | None = None  # 0-100
    age_low: float | None = None
    age_high: float | None = None
    error: str | None = None  # the target's error code when it refused the image

    @property
    def found(self) -> bool:
        return self.face_count > 0

    @property
    def age(self) -> float | None:
        """Point estimate: the middle of the range."""
        if self.age_low is None or self.age_high is None:
            return None
        return (self.age_low + self.age_high) / 2.0


@dataclass(frozen=True)
class Match:
    path: str  # gallery image
    similarity: float  # 0-100


class Target(ABC):
    """A face system under audit."""

    #: e.g. "local", "rekognition://127.0.0.1:8000", "csv:predictions.csv"
    name: str

    @abstractmethod
    def describe(self) -> dict:
        """What the report records about the target (kind, endpoint, model version, ...)."""

    @abstractmethod
    def detect(self, paths: Sequence[str]) -> dict[str, Detection]:
        ...

    @abstractmethod
    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        ...

    @abstractmethod
    def search(self, gallery: Sequence[str], probes: Sequence[str], max_results: int = 50
               ) -> dict[str, list[Match]]:
        ...

    def close(self) -> None:
        """Release what the target holds (temporary collections, worker processes)."""


# --- opening a target by name ------------------------------------------------------------
#: Environment variables read for a rekognition://HOST:PORT target (faceaudit's own first).
CREDENTIAL_ENV = (("FACEAUDIT_ACCESS_KEY_ID", "FACEAUDIT_SECRET_ACCESS_KEY"),
                  ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))


def open_target(spec: str, *, cache_dir=None, workers: int | None = None, cache: bool = True,
                progress: bool = True) -> Target:
    """The target named by ``spec``:

    * ``local`` -- faceaudit's engine in-process, ``workers`` processes (default: one per core);
    * ``rekognition://HOST:PORT`` -- a Rekognition-compatible endpoint over http (faceaudit's
      own server), ``workers`` threads (default 4). Credentials: FACEAUDIT_ACCESS_KEY_ID /
      FACEAUDIT_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+
      AWS_SESSION_TOKEN), else botocore's default chain; region AWS_DEFAULT_REGION or us-east-1;
    * ``rekognition://aws`` -- Amazon Rekognition itself (botocore's endpoint for the region,
      credentials from botocore's default chain);
    * ``csv:FILE`` -- predictions of another system (see faceaudit.audit.target_csv).

    ``cache_dir``: where answers are cached so an interrupted audit resumes (default
    ~/.cache/faceaudit/audit); ``cache=False`` keeps them in memory only.
    """
    import os

    from faceaudit.audit.target_cache import ResponseCache, default_cache_dir

    spec = spec.strip()
    if spec.startswith("csv:"):
        from faceaudit.audit.target_csv import CsvTarget
        return CsvTarget(spec[len("csv:"):])

    from faceaudit.audit.target_rekognition import LocalBackend, RekognitionTarget, botocore_backend

    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    directory = (cache_dir or default_cache_dir()) if cache else None
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
        for access_env, secret_env in CREDENTIAL_ENV:
            if os.environ.get(access_env) and os.environ.get(secret_env):
                keys = (os.environ[access_env], os.environ[secret_env])
                break
        aws_keys = keys[0] is not None and keys[0] == os.environ.get("AWS_ACCESS_KEY_ID")
        token = os.environ.get("AWS_SESSION_TOKEN") if aws_keys else None
        backend = botocore_backend(f"http://{address}", region=region, access_key_id=keys[0],
                                   secret_access_key=keys[1], session_token=token, threads=workers)
    else:
        raise ValueError(f"unknown target {spec!r}: use local, rekognition://HOST:PORT, "
                         f"rekognition://aws or csv:FILE")
    # The local engine's name says which optional models it runs (see target_rekognition.local_endpoint).
    name = backend.endpoint if spec == "local" else spec
    return RekognitionTarget(backend, name=name, cache=ResponseCache(directory), progress=progress)
