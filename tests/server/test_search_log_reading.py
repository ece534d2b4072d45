"""Auditors read the search log and the transparency report over the wire: ListSearchLogRecords,
VerifySearchLog and GetTransparencyReport through boto3 against real `faceaudit serve` processes.

What an answer should hold is computed independently, from the data directory's searchlog.db read
with sqlite3 just before each call (each call's own record is appended after its answer, so the
call sees exactly that). Tampering is done with sqlite3 on the file, as someone with the disk would.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import botocore.exceptions
import pytest
from botocore import xform_name

from faceaudit.access import SQLiteKeyStore
from faceaudit.accountability.searchlog import DB_FILENAME, canonical, record_hash
from faceaudit.cli import main
from support.server import RunningServer, faceaudit_command, start_server

pytestmark = pytest.mark.models  # the servers load the face models

LOG_OPERATIONS = ("ListSearchLogRecords", "VerifySearchLog", "GetTransparencyReport")


class LogServer:
    """A server, a boto3 client of each role on it, and the log file behind it."""

    def __init__(self, server: RunningServer):
        self.server = server
        self.names: dict[str, str] = {}
        self.faceaudit: dict[str, object] = {}
        self.rekognition: dict[str, object] = {}
        self.pairs: dict[str, dict[str, str]] = {}
        with SQLiteKeyStore(server.data_dir) as keys:
            for role in ("admin", "operator", "reviewer", "auditor"):
                issued = keys.create(f"{role}-{uuid.uuid4().hex[:6]}", role)
                pair = {"access_key_id": issued.key.access_key_id, "secret_access_key": issued.secret_access_key}
                self.names[role], self.pairs[role] = issued.key.name, pair
                self.faceaudit[role] = server.faceaudit_client(**pair)
                self.rekognition[role] = server.client(**pair)

    @property
    def db(self) -> Path:
        return self.server.data_dir / DB_FILENAME

    def stored(self) -> list[dict]:
        """Every record as stored now, oldest first (read with sqlite3, not through faceaudit)."""
        with sqlite3.connect(self.db) as conn:
            return [json.loads(text) for (text,) in conn.execute("SELECT record FROM searchlog_records ORDER BY seq")]

    def list_all(self, role: str = "auditor", page_size: int = 100, **filters) -> list[dict]:
        """Every page of a listing (boto3's paginator, from the model's paginators-1.json), in the order given."""
        pages = self.faceaudit[role].get_paginator("list_search_log_records").paginate(
            **filters, PaginationConfig={"PageSize": page_size})
        return [record for page in pages for record in page["Records"]]


def script(log: LogServer) -> None:
    """A little of everything: allowed and refused requests of several keys and collections."""
    admin, operator = log.rekognition["admin"], log.rekognition["operator"]
    for name in ("north", "south"):
        admin.create_collection(CollectionId=f"{name}-{uuid.uuid4().hex[:4]}")
    operator.list_collections()
    for call in (lambda: operator.describe_collection(CollectionId="nowhere"),  # ResourceNotFound
                 lambda: operator.create_collection(CollectionId="not-yours"),  # denied by role
                 lambda: operator.detect_faces(Image={"Bytes": b"not an image"})):  # bad image
        with pytest.raises(botocore.exceptions.ClientError):
            call()
    with pytest.raises(botocore.exceptions.ClientError):
        log.faceaudit["operator"].list_search_log_records()  # an operator may not read the log
    # an event of another kind, written by another writer of the same log (the CLI)
    assert main(["moratorium", "set", "--key", log.names["reviewer"], "--reason", "a test of the log",
                 "--data-dir", str(log.server.data_dir)]) == 0
    operator.list_collections()


@pytest.fixture(scope="module")
def log_server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("logreads") / "data") as server:
        log = LogServer(server)
        script(log)
        yield log


def error_of(call, **request) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**request)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


# ----------------------------------------------------------------------------- who may read


@pytest.mark.parametrize("role", ["operator", "reviewer"])
def test_operators_and_reviewers_are_refused_and_the_refusal_is_on_the_log(log_server, role):
    client = log_server.faceaudit[role]
    requests = {"ListSearchLogRecords": {}, "VerifySearchLog": {}, "GetTransparencyReport": {"Since": "2026-01-01"}}
    ids = []
    for operation in LOG_OPERATIONS:
        with pytest.raises(client.exceptions.AccessDeniedException) as info:
            getattr(client, xform_name(operation))(**requests[operation])
        assert f"rekognition:{operation}" in info.value.response["Error"]["Message"]
        ids.append(info.value.response["ResponseMetadata"]["RequestId"])
    denied = log_server.list_all(KeyName=log_server.names[role], Outcome="denied")
    logged = {json.loads(r["Record"])["request_id"]: r for r in denied}
    for operation, request_id in zip(LOG_OPERATIONS, ids):
        assert logged[request_id]["Operation"] == operation
        assert logged[request_id]["Error"] == "AccessDeniedException"
        assert logged[request_id]["Role"] == role


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_auditors_and_admins_read_all_three(log_server, role):
    client = log_server.faceaudit[role]
    assert client.list_search_log_records(MaxResults=1)["Records"]
    assert client.verify_search_log()["Ok"] is True
    assert json.loads(client.get_transparency_report(Since="2026-01-01")["Report"])["requests"]["total"] > 0


# ----------------------------------------------------------------------------- what a record says


def test_each_record_is_the_stored_text_and_hashes_to_the_chain(log_server):
    stored = {r["seq"]: r for r in log_server.stored()}
    listed = log_server.list_all(page_size=7)
    assert [r["Seq"] for r in listed] == sorted(stored, reverse=True)  # all of them, newest first
    for summary in listed:
        record = json.loads(summary["Record"])
        assert summary["Record"] == canonical(record)  # the canonical text, exactly as stored and hashed
        assert record_hash(record) == record["hash"] == stored[summary["Seq"]]["hash"]
        assert record == stored[summary["Seq"]]
        key = record["key"] or {}
        expected = {"Seq": record["seq"], "Time": record["time"], "Kind": record["kind"],
                    "KeyName": key.get("name"), "Role": key.get("role"), "Operation": record["operation"],
                    "CollectionId": record["collection"], "Policy": record["policy"],
                    "Purpose": record["purpose"], "Case": record["case"], "Status": record["status"],
                    "Error": record["error"], "Reason": record["reason"], "Record": summary["Record"]}
        assert summary == {name: value for name, value in expected.items() if value is not None}
    # the chain, from the listed texts alone (as an auditor checks offline)
    oldest_first = [json.loads(r["Record"]) for r in reversed(listed)]
    assert oldest_first[0]["prev"] == "0" * 64
    assert all(later["prev"] == earlier["hash"] for earlier, later in itertools.pairwise(oldest_first))


def _expected(records: list[dict], keep) -> list[int]:
    return [r["seq"] for r in reversed(records) if keep(r)]


def test_each_filter_narrows_the_answer_to_what_it_names(log_server):
    records = log_server.stored()
    collection = next(r["collection"] for r in records if r["operation"] == "CreateCollection" and not r["error"])
    times = sorted({r["time"] for r in records})
    since, until = times[len(times) // 3], times[2 * len(times) // 3]
    operator = log_server.names["operator"]
    cases = {
        "Kind": ("request", lambda r: r["kind"] == "request"),
        "Operation": ("ListCollections", lambda r: r["operation"] == "ListCollections"),
        "CollectionId": (collection, lambda r: r["collection"] == collection),
        "KeyName": (operator, lambda r: (r["key"] or {}).get("name") == operator),
        "Outcome": ("denied", lambda r: r["error"] is not None),
        "Since": (since, lambda r: r["time"] >= since),
        "Until": (until, lambda r: r["time"] < until),
    }
    for member, (value, keep) in cases.items():
        records = log_server.stored()
        expected = _expected(records, keep)
        answer = [r["Seq"] for r in log_server.list_all(**{member: value}, page_size=1000)]
        assert answer == expected, member
        assert 0 < len(answer) < len(records), f"{member}={value} should narrow the log"
    records = log_server.stored()
    allowed = [r["Seq"] for r in log_server.list_all(Outcome="allowed", Since=since, Until=until)]
    assert allowed == _expected(records, lambda r: r["error"] is None and since <= r["time"] < until)
    moratoria = log_server.list_all(Kind="moratorium")
    assert [json.loads(r["Record"])["details"]["reason"] for r in moratoria] == ["a test of the log"]


def test_pages_walk_the_listing_newest_first_and_tokens_cannot_be_forged(log_server):
    expected = _expected(log_server.stored(), lambda r: r["error"] is None)
    pages, token = [], None
    while True:
        page = log_server.faceaudit["auditor"].list_search_log_records(
            Outcome="allowed", MaxResults=2, **({"NextToken": token} if token else {}))
        pages.append([r["Seq"] for r in page["Records"]])
        token = page.get("NextToken")
        if not token:
            break
        last = token
    # newer records (these very calls) arrived meanwhile: a walk that began stays on what it began
    assert [seq for page in pages for seq in page] == expected
    assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    client = log_server.faceaudit["auditor"]
    assert client.list_search_log_records(Outcome="allowed", MaxResults=2, NextToken=last)["Records"]
    forged = last[:-2] + ("AA" if last[-2:] != "AA" else "BB")
    for request in ({"Outcome": "allowed", "NextToken": forged},  # edited
                    {"Outcome": "denied", "NextToken": last},  # another listing's
                    {"NextToken": last},  # the same position without the filter
                    {"Outcome": "allowed", "NextToken": "bm90IGEgdG9rZW4"}):  # made up
        code, _ = error_of(client.list_search_log_records, MaxResults=2, **request)
        assert code == "InvalidPaginationTokenException", request


def test_bad_bounds_and_dates_are_invalid_parameters(log_server):
    client = log_server.faceaudit["auditor"]
    # botocore itself refuses MaxResults=0 (not 1001): a client that does not check shows the server does
    unchecked = log_server.server.faceaudit_client(**log_server.pairs["auditor"], parameter_validation=False)
    for request, words in (({"MaxResults": 1001}, "less than or equal to 1000"),
                           ({"MaxResults": 0}, "greater than or equal to 1"),
                           ({"Since": "yesterday"}, "Since 'yesterday' is not an ISO-8601 date or time"),
                           ({"Until": "2026-13-45"}, "Until '2026-13-45' is not an ISO-8601"),
                           ({"Since": "2026-12-02", "Until": "2026-12-01"}, "must be later than Since"),
                           ({"Kind": "gossip"}, "enum value set"),
                           ({"Outcome": "maybe"}, "enum value set")):
        code, message = error_of(unchecked.list_search_log_records, **request)
        assert code == "InvalidParameterException" and words in message, (request, message)
    code, message = error_of(client.get_transparency_report, Since="last week")
    assert code == "InvalidParameterException" and "Since 'last week'" in message
    code, message = error_of(client.verify_search_log, Checkpoint="{\"statement\": 1}")
    assert code == "InvalidParameterException" and "not a faceaudit search log checkpoint" in message
    code, message = error_of(client.verify_search_log, Checkpoint="not json")
    assert code == "InvalidParameterException" and "Checkpoint is not JSON" in message


def test_each_read_is_itself_a_record_naming_what_was_read(log_server):
    client = log_server.faceaudit["auditor"]
    answer = client.list_search_log_records(KeyName=log_server.names["operator"], Outcome="denied", MaxResults=3)
    client.get_transparency_report(Since="2026-11-01")
    first, second = (json.loads(r["Record"]) for r in reversed(client.list_search_log_records(MaxResults=2)["Records"]))
    assert first["request_id"] == answer["ResponseMetadata"]["RequestId"]
    assert (first["operation"], first["key"]["name"], first["error"]) == (
        "ListSearchLogRecords", log_server.names["auditor"], None)
    assert first["parameters"] == {"KeyName": log_server.names["operator"], "Outcome": "denied", "MaxResults": 3}
    assert first["result"] == {"records": len(answer["Records"])}
    assert (second["operation"], second["parameters"]) == ("GetTransparencyReport", {"Since": "2026-11-01"})


# ----------------------------------------------------------------------------- the transparency report


def test_the_report_is_the_one_the_cli_writes_for_the_same_directory_and_dates(log_server, tmp_path):
    times = sorted(r["time"] for r in log_server.stored())
    for since, until in (("2026-01-01", None), (times[3], times[-2])):
        out = tmp_path / f"report-{len(since)}"
        args = ["transparency", "--data-dir", str(log_server.server.data_dir), "--since", since, "--out", str(out)]
        assert main(args + (["--until", until] if until else [])) == 0  # writes nothing to the log
        wire = log_server.faceaudit["auditor"].get_transparency_report(
            Since=since, **({"Until": until} if until else {}))["Report"]
        assert json.loads(wire) == json.loads((out / "transparency.json").read_text())
    assert json.loads(wire)["requests"]["total"] < len(log_server.stored())  # the period narrowed it


def test_the_report_names_its_log_by_id_key_and_head_never_by_the_servers_path(log_server, tmp_path):
    auditor = log_server.faceaudit["auditor"]
    wire = auditor.get_transparency_report(Since="2026-01-01")["Report"]
    source = json.loads(wire)["source"]
    checkpoint = json.loads(auditor.verify_search_log()["LatestCheckpoint"])
    assert source["public_key"] == checkpoint["public_key"]  # what a kept checkpoint is checked against
    assert source["log_id"] == checkpoint["statement"]["log_id"]
    assert len(source["verification"]["head_hash"]) == 64
    out = tmp_path / "report"
    assert main(["transparency", "--data-dir", str(log_server.server.data_dir), "--since", "2026-01-01",
                 "--out", str(out)]) == 0
    data_dir = log_server.server.data_dir.resolve()
    for text in (wire, *(path.read_text() for path in out.iterdir())):  # the JSON, the .md and the .html
        assert str(data_dir.parent) not in text  # (the folder pytest made for this server)
    written = json.loads((out / "transparency.json").read_text())["source"]  # the wire read is one record more
    for page in ("transparency.md", "transparency.html"):
        text = (out / page).read_text()
        assert written["public_key"] == source["public_key"] in text and written["verification"]["head_hash"] in text


# ----------------------------------------------------------------------------- verification


def test_an_honest_log_verifies_and_its_checkpoint_is_what_log_verify_reads(log_server, tmp_path):
    answer = log_server.faceaudit["auditor"].verify_search_log()
    head = log_server.stored()[-2]  # the last record before this call's own
    assert answer["Ok"] is True and answer["Problems"] == []
    assert answer["Records"] == head["seq"] and answer["Head"] == {"Seq": head["seq"], "Hash": head["hash"]}
    assert answer["PublicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    kept = tmp_path / "kept.json"
    kept.write_text(answer["LatestCheckpoint"])
    done = subprocess.run([*faceaudit_command(), "log", "verify", "--data-dir", str(log_server.server.data_dir),
                           "--checkpoint", str(kept)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "matches the kept checkpoint" in done.stderr
    again = log_server.faceaudit["auditor"].verify_search_log(Checkpoint=answer["LatestCheckpoint"])
    assert again["Ok"] is True and again["CheckpointsChecked"] >= answer["CheckpointsChecked"]


def test_an_edited_record_and_a_truncated_tail_are_found(tmp_path, log_server):
    with start_server(tmp_path / "data") as server:
        log = LogServer(server)
        script(log)
        auditor = log.faceaudit["auditor"]
        # (A NextToken of this log is no token for another one.)
        token = auditor.list_search_log_records(MaxResults=1)["NextToken"]
        code, _ = error_of(log_server.faceaudit["auditor"].list_search_log_records, MaxResults=1, NextToken=token)
        assert code == "InvalidPaginationTokenException"
        # A checkpoint of the head now (what the operator hands an overseer), then kept from the wire.
        subprocess.run([*faceaudit_command(), "log", "checkpoint", "--data-dir", str(server.data_dir),
                        "--out", str(tmp_path / "cp.json")], check=True, capture_output=True, timeout=120)
        kept = auditor.verify_search_log()["LatestCheckpoint"]
        covered = json.loads(kept)["statement"]["seq"]
        assert covered == len(log.stored()) - 1  # the newest checkpoint: the head before this call
        log.rekognition["operator"].list_collections()  # a few more records after the kept checkpoint
        auditor.list_search_log_records(MaxResults=1)

        # Truncate back to a few records before the checkpoint, checkpoints with them (as a
        # tamperer would): the log alone still verifies, the kept checkpoint shows the cut.
        cut = covered - 3
        with sqlite3.connect(log.db) as conn:
            conn.execute("DELETE FROM searchlog_records WHERE seq > ?", (cut,))
            conn.execute("DELETE FROM searchlog_checkpoints WHERE seq > ?", (cut,))
        answer = auditor.verify_search_log(Checkpoint=kept)
        assert answer["Ok"] is False
        assert [(p["Seq"], p["Kind"]) for p in answer["Problems"]] == [(cut + 1, "truncated")]
        assert answer["Head"]["Seq"] == cut
        assert auditor.verify_search_log()["Ok"] is True  # the log alone cannot tell

        # Edit one record in place: its hash no longer matches, and the problem names its seq.
        edited = 4
        with sqlite3.connect(log.db) as conn:
            (text,) = conn.execute("SELECT record FROM searchlog_records WHERE seq = ?", (edited,)).fetchone()
            record = json.loads(text)
            record["operation"] = "ListCollections" if record["operation"] != "ListCollections" else "ListFaces"
            conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = ?", (canonical(record), edited))
        answer = auditor.verify_search_log()
        assert answer["Ok"] is False
        assert [(p["Seq"], p["Kind"]) for p in answer["Problems"]] == [(edited, "edited")]
        assert f"record {edited}" in answer["Problems"][0]["Message"]
        report = json.loads(auditor.get_transparency_report(Since="2026-01-01")["Report"])
        assert report["source"]["verification"]["ok"] is False  # the report says so too


# ----------------------------------------------------------------------------- several processes


def test_a_record_written_by_another_process_is_read_at_once_and_tokens_work_on_both(log_server):
    with start_server(log_server.server.data_dir) as second:
        other = LogServer(second)  # keys of its own, in the same key store
        answer = other.rekognition["operator"].list_collections()
        newest = log_server.faceaudit["auditor"].list_search_log_records(MaxResults=2)
        assert json.loads(newest["Records"][0]["Record"])["request_id"] == answer["ResponseMetadata"]["RequestId"]
        first_page = other.faceaudit["auditor"].list_search_log_records(MaxResults=3)
        rest = log_server.faceaudit["auditor"].list_search_log_records(MaxResults=3,
                                                                        NextToken=first_page["NextToken"])
        assert rest["Records"][0]["Seq"] == first_page["Records"][-1]["Seq"] - 1
