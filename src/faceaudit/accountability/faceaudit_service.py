"""faceaudit's own operations (``FaceAuditService.*`` on the wire), over the review store.

Rekognition's operations know nothing of who asks; these are about nothing else, so each
call takes the :class:`~faceaudit.accountability.context.Caller`. Requests and answers are
dicts in the shapes of ``server/models/faceaudit/2026-12-01/service-2.json`` (the server
validates requests against it before they arrive here, and encodes the answers with it).

Who may call which is the role table's (faceaudit.access.roles); the review store checks
again what a role cannot say: a reviewer never reviews its own search or an item twice,
and only the searching key fetches a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.review import ReviewStore
from faceaudit.errors import InvalidParameterException

__all__ = ["FaceAuditService"]


class FaceAuditService:
    """Maps each FaceAuditService operation to the review store."""

    operations = frozenset({"ListReviewItems", "GetReviewItem", "DecideReviewItem", "GetReviewResult"})

    def __init__(self, review: ReviewStore):
        self.review = review
        self._calls: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
            "ListReviewItems": self._list_review_items,
            "GetReviewItem": lambda caller, r: self.review.blind_view(caller.key, r["ItemId"]),
            "DecideReviewItem": lambda caller, r: self.review.decide(caller, r["ItemId"], r["Decisions"]),
            "GetReviewResult": lambda caller, r: self.review.result(caller.key, r["ItemId"]),
        }
        assert set(self._calls) == self.operations

    def call(self, caller: Caller, operation: str, request: dict[str, Any],
             facts: Facts | None = None) -> dict[str, Any]:
        """Run ``operation``; ``facts`` (the search log's record of this request) learn the item and its state."""
        handler = self._calls.get(operation)
        if handler is None:
            raise InvalidParameterException(f"Operation {operation} is not supported by faceaudit")
        if facts is not None:
            facts.operation = operation
            facts.review_item = request.get("ItemId")
        answer = handler(caller, request)
        if facts is not None:
            facts.collection = answer.get("CollectionId", facts.collection)
            if "State" in answer:
                facts.review_outcome = str(answer["State"]).lower().replace("_", "-")
        return answer

    def _list_review_items(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        return self.review.pending(caller.key, max_results=request.get("MaxResults", 50),
                                   next_token=request.get("NextToken"))
