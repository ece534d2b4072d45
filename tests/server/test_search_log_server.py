"""The search log of a real `faceaudit serve` under load: 8 clients at once, then SIGKILL mid-search.

Afterwards the log is one unbroken chain, and every request whose answer reached a client --
searches, cheap reads and denials alike -- is in it under its RequestId. On both backends:
the data directory's searchlog.db, or the tables of ``--database postgresql://...``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from faceaudit.accountability.searchlog import read_data_dir
from support.server import faceaudit_command, start_server

pytestmark = pytest.mark.models  # the server it starts loads the face models


def create_key(data_dir, name: str, role: str, unit: str | None = None, *,
               database: str | None = None) -> tuple[str, str]:
    """`faceaudit keys create` as an admin runs it: (access key id, secret)."""
    done = subprocess.run([*faceaudit_command(), "keys", "create", "--data-dir", str(data_dir), "--name", name,
                           "--role", role, *(["--unit", unit] if unit else []),
                           *(["--database", database] if database else [])],
                          capture_output=True, text=True, timeout=60, check=True)
    key = json.loads(done.stdout)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_eight_clients_and_a_sigkill_mid_search_leave_one_chain_with_every_answer(tmp_path, astronaut_jpeg,
                                                                                  backend, request):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = request.getfixturevalue("postgres_database")() if backend == "postgres" else None
    serve = ("--database", database) if database else ()
    operator = create_key(data_dir, "analyst", "operator", database=database)
    auditor = create_key(data_dir, "overseer", "auditor", database=database)
    answered: dict[str, str] = {}  # RequestId -> what it was
    lock = threading.Lock()
    stop = threading.Event()
    searches_in_flight = [0]

    with start_server(data_dir, extra_args=serve) as server:
        admin = server.client()
        admin.create_collection(CollectionId="watch")
        face_id = admin.index_faces(CollectionId="watch", Image={"Bytes": astronaut_jpeg},
                                    MaxFaces=1)["FaceRecords"][0]["Face"]["FaceId"]

        def client_loop(n: int) -> None:
            key = auditor if n == 7 else operator
            client = server.client(access_key_id=key[0], secret_access_key=key[1], connect_timeout=5,
                                   read_timeout=60)
            i = 0
            while not stop.is_set():
                i += 1
                search = n in (0, 1)  # two clients search by image; the rest make cheap calls
                try:
                    if search:
                        with lock:
                            searches_in_flight[0] += 1
                        try:
                            answer = client.search_faces_by_image(
                                CollectionId="watch", Image={"Bytes": astronaut_jpeg}, FaceMatchThreshold=95,
                                MaxFaces=5)
                        finally:
                            with lock:
                                searches_in_flight[0] -= 1
                        what = "SearchFacesByImage"
                        assert answer["FaceMatches"][0]["Face"]["FaceId"] == face_id
                    elif i % 3 == 0:
                        answer = client.search_faces(CollectionId="watch", FaceId=face_id, MaxFaces=3)
                        what = "SearchFaces"
                    elif i % 3 == 1:
                        answer = client.list_collections()
                        what = "ListCollections"
                    else:
                        answer = client.describe_collection(CollectionId="watch")
                        what = "DescribeCollection"
                except ClientError as error:  # a denial (the auditor's calls): answered, so logged
                    answer, what = error.response, "denied"
                except BotoCoreError:  # the server died under us
                    return
                with lock:
                    answered[answer["ResponseMetadata"]["RequestId"]] = what

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client_loop, n) for n in range(8)]
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with lock:
                    searched = sum(1 for w in answered.values() if w == "SearchFacesByImage")
                    ready = len(answered) >= 150 and searched >= 3 and searches_in_flight[0] > 0
                if ready:
                    break
                time.sleep(0.01)
            server.process.kill()  # SIGKILL, with a search in flight
            server.process.wait()
            stop.set()
            for future in futures:
                future.result(timeout=120)

    whats = list(answered.values())
    assert whats.count("SearchFacesByImage") >= 3 and whats.count("denied") >= 5 and len(answered) >= 150
    contents = read_data_dir(data_dir, database)
    verification = contents.verify()
    assert verification.ok, verification.problem
    records = {r["request_id"]: r for r in contents.records() if r["kind"] == "request"}
    missing = [(rid, what) for rid, what in answered.items() if rid not in records]
    assert missing == []
    for rid, what in answered.items():
        record = records[rid]
        if what == "SearchFacesByImage":
            assert record["key"]["name"] == "analyst" and record["collection"] == "watch"
            assert record["parameters"]["FaceMatchThreshold"] == 95 and record["parameters"]["MaxFaces"] == 5
            assert [m["FaceId"] for m in record["matches"]] == [face_id] and len(record["image_sha256"]) == 1
        elif what == "denied":
            assert record["key"]["role"] == "auditor" and record["error"] == "AccessDeniedException"

    # The chain goes on after the restart, from where the killed server left it.
    with start_server(data_dir, extra_args=serve) as restarted:
        rid = restarted.client().list_collections()["ResponseMetadata"]["RequestId"]
    after = read_data_dir(data_dir, database)
    assert after.verify().ok
    assert any(r["request_id"] == rid for r in after.records())
