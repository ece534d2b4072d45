"""Attributes audit (Gender Shades): detection failures, gender errors and age errors by group.

Every image goes to the target once (``detect``). Per demographic group:

- detection_failure_rate: images where the target found no face or refused the image;
- gender_error_rate: images with a gender label whose gender the target got wrong, a
  failed detection counting as an error (never dropped: a system that misses more
  faces of a group must not look fairer for it);
- age_mean_absolute_error: years between the label and the middle of the target's age
  range (or its own point estimate, when it gives one), over detected images with an age label;
- age_range_coverage: detected images with an age label whose true age falls within the
  target's age range [Low, High] (inclusive, as Rekognition's whole-year bounds read), over
  those the target gave a range for. A range claims some coverage (faceaudit's own: 90%):
  this is what it delivers, group by group;
- age_range_mean_width: High - Low in years over the same images: coverage is only worth
  something at a width, and a system can buy coverage in one group with width.

Rates carry Wilson intervals (images are independent trials); the mean age error a
percentile bootstrap over images. Gaps compare the highest and lowest intersectional
cells with enough images, with bootstrap intervals resampling images within each cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceaudit.audit.metrics import (
    RESAMPLES,
    Measured,
    Phrase,
    add_rows_and_gaps,
    estimate_row,
    gap_sentence,
    rate_row,
    rows_index,
    small_cells_sentence,
)
from faceaudit.audit.protocols.common import (
    Grouping,
    add_notes,
    group_words,
    image_labels,
    new_report,
    unique_images,
)
from faceaudit.audit.report.schema import PROTOCOL_METRICS
from faceaudit.audit.targets.base import Target
from faceaudit.audit.words import (
    describe_group,
    fmt_interval,
    fmt_number,
    fmt_rate,
    gap_is_claimed,
)
from faceaudit.datasets.labelled import AuditDataset
from faceaudit.stats import (
    Estimate,
    bootstrap_mean_replicates,
    bootstrap_proportion_replicates,
    percentile_interval,
    rng_for,
    wilson,
)

METRICS = PROTOCOL_METRICS["attributes"]

PHRASES = {
    "detection_failure_rate": Phrase("no face was found in", lambda g: f"images of {describe_group(g)}"),
    "gender_error_rate": Phrase("gender was misclassified for", lambda g: f"images of {describe_group(g)}"),
    "age_mean_absolute_error": Phrase("age estimates were off on average by",
                                      lambda g: f"images of {describe_group(g)}",
                                      fmt=lambda v: fmt_number(v, " years"), more="as much",
                                      per="for"),
    "age_range_coverage": Phrase("the age range held the true age for",
                                 lambda g: f"images of {describe_group(g)}"),
    "age_range_mean_width": Phrase("age ranges spanned on average",
                                   lambda g: f"images of {describe_group(g)}",
                                   fmt=lambda v: fmt_number(v, " years"), more="as much",
                                   per="for"),
}
# The metrics that say how good the age answers are; the summary puts their gaps last.
AGE_METRICS = ("age_mean_absolute_error", "age_range_coverage", "age_range_mean_width")


def run_attributes(dataset: AuditDataset, target: Target, *,
                   group_by: Sequence[str] = ("gender", "race"),
                   thresholds: Sequence[float] = (80, 95, 99), min_cell: int = 30, seed: int = 0,
                   resamples: int = RESAMPLES) -> dict:
    """The attributes report (schema minus command, created, software: see finish_report).

    ``thresholds`` is accepted so that every protocol takes the same options; attribute
    metrics have no similarity threshold (their rows' threshold is null) and it is not
    recorded."""
    images = unique_images(dataset.images)
    notes: list[str] = []
    if len(images) < len(dataset.images):
        notes.append(f"{len(dataset.images) - len(images)} duplicate image path(s) were "
                     "audited once")
    paths = [image.path for image in images]
    detections = target.detect(paths) if paths else {}

    failed = np.zeros(len(images), dtype=bool)
    gender_labelled = np.zeros(len(images), dtype=bool)
    gender_wrong = np.zeros(len(images), dtype=bool)
    age_error = np.full(len(images), np.nan)
    # Per image with an age label and a range: 1.0 / 0.0 covered, and the width (NaN otherwise).
    age_covered = np.full(len(images), np.nan)
    age_width = np.full(len(images), np.nan)
    predicted_gender = predicted_age = predicted_range = missing = age_unpredicted = unranged = 0
    for index, image in enumerate(images):
        detection = detections.get(image.path)
        if detection is None:
            missing += 1
        failure = detection is None or detection.error is not None or not detection.found
        failed[index] = failure
        guess = None if failure or detection is None else detection.gender
        if guess is not None:
            predicted_gender += 1
        if image.gender is not None:
            gender_labelled[index] = True
            gender_wrong[index] = guess is None or guess.lower() != image.gender.lower()
        age = None if failure or detection is None else detection.age
        if age is not None:
            predicted_age += 1
        low = None if failure or detection is None else detection.age_low
        high = None if failure or detection is None else detection.age_high
        predicted_range += low is not None and high is not None
        if image.age is not None and not failure:
            if age is None:
                age_unpredicted += 1
            else:
                age_error[index] = abs(age - float(image.age))
            if low is not None and high is not None:
                age_covered[index] = float(low <= float(image.age) <= high)
                age_width[index] = high - low
            else:
                unranged += 1
    if missing:
        notes.append(f"the target returned nothing for {missing} image(s): counted as failed "
                     "detections")
    found = int((~failed).sum())
    measure_gender = bool(gender_labelled.any()) and (predicted_gender > 0 or found == 0)
    measure_age = bool(np.isfinite(age_error).any())
    measure_range = bool(np.isfinite(age_covered).any())
    if gender_labelled.any() and not measure_gender:
        notes.append("the target reported no gender for any face: gender errors not measured")
    if not gender_labelled.any():
        notes.append("no image has a gender label: gender errors not measured")
    if not any(image.age is not None for image in images):
        notes.append("no image has an age label: age errors not measured")
    elif found and predicted_age == 0:
        notes.append("the target reported no age for any face: age errors not measured")
    elif age_unpredicted:
        notes.append(f"{age_unpredicted} detected image(s) with an age label got no age "
                     "estimate and are left out of the age error")
    if measure_age:
        notes.append("age error is measured from the middle of the target's age range, or from "
                     "its own point estimate where it gave one")
    if any(image.age is not None for image in images) and found:
        if predicted_range == 0:
            notes.append("the target reported no age range for any face: age range coverage "
                         "and width not measured")
        elif unranged:
            notes.append(f"{unranged} detected image(s) with an age label got no age range "
                         "and are left out of the age range coverage and width")
    if measure_range:
        notes.append("age range coverage counts a true age within [Low, High], both included, "
                     "over detected images with an age label; missed faces are left out, as "
                     "for the age error")

    labels = [image_labels(image, group_by) for image in images]
    grouping = Grouping(labels, group_by)
    parameters = {"group_by": list(group_by), "seed": seed, "min_cell": min_cell,
                  "resamples": resamples}
    report = new_report("attributes", dataset, target, parameters, notes)
    add_notes(report, [grouping.dropped_note("image")])

    measured: dict[str, list[Measured]] = {m: [] for m in METRICS}
    for group, mask, in_cell, _ in grouping.measured_groups():
        n_images = int(mask.sum())
        if n_images:
            k = int(failed[mask].sum())
            measured["detection_failure_rate"].append(_rate("detection_failure_rate", group, k,
                                                            n_images, min_cell, seed, resamples,
                                                            in_cell))
        if measure_gender:
            labelled = mask & gender_labelled
            n = int(labelled.sum())
            if n:
                k = int(gender_wrong[labelled].sum())
                measured["gender_error_rate"].append(_rate("gender_error_rate", group, k, n,
                                                           min_cell, seed, resamples, in_cell))
        if measure_age:
            errors = age_error[mask & np.isfinite(age_error)]
            if errors.size:
                replicates = bootstrap_mean_replicates(
                    errors, resamples, rng_for(seed, "age_mean_absolute_error", *group_words(group)))
                low, high = percentile_interval(replicates)
                estimate = Estimate(float(errors.mean()), int(errors.size), low, high,
                                    f"bootstrap over images ({resamples} resamples)")
                measured["age_mean_absolute_error"].append(Measured(
                    estimate_row("age_mean_absolute_error", group, None, estimate, min_cell),
                    replicates if in_cell else None))
        if measure_range:
            ranged_here = mask & np.isfinite(age_covered)
            n = int(ranged_here.sum())
            if n:
                k = int(age_covered[ranged_here].sum())
                measured["age_range_coverage"].append(_rate("age_range_coverage", group, k, n,
                                                            min_cell, seed, resamples, in_cell))
                measured["age_range_mean_width"].append(_mean("age_range_mean_width", group,
                                                              age_width[ranged_here], min_cell,
                                                              seed, resamples, in_cell))

    add_rows_and_gaps(report, {(metric, None): found for metric, found in measured.items()}, METRICS, [None],
                      group_by=grouping.keys, resamples=resamples, phrases=PHRASES)
    report["summary"] = _summary(report, min_cell)
    return report


def _rate(metric: str, group: dict, k: int, n: int, min_cell: int, seed: int, resamples: int,
          in_cell: bool) -> Measured:
    row = rate_row(metric, group, None, wilson(k, n), min_cell)
    replicates = None
    if in_cell:
        replicates = bootstrap_proportion_replicates(k, n, resamples,
                                                     rng_for(seed, metric, *group_words(group)))
    return Measured(row, replicates)


def _mean(metric: str, group: dict, values: np.ndarray, min_cell: int, seed: int, resamples: int,
          in_cell: bool) -> Measured:
    replicates = bootstrap_mean_replicates(values, resamples, rng_for(seed, metric, *group_words(group)))
    low, high = percentile_interval(replicates)
    estimate = Estimate(float(values.mean()), int(values.size), low, high,
                        f"bootstrap over images ({resamples} resamples)")
    return Measured(estimate_row(metric, group, None, estimate, min_cell), replicates if in_cell else None)


def _summary(report: dict, min_cell: int) -> list[str]:
    rows = report["metrics"]
    # Gaps the data show come first (the finding): rates by size of difference, then the age
    # metrics in a fixed order (their differences are in years or shares: not comparable).
    def order(gap: dict) -> tuple[int, float]:
        if gap["metric"] in AGE_METRICS:
            return 1 + AGE_METRICS.index(gap["metric"]), 0.0
        return 0, -abs(gap["difference"])

    claimed = sorted((gap for gap in report["gaps"] if gap_is_claimed(gap)), key=order)
    sentences = [gap_sentence(gap, PHRASES[gap["metric"]], rows_index(rows, gap["metric"], None))
                 for gap in claimed]
    overall = rows_index(rows, "detection_failure_rate", None).get(())
    if overall:
        sentences.append(f"Overall, no face was found in {overall['k']} of {overall['n']} images "
                         f"({fmt_rate(overall['value'])} {fmt_interval(overall['ci95'])}).")
    overall = rows_index(rows, "gender_error_rate", None).get(())
    if overall:
        sentences.append(f"Overall, gender was misclassified for {overall['k']} of "
                         f"{overall['n']} images with a gender label ({fmt_rate(overall['value'])} "
                         f"{fmt_interval(overall['ci95'])}), failed detections counted as errors.")
    overall = rows_index(rows, "age_mean_absolute_error", None).get(())
    if overall:
        fmt = PHRASES["age_mean_absolute_error"].fmt
        sentences.append(f"Overall, age estimates were off by {fmt(overall['value'])} on average "
                         f"{fmt_interval(overall['ci95'], fmt)} over {overall['n']} detected "
                         "images with an age label.")
    overall = rows_index(rows, "age_range_coverage", None).get(())
    width = rows_index(rows, "age_range_mean_width", None).get(())
    if overall and width:
        fmt = PHRASES["age_range_mean_width"].fmt
        sentences.append(f"Overall, the age range held the true age for {overall['k']} of "
                         f"{overall['n']} detected images with an age label "
                         f"({fmt_rate(overall['value'])} {fmt_interval(overall['ci95'])}); ranges "
                         f"spanned {fmt(width['value'])} on average {fmt_interval(width['ci95'], fmt)}.")
    for gap in report["gaps"]:
        if gap not in claimed:
            sentences.append(gap_sentence(gap, PHRASES[gap["metric"]],
                                          rows_index(rows, gap["metric"], None)))
    compared = {gap["metric"] for gap in report["gaps"]}
    for metric in METRICS:
        if metric not in compared and any(r["metric"] == metric for r in rows):
            sentences.append(f"No gap is reported for {metric.replace('_', ' ')}: fewer than two "
                             f"intersectional groups have at least {min_cell} images.")
    small = small_cells_sentence(rows, min_cell, "images")
    if small:
        sentences.append(small)
    return sentences
