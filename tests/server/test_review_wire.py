"""faceaudit's own review operations (FaceAuditService.*) through boto3 against a real `faceaudit serve`.

Items are opened directly through ReviewStore on the server's data directory (what the
guard does for a search under a review policy), with keys made in its key store while it
runs; everything a reviewer or searcher does then goes over the wire. On both backends: the
data directory's files, or the tables of the server's ``--database postgresql://...``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import botocore.exceptions
import numpy as np
import pytest

from faceaudit.access import SQLiteKeyStore
from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, Caller, Facts
from faceaudit.accountability.review import LEAD_LABEL, ReviewStore, face_crop_jpeg
from support.images import encode

BOX = {"Left": 0.2, "Top": 0.2, "Width": 0.5, "Height": 0.5}


class ReviewServer:
    def __init__(self, server, keys: SQLiteKeyStore, review: ReviewStore):
        self.server, self.keys, self.review = server, keys, review
        self.secrets: dict[str, str] = {}

    def key(self, role: str):
        """A fresh key of ``role``: (AccessKey, faceaudit client)."""
        issued = self.keys.create(f"{role}-{uuid.uuid4().hex[:8]}", role)
        self.secrets[issued.key.access_key_id] = issued.secret_access_key
        return issued.key, self.server.faceaudit_client(
            access_key_id=issued.key.access_key_id, secret_access_key=issued.secret_access_key)

    def open_item(self, searcher, similarities: list[float], collection: str = "watch") -> tuple[str, bytes, dict]:
        """An item as a search under public-safety opens it: (id, probe bytes, FaceId -> crop JPEG)."""
        face_ids = [str(uuid.uuid4()) for _ in similarities]
        crops = {}
        for i, face_id in enumerate(face_ids):
            image = encode(np.random.default_rng(i).integers(0, 256, (160, 160, 3), dtype=np.uint8))
            self.review.keep_face_crops(collection, image, [{"Face": {"FaceId": face_id, "BoundingBox": BOX}}])
            crops[face_id] = face_crop_jpeg(image, BOX)
        probe = encode(np.random.default_rng(99).integers(0, 256, (120, 120, 3), dtype=np.uint8))
        response = {"FaceMatches": [{"Similarity": s, "Face": {"FaceId": f}} for f, s in zip(face_ids, similarities)]}
        caller = Caller(searcher, str(uuid.uuid4()), datetime.now(UTC),
                        {PURPOSE_HEADER: "missing person", CASE_HEADER: "MP-7"})
        item = self.review.open_item(caller, collection, "public-safety", probe, response,
                                     Facts(operation="SearchFacesByImage"))
        return item, probe, crops


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def review_server(tmp_path_factory, request):
    from faceaudit.access.postgres import PostgresKeyStore
    from support.server import start_server
    data = tmp_path_factory.mktemp("review") / "data"
    database = request.getfixturevalue("postgres_database")() if request.param == "postgres" else None
    with start_server(data, extra_args=("--database", database) if database else ()) as server:
        with SQLiteKeyStore(data) if database is None else PostgresKeyStore(database) as keys, \
                ReviewStore(data, database=database) as review:
            yield ReviewServer(server, keys, review)


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


def decide(client, item: str, decision: str, **overrides) -> dict:
    view = client.get_review_item(ItemId=item)
    chosen = overrides
    return client.decide_review_item(ItemId=item, Decisions=[
        {"CandidateId": c["CandidateId"], "Decision": chosen.get(c["CandidateId"], decision),
         "Reason": "compared eyebrows, nose bridge and ear"} for c in view["Candidates"]])


@pytest.mark.models
def test_blind_review_over_the_wire_releases_only_what_two_reviewers_confirmed(review_server):
    operator, searcher = review_server.key("operator")
    alice_key, alice = review_server.key("reviewer")
    _, bob = review_server.key("reviewer")
    item, probe, crops = review_server.open_item(operator, [99.7, 99.2])
    confirmed, rejected = list(crops)  # 99.7 and 99.2

    listed = alice.list_review_items()["ReviewItems"]
    assert item in [i["ItemId"] for i in listed]
    summary = next(i for i in listed if i["ItemId"] == item)
    assert (summary["Purpose"], summary["Case"], summary["RequiredReviewers"], summary["CandidateCount"]) == \
        ("missing person", "MP-7", 2, 2)
    view = alice.get_review_item(ItemId=item)
    assert view["Probe"] == probe
    assert {c["CandidateId"]: c["Crop"] for c in view["Candidates"]} == crops
    shown = json.dumps({k: v for k, v in view.items() if k not in ("Probe", "Candidates", "ResponseMetadata")},
                       default=str)
    assert "Similarity" not in shown and "Rank" not in shown
    assert all(set(c) == {"CandidateId", "CandidateType", "Crop"} for c in view["Candidates"])
    raw = review_server.server.post({"ItemId": item}, "FaceAuditService.GetReviewItem",
                                    access_key_id=alice_key.access_key_id,
                                    secret_access_key=review_server.secrets[alice_key.access_key_id])
    assert raw.status == 200 and raw.json["Probe"]  # boto3 drops members the model lacks: read the wire itself
    assert b"Similarity" not in raw.body and b"Rank" not in raw.body and b"99.7" not in raw.body

    first = decide(alice, item, "REJECT", **{confirmed: "CONFIRM"})
    assert first["State"] == "OPEN"
    assert {c["CandidateId"]: (c["Similarity"], c["Rank"], c["YourDecision"]) for c in first["Revealed"]} == {
        confirmed: (pytest.approx(99.7), 1, "CONFIRM"), rejected: (pytest.approx(99.2), 2, "REJECT")}
    assert searcher.get_review_result(ItemId=item)["ReleasedCandidates"] == []
    assert error_of(alice.get_review_item, ItemId=item)[0] == "AccessDeniedException"  # decided once

    assert decide(bob, item, "REJECT", **{confirmed: "CONFIRM"})["State"] == "RELEASED"
    result = searcher.get_review_result(ItemId=item)
    assert result["State"] == "RELEASED" and result["DecisionCount"] == 2
    assert [(c["CandidateId"], c["Label"]) for c in result["ReleasedCandidates"]] == [(confirmed, LEAD_LABEL)]
    assert result["ReleasedCandidates"][0]["Similarity"] == pytest.approx(99.7)
    assert item not in [i["ItemId"] for i in bob.list_review_items()["ReviewItems"]]


@pytest.mark.models
def test_who_may_not_review_or_read_a_result(review_server):
    searcher_key, searcher = review_server.key("operator")
    reviewer_key, reviewer = review_server.key("reviewer")
    _, other_operator = review_server.key("operator")
    item, _, _ = review_server.open_item(reviewer_key, [99.5])  # a reviewer key that searched
    code, message = error_of(reviewer.get_review_item, ItemId=item)
    assert code == "AccessDeniedException" and "own search" in message
    assert item not in [i["ItemId"] for i in reviewer.list_review_items()["ReviewItems"]]
    code, message = error_of(searcher.get_review_item, ItemId=item)  # operators do not review
    assert code == "AccessDeniedException" and "rekognition:GetReviewItem" in message
    own, _, _ = review_server.open_item(searcher_key, [99.5])
    assert error_of(other_operator.get_review_result, ItemId=own)[0] == "AccessDeniedException"
    assert error_of(reviewer.get_review_result, ItemId=own)[0] == "AccessDeniedException"  # by role
    assert error_of(searcher.get_review_result, ItemId=str(uuid.uuid4()))[0] == "ResourceNotFoundException"


@pytest.mark.models
def test_disputed_items_release_nothing(review_server):
    operator, searcher = review_server.key("operator")
    item, _, _ = review_server.open_item(operator, [99.9])
    decide(review_server.key("reviewer")[1], item, "CONFIRM")
    decide(review_server.key("reviewer")[1], item, "INCONCLUSIVE")
    result = searcher.get_review_result(ItemId=item)
    assert result["State"] == "DISPUTED" and result["ReleasedCandidates"] == []
    code, _ = error_of(review_server.key("reviewer")[1].get_review_item, ItemId=item)
    assert code == "ConflictException"


@pytest.mark.models
def test_bad_requests_get_rekognition_style_errors(review_server):
    operator, _ = review_server.key("operator")
    _, reviewer = review_server.key("reviewer")
    item, _, crops = review_server.open_item(operator, [99.1, 99.3])
    code, message = error_of(reviewer.get_review_item, ItemId="not-an-item-id-but-36-characters-lng")
    assert code == "InvalidParameterException" and "itemId" in message  # the model's pattern
    candidates = list(crops)
    code, message = error_of(reviewer.decide_review_item, ItemId=item, Decisions=[
        {"CandidateId": c, "Decision": "MAYBE", "Reason": "r"} for c in candidates])
    assert code == "InvalidParameterException" and "enum value set: [CONFIRM, REJECT, INCONCLUSIVE]" in message
    code, message = error_of(reviewer.decide_review_item, ItemId=item, Decisions=[
        {"CandidateId": candidates[0], "Decision": "CONFIRM", "Reason": "same person"}])
    assert code == "InvalidParameterException" and candidates[1] in message and "missing" in message
    assert error_of(reviewer.decide_review_item, ItemId=item, Decisions=[
        {"CandidateId": c, "Decision": "CONFIRM", "Reason": "   "} for c in candidates])[0] == \
        "InvalidParameterException"
    assert item in [i["ItemId"] for i in reviewer.list_review_items()["ReviewItems"]]  # nothing was stored
    answer = review_server.server.post({}, "FaceAuditService.DeleteEverything")
    assert answer.status == 400 and answer.error_code == "UnknownOperationException"
    answer = review_server.server.post({"ItemId": item}, "RekognitionService.GetReviewItem")
    assert answer.error_code == "UnknownOperationException"  # each model answers only its own prefix


@pytest.mark.models
def test_listing_pages_through_every_waiting_item(review_server):
    operator, _ = review_server.key("operator")
    _, reviewer = review_server.key("reviewer")
    opened = [review_server.open_item(operator, [99.0])[0] for _ in range(3)]
    seen, token = [], None
    while True:
        page = reviewer.list_review_items(MaxResults=1, **({"NextToken": token} if token else {}))
        assert len(page["ReviewItems"]) <= 1
        seen += [i["ItemId"] for i in page["ReviewItems"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(opened) <= set(seen) and len(seen) == len(set(seen))
    _, stranger = review_server.key("reviewer")  # a token is bound to the reviewer it was issued to
    first = reviewer.list_review_items(MaxResults=1)["NextToken"]
    code, _ = error_of(stranger.list_review_items, MaxResults=1, NextToken=first)
    assert code == "InvalidPaginationTokenException"


HELD_FIELDS = {"ItemId", "CreatedAt", "CollectionId", "Policy", "Purpose", "Case", "State", "RequiredReviewers",
               "DecisionCount"}


def held_pages(client, **request) -> list[list[dict]]:
    """Every page of ListReviewResults, following NextToken."""
    pages, token = [], None
    while True:
        page = client.list_review_results(**request, **({"NextToken": token} if token else {}))
        pages.append(page["ReviewResults"])
        token = page.get("NextToken")
        if not token:
            return pages


@pytest.mark.models
def test_an_operator_lists_only_its_own_held_searches_newest_first_with_no_candidate(review_server):
    searcher_key, searcher = review_server.key("operator")
    other_key, other = review_server.key("operator")
    mine = [review_server.open_item(searcher_key, [99.4, 99.1], collection=f"watch-{n}") for n in range(3)]
    theirs, _, _ = review_server.open_item(other_key, [99.6])

    listed = searcher.list_review_results()["ReviewResults"]
    assert [i["ItemId"] for i in listed] == [item for item, _, _ in reversed(mine)]  # newest first, its own only
    assert all(set(i) == HELD_FIELDS for i in listed)
    newest = listed[0]
    assert (newest["CollectionId"], newest["Policy"], newest["Purpose"], newest["Case"], newest["State"],
            newest["RequiredReviewers"], newest["DecisionCount"]) == \
        ("watch-2", "public-safety", "missing person", "MP-7", "OPEN", 2, 0)
    assert abs((datetime.now(UTC) - newest["CreatedAt"]).total_seconds()) < 120
    assert [i["ItemId"] for i in other.list_review_results()["ReviewResults"]] == [theirs]
    raw = review_server.server.post({}, "FaceAuditService.ListReviewResults",
                                    access_key_id=searcher_key.access_key_id,
                                    secret_access_key=review_server.secrets[searcher_key.access_key_id])
    assert raw.status == 200 and len(raw.json["ReviewResults"]) == 3  # the wire itself: boto3 drops unknown members
    assert b"Similarity" not in raw.body and b"Candidate" not in raw.body and b"99.4" not in raw.body
    assert not any(face_id.encode() in raw.body for _, _, crops in mine for face_id in crops)

    # Where each stands follows the reviewers: one decision, then two that release.
    item = mine[-1][0]
    decide(review_server.key("reviewer")[1], item, "CONFIRM")
    assert searcher.list_review_results(MaxResults=1)["ReviewResults"][0] | {"CreatedAt": None} == \
        newest | {"CreatedAt": None, "DecisionCount": 1}
    decide(review_server.key("reviewer")[1], item, "CONFIRM")
    assert (searcher.list_review_results()["ReviewResults"][0]["State"],
            searcher.get_review_result(ItemId=item)["State"]) == ("RELEASED", "RELEASED")

    # Recognised by key name, as GetReviewResult: the rotated key still lists them.
    rotated = review_server.keys.rotate(searcher_key.name)
    rotated_client = review_server.server.faceaudit_client(access_key_id=rotated.key.access_key_id,
                                                           secret_access_key=rotated.secret_access_key)
    assert [i["ItemId"] for i in rotated_client.list_review_results()["ReviewResults"]] == \
        [item for item, _, _ in reversed(mine)]

    # Every call is a request record of the search log, with how many items it answered.
    records = review_server.server.faceaudit_client().list_search_log_records(
        Operation="ListReviewResults", KeyName=searcher_key.name)["Records"]
    assert len(records) == 5 and all(r["Kind"] == "request" and r["Status"] == 200 for r in records)
    assert sorted(json.loads(r["Record"])["result"]["items"] for r in records) == [1, 3, 3, 3, 3]


@pytest.mark.models
def test_held_searches_page_newest_first_and_a_token_serves_only_its_key(review_server):
    searcher_key, searcher = review_server.key("operator")
    opened = [review_server.open_item(searcher_key, [99.2])[0] for _ in range(5)]
    pages = held_pages(searcher, MaxResults=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i["ItemId"] for p in pages for i in p] == opened[::-1]
    paginated = searcher.get_paginator("list_review_results").paginate(PaginationConfig={"PageSize": 3})
    assert [i["ItemId"] for p in paginated for i in p["ReviewResults"]] == opened[::-1]  # paginators-1.json

    token = searcher.list_review_results(MaxResults=2)["NextToken"]
    _, stranger = review_server.key("operator")
    assert error_of(stranger.list_review_results, NextToken=token)[0] == "InvalidPaginationTokenException"
    _, reviewer = review_server.key("reviewer")
    assert error_of(reviewer.list_review_items, NextToken=token)[0] == "InvalidPaginationTokenException"
    pending = reviewer.list_review_items(MaxResults=1)["NextToken"]  # nor a review queue's token here
    assert error_of(searcher.list_review_results, NextToken=pending)[0] == "InvalidPaginationTokenException"
    assert error_of(searcher.list_review_results, NextToken=token[:-2] + "AA")[0] == \
        "InvalidPaginationTokenException"
    unchecked = review_server.server.faceaudit_client(  # botocore itself refuses 0 (not 1001): the server does both
        access_key_id=searcher_key.access_key_id, secret_access_key=review_server.secrets[searcher_key.access_key_id],
        parameter_validation=False)
    for bad, words in ((0, "greater than or equal to 1"), (1001, "less than or equal to 1000")):
        code, message = error_of(unchecked.list_review_results, MaxResults=bad)
        assert code == "InvalidParameterException" and words in message, (bad, message)
    assert error_of(unchecked.list_review_results, MaxResults="many")[0] == "SerializationException"  # as AWS
    assert len(searcher.list_review_results(MaxResults=1000)["ReviewResults"]) == 5


@pytest.mark.models
@pytest.mark.parametrize("role", ["reviewer", "auditor"])
def test_reviewers_and_auditors_may_not_list_held_searches(review_server, role):
    key, client = review_server.key(role)
    review_server.open_item(key, [99.0])  # even a key of that role whose name searched
    code, message = error_of(client.list_review_results)
    assert code == "AccessDeniedException" and "rekognition:ListReviewResults" in message
