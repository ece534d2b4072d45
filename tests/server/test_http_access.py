"""Keys and roles against real `faceaudit serve` processes, through boto3, with keys made by the
`faceaudit keys` command (a real subprocess) on the servers' data directory while they run.

Every cell of the role table (faceaudit.access.roles, which docs/access.md shows) is called:
the test reads the table, so the two cannot drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import botocore.exceptions
import pytest
from botocore import xform_name

from faceaudit.access import OPERATION_ROLES, ROLES
from faceaudit.accountability.faceaudit_service import FaceAuditService
from support.server import RunningServer, faceaudit_command, start_server

pytestmark = pytest.mark.models  # servers load the face models

IMAGE = {"Bytes": b"not an image"}  # allowed calls fail fast in the service, after the role check
FACE_ID = "11111111-2222-3333-4444-555555555555"


def keys_cli(*args: str | Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEAUDIT_ACCESS_KEY")}
    done = subprocess.run([*faceaudit_command(), "keys", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == expect, done.stderr
    return done


def create_key(data_dir: Path, name: str, role: str, *extra: str) -> tuple[str, str]:
    created = json.loads(keys_cli("create", "--name", name, "--role", role, *extra,
                                  "--data-dir", data_dir).stdout)["AccessKey"]
    assert (created["Name"], created["Role"], created["Status"]) == (name, role, "Active")
    return created["AccessKeyId"], created["SecretAccessKey"]


def request_for(operation: str, collection: str) -> dict:
    """A small valid request for each operation the service runs (every row of the table)."""
    fresh = uuid.uuid4().hex[:12]
    arn = f"arn:aws:rekognition:us-east-1:000000000000:collection/{collection}"  # allowed calls may not find it
    requests = {
        "DetectFaces": {"Image": IMAGE},
        "CompareFaces": {"SourceImage": IMAGE, "TargetImage": IMAGE},
        "CreateCollection": {"CollectionId": f"made-{fresh}"},
        "DeleteCollection": {"CollectionId": f"absent-{fresh}"},
        "DescribeCollection": {"CollectionId": collection},
        "ListCollections": {},
        "IndexFaces": {"CollectionId": collection, "Image": IMAGE},
        "ListFaces": {"CollectionId": collection},
        "DeleteFaces": {"CollectionId": collection, "FaceIds": [FACE_ID]},
        "SearchFaces": {"CollectionId": collection, "FaceId": FACE_ID},
        "SearchFacesByImage": {"CollectionId": collection, "Image": IMAGE},
        "CreateUser": {"CollectionId": collection, "UserId": f"user-{fresh}"},
        "DeleteUser": {"CollectionId": collection, "UserId": f"absent-{fresh}"},
        "ListUsers": {"CollectionId": collection},
        "AssociateFaces": {"CollectionId": collection, "UserId": "someone", "FaceIds": [FACE_ID]},
        "DisassociateFaces": {"CollectionId": collection, "UserId": "someone", "FaceIds": [FACE_ID]},
        "SearchUsers": {"CollectionId": collection, "UserId": "someone"},
        "SearchUsersByImage": {"CollectionId": collection, "Image": IMAGE},
        "TagResource": {"ResourceArn": arn, "Tags": {"team": "blue"}},
        "UntagResource": {"ResourceArn": arn, "TagKeys": ["team"]},
        "ListTagsForResource": {"ResourceArn": arn},
        # faceaudit's own operations: an item that does not exist is refused after the role check
        "ListReviewItems": {},
        "GetReviewItem": {"ItemId": str(uuid.uuid4())},
        "DecideReviewItem": {"ItemId": str(uuid.uuid4()), "Decisions": []},
        "GetReviewResult": {"ItemId": str(uuid.uuid4())},
        "ListReviewResults": {"MaxResults": 5},
        "ListSearchLogRecords": {"MaxResults": 5},
        "VerifySearchLog": {},
        "GetTransparencyReport": {"Since": "2026-01-01"},
    }
    assert set(requests) == set(OPERATION_ROLES), "a request for every operation of the role table"
    return requests[operation]


FACEAUDIT_OPERATIONS = FaceAuditService.operations


def call(client, operation: str, request: dict) -> tuple[str | None, str, str]:
    """(error code or None, message, request id) of one boto3 call (``client``: a RoleClients for a role)."""
    if isinstance(client, RoleClients):
        client = client.faceaudit if operation in FACEAUDIT_OPERATIONS else client.rekognition
    try:
        answer = getattr(client, xform_name(operation))(**request)
    except botocore.exceptions.ClientError as error:
        return (error.response["Error"]["Code"], error.response["Error"]["Message"],
                error.response["ResponseMetadata"]["RequestId"])
    return None, "", answer["ResponseMetadata"]["RequestId"]


class RoleClients:
    """One key's boto3 clients: Rekognition's operations and faceaudit's own."""

    def __init__(self, server: RunningServer, **keys):
        self.rekognition = server.client(**keys)
        self.faceaudit = server.faceaudit_client(**keys)

    def __getattr__(self, name):  # a Rekognition client's methods and attributes
        return getattr(self.rekognition, name)


class RoleServer:
    def __init__(self, server: RunningServer, clients: dict, collection: str):
        self.server, self.clients, self.collection = server, clients, collection


@pytest.fixture(scope="module")
def role_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("roles") / "data"
    with start_server(data) as server:  # its environment pair: the admin key "initial"
        clients = {"initial": RoleClients(server)}
        for role in ROLES:  # keys made while the server runs: no restart, no reload
            key, secret = create_key(data, f"{role}-1", role, "--unit", "unit-7")
            clients[role] = RoleClients(server, access_key_id=key, secret_access_key=secret)
        collection = f"roles-{uuid.uuid4().hex[:8]}"
        clients[ROLES[0]].create_collection(CollectionId=collection)
        yield RoleServer(server, clients, collection)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", list(OPERATION_ROLES))
def test_each_role_is_allowed_and_denied_exactly_what_the_table_says(role_server, role, operation):
    code, message, request_id = call(role_server.clients[role], operation,
                                     request_for(operation, role_server.collection))
    line = role_server.server.log_for(request_id)
    assert f" op={operation} " in line and f" key={role}-1 role={role} unit=unit-7 " in line
    if role in OPERATION_ROLES[operation]:
        assert code != "AccessDeniedException", message
    else:
        assert code == "AccessDeniedException"
        assert f"'{role}-1' (role {role})" in message and f"rekognition:{operation}" in message
        assert "error=AccessDeniedException dispatched=no" in line  # the denial is itself logged
        assert f'reason="role {role} may not call {operation}"' in line


def test_a_denied_call_changes_nothing(role_server):
    name = f"denied-{uuid.uuid4().hex[:8]}"
    operator, admin = role_server.clients["operator"], role_server.clients["admin"]
    with pytest.raises(operator.exceptions.AccessDeniedException):
        operator.create_collection(CollectionId=name)
    with pytest.raises(admin.exceptions.ResourceNotFoundException):
        admin.describe_collection(CollectionId=name)
    assert admin.create_collection(CollectionId=name)["StatusCode"] == 200
    with pytest.raises(operator.exceptions.AccessDeniedException):
        operator.delete_collection(CollectionId=name)
    assert admin.describe_collection(CollectionId=name)["FaceCount"] == 0  # still there


def test_the_environment_pair_is_the_admin_key_initial(role_server):
    _, _, request_id = call(role_server.clients["initial"], "CreateCollection",
                            request_for("CreateCollection", role_server.collection))
    assert " key=initial role=admin unit=- " in role_server.server.log_for(request_id)
    listed = json.loads(keys_cli("list", "--data-dir", role_server.server.data_dir).stdout)["Keys"]
    assert {(k["Name"], k["Role"], k["Origin"]) for k in listed} >= {("initial", "admin", "environment")}
    assert all("SecretAccessKey" not in k for k in listed)


def test_rotation_refuses_the_old_pair_at_once(role_server):
    server = role_server.server
    old_key, old_secret = create_key(server.data_dir, "rotating", "operator")
    old = server.client(access_key_id=old_key, secret_access_key=old_secret)
    old.list_collections()
    rotated = json.loads(keys_cli("rotate", "rotating", "--data-dir", server.data_dir).stdout)["AccessKey"]
    assert rotated["Name"] == "rotating" and rotated["AccessKeyId"] != old_key
    code, _, request_id = call(old, "ListCollections", {})
    assert code == "UnrecognizedClientException"
    line = server.log_for(request_id)
    assert f"reason=\"rotated key 'rotating' ({old_key})\"" in line and " key=- " in line
    new = server.client(access_key_id=rotated["AccessKeyId"], secret_access_key=rotated["SecretAccessKey"])
    assert new.list_collections()["ResponseMetadata"]["HTTPStatusCode"] == 200
    # The old secret with the new id is no key at all.
    stale = server.client(access_key_id=rotated["AccessKeyId"], secret_access_key=old_secret)
    assert call(stale, "ListCollections", {})[0] == "InvalidSignatureException"


def test_revoked_key_is_refused_by_another_running_server_on_its_next_request(tmp_path, start_faceaudit_server):
    data = tmp_path / "data"
    first = start_faceaudit_server(data)
    second = start_faceaudit_server(data)  # a second process on the same data directory, already running
    key, secret = create_key(data, "carol", "operator")
    clients = [server.client(access_key_id=key, secret_access_key=secret) for server in (first, second)]
    for client in clients:
        client.list_collections()
    keys_cli("revoke", "carol", "--data-dir", data)
    for server, client in zip((first, second), clients):
        code, _, request_id = call(client, "ListCollections", {})
        assert code == "UnrecognizedClientException"
        assert f"reason=\"revoked key 'carol' ({key})\"" in server.log_for(request_id)
    # The last admin key is not revoked by accident.
    refused = keys_cli("revoke", "initial", "--data-dir", data, expect=2)
    assert "last active admin key" in refused.stderr
    assert first.client().list_collections()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_first_generated_key_is_admin(tmp_path, start_faceaudit_server):
    data = tmp_path / "data"
    server = start_faceaudit_server(data, credentials=None)
    stored = json.loads((data / "credentials.json").read_text())
    assert "the admin key 'initial'" in server.log()
    admin = server.client(access_key_id=stored["access_key_id"], secret_access_key=stored["secret_access_key"])
    answer = admin.create_collection(CollectionId="first")  # an admin-only operation
    assert " key=initial role=admin " in server.log_for(answer["ResponseMetadata"]["RequestId"])
    listed = json.loads(keys_cli("list", "--data-dir", data).stdout)["Keys"]
    assert [(k["Name"], k["Role"], k["AccessKeyId"]) for k in listed] == [
        ("initial", "admin", stored["access_key_id"])]


def test_a_data_dir_of_a_single_key_server_keeps_working_as_admin(tmp_path, start_faceaudit_server):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    path = data / "credentials.json"  # exactly what a single-key faceaudit left behind
    path.write_text(json.dumps({"access_key_id": "OLDSTYLEKEY000000001", "secret_access_key": "an-old-secret-42"}))
    os.chmod(path, 0o600)
    for _ in range(2):  # taken in on the first start, found again on the second
        server = start_faceaudit_server(data, credentials=None)
        client = server.client(access_key_id="OLDSTYLEKEY000000001", secret_access_key="an-old-secret-42")
        client.create_collection(CollectionId=f"c-{uuid.uuid4().hex[:8]}")
        assert "generated credentials" not in server.log()
        server.stop()
    listed = json.loads(keys_cli("list", "--data-dir", data).stdout)["Keys"]
    assert [(k["Name"], k["Role"], k["Origin"]) for k in listed] == [("initial", "admin", "credentials.json")]
