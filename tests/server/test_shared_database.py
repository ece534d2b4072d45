"""Two ``faceaudit serve`` processes on one PostgreSQL: each sees the other's writes on its next
request, concurrent IndexFaces and DeleteFaces through both lose no acknowledged write, and
the keys are in that database too (a key made or revoked once holds on both)."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from support.images import encode
from support.server import faceaudit_command, share_review_key, start_server

INDEXERS_PER_SERVER = 2
INDEXED_PER_THREAD = 5


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, postgres_database):
    """Servers A and B: separate data folders (credentials.json), one --database (faces and
    keys), shared by this module's tests (which use distinct collections)."""
    database = postgres_database()
    folder = tmp_path_factory.mktemp("two-servers")
    a = start_server(folder / "a", extra_args=("--database", database))
    try:
        share_review_key(folder / "a", folder / "b")  # the review pictures in the database are sealed with it
        b = start_server(folder / "b", extra_args=("--database", database))
    except BaseException:
        a.stop()
        raise
    a.database = b.database = database  # type: ignore[attr-defined]
    yield a, b
    a.stop()
    b.stop()


def everything_found(client, collection_id, photo) -> set[str]:
    """Every FaceId a search by ``photo`` with no threshold returns (every face of the collection)."""
    response = client.search_faces_by_image(CollectionId=collection_id, Image={"Bytes": photo},
                                            FaceMatchThreshold=0, MaxFaces=4096)
    return {match["Face"]["FaceId"] for match in response["FaceMatches"]}


def listed(client, collection_id) -> set[str]:
    ids, token = set(), None
    while True:
        page = client.list_faces(CollectionId=collection_id, MaxResults=100,
                                 **({"NextToken": token} if token else {}))
        ids |= {face["FaceId"] for face in page["Faces"]}
        token = page.get("NextToken")
        if not token:
            return ids


def test_a_face_indexed_through_one_server_is_found_through_the_other(two_servers, astronaut_jpeg):
    a, b = (server.client() for server in two_servers)
    a.create_collection(CollectionId="shared")
    assert "shared" in b.list_collections()["CollectionIds"]
    [record] = a.index_faces(CollectionId="shared", Image={"Bytes": astronaut_jpeg}, MaxFaces=1)["FaceRecords"]
    face_id = record["Face"]["FaceId"]
    [match] = b.search_faces_by_image(CollectionId="shared", Image={"Bytes": astronaut_jpeg})["FaceMatches"]
    assert match["Face"]["FaceId"] == face_id and match["Similarity"] > 99
    assert b.describe_collection(CollectionId="shared")["FaceCount"] == 1
    b.delete_faces(CollectionId="shared", FaceIds=[face_id])
    assert a.search_faces_by_image(CollectionId="shared", Image={"Bytes": astronaut_jpeg})["FaceMatches"] == []


def test_concurrent_index_and_delete_through_both_servers_lose_nothing(two_servers, astronaut_rgb):
    servers = two_servers
    servers[0].client().create_collection(CollectionId="busy")
    # distinct images (each JPEG quality gives other bytes, one face each)
    photos = [encode(astronaut_rgb, quality=60 + i) for i in range(INDEXERS_PER_SERVER * 2 * INDEXED_PER_THREAD)]
    acknowledged: list[str] = []
    deleted: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(INDEXERS_PER_SERVER * 2 + 2)
    indexing_done = threading.Event()

    def indexer(server, share):
        client = server.client()
        ready.wait()
        for photo in share:
            records = client.index_faces(CollectionId="busy", Image={"Bytes": photo}, MaxFaces=1,
                                         QualityFilter="NONE")["FaceRecords"]
            with lock:
                acknowledged.extend(r["Face"]["FaceId"] for r in records)

    def deleter(server, parity):
        """Deletes, through its server, every other face acknowledged so far (by the other's or its own)."""
        client = server.client()
        ready.wait()
        while True:
            finished = indexing_done.is_set()
            with lock:
                doomed = [f for i, f in enumerate(acknowledged) if i % 4 == parity and f not in deleted]
            if doomed:
                response = client.delete_faces(CollectionId="busy", FaceIds=doomed)
                assert not response.get("UnsuccessfulFaceDeletions"), response
                with lock:
                    deleted.extend(response["DeletedFaces"])
            if finished:
                return

    shares = [photos[i::INDEXERS_PER_SERVER * 2] for i in range(INDEXERS_PER_SERVER * 2)]
    with ThreadPoolExecutor(len(shares) + 2) as pool:
        indexers = [pool.submit(indexer, servers[i % 2], share) for i, share in enumerate(shares)]
        # server A deletes faces 0, 4, 8...; server B faces 1, 5, 9... of the acknowledged list
        deleters = [pool.submit(deleter, servers[0], 0), pool.submit(deleter, servers[1], 1)]
        for future in indexers:
            future.result(timeout=600)
        indexing_done.set()
        for future in deleters:
            future.result(timeout=120)

    assert len(acknowledged) == len(photos) == len(set(acknowledged))
    assert len(deleted) == len(set(deleted)) == sum(1 for i in range(len(acknowledged)) if i % 4 in (0, 1))
    kept = set(acknowledged) - set(deleted)
    probe = photos[0]
    for server in servers:
        client = server.client()
        assert everything_found(client, "busy", probe) == kept
        assert listed(client, "busy") == kept
        assert client.describe_collection(CollectionId="busy")["FaceCount"] == len(kept)


def keys_command(server, *arguments) -> subprocess.CompletedProcess:
    return subprocess.run([*faceaudit_command(), "keys", *arguments, "--data-dir", str(server.data_dir),
                           "--database", server.database], capture_output=True, text=True, timeout=120,
                          check=True)


def test_a_key_made_and_revoked_beside_one_server_holds_on_the_other(two_servers):
    a, b = two_servers
    made = json.loads(keys_command(a, "create", "--name", "ops", "--role", "operator").stdout)["AccessKey"]
    pair = {"access_key_id": made["AccessKeyId"], "secret_access_key": made["SecretAccessKey"]}
    assert "CollectionIds" in b.client(**pair).list_collections()
    keys_command(a, "revoke", "ops")
    with pytest.raises(ClientError) as refused:
        b.client(**pair).list_collections()
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"
