"""Merkle proofs of the search log through `faceaudit log prove` / `check-proof`: one record shown to be
in a kept checkpoint's log, and a later log shown to extend an earlier one, without the log itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceaudit.accountability.merkle import consistency_proof, leaf_hash
from faceaudit.accountability.searchlog import DB_FILENAME, SearchLog, read_data_dir
from faceaudit.cli import main


def _append(log: SearchLog, count: int, tag: str) -> None:
    for i in range(count):
        log.append({"kind": "request", "request_id": f"{tag}-{i}", "operation": "SearchFaces", "status": 200,
                    "matches": [{"FaceId": f"face-{tag}-{i}", "Similarity": 99.1}]})


@pytest.fixture
def kept(tmp_path, server_database) -> tuple[Path, Path, Path]:
    """A log with a checkpoint kept after 11 records and another after 37 (on both databases)."""
    data_dir = tmp_path / "data"
    log = SearchLog(data_dir, checkpoint_every=8, database=server_database)
    _append(log, 11, "a")
    log.close()
    early, late = tmp_path / "early.json", tmp_path / "late.json"
    assert main(["log", "checkpoint", "--data-dir", str(data_dir), "--out", str(early)]) == 0
    log = SearchLog(data_dir, checkpoint_every=8, database=server_database)
    _append(log, 26, "b")
    log.close()
    assert main(["log", "checkpoint", "--data-dir", str(data_dir), "--out", str(late)]) == 0
    return data_dir, early, late


def test_a_record_is_proven_in_the_kept_checkpoints_log_and_an_edited_one_is_not(kept, tmp_path, capsys):
    data_dir, _, late = kept
    proof = tmp_path / "proof.json"
    assert main(["log", "prove", "--data-dir", str(data_dir), "--checkpoint", str(late), "--seq", "17",
                 "--out", str(proof)]) == 0
    shown = json.loads(proof.read_text())
    assert shown["record"]["request_id"] == "b-5" and len(shown["proof"]) <= 6  # log2(37) hashes, not the log
    assert main(["log", "check-proof", str(proof), "--checkpoint", str(late)]) == 0
    shown["record"]["matches"] = []  # someone hides a candidate
    proof.write_text(json.dumps(shown))
    capsys.readouterr()
    assert main(["log", "check-proof", str(proof), "--checkpoint", str(late)]) == 1
    assert "edited" in capsys.readouterr().err


def test_a_later_log_is_proven_to_extend_an_earlier_one(kept, tmp_path, capsys):
    data_dir, early, late = kept
    export = tmp_path / "log.jsonl"
    assert main(["log", "export", "--data-dir", str(data_dir), "--out", str(export)]) == 0
    proof = tmp_path / "consistency.json"
    assert main(["log", "prove", "--export", str(export), "--checkpoint", str(late), "--from-checkpoint", str(early),
                 "--out", str(proof)]) == 0
    assert main(["log", "check-proof", str(proof), "--checkpoint", str(late), "--from-checkpoint", str(early)]) == 0


def test_a_rewritten_log_cannot_prove_it_extends_the_earlier_checkpoint(kept, tmp_path, capsys, connect_raw,
                                                                       server_database):
    data_dir, early, _ = kept
    with connect_raw(data_dir, DB_FILENAME) as conn:  # records 5 on replaced, with fresh hashes
        conn.execute("DELETE FROM searchlog_records WHERE seq >= 5")
        conn.execute("DELETE FROM searchlog_checkpoints WHERE seq >= 5")
    log = SearchLog(data_dir, checkpoint_every=8, database=server_database)
    _append(log, 32, "forged")
    log.close()
    forged = tmp_path / "forged.json"
    assert main(["log", "checkpoint", "--data-dir", str(data_dir), "--out", str(forged)]) == 0
    capsys.readouterr()
    refused = main(["log", "prove", "--data-dir", str(data_dir), "--checkpoint", str(forged), "--from-checkpoint",
                    str(early), "--out", str(tmp_path / "x.json")])
    assert refused == 2 and "does not verify" in capsys.readouterr().err
    # A proof made anyway, from the rewritten records, is refused by whoever checks it.
    contents = read_data_dir(data_dir, server_database)
    leaves = [leaf_hash(r["hash"]) for r in contents.records()]
    forged_checkpoint = json.loads(forged.read_text())
    size = forged_checkpoint["statement"]["seq"]
    proof = tmp_path / "forged-proof.json"
    proof.write_text(json.dumps({
        "format": "faceaudit-searchlog-consistency-proof", "from_size": 11, "to_size": size,
        "proof": [node.hex() for node in consistency_proof(leaves[:size], 11)]}))
    assert main(["log", "check-proof", str(proof), "--checkpoint", str(forged), "--from-checkpoint", str(early)]) == 1
    assert "were changed, dropped or reordered" in capsys.readouterr().err


def test_the_checkpoints_tree_roots_are_checked_by_verify(kept, capsys, connect_raw, server_database):
    data_dir = kept[0]
    with connect_raw(data_dir, DB_FILENAME) as conn:  # a stored frontier corrupted: the next root is wrong
        conn.execute("UPDATE searchlog_checkpoints SET frontier = '[]' "
                     "WHERE seq = (SELECT MAX(seq) FROM searchlog_checkpoints)")
    log = SearchLog(data_dir, checkpoint_every=1, database=server_database)
    _append(log, 1, "c")
    log.close()
    capsys.readouterr()
    assert main(["log", "verify", "--data-dir", str(data_dir)]) == 1
    assert json.loads(capsys.readouterr().out)["problem"]["what"] == "rewritten"
