"""The transparency report: what a face search service was used for, computed from its search log.

One function, :func:`transparency_report`, turns a log's records (:class:`LogContents`, read
from a live data directory or from an export, so a third party gets the same numbers) into a
plain dict: searches by collection, policy, purpose, unit, key and threshold; the candidates
they returned; what reviewers decided about the machine's candidates (the share they rejected
is a real-world false match measurement, with a Wilson 95% interval); the refusals and why;
and the moratorium periods. The pages (Markdown, HTML with plots) are drawn from this dict
by faceaudit.audit.report.transparency.

The log is verified first and the result is part of the report: figures from a log that does
not verify are shown, but flagged as not necessarily the ones written.

The report names its log by what an auditor checks it against -- the log id, the public key
that signs its checkpoints, the head hash its verification reached -- and not by where it was
read from: it goes over the wire (GetTransparencyReport) and into the console, and a data
directory's path would only tell them the host's file layout. The same dict comes from a live
directory and from an export, so the two reports are equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from faceaudit.accountability.searchlog import LogContents, utc_time
from faceaudit.stats import wilson

__all__ = ["REPORT_VERSION", "SEARCH_OPERATIONS", "parse_since", "transparency_report"]

REPORT_VERSION = 2  # 2: source.from (the path read) gave way to source.public_key
SEARCH_OPERATIONS = ("SearchFaces", "SearchFacesByImage", "SearchUsers", "SearchUsersByImage")
THRESHOLD_PARAMETERS = ("FaceMatchThreshold", "UserMatchThreshold")
DEFAULT_THRESHOLD = "Rekognition's default (80)"
NONE_STATED = "(none stated)"
NO_POLICY = "(no policy)"
NO_UNIT = "(no unit)"
# Review decisions that count as a reviewer's verdict on a machine candidate.
CONFIRM, REJECT, INCONCLUSIVE = "confirm", "reject", "inconclusive"


def parse_since(text: str) -> datetime:
    """A DATE (2026-12-01) or an ISO-8601 time; UTC unless it says otherwise."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or an ISO-8601 time: {text!r} (e.g. 2026-12-01)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _answered(record: Mapping[str, Any]) -> bool:
    return record.get("error") is None and record.get("status") == 200


def _threshold(record: Mapping[str, Any]) -> str:
    parameters = record.get("parameters") or {}
    for name in THRESHOLD_PARAMETERS:
        value = parameters.get(name)
        if isinstance(value, int | float):
            return f"{value:g}"
    return DEFAULT_THRESHOLD


def _candidates(record: Mapping[str, Any]) -> int:
    matches = record.get("matches")
    return len(matches) if isinstance(matches, list) else 0


def _breakdown(searches: Sequence[Mapping[str, Any]],
               label: Callable[[Mapping[str, Any]], str]) -> list[dict[str, Any]]:
    """Rows {value, searches, answered, refused, candidates}, most searches first."""
    rows: dict[str, dict[str, Any]] = {}
    for record in searches:
        value = label(record)
        row = rows.setdefault(value, {"value": value, "searches": 0, "answered": 0, "refused": 0, "candidates": 0})
        row["searches"] += 1
        if _answered(record):
            row["answered"] += 1
            row["candidates"] += _candidates(record)
        else:
            row["refused"] += 1
    return sorted(rows.values(), key=lambda r: (-r["searches"], r["value"]))


def _key_name(record: Mapping[str, Any]) -> str:
    key = record.get("key") or {}
    return f"{key.get('name')} ({key.get('role')})" if key else "(unknown)"


def _unit(record: Mapping[str, Any]) -> str:
    return (record.get("key") or {}).get("unit") or NO_UNIT


def _moratorium_periods(records: Iterable[Mapping[str, Any]], since: str, until: str) -> list[dict[str, Any]]:
    """Set/lift pairs (matched by id, else by scope and target) that overlap [since, until]."""
    open_: dict[tuple, dict[str, Any]] = {}
    periods: list[dict[str, Any]] = []
    for record in records:
        if record.get("kind") != "moratorium":
            continue
        details = record.get("details") or {}
        scope, target = details.get("scope"), details.get("target")
        ident = ("id", details["id"]) if details.get("id") else ("scope", scope, target)
        if details.get("action") == "set":
            open_[ident] = {"scope": scope, "target": target, "reason": details.get("reason"),
                            "set": record.get("time"), "lifted": None,
                            "by": details.get("by") or (record.get("key") or {}).get("name")}
        elif details.get("action") == "lift":
            period = open_.pop(ident, None) or open_.pop(("scope", scope, target), None)
            if period is None:  # lifted without a set in the log (set before it began)
                period = {"scope": scope, "target": target, "reason": None, "set": None, "lifted": None, "by": None}
            period["lifted"] = record.get("time")
            periods.append(period)
    periods.extend(open_.values())
    overlapping = [p for p in periods if (p["lifted"] is None or p["lifted"] >= since)
                   and (p["set"] is None or p["set"] <= until)]
    return sorted(overlapping, key=lambda p: (p["set"] or "", p["scope"] or "", p["target"] or ""))


def _reviews(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    decisions: Counter = Counter()
    items: set[str] = set()
    reasons: Counter = Counter()
    for record in records:
        details = record.get("details") or {}
        if details.get("item") is not None:
            items.add(str(details["item"]))
        for decision in details.get("decisions") or []:
            verdict = str(decision.get("decision"))
            decisions[verdict] += 1
            if verdict == REJECT and decision.get("reason"):
                reasons[str(decision["reason"])] += 1
    decided = decisions[CONFIRM] + decisions[REJECT]
    rejected = wilson(decisions[REJECT], decided)
    return {
        "items": len(items), "decisions": dict(sorted(decisions.items())),
        "confirmed": decisions[CONFIRM], "rejected": decisions[REJECT], "inconclusive": decisions[INCONCLUSIVE],
        # Each rejection is a reviewer finding that a candidate the machine put forward was not the
        # person searched for: a false match measured on real searches, not on a benchmark.
        "rejection_rate": {**rejected.as_dict(), "rate": None if decided == 0 else rejected.value,
                           "ci95": None if decided == 0 else [rejected.low, rejected.high],
                           "of": "reviewer decisions of confirm or reject on machine candidates"},
        "rejection_reasons": [{"reason": r, "count": c} for r, c in reasons.most_common()],
    }


def transparency_report(contents: LogContents, since: datetime, until: datetime | None = None) -> dict[str, Any]:
    """The report's figures over records with ``since <= time <= until`` (until: the end of the log)."""
    verification = contents.verify()
    start = utc_time(since)
    end = utc_time(until) if until is not None else "9999-12-31T23:59:59.999Z"
    everything = contents.records()
    records = [r for r in everything if isinstance(r.get("time"), str) and start <= r["time"] <= end]
    requests = [r for r in records if r.get("kind") == "request"]
    searches = [r for r in requests if r.get("operation") in SEARCH_OPERATIONS]
    answered = [r for r in searches if _answered(r)]
    refused = [r for r in requests if r.get("error") is not None]
    unauthenticated: Counter = Counter()
    for record in records:
        if record.get("kind") == "unauthenticated":
            unauthenticated.update((record.get("details") or {}).get("by_error") or {})
    candidate_counts = Counter(_candidates(r) for r in answered)
    held = [r for r in answered if (r.get("review") or {}).get("item")]
    return {
        "report": "faceaudit transparency report", "version": REPORT_VERSION,
        "period": {"since": start, "until": utc_time(until) if until is not None else None,
                   "first_record": records[0]["time"] if records else None,
                   "last_record": records[-1]["time"] if records else None},
        "source": {"log_id": contents.log_id, "public_key": contents.public_key, "records": len(everything),
                   "records_in_period": len(records), "verification": verification.as_dict()},
        "requests": {
            "total": len(requests), "answered": sum(1 for r in requests if _answered(r)), "refused": len(refused),
            "by_operation": [{"value": op, "count": n} for op, n in
                             sorted(Counter(str(r.get("operation")) for r in requests).items(),
                                    key=lambda item: (-item[1], item[0]))]},
        "searches": {
            "total": len(searches), "answered": len(answered), "refused": len(searches) - len(answered),
            "held_for_review": len(held),
            "by_collection": _breakdown(searches, lambda r: r.get("collection") or "(none)"),
            "by_policy": _breakdown(searches, lambda r: r.get("policy") or NO_POLICY),
            "by_purpose": _breakdown(searches, lambda r: r.get("purpose") or NONE_STATED),
            "by_unit": _breakdown(searches, _unit),
            "by_key": _breakdown(searches, _key_name),
            "by_threshold": _breakdown(searches, _threshold),
        },
        "candidates": {
            "returned": sum(_candidates(r) for r in answered),
            "searches_with_none": candidate_counts[0],
            "searches_with_some": len(answered) - candidate_counts[0],
            "per_search": [{"candidates": k, "searches": n} for k, n in sorted(candidate_counts.items())],
        },
        "reviews": _reviews([r for r in records if r.get("kind") == "review"]),
        "refusals": {
            "total": len(refused),
            "by_error": [{"value": e, "count": n} for e, n in Counter(str(r["error"]) for r in refused).most_common()],
            "by_reason": [{"value": reason, "count": n} for reason, n in
                          Counter(str(r.get("reason") or r["error"]) for r in refused).most_common()],
            "unauthenticated": {"total": sum(unauthenticated.values()),
                                "by_error": dict(sorted(unauthenticated.items()))},
        },
        "moratoriums": _moratorium_periods(everything, start, end),
        "policy_changes": [{"time": r.get("time"), "key": (r.get("key") or {}).get("name"),
                            "details": r.get("details")} for r in records if r.get("kind") == "policy"],
    }
