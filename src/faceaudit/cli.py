"""The `faceaudit` command line: a thin layer over faceaudit.rekognition.

Output is JSON in Rekognition's shapes (one object per image, as JSON Lines when
there are several), or a readable table with --pretty. Errors keep
Rekognition's names: {"Error": {"Code": "InvalidImageFormatException", ...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceaudit.errors import RekognitionError
from faceaudit.settings import ACCESS_KEY_ENV, SECRET_KEY_ENV

if TYPE_CHECKING:
    from faceaudit.access import AccessKey, IssuedKey, SQLiteKeyStore
    from faceaudit.engine.base import FaceEngine

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def expand_inputs(paths: list[str]) -> list[str]:
    """Files as given; directories become the images inside them, sorted."""
    expanded: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            expanded.extend(str(f) for f in sorted(p.rglob("*"))
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            expanded.append(path)
    return expanded


def _progress(items: list[str], description: str) -> Iterator[str]:
    """Items, with a progress bar on stderr when there are many (stdout stays JSON)."""
    if len(items) < 5:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track
    yield from track(items, description=description, console=Console(stderr=True), transient=True)


def _run_each(items: list[str], description: str, operation: Callable[[str], dict[str, Any]]
              ) -> list[tuple[str, dict[str, Any]]]:
    results = []
    for item in _progress(items, description):
        try:
            results.append((item, operation(item)))
        except RekognitionError as error:
            results.append((item, {"Error": error.to_dict()}))
    return results


def _engine(args: argparse.Namespace) -> FaceEngine:
    """The engine ``--engine`` names (default: FACEAUDIT_ENGINE, else sface)."""
    from faceaudit.runtime import default_engine
    try:
        return default_engine(_engine_name(args))
    except ValueError as error:
        raise SystemExit(f"faceaudit: {error}") from None


def _engine_name(args: argparse.Namespace) -> str:
    """The engine's name from ``--engine``, else the environment; SystemExit if unknown."""
    from faceaudit.runtime import engine_spec
    from faceaudit.settings import Settings
    name = getattr(args, "engine", None) or Settings.from_env().engine
    try:
        return engine_spec(name).name
    except ValueError as error:
        raise SystemExit(f"faceaudit: {error}") from None


def _print_json(results: list[tuple[str, dict[str, Any]]], key: str) -> None:
    if len(results) == 1:
        print(json.dumps(results[0][1], indent=2))
        return
    for name, result in results:
        print(json.dumps({key: name, **result}))


def _detect_table(results: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="DetectFaces")
    for column in ("image", "face", "box (L,T,W,H)", "confidence", "age", "gender", "yaw/pitch/roll",
                   "bright/sharp"):
        table.add_column(column)
    for name, result in results:
        if "Error" in result:
            table.add_row(name, "-", f"[red]{result['Error']['Code']}[/red]: {result['Error']['Message']}")
            continue
        if not result["FaceDetails"]:
            table.add_row(name, "-", "no face")
        for i, face in enumerate(result["FaceDetails"]):
            box, pose, quality = face["BoundingBox"], face["Pose"], face["Quality"]
            age = face.get("AgeRange")
            gender = face.get("Gender")
            table.add_row(
                name, str(i), f"{box['Left']:.2f},{box['Top']:.2f},{box['Width']:.2f},{box['Height']:.2f}",
                f"{face['Confidence']:.1f}",
                f"{age['Low']}-{age['High']}" if age else "",
                f"{gender['Value']} ({gender['Confidence']:.0f}%)" if gender else "",
                f"{pose['Yaw']:.0f}/{pose['Pitch']:.0f}/{pose['Roll']:.0f}",
                f"{quality['Brightness']:.0f}/{quality['Sharpness']:.0f}")
    Console().print(table)


def _compare_table(source: str, results: list[tuple[str, dict[str, Any]]], threshold: float,
                   engine: FaceEngine) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"CompareFaces: {source} (largest face), threshold {threshold:g}")
    for column in ("target", "face box (L,T,W,H)", "similarity", "match"):
        table.add_column(column)
    for name, result in results:
        if "Error" in result:
            table.add_row(name, f"[red]{result['Error']['Code']}[/red]: {result['Error']['Message']}")
            continue
        rows = [(m["Face"], m["Similarity"], "[green]yes[/green]") for m in result["FaceMatches"]]
        rows += [(f, None, "no") for f in result["UnmatchedFaces"]]
        if not rows:
            table.add_row(name, "no face", "", "no")
        for face, similarity, matched in rows:
            box = face["BoundingBox"]
            table.add_row(name, f"{box['Left']:.2f},{box['Top']:.2f},{box['Width']:.2f},{box['Height']:.2f}",
                          "" if similarity is None else f"{similarity:.2f}", matched)
    Console().print(table)
    # The note quotes the measured table of the engine that produced these scores.
    note = engine.similarity_scale.threshold_note(threshold)
    if note:
        Console(stderr=True).print(note)


def cmd_detect(args: argparse.Namespace) -> int:
    from faceaudit.rekognition.faces import detect_faces
    engine = _engine(args)
    images = expand_inputs(args.images)
    attributes = args.attributes or ["DEFAULT"]
    results = _run_each(images, "Detecting faces", lambda p: detect_faces(engine, p, attributes))
    _detect_table(results) if args.pretty else _print_json(results, "Image")
    return 1 if any("Error" in r for _, r in results) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from faceaudit.rekognition.faces import compare_faces
    engine = _engine(args)
    targets = expand_inputs(args.targets)
    results = _run_each(targets, "Comparing faces",
                        lambda t: compare_faces(engine, args.source, t, args.threshold))
    _compare_table(args.source, results, args.threshold, engine) if args.pretty else _print_json(results, "TargetImage")
    return 1 if any("Error" in r for _, r in results) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Detect and compare on a bundled public-domain photo, to show the install works."""
    with resources.as_file(resources.files("faceaudit") / "data" / "astronaut.jpg") as photo:
        print("faceaudit demo: NASA's public-domain portrait of Eileen Collins (via scikit-image)")
        status = cmd_detect(argparse.Namespace(images=[str(photo)], attributes=["ALL"], pretty=True))
        return status or cmd_compare(argparse.Namespace(source=str(photo), targets=[str(photo)],
                                                        threshold=80.0, pretty=True))


def _add_engine_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", metavar="NAME",
                        help="the face engine: sface (default) or dlib; `faceaudit engines` lists them "
                             "(default: $FACEAUDIT_ENGINE, else sface)")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    _add_engine_choice(parser)
    parser.add_argument("--gender-head", metavar="FILE",
                        help="use a gender head from `faceaudit train attribute` instead of the shipped model")
    parser.add_argument("--score-normalization", metavar="FILE",
                        help="apply a fair score normalization from `faceaudit train normalization`")


def _apply_engine_options(args: argparse.Namespace) -> None:
    """Pass the options on through the environment, so worker processes load the same models,
    and refuse a combination the engine cannot load before any worker starts."""
    import os

    from faceaudit.runtime import engine_spec
    from faceaudit.settings import (
        ENGINE_ENV,
        GENDER_HEAD_ENV,
        SCORE_NORMALIZATION_ENV,
        Settings,
    )

    name = _engine_name(args)
    if getattr(args, "engine", None):
        os.environ[ENGINE_ENV] = name
    for value, variable in ((args.gender_head, GENDER_HEAD_ENV), (args.score_normalization, SCORE_NORMALIZATION_ENV)):
        if value:
            if not Path(value).is_file():
                raise SystemExit(f"faceaudit: {value} does not exist")
            os.environ[variable] = str(Path(value).resolve())
    try:
        engine_spec(name).check(Settings.from_env())
    except ValueError as error:
        raise SystemExit(f"faceaudit: {error}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve Rekognition's API (AWS JSON 1.1 + SigV4) for boto3 clients with endpoint_url."""
    _apply_engine_options(args)
    from faceaudit.runtime import engine_spec
    spec = engine_spec(_engine_name(args))
    # Whoever starts a server is the one who chooses thresholds: say what the default means,
    # measured on the engine this server runs.
    print(f"faceaudit: engine {spec.name} (model version {spec.model_version}). "
          f"{spec.similarity_scale().threshold_note(80.0)}", file=sys.stderr)
    from faceaudit.server.credentials import CredentialsError
    from faceaudit.server.runner import serve
    try:
        return serve(host=args.host, port=args.port, data_dir=args.data_dir, bucket_dir=args.bucket_dir,
                     workers=args.workers, threads=args.threads, region=args.region, engine=spec.name)
    except CredentialsError as error:  # also an unusable key store
        print(f"faceaudit serve: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the port is taken
        print(f"faceaudit serve: {error}", file=sys.stderr)
        return 2


def _key_store(args: argparse.Namespace, *, create: bool = False) -> SQLiteKeyStore:
    """The key store of ``--data-dir``, with a single-key start's credentials.json taken in
    (never the environment: the shell running this command may hold a client's keys)."""
    from faceaudit.server.credentials import CredentialsError, open_keys
    from faceaudit.settings import Settings
    problem = None
    if not create and not Path(args.data_dir).is_dir():
        problem = f"{args.data_dir} is not a data directory"
    else:
        try:
            return open_keys(args.data_dir, settings=Settings.from_env({}), generate=False).store
        except CredentialsError as error:
            problem = str(error)
    print(f"faceaudit keys: {problem}", file=sys.stderr)
    raise SystemExit(2)


def _key_json(key: AccessKey, secret: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "Name": key.name, "Role": key.role, "Unit": key.unit, "AccessKeyId": key.access_key_id,
        "Status": "Active" if key.active else (key.revoked_reason or "revoked").capitalize(),
        "CreateDate": key.created.isoformat(timespec="seconds"), "Origin": key.origin}
    if key.revoked is not None:
        shown["RevokeDate"] = key.revoked.isoformat(timespec="seconds")
    if key.replaced_by:
        shown["ReplacedBy"] = key.replaced_by
    if secret is not None:
        shown["SecretAccessKey"] = secret
    return shown


def _print_new_key(issued: IssuedKey, what: str) -> None:
    print(json.dumps({"AccessKey": _key_json(issued.key, issued.secret_access_key)}, indent=2))
    print(f"faceaudit keys: {what} key {issued.key.name!r} (role {issued.key.role}); its secret is shown "
          "only this once and takes effect at once on every server of this data directory", file=sys.stderr)


def cmd_keys(args: argparse.Namespace) -> int:
    """faceaudit keys create|list|revoke|rotate|roles (docs/access.md)."""
    from faceaudit.access import KeyStoreError
    from faceaudit.access.roles import ROLE_DUTIES, ROLES, operations_for, role_table_markdown
    if args.keys_command == "roles":
        if args.markdown:
            print(role_table_markdown(), end="")
        else:
            print(json.dumps({role: {"Duties": ROLE_DUTIES[role], "Operations": list(operations_for(role))}
                              for role in ROLES}, indent=2))
        return 0
    store = _key_store(args, create=args.keys_command == "create")
    try:
        if args.keys_command == "create":
            _print_new_key(store.create(args.name, args.role, args.unit), "created")
        elif args.keys_command == "list":
            print(json.dumps({"Keys": [_key_json(key) for key in store.keys(include_revoked=args.all)]},
                             indent=2))
        elif args.keys_command == "revoke":
            key = store.revoke(args.key, force=args.force)
            print(json.dumps({"AccessKey": _key_json(key)}, indent=2))
            print(f"faceaudit keys: revoked {key.name!r} ({key.access_key_id}); every server of this data "
                  "directory refuses it from its next request", file=sys.stderr)
        elif args.keys_command == "rotate":
            _print_new_key(store.rotate(args.key), "rotated")
    except KeyStoreError as error:
        print(f"faceaudit keys: {error}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def _add_keys_parser(commands) -> None:
    from faceaudit.access.roles import ROLES
    keys = commands.add_parser(
        "keys", help="access keys and their roles: create, list, revoke, rotate (docs/access.md)",
        description="Manage the access keys of a data directory. Changes take effect at once on every "
                    "server using it. Whoever can run this can read the data directory: it is that "
                    "directory's owner who manages keys.")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="a new key; prints its secret once")
    create.add_argument("--name", required=True, help="who uses it (unique among active keys; shown in logs)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--unit", help="the team or site it belongs to (optional; shown in logs)")
    listing = actions.add_parser("list", help="the keys, without secrets")
    listing.add_argument("--all", action="store_true", help="revoked and rotated keys too")
    revoke = actions.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key", metavar="NAME|KEYID")
    revoke.add_argument("--force", action="store_true", help="even the last active admin key")
    rotate = actions.add_parser("rotate", help="a new access key id and secret; the old pair is refused at once")
    rotate.add_argument("key", metavar="NAME|KEYID")
    for action in (create, listing, revoke, rotate):
        action.add_argument("--data-dir", required=True, help="the server's data directory")
    roles = actions.add_parser("roles", help="what each role may call")
    roles.add_argument("--markdown", action="store_true", help="the table of docs/access.md")
    keys.set_defaults(func=cmd_keys)


def cmd_audit(args: argparse.Namespace) -> int:
    from faceaudit.audit.run import run_audit
    if args.engine and args.target.strip() != "local":
        # A remote target runs whatever engine it was started with; the report records its model version.
        print(f"faceaudit audit: --engine chooses the local target's engine; {args.target} runs its own "
              "(start it with `faceaudit serve --engine NAME`)", file=sys.stderr)
        return 2
    _apply_engine_options(args)
    from faceaudit.errors import RekognitionError as AuditInputError
    try:
        paths = run_audit(args.protocol, args.data, args.target, args.out, labels=args.labels,
                          layout=args.layout, group_by=args.group_by, thresholds=args.thresholds,
                          target_fmr=args.target_fmr, seed=args.seed, min_cell=args.min_cell, pairs=args.pairs,
                          cache_dir=args.cache, workers=args.workers,
                          command=["faceaudit", *sys.argv[1:]],
                          log=lambda line: print(line, file=sys.stderr))
    except (AuditInputError, ValueError, FileNotFoundError) as error:
        print(f"faceaudit audit: {error}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_audit_compare(args: argparse.Namespace) -> int:
    from faceaudit.audit.report import ReportError, compare_reports
    try:
        paths = compare_reports(args.reports, args.out)
    except (ReportError, ValueError, FileNotFoundError) as error:
        print(f"faceaudit audit compare: {error}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _add_audit_parser(commands) -> None:
    audit = commands.add_parser("audit", help="audit a face system by demographic group; write a report")
    protocols = audit.add_subparsers(dest="protocol", required=True)
    descriptions = {
        "attributes": "Gender Shades: gender and age errors and detection failures per subgroup",
        "verification": "NIST FRVT 1:1: false match and false non-match rates per group, DET curves",
        "lineup": "ACLU: people not in a gallery searched against it; who gets falsely matched",
    }
    for name, description in descriptions.items():
        p = protocols.add_parser(name, help=description, description=description)
        p.add_argument("--data", required=True, help="dataset folder (faces-dev, UTKFace, FairFace, LFW, or any)")
        p.add_argument("--labels", help="CSV of labels: path + any of identity, gender, race/skin_type, age, ...")
        p.add_argument("--layout", default="auto", choices=["auto", "faces-dev", "csv", "utkface", "fairface", "lfw"])
        p.add_argument("--target", default="local",
                       help="local | rekognition://HOST:PORT | rekognition://aws | csv:FILE (default local)")
        p.add_argument("--out", required=True, help="folder for report.json, report.html, report.md")
        p.add_argument("--group-by", nargs="+", default=["gender", "race"], metavar="LABEL")
        p.add_argument("--thresholds", nargs="+", type=float, default=[80.0, 95.0, 99.0], metavar="T")
        p.add_argument("--target-fmr", type=float, default=0.001, help="verification: also report the "
                       "threshold giving this overall false match rate (default 0.001)")
        p.add_argument("--min-cell", type=int, default=30, help="groups smaller than this are flagged")
        p.add_argument("--pairs", choices=["dataset", "generated"], default="dataset",
                       help="verification: the dataset's own pairs (default, if it has any) or pairs generated "
                            "from identities with impostors within each group, as NIST forms them")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--cache", help="cache folder so an interrupted audit resumes (default ~/.cache/faceaudit)")
        p.add_argument("--workers", type=int, help="processes (local) or threads (remote) to use")
        _add_engine_options(p)
        p.set_defaults(func=cmd_audit)
    compare = protocols.add_parser("compare", help="put several reports side by side")
    compare.add_argument("reports", nargs="+", help="report.json files or their folders")
    compare.add_argument("--out", required=True)
    compare.set_defaults(func=cmd_audit_compare)


def _where(pairs: list[str] | None) -> dict[str, str]:
    where = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"faceaudit train: --where takes KEY=VALUE, got {pair!r}")
        where[key] = value
    return where


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from faceaudit.datasets.readers import describe_problems, load_dataset
    from faceaudit.fairness.train import train_attribute_head, train_score_normalization
    from faceaudit.runtime import engine_spec
    from faceaudit.settings import ENGINE_ENV
    name = _engine_name(args)
    if args.what == "attribute" and not engine_spec(name).takes_gender_head:
        raise SystemExit(f"faceaudit train attribute: the {name} engine takes no gender head; "
                         "train it on the dlib engine's embeddings with --engine dlib")
    # Training embeds in worker processes, which build the engine the environment names.
    os.environ[ENGINE_ENV] = name
    dataset = load_dataset(args.data, labels=args.labels, layout=args.layout)
    print(describe_problems(dataset), file=sys.stderr)
    if args.what == "attribute":
        head = train_attribute_head(dataset, label=args.label, balance_by=args.balance_by,
                                    where=_where(args.where), seed=args.seed)
        head.save(args.out)
        provenance = head.provenance
    else:
        normalization = train_score_normalization(dataset, clusters=args.clusters, target_fmr=args.target_fmr,
                                                  where=_where(args.where), seed=args.seed)
        normalization.save(args.out)
        provenance = normalization.provenance
    print(f"{args.what}: {args.out} ({provenance})")
    return 0


def _add_train_parser(commands) -> None:
    train = commands.add_parser("train", help="train a gender head or a fair score normalization on your data")
    kinds = train.add_subparsers(dest="what", required=True)
    attribute = kinds.add_parser("attribute", help="logistic regression on embeddings, balanced across groups")
    attribute.add_argument("--label", default="gender", help="the label to predict (default gender)")
    attribute.add_argument("--balance-by", nargs="*", default=["gender", "race"], metavar="LABEL",
                           help="subsample every combination of these to the same size (default gender race)")
    normalization = kinds.add_parser("normalization", help="fair score normalization (no demographic labels used)")
    normalization.add_argument("--clusters", type=int, default=10)
    normalization.add_argument("--target-fmr", type=float, default=0.01)
    for p in (attribute, normalization):
        p.add_argument("--data", required=True)
        p.add_argument("--labels")
        p.add_argument("--layout", default="auto")
        p.add_argument("--where", nargs="*", metavar="KEY=VALUE", help="train only on matching images")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", required=True, help="the model file to write (JSON)")
        _add_engine_choice(p)  # whose embeddings it learns from: a gender head needs --engine dlib
        p.set_defaults(func=cmd_train)


def cmd_thresholds(args: argparse.Namespace) -> int:
    """What thresholds 80, 95 and 99 mean for false matches, group by group (measured data)."""
    from rich.console import Console
    from rich.table import Table

    from faceaudit.runtime import engine_spec
    spec = engine_spec(_engine_name(args))
    scale, found = spec.similarity_scale(), spec.group_false_match_rates()
    if found is None:
        print(f"faceaudit thresholds: no per-group false match table ships for the {spec.name} engine "
              f"(model version {spec.model_version}); benchmarks/faces_dev_accuracy.py --engine {spec.name} "
              "measures one", file=sys.stderr)
        return 1
    measured = found
    if args.json:
        print(json.dumps({"engine": spec.name, "model_version": measured.model_version,
                          "thresholds": measured.thresholds,
                          "distances": {t: scale.distance(float(t)) for t in measured.thresholds},
                          "provenance": measured.provenance}, indent=2))
        return 0
    table = Table(title=f"False match rate of strangers of the same group (95% interval), {spec.name} engine "
                        f"(model version {spec.model_version})")
    table.add_column("group")
    thresholds = sorted(measured.thresholds, key=float)
    for t in thresholds:
        table.add_column(f"at {t} (distance {scale.distance(float(t)):.3f})", justify="right")
    for group in sorted(measured.thresholds[thresholds[0]]):
        cells = []
        for t in thresholds:
            r = measured.thresholds[t][group]
            cells.append(f"{r['rate']:.2%} [{r['ci95'][0]:.2%}, {r['ci95'][1]:.2%}]")
        table.add_row(group, *cells)
    console = Console()
    console.print(table)
    console.print(f"Data: {measured.provenance.get('data')}. {measured.provenance.get('caution', '')}.")
    return 0


def _engine_figures(spec: Any) -> dict[str, Any]:
    """What ships about one engine: its identity, licences, calibration and per-group table."""
    from faceaudit.settings import DEFAULT_ENGINE
    scale = spec.similarity_scale()
    calibration = scale.provenance
    measured = spec.group_false_match_rates()
    return {
        "name": spec.name, "default": spec.name == DEFAULT_ENGINE, "model_version": spec.model_version,
        "summary": spec.summary, "licence": spec.licence, "training_data": spec.training_data,
        "calibration": {"file": spec.calibration_file, "anchors": [list(a) for a in scale.anchors],
                        "data": calibration.get("data"), "script": calibration.get("script"),
                        "created": calibration.get("created"),
                        "impostor_fmr_at_anchors": calibration.get("impostor_fmr_at_anchors")},
        "group_false_match_rates": None if measured is None else {
            "thresholds": measured.thresholds, "provenance": measured.provenance},
    }


def _extreme(rates: dict[str, dict[str, Any]], pick: Callable[..., str]) -> str:
    group = pick(rates, key=lambda g: rates[g]["rate"])
    r = rates[group]
    return f"{r['rate']:.2%} [{r['ci95'][0]:.2%}, {r['ci95'][1]:.2%}] {group}, n={r['n']} pairs"


def cmd_engines(args: argparse.Namespace) -> int:
    """The engines, their licences and what was measured on each (from the data that ships)."""
    from faceaudit.runtime import ENGINES
    figures = [_engine_figures(spec) for spec in ENGINES.values()]
    if args.json:
        print(json.dumps({"engines": figures}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title="faceaudit engines (--engine NAME or FACEAUDIT_ENGINE)")
    for column in ("engine", "model version", "distance at 80 / 95 / 99",
                   "same-group strangers matched at 80: lowest / highest group (95% interval)"):
        table.add_column(column)
    for f in figures:
        anchors = {s: d for d, s in f["calibration"]["anchors"]}
        distances = " / ".join(f"{anchors[s]:.3f}" if s in anchors else "?" for s in (80.0, 95.0, 99.0))
        measured = f["group_false_match_rates"]
        rates = None if measured is None else measured["thresholds"].get("80")
        spread = "not measured" if not rates else f"{_extreme(rates, min)}\n{_extreme(rates, max)}"
        table.add_row(f["name"] + (" (default)" if f["default"] else ""), f["model_version"], distances, spread)
    console = Console()
    console.print(table)
    for f in figures:
        measured = f["group_false_match_rates"]
        console.print(f"[bold]{f['name']}[/bold]: {f['summary']}. Licences: {f['licence']}. Training data: "
                      f"{f['training_data']}. Calibrated on {f['calibration']['data']}. Per-group table: "
                      f"{'none ships' if measured is None else measured['provenance'].get('data')}.")
    console.print("Research photos, not real-world conditions. `faceaudit thresholds --engine NAME` shows every "
                  "group; a collection stays bound to the engine it was created with (docs/engines.md).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceaudit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="DetectFaces on images or folders of images")
    detect.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP) or folders")
    detect.add_argument("--attributes", nargs="+", metavar="ATTR",
                        help="DEFAULT (box, landmarks, pose, quality), ALL, AGE_RANGE, GENDER")
    detect.add_argument("--pretty", action="store_true", help="a readable table instead of JSON")
    _add_engine_choice(detect)
    detect.set_defaults(func=cmd_detect)

    compare = commands.add_parser("compare", help="CompareFaces: the largest face of SOURCE against TARGETs")
    compare.add_argument("source")
    compare.add_argument("targets", nargs="+", help="one or more target images or folders")
    compare.add_argument("--threshold", type=float, default=80.0,
                         help="SimilarityThreshold, 0-100 (default 80; see docs/similarity.md)")
    compare.add_argument("--pretty", action="store_true", help="a readable table instead of JSON")
    _add_engine_choice(compare)
    compare.set_defaults(func=cmd_compare)

    _add_audit_parser(commands)
    _add_train_parser(commands)
    _add_keys_parser(commands)

    thresholds = commands.add_parser("thresholds", help="false match rates by group at thresholds 80, 95, 99")
    thresholds.add_argument("--json", action="store_true")
    _add_engine_choice(thresholds)
    thresholds.set_defaults(func=cmd_thresholds)

    engines = commands.add_parser("engines", help="the engines faceaudit can run, with licences and measured figures")
    engines.add_argument("--json", action="store_true")
    engines.set_defaults(func=cmd_engines)

    demo = commands.add_parser("demo", help="run detect and compare on a bundled public-domain photo")
    demo.set_defaults(func=cmd_demo)

    serve = commands.add_parser(
        "serve", help="serve Rekognition's API over HTTP for boto3 (endpoint_url=http://HOST:PORT)",
        description="Serve Amazon Rekognition's wire protocol (AWS JSON 1.1, SigV4-signed) so an "
                    "unmodified boto3 client works with endpoint_url. Keys: `faceaudit keys` "
                    "(DATA_DIR/access.db); the first one, an admin key, is "
                    f"{ACCESS_KEY_ENV} / {SECRET_KEY_ENV}, else generated once "
                    "and stored in DATA_DIR/credentials.json (mode 0600).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--data-dir", required=True, help="where collections and credentials are kept")
    serve.add_argument("--bucket-dir", help="folder that S3Object images (Bucket/Name) are read from")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes (default 1; each loads its own models)")
    serve.add_argument("--threads", type=int, default=8,
                       help="request threads per process (default 8; face work runs one at a time)")
    serve.add_argument("--region", help="accept only this region in signatures (default: any)")
    _add_engine_options(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    from faceaudit.engine.model_files import ModelFileError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ModelFileError as error:  # a model package missing: the message names the one command
        print(f"faceaudit: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
