"""`faceaudit review list|show|decide` on a data directory, the reviewer identified by their key pair.

On both databases: with PostgreSQL the keys and the review tables are there and the commands
follow FACEAUDIT_DATABASE (the ``server_database`` fixture), as the server does."""

from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from faceaudit import cli
from faceaudit.access import SQLiteKeyStore
from faceaudit.access.postgres import PostgresKeyStore
from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.policies import RETENTION_TAGS
from faceaudit.accountability.retention import open_retention
from faceaudit.accountability.review import ReviewStore
from faceaudit.accountability.state import AccountabilityState
from faceaudit.errors import ResourceNotFoundException
from faceaudit.storage import open_store
from support.images import encode

BOX = {"Left": 0.2, "Top": 0.2, "Width": 0.5, "Height": 0.5}


@pytest.fixture
def data(tmp_path, monkeypatch, server_database):
    """A data directory with an operator's open item and two reviewer keys; returns (dir, item, keys)."""
    directory = tmp_path / "data"
    with SQLiteKeyStore(directory) if server_database is None else PostgresKeyStore(server_database) as keys:
        operator = keys.create("officer", "operator")
        reviewers = [keys.create("alice", "reviewer"), keys.create("bob", "reviewer")]
    with ReviewStore(directory, database=server_database) as review:
        faces = [str(uuid.uuid4()) for _ in range(3)]
        for i, face in enumerate(faces):
            image = encode(np.random.default_rng(i).integers(0, 256, (100, 100, 3), dtype=np.uint8))
            review.keep_face_crops("watch", image, [{"Face": {"FaceId": face, "BoundingBox": BOX}}])
        response = {"FaceMatches": [{"Similarity": 99.0 + i / 10, "Face": {"FaceId": f}} for i, f in enumerate(faces)]}
        item = review.open_item(Caller(operator.key, "r1", datetime.now(UTC)), "watch", "public-safety",
                                encode(np.zeros((64, 64, 3), dtype=np.uint8)), response, Facts())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    return directory, item, {"officer": operator, "alice": reviewers[0], "bob": reviewers[1]}


def as_key(monkeypatch, issued) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", issued.key.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", issued.secret_access_key)


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["review", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_writes_the_pictures_in_blind_order_and_decide_reveals_the_scores(data, monkeypatch, capsys, tmp_path):
    directory, item, keys = data
    as_key(monkeypatch, keys["alice"])
    code, out, _ = run(capsys, "list", "--data-dir", directory)
    assert code == 0 and [i["ItemId"] for i in json.loads(out)["ReviewItems"]] == [item]
    folder = tmp_path / "look"
    code, out, err = run(capsys, "show", item, "--out", folder, "--data-dir", directory)
    assert code == 0 and "Similarity" not in out + err and "99." not in out + err
    shown = json.loads(out)
    assert sorted(p.name for p in folder.iterdir()) == ["candidate-1.jpg", "candidate-2.jpg", "candidate-3.jpg",
                                                       "probe.jpg"]
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in folder.iterdir())
    assert [c["Number"] for c in shown["Candidates"]] == [1, 2, 3]
    code, out, err = run(capsys, "decide", item, "--candidate", "1", "confirm", "same mole on the cheek",
                         "--candidate", "2", "reject", "different jaw", "--candidate",
                         shown["Candidates"][2]["CandidateId"], "inconclusive", "too blurred", "--data-dir",
                         directory)
    assert code == 0, err
    decided = json.loads(out)
    assert decided["State"] == "OPEN" and decided["DecisionCount"] == 1
    by_id = {c["CandidateId"]: c for c in decided["Revealed"]}
    assert [by_id[c["CandidateId"]]["YourDecision"] for c in shown["Candidates"]] == \
        ["CONFIRM", "REJECT", "INCONCLUSIVE"]
    assert sorted(c["Similarity"] for c in decided["Revealed"]) == pytest.approx([99.0, 99.1, 99.2])
    code, _, err = run(capsys, "show", item, "--data-dir", directory)
    assert code == 2 and "already decided" in err


def test_only_a_reviewer_key_with_its_secret_may_review(data, monkeypatch, capsys):
    directory, item, keys = data
    code, _, err = run(capsys, "list", "--data-dir", directory)
    assert code == 2 and "AWS_ACCESS_KEY_ID" in err
    as_key(monkeypatch, keys["officer"])
    code, _, err = run(capsys, "list", "--data-dir", directory)
    assert code == 2 and "role operator" in err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["alice"].key.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, _, err = run(capsys, "show", item, "--data-dir", directory)
    assert code == 2 and "not a key of this data directory" in err
    as_key(monkeypatch, keys["bob"])
    code, _, err = run(capsys, "decide", item, "--candidate", "1", "confirm", "x", "--data-dir", directory)
    assert code == 2 and "InvalidParameterException" in err and "missing" in err  # every candidate, or none


def test_retention_and_purge_are_the_directory_owners(data, capsys, server_database):
    """`review retention|purge` are aliases of `retention set ... review-items` / `retention purge`."""
    directory, item, keys = data
    officer = keys["officer"].key
    with open_store(server_database, directory) as store:
        store.create_collection("watch", "sface-test")
    code, out, _ = run(capsys, "retention", "watch", "--data-dir", directory)
    assert code == 0 and json.loads(out) == {"CollectionId": "watch", "RetentionDays": 30}
    code, out, _ = run(capsys, "retention", "watch", "--days", "7", "--data-dir", directory)
    assert json.loads(out)["RetentionDays"] == 7
    with AccountabilityState(directory, database=server_database) as state:  # the alias writes the collection's tag
        assert state.tag("watch", RETENTION_TAGS["review-items"]) == "7"
    code, out, _ = run(capsys, "purge", "--data-dir", directory)
    assert code == 0 and json.loads(out)["PurgedItems"] == 0  # the item is minutes old
    with ReviewStore(directory, database=server_database) as review:
        assert len(review.blobs.blob_ids()) == 4  # the item's probe and the collection's 3 crops
    with open_retention(directory, server_database) as retention:
        report = retention.purge(datetime.now(UTC) + timedelta(days=8))
    assert report.items == [item]
    with ReviewStore(directory, database=server_database) as review:
        assert len(review.blobs.blob_ids()) == 3  # the collection's crops remain; the item's probe went
        with pytest.raises(ResourceNotFoundException):
            review.result(officer, item)
    code, _, err = run(capsys, "retention", "watch", "--days", "-3", "--data-dir", directory)
    assert code == 2 and "at least 1 day" in err
    code, _, err = run(capsys, "retention", "nowhere", "--days", "3", "--data-dir", directory)
    assert code == 2 and "nowhere" in err


def test_a_server_whose_review_key_is_lost_refuses_to_start(data, server_database):
    import subprocess

    from support.server import faceaudit_command
    directory, _, _ = data
    (directory / "review.key").unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEAUDIT_ACCESS_KEY")}
    done = subprocess.run([*faceaudit_command(), "serve", "--port", "0", "--data-dir", str(directory)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "review.key is missing" in done.stderr
    # one host: restore it from its backup; several on PostgreSQL: copy it from another host
    assert ("copy review.key from" if server_database else "restore the key") in done.stderr
