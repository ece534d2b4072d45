"""The transparency report of a scripted session against a real server equals the counts the script
itself keeps, computed from the live data directory and from an export alike.

About 200 operations by five keys in four roles (searches at several thresholds, with and without
a signed purpose, in two collections and two units; denials by role; a missing collection;
requests with a wrong secret). Moratorium and review events are appended through the Recorder
interface (a SearchLog opened by this process on the server's data directory), as the guard and
the review queue write them.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import numpy as np
import pytest
from botocore.exceptions import ClientError

from faceaudit.accountability.searchlog import SearchLog
from faceaudit.accountability.transparency import NO_POLICY, NO_UNIT, NONE_STATED
from faceaudit.cli import main
from server.test_search_log_server import create_key
from support.images import encode
from support.server import start_server

pytestmark = pytest.mark.models  # the server it starts loads the face models

SEARCHES = ("SearchFaces",)


class Script:
    """Runs operations and keeps, independently of the server, what each one was and what came back."""

    def __init__(self, server, keys: dict[str, tuple[str, str, str, str | None]]):
        self.clients = {}
        self.keys = keys  # name -> (access key id, secret, role, unit)
        self.purpose: str | None = None
        for name, (access, secret, _, _) in keys.items():
            client = server.client(access_key_id=access, secret_access_key=secret)
            client.meta.events.register("before-sign.rekognition", self._state_purpose)
            self.clients[name] = client
        self.done: list[dict] = []

    def _state_purpose(self, request, **_):
        if self.purpose:
            request.headers["x-faceaudit-purpose"] = self.purpose  # signed: added before signing

    def __call__(self, key: str, method: str, purpose: str | None = None, **params):
        self.purpose = purpose
        try:
            answer, error = getattr(self.clients[key], method)(**params), None
        except ClientError as failure:
            answer, error = failure.response, failure.response["Error"]["Code"]
        finally:
            self.purpose = None
        operation = "".join(part.title() for part in method.split("_"))
        self.done.append({"key": key, "role": self.keys[key][2], "unit": self.keys[key][3], "operation": operation,
                          "params": params, "purpose": purpose, "error": error,
                          "matches": len(answer.get("FaceMatches", [])) if error is None else 0})
        return answer


def test_the_report_of_a_scripted_session_equals_the_scripts_own_counts(tmp_path, astronaut_rgb, astronaut_jpeg):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    keys = {"initial": (None, None, "admin", None)}
    for name, role, unit in (("north-1", "operator", "north"), ("south-1", "operator", "south"),
                             ("overseer", "auditor", None), ("checker", "reviewer", None)):
        access, secret = create_key(data_dir, name, role, unit)
        keys[name] = (access, secret, role, unit)
    rng = random.Random(10)
    with start_server(data_dir) as server:
        keys["initial"] = (server.access_key_id, server.secret_access_key, "admin", None)
        run = Script(server, keys)
        mirrored = encode(np.ascontiguousarray(astronaut_rgb[:, ::-1]))
        faces = {}
        for collection in ("alpha", "beta"):
            run("initial", "create_collection", CollectionId=collection)
            faces[collection] = [
                run("north-1", "index_faces", CollectionId=collection, Image={"Bytes": photo},
                    MaxFaces=1)["FaceRecords"][0]["Face"]["FaceId"] for photo in (astronaut_jpeg, mirrored)]
        while len(run.done) < 190:
            choice = rng.random()
            collection = rng.choice(["alpha", "beta"])
            if choice < 0.55:  # a search by an operator
                params = {"CollectionId": collection, "FaceId": rng.choice(faces[collection]),
                          "MaxFaces": rng.choice([1, 5])}
                threshold = rng.choice([80, 95, 99, None])
                if threshold is not None:
                    params["FaceMatchThreshold"] = threshold
                run(rng.choice(["north-1", "south-1"]), "search_faces",
                    purpose=rng.choice(["missing person", "fraud inquiry", None]), **params)
            elif choice < 0.65:  # a search by a role that may not
                run(rng.choice(["overseer", "checker"]), "search_faces", CollectionId=collection,
                    FaceId=faces[collection][0], FaceMatchThreshold=99)
            elif choice < 0.70:  # a search of a collection that does not exist
                run("south-1", "search_faces", CollectionId="gamma", FaceId=faces["alpha"][0])
            elif choice < 0.80:
                run(rng.choice(["north-1", "south-1"]), "list_collections")
            elif choice < 0.90:
                run("north-1", "describe_collection", CollectionId=collection)
            else:  # an operator trying an admin's operation
                run("south-1", "delete_collection", CollectionId=collection)
        bad = server.client(access_key_id=keys["north-1"][0], secret_access_key="w" * 40)
        for _ in range(7):
            with pytest.raises(ClientError):
                bad.list_collections()
        # What the guard and the review queue write, through the Recorder interface, while the server runs.
        recorder = SearchLog(data_dir)
        admin_key = {"name": "initial", "access_key_id": keys["initial"][0], "role": "admin", "unit": None}
        for action in ("set", "lift", "set"):
            recorder.append({"kind": "moratorium", "key": admin_key,
                             "details": {"action": action, "scope": "policy", "target": "public-safety",
                                         "reason": "council review", "id": None}})
        decisions = ["confirm", "reject", "reject", "inconclusive", "confirm", "reject"]
        for i, decision in enumerate(decisions):
            recorder.append({"kind": "review", "details": {
                "item": f"item-{i // 2}", "reviewer": "checker",
                "decisions": [{"FaceId": faces["alpha"][1], "decision": decision, "reason": "different ears"}],
                "released": []}})
        recorder.close()
    assert len(run.done) >= 190

    since = "2020-01-01"
    live_dir, export_dir = tmp_path / "live", tmp_path / "export"
    export = tmp_path / "log.jsonl"
    assert main(["transparency", "--data-dir", str(data_dir), "--since", since, "--out", str(live_dir)]) == 0
    assert main(["log", "export", "--data-dir", str(data_dir), "--out", str(export)]) == 0
    assert main(["transparency", "--from-export", str(export), "--since", since, "--out", str(export_dir)]) == 0
    live = json.loads((live_dir / "transparency.json").read_text())
    exported = json.loads((export_dir / "transparency.json").read_text())
    assert live == exported  # the same report, whoever computes it, and where it was read from is not in it
    assert str(data_dir) not in (live_dir / "transparency.json").read_text()
    assert live["source"]["verification"]["ok"]

    # The script's own counts.
    searches = [d for d in run.done if d["operation"] in SEARCHES]
    answered = [d for d in searches if d["error"] is None]
    report = live
    assert report["requests"]["total"] == len(run.done)
    assert report["searches"]["total"] == len(searches)
    assert report["searches"]["answered"] == len(answered)
    assert report["candidates"]["returned"] == sum(d["matches"] for d in answered) > 0
    assert report["candidates"]["searches_with_none"] == sum(1 for d in answered if d["matches"] == 0)

    def breakdown(label):
        rows = defaultdict(lambda: {"searches": 0, "answered": 0, "refused": 0, "candidates": 0})
        for d in searches:
            row = rows[label(d)]
            row["searches"] += 1
            row["answered" if d["error"] is None else "refused"] += 1
            row["candidates"] += d["matches"]
        return {value: dict(row) for value, row in rows.items()}

    def reported(name):
        return {row.pop("value"): row for row in (dict(r) for r in report["searches"][name])}

    # The guard logs the threshold as applied: Rekognition's default 80 when none was sent.
    threshold = lambda d: f"{d['params'].get('FaceMatchThreshold', 80):g}"  # noqa: E731
    assert reported("by_collection") == breakdown(lambda d: d["params"]["CollectionId"])
    assert reported("by_threshold") == breakdown(threshold)
    assert reported("by_purpose") == breakdown(lambda d: d["purpose"] or NONE_STATED)
    assert reported("by_unit") == breakdown(lambda d: d["unit"] or NO_UNIT)
    assert reported("by_key") == breakdown(lambda d: f"{d['key']} ({d['role']})")
    assert reported("by_policy") == breakdown(lambda d: NO_POLICY)
    refused = Counter(d["error"] for d in run.done if d["error"])
    assert {r["value"]: r["count"] for r in report["refusals"]["by_error"]} == dict(refused)
    assert refused["AccessDeniedException"] > 10 and refused["ResourceNotFoundException"] > 0
    assert report["refusals"]["unauthenticated"] == {"total": 7, "by_error": {"InvalidSignatureException": 7}}
    reviews = report["reviews"]
    assert (reviews["confirmed"], reviews["rejected"], reviews["inconclusive"], reviews["items"]) == (2, 3, 1, 3)
    assert (reviews["rejection_rate"]["k"], reviews["rejection_rate"]["n"]) == (3, 5)
    low, high = reviews["rejection_rate"]["ci95"]
    assert low < 0.6 < high
    periods = report["moratoriums"]
    assert [(p["target"], p["lifted"] is None) for p in periods] == [("public-safety", False),
                                                                      ("public-safety", True)]
    # The pages show the same figures.
    markdown = (live_dir / "transparency.md").read_text()
    html = (live_dir / "transparency.html").read_text()
    assert f"{len(searches)} searches ({len(answered)} answered" in markdown
    assert f"{len(searches)} searches ({len(answered)} answered" in html and "<svg" in html
    assert "real searches" in html and "3 of 5" in markdown
