"""GuardedService without a server or models: refusals before any face work, what ``facts`` holds
then, the tag operations and the records of policy changes. A real store and state on disk; the
service has no engine, which no path here reaches (the HTTP tests run the rest with models)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from faceaudit.access.keys import AccessKey
from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.guard import GuardedService, PolicyDenied, set_collection_policy
from faceaudit.accountability.policies import POLICY_TAG
from faceaudit.accountability.state import AccountabilityState
from faceaudit.errors import InvalidParameterException, ResourceNotFoundException
from faceaudit.rekognition.service import RekognitionService
from faceaudit.storage import EmbeddedStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROBE = b"\xff\xd8\xff probe bytes, never decoded here"


def key(name: str, role: str) -> AccessKey:
    return AccessKey(f"AKID{name.upper():0<16}"[:20], name, role, "unit-1", NOW, "created")


def caller(name="ana", role="operator", **headers) -> Caller:
    return Caller(key(name, role), "req-1", NOW, {k.replace("_", "-"): v for k, v in headers.items()})


class ListRecorder:
    def __init__(self):
        self.records = []

    def append(self, record):
        self.records.append(dict(record))
        return record


@pytest.fixture
def guard(tmp_path):
    store = EmbeddedStore(tmp_path)
    state = AccountabilityState(tmp_path)
    guarded = GuardedService(RekognitionService(None, store), state, recorder=ListRecorder())  # type: ignore[arg-type]
    for collection in ("ps", "plain"):
        store.create_collection(collection, "1.0")  # the dlib engine's model version
    state.set_tags("ps", {POLICY_TAG: "public-safety"})
    yield guarded
    store.close()
    state.close()


def test_a_refused_search_is_described_in_full_for_the_log(guard):
    facts = Facts()
    with pytest.raises(InvalidParameterException) as refused:
        guard.call(caller(x_faceaudit_purpose="p", x_faceaudit_case="c"), "SearchFacesByImage",
                   {"CollectionId": "ps", "Image": {"Bytes": PROBE}}, facts)
    assert "Rekognition's default is 80" in refused.value.message and "floor of 99" in refused.value.message
    assert refused.value.reason == "FaceMatchThreshold 80 below the floor 99 of public-safety"  # type: ignore[attr-defined]
    assert (facts.operation, facts.collection, facts.policy) == ("SearchFacesByImage", "ps", "public-safety")
    assert facts.parameters == {"FaceMatchThreshold": 80.0}  # as it would have run
    assert (facts.purpose, facts.case) == ("p", "c")
    assert facts.image_sha256 == [hashlib.sha256(PROBE).hexdigest()]
    assert facts.matches == [] and facts.extra_headers == []


def test_a_moratorium_on_a_key_stops_its_searches_of_any_collection(guard):
    m = guard.state.set_moratorium("key", "ana", "lost laptop", "root", at=NOW)
    with pytest.raises(PolicyDenied) as refused:
        guard.call(caller(), "SearchFaces", {"CollectionId": "plain", "FaceId": "x"}, Facts())
    assert refused.value.message == (f"Searches are suspended: moratorium {m.id} on the key 'ana', in force since "
                                     "2026-12-01T12:00:00.000Z: lost laptop")
    assert refused.value.reason == f"moratorium {m.id} (key ana)"


def test_a_policy_this_faceaudit_does_not_know_refuses_searches(guard):
    guard.state.set_tags("plain", {POLICY_TAG: "from-the-future"})
    with pytest.raises(PolicyDenied, match="does not know"):
        guard.call(caller(), "SearchFaces", {"CollectionId": "plain", "FaceId": "x"}, Facts())


def test_tags_over_the_guard_and_the_record_of_a_policy_change(guard):
    arn = guard.service.store.describe_collection("plain").arn
    facts = Facts()
    with pytest.raises(PolicyDenied, match="may not set the faceaudit:policy tag"):
        guard.call(caller(), "TagResource", {"ResourceArn": arn, "Tags": {POLICY_TAG: "personal"}}, facts)
    assert facts.collection == "plain" and facts.policy is None
    assert guard.call(caller("root", "admin"), "TagResource",
                      {"ResourceArn": arn, "Tags": {POLICY_TAG: "personal", "team": "x"}}, Facts()) == {}
    (record,) = guard.recorder.records
    assert record["kind"] == "policy" and record["operation"] == "TagResource" and record["request_id"] == "req-1"
    assert record["key"] == {"name": "root", "access_key_id": key("root", "admin").access_key_id,
                             "role": "admin", "unit": "unit-1"}
    assert record["collection"] == "plain" and record["policy"] == "personal"
    assert record["details"] == {"action": "set", "previous": None, "policy": "personal", "by": "root"}
    assert guard.call(caller(), "ListTagsForResource", {"ResourceArn": arn}, Facts()) == {
        "Tags": {POLICY_TAG: "personal", "team": "x"}}
    guard.call(caller(), "UntagResource", {"ResourceArn": arn, "TagKeys": ["team"]}, Facts())  # not the policy
    assert len(guard.recorder.records) == 1
    with pytest.raises(ResourceNotFoundException):
        guard.call(caller(), "ListTagsForResource", {"ResourceArn": arn.replace("plain", "other")}, Facts())
    with pytest.raises(ResourceNotFoundException):
        guard.call(caller(), "ListTagsForResource", {"ResourceArn": "arn:aws:s3:::a-bucket-not-a-collection"},
                   Facts())


def test_the_guard_serves_the_services_operations_and_the_tag_operations(guard):
    assert guard.operations == guard.service.operations | {"TagResource", "UntagResource", "ListTagsForResource"}


class ModalStore(EmbeddedStore):
    """An EmbeddedStore that keeps a search mode per collection, as a store with an approximate
    index does (FaceStore.search_mode / set_search_mode); new collections are "auto"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.modes: dict[str, str] = {}

    def search_mode(self, collection_id):
        self.describe_collection(collection_id)
        return self.modes.get(collection_id, "auto")

    def set_search_mode(self, collection_id, mode):
        self.describe_collection(collection_id)
        self.modes[collection_id] = mode


def test_public_safety_searches_are_exact_and_setting_the_policy_makes_them_so(tmp_path):
    store, state = ModalStore(tmp_path), AccountabilityState(tmp_path)
    guard = GuardedService(RekognitionService(None, store), state)  # type: ignore[arg-type]
    for collection in ("ps", "mine"):
        store.create_collection(collection, "1.0")
    state.set_tags("ps", {POLICY_TAG: "public-safety"})  # written behind the guard's back: mode still auto
    search = {"CollectionId": "ps", "FaceId": "x", "FaceMatchThreshold": 99}
    signed = caller(x_faceaudit_purpose="p", x_faceaudit_case="c")
    with pytest.raises(PolicyDenied, match="searched in mode 'auto'; its use policy public-safety requires exact"):
        guard.call(signed, "SearchFaces", search, Facts())
    set_collection_policy(state, "ps", "public-safety", "root", store=store)
    assert store.modes["ps"] == "exact"
    with pytest.raises(PolicyDenied, match="no review queue"):  # every rule met now; no queue here
        guard.call(signed, "SearchFaces", search, Facts())
    guard.call(caller("root", "admin"), "TagResource",
               {"ResourceArn": store.describe_collection("mine").arn, "Tags": {POLICY_TAG: "personal"}}, Facts())
    assert "mine" not in store.modes  # personal keeps the store's default
    guard.call(caller("root", "admin"), "TagResource",
               {"ResourceArn": store.describe_collection("mine").arn, "Tags": {POLICY_TAG: "public-safety"}},
               Facts())
    assert store.modes["mine"] == "exact"
    store.close()
    state.close()


class FailingRecorder:
    def append(self, record):
        raise OSError("the search log's disk is full")


def test_a_collection_whose_policy_cannot_be_logged_is_not_created(tmp_path):
    from types import SimpleNamespace

    store, state = EmbeddedStore(tmp_path), AccountabilityState(tmp_path)
    # CreateCollection reads only the engine's model version
    service = RekognitionService(SimpleNamespace(model_version="1.0"), store)  # type: ignore[arg-type]
    admin = caller("root", "admin")
    failing = GuardedService(service, state, recorder=FailingRecorder())
    with pytest.raises(OSError):
        failing.call(admin, "CreateCollection", {"CollectionId": "ps", "Tags": {POLICY_TAG: "public-safety"}}, Facts())
    with pytest.raises(ResourceNotFoundException):
        store.describe_collection("ps")
    assert state.tags("ps") == {}
    recorder = ListRecorder()
    facts = Facts()
    GuardedService(service, state, recorder=recorder).call(
        admin, "CreateCollection", {"CollectionId": "ps", "Tags": {POLICY_TAG: "public-safety", "t": "1"}}, facts)
    assert state.tags("ps") == {POLICY_TAG: "public-safety", "t": "1"}
    assert (facts.collection, facts.policy) == ("ps", "public-safety")
    (record,) = recorder.records
    assert (record["operation"], record["collection"], record["details"]["action"]) == ("CreateCollection", "ps", "set")
    store.close()
    state.close()
