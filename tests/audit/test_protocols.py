"""The three audit protocols against a fake target whose every answer is set by hand.

No image is opened: paths are fake strings and the fake target answers from tables.
Every reported rate, k and n is checked against a count made here, independently of
the protocol code, and every Wilson interval against scipy's binomtest.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime

import numpy as np
import pytest
from scipy.stats import binomtest

from faceaudit.audit.metrics import threshold_at_fmr
from faceaudit.audit.protocols import finish_report, run_attributes, run_lineup, run_verification
from faceaudit.audit.targets import Detection, Match, Target
from faceaudit.datasets.labelled import AuditDataset, AuditImage, AuditPair

MIN_CELL = 30


def wilson_ci(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


class FakeTarget(Target):
    """Answers from tables given to it; remembers what it was asked."""

    name = "fake"

    def __init__(self, detections=None, score=None, search=None):
        self.detections = detections or {}
        self.score = score
        self.search_fn = search
        self.asked_pairs: list[tuple[str, str]] = []
        self.searches: list[tuple[list[str], list[str], int]] = []
        self.results: dict[str, list[Match]] = {}

    def describe(self) -> dict:
        return {"kind": "fake", "model_version": "test"}

    def detect(self, paths):
        return {p: self.detections[p] for p in paths if p in self.detections}

    def similarities(self, pairs):
        self.asked_pairs = list(pairs)
        return [self.score(a, b) for a, b in pairs]

    def search(self, gallery, probes, max_results=50):
        self.searches.append((list(gallery), list(probes), max_results))
        self.results = {p: self.search_fn(p, list(gallery))[:max_results] for p in probes}
        return self.results


def matches(group: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in group.items())


def expected_groups(label_dicts) -> list[dict]:
    """Everyone, each attribute's values, each combination: written out independently."""
    genders = sorted({d["gender"] for d in label_dicts if d["gender"] is not None})
    races = sorted({d["race"] for d in label_dicts if d["race"] is not None})
    combos = sorted({(d["gender"], d["race"]) for d in label_dicts
                     if d["gender"] is not None and d["race"] is not None})
    return ([{}] + [{"gender": g} for g in genders] + [{"race": r} for r in races]
            + [{"gender": g, "race": r} for g, r in combos])


def key(group: dict) -> tuple:
    return tuple(sorted(group.items()))


def rows_of(report, metric, threshold=None) -> dict:
    out = {}
    for row in report["metrics"]:
        if row["metric"] == metric and row["threshold"] == threshold:
            assert key(row["group"]) not in out, "duplicate row"
            out[key(row["group"])] = row
    return out


def check_wilson_row(row, k, n):
    assert (row["k"], row["n"]) == (k, n), row
    assert row["value"] == pytest.approx(k / n)
    low, high = wilson_ci(k, n)
    assert row["ci95"] == pytest.approx([low, high], abs=1e-12)
    assert row["ci_method"] == "wilson"
    assert row["small_cell"] is (n < MIN_CELL)


def check_widened_row(row, k, n):
    """A bootstrap interval widened to Wilson's: holds Wilson's interval, within [0, 1]."""
    assert (row["k"], row["n"]) == (k, n), row
    assert row["value"] == pytest.approx(k / n)
    low, high = wilson_ci(k, n)
    assert row["ci95"][0] <= low + 1e-12 and row["ci95"][1] >= high - 1e-12
    assert 0 <= row["ci95"][0] <= row["value"] <= row["ci95"][1] <= 1
    assert "widened to Wilson" in row["ci_method"]
    assert row["small_cell"] is (n < MIN_CELL)


def validate(report):
    """The schema's required fields, via the report writer's validator and by hand."""
    finished = finish_report(report, ["faceaudit", "audit", report["protocol"]])
    json.dumps(finished, allow_nan=False)
    schema = pytest.importorskip("faceaudit.audit.report.schema")
    schema.validate_report(finished)
    for field in ("schema_version", "faceaudit_version", "protocol", "created", "command",
                  "dataset", "target", "parameters", "software", "metrics", "gaps", "curves",
                  "summary"):
        assert field in finished, field
    for row in finished["metrics"]:
        assert {"metric", "group", "threshold", "value", "n", "ci95", "ci_method",
                "small_cell"} <= set(row)
    for gap in finished["gaps"]:
        assert {"metric", "threshold", "group_by", "highest", "lowest", "ratio", "ratio_ci95",
                "difference", "difference_ci95", "ci_method"} <= set(gap)
    return finished


# --- attributes ----------------------------------------------------------------------------


def attributes_case():
    """Images with the target's answer for each, and the truth written down beside them.

    Asian women (40): 2 no face, 1 refused, 1 not answered; 6 of the rest wrong gender;
        age off by 10 -> failures 4/40, gender errors 10/40, age error 10 over 36.
    Black women (40): 2 wrong gender, age off by 2 or 4 -> 0/40, 2/40, 3 over 40.
    Asian men (50): 1 no face, 5 wrong, one face without an age estimate, age off by 5
        -> 1/50, 6/50, 5 over 48.
    Black men (10, a small cell): 5 no face, 5 wrong, age off by 20 -> 5/10, 10/10, 20 over 5.
    5 Asian images without a gender or an age label, all found.
    """
    images, detections, truth = [], {}, []

    def add(gender, race, outcome, age_error=0.0, age=30.0):
        path = f"/fake/{len(images):03d}.jpg"
        images.append(AuditImage(path=path, gender=gender, race=race, age=age))
        other = {"female": "male", "male": "female"}.get(gender, "female")
        said = {"ok": gender or "male", "wrong": other, "noage": gender}.get(outcome)
        if outcome in ("ok", "wrong", "noage"):
            low, high = (None, None) if outcome == "noage" else (30 + age_error - 2, 30 + age_error + 2)
            detections[path] = Detection(face_count=1, gender=said, gender_confidence=99.0,
                                         age_low=low, age_high=high)
        elif outcome == "noface":
            detections[path] = Detection(face_count=0)
        elif outcome == "error":
            detections[path] = Detection(face_count=0, error="InvalidImageFormatException")
        failed = outcome in ("noface", "error", "missing")
        measured_age = not (failed or outcome == "noage" or age is None)
        truth.append({"gender": gender, "race": race, "failed": failed,
                      "gender_error": None if gender is None else (failed or outcome == "wrong"),
                      "age_error": age_error if measured_age else None,
                      # the range is 30 + error +/- 2 around a true age of 30
                      "age_covered": abs(age_error) <= 2 if measured_age else None})

    for outcome in ["noface"] * 2 + ["error", "missing"] + ["wrong"] * 6 + ["ok"] * 30:
        add("female", "Asian", outcome, 10.0)
    for i in range(40):
        add("female", "Black", "wrong" if i < 2 else "ok", 2.0 if i % 2 else 4.0)
    for outcome in ["noface"] + ["wrong"] * 5 + ["noage"] + ["ok"] * 43:
        add("male", "Asian", outcome, 5.0)
    for outcome in ["noface"] * 5 + ["wrong"] * 5:
        add("male", "Black", outcome, 20.0)
    for _ in range(5):
        add(None, "Asian", "ok", 0.0, age=None)
    return AuditDataset("synthetic", "/fake", images), FakeTarget(detections=detections), truth


def test_attributes_every_row_against_independent_counts():
    dataset, target, truth = attributes_case()
    report = run_attributes(dataset, target, min_cell=MIN_CELL, seed=0)
    groups = expected_groups(truth)
    detection = rows_of(report, "detection_failure_rate")
    gender = rows_of(report, "gender_error_rate")
    age = rows_of(report, "age_mean_absolute_error")
    coverage, width = rows_of(report, "age_range_coverage"), rows_of(report, "age_range_mean_width")
    assert set(coverage) == set(width) == {key(g) for g in groups}
    assert set(detection) == {key(g) for g in groups}
    assert set(gender) == {key(g) for g in groups}
    assert set(age) == {key(g) for g in groups}
    for group in groups:
        members = [t for t in truth if matches(group, t)]
        check_wilson_row(detection[key(group)], sum(t["failed"] for t in members), len(members))
        labelled = [t for t in members if t["gender_error"] is not None]
        check_wilson_row(gender[key(group)], sum(t["gender_error"] for t in labelled),
                         len(labelled))
        errors = [t["age_error"] for t in members if t["age_error"] is not None]
        row = age[key(group)]
        assert "k" not in row
        assert row["n"] == len(errors) and row["value"] == pytest.approx(np.mean(errors))
        assert row["ci95"][0] <= row["value"] <= row["ci95"][1]
        assert row["small_cell"] is (len(errors) < MIN_CELL)
        assert row["threshold"] is None
        ranged = [t["age_covered"] for t in members if t["age_covered"] is not None]
        check_wilson_row(coverage[key(group)], sum(ranged), len(ranged))
        assert width[key(group)]["n"] == len(ranged) and width[key(group)]["value"] == pytest.approx(4.0)
    # The numbers the docstring promises, spelled out.
    asian_women = key({"gender": "female", "race": "Asian"})
    assert (detection[asian_women]["k"], detection[asian_women]["n"]) == (4, 40)
    assert (gender[asian_women]["k"], gender[asian_women]["n"]) == (10, 40)
    assert age[asian_women]["value"] == 10 and age[asian_women]["ci95"] == [10, 10]
    assert (gender[()]["k"], gender[()]["n"]) == (10 + 2 + 6 + 10, 140)
    # Only Black women's ranges (off by 2 half the time) ever hold the age: 20 of 40.
    assert (coverage[asian_women]["k"], coverage[asian_women]["n"]) == (0, 36)
    black_women = key({"gender": "female", "race": "Black"})
    assert (coverage[black_women]["k"], coverage[black_women]["n"]) == (20, 40)
    assert (coverage[()]["k"], coverage[()]["n"]) == (20, 36 + 40 + 48 + 5)
    validate(report)


def test_failed_detections_are_gender_errors_never_dropped():
    dataset, target, _ = attributes_case()
    report = run_attributes(dataset, target, min_cell=MIN_CELL)
    black_men = rows_of(report, "gender_error_rate")[key({"gender": "male", "race": "Black"})]
    # 5 faces not found + 5 wrong: all 10 are errors, none is left out.
    assert (black_men["k"], black_men["n"]) == (10, 10)
    asian_women = rows_of(report, "gender_error_rate")[key({"gender": "female", "race": "Asian"})]
    assert asian_women["n"] == 40  # including no face, refused, and not answered


def test_attributes_small_cells_flagged_and_never_in_gaps():
    dataset, target, _ = attributes_case()
    report = run_attributes(dataset, target, min_cell=MIN_CELL)
    black_men = {"gender": "male", "race": "Black"}
    for row in report["metrics"]:
        if row["group"] == black_men:
            assert row["small_cell"] is True
    gaps = {gap["metric"]: gap for gap in report["gaps"]}
    assert set(gaps) == {"detection_failure_rate", "gender_error_rate", "age_mean_absolute_error",
                         "age_range_coverage", "age_range_mean_width"}
    for gap in gaps.values():
        assert gap["highest"]["group"] != black_men and gap["lowest"]["group"] != black_men
        assert gap["group_by"] == ["gender", "race"]
        assert gap["ci_method"] == "bootstrap (2000 resamples)"

    g = gaps["gender_error_rate"]
    assert g["highest"] == {"group": {"gender": "female", "race": "Asian"}, "value": 0.25}
    assert g["lowest"] == {"group": {"gender": "female", "race": "Black"}, "value": 0.05}
    assert g["ratio"] == pytest.approx(5.0) and g["difference"] == pytest.approx(0.2)
    assert g["difference_ci95"][0] < 0.2 < g["difference_ci95"][1]
    assert g["difference_ci95"][0] > 0  # a gap the data support
    assert g["ratio_ci95"] is None or g["ratio_ci95"][0] < 5 < g["ratio_ci95"][1]

    d = gaps["detection_failure_rate"]  # lowest is 0: no ratio, and the row says why
    assert d["lowest"]["value"] == 0 and d["ratio"] is None and d["ratio_ci95"] is None
    assert "no ratio" in d["note"]
    assert d["difference"] == pytest.approx(0.1)

    a = gaps["age_mean_absolute_error"]
    assert a["highest"]["value"] == 10 and a["lowest"]["value"] == 3
    assert a["ratio"] == pytest.approx(10 / 3)

    text = " ".join(report["summary"])
    assert "Gender was misclassified for 25.0%" in text and "images of Asian women" in text
    assert "images of Black women: 5.0x as often" in text
    assert "so no ratio is given" in text
    assert "fewer than 30" in text


def test_attributes_no_gap_claimed_when_data_cannot_tell():
    images, detections = [], {}
    for race, wrong in (("Asian", 3), ("Black", 4)):
        for i in range(40):
            path = f"/fake/{race}{i}.jpg"
            images.append(AuditImage(path=path, gender="female", race=race))
            detections[path] = Detection(1, gender="male" if i < wrong else "female")
    report = run_attributes(AuditDataset("s", "/fake", images), FakeTarget(detections),
                            min_cell=MIN_CELL)
    gap = next(g for g in report["gaps"] if g["metric"] == "gender_error_rate")
    assert gap["difference_ci95"][0] <= 0 <= gap["difference_ci95"][1]
    sentence = next(s for s in report["summary"] if s.startswith("Gender was misclassified"))
    assert "cannot tell these groups apart" in sentence and "as often" not in sentence
    assert not any(r["metric"] == "age_mean_absolute_error" for r in report["metrics"])
    validate(report)
    # A target that never says a gender: gender errors are not measured (not all "wrong").
    silent = FakeTarget({path: Detection(1) for path in detections})
    report = run_attributes(AuditDataset("s", "/fake", images), silent, min_cell=MIN_CELL)
    assert {r["metric"] for r in report["metrics"]} == {"detection_failure_rate"}
    assert any("no gender" in note for note in report["dataset"]["notes"])


def test_age_range_coverage_and_width_from_known_ranges():
    """Ranges set by hand: the true age on either bound counts as held; a point estimate without
    a range, a missed face and an image without an age label are left out of both metrics."""
    images, detections = [], {}
    plan = {"Asian": (40, 36, 10), "Black": (40, 28, 20)}  # images, ranges holding the age, width

    for race, (n, held, span) in plan.items():
        for i in range(n):
            path = f"/fake/{race}{i}.jpg"
            age = 20 + i
            images.append(AuditImage(path=path, gender="female", race=race, age=age))
            if i < held:  # the age on the lower bound, the upper bound, or inside
                low = [age, age - span, age - span // 2][i % 3]
            else:  # just past either bound
                low = age + 1 if i % 2 else age - span - 1
            detections[path] = Detection(1, gender="female", age_low=low, age_high=low + span)
    for i, extra in enumerate((Detection(1, gender="female", age_estimate=30.0), Detection(0),
                               Detection(1, gender="female", age_low=0, age_high=100))):
        path = f"/fake/extra{i}.jpg"
        images.append(AuditImage(path=path, gender="female", race="Asian",
                                 age=None if i == 2 else 30))
        detections[path] = extra
    report = run_attributes(AuditDataset("s", "/fake", images), FakeTarget(detections), min_cell=MIN_CELL)
    coverage, width = rows_of(report, "age_range_coverage"), rows_of(report, "age_range_mean_width")
    for race, (n, held, span) in plan.items():
        group = key({"gender": "female", "race": race})
        check_wilson_row(coverage[group], held, n)
        assert width[group]["value"] == pytest.approx(span) and width[group]["n"] == n
        assert "k" not in width[group] and width[group]["ci95"] == [span, span]
    check_wilson_row(coverage[()], 36 + 28, 80)
    assert width[()]["value"] == pytest.approx(15.0) and width[()]["n"] == 80
    assert rows_of(report, "age_mean_absolute_error")[()]["n"] == 81  # the point estimate counts there
    notes = " ".join(report["dataset"]["notes"])
    assert "1 detected image(s) with an age label got no age range" in notes
    text = " ".join(report["summary"])
    assert "Overall, the age range held the true age for 64 of 80 detected images" in text
    assert "ranges spanned 15.0 years on average [" in text
    validate(report)

    # A target that gives point ages only: no coverage rows, and the notes say why.
    points = {p: Detection(1, gender="female", age_estimate=30.0) for p in detections}
    report = run_attributes(AuditDataset("s", "/fake", images), FakeTarget(points), min_cell=MIN_CELL)
    metrics = {r["metric"] for r in report["metrics"]}
    assert "age_mean_absolute_error" in metrics and not metrics & {"age_range_coverage", "age_range_mean_width"}
    assert any("no age range for any face" in note for note in report["dataset"]["notes"])
    validate(report)


def test_attributes_deterministic_given_seed():
    dataset, target, _ = attributes_case()
    first = run_attributes(dataset, target, seed=3)
    second = run_attributes(dataset, target, seed=3)
    assert first == second
    other = run_attributes(dataset, target, seed=4)
    assert other["metrics"][0] == first["metrics"][0]  # Wilson rows do not depend on the seed
    assert other["gaps"] != first["gaps"]


# --- verification ----------------------------------------------------------------------------


def _u(a: str, b: str) -> float:
    """A fixed pseudo-random number in [0, 1) for an unordered pair."""
    x, y = sorted((a, b))
    return (zlib.crc32(f"{x}|{y}".encode()) % 100_000) / 100_000


IMPOSTOR_SCALE = {("female", "Asian"): 100.0, ("female", "Black"): 90.0,
                  ("male", "Asian"): 85.0, ("male", "Black"): None}


def verification_case():
    """Identities of three images each: 12 per cell, 2 in the small cell (Black men).

    Genuine pairs: 90 for every third identity, else 99.5; impostors: a fixed
    pseudo-random share of the group's scale (Asian women up to 100, Black women 90,
    Asian men 85); the small cell's impostors all score 100. One image of a Black woman
    has no face: every pair with it has no similarity."""
    images, labels = [], {}
    counts = {("female", "Asian"): 12, ("female", "Black"): 12, ("male", "Asian"): 12,
              ("male", "Black"): 2}
    for (gender, race), n_ids in counts.items():
        for i in range(n_ids):
            identity = f"{gender}-{race}-{i}"
            for j in range(3):
                path = f"/fake/{identity}/{j}.jpg"
                images.append(AuditImage(path=path, identity=identity, gender=gender, race=race))
                labels[path] = {"gender": gender, "race": race, "identity": identity, "index": i}
    no_face = "/fake/female-Black-0/0.jpg"

    def score(a, b):
        if no_face in (a, b):
            return None
        la, lb = labels[a], labels[b]
        if la["identity"] == lb["identity"]:
            return 90.0 if la["index"] % 3 == 0 else 99.5
        scale = IMPOSTOR_SCALE[la["gender"], la["race"]]
        return 100.0 if scale is None else round(scale * _u(a, b), 3)

    return AuditDataset("pairs", "/fake", images), FakeTarget(score=score), labels


def pair_group(labels, a, b):
    la, lb = labels[a], labels[b]
    return {k: la[k] if la[k] == lb[k] else None for k in ("gender", "race")}


def test_verification_every_row_against_independent_counts():
    dataset, target, labels = verification_case()
    report = run_verification(dataset, target, target_fmr=0.01, min_cell=MIN_CELL, seed=0)
    pairs = target.asked_pairs
    scores = [target.score(a, b) for a, b in pairs]
    genuine = [labels[a]["identity"] == labels[b]["identity"] for a, b in pairs]
    # Genuine pairs: all within-identity pairs, 3 per identity; impostors within groups only.
    assert sum(genuine) == 3 * (12 * 3 + 2)
    for (a, b), same in zip(pairs, genuine):
        if not same:
            assert pair_group(labels, a, b) == {k: labels[a][k] for k in ("gender", "race")}
    t_star = report["parameters"]["threshold_at_target_fmr"]
    levels = [80, 95, 99, t_star]
    groups = expected_groups(list(labels.values()))
    for t in levels:
        fmr, fnmr = rows_of(report, "false_match_rate", t), rows_of(report, "false_non_match_rate", t)
        assert set(fmr) == set(fnmr) == {key(g) for g in groups}
        for group in groups:
            members = [(s, same) for (a, b), s, same in zip(pairs, scores, genuine)
                       if matches(group, pair_group(labels, a, b))]
            impostor = [s for s, same in members if not same]
            mated = [s for s, same in members if same]
            check_widened_row(fmr[key(group)], sum(s is not None and s >= t for s in impostor),
                              len(impostor))
            check_widened_row(fnmr[key(group)], sum(s is None or s < t for s in mated), len(mated))
            assert "over images" in fmr[key(group)]["ci_method"]
            assert "over identities" in fnmr[key(group)]["ci_method"]
    # The pair without a face counts as a non-match: Black women's genuine pairs at 80 have
    # the 2 pairs with the faceless image (and none scoring under 80) as misses.
    black_women = rows_of(report, "false_non_match_rate", 80)[key({"gender": "female",
                                                                   "race": "Black"})]
    assert black_women["k"] == 2
    validate(report)


def test_threshold_at_target_fmr_achieves_it():
    dataset, target, labels = verification_case()
    report = run_verification(dataset, target, target_fmr=0.01, min_cell=MIN_CELL)
    t_star = report["parameters"]["threshold_at_target_fmr"]
    impostor = np.array([np.nan if s is None else s for (a, b), s in
                         ((p, target.score(*p)) for p in target.asked_pairs)
                         if labels[a]["identity"] != labels[b]["identity"]])
    n = len(impostor)
    at = np.sum(np.nan_to_num(impostor, nan=-1) >= t_star) / n
    assert at <= 0.01
    below = np.max(impostor[impostor < t_star])  # the next lower threshold that matters
    assert np.sum(np.nan_to_num(impostor, nan=-1) >= below) / n > 0.01
    overall = rows_of(report, "false_match_rate", t_star)[()]
    assert overall["value"] == pytest.approx(at)
    assert any("At " in s and "at most 1.0%" in s for s in report["summary"])


def test_threshold_at_fmr_function():
    scores = np.arange(1000) / 10.0  # 0.0, 0.1, ... 99.9
    t, note = threshold_at_fmr(scores, 0.01)
    assert t == 99.0 and note is None  # exactly 10 of 1000 scores are >= 99
    t, note = threshold_at_fmr(np.r_[scores, [np.nan] * 1000], 0.01)  # no face: no match
    assert t == 98.0
    t, note = threshold_at_fmr(scores[:100], 0.001)  # allows no false match at all
    assert t == 10.0 and "rule of three" in note
    assert threshold_at_fmr(np.array([100.0] * 10), 0.01)[0] is None


def test_verification_small_cells_flagged_and_never_in_gaps():
    dataset, target, _ = verification_case()
    report = run_verification(dataset, target, target_fmr=0.01, min_cell=MIN_CELL)
    small = {"gender": "male", "race": "Black"}
    rows = rows_of(report, "false_match_rate", 80)
    assert rows[key(small)]["small_cell"] and rows[key(small)]["value"] == 1.0
    fmr_gaps = [g for g in report["gaps"] if g["metric"] == "false_match_rate"]
    assert len(fmr_gaps) == 4
    for gap in report["gaps"]:
        assert small not in (gap["highest"]["group"], gap["lowest"]["group"])
    at80 = next(g for g in fmr_gaps if g["threshold"] == 80)
    assert at80["highest"]["group"] == {"gender": "female", "race": "Asian"}
    assert at80["lowest"]["group"] == {"gender": "male", "race": "Asian"}
    hi = rows[key(at80["highest"]["group"])]["value"]
    lo = rows[key(at80["lowest"]["group"])]["value"]
    assert at80["ratio"] == pytest.approx(hi / lo) and at80["difference"] == pytest.approx(hi - lo)


def test_verification_det_curves():
    dataset, target, _ = verification_case()
    report = run_verification(dataset, target, target_fmr=0.01, min_cell=MIN_CELL)
    curves = {key(c["group"]): c for c in report["curves"]}
    assert set(curves) == {key(g) for g in expected_groups(list(verification_case()[2].values()))}
    for group_key, curve in curves.items():
        assert curve["kind"] == "det" and len(curve["points"]) == 201
        assert curve["points"][0]["threshold"] == 0 and curve["points"][-1]["threshold"] == 100
        point = next(p for p in curve["points"] if p["threshold"] == 80)
        assert point["fmr"] == pytest.approx(rows_of(report, "false_match_rate", 80)[group_key]["value"])
        assert point["fnmr"] == pytest.approx(
            rows_of(report, "false_non_match_rate", 80)[group_key]["value"])
        fmrs = [p["fmr"] for p in curve["points"]]
        assert fmrs == sorted(fmrs, reverse=True)


def test_verification_given_pairs_and_no_identities():
    dataset, target, _labels = verification_case()
    paths = [image.path for image in dataset.images]
    given = [AuditPair(paths[3], paths[4], True), AuditPair(paths[0], paths[40], False),
             AuditPair(paths[1], paths[110], False)]  # the last crosses gender
    report = run_verification(dataset, target, pairs=given, min_cell=MIN_CELL)
    assert report["parameters"]["pairs"] == "given"
    assert target.asked_pairs == [(p.path_a, p.path_b) for p in given]
    assert rows_of(report, "false_match_rate", 80)[()]["n"] == 2
    assert rows_of(report, "false_match_rate", 80)[key({"gender": "female"})]["n"] == 1

    no_ids = AuditDataset("utk", "/fake", [AuditImage(path=f"/fake/u{i}.jpg", gender="female",
                                                      race="Asian") for i in range(20)])
    fake = FakeTarget(score=lambda a, b: 100 * _u(a, b))
    report = run_verification(no_ids, fake, min_cell=MIN_CELL)
    assert not any(r["metric"] == "false_non_match_rate" for r in report["metrics"])
    assert report["curves"] == []
    assert report["parameters"]["genuine_pairs"] == 0
    assert report["parameters"]["impostor_pairs"] == len(fake.asked_pairs) > 0
    notes = " ".join(report["dataset"]["notes"])
    assert "no identity" in notes and "impostor pairs" in notes
    validate(report)


# --- lineup ----------------------------------------------------------------------------------


def lineup_case():
    """Two images per identity: 40 Asian women, 40 Black men, 6 Black women (small), plus
    5 images without identity (distractors). Searches answer:

    - a mate in the gallery scores 99, except every fifth identity: mate at 85 and a
      stranger at 90 (rank-1 miss up to 90, a false match at 80 and 85);
    - an Asian woman's probe with an even identity number also matches two strangers,
      at 96 and 82; a Black man's probe with identity number divisible by 4, one at 81.
    """
    images, labels = [], {}
    for (gender, race), n_ids in {("female", "Asian"): 40, ("male", "Black"): 40,
                                  ("female", "Black"): 6}.items():
        for i in range(n_ids):
            identity = f"{gender}-{race}-{i}"
            for j in range(2):
                path = f"/fake/{identity}/{j}.jpg"
                images.append(AuditImage(path=path, identity=identity, gender=gender, race=race))
                labels[path] = {"gender": gender, "race": race, "identity": identity, "index": i}
    for i in range(5):
        path = f"/fake/distractor{i}.jpg"
        images.append(AuditImage(path=path, gender="male", race="White"))
        labels[path] = {"gender": "male", "race": "White", "identity": None, "index": i}

    def search(probe, gallery):
        me = labels[probe]
        strangers = [g for g in gallery if labels[g]["identity"] != me["identity"]]
        mates = [g for g in gallery if labels[g]["identity"] == me["identity"]]
        out = []
        for mate in mates:
            if me["index"] % 5 == 0:
                out += [Match(strangers[-1], 90.0), Match(mate, 85.0)]
            else:
                out.append(Match(mate, 99.0))
        if me["gender"] == "female" and me["race"] == "Asian" and me["index"] % 2 == 0:
            out += [Match(strangers[0], 96.0), Match(strangers[1], 82.0)]
        if me["race"] == "Black" and me["gender"] == "male" and me["index"] % 4 == 0:
            out.append(Match(strangers[2], 81.0))
        return sorted(out, key=lambda m: -m.similarity)

    return AuditDataset("lineup", "/fake", images), FakeTarget(search=search), labels


def expected_lineup(target, labels, thresholds=(80, 95, 99)):
    gallery, probes, _ = target.searches[-1]
    in_gallery = {labels[g]["identity"] for g in gallery} - {None}
    per_probe = {}
    for probe in probes:
        identity = labels[probe]["identity"]
        mated = identity in in_gallery
        found = target.results[probe]
        out = {}
        for t in thresholds:
            false = [m for m in found if m.similarity >= t and labels[m.path]["identity"] != identity]
            best = max(found, key=lambda m: m.similarity) if found else None
            out[t] = {"false": len(false),
                      "hit": bool(best and labels[best.path]["identity"] == identity
                                  and best.similarity >= t)}
        per_probe[probe] = (mated, out)
    return per_probe


def test_lineup_default_split():
    dataset, target, labels = lineup_case()
    report = run_lineup(dataset, target, min_cell=MIN_CELL, seed=0)
    gallery, probes, max_results = target.searches[0]
    assert max_results == 50 and not set(gallery) & set(probes)
    distractors = [p for p in labels if labels[p]["identity"] is None]
    assert set(distractors) <= set(gallery)
    gallery_ids = [labels[g]["identity"] for g in gallery if labels[g]["identity"]]
    assert len(gallery_ids) == len(set(gallery_ids)) == 86 - 43  # one image each; half held out
    held_out = {labels[p]["identity"] for p in probes} - set(gallery_ids)
    assert len(held_out) == 43
    assert sorted(probes) == sorted(p for p in labels if labels[p]["identity"] is not None
                                    and p not in gallery)
    p = report["parameters"]
    assert (p["gallery_size"], p["probes"], p["mated_probes"]) == (48, 129, 43)
    assert p["split"] == "default"


def test_lineup_every_row_against_independent_counts():
    dataset, target, labels = lineup_case()
    report = run_lineup(dataset, target, min_cell=MIN_CELL, seed=0)
    per_probe = expected_lineup(target, labels)
    probe_labels = [labels[p] for p in per_probe]
    groups = expected_groups(probe_labels)
    for t in (80, 95, 99):
        non_mated_rows = rows_of(report, "probes_with_false_match_rate", t)
        mated_rows = rows_of(report, "mated_probes_with_false_match_rate", t)
        rank1_rows = rows_of(report, "rank1_hit_rate", t)
        mean_rows = rows_of(report, "mean_false_matches_per_probe", t)
        for group in groups:
            members = [per_probe[p] for p in per_probe if matches(group, labels[p])]
            non_mated = [o[t] for mated, o in members if not mated]
            mated = [o[t] for is_mated, o in members if is_mated]
            if non_mated:
                check_wilson_row(non_mated_rows[key(group)],
                                 sum(o["false"] > 0 for o in non_mated), len(non_mated))
            else:
                assert key(group) not in non_mated_rows
            if mated:
                check_wilson_row(mated_rows[key(group)], sum(o["false"] > 0 for o in mated),
                                 len(mated))
                check_wilson_row(rank1_rows[key(group)], sum(o["hit"] for o in mated), len(mated))
            row = mean_rows[key(group)]
            counts = [o[t]["false"] for _, o in members]
            assert "k" not in row and row["n"] == len(counts)
            assert row["value"] == pytest.approx(np.mean(counts))
            assert row["ci95"][0] <= row["value"] <= row["ci95"][1]
            assert row["small_cell"] is (len(counts) < MIN_CELL)
    overall = rows_of(report, "probes_with_false_match_rate", 80)[()]
    assert (f"At 80, {overall['k']} of {overall['n']} photos of people not in the gallery"
            in " ".join(report["summary"]))
    small = rows_of(report, "probes_with_false_match_rate", 80)[key({"gender": "female",
                                                                     "race": "Black"})]
    assert small["small_cell"]
    for gap in report["gaps"]:
        assert {"gender": "female", "race": "Black"} not in (gap["highest"]["group"],
                                                             gap["lowest"]["group"])
    validate(report)


def test_lineup_given_gallery_and_probes_and_gallery_size():
    dataset, target, _labels = lineup_case()
    paths = [image.path for image in dataset.images]
    gallery = [p for p in paths if p.endswith("/0.jpg")][:30]
    probes = [p for p in paths if p.endswith("/1.jpg")]
    report = run_lineup(dataset, target, gallery=gallery, probes=probes, min_cell=MIN_CELL)
    assert target.searches[-1][:2] == (gallery, probes)
    assert report["parameters"]["split"] == "given"
    assert report["parameters"]["mated_probes"] == 30
    rank1 = rows_of(report, "rank1_hit_rate", 99)[()]
    # Mates score 99 except every fifth identity's (85): 30 gallery identities are
    # Asian women 0-29, of whom 0, 5, ..., 25 (6) miss.
    assert (rank1["k"], rank1["n"]) == (24, 30)

    run_lineup(dataset, target, gallery_size=10, seed=1)
    assert len(target.searches[-1][0]) == 10


def test_finish_report():
    dataset, target, _ = attributes_case()
    report = finish_report(run_attributes(dataset, target), ["faceaudit", "audit", "attributes"])
    assert list(report)[:5] == ["schema_version", "faceaudit_version", "protocol", "created",
                                "command"]
    assert report["schema_version"] == 1
    import faceaudit
    assert report["faceaudit_version"] == faceaudit.__version__
    created = datetime.fromisoformat(report["created"])
    assert created.utcoffset().total_seconds() == 0
    assert report["command"] == ["faceaudit", "audit", "attributes"]
    software = report["software"]
    assert software["python"].count(".") == 2 and software["platform"]
    assert {"numpy", "scipy"} <= set(software["packages"])
    assert report["target"]["name"] == "fake" and report["target"]["kind"] == "fake"
    validate(report)


def test_reports_are_strict_json():
    dataset, target, _ = verification_case()
    # Some impostors score 100 (the small cell): no threshold on 0-100 reaches 1e-6.
    report = run_verification(dataset, target, target_fmr=1e-6)
    text = json.dumps(finish_report(report, ["x"]), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert report["parameters"]["threshold_at_target_fmr"] is None
    assert any("reach 100" in n for n in report["dataset"]["notes"])
    assert {r["threshold"] for r in report["metrics"]} == {80, 95, 99}
    validate(report)
