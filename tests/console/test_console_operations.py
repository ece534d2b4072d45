"""The one entry the console reaches operations through: RekognitionApp.call, the API's path after the signature.

A real RekognitionService over a real EmbeddedStore; ListCollections needs no engine, so none is loaded.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from faceaudit.access import SQLiteKeyStore
from faceaudit.accountability.context import Caller, Facts
from faceaudit.errors import AccessDeniedException, InvalidParameterException
from faceaudit.rekognition.service import RekognitionService
from faceaudit.server.access import StoreKeys
from faceaudit.server.app import RekognitionApp
from faceaudit.server.wire import UnknownOperationException
from faceaudit.storage import EmbeddedStore


@pytest.fixture
def app(tmp_path):
    store, keys = EmbeddedStore(tmp_path / "data"), SQLiteKeyStore(tmp_path / "data")
    app = RekognitionApp(RekognitionService(None, store), StoreKeys(keys),  # ListCollections uses no engine
                         on_shutdown=[store.close, keys.close], threads=1)
    yield app
    app.close()


def caller(app: RekognitionApp, role: str) -> Caller:
    issued = app.credentials.store.create(f"k-{role}", role)
    return Caller(issued.key, "request-1", datetime.now(UTC))


def test_call_checks_the_role_then_validates_like_a_signed_request(app):
    facts = Facts()
    assert app.call(caller(app, "operator"), "ListCollections", {}, facts) == {
        "CollectionIds": [], "FaceModelVersions": []}
    assert facts.operation == "ListCollections"
    with pytest.raises(AccessDeniedException, match="role auditor"):
        app.call(caller(app, "auditor"), "ListCollections", {}, Facts())
    admin = caller(app, "admin")
    with pytest.raises(InvalidParameterException, match=r"maxResults.*greater than or equal to 0"):
        app.call(admin, "ListCollections", {"MaxResults": -1}, Facts())
    with pytest.raises(UnknownOperationException):
        app.call(admin, "DropEverything", {}, Facts())


def test_console_calls_are_in_the_search_log_allowed_and_refused_alike(tmp_path):
    from faceaudit.accountability.searchlog import SearchLog, read_data_dir
    data = tmp_path / "data"
    store, keys, search_log = EmbeddedStore(data), SQLiteKeyStore(data), SearchLog(data)
    app = RekognitionApp(RekognitionService(None, store), StoreKeys(keys), threads=1, search_log=search_log,
                         on_shutdown=[store.close, keys.close, search_log.close])
    try:
        operator, auditor = caller(app, "operator"), caller(app, "auditor")
        app.call(operator, "ListCollections", {}, Facts())
        with pytest.raises(AccessDeniedException):
            app.call(auditor, "ListCollections", {}, Facts())
    finally:
        app.close()
    contents = read_data_dir(data)
    assert contents.verify(None).problem is None
    logged = [(r["key"]["name"], r["operation"], r["error"]) for r in contents.records() if r["kind"] == "request"]
    assert logged == [("k-operator", "ListCollections", None),
                      ("k-auditor", "ListCollections", "AccessDeniedException")]
