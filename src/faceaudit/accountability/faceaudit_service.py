"""faceaudit's own operations (``FaceAuditService.*`` on the wire), over the review store and the search log.

Rekognition's operations know nothing of who asks; these are about nothing else, so each
call takes the :class:`~faceaudit.accountability.context.Caller`. Requests and answers are
dicts in the shapes of ``server/models/faceaudit/2026-12-01/service-2.json`` (the server
validates requests against it before they arrive here, and encodes the answers with it).

Who may call which is the role table's (faceaudit.access.roles); the review store checks
again what a role cannot say: a reviewer never reviews its own search or an item twice,
and only the searching key fetches a result or finds the item in its list (ListReviewResults).
The log's reading operations (auditors: ListSearchLogRecords, VerifySearchLog,
GetTransparencyReport) are faceaudit.accountability.log_reading's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.log_reading import LogReader
from faceaudit.accountability.review import ReviewStore
from faceaudit.accountability.searchlog import SearchLog
from faceaudit.errors import InvalidParameterException

__all__ = ["FaceAuditService"]

# Request members of the log's reading operations that their own log records keep.
_LOGGED_READ_PARAMETERS = ("Since", "Until", "Kind", "Operation", "CollectionId", "KeyName", "Outcome",
                           "MaxResults")


class FaceAuditService:
    """Maps each FaceAuditService operation to the review store or the search log's reader.

    ``operations`` (the class's) names every one; an instance built without a ``search_log``
    serves only the review operations (its ``operations`` say so, and the app refuses the rest).
    """

    REVIEW_OPERATIONS = frozenset({"ListReviewItems", "GetReviewItem", "DecideReviewItem", "GetReviewResult",
                                   "ListReviewResults"})
    LOG_OPERATIONS = frozenset({"ListSearchLogRecords", "VerifySearchLog", "GetTransparencyReport"})
    operations = REVIEW_OPERATIONS | LOG_OPERATIONS

    def __init__(self, review: ReviewStore, search_log: SearchLog | None = None):
        self.review = review
        self.reader = LogReader(search_log) if search_log is not None else None
        self._calls: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
            "ListReviewItems": self._list_review_items,
            "GetReviewItem": lambda caller, r: self.review.blind_view(caller.key, r["ItemId"]),
            "DecideReviewItem": lambda caller, r: self.review.decide(caller, r["ItemId"], r["Decisions"]),
            "GetReviewResult": lambda caller, r: self.review.result(caller.key, r["ItemId"]),
            "ListReviewResults": self._list_review_results,
        }
        if self.reader is not None:
            reader = self.reader
            self._calls.update({
                "ListSearchLogRecords": lambda caller, r: reader.list_records(r),
                "VerifySearchLog": lambda caller, r: reader.verify(r),
                "GetTransparencyReport": lambda caller, r: reader.transparency(r),
            })
        self.operations = frozenset(self._calls)  # this instance's: without a log, fewer
        assert self.operations <= FaceAuditService.operations

    def call(self, caller: Caller, operation: str, request: dict[str, Any],
             facts: Facts | None = None) -> dict[str, Any]:
        """Run ``operation``; ``facts`` (the search log's record of this request) learn the item and its state."""
        handler = self._calls.get(operation)
        if handler is None:
            raise InvalidParameterException(f"Operation {operation} is not supported by faceaudit")
        if facts is not None:
            facts.operation = operation
            facts.review_item = request.get("ItemId")
            if operation in self.LOG_OPERATIONS:  # who read which part of the log is itself on the log
                facts.parameters.update({name: request[name] for name in _LOGGED_READ_PARAMETERS
                                         if name in request})
        answer = handler(caller, request)
        if facts is not None:
            if operation == "ListSearchLogRecords":
                facts.result["records"] = len(answer["Records"])
            elif operation == "ListReviewResults":
                facts.result["items"] = len(answer["ReviewResults"])
            facts.collection = answer.get("CollectionId", facts.collection)
            if "State" in answer:
                facts.review_outcome = str(answer["State"]).lower().replace("_", "-")
        return answer

    def _list_review_items(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        return self.review.pending(caller.key, max_results=request.get("MaxResults", 50),
                                   next_token=request.get("NextToken"))

    def _list_review_results(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        return self.review.held_searches(caller.key, max_results=request.get("MaxResults", 100),
                                         next_token=request.get("NextToken"))
