"""The AgeRange table: how a range is read from it, and that the shipped one says where it came from.

Coverage on faces-dev's check half is measured in tests/test_faces_dev.py (it needs the models).
"""

from __future__ import annotations

import pytest

from faceaudit.engine.age_interval import AgeInterval, shipped_age_interval


def table(**changes) -> AgeInterval:
    fields = {"coverage": 0.9, "edges": (20.0, 40.0), "half_widths": (5.0, 8.0, 15.0), "digest": "x",
              "provenance": {}}
    fields.update(changes)
    return AgeInterval(**fields)


def test_half_width_comes_from_the_bin_of_the_expected_age():
    interval = table()
    assert [interval.half_width(a) for a in (0.25, 19.99, 20.0, 39.9, 40.0, 80.0)] == [5, 5, 8, 8, 15, 15]


def test_range_is_symmetric_whole_years_and_never_below_zero():
    interval = table()
    assert interval.range_for(30.0) == (22, 38)
    assert interval.range_for(30.5) == (23, 39)  # 22.5 and 38.5 round half up, both the same way
    assert interval.range_for(50.2) == (35, 65)
    assert interval.range_for(2.0) == (0, 7)  # clipped at 0, the upper side untouched
    low, high = interval.range_for(33.3)
    assert (low + high) / 2 == pytest.approx(33.3, abs=0.5)  # the middle stays the expected age


def test_malformed_tables_are_refused():
    with pytest.raises(ValueError):
        table(edges=(40.0, 20.0))
    with pytest.raises(ValueError):
        table(half_widths=(5.0, 8.0))
    with pytest.raises(ValueError):
        table(half_widths=(5.0, -1.0, 3.0))


def test_shipped_table_is_calibrated_on_the_calibration_half_only():
    interval = shipped_age_interval()
    provenance = interval.provenance
    assert provenance["script"] == "scripts/calibrate_age_interval.py"
    assert "calibration half only" in provenance["data"]
    assert provenance["n_faces"] >= 900 and sum(provenance["faces_per_bin"]) == provenance["n_faces"]
    assert interval.coverage == 0.9
    # Errors grow with age: wider bins for older expected ages; none zero years wide.
    assert list(interval.half_widths) == sorted(interval.half_widths) and interval.half_widths[0] > 3
    assert len(interval.digest) == 12
