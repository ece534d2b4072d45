"""Lineup false matches by gender over many gallery draws, for each engine (issue 9).

The four-configuration audit (engine_audits.py) ran one ACLU-style lineup per engine:
one gallery, 202 people-not-in-it probes. At SFace's 95 it matched 15.1% of women
against 4.2% of men. One draw cannot say whether that is the engine or the draw, so
this repeats the lineup over many draws and pools them.

A draw: the LFW people are split at random in two halves A and B. Gallery 1 holds the
UTKFace images (distractors) and one random photo of each person in B, and every photo
of A is searched against it as a probe of someone not in the gallery; gallery 2 swaps
A and B. Each pair of galleries thus searches every LFW photo exactly once as a non-mated
probe (and the other photos of gallery people as mated probes). ``--draws`` such pairs.

Scopes (``--scope``):

- ``check``: faces-dev's check half only (1,000 UTKFace distractors, 404 LFW photos of
  100 people), which no similarity calibration saw: the figures to trust;
- ``all``: all of faces-dev (each draw's distractors: a random 1,000 of the 2,000
  UTKFace images; 808 LFW photos of 200 people) for twice the probes; the calibration
  half helped place the 95/99 anchors (on UTKFace impostors), so read it as a second look.

For each engine and threshold (its own scale, 80/95/99; ``--scale engine=file`` adds a
candidate scale), per gender: non-mated probes with a false match, pooled over draws
(k/n summed over the draws; each photo is searched ``draws`` times), with

- a Wilson interval with n = the distinct probe photos (each counted once, at its share of
  draws with a false match, k rounded): what one search of each photo would give;
- a bootstrap interval over people (resampling LFW identities within each gender, with
  every draw of their photos, 2,000 resamples), which also covers the women-minus-men
  difference: photos of one person are not independent;
- the spread across draws (2.5th-97.5th percentile of the per-draw rate);
- which distractors the false matches hit (UTKFace gender, or LFW).

The rank-1 hit rate of mated probes is reported beside it (an operating point that
matches nobody looks fair). Comparisons go through faceaudit.scoring.Scoring with each
engine's shipped scale. Embeddings are cached under ``--cache``.

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/lineup_gaps.py [--draws 50] [--scope check,all]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from faceaudit.datasets import faces_dev
from faceaudit.engine.batch import analyze_files
from faceaudit.runtime import engine_named, engine_spec
from faceaudit.scoring import Scoring
from faceaudit.settings import Settings
from faceaudit.similarity import SimilarityScale
from faceaudit.stats import percentile_interval, rng_for, wilson

LEVELS = (80.0, 95.0, 99.0)
GENDERS = ("female", "male")
RESAMPLES = 2000
OUT = Path(__file__).parent / "results" / "lineup_gaps"


def embeddings(root: Path, labels, engine: str, cache: Path, workers: int | None) -> dict[str, np.ndarray]:
    """{relative path: embedding of the largest face} for every faces-dev image the engine found a face in."""
    path = cache / f"{engine}-embeddings.npz"
    if path.exists():
        data = np.load(path)
        return {str(p): v for p, v in zip(data["paths"], data["vectors"])}
    settings = Settings.from_env()
    from dataclasses import replace
    settings = replace(settings, engine=engine, gender_head=None, score_normalization=None)
    results = analyze_files([root / label.path for label in labels], workers=workers,
                            engine_factory=partial(engine_named, engine, settings),
                            description=f"faces-dev ({engine})")
    found = {label.path: r.embedding for label, r in zip(labels, results) if r.detected and r.embedding is not None}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, paths=np.array(list(found)), vectors=np.array(list(found.values())))
    return found


def lineup(scoring: Scoring, vectors: dict[str, np.ndarray], utk: list, lfw: list, *, draws: int, seed: int,
           distractors: int | None, levels=LEVELS) -> dict:
    """Pooled per-gender lineup figures over ``draws`` pairs of galleries (see the module docstring)."""
    utk = [label for label in utk if label.path in vectors]
    lfw_found = [label for label in lfw if label.path in vectors]
    missed = len(lfw) - len(lfw_found)
    lfw = lfw_found
    people = sorted({label.identity for label in lfw})
    person_gender = {label.identity: label.gender for label in lfw}
    photos_of: dict[str, list[int]] = {p: [] for p in people}
    for i, label in enumerate(lfw):
        photos_of[label.identity].append(i)
    probe_vectors = np.array([vectors[label.path] for label in lfw])
    utk_vectors = np.array([vectors[label.path] for label in utk])
    # Every similarity once: probes x UTKFace distractors, probes x LFW photos.
    to_utk = scoring.similarities(probe_vectors, utk_vectors)
    to_lfw = scoring.similarities(probe_vectors, probe_vectors)
    utk_gender = np.array([label.gender for label in utk])
    n_photos, n_levels = len(lfw), len(levels)
    searched = np.zeros(n_photos, int)  # non-mated searches per photo
    false = np.zeros((n_levels, n_photos), int)
    mated = np.zeros(n_photos, int)
    hits = np.zeros((n_levels, n_photos), int)
    per_draw: list[dict] = []  # per gallery: per gender and level, k and n
    hit_kind = [Counter() for _ in levels]  # who the best false match was
    level_array = np.array(levels)
    for draw in range(draws):
        rng = rng_for(seed, "lineup draw", draw)
        order = rng.permutation(len(people))
        halves = [[people[i] for i in order[: len(people) // 2]], [people[i] for i in order[len(people) // 2:]]]
        keep = (np.sort(rng.choice(len(utk), distractors, replace=False)) if distractors and distractors < len(utk)
                else np.arange(len(utk)))
        for held_out, in_gallery in ((halves[0], halves[1]), (halves[1], halves[0])):
            gallery_photo = {person: photos_of[person][int(rng.integers(len(photos_of[person])))]
                             for person in in_gallery}
            columns = np.array(sorted(gallery_photo.values()))
            column_person = np.array([lfw[c].identity for c in columns])
            counts = {(g, t): [0, 0] for g in GENDERS for t in levels}
            # Non-mated probes: every photo of the held-out people; every gallery face is a non-mate.
            probes = np.array([i for person in held_out for i in photos_of[person]])
            best_utk = to_utk[np.ix_(probes, keep)]
            best_lfw = to_lfw[np.ix_(probes, columns)]
            top_utk, top_lfw = best_utk.max(axis=1), best_lfw.max(axis=1)
            top = np.maximum(top_utk, top_lfw)
            above = top[None, :] >= level_array[:, None]  # (levels, probes)
            searched[probes] += 1
            false[:, probes] += above
            for j, probe in enumerate(probes):
                gender = lfw[probe].gender
                kind = ("LFW " + person_gender[column_person[int(best_lfw[j].argmax())]]
                        if top_lfw[j] >= top_utk[j] else "UTKFace " + utk_gender[keep[int(best_utk[j].argmax())]])
                for li, t in enumerate(levels):
                    counts[gender, t][1] += 1
                    counts[gender, t][0] += int(above[li, j])
                    if above[li, j]:
                        hit_kind[li][f"{gender} probe -> {kind}"] += 1
            # Mated probes: the other photos of gallery people; a hit is a mate ranked first at >= t.
            mates = np.array([i for person in in_gallery for i in photos_of[person] if i != gallery_photo[person]])
            if mates.size:
                lfw_sim = to_lfw[np.ix_(mates, columns)]
                utk_top = to_utk[np.ix_(mates, keep)].max(axis=1)
                best_col = lfw_sim.argmax(axis=1)
                best_sim = lfw_sim[np.arange(len(mates)), best_col]
                is_mate = column_person[best_col] == np.array([lfw[m].identity for m in mates])
                # The best LFW face must also beat every distractor (ties: the distractor wins, cautiously).
                first = is_mate & (best_sim > utk_top)
                mated[mates] += 1
                hits[:, mates] += first[None, :] & (best_sim[None, :] >= level_array[:, None])
            per_draw.append(counts)

    def gender_block(li: int, gender: str) -> dict:
        members = [i for i in range(n_photos) if lfw[i].gender == gender]
        k, n = int(false[li, members].sum()), int(searched[members].sum())
        share = false[li, members] / np.maximum(searched[members], 1)
        distinct = len(members)
        rate = k / n if n else float("nan")
        w = wilson(round(float(share.sum())), distinct)
        per = [c[gender, levels[li]][0] / c[gender, levels[li]][1] for c in per_draw if c[gender, levels[li]][1]]
        hk, hn = int(hits[li, members].sum()), int(mated[members].sum())
        return {"rate": rate, "k": k, "n_searches": n, "photos": distinct,
                "people": len({lfw[i].identity for i in members}),
                "wilson95_distinct_photos": [w.low, w.high],
                "spread_across_galleries": list(np.percentile(per, [2.5, 97.5])) if per else None,
                "rank1_hit_rate": hk / hn if hn else None, "rank1_hits": hk, "mated_searches": hn}

    # Bootstrap over people within each gender: per-person sums, resampled with replacement.
    person_index = {p: i for i, p in enumerate(people)}
    owner = np.array([person_index[label.identity] for label in lfw])
    per_person_false = np.zeros((n_levels, len(people)))
    np.add.at(per_person_false, (slice(None), owner), false)
    per_person_searched = np.zeros(len(people))
    np.add.at(per_person_searched, owner, searched)
    by_gender = {g: np.array([person_index[p] for p in people if person_gender[p] == g]) for g in GENDERS}
    rng = rng_for(seed, "lineup bootstrap over people")
    draws_of = {g: rng.integers(0, len(ix), size=(RESAMPLES, len(ix))) for g, ix in by_gender.items()}
    out: dict = {"photos": n_photos, "people": len(people), "lfw_photos_without_a_face": missed,
                 "distractors": int(distractors or len(utk)), "utkface_images": len(utk),
                 "galleries": 2 * draws, "levels": {}}
    for li, t in enumerate(levels):
        block = {g: gender_block(li, g) for g in GENDERS}
        replicate = {}
        for g, ix in by_gender.items():
            chosen = ix[draws_of[g]]
            replicate[g] = per_person_false[li, chosen].sum(axis=1) / per_person_searched[chosen].sum(axis=1)
            block[g]["bootstrap95_people"] = list(percentile_interval(replicate[g]))
        difference = block["female"]["rate"] - block["male"]["rate"]
        block["female_minus_male"] = {"value": difference,
                                      "bootstrap95_people": list(percentile_interval(replicate["female"]
                                                                                     - replicate["male"]))}
        block["threshold"] = t
        block["best_false_match_was"] = dict(hit_kind[li].most_common())
        out["levels"][f"{t:g}"] = block
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(results: dict) -> str:
    lines = ["# Lineup false matches by gender, many galleries", "",
             f"Data: faces-dev ({results['data']}); research photos under research labels (LFW's gender lists, "
             "UTKFace's gender); not real-world figures. "
             f"{results['draws']} draws of a pair of galleries per scope (see benchmarks/lineup_gaps.py): every LFW "
             "photo is searched once per draw as a probe of someone not in the gallery. Rate = pooled false-matched "
             "searches / searches; Wilson interval with n = distinct probe photos (each counted once); bootstrap "
             "intervals over people (2,000 resamples), which the difference uses; spread = 2.5th-97.5th percentile "
             "of the per-gallery rate. Rank-1: mated probes whose best match was the right person at >= t.", ""]
    for scope, engines in results["scopes"].items():
        lines += [f"## Scope `{scope}`", ""]
        lines += ["| engine | t | women: rate [Wilson] [bootstrap] (searches; photos, people) | "
                  "men: rate [Wilson] [bootstrap] | women − men [bootstrap] | spread across galleries (w / m) | "
                  "rank-1 hits (w / m) |", "|---|---:|---|---|---|---|---|"]
        for engine, r in engines.items():
            for t, b in r["levels"].items():
                f, m, d = b["female"], b["male"], b["female_minus_male"]

                def cell(x):
                    return (f"{pct(x['rate'])}% [{pct(x['wilson95_distinct_photos'][0])}, "
                            f"{pct(x['wilson95_distinct_photos'][1])}] [{pct(x['bootstrap95_people'][0])}, "
                            f"{pct(x['bootstrap95_people'][1])}] ({x['n_searches']:,}; {x['photos']}, {x['people']})")
                spread = " / ".join(f"{pct(x['spread_across_galleries'][0])}-{pct(x['spread_across_galleries'][1])}"
                                    for x in (f, m))
                hits = " / ".join(f"{pct(x['rank1_hit_rate'])}%" for x in (f, m))
                lines.append(f"| {engine} | {t} | {cell(f)} | {cell(m)} | {100 * d['value']:+.1f} pts "
                             f"[{100 * d['bootstrap95_people'][0]:+.1f}, {100 * d['bootstrap95_people'][1]:+.1f}] | "
                             f"{spread} | {hits} |")
        lines += ["", "Who the best false match was (searches):", ""]
        for engine, r in engines.items():
            for t, b in r["levels"].items():
                kinds = ", ".join(f"{k}: {v}" for k, v in b["best_false_match_was"].items())
                lines.append(f"- {engine} at {t}: {kinds or 'none'}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--engines", default="dlib,sface")
    parser.add_argument("--scope", default="check,all")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cache", default="/tmp/faceaudit-lineup-gaps")
    parser.add_argument("--scale", action="append", default=[],
                        help="NAME=ENGINE:FILE: also score ENGINE's embeddings with the scale in FILE")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    labels = faces_dev.read_labels(root)
    halves = faces_dev.split_halves(labels)
    scorings: dict[str, tuple[str, Scoring]] = {
        name: (name, Scoring(engine_spec(name).similarity_scale())) for name in args.engines.split(",")}
    for spec in args.scale:
        name, rest = spec.split("=", 1)
        engine, file = rest.split(":", 1)
        scorings[name] = (engine, Scoring(SimilarityScale.from_dict(json.loads(Path(file).read_text()))))
    cache = Path(args.cache)
    vectors = {engine: embeddings(root, labels, engine, cache, args.workers)
               for engine in {engine for engine, _ in scorings.values()}}
    started = time.monotonic()
    results: dict = {"data": str(root), "draws": args.draws, "seed": args.seed, "python": platform.python_version(),
                     "scales": {name: {"engine": engine, "anchors": scoring.scale.anchors}
                                for name, (engine, scoring) in scorings.items()}, "scopes": {}}
    for scope in args.scope.split(","):
        chosen = [label for label in labels if scope == "all" or halves[label.path] == faces_dev.CHECK]
        utk = [label for label in chosen if label.identity is None]
        lfw = [label for label in chosen if label.identity is not None]
        distractors = 1000 if scope == "all" else None
        results["scopes"][scope] = {
            name: lineup(scoring, vectors[engine], utk, lfw, draws=args.draws, seed=args.seed,
                         distractors=distractors)
            for name, (engine, scoring) in scorings.items()}
    results["seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lineup_gaps.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "lineup_gaps.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
