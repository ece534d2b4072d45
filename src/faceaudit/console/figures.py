"""What a similarity threshold means, group by group, from the false match table that ships.

The table (faceaudit.similarity.GroupFalseMatchRates, the same one ``faceaudit thresholds``
prints) was measured at thresholds 80, 95 and 99 only. For any other threshold the console
shows the rates measured at the nearest of those *at or below* it, and says so: the false
match rate can only fall as the threshold rises, so those rates are an upper bound. Below
80 nothing was measured, and the page says that instead of extrapolating.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceaudit.accountability.policies import POLICIES
from faceaudit.similarity import GroupFalseMatchRates

# Rekognition's default FaceMatchThreshold: what a search without a threshold uses.
DEFAULT_THRESHOLD = 80.0


@dataclass(frozen=True)
class GroupRate:
    group: str
    rate: float
    low: float
    high: float
    k: int
    n: int

    @property
    def text(self) -> str:
        return f"{self.rate:.2%}"

    @property
    def interval(self) -> str:
        return f"{self.low:.2%} – {self.high:.2%}"


@dataclass(frozen=True)
class ThresholdMeaning:
    """The per-group false match rates that apply at ``threshold``."""

    threshold: float
    measured_at: float | None  # the shipped threshold whose rates are shown (None: nothing applies)
    rates: list[GroupRate]  # worst group first
    data: str
    caution: str

    @property
    def exact(self) -> bool:
        return self.measured_at == self.threshold

    @property
    def worst(self) -> GroupRate | None:
        return self.rates[0] if self.rates else None

    @property
    def best(self) -> GroupRate | None:
        return self.rates[-1] if self.rates else None

    @property
    def note(self) -> str:
        if self.measured_at is None:
            return (f"Nothing was measured at or below {self.threshold:g}: the lowest measured threshold is 80, "
                    "where strangers of some groups already match often. Expect more false matches than that.")
        if self.exact:
            return f"Measured at {self.threshold:g}."
        return (f"Measured at {self.measured_at:g}, the nearest measured threshold below {self.threshold:g}: "
                f"at {self.threshold:g} the rates can only be lower, so read these as upper bounds.")


def collection_threshold(policy: str | None) -> float:
    """The threshold a collection's searches start from: its use policy's floor, else Rekognition's default."""
    found = POLICIES.get(policy or "")
    return found.threshold_floor if found is not None and found.threshold_floor is not None else DEFAULT_THRESHOLD


def threshold_meaning(model_version: str | None, threshold: float) -> ThresholdMeaning | None:
    """The shipped table's rates that apply at ``threshold`` for vectors of ``model_version``;
    None when no table was measured on that model."""
    table = GroupFalseMatchRates.for_model_version(model_version) if model_version else None
    if table is None:
        return None
    measured = sorted((float(t) for t in table.thresholds), reverse=True)
    at = next((t for t in measured if t <= threshold), None)
    rates: list[GroupRate] = []
    if at is not None:
        key = next(k for k in table.thresholds if float(k) == at)
        rates = [GroupRate(group, float(r["rate"]), float(r["ci95"][0]), float(r["ci95"][1]),
                           int(r["k"]), int(r["n"])) for group, r in table.thresholds[key].items()]
        rates.sort(key=lambda r: (-r.rate, r.group))
    return ThresholdMeaning(threshold, at, rates, str(table.provenance.get("data", "")),
                            str(table.provenance.get("caution", "")))
