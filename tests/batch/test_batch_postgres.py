"""`faceaudit index-folder --database postgresql://...`: the faces land in PostgreSQL (the same
as one IndexFaces request each), a rerun through the command resumes from the ledger, and a
`faceaudit serve` on that database finds them."""

from __future__ import annotations

import json
import subprocess

import pytest
from batch_helpers import assert_same_faces, faces_by_image

from faceaudit.batch import index_images, list_sources
from faceaudit.batch.ledger import Ledger, index_job
from faceaudit.storage import PostgresStore
from support.postgres import create_schema, drop_schema, fresh_schema, url_with_schema
from support.server import faceaudit_command, start_server

pytestmark = pytest.mark.models


@pytest.fixture
def database(postgres_url):
    schema = fresh_schema()
    create_schema(postgres_url, schema)
    yield url_with_schema(postgres_url, schema)
    drop_schema(postgres_url, schema)


def test_the_ledger_of_a_database_is_its_own():
    assert index_job("c") == index_job("c", "embedded") == "index:c"
    one = index_job("c", "postgresql://u:secret@db.example.org/faces")
    assert one == index_job("c", "postgresql://u:other-secret@db.example.org/faces")  # the password is no part
    assert "secret" not in one and one != index_job("c", "postgresql://u:secret@db.example.org/faces2")


def test_index_folder_into_postgresql_resumes_and_a_server_finds_the_faces(
        reference, cluster, image_folder, database, tmp_path):
    sources = list_sources(image_folder)
    want, failures, face_count = reference
    data_dir = tmp_path / "ledger"
    store = PostgresStore(database, pool_size=2)
    ledger = Ledger(data_dir, index_job("c", database))
    try:
        first = index_images(store, "c", sources, cluster, ledger, progress=False, stop_after=4)
    finally:
        ledger.close()
        store.close()
    assert first.processed == 4 and first.stopped

    # The rest through the command, as a user resumes an interrupted job.
    done = subprocess.run([*faceaudit_command(), "index-folder", "c", str(image_folder), "--data-dir", str(data_dir),
                           "--database", database, "--workers", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["already_done"] == 4 and summary["processed"] == len(sources) - 4
    reported = {f["file"]: f["error"] for f in summary["failed"]} | {p: c for p, c, _ in first.failed}
    assert reported == failures

    store = PostgresStore(database, pool_size=1)
    try:
        assert_same_faces(faces_by_image(store), want)
        assert store.describe_collection("c").face_count == face_count
    finally:
        store.close()

    with start_server(tmp_path / "server", extra_args=("--database", database)) as server:
        client = server.client()
        assert client.describe_collection(CollectionId="c")["FaceCount"] == face_count
        for external_id, faces in want.items():
            if len(faces) != 1:
                continue
            source = next(s for s in sources if s.external_image_id == external_id)
            [match, *_] = client.search_faces_by_image(
                CollectionId="c", Image={"Bytes": open(source.path, "rb").read()}, MaxFaces=1)["FaceMatches"]
            assert match["Face"]["ExternalImageId"] == external_id and match["Similarity"] > 99
