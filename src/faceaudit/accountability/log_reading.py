"""Reading the search log over the wire: filtered pages of records, verification, the transparency report.

The three FaceAuditService operations an auditor calls (ListSearchLogRecords, VerifySearchLog,
GetTransparencyReport; docs/accountability.md, "Reading the log over the wire") are answered
here, through nothing but the log's public reading methods -- :meth:`SearchLog.newest_texts`,
:meth:`SearchLog.contents`, :meth:`SearchLog.public_key_pem` -- and :class:`LogContents`, so they
read whatever storage the log is kept in, and read it from that storage on every call (a record
another server process on the same data directory wrote a moment ago is there).

Each listed record carries its stored text exactly as the chain hashed it (``Record``): an auditor
checks it offline with :func:`~faceaudit.accountability.searchlog.record_hash` and, with
``faceaudit log prove``, that it is in a checkpoint they kept.

Cost: verification and the report read the whole log (one snapshot, O(n) in the records stored)
and hash or parse every record. A listing reads only the records it walks, by seq in the database:
from the newest (or where its NextToken left off) down to the page's next match, so pages after the
first do not re-read what earlier pages passed, and a page never holds more than MaxResults records.
Its KeyName, Kind, Operation and CollectionId filters are tested in the database first (as
substrings of the stored text, when they are plain enough to be written alike in any JSON), so the
records they rule out are not even read out of it; the others are tested on the parsed record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from faceaudit.accountability.context import utc_time
from faceaudit.accountability.searchlog import (
    CHECKPOINT_FORMAT,
    KINDS,
    LogContents,
    SearchLog,
    SearchLogError,
    canonical,
)
from faceaudit.accountability.transparency import parse_since, transparency_report
from faceaudit.errors import InvalidParameterException
from faceaudit.storage.page_tokens import PageTokens, filter_digest

__all__ = ["DEFAULT_MAX_RESULTS", "MAX_RESULTS", "OUTCOMES", "LogReader", "RecordFilter"]

DEFAULT_MAX_RESULTS = 100
MAX_RESULTS = 1000
OUTCOMES = ("allowed", "denied")
_PAGE_KIND = 17  # page_tokens kind for log listings (the face store uses 1-3, review listings 16)
_TOKEN_PURPOSE = "log-listing-page-tokens"
_PLAIN = re.compile(r"[A-Za-z0-9 _.:\-]+")  # characters JSON never escapes


def _parsed_time(request: Mapping[str, Any], name: str) -> datetime | None:
    """A request's Since/Until (None when absent); InvalidParameterException naming it when not a time."""
    text = request.get(name)
    if text is None:
        return None
    try:
        return parse_since(str(text))
    except ValueError:
        raise InvalidParameterException(
            f"{name} {str(text)[:80]!r} is not an ISO-8601 date or time (e.g. 2026-12-01 or "
            "2026-12-01T09:30:00Z; UTC unless it says otherwise)") from None


def _time_bound(request: Mapping[str, Any], name: str) -> str | None:
    """A request's Since/Until as the records' own time text (comparable as strings), or None."""
    at = _parsed_time(request, name)
    return None if at is None else utc_time(at)


@dataclass(frozen=True)
class RecordFilter:
    """What a listing keeps: every condition given must hold (None: no condition)."""

    since: str | None = None  # records' time >= since
    until: str | None = None  # records' time < until
    kind: str | None = None
    operation: str | None = None
    collection: str | None = None
    key_name: str | None = None
    outcome: str | None = None  # "denied": the record has an error; "allowed": it has none

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> RecordFilter:
        since, until = _time_bound(request, "Since"), _time_bound(request, "Until")
        if since is not None and until is not None and until <= since:
            raise InvalidParameterException(f"Until ({until}) must be later than Since ({since})")
        kind, outcome = request.get("Kind"), request.get("Outcome")
        if kind is not None and kind not in KINDS:  # the model says so too; the console calls this directly
            raise InvalidParameterException(f"Kind must be one of {', '.join(KINDS)}, not {str(kind)[:40]!r}")
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidParameterException(f"Outcome must be allowed or denied, not {str(outcome)[:40]!r}")
        return cls(since, until, kind, request.get("Operation"), request.get("CollectionId"),
                   request.get("KeyName"), outcome)

    @property
    def unfiltered(self) -> bool:
        return all(value is None for value in asdict(self).values())

    def digest(self, log_id: str | None) -> bytes:
        """What a NextToken is bound to: this log and these filters (a token for others is refused)."""
        return filter_digest(canonical({"log": log_id, **asdict(self)}))

    def needles(self) -> tuple[str, ...]:
        """Substrings any JSON text of a matching record contains (a cheap test before parsing it).

        Only for values that no JSON encoder escapes, written as JSON strings: whatever the spacing
        or escaping of the stored text, a record whose ``kind`` is ``request`` holds ``"request"``.
        A necessary condition, never a sufficient one: :meth:`matches` decides.
        """
        values = (self.kind, self.operation, self.collection, self.key_name)
        return tuple(f'"{value}"' for value in values if value is not None and _PLAIN.fullmatch(value))

    def matches(self, record: Mapping[str, Any]) -> bool:
        at = record.get("time")
        if self.since is not None and not (isinstance(at, str) and at >= self.since):
            return False
        if self.until is not None and not (isinstance(at, str) and at < self.until):
            return False
        key = record.get("key")
        key = key if isinstance(key, dict) else {}
        wanted = ((self.kind, record.get("kind")), (self.operation, record.get("operation")),
                  (self.collection, record.get("collection")), (self.key_name, key.get("name")))
        if any(want is not None and want != have for want, have in wanted):
            return False
        if self.outcome is not None and (record.get("error") is not None) != (self.outcome == "denied"):
            return False
        return True


def _summary(text: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """One SearchLogRecord of the answer: the record's main fields and its stored text (None fields are dropped
    by the encoder). A stored text that is not a JSON object (a tampered row) is shown as it is."""
    if record is None:
        return {"Record": text}
    key = record.get("key")
    key = key if isinstance(key, dict) else {}
    status = record.get("status")
    fields = {"Seq": record.get("seq"), "Time": record.get("time"), "Kind": record.get("kind"),
              "KeyName": key.get("name"), "Role": key.get("role"), "Operation": record.get("operation"),
              "CollectionId": record.get("collection"), "Policy": record.get("policy"),
              "Purpose": record.get("purpose"), "Case": record.get("case"),
              "Status": status if isinstance(status, int) and not isinstance(status, bool) else None,
              "Error": record.get("error"), "Reason": record.get("reason")}
    summary: dict[str, Any] = {name: value for name, value in fields.items()
                               if value is not None and (name in ("Seq", "Status") or isinstance(value, str))}
    if not isinstance(summary.get("Seq"), int) or isinstance(summary.get("Seq"), bool):
        summary.pop("Seq", None)
    summary["Record"] = text
    return summary


def _parsed(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _kept_checkpoint(text: str | None) -> dict[str, Any] | None:
    """The Checkpoint of a VerifySearchLog request, checked for the shape ``faceaudit log checkpoint`` writes."""
    if text is None:
        return None
    try:
        kept = json.loads(text)
    except ValueError as error:
        raise InvalidParameterException(f"Checkpoint is not JSON: {error}") from None
    statement = kept.get("statement") if isinstance(kept, dict) else None
    if not isinstance(kept, dict) or kept.get("format") != CHECKPOINT_FORMAT or not isinstance(statement, dict) \
            or not isinstance(statement.get("seq"), int) or not isinstance(kept.get("public_key"), str) \
            or not isinstance(kept.get("signature"), str):
        raise InvalidParameterException(
            "Checkpoint is not a faceaudit search log checkpoint (the JSON 'faceaudit log checkpoint' writes, or "
            "the LatestCheckpoint of an earlier VerifySearchLog, with statement, signature and public_key)")
    return kept


class LogReader:
    """The auditor's reading operations over one :class:`SearchLog` (answers in the service model's shapes)."""

    def __init__(self, log: SearchLog):
        self.log = log
        self._tokens = PageTokens(log.derive_secret(_TOKEN_PURPOSE))  # alike in every process of the log

    def contents(self) -> LogContents:
        """The log as stored now (one snapshot, every host's signing key), as the CLI reads it."""
        return self.log.contents()

    # -- ListSearchLogRecords

    def list_records(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Records matching the request's filters, newest first (by seq), one page."""
        wanted = RecordFilter.from_request(request)
        limit = request.get("MaxResults", DEFAULT_MAX_RESULTS)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RESULTS:
            raise InvalidParameterException(f"MaxResults must be between 1 and {MAX_RESULTS}, not {limit!r}")
        digest = wanted.digest(self.log.log_id)
        # The token holds the seq of the next record to return, plus one (in a log as written, seq is
        # the record's stored position, which the tokens of earlier versions held): records are only
        # ever appended, so the records below it stay what they were.
        token = request.get("NextToken")
        after = self._tokens.after(token, _PAGE_KIND, 0, digest)
        page: list[dict[str, Any]] = []
        answer: dict[str, Any] = {"Records": page}
        for seq, text in self.log.newest_texts(below=after if token else None, containing=wanted.needles(),
                                               batch=limit + 1):
            record = _parsed(text)
            if (record is None and wanted.unfiltered) or (record is not None and wanted.matches(record)):
                if len(page) == limit:  # one more matches: there is a next page, starting here
                    answer["NextToken"] = self._tokens.issue(_PAGE_KIND, 0, seq + 1, digest)
                    break
                page.append(_summary(text, record))
        return answer

    # -- VerifySearchLog

    def verify(self, request: Mapping[str, Any]) -> dict[str, Any]:
        kept = _kept_checkpoint(request.get("Checkpoint"))
        contents = self.contents()
        try:
            result = contents.verify(kept)
        except SearchLogError as error:  # e.g. the kept checkpoint's public key is not one
            raise InvalidParameterException(f"Checkpoint cannot be checked: {error}") from None
        answer: dict[str, Any] = {
            "Ok": result.ok, "Records": result.records,
            "Head": {"Seq": result.head_seq, "Hash": result.head_hash},
            "Problems": [] if result.problem is None else [
                {"Seq": result.problem.seq, "Kind": result.problem.what, "Message": result.problem.message}],
            "PublicKey": self.log.public_key_pem(), "LogId": result.log_id,
            "CheckpointsChecked": result.checkpoints,
        }
        signed = [cp for cp in contents.checkpoints if isinstance(cp.get("statement"), dict)]
        if signed:  # what `faceaudit log checkpoint` writes, for `faceaudit log verify --checkpoint`
            answer["LatestCheckpoint"] = json.dumps(
                {"format": CHECKPOINT_FORMAT, **signed[-1], "public_key": self.log.public_key}, indent=2)
        return answer

    # -- GetTransparencyReport

    def transparency(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The report ``faceaudit transparency`` writes to transparency.json, over the live log."""
        since = _parsed_time(request, "Since")
        if since is None:
            raise InvalidParameterException("Since is required: the start of the report's period (e.g. 2026-12-01)")
        until = _parsed_time(request, "Until")
        report = transparency_report(self.contents(), since, until)
        return {"Report": json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)}
