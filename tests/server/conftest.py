"""A real ``faceaudit serve`` for the HTTP tests, and boto3 clients pointed at it.

Fixtures (reuse them for operation tests; nothing here needs importing):

* ``faceaudit_server`` (session) -- a :class:`RunningServer`: the installed
  console script started on a free port of 127.0.0.1 with a temporary data dir
  and fixed credentials (``FACEAUDIT_ACCESS_KEY_ID``/``..._SECRET_ACCESS_KEY``).
  ``.client(**botocore_config)`` makes a boto3 Rekognition client for it (no
  retries unless asked, so error tests see the first answer); ``.post(...)``
  sends a hand-made, optionally unsigned or mis-signed request;
  ``.request_log()`` / ``.log_for(request_id)`` give its per-request log lines
  (``dispatched=yes`` once a request reached the service); ``.endpoint_url``,
  ``.data_dir``, ``.access_key_id``, ``.secret_access_key``.
* ``rekognition`` (session) -- ``faceaudit_server.client()``.
* ``postgres_database`` -- a factory: a new ``--database`` URL (a fresh schema of the
  session's PostgreSQL, tests/conftest.py ``postgres_url``), dropped at the end of the test
  session.
* ``start_faceaudit_server`` -- a factory ``(data_dir, credentials=..., extra_args=())``
  for further servers (e.g. ``credentials=None``: none in the environment),
  stopped at the end of the test.

The server is shared by the whole session: give collections unique names.
"""

from __future__ import annotations

import subprocess

import pytest

from support.server import RunningServer, start_server


@pytest.fixture(scope="session")
def faceaudit_server(tmp_path_factory) -> RunningServer:
    with start_server(tmp_path_factory.mktemp("faceaudit-server") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_database(postgres_url):
    """``new() -> URL``: a --database URL on a schema of its own, for servers that share it."""
    from support.postgres import create_schema, drop_schema, fresh_schema, url_with_schema

    schemas: list[str] = []

    def new() -> str:
        schema = fresh_schema()
        create_schema(postgres_url, schema)
        schemas.append(schema)
        return url_with_schema(postgres_url, schema)

    yield new
    for schema in schemas:
        drop_schema(postgres_url, schema)


@pytest.fixture(scope="session")
def postgres_faceaudit_server(tmp_path_factory, postgres_database) -> RunningServer:
    """Like ``faceaudit_server``, with its collections in PostgreSQL (``--database``)."""
    with start_server(tmp_path_factory.mktemp("faceaudit-pg-server") / "data",
                      extra_args=("--database", postgres_database())) as server:
        yield server


@pytest.fixture(scope="session")
def rekognition(faceaudit_server):
    """A boto3 Rekognition client for the shared server (no retries)."""
    return faceaudit_server.client()


@pytest.fixture
def start_faceaudit_server():
    """``start(data_dir, credentials=(key, secret) | None, extra_args=())``; stopped after the test."""
    started: list[RunningServer] = []

    def start(data_dir, **options) -> RunningServer:
        server = start_server(data_dir, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (needs root: mount), for tests of a full disk (support.disk.fill_disk)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
