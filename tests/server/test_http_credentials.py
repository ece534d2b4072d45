"""Where the server's key pair comes from: environment, stored file, or generated once (0600)."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from faceaudit.server.credentials import (
    ACCESS_KEY_ENV,
    CREDENTIALS_FILE,
    SECRET_KEY_ENV,
    CredentialsError,
    load_or_create,
    usage_note,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_environment_wins_and_nothing_is_written(tmp_path):
    env = {ACCESS_KEY_ENV: "MYKEY", SECRET_KEY_ENV: "my-secret-123"}
    loaded = load_or_create(tmp_path / "data", env)
    assert loaded.source == "environment"
    assert (loaded.credentials.access_key_id, loaded.credentials.secret_access_key) == ("MYKEY", "my-secret-123")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("env", [
    {ACCESS_KEY_ENV: "MYKEY"}, {SECRET_KEY_ENV: "my-secret-123"},
    {ACCESS_KEY_ENV: "MY/KEY", SECRET_KEY_ENV: "my-secret-123"},
    {ACCESS_KEY_ENV: "MYKEY", SECRET_KEY_ENV: "short"},
])
def test_incomplete_or_unusable_environment_is_refused(tmp_path, env):
    with pytest.raises(CredentialsError):
        load_or_create(tmp_path, env)


def test_generated_once_stored_0600_and_reused(tmp_path):
    data = tmp_path / "data"
    first = load_or_create(data, {})
    assert first.source == "generated"
    creds = first.credentials
    assert len(creds.access_key_id) == 20 and creds.access_key_id.isalnum() and creds.access_key_id.isupper()
    assert len(creds.secret_access_key) == 40 and creds.secret_access_key.isalnum()
    path = data / CREDENTIALS_FILE
    assert first.path == path and mode(path) == 0o600 and mode(data) == 0o700
    assert json.loads(path.read_text()) == {"access_key_id": creds.access_key_id,
                                            "secret_access_key": creds.secret_access_key}
    assert [p.name for p in data.iterdir()] == [CREDENTIALS_FILE]  # no temporary file left behind

    again = load_or_create(data, {})
    assert again.source == "file" and again.credentials == creds
    assert load_or_create(tmp_path / "other", {}).credentials != creds  # random, not derived


def test_note_shows_keys_and_boto3_usage(tmp_path):
    loaded = load_or_create(tmp_path, {})
    note = usage_note(loaded, "http://127.0.0.1:8000")
    assert loaded.credentials.access_key_id in note and loaded.credentials.secret_access_key in note
    assert "endpoint_url='http://127.0.0.1:8000'" in note


def test_concurrent_first_starts_agree(tmp_path):
    results = []
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        results.append(load_or_create(tmp_path, {}))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.credentials for r in results}) == 1
    assert sum(r.source == "generated" for r in results) == 1


def test_readable_by_others_is_refused(tmp_path):
    load_or_create(tmp_path, {})
    os.chmod(tmp_path / CREDENTIALS_FILE, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_or_create(tmp_path, {})


def test_corrupt_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / CREDENTIALS_FILE
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(CredentialsError, match="not a faceaudit credentials file"):
        load_or_create(tmp_path, {})
    assert path.read_text() == "{not json"
