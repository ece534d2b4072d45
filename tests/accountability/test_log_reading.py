"""faceaudit.accountability.log_reading on a real SearchLog in a temporary directory (no server, no models):
the filters, the pages and their tokens, and records stored in forms other than faceaudit's own.

The wire behaviour (roles, boto3, several processes) is tests/server/test_search_log_reading.py's.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from faceaudit.accountability.log_reading import MAX_RESULTS, LogReader, RecordFilter
from faceaudit.accountability.searchlog import DB_FILENAME, SearchLog
from faceaudit.errors import InvalidPaginationTokenException, InvalidParameterException


def key(name: str, role: str = "operator") -> dict:
    return {"name": name, "access_key_id": f"AK{name.upper()}", "role": role, "unit": None}


def request(time: str, name: str, operation: str, collection: str | None = None, error: str | None = None) -> dict:
    return {"kind": "request", "time": time, "key": key(name), "operation": operation, "collection": collection,
            "status": 400 if error else 200, "error": error}


@pytest.fixture
def log(tmp_path):
    with_log = SearchLog(tmp_path)
    for i in range(30):
        name = ("ana", "bo", "zoë")[i % 3]
        with_log.append(request(f"2026-12-01T10:{i:02d}:00.000Z", name, ("SearchFaces", "ListFaces")[i % 2],
                                collection=("north", "south")[i % 4 // 2], error="AccessDeniedException"
                                if i % 5 == 0 else None))
    with_log.append({"kind": "moratorium", "time": "2026-12-01T11:00:00.000Z", "details": {"action": "set"}})
    yield with_log
    with_log.close()


def seqs(answer: dict) -> list[int]:
    return [r["Seq"] for r in answer["Records"]]


def stored(log: SearchLog) -> list[dict]:
    return [json.loads(text) for text in log.snapshot()[0]]


def test_filters_combine_and_times_are_half_open(log):
    reader = LogReader(log)
    records = stored(log)
    answer = reader.list_records({"KeyName": "bo", "Operation": "ListFaces", "Outcome": "allowed",
                                  "Since": "2026-12-01T10:05:00Z", "Until": "2026-12-01T10:25:00Z",
                                  "MaxResults": MAX_RESULTS})
    expected = [r["seq"] for r in reversed(records) if r["key"] and r["key"]["name"] == "bo"
                and r["operation"] == "ListFaces" and r["error"] is None
                and "2026-12-01T10:05:00.000Z" <= r["time"] < "2026-12-01T10:25:00.000Z"]
    assert seqs(answer) == expected and expected
    # Until is exclusive, Since inclusive: the record at 10:10 is in [10:10, 10:11) and not in [10:09, 10:10)
    assert seqs(reader.list_records({"Since": "2026-12-01T10:10:00Z", "Until": "2026-12-01T10:11:00Z"})) == [11]
    assert seqs(reader.list_records({"Since": "2026-12-01T10:09:00Z", "Until": "2026-12-01T10:10:00Z"})) == [10]
    assert seqs(reader.list_records({"Kind": "moratorium"})) == [31]
    # a name no JSON encoder keeps as it is (non-ASCII) is matched by parsing, not by substring
    assert len(seqs(reader.list_records({"KeyName": "zoë"}))) == 10
    # a time with an offset is converted to UTC
    assert seqs(reader.list_records({"Since": "2026-12-01T12:10:00+02:00", "Until": "2026-12-01T10:11:00Z"})) == [11]


def test_pages_stay_on_the_listing_while_the_log_grows(log):
    reader = LogReader(log)
    first = reader.list_records({"CollectionId": "north", "MaxResults": 4})
    expected = [r["seq"] for r in reversed(stored(log)) if r["collection"] == "north"]
    walked, token = seqs(first), first["NextToken"]
    log.append(request("2026-12-01T12:00:00.000Z", "ana", "SearchFaces", collection="north"))  # newer: not in this walk
    while token:
        page = reader.list_records({"CollectionId": "north", "MaxResults": 4, "NextToken": token})
        assert len(page["Records"]) <= 4
        walked += seqs(page)
        token = page.get("NextToken")
    assert walked == expected
    # an exact fit leaves no token: the last page is not followed by an empty one
    assert "NextToken" not in reader.list_records({"Kind": "moratorium", "MaxResults": 1})


def _flipped(token: str) -> str:
    """The token with one character in its middle changed: a middle base64 character carries six
    bits of the token, while the last one may carry only padding bits that decode to the same bytes."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


def test_tokens_are_bound_to_their_log_and_filters(log, tmp_path):
    reader = LogReader(log)
    token = reader.list_records({"KeyName": "ana", "MaxResults": 2})["NextToken"]
    assert LogReader(log).list_records({"KeyName": "ana", "MaxResults": 2, "NextToken": token})["Records"]
    for bad in ({"KeyName": "bo", "NextToken": token}, {"NextToken": token},
                {"KeyName": "ana", "NextToken": _flipped(token)}):
        with pytest.raises(InvalidPaginationTokenException):
            reader.list_records(bad)
    other = SearchLog(tmp_path / "elsewhere")  # another log: another secret, another log id
    try:
        for i in range(3):
            other.append(request(f"2026-12-01T10:0{i}:00.000Z", "ana", "ListFaces"))
        foreign = LogReader(other).list_records({"KeyName": "ana", "MaxResults": 1})["NextToken"]
    finally:
        other.close()
    with pytest.raises(InvalidPaginationTokenException):
        reader.list_records({"KeyName": "ana", "MaxResults": 1, "NextToken": foreign})


def test_bad_parameters_say_what_is_wrong(log):
    reader = LogReader(log)
    for bad, words in (({"MaxResults": 0}, "between 1 and 1000"), ({"MaxResults": 1001}, "between 1 and 1000"),
                       ({"Since": "soon"}, "Since 'soon' is not an ISO-8601"),
                       ({"Since": "2026-12-02", "Until": "2026-12-01"}, "must be later than Since"),
                       ({"Kind": "gossip"}, "Kind must be one of"), ({"Outcome": "maybe"}, "allowed or denied")):
        with pytest.raises(InvalidParameterException, match=words):
            reader.list_records(bad)
    with pytest.raises(InvalidParameterException, match="Since is required"):
        reader.transparency({})
    with pytest.raises(InvalidParameterException, match="not a faceaudit search log checkpoint"):
        reader.verify({"Checkpoint": json.dumps({"format": "something else"})})


def test_rows_stored_in_other_forms_are_still_listed(log, tmp_path):
    """A row re-serialized with spaces (another writer) still matches its filters; one that is not JSON at
    all is shown as it is when nothing is filtered, and verification names it."""
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        (text,) = conn.execute("SELECT record FROM searchlog_records WHERE seq = 2").fetchone()
        conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = 2",
                     (json.dumps(json.loads(text), indent=1),))
        (text,) = conn.execute("SELECT record FROM searchlog_records WHERE seq = 3").fetchone()  # zoë's, as \u00eb
        conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = 3",
                     (json.dumps(json.loads(text), ensure_ascii=True),))
        conn.execute("UPDATE searchlog_records SET record = 'garbage' WHERE seq = 5")
    reader = LogReader(log)
    assert 2 in seqs(reader.list_records({"KeyName": "bo", "Operation": "ListFaces"}))
    assert 3 in seqs(reader.list_records({"KeyName": "zoë"}))
    everything = reader.list_records({"MaxResults": MAX_RESULTS})["Records"]
    assert {"Record": "garbage"} in everything and len(everything) == 31
    answer = reader.verify({})
    # the chain hashes contents, not spacing: record 2 still verifies, record 5 does not
    assert answer["Ok"] is False and answer["Problems"][0]["Seq"] == 5


def test_verification_hashing_the_stored_text_is_not_fooled_by_a_planted_hash(log, tmp_path):
    """Verification hashes a record's stored text minus its hash member before re-encoding it; an edit that
    plants the record's own hash inside it (where that shortcut looks first) is still an edit."""
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        (text,) = conn.execute("SELECT record FROM searchlog_records WHERE seq = 7").fetchone()
        record = json.loads(text)
        record["details"] = {"a": 1, "hash": record["hash"]}  # ',"hash":"<its hash>"' now comes first
        conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = 7",
                     (json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False),))
    answer = LogReader(log).verify({})
    assert answer["Ok"] is False
    assert [(p["Seq"], p["Kind"]) for p in answer["Problems"]] == [(7, "edited")]


@pytest.mark.parametrize("max_results", [1, 3, 7, 1000])
def test_every_walk_through_the_pages_is_the_filter_applied_to_the_whole_log(tmp_path, database, raw_sql,
                                                                              max_results):
    """On both databases, the pages (read by seq, plain filters tested by the database) hold exactly what
    filtering every stored record newest first gives, in order, in a log with a record deleted (a gap in
    the seqs) and a row that is not JSON; the next page starts where its token says even as the log grows."""
    log = SearchLog(tmp_path, database=database)
    try:
        for i in range(40):
            log.append(request(f"2026-12-01T10:{i:02d}:00.000Z", ("ana", "bo", "zoë")[i % 3],
                               ("SearchFaces", "ListFaces")[i % 2], collection=("north", "south")[i % 4 // 2],
                               error="AccessDeniedException" if i % 5 == 0 else None))
        raw_sql(tmp_path, DB_FILENAME, "DELETE FROM searchlog_records WHERE seq = 17")
        raw_sql(tmp_path, DB_FILENAME, "UPDATE searchlog_records SET record = 'garbage' WHERE seq = 23")
        assert len(log.snapshot()[0]) == 39
        reader = LogReader(log)
        for filters in ({}, {"KeyName": "bo"}, {"KeyName": "zoë"}, {"CollectionId": "north", "Outcome": "denied"},
                        {"Operation": "ListFaces", "Since": "2026-12-01T10:10:00Z", "Until": "2026-12-01T10:30:00Z"},
                        {"KeyName": "nobody"}):
            wanted, texts = RecordFilter.from_request(filters), log.snapshot()[0]  # the log as the walk starts
            expected = [text for text in reversed(texts)
                        if (wanted.unfiltered and text == "garbage")
                        or (text != "garbage" and wanted.matches(json.loads(text)))]
            walked: list[str] = []
            answer = reader.list_records({**filters, "MaxResults": max_results})
            while True:
                assert len(answer["Records"]) <= max_results
                walked += [r["Record"] for r in answer["Records"]]
                if "NextToken" not in answer:
                    break
                log.append(request("2026-12-01T12:00:00.000Z", "bo", "ListFaces", collection="north"))  # above
                answer = reader.list_records({**filters, "MaxResults": max_results, "NextToken": answer["NextToken"]})
            assert walked == expected, filters
    finally:
        log.close()
