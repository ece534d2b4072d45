"""Use policies as data: what each policy demands of a search, and why (docs/accountability.md).

A collection's policy is the value of its ``faceaudit:policy`` tag (CreateCollection's
``Tags``, TagResource, or ``faceaudit policy set``). The rules below are checked by
faceaudit.accountability.guard before an operation runs; this module only states them
and the pure checks of a request against them (no state, no I/O but the shipped
per-group table).

``public-safety`` is for searching among people who did not choose to be enrolled
(suspects, watch lists). Its rules, each with its reason:

* **Threshold floor 99** (FaceMatchThreshold / UserMatchThreshold). On the project's own
  audit of the default engine, at Rekognition's default 80 nine in ten people who are not
  in the gallery were matched to somebody who is (360 of 392 lineup probes), and two
  different Asian women were called a match about half the time against under 1% for two
  white men. A lower threshold is refused with the measured per-group rates in the message,
  never silently raised: the searcher must know what the number they asked for means.
* **Purpose and case reference**, from *signed* request headers only: a search of strangers
  must be attributable to a stated reason and a case file; an unsigned header could have
  been added by anyone on the way.
* **At most 10 candidates** (MaxFaces / MaxUsers): a long list of look-alikes invites
  picking one; larger requests are refused, saying so. Absent, the cap is the default
  (Rekognition documents no default of its own).
* **Two independent reviewers** before any candidate reaches the searcher (blind review,
  faceaudit.accountability.review): a machine's candidate looks more certain than it is.
* **A daily budget of searches per key** (100 per UTC day) and **no real-time pattern**
  (more than 6 searches in 60 s by one key): AWS's service terms forbid sustained
  surveillance without independent review; many frames a minute is tracking, not an
  investigation.
* **Exact search**: approximate indexes miss some true neighbours, and nobody has shown
  that they miss them evenly across groups.
* **Retention**: probe pictures at most 30 days, review items at most 90 (their decisions stay
  in the search log, without pictures); the floor applies to AssociateFaces' threshold too.

``access-control`` (people who enrolled themselves to open a door) and ``personal`` (a
person's own photo library) keep Rekognition's defaults; every request is still logged.
A collection without a policy tag behaves like Rekognition, logged with policy null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faceaudit.errors import InvalidParameterException
from faceaudit.similarity import GroupFalseMatchRates

__all__ = [
    "ACCESS_CONTROL",
    "DEFAULT_RETENTION",
    "FLOORED",
    "MAX_RETENTION_DAYS",
    "PERSONAL",
    "POLICIES",
    "POLICY_TAG",
    "PUBLIC_SAFETY",
    "RETENTION_KINDS",
    "RETENTION_TAGS",
    "SEARCHES",
    "RetentionRule",
    "SearchOperation",
    "UsePolicy",
    "below_floor_message",
    "check_policy_name",
    "check_retention_tag",
]

POLICY_TAG = "faceaudit:policy"


@dataclass(frozen=True)
class SearchOperation:
    """Where a search operation keeps its threshold and its result cap, and their defaults."""

    threshold: str  # FaceMatchThreshold or UserMatchThreshold
    default_threshold: float  # what Rekognition uses when the request says nothing
    max_results: str  # MaxFaces or MaxUsers
    matches: str  # the response's list of candidates: FaceMatches or UserMatches
    image: bool  # searched by an image (else by a stored FaceId / UserId)


# Rekognition's defaults, as faceaudit.rekognition applies them (collections.py, users.py).
SEARCHES: dict[str, SearchOperation] = {
    "SearchFaces": SearchOperation("FaceMatchThreshold", 80.0, "MaxFaces", "FaceMatches", False),
    "SearchFacesByImage": SearchOperation("FaceMatchThreshold", 80.0, "MaxFaces", "FaceMatches", True),
    "SearchUsers": SearchOperation("UserMatchThreshold", 80.0, "MaxUsers", "UserMatches", False),
    "SearchUsersByImage": SearchOperation("UserMatchThreshold", 80.0, "MaxUsers", "UserMatches", True),
}


# Other operations that carry a threshold into a collection: the floor applies to them too
# (AssociateFaces links faces to a UserID whose faces match at UserMatchThreshold; Rekognition's
# default 75, faceaudit.rekognition.users). operation -> (parameter, Rekognition's default).
FLOORED: dict[str, tuple[str, float]] = {
    **{name: (op.threshold, op.default_threshold) for name, op in SEARCHES.items()},
    "AssociateFaces": ("UserMatchThreshold", 75.0),
}

# Retention (faceaudit.accountability.retention): what is kept, and the tag that says for how long.
RETENTION_KINDS = ("faces", "probes", "review-items")
RETENTION_TAGS: dict[str, str] = {kind: f"faceaudit:retention:{kind}" for kind in RETENTION_KINDS}


@dataclass(frozen=True)
class RetentionRule:
    """How many days one kind of data is kept (from when it was indexed / searched).

    ``default_days``: when the collection's tag says nothing (None: until deleted);
    ``max_days``: the most a tag may ask for (None: no limit)."""

    default_days: int | None
    max_days: int | None = None

    def effective(self, tagged: int | None) -> int | None:
        days = self.default_days if tagged is None else tagged
        if self.max_days is not None and (days is None or days > self.max_days):
            return self.max_days
        return days


# Collections without a policy, and the policies that say nothing else. Faces are the
# collection's purpose and stay until deleted; probes and review items exist only under a
# review policy, but an item opened before the policy was removed still expires.
DEFAULT_RETENTION: dict[str, RetentionRule] = {
    "faces": RetentionRule(None), "probes": RetentionRule(30), "review-items": RetentionRule(30)}


@dataclass(frozen=True)
class UsePolicy:
    """What a policy demands of searches of its collections. ``None`` / 0 / False: no rule."""

    name: str
    summary: str
    threshold_floor: float | None = None
    requires_purpose: bool = False  # and a case reference, both signed headers
    max_results: int | None = None  # cap on MaxFaces / MaxUsers
    reviewers: int = 0  # independent reviewers before candidates are released
    daily_searches_per_key: int | None = None  # per UTC day, across the policy's collections
    realtime_searches: int | None = None  # at most this many ...
    realtime_window_s: int = 60  # ... within this many seconds, per key
    exact_search: bool = False
    retention: Mapping[str, RetentionRule] = field(default_factory=lambda: dict(DEFAULT_RETENTION))
    reasons: Mapping[str, str] = field(default_factory=dict)  # rule -> why, as the docs state it

    def rules(self) -> dict[str, Any]:
        """The rules as `faceaudit policy show` prints them."""
        return {"Name": self.name, "Summary": self.summary, "ThresholdFloor": self.threshold_floor,
                "RequiresPurposeAndCase": self.requires_purpose, "MaxResults": self.max_results,
                "Reviewers": self.reviewers, "DailySearchesPerKey": self.daily_searches_per_key,
                "RealTime": None if self.realtime_searches is None else
                {"MaxSearches": self.realtime_searches, "WindowSeconds": self.realtime_window_s},
                "ExactSearch": self.exact_search,
                "Retention": {kind: {"DefaultDays": rule.default_days, "MaxDays": rule.max_days}
                              for kind, rule in self.retention.items()},
                "Reasons": dict(self.reasons)}


PUBLIC_SAFETY = UsePolicy(
    name="public-safety",
    summary="searching among people who did not enrol themselves (suspects, watch lists)",
    threshold_floor=99.0,
    requires_purpose=True,
    max_results=10,
    reviewers=2,
    daily_searches_per_key=100,
    realtime_searches=6,
    realtime_window_s=60,
    exact_search=True,
    retention={"faces": RetentionRule(None), "probes": RetentionRule(30, 30), "review-items": RetentionRule(30, 90)},
    reasons={
        "threshold_floor": "at 80, 360 of 392 people not in a gallery were matched to somebody "
                           "(the project's lineup audit); same-group strangers matched 50.8% of the "
                           "time for Asian women against 0.59% for white men (dlib engine)",
        "purpose": "a search of strangers must be attributable to a stated purpose and case; only "
                   "a signed header proves the key holder stated them",
        "max_results": "a long list of look-alikes invites picking one",
        "reviewers": "automation bias: a machine's candidate looks more certain than it is",
        "budget": "AWS's service terms forbid sustained surveillance without independent review",
        "realtime": "many frames a minute is tracking people, not investigating a case",
        "exact_search": "approximate indexes miss true neighbours, not shown to miss them evenly by group",
        "retention": "a probe is a picture of someone who may have nothing to do with the case: kept for "
                     "review (30 days), never longer; the item's candidates go within 90 days, while the "
                     "search log keeps every decision and its reasons without any picture",
    },
)
ACCESS_CONTROL = UsePolicy(
    name="access-control",
    summary="people who enrolled themselves, e.g. to open a door; Rekognition's defaults, logged")
PERSONAL = UsePolicy(
    name="personal",
    summary="a person's own photo library; Rekognition's defaults, logged")

POLICIES: dict[str, UsePolicy] = {p.name: p for p in (PUBLIC_SAFETY, ACCESS_CONTROL, PERSONAL)}


def check_policy_name(value: object, policies: Mapping[str, UsePolicy] = POLICIES) -> str:
    """The policy name ``value`` (a tag value), or InvalidParameterException naming the known ones."""
    if isinstance(value, str) and value in policies:
        return value
    shown = repr(value)[:80]
    raise InvalidParameterException(
        f"Tag {POLICY_TAG} must be one of {', '.join(policies)}, not {shown} (docs/accountability.md)")


MAX_RETENTION_DAYS = 36_500  # a hundred years: a longer tag is a typing slip


def check_retention_tag(key: str, value: object, policy: UsePolicy | None) -> int:
    """The day count of retention tag ``key`` (a key of RETENTION_TAGS' values), or
    InvalidParameterException saying what is allowed under ``policy``."""
    kind = next(k for k, tag in RETENTION_TAGS.items() if tag == key)
    text = value.strip() if isinstance(value, str) else ""
    if not text.isdigit() or not 1 <= int(text) <= MAX_RETENTION_DAYS:
        raise InvalidParameterException(
            f"Tag {key} must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, not {repr(value)[:40]} "
            "(remove the tag to return to the default; docs/accountability.md, Retention)")
    days = int(text)
    rule = (policy.retention if policy is not None else DEFAULT_RETENTION).get(kind, DEFAULT_RETENTION[kind])
    if rule.max_days is not None and days > rule.max_days:
        why = policy.reasons.get("retention") if policy is not None else None
        raise InvalidParameterException(
            f"Tag {key} {days} is above the {rule.max_days} days that the use policy "
            f"{policy.name if policy else 'none'} allows for {kind}" + (f": {why}" if why else ""))
    return days


def _rate(row: Mapping[str, Any]) -> str:
    low, high = row["ci95"]
    return f"{row['rate']:.2%} [{low:.2%}, {high:.2%}]"


def below_floor_message(parameter: str, requested: float, floor: float, policy: str, collection_id: str,
                        rates: GroupFalseMatchRates | None, engine: str, model_version: str,
                        normalized: bool = False) -> str:
    """Why ``requested`` is refused: the floor, and what the shipped table measured at that value.

    The table holds thresholds 80, 95 and 99. A false match rate falls as the threshold rises,
    so a requested value between two measured ones lies between their rates, and one below
    the lowest has at least its rate.
    """
    shown = f"{requested:g}"
    head = (f"{parameter} {shown} is below the floor of {floor:g} set by the use policy {policy} of "
            f"collection {collection_id} (it is not raised for you: ask again with {parameter} >= {floor:g}).")
    where = f"engine {engine}, model version {model_version}"
    if rates is None or not rates.thresholds:
        return f"{head} No per-group false match table ships for this collection's {where}."
    measured = sorted(rates.thresholds, key=float)
    at_or_below = [t for t in measured if float(t) <= requested]
    above = [t for t in measured if float(t) > requested]
    lower = at_or_below[-1] if at_or_below else None
    upper = above[0] if above else None
    groups = rates.thresholds[measured[0]]
    order = sorted(groups, key=lambda g: -rates.thresholds[lower or measured[0]][g]["rate"])
    if lower is not None and math.isclose(float(lower), requested):
        what = f"at {lower}"
        cells = [f"{g} {_rate(rates.thresholds[lower][g])}" for g in order]
    elif lower is not None and upper is not None:
        what = f"at {shown}, between the rates measured at {upper} and at {lower}"
        cells = [f"{g} {rates.thresholds[upper][g]['rate']:.2%} to {rates.thresholds[lower][g]['rate']:.2%}"
                 for g in order]
    elif upper is not None:  # below every measured threshold
        what = f"at {shown}, at least the rates measured at {upper}"
        cells = [f"{g} {_rate(rates.thresholds[upper][g])}" for g in order]
    else:  # above every measured threshold yet below the floor: at most the highest's rates
        assert lower is not None
        what = f"at {shown}, at most the rates measured at {lower}"
        cells = [f"{g} {_rate(rates.thresholds[lower][g])}" for g in order]
    data = rates.provenance.get("data", "the shipped table")
    caution = " The server applies a score normalization; the table was measured without it." if normalized else ""
    return (f"{head} Measured false match rate between strangers of the same group {what} ({where}; "
            f"95% intervals; {data}): {'; '.join(cells)}.{caution}")
