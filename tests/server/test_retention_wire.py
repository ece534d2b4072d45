"""Retention tags, the purge and the floor on AssociateFaces, through boto3 against real `faceaudit serve` processes.

What a client sees is on the wire: who may set the ``faceaudit:retention:*`` tags and which
values are refused, faces gone from ListFaces and SearchFacesByImage once they expired, and a
UserMatchThreshold under the public-safety floor refused. The purge is run on the server's
data directory from this process with the clock set forward (``purge(now)``), as a second
process sharing the directory would -- no sleeping; and a server started on a directory
holding expired faces purges them as it starts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest
from test_http_access import create_key

from faceaudit.accountability.policies import POLICY_TAG, RETENTION_TAGS
from faceaudit.accountability.retention import RetentionLedger, open_retention
from faceaudit.accountability.searchlog import read_data_dir
from faceaudit.similarity import GroupFalseMatchRates
from support.server import start_server

pytestmark = pytest.mark.models  # servers load the face models

FACES, PROBES, ITEMS = (RETENTION_TAGS[k] for k in ("faces", "probes", "review-items"))


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(*args, **kwargs)
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


class Deployed:
    def __init__(self, server, operator: tuple[str, str]):
        self.server = server
        self.admin = server.client()
        self.operator = server.client(access_key_id=operator[0], secret_access_key=operator[1])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    data = tmp_path_factory.mktemp("retention") / "data"
    with start_server(data) as server:
        yield Deployed(server, create_key(data, "operator-r", "operator"))


def retention_records(data_dir) -> list[dict]:
    return [r for r in read_data_dir(data_dir).records() if r.get("kind") == "retention"]


def test_only_an_admin_key_sets_or_removes_a_retention_tag_and_only_within_the_policy(deployed):
    collection = fresh("kept")
    arn = deployed.admin.create_collection(CollectionId=collection, Tags={FACES: "365"})["CollectionArn"]
    for call, kwargs in ((deployed.operator.tag_resource, {"Tags": {ITEMS: "5"}}),
                         (deployed.operator.untag_resource, {"TagKeys": [FACES]})):
        code, message = error_of(call, ResourceArn=arn, **kwargs)
        assert code == "AccessDeniedException"
        assert "'operator-r' (role operator) may not" in message and "retention is the admin's" in message
    assert deployed.operator.list_tags_for_resource(ResourceArn=arn)["Tags"] == {FACES: "365"}
    deployed.operator.untag_resource(ResourceArn=arn, TagKeys=[ITEMS])  # not set: nothing to refuse
    for bad in ("0", "a year", "-3"):
        code, message = error_of(deployed.admin.tag_resource, ResourceArn=arn, Tags={FACES: bad})
        assert code == "InvalidParameterException" and "whole number of days" in message

    watched = fresh("watch")
    code, message = error_of(deployed.admin.create_collection, CollectionId=watched,
                             Tags={POLICY_TAG: "public-safety", PROBES: "60"})
    assert code == "InvalidParameterException" and "above the 30 days that the use policy public-safety" in message
    assert error_of(deployed.admin.describe_collection, CollectionId=watched)[0] == "ResourceNotFoundException"
    arn = deployed.admin.create_collection(CollectionId=watched, Tags={POLICY_TAG: "public-safety",
                                                                      ITEMS: "90"})["CollectionArn"]
    code, message = error_of(deployed.admin.tag_resource, ResourceArn=arn, Tags={ITEMS: "91"})
    assert code == "InvalidParameterException" and "90 days" in message
    deployed.admin.tag_resource(ResourceArn=arn, Tags={PROBES: "7"})
    with open_retention(deployed.server.data_dir) as retention:
        assert retention.periods(watched).days == {"faces": None, "probes": 7, "review-items": 90}
    changes = [r for r in read_data_dir(deployed.server.data_dir).records()
               if r.get("kind") == "policy" and r.get("collection") == watched
               and r["details"].get("action") == "retention"]
    assert [c["details"]["retention"] for c in changes] == [
        {"review-items": {"previous": None, "days": "90"}}, {"probes": {"previous": None, "days": "7"}}]


def test_expired_faces_are_gone_from_list_and_search_after_a_purge_and_one_record_names_them(
        deployed, astronaut_jpeg):
    collection = fresh("expiring")
    deployed.admin.create_collection(CollectionId=collection, Tags={FACES: "30"})
    image = {"Bytes": astronaut_jpeg}
    first = deployed.operator.index_faces(CollectionId=collection, Image=image)["FaceRecords"][0]["Face"]["FaceId"]
    deployed.operator.create_user(CollectionId=collection, UserId="astronaut")
    deployed.operator.associate_faces(CollectionId=collection, UserId="astronaut", FaceIds=[first])

    with open_retention(deployed.server.data_dir) as retention:
        report = retention.purge(datetime.now(UTC) + timedelta(days=31))
    assert report.faces == {collection: [first]}

    # the same picture indexed again after the purge: only the new face is there to find
    second = deployed.operator.index_faces(CollectionId=collection, Image=image)["FaceRecords"][0]["Face"]["FaceId"]
    assert [f["FaceId"] for f in deployed.operator.list_faces(CollectionId=collection)["Faces"]] == [second]
    found = deployed.operator.search_faces_by_image(CollectionId=collection, Image=image, FaceMatchThreshold=50)
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [second]
    code, _ = error_of(deployed.operator.search_faces, CollectionId=collection, FaceId=first)
    assert code in ("InvalidParameterException", "ResourceNotFoundException")
    user = deployed.operator.list_users(CollectionId=collection)["Users"]
    assert user == [{"UserId": "astronaut", "UserStatus": "CREATED"}]  # its only face went with the purge
    [record] = [r for r in retention_records(deployed.server.data_dir) if collection in r["details"]["faces"]]
    assert record["details"]["faces"][collection] == [first] and record["result"]["faces"] == 1
    assert record["seq"] == report.record_seq


def test_a_server_purges_expired_faces_as_it_starts(deployed, tmp_path, astronaut_jpeg):
    collection = fresh("old")
    deployed.admin.create_collection(CollectionId=collection, Tags={FACES: "30"})
    face_id = deployed.operator.index_faces(CollectionId=collection,
                                            Image={"Bytes": astronaut_jpeg})["FaceRecords"][0]["Face"]["FaceId"]
    with RetentionLedger(deployed.server.data_dir) as ledger:  # as if indexed 40 days ago
        assert ledger.seen(collection, face_id) is not None  # the server noted it
        ledger.forget_faces(collection, [face_id])
        ledger.note_faces(collection, [face_id], datetime.now(UTC) - timedelta(days=40))
    with start_server(deployed.server.data_dir):  # a second server on the same directory
        pass
    assert deployed.operator.list_faces(CollectionId=collection)["Faces"] == []
    assert any(r["details"]["faces"].get(collection) == [face_id]
               for r in retention_records(deployed.server.data_dir))


def test_associate_faces_into_a_public_safety_collection_keeps_the_floor(deployed, astronaut_jpeg):
    collection = fresh("ps-users")
    created = deployed.admin.create_collection(CollectionId=collection, Tags={POLICY_TAG: "public-safety"})
    face_id = deployed.operator.index_faces(CollectionId=collection,
                                            Image={"Bytes": astronaut_jpeg})["FaceRecords"][0]["Face"]["FaceId"]
    deployed.operator.create_user(CollectionId=collection, UserId="suspect-1")
    code, message = error_of(deployed.operator.associate_faces, CollectionId=collection, UserId="suspect-1",
                             FaceIds=[face_id], UserMatchThreshold=80)
    assert code == "InvalidParameterException"
    assert "UserMatchThreshold 80 is below the floor of 99" in message and "not raised for you" in message
    rates = GroupFalseMatchRates.for_model_version(created["FaceModelVersion"])
    assert rates is not None
    for group, row in rates.thresholds["80"].items():
        assert f"{group} {row['rate']:.2%} [{row['ci95'][0]:.2%}, {row['ci95'][1]:.2%}]" in message
    code, message = error_of(deployed.operator.associate_faces, CollectionId=collection, UserId="suspect-1",
                             FaceIds=[face_id])
    assert code == "InvalidParameterException" and "was not given, and Rekognition's default is 75" in message
    assert deployed.operator.list_faces(CollectionId=collection)["Faces"][0].get("UserId") is None
    answer = deployed.operator.associate_faces(CollectionId=collection, UserId="suspect-1", FaceIds=[face_id],
                                               UserMatchThreshold=99)
    assert [f["FaceId"] for f in answer["AssociatedFaces"]] == [face_id]
    # an unpoliced collection keeps Rekognition's default
    plain = fresh("plain-users")
    deployed.admin.create_collection(CollectionId=plain)
    other = deployed.operator.index_faces(CollectionId=plain,
                                          Image={"Bytes": astronaut_jpeg})["FaceRecords"][0]["Face"]["FaceId"]
    deployed.operator.create_user(CollectionId=plain, UserId="someone")
    assert deployed.operator.associate_faces(CollectionId=plain, UserId="someone", FaceIds=[other],
                                             UserMatchThreshold=10)["AssociatedFaces"]
