"""Genuine and impostor pairs for a 1:1 audit, formed from a dataset's identities and groups."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

from faceaudit.datasets.labelled import AuditDataset, AuditImage, AuditPair
from faceaudit.errors import InvalidParameterException

NO_IDENTITY_NOTE = ("{count} images carry no identity: make_pairs treats each as its own identity, so they "
                    "form only impostor pairs (no genuine pairs), and 1:1 false non-match rates cannot be "
                    "measured on them.")


def make_pairs(dataset: AuditDataset, impostors_per_genuine: int = 1, seed: int = 0,
               within_group: tuple[str, ...] = ("gender", "race")) -> list[AuditPair]:
    """Genuine and impostor pairs for a 1:1 (NIST-style) audit, deterministically.

    - Genuine: every pair of images of the same identity.
    - Impostor: pairs of images of different identities drawn WITHIN one demographic
      group (the images' values of ``within_group``, any AuditImage.group() key;
      a missing value is a group of its own), as NIST's demographic study does. A
      group gets ``impostors_per_genuine`` x its genuine pairs (a pair counts in the
      group of its first image), or, when it has no genuine pairs,
      ``impostors_per_genuine`` x its images; all possible pairs when fewer exist.
      Drawn without repetition with ``random.Random(seed)``.
    - An image without identity (UTKFace) is its own identity: it is in impostor
      pairs only. Notes on this and on short groups are added to dataset.notes.

    Pairs are (path_a < path_b); genuine pairs come first, by identity, then
    impostors, group by group.
    """
    if impostors_per_genuine < 0:
        raise InvalidParameterException(f"impostors_per_genuine must be >= 0, got {impostors_per_genuine}")
    builtin = {"gender", "race", "age_band"}
    for key in within_group:
        if key not in builtin and not any(key in image.groups for image in dataset.images):
            raise InvalidParameterException(
                f"within_group key {key!r} is not a label of any image in {dataset.name} "
                f"(gender, race, age_band or a group column: {', '.join(_group_keys(dataset)) or 'none'})")
    images = sorted(dataset.images, key=lambda image: image.path)

    def identity(image: AuditImage) -> tuple[int, str]:
        return (0, image.identity) if image.identity is not None else (1, image.path)

    by_identity: dict[tuple[int, str], list[AuditImage]] = defaultdict(list)
    for image in images:
        by_identity[identity(image)].append(image)
    no_identity = sum(image.identity is None for image in images)
    if no_identity:
        _add_note(dataset, NO_IDENTITY_NOTE.format(count=no_identity))

    def group_of(image: AuditImage) -> tuple[str | None, ...]:
        return tuple(image.group(key) for key in within_group)

    genuine: list[AuditPair] = []
    genuine_per_group: Counter = Counter()
    for person in sorted(by_identity):
        for a, b in itertools.combinations(by_identity[person], 2):
            genuine.append(AuditPair(a.path, b.path, True))
            genuine_per_group[group_of(a)] += 1

    groups: dict[tuple, list[AuditImage]] = defaultdict(list)
    for image in images:
        groups[group_of(image)].append(image)
    rng = random.Random(seed)
    impostors: list[AuditPair] = []
    for cell in sorted(groups, key=lambda k: tuple((v is None, v or "") for v in k)):
        members = groups[cell]
        wanted = impostors_per_genuine * (genuine_per_group[cell] or len(members))
        chosen, possible = _sample_impostors([identity(m) for m in members], wanted, rng)
        if possible < wanted:
            label = ", ".join(f"{k}={v}" for k, v in zip(within_group, cell, strict=True))
            _add_note(dataset, f"make_pairs: group ({label}) allows only {possible} impostor pairs, "
                               f"fewer than the {wanted} wanted; all of them were used.")
        impostors.extend(AuditPair(members[i].path, members[j].path, False) for i, j in chosen)
    return genuine + impostors


def _sample_impostors(identities: list, wanted: int, rng: random.Random) -> tuple[list[tuple[int, int]], int]:
    """Up to ``wanted`` distinct index pairs (i < j) of members with different identities, sorted,
    and how many such pairs exist."""
    n = len(identities)
    possible = n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in Counter(identities).values())
    if wanted <= 0 or possible == 0:
        return [], possible
    if 2 * wanted >= possible:
        every = [(i, j) for i, j in itertools.combinations(range(n), 2) if identities[i] != identities[j]]
        return (every if wanted >= possible else sorted(rng.sample(every, wanted))), possible
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < wanted:
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j and identities[i] != identities[j]:
            chosen.add((min(i, j), max(i, j)))
    return sorted(chosen), possible


def _group_keys(dataset: AuditDataset) -> list[str]:
    return sorted({key for image in dataset.images for key in image.groups})


def _add_note(dataset: AuditDataset, note: str) -> None:
    if note not in dataset.notes:
        dataset.notes.append(note)
