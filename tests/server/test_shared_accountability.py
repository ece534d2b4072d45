"""Two ``faceaudit serve`` processes on one PostgreSQL, with data directories of their own (two
hosts): the accountability state, the review queue and the search log are the database's, so a
moratorium set beside one refuses on the other, the real-time budget counts the searches made
through both, a review item opened through one is decided through the other, and every request
of both servers is in one hash chain that verifies, checkpoints signed by each server's own key."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from test_http_accountability import PS, error_of, state_purpose

from faceaudit.accountability.context import REVIEW_ITEM_HEADER
from faceaudit.accountability.policies import PUBLIC_SAFETY
from support.server import faceaudit_command, share_review_key, start_server

pytestmark = pytest.mark.models


def command(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([*faceaudit_command(), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stderr
    return done


@pytest.fixture
def hosts(tmp_path, postgres_database):
    database = postgres_database()
    a = start_server(tmp_path / "a", extra_args=("--database", database))
    try:
        share_review_key(tmp_path / "a", tmp_path / "b")
        b = start_server(tmp_path / "b", extra_args=("--database", database))
    except BaseException:
        a.stop()
        raise
    yield a, b, database
    a.stop()
    b.stop()


def test_two_hosts_share_moratoria_budgets_review_and_one_log(hosts, astronaut_jpeg, tmp_path):
    a, b, database = hosts
    on_a = ("--data-dir", str(a.data_dir), "--database", database)
    on_b = ("--data-dir", str(b.data_dir), "--database", database)

    def key(name: str, role: str, beside=on_a) -> tuple[str, str]:
        made = json.loads(command("keys", "create", "--name", name, "--role", role, *beside).stdout)["AccessKey"]
        return made["AccessKeyId"], made["SecretAccessKey"]

    def client(server, pair, service="rekognition"):
        make = server.client if service == "rekognition" else server.faceaudit_client
        return make(access_key_id=pair[0], secret_access_key=pair[1])

    operator = key("operator-x", "operator")
    collection = f"ps-{uuid.uuid4().hex[:8]}"
    a.client().create_collection(CollectionId=collection, Tags=PS)
    face_id = client(b, operator).index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})[
        "FaceRecords"][0]["Face"]["FaceId"]
    search = {"CollectionId": collection, "Image": {"Bytes": astronaut_jpeg}, "FaceMatchThreshold": 99}
    searchers = [state_purpose(client(server, operator)) for server in (a, b)]
    request_ids = []

    # A moratorium set beside A refuses through B; lifted beside B, A searches again.
    moratorium = json.loads(command("moratorium", "set", "--collection", collection, "--reason", "court order 9",
                                    *on_a).stdout)["Moratorium"]
    code, message, request_id = error_of(searchers[1].search_faces_by_image, **search)
    assert code == "AccessDeniedException" and f"moratorium {moratorium['Id']} on collection {collection}" in message
    request_ids.append(request_id)
    command("moratorium", "lift", str(moratorium["Id"]), *on_b)

    # A search through A opens a review item; one reviewer decides it through B, the other through A.
    answer = searchers[0].search_faces_by_image(**search)
    assert answer["FaceMatches"] == []
    item = answer["ResponseMetadata"]["HTTPHeaders"][REVIEW_ITEM_HEADER]
    request_ids.append(answer["ResponseMetadata"]["RequestId"])
    for server, name in ((b, "first"), (a, "second")):
        reviewer = client(server, key(f"reviewer-{name}", "reviewer"), "faceaudit")
        view = reviewer.get_review_item(ItemId=item)
        assert view["Probe"] and view["Candidates"][0]["Crop"]  # the sealed pictures, from the database
        decided = reviewer.decide_review_item(ItemId=item, Decisions=[
            {"CandidateId": view["Candidates"][0]["CandidateId"], "Decision": "CONFIRM", "Reason": "same face"}])
        request_ids.append(decided["ResponseMetadata"]["RequestId"])
    result = client(b, operator, "faceaudit").get_review_result(ItemId=item)
    assert result["State"] == "RELEASED" and result["ReleasedCandidates"][0]["CandidateId"] == face_id

    # The real-time budget counts the searches made through both servers (one was made above).
    window = PUBLIC_SAFETY.realtime_searches or 0
    for i in range(window - 1):
        request_ids.append(searchers[i % 2].search_faces_by_image(**search)["ResponseMetadata"]["RequestId"])
    code, message, request_id = error_of(searchers[0].search_faces_by_image, **search)
    assert code == "AccessDeniedException" and f"made {window} searches of public-safety collections" in message
    request_ids.append(request_id)

    # One chain holds both servers' requests; it verifies from either data directory.
    for beside in (on_a, on_b):
        verified = json.loads(command("log", "verify", *beside).stdout)
        assert verified["ok"], verified
    export = tmp_path / "log.jsonl"
    command("log", "export", *on_b, "--out", str(export))
    records = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()[1:]]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    logged = {r["request_id"] for r in records}
    assert set(request_ids) <= logged and len(request_ids) == window + 4
    assert {r["kind"] for r in records} >= {"request", "moratorium", "review"}

    # Each server signs its closing checkpoint with its own key; both keys are listed and check.
    a.stop()
    b.stop()
    verified = json.loads(command("log", "verify", *on_a).stdout)
    assert verified["ok"] and verified["checkpoints_checked"] >= 2, verified
    header = json.loads(export.read_text(encoding="utf-8").splitlines()[0])
    assert len(header["public_keys"]) == 2
    assert not (a.data_dir / "searchlog.db").exists() and not (b.data_dir / "accountability.db").exists()
