"""The use policies as data, and the message a search below the floor gets (no server, no models)."""

from __future__ import annotations

import pytest

from faceaudit.accountability.policies import (
    POLICIES,
    POLICY_TAG,
    PUBLIC_SAFETY,
    SEARCHES,
    below_floor_message,
    check_policy_name,
)
from faceaudit.errors import InvalidParameterException
from faceaudit.rekognition import collections, users
from faceaudit.runtime import ENGINES
from faceaudit.similarity import GroupFalseMatchRates


def test_the_three_policies_and_the_tag_key():
    assert list(POLICIES) == ["public-safety", "access-control", "personal"]
    assert POLICY_TAG == "faceaudit:policy"
    rules = PUBLIC_SAFETY.rules()
    assert (rules["ThresholdFloor"], rules["MaxResults"], rules["Reviewers"]) == (99.0, 10, 2)
    assert rules["RequiresPurposeAndCase"] and rules["ExactSearch"]
    assert rules["DailySearchesPerKey"] == 100 and rules["RealTime"] == {"MaxSearches": 6, "WindowSeconds": 60}
    assert set(rules["Reasons"]) >= {"threshold_floor", "purpose", "max_results", "reviewers", "budget",
                                     "realtime", "exact_search"}
    for name in ("access-control", "personal"):  # Rekognition's defaults: no rule at all
        p = POLICIES[name]
        assert (p.threshold_floor, p.max_results, p.reviewers, p.daily_searches_per_key, p.realtime_searches,
                p.requires_purpose, p.exact_search) == (None, None, 0, None, None, False, False)


def test_search_defaults_are_the_operations_own():
    assert SEARCHES["SearchFacesByImage"].default_threshold == collections.DEFAULT_MATCH_THRESHOLD
    assert SEARCHES["SearchFaces"].default_threshold == collections.DEFAULT_MATCH_THRESHOLD
    assert SEARCHES["SearchUsers"].default_threshold == users.DEFAULT_SEARCH_THRESHOLD
    assert SEARCHES["SearchUsersByImage"].default_threshold == users.DEFAULT_SEARCH_THRESHOLD


@pytest.mark.parametrize("value", ["Public-Safety", "", None, 3, "none"])
def test_an_unknown_policy_name_is_refused_with_the_known_ones(value):
    with pytest.raises(InvalidParameterException) as refused:
        check_policy_name(value)
    assert "public-safety, access-control, personal" in refused.value.message
    assert check_policy_name("personal") == "personal"


def _table(engine: str = "dlib") -> GroupFalseMatchRates:
    rates = GroupFalseMatchRates.for_model_version(ENGINES[engine].model_version)
    assert rates is not None
    return rates


@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_at_80_the_message_gives_the_floor_and_every_groups_measured_rate(engine_name):
    rates = _table(engine_name)
    message = below_floor_message("FaceMatchThreshold", 80.0, 99.0, "public-safety", "suspects", rates, engine_name,
                                  ENGINES[engine_name].model_version)
    assert "FaceMatchThreshold 80 is below the floor of 99" in message and "collection suspects" in message
    assert "not raised for you" in message and f"engine {engine_name}" in message
    at_80 = rates.thresholds["80"]
    for group, row in at_80.items():
        low, high = row["ci95"]
        assert f"{group} {row['rate']:.2%} [{low:.2%}, {high:.2%}]" in message
    worst = max(at_80, key=lambda g: at_80[g]["rate"])
    assert message.index(worst) < min(message.index(g) for g in at_80 if g != worst)  # worst group first


def test_between_two_measured_thresholds_the_message_gives_the_bracket():
    rates = _table()
    message = below_floor_message("UserMatchThreshold", 90.0, 99.0, "public-safety", "c", rates, "dlib", "1.0")
    assert "at 90, between the rates measured at 95 and at 80" in message
    row80, row95 = rates.thresholds["80"]["female Asian"], rates.thresholds["95"]["female Asian"]
    assert f"female Asian {row95['rate']:.2%} to {row80['rate']:.2%}" in message


def test_below_every_measured_threshold_the_rate_is_at_least_the_lowest_ones():
    message = below_floor_message("FaceMatchThreshold", 50.0, 99.0, "public-safety", "c", _table(), "dlib", "1.0")
    assert "at 50, at least the rates measured at 80" in message


def test_without_a_shipped_table_the_message_says_so():
    message = below_floor_message("FaceMatchThreshold", 80.0, 99.0, "public-safety", "c", None, "x", "9.9")
    assert "floor of 99" in message and "No per-group false match table ships" in message and "9.9" in message
