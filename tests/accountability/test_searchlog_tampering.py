"""The search log on disk, tampered with the way someone holding the data directory could:
`faceaudit log verify` names the first record that is not as written, every time.

No face models: records are appended straight to a SearchLog, and the tampering is done with
sqlite3 on DATA_DIR/searchlog.db, or psycopg on the PostgreSQL tables (the ``database`` fixture
runs every test on both), or on an export's lines.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from faceaudit.accountability.searchlog import (
    DB_FILENAME,
    KEY_FILENAME,
    SearchLog,
    SearchLogError,
    canonical,
    record_hash,
)
from faceaudit.cli import main
from support.server import faceaudit_command

RECORDS = 30


@pytest.fixture
def written(tmp_path, server_database) -> tuple[Path, Path]:
    """A data dir with 30 records (checkpoints every 5) and the checkpoint an overseer kept at the end."""
    root = tmp_path / "written"
    data_dir = root / "data"
    log = SearchLog(data_dir, checkpoint_every=5, database=server_database)
    for i in range(RECORDS):
        log.append({"kind": "request", "request_id": f"req-{i + 1}", "operation": "SearchFaces",
                    "collection": "c", "parameters": {"FaceMatchThreshold": 80.0 + i % 3}, "status": 200,
                    "result": {"matches": i % 4}, "matches": [{"FaceId": f"f{i}", "Similarity": 99.5}]})
    kept = root / "kept-checkpoint.json"
    assert main(["log", "checkpoint", "--data-dir", str(data_dir), "--out", str(kept)]) == 0
    log.close()
    return data_dir, kept


@pytest.fixture
def copy(written) -> Path:
    """The written log, to tamper with (each test writes its own)."""
    return written[0]


@pytest.fixture
def _db(connect_raw):
    return lambda data_dir: connect_raw(data_dir, DB_FILENAME)


def _verify(data_dir: Path, capsys, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["log", "verify", "--data-dir", str(data_dir), *extra])
    return code, json.loads(capsys.readouterr().out)


def _record(conn, seq: int) -> dict:
    return json.loads(conn.execute("SELECT record FROM searchlog_records WHERE seq = ?", (seq,)).fetchone()[0])


def _store(conn, seq: int, record: dict) -> None:
    conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = ?", (canonical(record), seq))


def test_an_untouched_log_verifies_with_and_without_the_kept_checkpoint(written, capsys):
    data_dir, kept = written
    code, result = _verify(data_dir, capsys)
    assert code == 0 and result["ok"] and result["records"] == result["head_seq"] == RECORDS
    assert result["checkpoints_checked"] >= RECORDS // 5
    code, result = _verify(data_dir, capsys, "--checkpoint", str(kept))
    assert code == 0 and result["ok"]


def test_an_edited_record_is_named(_db, copy, capsys):
    with _db(copy) as conn:
        record = _record(conn, 12)
        record["matches"] = []  # hide whom the search matched
        _store(conn, 12, record)
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 12 and result["problem"]["what"] == "edited"


def test_an_edited_record_with_its_hash_recomputed_is_named(_db, copy, capsys):
    with _db(copy) as conn:
        record = _record(conn, 12)
        record["purpose"] = "an approved purpose"
        record["hash"] = record_hash(record)
        _store(conn, 12, record)
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 12 and result["problem"]["what"] == "edited"


def test_a_deleted_record_is_named(_db, copy, capsys):
    with _db(copy) as conn:
        conn.execute("DELETE FROM searchlog_records WHERE seq = 12")
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 12 and result["problem"]["what"] == "deleted"


def test_an_inserted_record_is_named(_db, copy, capsys):
    with _db(copy) as conn:
        # Make room at 12 and put a well-formed record there, chained to record 11.
        conn.execute("UPDATE searchlog_records SET seq = seq + 1000 WHERE seq >= 12")
        conn.execute("UPDATE searchlog_records SET seq = seq - 999 WHERE seq >= 1000")
        fake = {**_record(conn, 11), "request_id": "never-made", "seq": 12}
        fake["prev"] = _record(conn, 11)["hash"]
        fake["hash"] = record_hash(fake)
        conn.execute("INSERT INTO searchlog_records (seq, hash, record) VALUES (12, ?, ?)",
                     (fake["hash"], canonical(fake)))
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 12 and result["problem"]["what"] == "inserted"
    assert result["problem"]["position"] == 12


def test_reordered_records_are_named(_db, copy, capsys):
    with _db(copy) as conn:
        a, b = (conn.execute("SELECT record FROM searchlog_records WHERE seq = ?", (s,)).fetchone()[0]
                for s in (12, 13))
        conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = 12", (b,))
        conn.execute("UPDATE searchlog_records SET record = ? WHERE seq = 13", (a,))
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 12 and result["problem"]["what"] == "reordered"


def test_a_truncated_tail_is_found_only_against_a_kept_checkpoint(_db, written, copy, capsys):
    with _db(copy) as conn:  # the tail and the log's own checkpoints of it, gone
        conn.execute("DELETE FROM searchlog_records WHERE seq > 20")
        conn.execute("DELETE FROM searchlog_checkpoints WHERE seq > 20")
    code, result = _verify(copy, capsys)
    assert code == 0 and result["head_seq"] == 20  # a chain alone cannot tell: that is what the kept one is for
    code, result = _verify(copy, capsys, "--checkpoint", str(written[1]))
    assert code == 1
    assert result["problem"]["seq"] == 21 and result["problem"]["what"] == "truncated"


def test_a_truncated_tail_is_found_by_the_logs_own_checkpoints_when_they_remain(_db, copy, capsys):
    with _db(copy) as conn:
        conn.execute("DELETE FROM searchlog_records WHERE seq > 22")
    code, result = _verify(copy, capsys)
    assert code == 1
    assert result["problem"]["seq"] == 23 and result["problem"]["what"] == "truncated"


def test_a_rewritten_tail_is_found_against_a_kept_checkpoint(_db, written, copy, capsys, server_database):
    with _db(copy) as conn:
        conn.execute("DELETE FROM searchlog_records WHERE seq > 20")
        conn.execute("DELETE FROM searchlog_checkpoints WHERE seq > 20")
        vouched = conn.execute("SELECT MAX(seq) FROM searchlog_checkpoints").fetchone()[0]
    # a new, self-consistent tail, signed with the log's own key
    log = SearchLog(copy, checkpoint_every=5, database=server_database)
    for i in range(RECORDS - 20):
        log.append({"kind": "request", "request_id": f"rewritten-{i}", "operation": "ListCollections",
                    "status": 200})
    log.close()
    code, result = _verify(copy, capsys)
    assert code == 0  # consistent in itself
    code, result = _verify(copy, capsys, "--checkpoint", str(written[1]))
    assert code == 1
    # Somewhere after the last checkpoint signed before the kept one (the rewrite began at 21).
    assert result["problem"]["seq"] == vouched + 1 <= 21 and result["problem"]["what"] == "rewritten"


def test_a_log_that_does_not_list_the_kept_checkpoints_key_is_reported(_db, written, copy, capsys):
    (copy / KEY_FILENAME).unlink()
    with _db(copy) as conn:  # the log's key, gone from the log too: a log replaced by another
        conn.execute("DELETE FROM searchlog_keys")
    code, result = _verify(copy, capsys, "--checkpoint", str(written[1]))
    assert code == 1 and result["problem"]["what"] in ("key", "signature")


def test_a_second_signing_key_verifies_and_a_checkpoint_naming_no_listed_key_does_not(
        _db, written, copy, capsys, server_database):
    if server_database:  # another host: a data directory and a key of its own, the same log
        second_dir = copy.parent / "other-host"
    else:  # one data directory whose key was replaced: the old key stays listed in the log
        (copy / KEY_FILENAME).unlink()
        second_dir = copy
    log = SearchLog(second_dir, checkpoint_every=1, database=server_database)
    log.append({"kind": "request", "request_id": "from-the-second-key"})
    second = log.key_id
    log.close()
    code, result = _verify(copy, capsys, "--checkpoint", str(written[1]))
    assert code == 0 and result["ok"], result  # checkpoints of both keys check, and the kept one still matches
    with _db(copy) as conn:  # the second key, listed nowhere any more
        conn.execute("DELETE FROM searchlog_keys WHERE key_id = ?", (second,))
    (second_dir / KEY_FILENAME).unlink()
    code, result = _verify(copy, capsys)
    assert code == 1 and result["problem"]["what"] == "signature" and result["problem"]["seq"] == RECORDS + 1


def test_an_export_verifies_offline_and_names_an_edited_line(written, tmp_path, capsys):
    data_dir, kept = written
    export = tmp_path / "log.jsonl"
    assert main(["log", "export", "--data-dir", str(data_dir), "--out", str(export)]) == 0
    capsys.readouterr()
    assert main(["log", "verify", "--export", str(export), "--checkpoint", str(kept)]) == 0
    lines = export.read_text(encoding="utf-8").split("\n")
    lines[7] = lines[7].replace('"status":200', '"status":404')  # line 0 is the header: record 7
    export.write_text("\n".join(lines), encoding="utf-8")
    capsys.readouterr()
    assert main(["log", "verify", "--export", str(export)]) == 1
    problem = json.loads(capsys.readouterr().out)["problem"]
    assert problem["seq"] == 7 and problem["what"] == "edited"


def test_the_signing_key_is_private_to_the_owner(written):
    assert stat.S_IMODE((written[0] / KEY_FILENAME).stat().st_mode) == 0o600


def test_the_command_exit_codes(_db, written, copy, tmp_path):
    def run(*args):
        return subprocess.run([*faceaudit_command(), "log", *args], capture_output=True, text=True, timeout=60)

    ok = run("verify", "--data-dir", str(written[0]), "--checkpoint", str(written[1]))
    assert ok.returncode == 0, ok.stderr
    assert "verified 30 records" in ok.stderr
    with _db(copy) as conn:
        conn.execute("DELETE FROM searchlog_records WHERE seq = 3")
    bad = run("verify", "--data-dir", str(copy))
    assert bad.returncode == 1 and "record 3 deleted" in bad.stderr
    missing = run("verify", "--data-dir", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and "no search log" in missing.stderr


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_log_of_the_layout_before_the_migration_runner_is_upgraded_and_still_verifies(written, _db, capsys):
    data_dir, kept = written
    with _db(data_dir) as conn:  # back to how searchlog.db looked when it bootstrapped its own tables
        log_id = conn.execute("SELECT value FROM searchlog_meta WHERE name = 'log_id'").fetchone()[0]
        for table in ("meta", "records", "checkpoints"):
            conn.execute(f"ALTER TABLE searchlog_{table} RENAME TO {table}")
        conn.execute("DROP TABLE searchlog_keys")
        conn.execute("DROP TABLE schema_version")
        conn.execute("INSERT INTO meta (name, value) VALUES ('schema_version', '1')")
    code, result = _verify(data_dir, capsys, "--checkpoint", str(kept))
    assert code == 0 and result["records"] == RECORDS and result["log_id"] == log_id
    log = SearchLog(data_dir)
    assert log.log_id == log_id and log.append({"kind": "request"})["seq"] == RECORDS + 1
    log.close()


def test_a_log_newer_than_the_code_is_refused(written, _db, server_database):
    table = "searchlog_schema_version" if server_database else "schema_version"
    with _db(written[0]) as conn:
        conn.execute(f"UPDATE {table} SET version = 99")
    with pytest.raises(SearchLogError, match="schema version 99"):
        SearchLog(written[0], database=server_database)
