"""Which engine should be the default? Both engines through all three audit protocols (issue 9).

On faces-dev's check half (never used to calibrate either engine or to train a
normalization), four configurations of the local target:

- ``dlib``: the dlib engine (model 1.0) as it ships;
- ``dlib-normalized``: the same with fair score normalization trained on the
  calibration half's *dlib* embeddings;
- ``sface``: the SFace engine (model 2.0) as it ships;
- ``sface-normalized``: the same with a normalization trained on the calibration
  half's *SFace* embeddings.

Each configuration runs verification (NIST-style 1:1, within-group impostors),
lineup (ACLU-style 1:N) and attributes (Gender Shades). Every run is a full audit
report under ``<out>/<config>/<protocol>/``; ``<out>/compare-<protocol>/`` puts the
configurations side by side (``compare_reports``); ``<out>/summary.json`` and
``summary.md`` quote the headline figures straight from the reports' own rows and
gaps (nothing is recomputed here).

The normalizations are trained here, not with ``faceaudit.fairness.train``'s
``train_score_normalization``: that embeds with the process's default engine in
forkserver workers (which keep the environment the forkserver started with) and
caches embeddings per path for the process's life, whatever the engine, so a
second engine in one process would be trained on the first one's vectors. Here
each engine is named explicitly (``engine_named``) and embeddings are kept per
engine; the fit itself is ``FairScoreNormalization.fit`` with the same inputs.
The trained files stay under the cache folder (research-only training data, not
shipped).

Runs already written are skipped (``--force`` reruns them), and answers are
cached under ``--cache``, so an interrupted run resumes cheaply. Run under
``nice`` on a shared machine:

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/engine_audits.py \
        [--configs dlib,sface] [--protocols verification,lineup] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from faceaudit.audit import protocols
from faceaudit.audit.report import compare_reports, write_report
from faceaudit.audit.targets import open_target
from faceaudit.datasets import AuditDataset, faces_dev, load_dataset
from faceaudit.engine.batch import analyze_files
from faceaudit.fairness.score_normalization import FairScoreNormalization
from faceaudit.fairness.train import select
from faceaudit.runtime import engine_named, engine_spec
from faceaudit.settings import DEFAULT_ENGINE, ENGINE_ENV, GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV, Settings

CALIBRATION = {"half": faces_dev.CALIBRATION}
GROUP_BY = ("gender", "race")
TARGET_FMR = 0.001  # the verification protocol's "comparable overall accuracy" operating point
LINEUP_LEVELS = (80, 95, 99)

console = Console(stderr=True)


@dataclass(frozen=True)
class Config:
    name: str
    engine: str
    normalized: bool

    @property
    def label(self) -> str:
        if self.normalized:
            return f"{self.engine} + score normalization"
        return f"{self.engine} (default)" if self.engine == DEFAULT_ENGINE else self.engine


CONFIGS = {c.name: c for c in (Config("dlib", "dlib", False), Config("dlib-normalized", "dlib", True),
                               Config("sface", "sface", False), Config("sface-normalized", "sface", True))}
PROTOCOLS: dict[str, tuple[Callable[..., dict], dict[str, Any]]] = {
    "verification": (protocols.run_verification, {"target_fmr": TARGET_FMR}),
    "lineup": (protocols.run_lineup, {}),
    "attributes": (protocols.run_attributes, {}),
}
# Most decision-relevant first: if time runs out, what is missing matters least.
ORDER = [("dlib", "verification"), ("sface", "verification"), ("dlib", "lineup"), ("sface", "lineup"),
         ("dlib", "attributes"), ("sface", "attributes"),
         ("dlib-normalized", "verification"), ("sface-normalized", "verification"),
         ("dlib-normalized", "lineup"), ("sface-normalized", "lineup"),
         ("dlib-normalized", "attributes"), ("sface-normalized", "attributes")]


def check_half(dataset: AuditDataset) -> AuditDataset:
    """faces-dev's check half; pairs=None so verification generates them (as benchmarks/fairness.py)."""
    images = [image for image in dataset.images if image.group("half") == faces_dev.CHECK]
    return replace(dataset, name=f"{dataset.name} (check half)", images=images, pairs=None,
                   notes=[*dataset.notes, "evaluated on the check half; score normalizations trained on the "
                                          "calibration half with the same engine's embeddings"])


def train_normalization(dataset: AuditDataset, engine: str, path: Path, *, clusters: int,
                        target_fmr: float, workers: int | None) -> Path:
    """A fair score normalization fitted on ``engine``'s embeddings of the calibration half, saved at ``path``."""
    if path.exists():
        console.log(f"score normalization for {engine}: reusing {path}")
        return path
    images = select(dataset, CALIBRATION)
    settings = replace(Settings.from_env(), engine=engine, gender_head=None, score_normalization=None)
    started = time.monotonic()
    results = analyze_files([image.path for image in images], workers=workers,
                            engine_factory=partial(engine_named, engine, settings),
                            description=f"Embedding the calibration half ({engine})")
    kept = [(image, r.embedding) for image, r in zip(images, results) if r.detected and r.embedding is not None]
    vectors = np.array([vector for _, vector in kept], dtype=np.float64)
    identities = [image.identity if image.identity else f"#{i}" for i, (image, _) in enumerate(kept)]
    spec = engine_spec(engine)
    normalization = FairScoreNormalization.fit(
        vectors, identities, n_clusters=clusters, target_fmr=target_fmr, seed=0,
        provenance={"dataset": dataset.name, "where": dict(CALIBRATION), "engine": engine,
                    "model_version": spec.model_version, "images": len(images), "faces": len(kept)})
    path.parent.mkdir(parents=True, exist_ok=True)
    normalization.save(path)
    console.log(f"score normalization for {engine}: {len(kept)}/{len(images)} calibration images embedded, "
                f"{clusters} clusters, in {time.monotonic() - started:.0f} s -> {path}")
    return path


@contextmanager
def engine_environment(engine: str, normalization: Path | None) -> Iterator[None]:
    """The environment the local target hands its workers (read when it is opened), restored after."""
    names = (ENGINE_ENV, GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV)
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ[ENGINE_ENV] = engine
    if normalization is not None:
        os.environ[SCORE_NORMALIZATION_ENV] = str(normalization)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def run_audit(config: Config, protocol: str, dataset: AuditDataset, normalization: Path | None, out: Path,
              cache: Path, workers: int | None) -> dict:
    run, options = PROTOCOLS[protocol]
    verification = out.parent / "verification" / "report.json"
    if protocol == "lineup" and verification.exists():
        # Also at the similarity where this configuration's 1:1 audit had 0.1% false matches overall:
        # the one lineup threshold that means the same on both engines' scales (searches are cached
        # without a threshold, so adding a level costs no new search).
        t_star = json.loads(verification.read_text())["parameters"].get("threshold_at_target_fmr")
        if t_star is not None:
            options = {**options, "thresholds": (*LINEUP_LEVELS, t_star)}
    with engine_environment(config.engine, normalization):
        # A fresh target per configuration: its workers take the engine settings it was opened with.
        target = open_target("local", cache_dir=str(cache / config.name), workers=workers)
        try:
            report = run(dataset, target, group_by=GROUP_BY, seed=0, **options)
        finally:
            target.close()
    report = protocols.finish_report(report, ["python", "benchmarks/engine_audits.py", *sys.argv[1:]])
    expected = engine_spec(config.engine).model_version
    if report["target"].get("model_version") != expected:
        raise SystemExit(f"{config.name}: the target ran model version {report['target'].get('model_version')}, "
                         f"expected {expected}")
    write_report(report, out)
    return report


# -- summary: figures quoted from the reports' own rows and gaps ---------------------------------------


def row(report: dict, metric: str, threshold: float | None, group: Mapping[str, str]) -> dict | None:
    return next((r for r in report["metrics"] if r["metric"] == metric and r.get("threshold") == threshold
                 and r["group"] == dict(group)), None)


def figure(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {"group": r["group"], "value": r["value"], "ci95": r["ci95"], "k": r.get("k"), "n": r["n"],
            "ci_method": r.get("ci_method"), "small_cell": r.get("small_cell")}


def spread(report: dict, metric: str, threshold: float | None) -> dict | None:
    """The report's gap over its finest groups (gender x race cells where the data label both; lineup
    probes are LFW photos, labelled by gender only): worst and best group with their rows' intervals, ratio."""
    gaps = [g for g in report["gaps"] if g["metric"] == metric and g.get("threshold") == threshold]
    if not gaps:
        return None
    gap = max(gaps, key=lambda g: len(g["group_by"]))
    return {"threshold": threshold, "group_by": list(gap["group_by"]),
            "worst": figure(row(report, metric, threshold, gap["highest"]["group"])),
            "best": figure(row(report, metric, threshold, gap["lowest"]["group"])),
            "ratio": gap.get("ratio"), "ratio_ci95": gap.get("ratio_ci95"),
            "difference": gap.get("difference"), "difference_ci95": gap.get("difference_ci95"),
            "note": gap.get("note")}


def by_gender(report: dict, metric: str, threshold: float | None) -> dict | None:
    """Worst and best gender rows (genuine pairs are LFW's, labelled by gender only, so the report
    has no gender x race cells and no gap for them; its rows are quoted as they are)."""
    rows = [r for r in report["metrics"] if r["metric"] == metric and r.get("threshold") == threshold
            and set(r["group"]) == {"gender"}]
    if len(rows) < 2:
        return None
    return {"worst": figure(max(rows, key=lambda r: r["value"])), "best": figure(min(rows, key=lambda r: r["value"]))}


def verification_summary(report: dict) -> dict:
    t_star = report["parameters"].get("threshold_at_target_fmr")
    out: dict[str, Any] = {"genuine_pairs": report["parameters"]["genuine_pairs"],
                           "impostor_pairs": report["parameters"]["impostor_pairs"],
                           "target_fmr": report["parameters"]["target_fmr"], "threshold_at_target_fmr": t_star}
    for name, t in (("at_80", 80), ("at_target_fmr", t_star)):
        out[name] = {"threshold": t,
                     "false_non_match_rate": figure(row(report, "false_non_match_rate", t, {})),
                     "false_match_rate": figure(row(report, "false_match_rate", t, {})),
                     "false_match_rate_by_cell": spread(report, "false_match_rate", t),
                     "false_non_match_rate_by_gender": by_gender(report, "false_non_match_rate", t)}
    return out


def lineup_summary(report: dict) -> dict:
    params = report["parameters"]
    out: dict[str, Any] = {"gallery_size": params["gallery_size"], "probes": params["probes"],
                           "mated_probes": params["mated_probes"]}
    for t in params["thresholds"]:
        key = f"at_{t}" if t in LINEUP_LEVELS else "at_verification_fmr_threshold"
        out[key] = {"threshold": t,
                          "probes_with_false_match_rate": figure(row(report, "probes_with_false_match_rate", t, {})),
                          "rank1_hit_rate": figure(row(report, "rank1_hit_rate", t, {})),
                          "probes_with_false_match_rate_by_cell": spread(report, "probes_with_false_match_rate", t)}
    return out


def attributes_summary(report: dict) -> dict:
    return {"gender_error_rate": figure(row(report, "gender_error_rate", None, {})),
            "gender_error_rate_by_cell": spread(report, "gender_error_rate", None),
            "detection_failure_rate": figure(row(report, "detection_failure_rate", None, {})),
            "detection_failure_rate_by_cell": spread(report, "detection_failure_rate", None)}


SUMMARIES = {"verification": verification_summary, "lineup": lineup_summary, "attributes": attributes_summary}


def pct(f: dict | None, digits: int = 2) -> str:
    if f is None:
        return "—"
    low, high = f["ci95"]
    return f"{100 * f['value']:.{digits}f}% [{100 * low:.{digits}f}, {100 * high:.{digits}f}] (n = {f['n']:,})"


def cell_name(f: dict | None) -> str:
    return "—" if f is None else " ".join(str(value) for _, value in sorted(f["group"].items()))


def ratio_text(s: dict | None) -> str:
    """The report's worst/best ratio with its interval, and the difference (always defined) with its interval."""
    if s is None:
        return "—"
    ci = s.get("ratio_ci95")
    if s.get("ratio") is None:
        ratio = "ratio undefined (best cell 0)"
    else:
        ratio = f"{s['ratio']:.1f}x" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else " (interval unbounded)")
    difference = s.get("difference")
    if difference is None:
        return ratio
    dci = s.get("difference_ci95")
    return ratio + f"; difference {100 * difference:.2f} pts" + (
        f" [{100 * dci[0]:.2f}, {100 * dci[1]:.2f}]" if dci else "")


def summary_markdown(summary: dict) -> str:
    configs = [c for c in CONFIGS if c in summary["configurations"]]
    head = "| | " + " | ".join(CONFIGS[c].label for c in configs) + " |"
    lines = ["# Engine audits: both engines, with and without score normalization", "",
             f"Data: {summary['data']}. {summary['caveat']}", "",
             "Each figure is quoted from the audit's own report.json (value [95% interval] (n)); "
             "intervals as the reports state them (bootstrap over images or identities, widened to "
             "Wilson's; Wilson for lineup probes and attributes). Thresholds 80/95/99 are each engine's "
             "own similarity scale and are not comparable between engines; the threshold at overall "
             "FMR 0.1% is. Verification n counts pairs (pairs share images: the intervals are bootstrapped "
             "over images); lineup n counts probe photos (LFW only, labelled by gender); attributes n "
             "counts images.", ""]
    rows_by_key: dict[str, list[str]] = {}

    def add(key: str, config: str, text: str) -> None:
        rows_by_key.setdefault(key, [""] * len(configs))[configs.index(config)] = text

    for config in configs:
        runs = summary["configurations"][config]
        v, lu, a = runs.get("verification"), runs.get("lineup"), runs.get("attributes")
        if v:
            add("verification: threshold at overall FMR 0.1%", config, f"{v['threshold_at_target_fmr']}")
            for name, title in (("at_80", "at 80"), ("at_target_fmr", "at overall FMR 0.1%")):
                block = v[name]
                add(f"LFW genuine pairs FNMR {title}", config, pct(block["false_non_match_rate"]))
                add(f"impostor pairs FMR {title}", config, pct(block["false_match_rate"], 3))
                s = block["false_match_rate_by_cell"]
                add(f"FMR {title}: worst group", config,
                    "—" if s is None else f"{cell_name(s['worst'])} {pct(s['worst'], 3)}")
                add(f"FMR {title}: best group", config,
                    "—" if s is None else f"{cell_name(s['best'])} {pct(s['best'], 3)}")
                add(f"FMR {title}: worst/best", config, ratio_text(s))
                s = block["false_non_match_rate_by_gender"]
                add(f"FNMR {title}: worse gender", config,
                    "—" if s is None else f"{cell_name(s['worst'])} {pct(s['worst'])}")
                add(f"FNMR {title}: better gender", config,
                    "—" if s is None else f"{cell_name(s['best'])} {pct(s['best'])}")
        if lu:
            for key in [f"at_{t}" for t in LINEUP_LEVELS] + ["at_verification_fmr_threshold"]:
                block = lu.get(key)
                if block is None:
                    continue
                t = "the 1:1 FMR-0.1% threshold" if key == "at_verification_fmr_threshold" else block["threshold"]
                if key == "at_verification_fmr_threshold":
                    add(f"lineup: {t}", config, f"{block['threshold']}")
                add(f"lineup: non-mated probes with a false match at {t}", config,
                    pct(block["probes_with_false_match_rate"], 1))
                add(f"lineup: rank-1 hit rate of mated probes at {t}", config, pct(block["rank1_hit_rate"], 1))
                s = block["probes_with_false_match_rate_by_cell"]
                add(f"lineup at {t}: worst group", config,
                    "—" if s is None else f"{cell_name(s['worst'])} {pct(s['worst'], 1)}")
                add(f"lineup at {t}: best group", config,
                    "—" if s is None else f"{cell_name(s['best'])} {pct(s['best'], 1)}")
                add(f"lineup at {t}: worst/best", config, ratio_text(s))
        if a:
            add("gender error, everyone", config, pct(a["gender_error_rate"], 1))
            s = a["gender_error_rate_by_cell"]
            add("gender error: worst group", config,
                "—" if s is None else f"{cell_name(s['worst'])} {pct(s['worst'], 1)}")
            add("gender error: best group", config,
                "—" if s is None else f"{cell_name(s['best'])} {pct(s['best'], 1)}")
            add("gender error: worst/best", config, ratio_text(s))
            add("no face found, everyone", config, pct(a["detection_failure_rate"], 1))
    lines += [head, "|---|" + "---:|" * len(configs)]
    lines += [f"| {key} | " + " | ".join(v or "not run" for v in values) + " |" for key, values in rows_by_key.items()]
    lines += ["", "Comparison reports (self-contained HTML, with Markdown and JSON beside them):", ""]
    lines += [f"- {p}: [compare-{p}/comparison.html](compare-{p}/comparison.html)" for p in summary["comparisons"]]
    if summary["missing"]:
        lines += ["", "Not run: " + ", ".join(f"{c}/{p}" for c, p in summary["missing"]) + "."]
    if summary.get("normalizations"):
        lines += ["", "Score normalizations (trained on the calibration half, not shipped):", ""]
        lines += [f"- {engine}: {n['faces']} faces of {n['images']} images, {n['n_clusters']} clusters, target FMR "
                  f"{n['target_fmr']}" for engine, n in summary["normalizations"].items()]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, cache: Path, data: str, run: dict | None = None) -> dict:
    configurations: dict[str, dict] = {}
    missing = []
    for config in CONFIGS:
        for protocol in PROTOCOLS:
            path = out / config / protocol / "report.json"
            if path.exists():
                report = json.loads(path.read_text())
                configurations.setdefault(config, {})[protocol] = SUMMARIES[protocol](report)
            else:
                missing.append((config, protocol))
    comparisons = []
    for protocol in PROTOCOLS:
        present = [c for c in CONFIGS if (out / c / protocol / "report.json").exists()]
        if len(present) >= 2:
            compare_reports([out / c / protocol for c in present], out / f"compare-{protocol}",
                            labels=[CONFIGS[c].label for c in present])
            comparisons.append(protocol)
    normalizations = {}
    for engine in ("dlib", "sface"):
        path = cache / "models" / f"{engine}-score-normalization.json"
        if path.exists():
            data_ = json.loads(path.read_text())
            normalizations[engine] = {**{k: data_["provenance"].get(k) for k in
                                         ("images", "faces", "n_clusters", "cluster_sizes", "model_version")},
                                      "target_fmr": data_["target_fmr"]}
    summary = {"data": f"faces-dev check half ({data}; UTKFace aligned & cropped and LFW deep-funneled "
                       "research photos, described in faces-dev's DATASET.md)",
               "caveat": "Research photos under research labels (UTKFace's race and gender, LFW's identities); "
                         "UTKFace 'strangers' are different source photos, not verified different people. "
                         "These are not real-world accuracy figures.",
               "configurations": configurations, "comparisons": comparisons, "missing": missing,
               "normalizations": normalizations}
    previous = json.loads((out / "summary.json").read_text()).get("run") if (out / "summary.json").exists() else None
    summary["run"] = run or previous  # what ran last (audits, time, load average), kept by --summary-only
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def parse_list(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(known)})")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", help="faces-dev folder (default: found as the tests find it)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engines"))
    parser.add_argument("--cache", default="/tmp/faceaudit-engine-audits",
                        help="audit answers and the trained normalizations (default %(default)s)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--clusters", type=int, default=10, help="normalization clusters (as fairness.py)")
    parser.add_argument("--normalization-fmr", type=float, default=0.01,
                        help="the normalization's per-cluster target FMR (as fairness.py)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--force", action="store_true", help="rerun audits whose report exists")
    parser.add_argument("--summary-only", action="store_true", help="only rewrite comparisons and summary")
    args = parser.parse_args()
    configs = parse_list(args.configs, list(CONFIGS), "configuration")
    wanted = parse_list(args.protocols, list(PROTOCOLS), "protocol")
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)

    run: dict | None = None
    if not args.summary_only:
        run = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:],
               "load_average_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
        dataset = load_dataset(root)
        evaluation = check_half(dataset)
        steps = [(c, p) for c, p in ORDER if c in configs and p in wanted
                 and (args.force or not (out / c / p / "report.json").exists())]
        console.log(f"{len(steps)} audit(s) to run on {len(evaluation.images)} check-half images: "
                    + ", ".join(f"{c}/{p}" for c, p in steps))
        normalizations: dict[str, Path] = {}
        for index, (name, protocol) in enumerate(steps, 1):
            config = CONFIGS[name]
            normalization = None
            if config.normalized:
                if config.engine not in normalizations:
                    normalizations[config.engine] = train_normalization(
                        dataset, config.engine, cache / "models" / f"{config.engine}-score-normalization.json",
                        clusters=args.clusters, target_fmr=args.normalization_fmr, workers=args.workers)
                normalization = normalizations[config.engine]
            started = time.monotonic()
            console.rule(f"[{index}/{len(steps)}] {config.label}: {protocol}")
            report = run_audit(config, protocol, evaluation, normalization, out / name / protocol, cache,
                               args.workers)
            console.log(f"[{index}/{len(steps)}] {name}/{protocol} done in {time.monotonic() - started:.0f} s "
                        f"({report['target']['endpoint']}, model {report['target']['model_version']}): "
                        + (report["summary"][0] if report.get("summary") else ""))
            write_summary(out, cache, str(root), run)  # after every run: an interrupted job leaves a summary
        run["steps"] = [f"{c}/{p}" for c, p in steps]
        run["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary = write_summary(out, cache, str(root), run)
    console.print((out / "summary.md").read_text())
    if summary["missing"]:
        console.log("not run: " + ", ".join(f"{c}/{p}" for c, p in summary["missing"]))


if __name__ == "__main__":
    main()
