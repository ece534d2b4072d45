"""Lineup audit (ACLU): photos searched against a gallery of "mugshots".

The ACLU searched photos of the 535 members of Congress against 25,000 arrest photos
and counted the members matched to someone. Here, by default, a seeded random half of
the identities are held out as people not in the gallery; the gallery holds one image
of each remaining identity plus every image without an identity label (distractors);
probes are all images of held-out people (non-mated) and the other images of gallery
people (mated). A dataset without identity labels is split in half at random instead:
gallery and (all non-mated) probes. ``gallery``/``probes`` override the split.

Every probe is searched once (``target.search``). Per probe group and threshold:

- probes_with_false_match_rate: non-mated probes with at least one match >= threshold;
- mated_probes_with_false_match_rate: mated probes with a match >= threshold to
  someone other than themselves (a non-mate);
- rank1_hit_rate: mated probes whose best match is a mate, at >= threshold;
- mean_false_matches_per_probe: over all probes, the number of matches >= threshold to
  non-mates (at most ``max_results`` per probe), with a bootstrap interval over probes.

Probe rates carry Wilson intervals (each probe is one search: probes share the gallery
but not each other's outcome).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from faceaudit.audit.metrics import (
    RESAMPLES,
    Measured,
    Phrase,
    add_rows_and_gaps,
    estimate_row,
    headline_gap_sentences,
    rate_row,
    rows_index,
    small_cells_sentence,
)
from faceaudit.audit.protocols.common import (
    Grouping,
    add_notes,
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
    fmt_threshold,
    threshold_value,
)
from faceaudit.datasets.labelled import AuditDataset, AuditImage
from faceaudit.stats import (
    Estimate,
    bootstrap_mean_replicates,
    bootstrap_proportion_replicates,
    percentile_interval,
    rng_for,
    wilson,
)

METRICS = PROTOCOL_METRICS["lineup"]

PHRASES = {
    "probes_with_false_match_rate": Phrase(
        "people not in the gallery were matched to someone in it for",
        lambda g: f"photos of {describe_group(g)}"),
    "mated_probes_with_false_match_rate": Phrase(
        "people in the gallery were also matched to someone else for",
        lambda g: f"photos of {describe_group(g)}"),
    "rank1_hit_rate": Phrase("the best match was the right person for",
                             lambda g: f"photos of {describe_group(g)} in the gallery"),
    "mean_false_matches_per_probe": Phrase(
        "probe photos drew false matches, on average,", lambda g: f"photos of {describe_group(g)}",
        fmt=fmt_number, more="as many", per="for"),
}


def default_split(images: Sequence[AuditImage], seed: int) -> tuple[list[AuditImage],
                                                                    list[AuditImage], str]:
    """(gallery, probes, how): see the module docstring."""
    images = unique_images(images)
    rng = rng_for(seed, "lineup split")
    identities = sorted({image.identity for image in images if image.identity is not None})
    if not identities:
        order = rng.permutation(len(images))
        half = {int(i) for i in order[: len(images) // 2]}
        gallery = [image for i, image in enumerate(images) if i in half]
        probes = [image for i, image in enumerate(images) if i not in half]
        return gallery, probes, ("no identity labels: a random half of the images (seed "
                                 f"{seed}) form the gallery, the other half are probes of "
                                 "people not in it")
    order = rng.permutation(len(identities))
    held_out = {identities[int(i)] for i in order[: len(identities) // 2]}
    gallery, probes, placed = [], [], set()
    for image in images:
        if image.identity is None:
            gallery.append(image)
        elif image.identity in held_out:
            probes.append(image)
        elif image.identity not in placed:
            placed.add(image.identity)
            gallery.append(image)
        else:
            probes.append(image)
    return gallery, probes, (f"{len(held_out)} of {len(identities)} identities (seed {seed}) held "
                             "out as people not in the gallery; the gallery holds the first image "
                             "of each other identity and every image without an identity label")


def run_lineup(dataset: AuditDataset, target: Target, *,
               gallery: Sequence[str | AuditImage] | None = None,
               probes: Sequence[str | AuditImage] | None = None,
               gallery_size: int | None = None,
               group_by: Sequence[str] = ("gender", "race"),
               thresholds: Sequence[float] = (80, 95, 99), max_results: int = 50,
               min_cell: int = 30, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """The lineup report (schema minus command, created, software: see finish_report).

    ``gallery``/``probes``: paths (or AuditImages) to use instead of the default split;
    given one, the other defaults to the rest of the dataset. ``gallery_size``: keep a
    seeded random subset of that many gallery images."""
    by_path: dict[str, AuditImage] = {}
    for image in dataset.images:
        by_path.setdefault(image.path, image)
    notes: list[str] = []

    def resolve(items):
        return unique_images(item if isinstance(item, AuditImage)
                             else by_path.get(item, AuditImage(path=str(item))) for item in items)

    if gallery is None and probes is None:
        gallery_images, probe_images, how = default_split(list(by_path.values()), seed)
        split = "default"
        notes.append(how)
    else:
        split = "given"
        if gallery is not None:
            gallery_images = resolve(gallery)
        if probes is not None:
            probe_images = resolve(probes)
        if gallery is None:
            taken = {image.path for image in probe_images}
            gallery_images = [image for image in by_path.values() if image.path not in taken]
        if probes is None:
            taken = {image.path for image in gallery_images}
            probe_images = [image for image in by_path.values() if image.path not in taken]
    if gallery_size is not None and gallery_size < len(gallery_images):
        keep = rng_for(seed, "gallery subset").choice(len(gallery_images), gallery_size,
                                                      replace=False)
        gallery_images = [gallery_images[int(i)] for i in sorted(keep)]
        notes.append(f"the gallery is a random subset (seed {seed}) of {gallery_size} images")

    gallery_paths = [image.path for image in gallery_images]
    gallery_identity = {image.path: image.identity for image in gallery_images}
    in_gallery = {image.identity for image in gallery_images if image.identity is not None}
    probe_paths = [image.path for image in probe_images]
    results = target.search(gallery_paths, probe_paths, max_results) if probe_paths else {}

    levels = [float(t) for t in thresholds]
    n_probes = len(probe_images)
    mated = np.array([image.identity is not None and image.identity in in_gallery
                      for image in probe_images], dtype=bool)
    any_false = np.zeros((n_probes, len(levels)), dtype=bool)
    false_count = np.zeros((n_probes, len(levels)))
    hit = np.zeros((n_probes, len(levels)), dtype=bool)
    self_matches = 0
    gallery_set = set(gallery_paths)
    for index, image in enumerate(probe_images):
        matches = [m for m in results.get(image.path, []) if m.path != image.path]
        self_matches += len(results.get(image.path, [])) - len(matches)
        matches = sorted(matches, key=lambda m: -m.similarity)  # stable: ties keep target order
        similarity = np.array([m.similarity for m in matches], dtype=np.float64)
        is_mate = np.array([image.identity is not None and m.path in gallery_set
                            and gallery_identity.get(m.path) == image.identity for m in matches],
                           dtype=bool)
        for column, t in enumerate(levels):
            above = similarity >= t
            false_count[index, column] = int((above & ~is_mate).sum())
            any_false[index, column] = bool((above & ~is_mate).any())
            hit[index, column] = bool(len(matches) and is_mate[0] and similarity[0] >= t)
    if self_matches:
        notes.append(f"{self_matches} match(es) of a probe to the same image in the gallery "
                     "were ignored")
    notes.append(f"at most {max_results} matches per probe were asked for: mean false matches "
                 "per probe cannot exceed that")

    labels = [image_labels(image, group_by) for image in probe_images]
    grouping = Grouping(labels, group_by)
    parameters = {"thresholds": [threshold_value(t) for t in thresholds],
                  "group_by": list(group_by), "seed": seed, "min_cell": min_cell,
                  "max_results": max_results, "split": split,
                  "gallery_size": len(gallery_paths), "probes": n_probes,
                  "mated_probes": int(mated.sum()), "resamples": resamples}
    report = new_report("lineup", dataset, target, parameters, notes)
    add_notes(report, [grouping.dropped_note("probe")])

    measured: dict[tuple[str, float | None], list[Measured]] = defaultdict(list)
    for group, mask, in_cell, flat in grouping.measured_groups():
        for column, t in enumerate(levels):
            for metric, population, outcome in (
                    ("probes_with_false_match_rate", mask & ~mated, any_false[:, column]),
                    ("mated_probes_with_false_match_rate", mask & mated, any_false[:, column]),
                    ("rank1_hit_rate", mask & mated, hit[:, column])):
                n = int(population.sum())
                if not n:
                    continue
                k = int(outcome[population].sum())
                replicates = (bootstrap_proportion_replicates(
                    k, n, resamples, rng_for(seed, metric, t, *flat)) if in_cell else None)
                measured[metric, t].append(Measured(rate_row(metric, group, t, wilson(k, n),
                                                             min_cell), replicates))
            counts = false_count[mask, column]
            if counts.size:
                replicates = bootstrap_mean_replicates(
                    counts, resamples, rng_for(seed, "mean_false_matches_per_probe", t, *flat))
                low, high = percentile_interval(replicates)
                estimate = Estimate(float(counts.mean()), int(counts.size), low, high,
                                    f"bootstrap over probes ({resamples} resamples)")
                measured["mean_false_matches_per_probe", t].append(Measured(
                    estimate_row("mean_false_matches_per_probe", group, t, estimate, min_cell),
                    replicates if in_cell else None))

    add_rows_and_gaps(report, measured, METRICS, levels, group_by=grouping.keys, resamples=resamples,
                      phrases=PHRASES)
    report["summary"] = _summary(report, levels, min_cell)
    return report


def _summary(report: dict, levels: list[float], min_cell: int) -> list[str]:
    rows = report["metrics"]
    p = report["parameters"]
    sentences = [(f"{p['probes']} probe photos ({p['probes'] - p['mated_probes']} of people not in "
                 f"the gallery, {p['mated_probes']} of people in it) were searched against a "
                 f"gallery of {p['gallery_size']} images.")]
    for t in levels:
        row = rows_index(rows, "probes_with_false_match_rate", t).get(())
        if row:
            sentences.append(f"At {fmt_threshold(t)}, {row['k']} of {row['n']} photos of people "
                             f"not in the gallery ({fmt_rate(row['value'])} "
                             f"{fmt_interval(row['ci95'])}) were matched to someone in it.")
        row = rows_index(rows, "rank1_hit_rate", t).get(())
        if row:
            sentences.append(f"At {fmt_threshold(t)}, for {row['k']} of {row['n']} photos of "
                             f"people in the gallery ({fmt_rate(row['value'])} "
                             f"{fmt_interval(row['ci95'])}) the best match was the right person.")
    # The ACLU's number at every threshold; the others only where the data show a gap.
    sentences += headline_gap_sentences(report, PHRASES, "probes_with_false_match_rate")
    small = small_cells_sentence(rows, min_cell, "probes")
    if small:
        sentences.append(small)
    return sentences
