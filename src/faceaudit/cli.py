"""The `faceaudit` command line: a thin layer over faceaudit.rekognition.

Output is JSON in Rekognition's shapes (one object per image, as JSON Lines when
there are several), or a readable table with --pretty. Errors keep
Rekognition's names: {"Error": {"Code": "InvalidImageFormatException", ...}}.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _apply_search_options(args: argparse.Namespace) -> None:
    """``--approximate-above`` travels as FACEAUDIT_APPROXIMATE_ABOVE, so that every worker
    process of the server builds its store with it (faceaudit.storage.open_store)."""
    import os

    from faceaudit.settings import APPROXIMATE_ABOVE_ENV, parse_approximate_above
    if args.approximate_above is not None:
        try:
            parse_approximate_above(args.approximate_above)
        except ValueError as error:
            raise SystemExit(f"faceaudit serve: {error}") from None
        os.environ[APPROXIMATE_ABOVE_ENV] = args.approximate_above


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve Rekognition's API (AWS JSON 1.1 + SigV4) for boto3 clients with endpoint_url."""
    _apply_engine_options(args)
    _apply_search_options(args)
    from faceaudit.runtime import engine_spec
    spec = engine_spec(_engine_name(args))
    # Whoever starts a server is the one who chooses thresholds: say what the default means,
    # measured on the engine this server runs.
    print(f"faceaudit: engine {spec.name} (model version {spec.model_version}). "
          f"{spec.similarity_scale().threshold_note(80.0)}", file=sys.stderr)
    from faceaudit.accountability.sealed import SealedBlobError
    from faceaudit.server.credentials import CredentialsError
    from faceaudit.server.runner import serve
    from faceaudit.settings import Settings
    from faceaudit.storage import EMBEDDED, is_postgres_url
    database = args.database or Settings.from_env().database
    if database and database != EMBEDDED and not is_postgres_url(database):
        print(f"faceaudit serve: --database {database!r}: 'embedded' or a postgresql://USER:PASSWORD@HOST/NAME URL",
              file=sys.stderr)
        return 2
    try:
        return serve(host=args.host, port=args.port, data_dir=args.data_dir, bucket_dir=args.bucket_dir,
                     workers=args.workers, threads=args.threads, region=args.region, engine=spec.name,
                     reports_dir=args.reports, database=database)
    except (CredentialsError, SealedBlobError) as error:  # also an unusable key store or review key
        print(f"faceaudit serve: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the port is taken
        print(f"faceaudit serve: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from faceaudit.storage.migrations import is_schema_too_new
        if not is_schema_too_new(error):
            raise
        print(f"faceaudit serve: {error}", file=sys.stderr)  # a store written by a newer faceaudit
        return 2


def _key_store(args: argparse.Namespace, *, create: bool = False, command: str = "keys") -> SQLiteKeyStore:
    """The key store of ``--data-dir``, with a single-key start's credentials.json taken in
    (never the environment: the shell running this command may hold a client's keys)."""
    from faceaudit.server.credentials import CredentialsError, open_keys
    from faceaudit.settings import Settings
    problem = None
    if not create and not Path(args.data_dir).is_dir():
        problem = f"{args.data_dir} is not a data directory"
    else:
        try:
            # `keys` has --database; `review` and `moratorium` follow FACEAUDIT_DATABASE
            database = getattr(args, "database", None) or Settings.from_env().database
            return open_keys(args.data_dir, settings=Settings.from_env({}), generate=False,
                             database=database).store
        except CredentialsError as error:
            problem = str(error)
    print(f"faceaudit {command}: {problem}", file=sys.stderr)
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


def _add_command_group(commands, name: str, dest: str, **texts: str):
    """`faceaudit NAME ACTION ...`: the command's parser (``texts``: its help, description) and
    its actions' subparsers, one of which must be named (into ``args.<dest>``)."""
    command = commands.add_parser(name, **texts)
    return command, command.add_subparsers(dest=dest, required=True)


def _add_data_dir(*parsers: argparse.ArgumentParser) -> None:
    """--data-dir, required: the data directory of the server(s) the command acts on."""
    for parser in parsers:
        parser.add_argument("--data-dir", required=True, help="the server's data directory")


def _add_keys_parser(commands) -> None:
    from faceaudit.access.roles import ROLES
    keys, actions = _add_command_group(
        commands, "keys", "keys_command",
        help="access keys and their roles: create, list, revoke, rotate (docs/access.md)",
        description="Manage the access keys of a data directory. Changes take effect at once on every "
                    "server using it. Whoever can run this can read the data directory: it is that "
                    "directory's owner who manages keys.")
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
    _add_data_dir(create, listing, revoke, rotate)
    for action in (create, listing, revoke, rotate):
        action.add_argument("--database", metavar="URL",
                            help="the server's --database when it is postgresql://...: the keys are "
                                 "there (default: FACEAUDIT_DATABASE)")
    roles = actions.add_parser("roles", help="what each role may call")
    roles.add_argument("--markdown", action="store_true", help="the table of docs/access.md")
    keys.set_defaults(func=cmd_keys)


# ------------------------------------------------------------ accountability: moratoria and use policies


def _database(args: argparse.Namespace) -> str | None:
    """Where the server keeps its data: ``--database``, else FACEAUDIT_DATABASE (as `faceaudit serve`)."""
    from faceaudit.settings import Settings
    return getattr(args, "database", None) or Settings.from_env().database


def _add_database_option(*parsers) -> None:
    for parser in parsers:
        parser.add_argument("--database", metavar="URL",
                            help="the server's --database when it is postgresql://...: the accountability "
                                 "tables and the search log are there (default: FACEAUDIT_DATABASE)")


def _accountability_state(args: argparse.Namespace, command: str):
    """The data directory's accountability.db (or the server's PostgreSQL tables); SystemExit(2)
    when ``--data-dir`` is no data directory."""
    from faceaudit.accountability.state import AccountabilityState
    if not Path(args.data_dir).is_dir():
        print(f"faceaudit {command}: {args.data_dir} is not a data directory", file=sys.stderr)
        raise SystemExit(2)
    return AccountabilityState(args.data_dir, database=_database(args))


def _local_actor() -> str:
    """Who runs this command: changes made here are the local OS user's (docs/accountability.md)."""
    import getpass
    return getpass.getuser()


def _check_moratorium_target(args: argparse.Namespace, scope: str, target: str) -> None:
    """The key or collection a moratorium names exists (RekognitionError or SystemExit otherwise)."""
    from faceaudit.errors import ResourceNotFoundException
    if scope == "key":
        keys = _key_store(args)
        try:
            names = {key.name for key in keys.keys(include_revoked=True)}
        finally:
            keys.close()
        if target not in names:
            raise ResourceNotFoundException(f"no key has ever been named {target!r} ('faceaudit keys list --all')")
    elif scope == "collection":
        from faceaudit.storage import open_store
        store = open_store(_database(args), args.data_dir, pool_size=1)
        try:
            store.describe_collection(target)
        finally:
            store.close()


def cmd_moratorium(args: argparse.Namespace) -> int:
    """faceaudit moratorium set|lift|list: suspend searches of a policy, a collection or a key."""
    from faceaudit.accountability.guard import lift_moratorium, set_moratorium
    from faceaudit.accountability.searchlog import SearchLog, SearchLogError
    from faceaudit.accountability.state import StateError
    state = _accountability_state(args, "moratorium")
    # The switch itself is a search log record; a switch that cannot be logged is undone.
    search_log = SearchLog(args.data_dir, database=_database(args)) \
        if args.moratorium_command in ("set", "lift") else None
    try:
        if args.moratorium_command == "set":
            scope, target = next((s, t) for s, t in (("policy", args.policy), ("collection", args.collection),
                                                     ("key", args.key)) if t)
            _check_moratorium_target(args, scope, target)  # a mistyped name would suspend nothing
            m = set_moratorium(state, scope, target, args.reason, _local_actor(), recorder=search_log)
            print(json.dumps({"Moratorium": m.to_json()}, indent=2))
            print(f"faceaudit moratorium: {m.id} in force on {scope} {target}; every server of this data "
                  "directory refuses such searches from its next request", file=sys.stderr)
        elif args.moratorium_command == "lift":
            m = lift_moratorium(state, args.id, _local_actor(), recorder=search_log)
            print(json.dumps({"Moratorium": m.to_json()}, indent=2))
        else:
            print(json.dumps({"Moratoria": [m.to_json() for m in state.moratoria(active_only=not args.all)]},
                             indent=2))
    except (StateError, RekognitionError, SearchLogError) as error:
        print(f"faceaudit moratorium: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2
    finally:
        state.close()
        if search_log is not None:
            search_log.close()
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    """faceaudit policy set|clear|show: a collection's use policy (its faceaudit:policy tag)."""
    from faceaudit.accountability.guard import set_collection_policy
    from faceaudit.accountability.policies import POLICIES, POLICY_TAG
    from faceaudit.storage import open_store
    if args.policy_command == "show" and args.collection is None and args.data_dir is None:
        print(json.dumps({"Policies": [p.rules() for p in POLICIES.values()]}, indent=2))
        return 0
    if args.data_dir is None:
        print("faceaudit policy: --data-dir is required", file=sys.stderr)
        return 2
    from faceaudit.accountability.searchlog import SearchLog, SearchLogError
    state = _accountability_state(args, "policy")
    store = None
    search_log: SearchLog | None = None
    try:
        if args.policy_command == "show" and args.collection is None:
            print(json.dumps({"Policies": [p.rules() for p in POLICIES.values()],
                              "Collections": state.tagged(POLICY_TAG)}, indent=2))
            return 0
        store = open_store(_database(args), args.data_dir, pool_size=1)
        store.describe_collection(args.collection)  # ResourceNotFoundException if absent
        if args.policy_command == "show":
            name = state.tag(args.collection, POLICY_TAG)
            print(json.dumps({"CollectionId": args.collection, "Policy": name,
                              "Rules": POLICIES[name].rules() if name in POLICIES else None}, indent=2))
            return 0
        wanted = args.policy if args.policy_command == "set" else None
        search_log = SearchLog(args.data_dir, database=_database(args))  # the change is a log record, or is undone
        previous = set_collection_policy(state, args.collection, wanted, _local_actor(), store=store,
                                         recorder=search_log)
        print(json.dumps({"CollectionId": args.collection, "Policy": wanted, "Previous": previous}, indent=2))
    except RekognitionError as error:
        print(f"faceaudit policy: {error.message}", file=sys.stderr)
        return 2
    except SearchLogError as error:
        print(f"faceaudit policy: {error}", file=sys.stderr)
        return 2
    finally:
        state.close()
        if store is not None:
            store.close()
        if search_log is not None:
            search_log.close()
    return 0


def _add_accountability_parsers(commands) -> None:
    from faceaudit.accountability.policies import POLICIES
    moratorium, actions = _add_command_group(
        commands, "moratorium", "moratorium_command",
        help="suspend searches of a policy, a collection or a key (docs/accountability.md)",
        description="A moratorium refuses every search it covers (AccessDeniedException saying which, since "
                    "when and why) on every server of the data directory, from their next request.")
    setting = actions.add_parser("set", help="suspend searches")
    target = setting.add_mutually_exclusive_group(required=True)
    target.add_argument("--policy", choices=list(POLICIES), help="every collection under this use policy")
    target.add_argument("--collection", help="one collection")
    target.add_argument("--key", help="one key, by name")
    setting.add_argument("--reason", required=True, help="why (shown to refused searchers and logged)")
    lifting = actions.add_parser("lift", help="end a moratorium")
    lifting.add_argument("id", type=int)
    listing = actions.add_parser("list", help="moratoria in force (--all: lifted ones too)")
    listing.add_argument("--all", action="store_true")
    _add_data_dir(setting, lifting, listing)
    _add_database_option(setting, lifting, listing)
    moratorium.set_defaults(func=cmd_moratorium)

    policy, actions = _add_command_group(
        commands, "policy", "policy_command",
        help="a collection's use policy: set, clear, show (docs/accountability.md)")
    setting = actions.add_parser("set", help="put a collection under a use policy")
    setting.add_argument("collection")
    setting.add_argument("policy", choices=list(POLICIES))
    clearing = actions.add_parser("clear", help="remove a collection's use policy")
    clearing.add_argument("collection")
    showing = actions.add_parser("show", help="a collection's policy and rules; without one, every policy")
    showing.add_argument("collection", nargs="?")
    _add_data_dir(setting, clearing)
    showing.add_argument("--data-dir", help="the server's data directory (needed with a collection)")
    _add_database_option(setting, clearing, showing)
    policy.set_defaults(func=cmd_policy)


@contextlib.contextmanager
def _search_log(data_dir: str, database: str | None = None):
    """The data directory's search log, for commands whose changes are log records (decisions, purges)."""
    from faceaudit.accountability.searchlog import SearchLog
    log = SearchLog(data_dir, database=database)
    try:
        yield log
    finally:
        log.close()


class _ReviewRefused(Exception):
    """Who runs `faceaudit review` could not be identified as a reviewer."""


def _reviewer(store: SQLiteKeyStore) -> AccessKey:
    """The reviewer's key: the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY pair, checked against the key store."""
    import hmac

    from faceaudit.access.roles import REVIEWER
    from faceaudit.settings import AWS_ACCESS_KEY_ENV, AWS_SECRET_KEY_ENV, Settings
    settings = Settings.from_env()
    if not settings.aws_access_key_id or not settings.aws_secret_access_key:
        raise _ReviewRefused(f"identify yourself with your reviewer key: set {AWS_ACCESS_KEY_ENV} and "
                             f"{AWS_SECRET_KEY_ENV}")
    issued = store.lookup(settings.aws_access_key_id)
    if issued is None or not hmac.compare_digest(issued.secret_access_key.encode(),
                                                 settings.aws_secret_access_key.encode()):
        raise _ReviewRefused(f"{AWS_ACCESS_KEY_ENV} / {AWS_SECRET_KEY_ENV} are not a key of this data directory")
    if not issued.key.active:
        raise _ReviewRefused(f"key {issued.key.name!r} was {issued.key.revoked_reason}")
    if issued.key.role != REVIEWER:
        raise _ReviewRefused(f"key {issued.key.name!r} has role {issued.key.role}; only reviewer keys review")
    return issued.key


def _picture_suffix(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".webp" if data[8:12] == b"WEBP" else ".jpg"


def _write_private(path: Path, data: bytes) -> None:
    """Pictures of people: readable by their owner only (0600)."""
    import os
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _candidate_ref(ref: str, order: list[str]) -> str:
    """A candidate as `review show` numbered it (1, 2, ...) or by its id."""
    if ref.isdigit() and 1 <= int(ref) <= len(order):
        return order[int(ref) - 1]
    return ref


def _review_json(answer: dict[str, Any]) -> str:
    return json.dumps(answer, indent=2, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))


def cmd_review(args: argparse.Namespace) -> int:
    """faceaudit review list|show|decide: blind review on this machine (docs/accountability.md)."""
    import uuid
    from datetime import UTC, datetime

    from faceaudit.accountability.context import Caller
    from faceaudit.accountability.review import ReviewStore
    if args.review_command in ("retention", "purge"):
        return _review_upkeep(args)
    keys = _key_store(args, command="review")
    try:
        key = _reviewer(keys)
        with _search_log(args.data_dir, _database(args)) as recorder, \
                ReviewStore(args.data_dir, recorder=recorder, database=_database(args)) as review:
            if args.review_command == "list":
                items: list[dict[str, Any]] = []
                token = None
                while True:
                    page = review.pending(key, max_results=100, next_token=token)
                    items += page["ReviewItems"]
                    token = page.get("NextToken")
                    if not token:
                        break
                print(_review_json({"ReviewItems": items}))
            elif args.review_command == "show":
                view = review.blind_view(key, args.item)
                out = Path(args.out or f"review-{args.item}")
                out.mkdir(mode=0o700, parents=True, exist_ok=True)
                shown: dict[str, Any] = {k: v for k, v in view.items() if k not in ("Probe", "Candidates")}
                if view["Probe"] is not None:
                    probe = out / ("probe" + _picture_suffix(view["Probe"]))
                    _write_private(probe, view["Probe"])
                    shown["Probe"] = str(probe)
                shown["Candidates"] = []
                for number, candidate in enumerate(view["Candidates"], 1):
                    entry = {"Number": number, "CandidateId": candidate["CandidateId"],
                             "CandidateType": candidate["CandidateType"], "Crop": None}
                    if candidate["Crop"] is not None:
                        crop = out / f"candidate-{number}.jpg"
                        _write_private(crop, candidate["Crop"])
                        entry["Crop"] = str(crop)
                    shown["Candidates"].append(entry)
                print(_review_json(shown))
                print(f"faceaudit review: the probe and {len(view['Candidates'])} candidates are in {out}, in an "
                      "order of your own, without scores. Decide each: faceaudit review decide "
                      f"{args.item} --candidate N confirm|reject|inconclusive REASON ...", file=sys.stderr)
            else:
                order = [c["CandidateId"] for c in review.blind_view(key, args.item)["Candidates"]]
                decisions = [{"CandidateId": _candidate_ref(ref, order), "Decision": decision, "Reason": reason}
                             for ref, decision, reason in args.candidate or []]
                caller = Caller(key, f"cli-{uuid.uuid4()}", datetime.now(UTC))
                print(_review_json(review.decide(caller, args.item, decisions)))
    except _ReviewRefused as error:
        print(f"faceaudit review: {error}", file=sys.stderr)
        return 2
    except RekognitionError as error:
        print(f"faceaudit review: {error.code}: {error.message}", file=sys.stderr)
        return 2
    finally:
        keys.close()
    return 0


def _review_upkeep(args: argparse.Namespace) -> int:
    """`review retention` / `review purge`: aliases of `retention set COLLECTION review-items DAYS`
    (0: back to the default) / `retention purge`, answering in their older shapes."""
    try:
        with _retention(args, "review") as (retention, review):
            if args.review_command == "retention":
                if args.days is not None:
                    if args.days < 0:
                        from faceaudit.errors import InvalidParameterException
                        raise InvalidParameterException("Retention must be at least 1 day (0: the default)")
                    retention.set_days(args.collection, "review-items", args.days or None, _local_actor())
                    review.set_retention(args.collection, None)  # the tag now says it
                days = retention.periods(args.collection).days["review-items"]
                print(json.dumps({"CollectionId": args.collection, "RetentionDays": days}))
            else:
                report = retention.purge_if_due(interval_s=None)
                if report is None:
                    raise _PurgeBusy()
                print(json.dumps({"PurgedItems": len(report.items), "OrphanBlobsRemoved": review.sweep_orphans(),
                                  **report.to_json()}, indent=2))
    except _PurgeBusy:
        print("faceaudit review: another process is purging this data directory now; try again later",
              file=sys.stderr)
        return 2
    except RekognitionError as error:
        print(f"faceaudit review: {error.message}", file=sys.stderr)
        return 2
    return 0


class _PurgeBusy(Exception):
    """Another process holds the data directory's purge lease."""


@contextlib.contextmanager
def _retention(args: argparse.Namespace, command: str):
    """(Retention, its ReviewStore) of ``--data-dir`` (and ``--database``), closed afterwards."""
    from faceaudit.accountability.retention import open_retention
    if not Path(args.data_dir).is_dir():
        print(f"faceaudit {command}: {args.data_dir} is not a data directory", file=sys.stderr)
        raise SystemExit(2)
    with open_retention(args.data_dir, _database(args)) as retention:
        yield retention, retention.review


def cmd_retention(args: argparse.Namespace) -> int:
    """faceaudit retention show|set|clear|purge (docs/accountability.md, Retention)."""
    from faceaudit.accountability.searchlog import SearchLogError
    try:
        with _retention(args, "retention") as (retention, review):
            if args.retention_command == "show":
                ids = [args.collection] if args.collection else retention.collection_ids()
                for collection_id in ids:
                    retention.store.describe_collection(collection_id)
                print(json.dumps({"Collections": [retention.periods(c).to_json() for c in ids]}, indent=2))
            elif args.retention_command in ("set", "clear"):
                days = args.days if args.retention_command == "set" else None
                print(json.dumps(retention.set_days(args.collection, args.kind, days, _local_actor()).to_json(),
                                 indent=2))
            else:
                report = retention.purge_if_due(interval_s=None)
                if report is None:
                    raise _PurgeBusy()
                print(json.dumps({**report.to_json(), "OrphanBlobsRemoved": review.sweep_orphans()}, indent=2))
    except _PurgeBusy:
        print("faceaudit retention: another process is purging this data directory now; try again later",
              file=sys.stderr)
        return 2
    except RekognitionError as error:
        print(f"faceaudit retention: {error.code}: {error.message}", file=sys.stderr)
        return 2
    except SearchLogError as error:
        print(f"faceaudit retention: {error}", file=sys.stderr)
        return 2
    return 0


def _add_retention_parser(commands) -> None:
    from faceaudit.accountability.policies import RETENTION_KINDS
    retention, actions = _add_command_group(
        commands, "retention", "retention_command",
        help="how long a collection keeps faces, probes and review items; purge what expired",
        description="Retention per collection, kept in its faceaudit:retention:* tags (docs/accountability.md, "
                    "Retention). Every server purges at start and hourly; `purge` does it now.")
    show = actions.add_parser("show", help="a collection's retention (without one: every collection's)")
    show.add_argument("collection", metavar="COLLECTION_ID", nargs="?")
    setting = actions.add_parser("set", help="keep KIND this many days (within the policy's maximum)")
    setting.add_argument("collection", metavar="COLLECTION_ID")
    setting.add_argument("kind", choices=RETENTION_KINDS)
    setting.add_argument("days", type=int, metavar="DAYS")
    clearing = actions.add_parser("clear", help="back to the policy's default for KIND")
    clearing.add_argument("collection", metavar="COLLECTION_ID")
    clearing.add_argument("kind", choices=RETENTION_KINDS)
    purge = actions.add_parser("purge", help="delete expired faces, probes and review items now (one log record)")
    _add_data_dir(show, setting, clearing, purge)
    _add_database_option(show, setting, clearing, purge)
    retention.set_defaults(func=cmd_retention)


def _add_review_parser(commands) -> None:
    review, actions = _add_command_group(
        commands, "review", "review_command",
        help="blind review of searches under a review policy: list, show, decide",
        description="Review the candidates of searches made under a review policy, without their scores "
                    "(docs/accountability.md, Blind review). You are identified by your reviewer key: "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    listing = actions.add_parser("list", help="items waiting for your decision")
    show = actions.add_parser("show", help="write an item's probe and candidate crops to a folder (no scores)")
    show.add_argument("item", metavar="ITEM_ID")
    show.add_argument("--out", help="folder for the pictures (default: ./review-ITEM_ID)")
    decide = actions.add_parser("decide", help="record your decision on every candidate; then see the scores")
    decide.add_argument("item", metavar="ITEM_ID")
    decide.add_argument("--candidate", nargs=3, action="append", metavar=("N|ID", "DECISION", "REASON"),
                        help="a candidate (its number in `review show`, or its id), confirm, reject or "
                             "inconclusive, and why; once per candidate")
    retention = actions.add_parser("retention", help="how many days a collection's review items are kept "
                                                     "(from the search; default 30); alias of `retention set`")
    retention.add_argument("collection", metavar="COLLECTION_ID")
    retention.add_argument("--days", type=int, help="set it (0: back to the default); without: show it")
    purge = actions.add_parser("purge", help="delete expired review items and their pictures now; alias of "
                                             "`retention purge` (expired faces and probes go too)")
    _add_data_dir(listing, show, decide, retention, purge)
    _add_database_option(listing, show, decide, retention, purge)
    review.set_defaults(func=cmd_review)


def cmd_log(args: argparse.Namespace) -> int:
    """faceaudit log verify|checkpoint|export (docs/accountability.md, "The search log").

    Exit codes: 0 verified (or written), 1 the log is not the one that was written, 2 cannot read or write."""
    from faceaudit.accountability.searchlog import (
        CONSISTENCY_FORMAT,
        INCLUSION_FORMAT,
        SearchLog,
        SearchLogError,
        check_consistency,
        check_inclusion,
        read_checkpoint_file,
        read_data_dir,
        read_export,
    )
    try:
        if args.log_command == "verify":
            contents = read_export(args.export) if args.export else read_data_dir(args.data_dir, _database(args))
            kept = read_checkpoint_file(args.checkpoint) if args.checkpoint else None
            result = contents.verify(kept)
            print(json.dumps(result.as_dict(), indent=2))
            if result.problem is not None:
                print(f"faceaudit log: NOT VERIFIED ({contents.source}): {result.problem.message}", file=sys.stderr)
                return 1
            against = f", and matches the kept checkpoint at record {kept['statement']['seq']}" if kept else ""
            print(f"faceaudit log: verified {result.records} records of {contents.source} (head {result.head_seq}, "
                  f"{result.checkpoints} signed checkpoints checked{against})", file=sys.stderr)
            if not kept:
                print("faceaudit log: a truncated or rewritten tail is only detected against a checkpoint kept "
                      "elsewhere (--checkpoint FILE, from 'faceaudit log checkpoint')", file=sys.stderr)
            return 0
        if args.log_command == "prove":
            contents = read_export(args.export) if args.export else read_data_dir(args.data_dir, _database(args))
            kept = read_checkpoint_file(args.checkpoint)
            if args.seq is not None:
                proof = contents.inclusion(args.seq, kept)
                what = f"record {args.seq} is in the {proof['tree_size']} records of the checkpoint"
            else:
                proof = contents.consistency(read_checkpoint_file(args.from_checkpoint), kept)
                what = f"the log of {proof['to_size']} records extends the one of {proof['from_size']}"
            _write_new_file(args.out, json.dumps(proof, indent=2) + "\n")
            print(f"faceaudit log: proof that {what} written to {args.out}", file=sys.stderr)
            return 0
        if args.log_command == "check-proof":
            try:
                proof = json.loads(Path(args.proof).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise SearchLogError(f"cannot read proof {args.proof}: {error}") from None
            kept = read_checkpoint_file(args.checkpoint)
            if proof.get("format") == INCLUSION_FORMAT:
                problem = check_inclusion(proof, kept)
                what = f"record {proof.get('seq')} is in the log the checkpoint covers"
            elif proof.get("format") == CONSISTENCY_FORMAT:
                if not args.from_checkpoint:
                    raise SearchLogError("a consistency proof is checked against two checkpoints: "
                                         "add --from-checkpoint FILE (the earlier one)")
                problem = check_consistency(proof, read_checkpoint_file(args.from_checkpoint), kept)
                what = f"the log of {proof.get('to_size')} records extends the one of {proof.get('from_size')}"
            else:
                raise SearchLogError(f"{args.proof} is not a faceaudit search log proof")
            if problem is not None:
                print(f"faceaudit log: PROOF REFUSED: {problem}", file=sys.stderr)
                return 1
            print(f"faceaudit log: proof checked: {what}", file=sys.stderr)
            return 0
        if args.log_command == "export":  # reads only
            count = read_data_dir(args.data_dir, _database(args)).export(args.out)
            print(f"faceaudit log: exported {count} records, checkpoints and the public key to {args.out}",
                  file=sys.stderr)
            return 0
        log = SearchLog(args.data_dir, create=False, database=_database(args))  # a checkpoint never creates a log
        try:
            checkpoint = log.checkpoint()
        finally:
            log.close()
        _write_new_file(args.out, json.dumps(checkpoint, indent=2) + "\n")
        print(f"faceaudit log: checkpoint of record {checkpoint['statement']['seq']} written to {args.out}; "
              "keep it where the server's operator cannot change it", file=sys.stderr)
        return 0
    except SearchLogError as error:
        print(f"faceaudit log: {error}", file=sys.stderr)
        return 2


def _write_new_file(path: str, text: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _add_log_parser(commands) -> None:
    log, actions = _add_command_group(
        commands, "log", "log_command",
        help="the hash-chained search log: verify, checkpoint, export (docs/accountability.md)",
        description="Check the search log of a data directory (or an export of it), write a signed checkpoint "
                    "for an overseer to keep, or export everything needed to verify it offline. Exit code "
                    "0: verified; 1: the log is not the one that was written; 2: cannot read it.")
    verify = actions.add_parser("verify", help="name the first edited, deleted, inserted or reordered record")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="the server's data directory")
    source.add_argument("--export", metavar="FILE", help="an export from 'faceaudit log export'")
    verify.add_argument("--checkpoint", metavar="FILE",
                        help="a checkpoint kept earlier: also detects a truncated or rewritten tail")
    _add_database_option(verify)
    checkpoint = actions.add_parser("checkpoint", help="sign the log's head now and write it for an overseer")
    export = actions.add_parser("export", help="records, checkpoints and public key, to verify offline")
    _add_data_dir(checkpoint, export)
    for action in (checkpoint, export):
        action.add_argument("--out", required=True, metavar="FILE")
    _add_database_option(checkpoint, export)
    prove = actions.add_parser(
        "prove", help="a Merkle proof: one record is in a kept checkpoint's log, or a later log extends an earlier")
    source = prove.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="the server's data directory")
    source.add_argument("--export", metavar="FILE", help="an export from 'faceaudit log export'")
    prove.add_argument("--checkpoint", required=True, metavar="FILE", help="the (later) kept checkpoint")
    which = prove.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", type=int, help="inclusion: the record to prove")
    which.add_argument("--from-checkpoint", metavar="FILE", help="consistency: the earlier kept checkpoint")
    prove.add_argument("--out", required=True, metavar="FILE")
    _add_database_option(prove)
    check = actions.add_parser("check-proof", help="check a proof against kept checkpoints, without the log")
    check.add_argument("proof", metavar="PROOF")
    check.add_argument("--checkpoint", required=True, metavar="FILE", help="the (later) kept checkpoint")
    check.add_argument("--from-checkpoint", metavar="FILE", help="consistency: the earlier kept checkpoint")
    log.set_defaults(func=cmd_log)


def cmd_transparency(args: argparse.Namespace) -> int:
    """faceaudit transparency: the report computed from a data directory's search log or from an export."""
    from faceaudit.accountability.searchlog import SearchLogError, read_data_dir, read_export
    from faceaudit.accountability.transparency import parse_since, transparency_report
    from faceaudit.audit.report.transparency import write_transparency
    try:
        since = parse_since(args.since)
        until = parse_since(args.until) if args.until else None
    except ValueError as error:
        print(f"faceaudit transparency: {error}", file=sys.stderr)
        return 2
    try:
        contents = read_export(args.from_export) if args.from_export else \
            read_data_dir(args.data_dir, _database(args))
    except SearchLogError as error:
        print(f"faceaudit transparency: {error}", file=sys.stderr)
        return 2
    report = transparency_report(contents, since, until)
    paths = write_transparency(report, args.out)
    verification = report["source"]["verification"]
    print(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    if not verification["ok"]:
        print(f"faceaudit transparency: the log did NOT verify ({verification['problem']['message']}); the report "
              "says so on its first page", file=sys.stderr)
        return 1
    print(f"faceaudit transparency: {report['searches']['total']} searches since {report['period']['since']}, "
          f"from a log that verified ({verification['records']} records)", file=sys.stderr)
    return 0


def _add_transparency_parser(commands) -> None:
    report = commands.add_parser(
        "transparency", help="what the service was used for, from its search log (JSON, Markdown, HTML)",
        description="Searches by collection, policy, purpose, unit, key and threshold; candidates returned; "
                    "review outcomes; refusals; moratorium periods. The same figures from a live data "
                    "directory or from an export ('faceaudit log export'). Exit code 1 when the log does "
                    "not verify (the report is written and says so).")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="the server's data directory")
    source.add_argument("--from-export", metavar="FILE", help="an export from 'faceaudit log export'")
    report.add_argument("--since", required=True, metavar="DATE", help="e.g. 2026-12-01 (UTC) or an ISO-8601 time")
    report.add_argument("--until", metavar="DATE", help="end of the period (default: the end of the log)")
    _add_database_option(report)
    report.add_argument("--out", required=True, metavar="DIR",
                        help="folder for transparency.json, .md and .html")
    report.set_defaults(func=cmd_transparency)


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


def _report_batch(summary, what: str) -> int:
    """The batch summary on stdout as JSON; failed images (file and Rekognition error code) on stderr."""
    for path, code, message in summary.failed:
        print(f"failed: {path}: {code}: {message}", file=sys.stderr)
    for path, code, message in summary.failed_before:
        print(f"failed in an earlier run: {path}: {code}: {message}", file=sys.stderr)
    print(json.dumps(summary.as_dict(), indent=2))
    print(f"{what}: {summary.processed} images this run, {summary.already_done} done before, "
          f"{len(summary.failed)} failed, {summary.total} in all", file=sys.stderr)
    return 0  # failed images are reported, not fatal


class _BatchRefused(Exception):
    """What a batch command's work could not be opened for (its message is printed; exit code 2)."""


# Opens what one batch command works on for the listed images, and yields its work on a cluster
# (cluster -> summary); closes it all after.
BatchWork = Callable[[list], contextlib.AbstractContextManager[Callable[[Any], Any]]]


def _run_batch(args: argparse.Namespace, command: str, label: str, work: BatchWork) -> int:
    """index-folder and batch extract alike: list ``args.source``'s images, open the ``work``, run it on
    the cluster (``--cluster``, else local with ``--workers``), then report; failed images are reported,
    never fatal. ``command`` prefixes error messages, ``label`` the summary line."""
    from faceaudit.batch import list_sources
    from faceaudit.engine.distributed import FaceCluster

    try:
        sources = list_sources(args.source)
    except RekognitionError as error:
        print(f"faceaudit {command}: {error.message}", file=sys.stderr)
        return 2
    try:
        with work(sources) as run, FaceCluster(args.cluster, args.workers) as cluster:
            summary = run(cluster)
    except _BatchRefused as refused:
        print(f"faceaudit {command}: {refused}", file=sys.stderr)
        return 2
    except RekognitionError as error:  # e.g. the collection holds another model's faces
        print(f"faceaudit {command}: {error.code}: {error.message}", file=sys.stderr)
        return 2
    return _report_batch(summary, label)


def cmd_index_folder(args: argparse.Namespace) -> int:
    from faceaudit.batch import index_images
    from faceaudit.batch.ledger import Ledger, index_job
    from faceaudit.settings import Settings
    from faceaudit.storage import EMBEDDED, is_postgres_url, open_store

    _apply_engine_options(args)
    database = args.database or Settings.from_env().database
    if database and database != EMBEDDED and not is_postgres_url(database):
        print(f"faceaudit index-folder: --database {database!r}: 'embedded' or a postgresql:// URL", file=sys.stderr)
        return 2

    @contextlib.contextmanager
    def indexing(sources: list) -> Iterator[Callable[[Any], Any]]:
        try:
            store = open_store(database, args.data_dir, pool_size=2)
        except (RekognitionError, RuntimeError, OSError) as error:  # e.g. unreachable, or newer than this code
            raise _BatchRefused(getattr(error, "message", error)) from error
        ledger = Ledger(args.data_dir, index_job(args.collection, database))
        try:
            yield lambda cluster: index_images(store, args.collection, sources, cluster, ledger,
                                               max_faces=args.max_faces, quality_filter=args.quality_filter,
                                               progress=True, retry_failed=args.retry_failed)
        finally:
            ledger.close()
            store.close()

    return _run_batch(args, "index-folder", f"index-folder {args.collection}", indexing)


def cmd_batch_extract(args: argparse.Namespace) -> int:
    from faceaudit.audit.targets.cache import ResponseCache, default_cache_dir
    from faceaudit.batch import extract_images

    _apply_engine_options(args)

    @contextlib.contextmanager
    def extracting(sources: list) -> Iterator[Callable[[Any], Any]]:
        cache = ResponseCache(args.cache or default_cache_dir())
        try:
            yield lambda cluster: extract_images(cache, sources, cluster, progress=True)
        finally:
            cache.close()

    return _run_batch(args, "batch extract", "batch extract", extracting)


def _add_batch_parsers(commands) -> None:
    def cluster_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cluster", metavar="ADDRESS",
                       help="a Dask scheduler (tcp://HOST:8786); default: a local cluster on this machine")
        p.add_argument("--workers", type=int, help="local cluster: worker processes (default: one per core)")
        _add_engine_options(p)

    index = commands.add_parser(
        "index-folder", help="IndexFaces for every image of a folder or CSV listing, on a Dask cluster; resumable",
        description="Index a folder (recursively) or a CSV listing (column path, optional external_image_id) "
                    "into a collection of DATA_DIR's store (or of --database), creating it if absent. A rerun "
                    "skips what is done (ledger DATA_DIR/batch-ledger.sqlite); failed images are reported, "
                    "never fatal, and not tried again unless --retry-failed.")
    index.add_argument("collection")
    index.add_argument("source", help="a folder of images or a CSV listing")
    index.add_argument("--data-dir", required=True,
                       help="the store (as `faceaudit serve --data-dir`); with --database, only the ledger")
    index.add_argument("--database", metavar="URL",
                       help="as `faceaudit serve --database`: 'embedded' (the default) or postgresql://... "
                            "(the faces go to that database). Default: FACEAUDIT_DATABASE")
    index.add_argument("--retry-failed", action="store_true",
                       help="try again the images an earlier run recorded as failed (refused by the engine, "
                            "or killing its worker process)")
    index.add_argument("--max-faces", type=int, help="IndexFaces MaxFaces (default: every face)")
    index.add_argument("--quality-filter", choices=["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"],
                       help="IndexFaces QualityFilter (default AUTO)")
    cluster_options(index)
    index.set_defaults(func=cmd_index_folder)

    batch = commands.add_parser("batch", help="batch work on a Dask cluster")
    actions = batch.add_subparsers(dest="action", required=True)
    extract = actions.add_parser(
        "extract", help="the audit's extraction (detections, attributes, embeddings) into its cache; resumable",
        description="DetectFaces (Attributes ALL) and the largest face's embedding for every image, written to "
                    "the audit's cache, so that `faceaudit audit ... --target local --cache DIR` reuses them.")
    extract.add_argument("source", help="a folder of images or a CSV listing")
    extract.add_argument("--cache", help="the audit's cache folder (default ~/.cache/faceaudit/audit)")
    cluster_options(extract)
    extract.set_defaults(func=cmd_batch_extract)


def cmd_storage_migrate(args: argparse.Namespace) -> int:
    """Copy DATA_DIR's collections, faces, UserIDs, keys and accountability data into an empty PostgreSQL database."""
    from faceaudit.access import SQLiteKeyStore
    from faceaudit.access.keys import KeyStoreError
    from faceaudit.access.postgres import PostgresKeyStore
    from faceaudit.access.sqlite import DB_FILENAME as KEYS_FILENAME
    from faceaudit.batch import accountability_migration
    from faceaudit.batch.accountability_migration import AccountabilityRefused
    from faceaudit.batch.storage_migration import MigrationRefused, migrate, refuse_unless_empty
    from faceaudit.storage import ApproximateSearch, EmbeddedStore, PostgresStore, is_postgres_url
    from faceaudit.storage.embedded import DB_FILENAME as FACES_FILENAME

    def fail(message: str) -> int:
        print(f"faceaudit storage migrate: {message}", file=sys.stderr)
        return 2

    data_dir = Path(args.data_dir)
    target_dir = Path(args.target_data_dir) if args.target_data_dir else data_dir
    if not (data_dir / FACES_FILENAME).is_file():
        return fail(f"{data_dir} holds no embedded store ({FACES_FILENAME})")
    if not is_postgres_url(args.database):
        return fail(f"--database {args.database!r}: a postgresql://USER:PASSWORD@HOST/NAME URL")
    opened: list[Any] = []
    faces_copied = False
    try:
        # read only; never an approximate graph built on the way
        source = EmbeddedStore(data_dir, approximate=ApproximateSearch(threshold=None))
        opened.append(source)
        if not (data_dir / KEYS_FILENAME).is_file():
            return fail(f"{data_dir} holds no key store ({KEYS_FILENAME})")
        source_keys = SQLiteKeyStore(data_dir)
        opened.append(source_keys)
        target = PostgresStore(args.database, pool_size=2)
        opened.append(target)
        target_keys = PostgresKeyStore(args.database)
        opened.append(target_keys)
        # every refusal comes before the first row is written
        refuse_unless_empty(target)
        prepared = accountability_migration.prepare(data_dir, args.database, target_dir)
        faces_copied = True  # from here on a failure leaves rows in the database
        summary = migrate(source, source_keys, target, target_keys, accountability=prepared,
                          progress=not args.quiet)
    except MigrationRefused as error:
        return fail(str(error))
    except AccountabilityRefused as error:
        if faces_copied:
            return fail(f"{error}. The faces and keys were copied, the accountability data was not: drop the "
                        "database's tables (or use a new database or schema) before migrating again")
        return fail(str(error))
    except (RekognitionError, KeyStoreError) as error:
        return fail(getattr(error, "message", None) or str(error))
    finally:
        for store in reversed(opened):
            store.close()
    print(json.dumps(summary.as_dict(), indent=2))
    faces = sum(c["faces"] for c in summary.collections.values())
    carried = summary.accountability
    assert carried is not None
    rows = sum(t["source"] for t in carried.tables.values())
    log = carried.search_log.get("target") or {}
    print(f"storage migrate: {len(summary.collections)} collections, {faces} faces, {summary.keys} keys, "
          f"{rows} accountability rows in {len(carried.tables)} tables ({carried.review_pictures} review pictures"
          + (f"; the search log verifies on PostgreSQL: {log['records']} records, head {log['head_hash'][:16]}..."
             if log.get("ok") else "") + ") copied"
          + ("" if summary.ok else "; the check found differences: " + "; ".join(summary.problems))
          + f". Review key: {carried.review_key}. Not copied: console sessions, the purge lease, schema versions "
          "(docs/scale.md).", file=sys.stderr)
    return 0 if summary.ok else 1


def _add_storage_parser(commands) -> None:
    storage = commands.add_parser("storage", help="move a data folder's store into PostgreSQL")
    actions = storage.add_subparsers(dest="action", required=True)
    move = actions.add_parser(
        "migrate", help="copy DATA_DIR's collections, faces, keys and accountability data into an empty PostgreSQL",
        description="Copy every collection (model version, creation time, search mode), face (FaceId, vector, "
                    "bounding box, ExternalImageId...), UserID and association, every access key, and the "
                    "accountability data (tags and use policies, moratoria, budgets, review items and their sealed "
                    "pictures, the search log with its checkpoints, the retention ledger) from DATA_DIR into the "
                    "PostgreSQL database of --database, which must hold none of them. DATA_DIR is only read. The "
                    "counts, and the search log's chain and head, are checked at the end. Not copied: console "
                    "sessions, the purge lease (docs/scale.md).")
    move.add_argument("--data-dir", required=True, help="the embedded store's data folder (as `faceaudit serve`)")
    move.add_argument("--database", required=True, metavar="URL",
                      help="postgresql://USER:PASSWORD@HOST:PORT/NAME (pgvector), as `faceaudit serve --database`")
    move.add_argument("--target-data-dir", metavar="DIR",
                      help="the data directory the server on the database will use (default: DATA_DIR): "
                           "review.key, which seals the review pictures, is copied there")
    move.add_argument("--quiet", action="store_true", help="no progress bar")
    move.set_defaults(func=cmd_storage_migrate)


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
    _add_batch_parsers(commands)
    _add_storage_parser(commands)
    _add_train_parser(commands)
    _add_keys_parser(commands)
    _add_accountability_parsers(commands)
    _add_review_parser(commands)
    _add_retention_parser(commands)
    _add_log_parser(commands)
    _add_transparency_parser(commands)

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
    serve.add_argument("--reports", metavar="DIR",
                       help="folder of audit reports (report.json) the web console at /console lists")
    serve.add_argument("--database", metavar="URL",
                       help="where collections and faces are kept: 'embedded' (SQLite in --data-dir, the "
                            "default) or postgresql://USER:PASSWORD@HOST:PORT/NAME (PostgreSQL with pgvector; "
                            "several servers may share it; docs/scale.md). Default: FACEAUDIT_DATABASE")
    serve.add_argument("--approximate-above", metavar="N|never",
                       help="search collections of more than N faces through an approximate (HNSW) index, on "
                            "either backend, or 'never'; default: FACEAUDIT_APPROXIMATE_ABOVE, else embedded "
                            "from 50,000 faces and PostgreSQL never. Public-safety collections and audits stay "
                            "exact (docs/scale.md)")
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
