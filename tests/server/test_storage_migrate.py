"""`faceaudit storage migrate`: a data folder made through the service, copied into PostgreSQL,
answers the same through a server on that database (the same FaceIds and similarities, the same
listings, users and keys, the search log continued), the folder is left as it was, and a database
that already holds collections is refused. (The accountability data in detail, without models:
tests/batch/test_accountability_migration.py.)"""

from __future__ import annotations

import json
import subprocess

import pytest
from botocore.exceptions import ClientError

from faceaudit.storage import EmbeddedStore
from support.images import encode
from support.server import faceaudit_command

pytestmark = pytest.mark.models


def cli(*args, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([*faceaudit_command(), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr
    return done


def all_pages(call, key, **request):
    items, token = [], None
    while True:
        page = call(**request, **({"NextToken": token} if token else {}))
        items += page[key]
        token = page.get("NextToken")
        if not token:
            return items


def answers(client, photos) -> dict:
    """Everything the migration must keep, as a client sees it."""
    seen: dict = {}
    for cid in client.list_collections()["CollectionIds"]:
        described = client.describe_collection(CollectionId=cid)
        described.pop("ResponseMetadata")
        seen[cid] = {
            "describe": described,
            "faces": all_pages(client.list_faces, "Faces", CollectionId=cid, MaxResults=3),
            "users": all_pages(client.list_users, "Users", CollectionId=cid, MaxResults=2),
            "searches": [[(m["Face"]["FaceId"], m["Similarity"]) for m in client.search_faces_by_image(
                CollectionId=cid, Image={"Bytes": photo}, FaceMatchThreshold=0, MaxFaces=100)["FaceMatches"]]
                for photo in photos],
        }
        face_ids = [f["FaceId"] for f in seen[cid]["faces"]]
        seen[cid]["by_face"] = [[(m["Face"]["FaceId"], m["Similarity"]) for m in client.search_faces(
            CollectionId=cid, FaceId=face_id, FaceMatchThreshold=0, MaxFaces=100)["FaceMatches"]]
            for face_id in face_ids[:3]]
        if seen[cid]["users"]:
            seen[cid]["user_search"] = [(m["User"]["UserId"], m["Similarity"]) for m in client.search_users(
                CollectionId=cid, FaceId=face_ids[0], UserMatchThreshold=0)["UserMatches"]]
    return seen


def test_a_migrated_data_folder_answers_the_same_from_postgresql(
        start_faceaudit_server, postgres_database, faces_dev_root, astronaut_rgb, tmp_path):
    photos = [p.read_bytes() for p in sorted((faces_dev_root / "images" / "lfw").glob("*/*.jpg"))[:5]]
    photos.append(encode(astronaut_rgb, quality=90))
    data_dir = tmp_path / "embedded"
    server = start_faceaudit_server(data_dir)
    client = server.client()
    client.create_collection(CollectionId="people")
    client.create_collection(CollectionId="empty")
    face_ids = []
    for i, photo in enumerate(photos):
        records = client.index_faces(CollectionId="people", Image={"Bytes": photo}, ExternalImageId=f"photo-{i}",
                                     QualityFilter="NONE")["FaceRecords"]
        face_ids += [r["Face"]["FaceId"] for r in records]
    client.delete_faces(CollectionId="people", FaceIds=[face_ids[1]])  # a gap in the rows
    client.create_user(CollectionId="people", UserId="alice")
    client.create_user(CollectionId="people", UserId="nobody")  # a user without faces
    client.associate_faces(CollectionId="people", UserId="alice", FaceIds=face_ids[2:4], UserMatchThreshold=0)
    ops = json.loads(cli("keys", "create", "--data-dir", data_dir, "--name", "ops", "--role", "operator").stdout)
    cli("keys", "create", "--data-dir", data_dir, "--name", "old", "--role", "auditor")
    cli("keys", "revoke", "old", "--data-dir", data_dir)
    cli("moratorium", "set", "--key", "ops", "--reason", "laptop lost", "--data-dir", data_dir)
    before = answers(client, photos)
    server.stop()

    database = postgres_database()
    moved = cli("storage", "migrate", "--data-dir", data_dir, "--database", database, "--quiet",
                "--target-data-dir", tmp_path / "postgres-server")
    summary = json.loads(moved.stdout)
    assert summary["ok"] and summary["problems"] == []
    assert summary["collections"] == {"people": {"faces": len(face_ids) - 1, "users": 2, "associations": 2},
                                      "empty": {"faces": 0, "users": 0, "associations": 0}}
    assert summary["keys"] == 3  # the server's initial key, ops, and the revoked one
    migrated_log = summary["accountability"]["search_log"]["target"]
    assert migrated_log["ok"] and migrated_log["records"] > 0  # the requests above were logged, and came along
    assert "the search log verifies on PostgreSQL" in moved.stderr

    # The folder is as it was: the same answers from it.
    store = EmbeddedStore(data_dir)
    assert store.describe_collection("people").face_count == len(face_ids) - 1
    store.close()
    again = start_faceaudit_server(data_dir)
    assert answers(again.client(), photos) == before
    again.stop()

    # A server on the database (with a data folder of its own, given review.key) answers the same, keys
    # included, and its log is the folder's, continued.
    on_postgres = start_faceaudit_server(tmp_path / "postgres-server", extra_args=("--database", database))
    assert answers(on_postgres.client(), photos) == before
    verified = on_postgres.faceaudit_client().verify_search_log()
    assert verified["Ok"] and verified["Records"] > migrated_log["records"], verified
    assert verified["LogId"] == migrated_log["log_id"]
    operator = on_postgres.client(access_key_id=ops["AccessKey"]["AccessKeyId"],
                                  secret_access_key=ops["AccessKey"]["SecretAccessKey"])
    assert set(operator.list_collections()["CollectionIds"]) == {"people", "empty"}
    with pytest.raises(ClientError) as refused:  # the folder's moratorium on that key holds on PostgreSQL
        operator.search_faces_by_image(CollectionId="people", Image={"Bytes": photos[0]})
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "moratorium" in refused.value.response["Error"]["Message"] and "laptop lost" in str(refused.value)

    # Into a database that holds collections: refused, nothing changed.
    refused = cli("storage", "migrate", "--data-dir", data_dir, "--database", database, "--quiet", expect=2)
    assert "already holds 2 collection(s)" in refused.stderr
    assert answers(on_postgres.client(), photos) == before


def test_migrate_refuses_what_is_not_a_data_folder_or_a_database(tmp_path):
    refused = cli("storage", "migrate", "--data-dir", tmp_path, "--database", "postgresql://x@localhost/db",
                  expect=2)
    assert "holds no embedded store" in refused.stderr
    EmbeddedStore(tmp_path).close()
    refused = cli("storage", "migrate", "--data-dir", tmp_path, "--database", "mysql://x", expect=2)
    assert "a postgresql://" in refused.stderr


def test_revoked_keys_stay_revoked(tmp_path, postgres_database):
    """(Without models.) A revoked key is copied revoked, with its dates."""
    from faceaudit.access import SQLiteKeyStore
    from faceaudit.access.postgres import PostgresKeyStore

    source = SQLiteKeyStore(tmp_path)
    kept = source.create("kept", "admin")
    gone = source.create("gone", "operator")
    source.revoke("gone")
    target = PostgresKeyStore(postgres_database())
    try:
        for key in source.keys(include_revoked=True):
            assert target.restore(source.lookup(key.access_key_id))
        assert target.keys(include_revoked=True) == source.keys(include_revoked=True)
        assert not target.restore(kept)  # already there: nothing changes
        assert target.lookup(gone.key.access_key_id).key.revoked is not None
        with pytest.raises(Exception, match="another secret"):
            target.restore(type(kept)(kept.key, "another-secret"))
    finally:
        target.close()
        source.close()

