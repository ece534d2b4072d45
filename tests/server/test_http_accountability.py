"""Use policies, moratoria, budgets and collection tags through boto3, against real servers.

Two kinds of server:

* `faceaudit serve` processes (support.server), exactly as deployed: the floor, the signed
  purpose, the MaxFaces cap, tags and the policy tag's admin rule, moratoria switched by the
  `faceaudit moratorium` command while two servers share the data directory; and the whole
  road of a public-safety search: no candidates at first, two blind reviews, then the
  confirmed candidate released to the searcher as an investigative lead.
* the same app (RekognitionApp over GuardedService over the real engine and store) served
  by uvicorn in this process with a review queue defined here, to show what a search that
  passes looks like: no candidates, a review item header, the candidates handed to review;
  and the budgets.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import botocore.exceptions
import pytest
from test_http_access import create_key

from faceaudit.access import SQLiteKeyStore
from faceaudit.accountability.context import REVIEW_ITEM_HEADER
from faceaudit.accountability.guard import GuardedService
from faceaudit.accountability.policies import POLICIES, POLICY_TAG, PUBLIC_SAFETY
from faceaudit.accountability.state import AccountabilityState
from faceaudit.rekognition.service import RekognitionService
from faceaudit.server.access import StoreKeys
from faceaudit.server.app import RekognitionApp
from faceaudit.similarity import GroupFalseMatchRates
from faceaudit.storage import EmbeddedStore
from support.server import faceaudit_command, start_server

pytestmark = pytest.mark.models  # servers load the face models

PURPOSE, CASE = "identify the suspect of a burglary", "CASE-2026-0042"
PS = {POLICY_TAG: "public-safety"}


def cli(*args: str | Path, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([*faceaudit_command(), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stderr
    return done


def state_purpose(client, purpose: str | None = PURPOSE, case: str | None = CASE, *, event: str = "before-sign"):
    """Add the purpose and case headers to every request of ``client``: in a ``before-sign`` hook
    they are signed (what docs/accountability.md tells users to do); ``before-send`` adds them
    after signing, unsigned."""
    def add_headers(request, **kwargs):
        if purpose is not None:
            request.headers["x-faceaudit-purpose"] = purpose
        if case is not None:
            request.headers["x-faceaudit-case"] = case

    client.meta.events.register(f"{event}.rekognition", add_headers)
    return client


def error_of(call, *args, **kwargs) -> tuple[str, str, str]:
    """(code, message, request id) of a call that must fail."""
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(*args, **kwargs)
    response = raised.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["RequestId"]


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ faceaudit serve, as deployed


class Deployed:
    def __init__(self, server, keys: dict[str, tuple[str, str]]):
        self.server, self.keys = server, keys
        self.admin = server.client()
        self.operator, self.auditor = (self.client(role) for role in ("operator", "auditor"))

    def client(self, role: str):
        key, secret = self.keys[role]
        return self.server.client(access_key_id=key, secret_access_key=secret)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    data = tmp_path_factory.mktemp("policies") / "data"
    with start_server(data) as server:
        yield Deployed(server, {role: create_key(data, f"{role}-p", role) for role in ("operator", "auditor")})


def signed_operator(deployed: Deployed, **purpose):
    return state_purpose(deployed.client("operator"), **purpose)


def test_a_public_safety_search_at_80_is_refused_with_the_floor_and_each_groups_measured_rate(
        deployed, astronaut_jpeg):
    collection = fresh("ps")
    created = deployed.admin.create_collection(CollectionId=collection, Tags=PS)
    client = signed_operator(deployed)
    code, message, request_id = error_of(client.search_faces_by_image, CollectionId=collection,
                                         Image={"Bytes": astronaut_jpeg}, FaceMatchThreshold=80)
    assert code == "InvalidParameterException"
    assert "FaceMatchThreshold 80 is below the floor of 99" in message and "not raised for you" in message
    rates = GroupFalseMatchRates.for_model_version(created["FaceModelVersion"])
    assert rates is not None
    for group, row in rates.thresholds["80"].items():  # the table of the collection's own engine
        assert f"{group} {row['rate']:.2%} [{row['ci95'][0]:.2%}, {row['ci95'][1]:.2%}]" in message
    line = deployed.server.log_for(request_id)
    assert "dispatched=yes" in line and 'reason="FaceMatchThreshold 80 below the floor 99 of public-safety"' in line

    # No threshold is Rekognition's default 80: refused too, saying so, never raised silently.
    code, message, _ = error_of(client.search_faces, CollectionId=collection,
                                FaceId="11111111-2222-3333-4444-555555555555")
    assert code == "InvalidParameterException" and "was not given, and Rekognition's default is 80" in message
    code, message, _ = error_of(client.search_users_by_image, CollectionId=collection,
                                Image={"Bytes": astronaut_jpeg}, UserMatchThreshold=90)
    assert code == "InvalidParameterException"
    assert "UserMatchThreshold 90 is below the floor of 99" in message and "between the rates measured at 95" in message


def test_at_99_a_search_needs_a_signed_purpose_and_case(deployed, astronaut_jpeg):
    collection = fresh("ps")
    deployed.admin.create_collection(CollectionId=collection, Tags=PS)
    search = {"CollectionId": collection, "Image": {"Bytes": astronaut_jpeg}, "FaceMatchThreshold": 99}

    code, message, request_id = error_of(deployed.operator.search_faces_by_image, **search)
    assert code == "AccessDeniedException"
    assert "x-faceaudit-purpose, x-faceaudit-case" in message and "before-sign" in message
    assert 'reason="no signed x-faceaudit-purpose and x-faceaudit-case"' in deployed.server.log_for(request_id)

    unsigned = signed_operator(deployed, event="before-send")  # the same headers, added after signing
    code, message, _ = error_of(unsigned.search_faces_by_image, **search)
    assert code == "AccessDeniedException" and "x-faceaudit-purpose, x-faceaudit-case" in message

    code, message, _ = error_of(signed_operator(deployed, case=None).search_faces_by_image, **search)
    assert code == "AccessDeniedException" and "missing or not covered by the signature: x-faceaudit-case." in message

    # Signed, every rule is met: accepted, but the candidates go to review, not to the operator.
    answer = signed_operator(deployed).search_faces_by_image(**search)
    assert answer["FaceMatches"] == []
    assert answer["ResponseMetadata"]["HTTPHeaders"].get(REVIEW_ITEM_HEADER)


def test_max_faces_above_the_cap_is_refused_saying_so(deployed, astronaut_jpeg):
    collection = fresh("ps")
    deployed.admin.create_collection(CollectionId=collection, Tags=PS)
    client = signed_operator(deployed)
    code, message, _ = error_of(client.search_faces_by_image, CollectionId=collection,
                                Image={"Bytes": astronaut_jpeg}, FaceMatchThreshold=99, MaxFaces=11)
    assert code == "InvalidParameterException"
    assert "MaxFaces 11 is above the cap of 10 set by the use policy public-safety of collection" in message
    answer = client.search_faces_by_image(CollectionId=collection, Image={"Bytes": astronaut_jpeg},
                                          FaceMatchThreshold=99, MaxFaces=10)  # 10 passes the cap
    assert answer["FaceMatches"] == [] and REVIEW_ITEM_HEADER in answer["ResponseMetadata"]["HTTPHeaders"]


def test_a_public_safety_match_reaches_the_searcher_only_after_two_blind_reviews(deployed, astronaut_jpeg):
    collection = fresh("ps")
    deployed.admin.create_collection(CollectionId=collection, Tags=PS)
    indexed = deployed.operator.index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg},
                                            ExternalImageId="astronaut")
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    searcher = signed_operator(deployed)
    answer = searcher.search_faces_by_image(CollectionId=collection, Image={"Bytes": astronaut_jpeg},
                                            FaceMatchThreshold=99, MaxFaces=5)
    assert answer["FaceMatches"] == []  # nothing for the operator before review
    item = answer["ResponseMetadata"]["HTTPHeaders"][REVIEW_ITEM_HEADER]

    operator_review = deployed.server.faceaudit_client(
        access_key_id=deployed.keys["operator"][0], secret_access_key=deployed.keys["operator"][1])
    assert operator_review.get_review_result(ItemId=item)["ReleasedCandidates"] == []
    code, _, _ = error_of(operator_review.get_review_item, ItemId=item)  # operators never review
    assert code == "AccessDeniedException"

    for name in ("first", "second"):
        key, secret = create_key(deployed.server.data_dir, f"reviewer-{name}-{uuid.uuid4().hex[:6]}", "reviewer")
        reviewer = deployed.server.faceaudit_client(access_key_id=key, secret_access_key=secret)
        view = reviewer.get_review_item(ItemId=item)
        assert view["Probe"] and len(view["Candidates"]) == 1 and view["Candidates"][0]["Crop"]
        assert "Similarity" not in view["Candidates"][0] and "Rank" not in view["Candidates"][0]
        decided = reviewer.decide_review_item(ItemId=item, Decisions=[
            {"CandidateId": view["Candidates"][0]["CandidateId"], "Decision": "CONFIRM",
             "Reason": "same scar above the left eyebrow, same ear shape"}])
        assert decided["Revealed"][0]["Similarity"] >= 99  # the score only after the decision

    result = operator_review.get_review_result(ItemId=item)
    assert result["State"] == "RELEASED"
    assert [(c["CandidateId"], c["Label"]) for c in result["ReleasedCandidates"]] == [
        (face_id, "investigative lead — not an identification")]


def test_personal_and_access_control_keep_rekognitions_defaults(deployed, astronaut_jpeg):
    for policy in ("personal", "access-control"):
        collection = fresh(policy)
        deployed.admin.create_collection(CollectionId=collection, Tags={POLICY_TAG: policy})
        deployed.operator.index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})
        found = deployed.operator.search_faces_by_image(CollectionId=collection, Image={"Bytes": astronaut_jpeg})
        assert len(found["FaceMatches"]) == 1  # at the default 80, no purpose, no review


def test_tags_round_trip_and_go_with_the_collection(deployed):
    collection = fresh("tags")
    arn = deployed.admin.create_collection(CollectionId=collection,
                                           Tags={POLICY_TAG: "personal", "team": "a"})["CollectionArn"]
    assert deployed.operator.list_tags_for_resource(ResourceArn=arn)["Tags"] == {POLICY_TAG: "personal", "team": "a"}
    deployed.operator.tag_resource(ResourceArn=arn, Tags={"team": "b", "site": "north"})
    deployed.operator.untag_resource(ResourceArn=arn, TagKeys=["site", "never-set"])
    assert deployed.auditor.list_tags_for_resource(ResourceArn=arn)["Tags"] == {POLICY_TAG: "personal", "team": "b"}
    deployed.admin.delete_collection(CollectionId=collection)
    code, _, _ = error_of(deployed.admin.list_tags_for_resource, ResourceArn=arn)
    assert code == "ResourceNotFoundException"
    again = deployed.admin.create_collection(CollectionId=collection)["CollectionArn"]
    assert deployed.admin.list_tags_for_resource(ResourceArn=again)["Tags"] == {}  # nothing left behind
    code, _, _ = error_of(deployed.admin.tag_resource, ResourceArn=arn.replace(collection, fresh("absent")),
                          Tags={"a": "b"})
    assert code == "ResourceNotFoundException"
    code, _, _ = error_of(deployed.admin.tag_resource, ResourceArn=again, Tags={"aws:owner": "x"})
    assert code == "InvalidParameterException"


def test_only_an_admin_key_sets_changes_or_removes_the_policy_tag(deployed):
    collection = fresh("owned")
    arn = deployed.admin.create_collection(CollectionId=collection, Tags=PS)["CollectionArn"]
    for call, kwargs in ((deployed.operator.tag_resource, {"Tags": {POLICY_TAG: "personal"}}),
                         (deployed.operator.untag_resource, {"TagKeys": [POLICY_TAG]})):
        code, message, request_id = error_of(call, ResourceArn=arn, **kwargs)
        assert code == "AccessDeniedException"
        assert "'operator-p' (role operator) may not" in message and POLICY_TAG in message
        assert "error=AccessDeniedException" in deployed.server.log_for(request_id)
    assert deployed.admin.list_tags_for_resource(ResourceArn=arn)["Tags"] == PS
    code, _, _ = error_of(deployed.admin.tag_resource, ResourceArn=arn, Tags={POLICY_TAG: "lenient"})
    assert code == "InvalidParameterException"
    deployed.admin.tag_resource(ResourceArn=arn, Tags={POLICY_TAG: "personal"})
    assert deployed.operator.list_tags_for_resource(ResourceArn=arn)["Tags"] == {POLICY_TAG: "personal"}
    deployed.admin.untag_resource(ResourceArn=arn, TagKeys=[POLICY_TAG])
    assert deployed.operator.list_tags_for_resource(ResourceArn=arn)["Tags"] == {}


def test_an_unknown_policy_creates_no_collection(deployed):
    collection = fresh("bad")
    code, message, _ = error_of(deployed.admin.create_collection, CollectionId=collection,
                                Tags={POLICY_TAG: "public_safety"})
    assert code == "InvalidParameterException" and "public-safety, access-control, personal" in message
    assert error_of(deployed.admin.describe_collection, CollectionId=collection)[0] == "ResourceNotFoundException"


def test_a_moratorium_refuses_on_every_server_of_the_data_dir_and_once_lifted_allows(
        tmp_path, start_faceaudit_server, astronaut_jpeg):
    data = tmp_path / "data"
    servers = [start_faceaudit_server(data), start_faceaudit_server(data)]
    key, secret = create_key(data, "dana", "operator")
    operators = [s.client(access_key_id=key, secret_access_key=secret) for s in servers]
    admin = servers[0].client()
    collection = fresh("m")
    admin.create_collection(CollectionId=collection)
    operators[0].index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})
    search = {"CollectionId": collection, "Image": {"Bytes": astronaut_jpeg}}
    for op in operators:
        assert len(op.search_faces_by_image(**search)["FaceMatches"]) == 1

    set_ = json.loads(cli("moratorium", "set", "--collection", collection, "--reason", "court order 17",
                          "--data-dir", data).stdout)["Moratorium"]
    for server, op in zip(servers, operators):
        code, message, request_id = error_of(op.search_faces_by_image, **search)
        assert code == "AccessDeniedException"
        assert (f"moratorium {set_['Id']} on collection {collection}, in force since {set_['SetAt']}: "
                "court order 17") in message
        assert f'reason="moratorium {set_["Id"]} (collection {collection})"' in server.log_for(request_id)
    assert admin.describe_collection(CollectionId=collection)["FaceCount"] == 1  # only searches stop
    listed = json.loads(cli("moratorium", "list", "--data-dir", data).stdout)["Moratoria"]
    assert [m["Id"] for m in listed] == [set_["Id"]]

    cli("moratorium", "lift", str(set_["Id"]), "--data-dir", data)
    for op in operators:
        assert len(op.search_faces_by_image(**search)["FaceMatches"]) == 1

    # One key, and a whole policy class.
    on_key = json.loads(cli("moratorium", "set", "--key", "dana", "--reason", "under investigation",
                            "--data-dir", data).stdout)["Moratorium"]
    assert "the key 'dana'" in error_of(operators[1].search_faces_by_image, **search)[1]
    assert len(admin.search_faces_by_image(**search)["FaceMatches"]) == 1  # other keys search on
    cli("moratorium", "lift", str(on_key["Id"]), "--data-dir", data)
    cli("policy", "set", collection, "personal", "--data-dir", data)
    cli("moratorium", "set", "--policy", "personal", "--reason", "review of the policy", "--data-dir", data)
    assert "the use policy personal" in error_of(operators[1].search_faces_by_image, **search)[1]
    cli("moratorium", "lift", "99", "--data-dir", data, expect=2)


def test_policy_set_on_the_command_line_applies_to_running_servers(deployed, astronaut_jpeg):
    collection = fresh("cli")
    deployed.admin.create_collection(CollectionId=collection)
    shown = json.loads(cli("policy", "set", collection, "public-safety", "--data-dir", deployed.server.data_dir).stdout)
    assert shown == {"CollectionId": collection, "Policy": "public-safety", "Previous": None}
    code, message, _ = error_of(deployed.operator.search_faces_by_image, CollectionId=collection,
                                Image={"Bytes": astronaut_jpeg})
    assert code == "InvalidParameterException" and "floor of 99" in message
    show = json.loads(cli("policy", "show", collection, "--data-dir", deployed.server.data_dir).stdout)
    assert show["Policy"] == "public-safety" and show["Rules"]["ThresholdFloor"] == 99.0
    cli("policy", "clear", collection, "--data-dir", deployed.server.data_dir)
    arn = deployed.admin.describe_collection(CollectionId=collection)["CollectionARN"]
    assert deployed.admin.list_tags_for_resource(ResourceArn=arn)["Tags"] == {}
    refused = cli("policy", "set", fresh("absent"), "personal", "--data-dir", deployed.server.data_dir, expect=2)
    assert "does not exist" in refused.stderr


# ------------------------------------------------------------------ in process, with a review queue


class MemoryReviewQueue:
    """The ReviewQueue protocol, kept in memory (faceaudit.accountability.review is the real one)."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self.crops: dict[str, tuple[str, str]] = {}  # FaceId -> (collection, sha256 of the image)
        self.forgotten: list[tuple[str, object]] = []

    def requires_review(self, policy: str) -> int:
        return 2 if policy == "public-safety" else 0

    def open_item(self, caller, collection_id, policy, probe, response, facts) -> str:
        item = f"item-{len(self.items) + 1}"
        matches = response.get("FaceMatches") or response.get("UserMatches") or []
        self.items[item] = {"key": caller.key.name, "collection": collection_id, "policy": policy,
                            "probe": hashlib.sha256(probe).hexdigest() if probe else None,
                            "candidates": [(m["Face"]["FaceId"], m["Similarity"]) for m in matches],
                            "facts": facts}
        return item

    def keep_face_crops(self, collection_id, image, faces) -> None:
        for face in faces:
            self.crops[face["Face"]["FaceId"]] = (collection_id, hashlib.sha256(image).hexdigest())

    def forget_faces(self, collection_id, face_ids) -> None:
        self.forgotten.append((collection_id, list(face_ids)))

    def forget_collection(self, collection_id) -> None:
        self.forgotten.append((collection_id, "all"))


class InProcess:
    def __init__(self, url: str, keys: dict, queue: MemoryReviewQueue):
        self.url, self.keys, self.queue = url, keys, queue

    def client(self, role: str, *, signed: bool = True):
        """A boto3 client of ``role``'s key, stating PURPOSE and CASE in signed headers unless not ``signed``."""
        import boto3
        import botocore.config
        key = self.keys[role]
        client = boto3.client("rekognition", endpoint_url=self.url, region_name="us-east-1",
                              aws_access_key_id=key.key.access_key_id, aws_secret_access_key=key.secret_access_key,
                              config=botocore.config.Config(retries={"max_attempts": 1}))
        return state_purpose(client) if signed else client


@pytest.fixture
def in_process(tmp_path, engine):
    """``start(policies=POLICIES)``: the app `faceaudit serve` builds, with a review queue, under uvicorn."""
    import uvicorn
    started = []

    def start(policies=POLICIES) -> InProcess:
        data = tmp_path / f"data-{len(started)}"
        keystore = SQLiteKeyStore(data)
        keys = {role: keystore.create(f"{role}-i", role) for role in ("admin", "operator")}
        keys["other"] = keystore.create("other-i", "operator")
        store, queue = EmbeddedStore(data), MemoryReviewQueue()
        guard = GuardedService(RekognitionService(engine, store), AccountabilityState(data), review_queue=queue,
                               policies=policies)
        app = RekognitionApp(guard, StoreKeys(keystore), threads=2,
                             on_shutdown=[store.close, keystore.close, guard.close])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.02)
        started.append((server, thread, app, sock))
        return InProcess(f"http://127.0.0.1:{sock.getsockname()[1]}", keys, queue)

    yield start
    for server, thread, app, sock in started:
        server.should_exit = True
        thread.join(30)
        app.close()
        sock.close()


def test_a_signed_search_at_99_is_accepted_and_its_candidates_go_to_review_not_to_the_operator(
        in_process, astronaut_jpeg):
    site = in_process()
    admin, operator = site.client("admin"), site.client("operator")
    collection = fresh("ps")
    arn = admin.create_collection(CollectionId=collection, Tags=PS)["CollectionArn"]
    indexed = operator.index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    assert site.queue.crops[face_id] == (collection, hashlib.sha256(astronaut_jpeg).hexdigest())

    answer = operator.search_faces_by_image(CollectionId=collection, Image={"Bytes": astronaut_jpeg},
                                            FaceMatchThreshold=99)
    assert answer["FaceMatches"] == [] and answer["SearchedFaceBoundingBox"]
    item = answer["ResponseMetadata"]["HTTPHeaders"][REVIEW_ITEM_HEADER]
    opened = site.queue.items[item]
    assert opened["key"] == "operator-i" and opened["policy"] == "public-safety"
    assert opened["probe"] == hashlib.sha256(astronaut_jpeg).hexdigest()
    ((candidate, similarity),) = opened["candidates"]
    assert candidate == face_id and similarity >= 99
    facts = opened["facts"]  # what the search log will record
    assert (facts.purpose, facts.case, facts.collection, facts.policy) == (PURPOSE, CASE, collection, "public-safety")
    assert facts.image_sha256 == [hashlib.sha256(astronaut_jpeg).hexdigest()]
    assert facts.parameters == {"FaceMatchThreshold": 99.0, "MaxFaces": 10}
    assert facts.matches == [{"FaceId": face_id, "Similarity": similarity}] and facts.review_item == item

    by_id = operator.search_faces(CollectionId=collection, FaceId=face_id, FaceMatchThreshold=99.5)
    assert by_id["FaceMatches"] == [] and REVIEW_ITEM_HEADER in by_id["ResponseMetadata"]["HTTPHeaders"]

    # Deleting faces and the collection tells review to purge what it kept; the tags go too.
    admin.delete_faces(CollectionId=collection, FaceIds=[face_id])
    admin.delete_collection(CollectionId=collection)
    assert site.queue.forgotten == [(collection, [face_id]), (collection, "all")]
    again = admin.create_collection(CollectionId=collection)["CollectionArn"]
    assert again == arn and admin.list_tags_for_resource(ResourceArn=arn)["Tags"] == {}


def test_the_daily_budget_refuses_the_search_after_the_last(in_process, astronaut_jpeg):
    small = {**POLICIES, "public-safety": replace(PUBLIC_SAFETY, daily_searches_per_key=3, realtime_searches=None)}
    site = in_process(small)
    collection = fresh("ps")
    site.client("admin").create_collection(CollectionId=collection, Tags=PS)
    operator = site.client("operator")
    face_id = operator.index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})["FaceRecords"][0][
        "Face"]["FaceId"]
    search = {"CollectionId": collection, "FaceId": face_id, "FaceMatchThreshold": 99}
    for _ in range(3):
        assert operator.search_faces(**search)["FaceMatches"] == []
    code, message, _ = error_of(operator.search_faces, **search)
    assert code == "AccessDeniedException"
    assert "'operator-i' has used its daily budget of 3 searches of public-safety collections" in message
    refused_early = error_of(site.client("operator").search_faces, **{**search, "FaceMatchThreshold": 80})
    assert refused_early[0] == "InvalidParameterException"  # rules come first: a refusal spends nothing
    assert site.client("other").search_faces(**search)["FaceMatches"] == []  # another key has its own
    assert len(site.queue.items) == 4  # 3 of the operator's, 1 of the other key's, none for refusals


def test_a_real_time_pattern_is_refused(in_process, astronaut_jpeg):
    site = in_process()
    collection = fresh("ps")
    site.client("admin").create_collection(CollectionId=collection, Tags=PS)
    operator = site.client("operator")
    face_id = operator.index_faces(CollectionId=collection, Image={"Bytes": astronaut_jpeg})["FaceRecords"][0][
        "Face"]["FaceId"]
    search = {"CollectionId": collection, "FaceId": face_id, "FaceMatchThreshold": 99}
    for _ in range(PUBLIC_SAFETY.realtime_searches or 0):
        operator.search_faces(**search)
    code, message, _request_id = error_of(operator.search_faces, **search)
    assert code == "AccessDeniedException"
    assert "'operator-i' made 6 searches of public-safety collections in the last 60 s (at most 6)" in message
    assert "real-time identification" in message and "Next search possible in" in message
    unsigned = site.client("operator", signed=False)
    assert error_of(unsigned.search_faces, **search)[0] == "AccessDeniedException"


def test_a_moratorium_on_a_key_or_collection_that_does_not_exist_is_refused(deployed):
    data = deployed.server.data_dir
    refused = cli("moratorium", "set", "--key", "operator-q", "--reason", "typo", "--data-dir", data, expect=2)
    assert "no key has ever been named 'operator-q'" in refused.stderr
    refused = cli("moratorium", "set", "--collection", fresh("absent"), "--reason", "typo", "--data-dir", data,
                  expect=2)
    assert "does not exist" in refused.stderr
    assert json.loads(cli("moratorium", "list", "--all", "--data-dir", data).stdout)["Moratoria"] == []
