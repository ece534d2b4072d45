"""The key store on its own (no server, no models): keys, revocation, rotation, the single-key start.

Several SQLiteKeyStore objects on one directory stand for several server processes: each has
its own SQLite connections, which is all SQLite's locking and visibility depend on.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from faceaudit.access import (
    ADMIN,
    AUDITOR,
    OPERATION_ROLES,
    OPERATOR,
    REVIEWER,
    IssuedKey,
    KeyStoreError,
    SQLiteKeyStore,
)
from faceaudit.access.roles import allows, operations_for, role_table_markdown
from faceaudit.access.sqlite import DB_FILENAME
from faceaudit.accountability.faceaudit_service import FaceAuditService
from faceaudit.accountability.guard import TAG_OPERATIONS
from faceaudit.rekognition.service import RekognitionService
from faceaudit.server.credentials import CREDENTIALS_FILE, CredentialsError, generate, open_keys
from faceaudit.settings import ACCESS_KEY_ENV, SECRET_KEY_ENV, Settings
from faceaudit.storage.migrations import is_schema_too_new

DOCS = Path(__file__).resolve().parents[2] / "docs" / "access.md"
NO_ENV = Settings.from_env({})


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens one KeyStore, on each backend: DATA_DIR/access.db, and PostgreSQL (a schema of its
    own); each call opens it again (as another process would), and every one opened is closed."""
    opened: list = []
    if request.param == "sqlite":
        def open_one():
            opened.append(SQLiteKeyStore(tmp_path / "data"))
            return opened[-1]
        yield open_one
    else:
        from faceaudit.access.postgres import PostgresKeyStore
        from support.postgres import drop_schema, fresh_schema

        url, schema = request.getfixturevalue("postgres_url"), fresh_schema()

        def open_one():
            opened.append(PostgresKeyStore(url, schema=schema))
            return opened[-1]
        yield open_one
    for each in opened:
        each.close()
    if request.param == "postgres":
        drop_schema(url, schema)


@pytest.fixture
def store(open_store):
    """Each KeyStore test on both backends."""
    return open_store()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ----------------------------------------------------------------------------- the role table


def test_the_table_covers_exactly_the_operations_the_service_runs():
    served = RekognitionService(engine=None).operations  # type: ignore[arg-type]  # no engine needed to list them
    # The server serves the service's operations, the tag operations the guard answers itself
    # and faceaudit's own (FaceAuditService.*).
    assert set(OPERATION_ROLES) == set(served) | TAG_OPERATIONS | FaceAuditService.operations


def test_admin_may_do_everything_an_operator_may_reviewers_only_review_auditors_only_read():
    assert set(operations_for(OPERATOR)) < set(operations_for(ADMIN))
    log_reading = {"ListSearchLogRecords", "VerifySearchLog", "GetTransparencyReport"}
    assert set(operations_for(ADMIN)) - set(operations_for(OPERATOR)) == {
        "CreateCollection", "DeleteCollection", "DeleteFaces", "DeleteUser"} | log_reading
    assert operations_for(REVIEWER) == ("ListReviewItems", "GetReviewItem", "DecideReviewItem")
    # which policy a collection is under, and the log
    assert set(operations_for(AUDITOR)) == {"ListTagsForResource"} | log_reading
    assert not allows("root", "DetectFaces") and not allows(ADMIN, "DetectLabels")  # unknown: refused


def test_docs_show_the_table_exactly():
    assert role_table_markdown() in DOCS.read_text(), (
        "docs/access.md must contain the table `faceaudit keys roles --markdown` prints")


# ----------------------------------------------------------------------------- keys


def test_create_lookup_and_list_without_secrets(store):
    issued = store.create("alice", OPERATOR, "lab-1")
    key = issued.key
    assert (key.name, key.role, key.unit, key.origin, key.active) == ("alice", OPERATOR, "lab-1", "created", True)
    assert len(key.access_key_id) == 20 and key.access_key_id.isupper() and key.access_key_id.isalnum()
    assert len(issued.secret_access_key) == 40 and issued.secret_access_key.isalnum()
    assert issued.secret_access_key not in repr(issued)
    assert store.lookup(key.access_key_id) == issued
    assert store.lookup("NOSUCHKEY") is None
    assert store.keys() == [key]
    assert store.create("bob", AUDITOR).secret_access_key != issued.secret_access_key


@pytest.mark.parametrize(("name", "role", "unit"), [
    ("alice", "root", None), ("", OPERATOR, None), ("has space", OPERATOR, None), ("a" * 65, OPERATOR, None),
    ('quote"', OPERATOR, None), ("alice", OPERATOR, "two words"),
])
def test_bad_names_roles_and_units_are_refused(store, name, role, unit):
    with pytest.raises(KeyStoreError):
        store.create(name, role, unit)
    assert store.keys() == []


def test_names_are_unique_among_active_keys_only(store):
    first = store.create("alice", OPERATOR).key
    with pytest.raises(KeyStoreError, match="already named 'alice'"):
        store.create("alice", ADMIN)
    store.create("admin", ADMIN)
    store.revoke("alice")
    again = store.create("alice", AUDITOR).key
    assert again.access_key_id != first.access_key_id
    assert [k.name for k in store.keys(include_revoked=True)] == ["alice", "admin", "alice"]


def test_a_restored_key_keeps_the_one_active_name_rule_and_the_store_stays_usable(store):
    store.revoke(store.create("alice", OPERATOR).key.name)
    alice = store.lookup(store.keys(include_revoked=True)[0].access_key_id)
    elsewhere = store.create("alice", ADMIN)  # the active 'alice' another store may also hold
    with pytest.raises(KeyStoreError, match="already named 'alice' here"):
        store.restore(IssuedKey(replace(elsewhere.key, access_key_id="RESTOREDKEY000000001"), "s" * 40))
    assert not store.restore(alice)  # already here, revoked: nothing changes
    revoked_copy = replace(alice.key, access_key_id="RESTOREDKEY000000002")
    assert store.restore(IssuedKey(revoked_copy, "t" * 40))  # a revoked key may share an active name
    assert store.lookup(revoked_copy.access_key_id) == IssuedKey(revoked_copy, "t" * 40)
    assert [k.name for k in store.keys()] == ["alice"]
    assert store.create("bob", AUDITOR).key.active  # a refused change left the next one possible


def test_a_store_newer_than_this_code_is_refused_untouched(open_store):
    store = open_store()
    store.create("alice", OPERATOR)
    table = "schema_version" if type(store) is SQLiteKeyStore else "access_schema_version"
    with store._write() as conn:
        conn.execute(f"UPDATE {table} SET version = 99")
    with pytest.raises(KeyStoreError, match=r"schema version 99.*Upgrade faceaudit") as refused:
        open_store()
    assert type(refused.value) is KeyStoreError  # not KeyStoreUnavailable: nothing failed but the version
    assert is_schema_too_new(refused.value)  # what `faceaudit serve` turns into its message and exit 2
    assert [k.name for k in store.keys()] == ["alice"]


def test_file_is_0600_in_a_0700_directory_and_refused_when_readable_by_others(tmp_path):
    data = tmp_path / "data"
    SQLiteKeyStore(data).close()
    assert mode(data) == 0o700 and mode(data / DB_FILENAME) == 0o600
    os.chmod(data / DB_FILENAME, 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        SQLiteKeyStore(data)


def test_revoke_by_name_or_id_is_seen_at_once_by_another_store(tmp_path):
    one, two = SQLiteKeyStore(tmp_path), SQLiteKeyStore(tmp_path)
    try:
        alice = one.create("alice", OPERATOR).key
        bob = one.create("bob", OPERATOR).key
        assert two.lookup(alice.access_key_id).key.active  # type: ignore[union-attr]
        one.revoke("alice")
        one.revoke(bob.access_key_id)
        for key in (alice, bob):
            seen = two.lookup(key.access_key_id)
            assert seen is not None and not seen.key.active and seen.key.revoked_reason == "revoked"
        with pytest.raises(KeyStoreError, match="already revoked"):
            two.revoke(alice.access_key_id)
        with pytest.raises(KeyStoreError, match="no active key"):
            two.revoke("alice")
    finally:
        one.close()
        two.close()


def test_the_last_admin_key_is_not_revoked_without_force(store):
    first = store.create("first", ADMIN).key
    second = store.create("second", ADMIN).key
    store.revoke("first")
    with pytest.raises(KeyStoreError, match="last active admin key"):
        store.revoke("second")
    assert store.lookup(second.access_key_id).key.active  # type: ignore[union-attr]
    assert not store.revoke("second", force=True).active
    assert not store.lookup(first.access_key_id).key.active  # type: ignore[union-attr]


def test_rotate_replaces_id_and_secret_and_keeps_name_role_unit(store):
    old = store.create("alice", OPERATOR, "lab").key
    new = store.rotate("alice")
    assert (new.key.name, new.key.role, new.key.unit, new.key.origin) == ("alice", OPERATOR, "lab", "rotated")
    assert new.key.access_key_id != old.access_key_id
    retired = store.lookup(old.access_key_id)
    assert retired is not None and retired.key.revoked_reason == "rotated"
    assert retired.key.replaced_by == new.key.access_key_id
    assert store.keys() == [new.key]
    store.create("root", ADMIN)
    only = store.rotate("root")  # rotating the last admin key is fine: an admin key remains
    assert only.key.active and only.key.role == ADMIN


def test_a_created_key_survives_a_killed_process(tmp_path):
    """Acknowledged means on disk: a process that creates a key and dies without closing."""
    code = ("import os, sys; from faceaudit.access import SQLiteKeyStore; "
            "k = SQLiteKeyStore(sys.argv[1]).create('alice', 'operator'); "
            "print(k.key.access_key_id, flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    with SQLiteKeyStore(tmp_path) as store:
        found = store.lookup(done.stdout.strip())
        assert found is not None and found.key.name == "alice"


# ----------------------------------------------------------------------------- the single-key start


def test_adopt_is_idempotent_and_keeps_a_revoked_key_revoked(store):
    creds = generate()
    key, adopted = store.adopt(creds.access_key_id, creds.secret_access_key, origin=CREDENTIALS_FILE)
    assert adopted and (key.name, key.role, key.origin) == ("initial", ADMIN, CREDENTIALS_FILE)
    assert store.adopt(creds.access_key_id, creds.secret_access_key, origin=CREDENTIALS_FILE) == (key, False)
    store.create("root", ADMIN)
    store.revoke("initial")
    again, adopted = store.adopt(creds.access_key_id, creds.secret_access_key, origin=CREDENTIALS_FILE)
    assert not adopted and not again.active
    with pytest.raises(KeyStoreError, match="another secret"):
        store.adopt(creds.access_key_id, "some-other-secret-0000", origin="environment")


def test_adopted_names_do_not_clash(store):
    names = [store.adopt(*(lambda c: (c.access_key_id, c.secret_access_key))(generate()),
                         origin="environment")[0].name for _ in range(3)]
    assert names == ["initial", "initial-2", "initial-3"]


def test_environment_pair_becomes_the_admin_key_initial(tmp_path):
    env = Settings.from_env({ACCESS_KEY_ENV: "MYKEY", SECRET_KEY_ENV: "my-secret-123"})
    started = open_keys(tmp_path / "data", settings=env)
    try:
        assert started.adopted and started.loaded is not None and started.loaded.source == "environment"
        issued = started.store.lookup("MYKEY")
        assert issued is not None and issued.secret_access_key == "my-secret-123"
        assert (issued.key.name, issued.key.role, issued.key.origin) == ("initial", ADMIN, "environment")
        assert not (tmp_path / "data" / CREDENTIALS_FILE).exists()
        assert started.warnings() == []
    finally:
        started.store.close()


def test_an_old_credentials_file_is_taken_in_as_admin(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    path = data / CREDENTIALS_FILE  # as a single-key faceaudit wrote it
    path.write_text(json.dumps({"access_key_id": "OLDKEY00000000000001", "secret_access_key": "old-secret-1234"}))
    os.chmod(path, 0o600)
    started = open_keys(data, settings=NO_ENV)
    try:
        assert started.loaded is not None and started.loaded.source == "file" and started.adopted
        issued = started.store.lookup("OLDKEY00000000000001")
        assert issued is not None and issued.key.role == ADMIN and issued.key.name == "initial"
    finally:
        started.store.close()


def test_a_key_is_generated_only_for_a_store_that_never_held_one(tmp_path):
    data = tmp_path / "data"
    with SQLiteKeyStore(data) as provisioning:  # keys made before the first start
        provisioning.create("alice", OPERATOR)
    started = open_keys(data, settings=NO_ENV)
    try:
        assert started.loaded is None and not (data / CREDENTIALS_FILE).exists()
        assert [k.name for k in started.store.keys()] == ["alice"]
        assert any("no active admin key" in w for w in started.warnings())
    finally:
        started.store.close()


def test_concurrent_first_starts_make_one_admin_key(tmp_path):
    data = tmp_path / "data"
    results, errors = [], []
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        try:
            started = open_keys(data, settings=NO_ENV)
            results.append(started)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    try:
        assert sum(r.adopted for r in results) == 1
        assert sum(r.loaded.source == "generated" for r in results if r.loaded) == 1
        keys = results[0].store.keys(include_revoked=True)
        assert [(k.name, k.role) for k in keys] == [("initial", ADMIN)]
    finally:
        for started in results:
            started.store.close()


def test_a_rotated_single_key_pair_stays_refused_and_says_so(tmp_path):
    env = Settings.from_env({ACCESS_KEY_ENV: "MYKEY", SECRET_KEY_ENV: "my-secret-123"})
    first = open_keys(tmp_path, settings=env)
    first.store.rotate("initial")
    first.store.close()
    again = open_keys(tmp_path, settings=env)
    try:
        issued = again.store.lookup("MYKEY")
        assert issued is not None and not issued.key.active and not again.adopted
        assert any("was rotated and is refused" in w for w in again.warnings())
    finally:
        again.store.close()


def test_an_unreadable_store_stops_the_start(tmp_path):
    SQLiteKeyStore(tmp_path).close()
    os.chmod(tmp_path / DB_FILENAME, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        open_keys(tmp_path, settings=NO_ENV)
