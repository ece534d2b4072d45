"""What the console says a threshold means per group: the shipped table's rates, never extrapolated."""

from __future__ import annotations

from faceaudit.console.figures import collection_threshold, threshold_meaning
from faceaudit.similarity import GroupFalseMatchRates


def test_a_measured_threshold_shows_the_shipped_rates_worst_group_first():
    table = GroupFalseMatchRates.for_model_version("1.0")
    meaning = threshold_meaning("1.0", 80.0)
    assert meaning is not None and meaning.exact and meaning.measured_at == 80.0
    shipped = table.thresholds["80"]
    assert {r.group: (r.rate, r.n) for r in meaning.rates} == {g: (v["rate"], v["n"]) for g, v in shipped.items()}
    assert [r.rate for r in meaning.rates] == sorted((r.rate for r in meaning.rates), reverse=True)
    assert meaning.worst.group == max(shipped, key=lambda g: shipped[g]["rate"])


def test_between_measured_thresholds_the_rates_below_are_shown_as_upper_bounds():
    meaning = threshold_meaning("1.0", 97.5)
    assert meaning.measured_at == 95.0 and not meaning.exact
    assert "upper bounds" in meaning.note
    below = threshold_meaning("1.0", 60.0)
    assert below.measured_at is None and below.rates == [] and "Nothing was measured" in below.note


def test_no_table_no_numbers_and_the_policy_floor_sets_the_threshold():
    assert threshold_meaning("no-such-model", 99.0) is None
    assert threshold_meaning(None, 99.0) is None
    assert collection_threshold("public-safety") == 99.0
    assert collection_threshold(None) == collection_threshold("personal") == 80.0
