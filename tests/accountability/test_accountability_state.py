"""accountability.db: tags, moratoria and search counts, on a real SQLite file or a real PostgreSQL
(the ``database`` fixture, tests/accountability/conftest.py; no server, no models).

Also the changes that must be logged (moratorium switches, policy changes): with a recorder
that fails, the change is undone.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta

import pytest

from faceaudit.accountability.guard import lift_moratorium, set_collection_policy, set_moratorium
from faceaudit.accountability.policies import POLICY_TAG
from faceaudit.accountability.state import DB_FILENAME, AccountabilityState, StateError
from faceaudit.errors import InvalidParameterException

T0 = datetime(2026, 12, 1, 23, 59, 0, tzinfo=UTC)


@pytest.fixture
def state(tmp_path, database):
    with AccountabilityState(tmp_path / "data", database=database) as opened:
        yield opened


class ListRecorder:
    """The Recorder protocol over a list (the search log implements it for real)."""

    def __init__(self, fail: bool = False):
        self.records: list[dict] = []
        self.fail = fail

    def append(self, record):
        if self.fail:
            raise OSError("disk full")
        self.records.append(dict(record))
        return {**record, "seq": len(self.records)}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_the_file_is_0600_wal_and_synchronous_full(state):
    path = state.data_dir / DB_FILENAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state.data_dir).st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_tags_set_replace_remove_and_a_second_opener_sees_them(state, tmp_path, database):
    assert state.set_tags("c", {POLICY_TAG: "personal", "team": "a"}) == {}
    assert state.set_tags("c", {"team": "b"}) == {POLICY_TAG: "personal", "team": "a"}
    other = AccountabilityState(tmp_path / "elsewhere" if database else tmp_path / "data", database=database)
    assert other.tags("c") == {POLICY_TAG: "personal", "team": "b"}
    assert other.tag("c", POLICY_TAG) == "personal" and other.tagged(POLICY_TAG) == {"c": "personal"}
    state.remove_tags("c", [POLICY_TAG, "absent"])
    assert other.tags("c") == {"team": "b"}
    state.set_tags("c", {"x": "1"}, replace=True)
    assert other.tags("c") == {"x": "1"}
    with pytest.raises(StateError, match="at most 2 tags"):
        state.set_tags("c", {"y": "2", "z": "3"}, limit=2)
    assert state.tags("c") == {"x": "1"}  # refused whole
    other.close()


def test_restore_only_undoes_its_own_change(state):
    before = state.set_tags("c", {POLICY_TAG: "public-safety"}, replace=True)
    assert state.restore_tags("c", before, if_current={POLICY_TAG: "personal"}) is False
    assert state.tags("c") == {POLICY_TAG: "public-safety"}
    assert state.restore_tags("c", before, if_current={POLICY_TAG: "public-safety"}) is True
    assert state.tags("c") == {}


def test_forgetting_a_collection_keeps_tags_written_after_the_delete_began(state):
    state.set_tags("c", {POLICY_TAG: "personal"})
    mark = state.tags_version("c")
    state.set_tags("c", {POLICY_TAG: "public-safety"}, replace=True)  # a new collection c, created meanwhile
    state.forget_collection("c", up_to_version=mark)
    assert state.tags("c") == {POLICY_TAG: "public-safety"}
    state.forget_collection("c")
    assert state.tags("c") == {} and state.tags_version("c") == 0


def test_moratoria_set_found_lifted_and_not_lifted_twice(state):
    m = state.set_moratorium("policy", "public-safety", "  audit pending ", "ana", at=T0)
    assert (m.id, m.active, m.reason, m.set_at) == (1, True, "audit pending", T0)
    k = state.set_moratorium("key", "bob", "leaked", "ana", at=T0)
    assert [x.id for x in state.moratoria_on(policy="public-safety", collection="c", key="bob")] == [m.id, k.id]
    assert state.moratoria_on(policy="personal", collection="c", key="carol") == []
    assert state.moratoria_on(policy=None, collection=None, key=None) == []
    lifted = state.lift_moratorium(m.id, "root", at=T0 + timedelta(hours=1))
    assert lifted.lifted_at == T0 + timedelta(hours=1) and lifted.lifted_by == "root"
    assert [x.id for x in state.moratoria_on(policy="public-safety", collection="c", key="x")] == []
    with pytest.raises(StateError, match="already lifted"):
        state.lift_moratorium(m.id, "root")
    with pytest.raises(StateError, match="no moratorium has id 99"):
        state.lift_moratorium(99, "root")
    assert [x.id for x in state.moratoria(active_only=True)] == [k.id]
    assert [x.id for x in state.moratoria()] == [m.id, k.id]


@pytest.mark.parametrize("scope, target, reason", [("galaxy", "x", "r"), ("key", "", "r"), ("key", "bob", " ")])
def test_a_moratorium_needs_a_known_scope_a_target_and_a_reason(state, scope, target, reason):
    with pytest.raises(StateError):
        state.set_moratorium(scope, target, reason, "ana")
    assert state.moratoria() == []


def test_the_daily_budget_is_per_key_and_policy_and_renews_at_midnight_utc(state):
    limits = {"daily_limit": 3, "window_s": 60, "window_limit": None}
    answers = [state.admit_search("ana", "public-safety", T0 + timedelta(seconds=i), **limits) for i in range(4)]
    assert [a.admitted for a in answers] == [True, True, True, False]
    assert answers[2].today == 3 and answers[3].refused_by == "budget"
    assert state.admit_search("bob", "public-safety", T0, **limits).admitted  # another key
    assert state.admit_search("ana", "other", T0, **limits).admitted  # another policy
    tomorrow = T0 + timedelta(minutes=2)  # 00:01 UTC the next day
    assert state.admit_search("ana", "public-safety", tomorrow, **limits).today == 1


def test_the_real_time_window_refuses_the_seventh_search_in_a_minute_and_says_when_to_retry(state):
    limits = {"daily_limit": None, "window_s": 60, "window_limit": 6}
    for i in range(6):
        assert state.admit_search("ana", "ps", T0 + timedelta(seconds=i), **limits).admitted
    refused = state.admit_search("ana", "ps", T0 + timedelta(seconds=10), **limits)
    assert (refused.admitted, refused.refused_by, refused.in_window) == (False, "realtime", 6)
    assert refused.retry_after_s == pytest.approx(50.0)
    # refused searches are not counted: once the first leaves the window, one more is admitted
    assert state.admit_search("ana", "ps", T0 + timedelta(seconds=60.5), **limits).admitted
    assert not state.admit_search("ana", "ps", T0 + timedelta(seconds=60.6), **limits).admitted


def _spend(data_dir: str, database: str | None, n: int, queue) -> None:
    with AccountabilityState(data_dir, database=database) as state:
        admitted = sum(state.admit_search("ana", "ps", datetime.now(UTC), daily_limit=40, window_s=60,
                                          window_limit=None).admitted for _ in range(n))
    queue.put(admitted)


def test_two_processes_cannot_overspend_one_budget(tmp_path, database):
    AccountabilityState(tmp_path / "data", database=database).close()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    # PostgreSQL: two data directories (two hosts), one database
    workers = [context.Process(target=_spend, args=(str(tmp_path / (f"host{i}" if database else "data")),
                                                    database, 30, queue)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert sorted(w.exitcode for w in workers) == [0, 0]
    assert queue.get(timeout=5) + queue.get(timeout=5) == 40  # 60 asked for, budget 40: exactly 40


def test_a_moratorium_switch_is_recorded_and_undone_when_it_cannot_be(state):
    recorder = ListRecorder()
    m = set_moratorium(state, "collection", "c", "court order", "ana", recorder=recorder)
    (record,) = recorder.records
    assert record["kind"] == "moratorium" and record["collection"] == "c" and record["key"] is None
    assert record["details"] == {"action": "set", "scope": "collection", "target": "c", "reason": "court order",
                                 "id": m.id, "by": "ana"}
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-12-01T23:15:01.123Z")
    with pytest.raises(OSError):
        lift_moratorium(state, m.id, "bob", recorder=ListRecorder(fail=True))
    assert state.moratoria(active_only=True)[0].id == m.id  # the lift could not be logged: still in force
    with pytest.raises(OSError):
        set_moratorium(state, "key", "eve", "r", "ana", recorder=ListRecorder(fail=True))
    assert [x.target for x in state.moratoria()] == ["c"]  # the unlogged set is gone
    lift_moratorium(state, m.id, "bob", recorder=recorder)
    assert recorder.records[-1]["details"]["action"] == "lift" and recorder.records[-1]["details"]["by"] == "bob"
    with pytest.raises(InvalidParameterException):
        set_moratorium(state, "policy", "no-such-policy", "r", "ana")


def test_a_policy_change_is_recorded_and_undone_when_it_cannot_be(state):
    recorder = ListRecorder()
    assert set_collection_policy(state, "c", "personal", "ana", recorder=recorder) is None
    assert set_collection_policy(state, "c", "public-safety", "ana", recorder=recorder) == "personal"
    assert [r["details"]["previous"] for r in recorder.records] == [None, "personal"]
    assert recorder.records[-1]["policy"] == "public-safety" and recorder.records[-1]["kind"] == "policy"
    with pytest.raises(OSError):
        set_collection_policy(state, "c", None, "mallory", recorder=ListRecorder(fail=True))
    assert state.tag("c", POLICY_TAG) == "public-safety"  # the removal could not be logged: kept
    set_collection_policy(state, "c", "public-safety", "ana", recorder=recorder)
    assert len(recorder.records) == 2  # no change, no record
    with pytest.raises(InvalidParameterException):
        set_collection_policy(state, "c", "nonsense", "ana")


def test_a_newer_schema_is_refused(tmp_path, database, raw_sql):
    AccountabilityState(tmp_path, database=database).close()
    table = "accountability_schema_version" if database else "schema_version"
    raw_sql(tmp_path, DB_FILENAME, f"UPDATE {table} SET version = 99")
    with pytest.raises(StateError, match="schema version 99"):
        AccountabilityState(tmp_path, database=database)
    if database:  # nothing of it went to the data directory
        assert not (tmp_path / DB_FILENAME).exists()
