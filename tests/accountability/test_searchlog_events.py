"""The guard's events reach the search log: `faceaudit moratorium set|lift` are records (the switch
itself is logged), and the transparency report shows the period they bound."""

from __future__ import annotations

import json

from faceaudit.accountability.searchlog import read_data_dir
from faceaudit.accountability.transparency import parse_since, transparency_report
from faceaudit.cli import main


def test_a_moratorium_set_and_lifted_on_the_command_line_is_logged_and_reported(tmp_path, capsys, server_database):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["moratorium", "set", "--policy", "public-safety", "--reason", "council vote",
                 "--data-dir", str(data_dir)]) == 0
    moratorium_id = json.loads(capsys.readouterr().out)["Moratorium"]["Id"]
    assert main(["moratorium", "lift", str(moratorium_id), "--data-dir", str(data_dir)]) == 0
    contents = read_data_dir(data_dir, server_database)
    assert contents.verify().ok
    events = [r for r in contents.records() if r["kind"] == "moratorium"]
    assert [e["details"]["action"] for e in events] == ["set", "lift"]
    assert events[0]["details"]["reason"] == "council vote" and events[0]["policy"] == "public-safety"
    (period,) = transparency_report(contents, parse_since("2020-01-01"))["moratoriums"]
    assert (period["scope"], period["target"], period["reason"]) == ("policy", "public-safety", "council vote")
    assert period["by"] == events[0]["details"]["by"]  # the local user who ran the command
    assert period["set"] == events[0]["time"] and period["lifted"] == events[1]["time"]
    if server_database:  # the moratorium and its records are in the database, not in the data directory
        assert sorted(p.name for p in data_dir.iterdir()) == ["searchlog-signing.key"]
