"""GuardedService: Rekognition's operations behind the moratorium, the use policies and the budgets.

``GuardedService(service, state).call(caller, operation, request, facts)`` is what the
server calls once a request's signature and role are checked. Before the operation runs
it refuses, in Rekognition's errors and saying why:

1. a search under a moratorium in force on the collection's policy, the collection or
   the key (AccessDeniedException naming the moratorium, since when and why);
2. a search breaking the collection's use policy (faceaudit.accountability.policies): a
   threshold below the floor (InvalidParameterException with the measured per-group rates
   at the requested value, never silently raised), MaxFaces / MaxUsers above the cap, no
   signed purpose and case (AccessDeniedException);
3. a search needing blind review on a server without a review queue (fail closed);
4. a search over the key's daily budget or in a real-time pattern (AccessDeniedException).

It answers the tag operations (TagResource, UntagResource, ListTagsForResource and
CreateCollection's ``Tags``) from faceaudit.accountability.state; only an admin key may
set, change or remove the ``faceaudit:policy`` tag and the ``faceaudit:retention:*`` tags
(faceaudit.accountability.retention), whose day counts are checked against the policy's maxima.
The threshold floor applies to every operation carrying a threshold into a collection under
the policy (policies.FLOORED: the searches and AssociateFaces). A search under a review policy is
handed to the :class:`ReviewQueue` and answered with no candidates and the review item's
id in a response header. Throughout it fills ``facts`` -- what the search log records.

Moratorium switches and policy changes are appended to an optional :class:`Recorder`
(the search log); a change that cannot be recorded is undone and the error raised.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from faceaudit.access.keys import AccessKey
from faceaudit.access.roles import ADMIN
from faceaudit.accountability.context import REVIEW_ITEM_HEADER, Caller, Facts, key_fields, utc_time
from faceaudit.accountability.policies import (
    FLOORED,
    POLICIES,
    POLICY_TAG,
    RETENTION_TAGS,
    SEARCHES,
    SearchOperation,
    UsePolicy,
    below_floor_message,
    check_policy_name,
    check_retention_tag,
)
from faceaudit.accountability.retention import RetentionLedger, record_retention_change
from faceaudit.accountability.state import AccountabilityState, Moratorium, StateError
from faceaudit.errors import (
    AccessDeniedException,
    InvalidParameterException,
    RekognitionError,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from faceaudit.images import image_bytes_from_request
from faceaudit.rekognition.service import RekognitionService
from faceaudit.storage import FaceStore
from faceaudit.storage.base import SEARCH_EXACT

__all__ = ["TAG_OPERATIONS", "GuardedService", "PolicyDenied", "Recorder", "ReviewQueue", "event_record",
           "lift_moratorium", "require_exact_search", "search_mode", "set_collection_policy",
           "set_moratorium"]

log = logging.getLogger("faceaudit.guard")
TAG_OPERATIONS = frozenset({"TagResource", "UntagResource", "ListTagsForResource"})
MAX_TAGS = 50  # per collection, as Rekognition allows
MAX_PURPOSE_CHARS = 500
MAX_CASE_CHARS = 200
IMAGE_FIELDS = ("Image", "SourceImage", "TargetImage")
# Request parameters the log keeps (never an image, never ExternalImageId).
LOGGED_PARAMETERS = ("FaceMatchThreshold", "UserMatchThreshold", "SimilarityThreshold", "MaxFaces", "MaxUsers",
                     "QualityFilter", "FaceId", "UserId", "MaxResults")
# Response lists counted in facts.result.
RESULT_COUNTS = {"FaceMatches": "matches", "UserMatches": "matches", "FaceRecords": "faces",
                 "FaceDetails": "faces", "Faces": "faces", "UnindexedFaces": "unindexed",
                 "UnmatchedFaces": "unmatched", "UnsearchedFaces": "unsearched", "DeletedFaces": "deleted",
                 "CollectionIds": "collections",
                 "Users": "users", "AssociatedFaces": "associated", "DisassociatedFaces": "disassociated"}


class ReviewQueue(Protocol):
    def requires_review(self, policy: str) -> int: ...      # number of independent reviewers needed (0 = none)
    def open_item(self, caller: Caller, collection_id: str, policy: str, probe: bytes,
                  response: dict, facts: Facts) -> str: ...  # stores probe + candidates (FaceId, Similarity), returns item id  # noqa: E501
    def keep_face_crops(self, collection_id: str, image: bytes, faces: list[dict]) -> None: ...
        # after IndexFaces into a review-policy collection: faces = response["FaceRecords"] (Face.FaceId, Face.BoundingBox)  # noqa: E501
    def forget_faces(self, collection_id: str, face_ids: list[str]) -> None: ...
    def forget_collection(self, collection_id: str) -> None: ...


class Recorder(Protocol):
    def append(self, record: Mapping[str, Any]) -> Mapping[str, Any]: ...   # returns the stored record (with seq, hash)


class PolicyDenied(AccessDeniedException):
    """A refusal by the accountability layer; ``reason`` is what the log says (short, no secrets)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _with_reason(error: RekognitionError, reason: str) -> RekognitionError:
    error.reason = reason  # type: ignore[attr-defined]  # read by the server's log line
    return error


# ------------------------------------------------------------------ records of changes


def event_record(kind: str, details: Mapping[str, Any], *, at: datetime | None = None, key: AccessKey | None = None,
                 request_id: str | None = None, operation: str | None = None, collection: str | None = None,
                 policy: str | None = None) -> dict[str, Any]:
    """A non-request log record (kind "moratorium" or "policy"; PLAN's record shape)."""
    return {"kind": kind, "time": utc_time(at), "request_id": request_id,
            "key": key_fields(key), "operation": operation, "collection": collection, "policy": policy,
            "details": dict(details)}


def set_moratorium(state: AccountabilityState, scope: str, target: str, reason: str, actor: str, *,
                   recorder: Recorder | None = None, key: AccessKey | None = None) -> Moratorium:
    """Suspend searches of a policy, a collection or a key; recorded, or undone if it cannot be."""
    if scope == "policy":
        check_policy_name(target)
    moratorium = state.set_moratorium(scope, target, reason, actor)
    _record_moratorium(state, moratorium, "set", recorder, key)
    return moratorium


def lift_moratorium(state: AccountabilityState, moratorium_id: int, actor: str, *,
                    recorder: Recorder | None = None, key: AccessKey | None = None) -> Moratorium:
    moratorium = state.lift_moratorium(moratorium_id, actor)
    _record_moratorium(state, moratorium, "lift", recorder, key)
    return moratorium


def _record_moratorium(state: AccountabilityState, m: Moratorium, action: str, recorder: Recorder | None,
                       key: AccessKey | None) -> None:
    if recorder is None:
        return
    at = m.set_at if action == "set" else (m.lifted_at or datetime.now(UTC))
    record = event_record(
        "moratorium", {"action": action, "scope": m.scope, "target": m.target, "reason": m.reason, "id": m.id,
                       "by": m.set_by if action == "set" else m.lifted_by},
        at=at, key=key, collection=m.target if m.scope == "collection" else None,
        policy=m.target if m.scope == "policy" else None)
    try:
        recorder.append(record)
    except BaseException:
        state.undo_moratorium_change(m)  # an unlogged switch must not stay in force (nor lifted)
        raise


def search_mode(store: FaceStore | None, collection_id: str) -> str:
    """How the store searches the collection: "exact" for a store that cannot search otherwise."""
    mode_of = getattr(store, "search_mode", None)  # stores with an approximate index say per collection
    return SEARCH_EXACT if mode_of is None else str(mode_of(collection_id))


def require_exact_search(store: FaceStore | None, collection_id: str, policy: str | None,
                         policies: Mapping[str, UsePolicy] = POLICIES) -> None:
    """Put the collection in exact search mode when ``policy`` requires it (a no-op for a store
    that only searches exactly). Called before the policy tag is written, so a collection under
    such a policy is never searched approximately."""
    rules = policies.get(policy) if policy is not None else None
    set_mode = getattr(store, "set_search_mode", None)
    if rules is not None and rules.exact_search and set_mode is not None:
        set_mode(collection_id, SEARCH_EXACT)


def set_collection_policy(state: AccountabilityState, collection_id: str, policy: str | None, actor: str, *,
                          store: FaceStore | None = None, recorder: Recorder | None = None,
                          key: AccessKey | None = None, request_id: str | None = None,
                          operation: str | None = None) -> str | None:
    """Set (or with ``None`` remove) a collection's policy tag; returns the previous policy.

    The caller checks that the collection exists and that the actor may. ``store``: where the
    collection's search mode is kept (see :func:`require_exact_search`)."""
    if policy is None:
        before = state.remove_tags(collection_id, [POLICY_TAG])
    else:
        require_exact_search(store, collection_id, check_policy_name(policy))
        before = state.set_tags(collection_id, {POLICY_TAG: policy}, limit=MAX_TAGS)
    _record_policy_change(state, collection_id, before, state.tags(collection_id), actor, recorder, key,
                          request_id, operation)
    return before.get(POLICY_TAG)


def _record_policy_change(state: AccountabilityState, collection_id: str, before: Mapping[str, str],
                          after: Mapping[str, str], actor: str, recorder: Recorder | None, key: AccessKey | None,
                          request_id: str | None, operation: str | None) -> None:
    old, new = before.get(POLICY_TAG), after.get(POLICY_TAG)
    if recorder is None or old == new:
        return
    record = event_record("policy", {"action": "remove" if new is None else "set", "previous": old,
                                     "policy": new, "by": actor},
                          key=key, request_id=request_id, operation=operation, collection=collection_id,
                          policy=new)
    try:
        recorder.append(record)
    except BaseException:
        state.restore_tags(collection_id, before, if_current=after)
        raise


# ------------------------------------------------------------------ the guarded service


class GuardedService:
    """``service`` behind the accountability rules; ``review_queue`` and ``recorder`` optional.

    ``policies``: name -> UsePolicy (default faceaudit.accountability.policies.POLICIES; tests
    pass variants with small budgets)."""

    def __init__(self, service: RekognitionService, state: AccountabilityState, *,
                 review_queue: ReviewQueue | None = None, recorder: Recorder | None = None,
                 policies: Mapping[str, UsePolicy] = POLICIES, ledger: RetentionLedger | None = None):
        self.service = service
        self.state = state
        self.review_queue = review_queue
        self.recorder = recorder
        self.ledger = ledger  # when each indexed face was stored (faceaudit.accountability.retention)
        self.policies = dict(policies)
        self._create_lock = threading.Lock()

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self.service.operations) | TAG_OPERATIONS

    def close(self) -> None:
        self.state.close()

    # -- the one entry point

    def call(self, caller: Caller, operation: str, request: dict[str, Any], facts: Facts) -> dict[str, Any]:
        facts.operation = operation
        facts.purpose, facts.case = caller.purpose, caller.case
        images = self._images(request)
        facts.image_sha256 = [hashlib.sha256(data).hexdigest() for data in images.values()]
        if operation in TAG_OPERATIONS:
            return self._tag_operation(caller, operation, request, facts)
        if operation == "CreateCollection":
            facts.collection = request.get("CollectionId") if isinstance(request.get("CollectionId"), str) else None
            return self._create_collection(caller, request, facts)
        collection_id = request.get("CollectionId")
        if not isinstance(collection_id, str):  # no collection (DetectFaces...), or the service refuses it
            facts.parameters = self._parameters(request)
            response = self.service.call(operation, request)
            self._count(operation, response, facts)
            return response
        facts.collection = collection_id
        facts.policy = self.state.tag(collection_id, POLICY_TAG)
        search = SEARCHES.get(operation)
        # What was asked for, as it would run (a search without a threshold runs at the default), so a
        # refused search is logged with it too.
        facts.parameters = self._parameters(request, search)
        # FLOORED: the searches and AssociateFaces, whose thresholds the policy's floor governs
        policy = self._policy_of(collection_id, facts.policy) if operation in FLOORED or operation == "IndexFaces" \
            else None
        reviewers = self._reviewers(policy)
        if search is not None:
            request = self._admit_search(caller, search, request, collection_id, policy, reviewers, facts)
        elif operation in FLOORED and policy is not None:  # AssociateFaces: the floor, nothing else
            request = self._check_floor(*FLOORED[operation], dict(request), collection_id, policy)
        elif operation == "IndexFaces" and reviewers and self.review_queue is None:
            raise PolicyDenied(self._no_review_message(collection_id, policy, "index faces into it"),
                               "no review queue for a review policy")
        facts.parameters = self._parameters(request, search)
        tags_version = self.state.tags_version(collection_id) if operation == "DeleteCollection" else 0

        response = self.service.call(operation, request)
        self._count(operation, response, facts)

        if search is not None and reviewers and policy is not None:
            return self._withhold_for_review(caller, search, collection_id, policy, images, response, facts)
        if operation == "IndexFaces" and reviewers and self.review_queue is not None:
            self._keep_crops(collection_id, images, response)
        if operation == "IndexFaces" and self.ledger is not None:
            try:
                self.ledger.note_faces(collection_id, [r["Face"]["FaceId"] for r in response.get("FaceRecords", [])],
                                       caller.at)
            except Exception:  # the faces are stored; the next purge notes them, later (kept longer, not shorter)
                log.exception("noting indexed faces of %s in the retention ledger failed", collection_id)
        elif operation == "DeleteFaces":
            if self.review_queue is not None:
                self.review_queue.forget_faces(collection_id, list(response.get("DeletedFaces", [])))
            if self.ledger is not None:
                self.ledger.forget_faces(collection_id, list(response.get("DeletedFaces", [])))
        elif operation == "DeleteCollection":
            if self.ledger is not None:
                self.ledger.forget_collection(collection_id)
            # Only tags written before the delete: a collection of the same id created meanwhile keeps its own.
            self.state.forget_collection(collection_id, up_to_version=tags_version)
            if self.review_queue is not None:
                self.review_queue.forget_collection(collection_id)
        return response

    # -- before the operation

    def _policy_of(self, collection_id: str, name: str | None) -> UsePolicy | None:
        if name is None:
            return None
        policy = self.policies.get(name)
        if policy is None:  # a tag written by a faceaudit that knew more policies: refuse, don't guess
            raise PolicyDenied(f"Collection {collection_id} is under the use policy {name!r}, which this "
                               f"faceaudit does not know ({', '.join(self.policies)}); nothing is done with it",
                               f"unknown policy {name!r}")
        return policy

    def _reviewers(self, policy: UsePolicy | None) -> int:
        if policy is None:
            return 0
        asked = self.review_queue.requires_review(policy.name) if self.review_queue is not None else 0
        return max(policy.reviewers, asked)

    @staticmethod
    def _no_review_message(collection_id: str | None, policy: UsePolicy | None, what: str) -> str:
        name = policy.name if policy else "?"
        return (f"Collection {collection_id} is under the use policy {name}, which requires blind human review; "
                f"this server has no review queue, so it refuses to {what} (docs/accountability.md)")

    def _admit_search(self, caller: Caller, search: SearchOperation, request: dict[str, Any],
                      collection_id: str, policy: UsePolicy | None, reviewers: int, facts: Facts) -> dict[str, Any]:
        """The moratorium, then the policy's rules, then the review queue, then the budget."""
        self._check_moratoria(caller, collection_id, policy)
        if policy is None:
            return request
        request = self._check_rules(caller, search, request, collection_id, policy)
        facts.parameters = self._parameters(request, search)
        if reviewers and self.review_queue is None:
            raise PolicyDenied(self._no_review_message(collection_id, policy, "search it"),
                               "no review queue for a review policy")
        if policy.daily_searches_per_key is not None or policy.realtime_searches is not None:
            self._spend_budget(caller, policy)
        return request

    def _check_moratoria(self, caller: Caller, collection_id: str, policy: UsePolicy | None) -> None:
        found = self.state.moratoria_on(policy=policy.name if policy else None, collection=collection_id,
                                        key=caller.key.name)
        if not found:
            return
        m = found[0]
        on = {"policy": f"the use policy {m.target}", "collection": f"collection {m.target}",
              "key": f"the key '{m.target}'"}[m.scope]
        more = f" ({len(found) - 1} more in force)" if len(found) > 1 else ""
        raise PolicyDenied(
            f"Searches are suspended: moratorium {m.id} on {on}, in force since {utc_time(m.set_at)}: "
            f"{m.reason}{more}", f"moratorium {m.id} ({m.scope} {m.target})")

    def _check_rules(self, caller: Caller, search: SearchOperation, request: dict[str, Any], collection_id: str,
                     policy: UsePolicy) -> dict[str, Any]:
        request = self._check_floor(search.threshold, search.default_threshold, dict(request), collection_id, policy)
        if policy.max_results is not None:
            asked = request.get(search.max_results)
            if asked is None:
                request[search.max_results] = policy.max_results  # Rekognition documents no default
            elif isinstance(asked, int) and not isinstance(asked, bool) and asked > policy.max_results:
                raise _with_reason(InvalidParameterException(
                    f"{search.max_results} {asked} is above the cap of {policy.max_results} set by the use "
                    f"policy {policy.name} of collection {collection_id}: ask for at most {policy.max_results}"),
                    f"{search.max_results} {asked} above the cap {policy.max_results} of {policy.name}")
        if policy.requires_purpose:
            self._check_purpose(caller, collection_id, policy)
        if policy.exact_search:
            mode = search_mode(self.service.store, collection_id)
            if mode != SEARCH_EXACT:
                raise PolicyDenied(
                    f"Collection {collection_id} is searched in mode {mode!r}; its use policy {policy.name} "
                    f"requires exact search (an approximate index's misses need not fall evenly across groups): "
                    f"set its search mode to exact, or set the policy again, which does", f"search mode {mode}")
        return request

    def _check_floor(self, parameter: str, default: float, request: dict[str, Any], collection_id: str,
                     policy: UsePolicy) -> dict[str, Any]:
        """``request`` with ``parameter`` at or above the policy's floor, or InvalidParameterException
        stating the floor and the measured per-group rates at the value asked (never raised for you)."""
        if policy.threshold_floor is None:
            return request
        given = request.get(parameter)
        value = default if given is None else given
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameterException(f"{parameter} must be a number from 0 to 100")
        if float(value) < policy.threshold_floor:
            message = self._below_floor(parameter, float(value), collection_id, policy)
            if given is None:
                message = f"{parameter} was not given, and Rekognition's default is {default:g}. " + message
            raise _with_reason(InvalidParameterException(message),
                               f"{parameter} {float(value):g} below the floor "
                               f"{policy.threshold_floor:g} of {policy.name}")
        request[parameter] = float(value)
        return request

    def _below_floor(self, parameter: str, value: float, collection_id: str, policy: UsePolicy) -> str:
        from faceaudit.runtime import engine_for_model_version
        from faceaudit.similarity import GroupFalseMatchRates

        store = self.service.store
        if store is None:
            raise InvalidParameterException("This faceaudit service was started without storage")
        model_version = store.describe_collection(collection_id).face_model_version
        spec = engine_for_model_version(model_version)
        try:
            normalized = self.service.scoring.normalized
        except Exception:  # the scoring could not be built; the table still says what it says
            normalized = False
        assert policy.threshold_floor is not None
        return below_floor_message(parameter, value, policy.threshold_floor, policy.name, collection_id,
                                   GroupFalseMatchRates.for_model_version(model_version),
                                   spec.name if spec else "unknown", model_version, normalized)

    @staticmethod
    def _check_purpose(caller: Caller, collection_id: str, policy: UsePolicy) -> None:
        missing = [name for name, value in (("x-faceaudit-purpose", caller.purpose),
                                            ("x-faceaudit-case", caller.case)) if value is None]
        if missing:
            raise PolicyDenied(
                f"Searches of collection {collection_id} (use policy {policy.name}) must state a purpose and a "
                f"case reference in signed request headers; missing or not covered by the signature: "
                f"{', '.join(missing)}. An unsigned header does not count: add them in a boto3 'before-sign' "
                f"event hook (docs/accountability.md)", "no signed " + " and ".join(missing))
        assert caller.purpose is not None and caller.case is not None
        for name, value, limit in (("x-faceaudit-purpose", caller.purpose, MAX_PURPOSE_CHARS),
                                   ("x-faceaudit-case", caller.case, MAX_CASE_CHARS)):
            if len(value) > limit or not value.isprintable():
                raise InvalidParameterException(f"The {name} header must be at most {limit} printable characters")

    def _spend_budget(self, caller: Caller, policy: UsePolicy) -> None:
        admission = self.state.admit_search(
            caller.key.name, policy.name, caller.at, daily_limit=policy.daily_searches_per_key,
            window_s=policy.realtime_window_s, window_limit=policy.realtime_searches)
        if admission.admitted:
            return
        who = f"The key '{caller.key.name}'"
        if admission.refused_by == "budget":
            raise PolicyDenied(
                f"{who} has used its daily budget of {policy.daily_searches_per_key} searches of {policy.name} "
                f"collections for {caller.at.astimezone(UTC):%Y-%m-%d} (UTC); it renews at 00:00 UTC. Sustained "
                f"searching needs independent review, not a larger budget (docs/accountability.md)",
                f"daily budget of {policy.daily_searches_per_key} {policy.name} searches used")
        wait = math.ceil(admission.retry_after_s or 0.0)
        raise PolicyDenied(
            f"{who} made {admission.in_window} searches of {policy.name} collections in the last "
            f"{policy.realtime_window_s} s (at most {policy.realtime_searches}): searching many frames a "
            f"minute is real-time identification, which this policy refuses. Next search possible in "
            f"{wait} s", f"real-time pattern: {admission.in_window} searches in {policy.realtime_window_s} s")

    # -- what the request and the answer say, for the log

    def _images(self, request: Mapping[str, Any]) -> dict[str, bytes]:
        found = {}
        for name in IMAGE_FIELDS:
            if request.get(name) is None:
                continue
            try:
                found[name] = image_bytes_from_request(request[name], bucket_dir=self.service.bucket_dir)
            except RekognitionError:
                continue  # the operation reports it
        return found

    @staticmethod
    def _parameters(request: Mapping[str, Any], search: SearchOperation | None = None) -> dict[str, Any]:
        """The logged parameters as the operation runs them: a search without a threshold runs at the default."""
        if search is not None and request.get(search.threshold) is None:
            request = {**request, search.threshold: search.default_threshold}
        return {name: request[name] for name in LOGGED_PARAMETERS if request.get(name) is not None}

    @staticmethod
    def _count(operation: str, response: Mapping[str, Any], facts: Facts) -> None:
        for name, counted in RESULT_COUNTS.items():
            if isinstance(response.get(name), list):
                facts.result[counted] = facts.result.get(counted, 0) + len(response[name])
        if "SearchedFaceBoundingBox" in response or "SearchedFace" in response:
            facts.result["faces"] = facts.result.get("faces", 0) + 1  # the face searched with
        if operation in SEARCHES or operation == "CompareFaces":
            matches = response.get("FaceMatches") or response.get("UserMatches") or []
            facts.matches = [_match(m) for m in matches]

    # -- after the operation

    def _withhold_for_review(self, caller: Caller, search: SearchOperation, collection_id: str, policy: UsePolicy,
                             images: Mapping[str, bytes], response: dict[str, Any], facts: Facts) -> dict[str, Any]:
        assert self.review_queue is not None
        probe = images.get("Image", b"")  # a search by FaceId / UserId has no probe image
        item = self.review_queue.open_item(caller, collection_id, policy.name, probe, response, facts)
        facts.review_item = item
        facts.extra_headers.append((REVIEW_ITEM_HEADER, item))
        return {**response, search.matches: []}  # candidates only after review

    def _keep_crops(self, collection_id: str, images: Mapping[str, bytes], response: Mapping[str, Any]) -> None:
        assert self.review_queue is not None
        records = list(response.get("FaceRecords", []))
        if not records:
            return
        try:
            self.review_queue.keep_face_crops(collection_id, images.get("Image", b""), records)
        except BaseException:
            # A face reviewers could never be shown must not stay searchable.
            self.service.call("DeleteFaces", {"CollectionId": collection_id,
                                              "FaceIds": [r["Face"]["FaceId"] for r in records]})
            raise

    # -- collections and their tags

    def _create_collection(self, caller: Caller, request: dict[str, Any], facts: Facts) -> dict[str, Any]:
        collection_id = request.get("CollectionId")
        tags = self._valid_tags(caller, request.get("Tags") or {})
        facts.policy = tags.get(POLICY_TAG)
        store = self.service.store
        if store is None or not isinstance(collection_id, str):
            return self.service.call("CreateCollection", request)  # the service says what is wrong
        with self._create_lock:
            try:
                store.describe_collection(collection_id)
                exists = True
            except ResourceNotFoundException:
                exists = False
            if exists:  # Rekognition's ResourceAlreadyExistsException; its tags stay as they are
                return self.service.call("CreateCollection", request)
            # Tags first: a crash before the collection exists leaves tags of no collection, which the
            # next CreateCollection of that id replaces -- never a collection without its policy.
            before = self.state.set_tags(collection_id, tags, replace=True)
            try:
                response = self.service.call("CreateCollection", request)
            except BaseException:
                self.state.restore_tags(collection_id, before, if_current=tags)
                raise
            # If this fails the collection stays refused to search (see _check_rules) until it is set.
            require_exact_search(store, collection_id, tags.get(POLICY_TAG), self.policies)
        if POLICY_TAG in tags or any(key in tags for key in RETENTION_TAGS.values()):
            try:
                _record_policy_change(self.state, collection_id, {}, tags, caller.key.name, self.recorder,
                                      caller.key, caller.request_id, "CreateCollection")
                record_retention_change(collection_id, {}, tags, caller.key.name, self.recorder, key=caller.key,
                                        request_id=caller.request_id, operation="CreateCollection")
            except BaseException:  # its policy was taken back: the collection must not stay without it
                self.service.call("DeleteCollection", {"CollectionId": collection_id})
                self.state.forget_collection(collection_id)
                raise
        return response

    def _valid_tags(self, caller: Caller, tags: object, current_policy: str | None = None) -> dict[str, str]:
        if not isinstance(tags, Mapping):
            raise InvalidParameterException("Tags must be a map of tag keys to values")
        for key, value in tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidParameterException("Tag keys and values must be strings")
            if key.lower().startswith("aws:"):
                raise InvalidParameterException(f"Tag keys starting with 'aws:' are reserved: {key[:128]!r}")
        if len(tags) > MAX_TAGS:
            raise ServiceQuotaExceededException(f"A collection can have at most {MAX_TAGS} tags, not {len(tags)}")
        if POLICY_TAG in tags:
            check_policy_name(tags[POLICY_TAG], self.policies)
            self._admin_only(caller, "set")
        retention = [key for key in RETENTION_TAGS.values() if key in tags]
        if retention:
            self._admin_only(caller, "set", retention[0])
            policy_name = tags.get(POLICY_TAG, current_policy)
            for key in retention:
                check_retention_tag(key, tags[key], self.policies.get(policy_name) if policy_name else None)
        return dict(tags)

    @staticmethod
    def _admin_only(caller: Caller, what: str, tag: str = POLICY_TAG) -> None:
        if caller.key.role != ADMIN:
            whose = "use policy" if tag == POLICY_TAG else "retention"
            raise PolicyDenied(
                f"The key '{caller.key.name}' (role {caller.key.role}) may not {what} the {tag} tag: "
                f"a collection's {whose} is the admin's (docs/accountability.md)",
                f"role {caller.key.role} may not {what} {tag}")

    def _collection_of_arn(self, arn: object) -> str:
        store = self.service.store
        if store is None:
            raise InvalidParameterException("This faceaudit service was started without storage")
        if not isinstance(arn, str) or ":collection/" not in arn:
            raise ResourceNotFoundException(f"No faceaudit resource has the ARN {str(arn)[:300]!r}: "
                                            "only collections are tagged (CreateCollection's CollectionArn)")
        collection_id = arn.rsplit(":collection/", 1)[1]
        try:
            collection = store.describe_collection(collection_id)
        except (ResourceNotFoundException, InvalidParameterException):
            collection = None
        if collection is None or collection.arn != arn:
            raise ResourceNotFoundException(f"No collection has the ARN {arn[:300]!r}")
        return collection_id

    def _tag_operation(self, caller: Caller, operation: str, request: dict[str, Any], facts: Facts) -> dict[str, Any]:
        collection_id = self._collection_of_arn(request.get("ResourceArn"))
        facts.collection = collection_id
        policy = self.state.tag(collection_id, POLICY_TAG)
        facts.policy = policy
        if operation == "ListTagsForResource":
            return {"Tags": self.state.tags(collection_id)}
        if operation == "TagResource":
            tags = self._valid_tags(caller, request.get("Tags") or {}, policy)
            require_exact_search(self.service.store, collection_id, tags.get(POLICY_TAG), self.policies)
            try:
                before = self.state.set_tags(collection_id, tags, limit=MAX_TAGS)
            except StateError as error:
                raise ServiceQuotaExceededException(str(error)) from None
        else:
            keys = request.get("TagKeys") or []
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise InvalidParameterException("TagKeys must be a list of tag keys")
            if POLICY_TAG in keys and policy is not None:
                self._admin_only(caller, "remove")
            present = self.state.tags(collection_id)
            for key in RETENTION_TAGS.values():
                if key in keys and key in present:
                    self._admin_only(caller, "remove", key)
            before = self.state.remove_tags(collection_id, keys)
        after = self.state.tags(collection_id)
        facts.policy = after.get(POLICY_TAG)
        _record_policy_change(self.state, collection_id, before, after, caller.key.name, self.recorder,
                              caller.key, caller.request_id, operation)
        try:
            record_retention_change(collection_id, before, after, caller.key.name, self.recorder, key=caller.key,
                                    request_id=caller.request_id, operation=operation)
        except BaseException:  # an unlogged retention change must not stay
            self.state.restore_tags(collection_id, before, if_current=after)
            raise
        return {}


def _match(match: Mapping[str, Any]) -> dict[str, Any]:
    """A candidate as the log keeps it: its id and similarity."""
    if "User" in match:
        return {"UserId": match["User"].get("UserId"), "Similarity": match.get("Similarity")}
    face = match.get("Face") or {}
    found = {"Similarity": match.get("Similarity")}
    if face.get("FaceId"):
        found["FaceId"] = face["FaceId"]
    return found
