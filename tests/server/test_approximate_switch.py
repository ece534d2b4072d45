"""`faceaudit serve --approximate-above N` (FACEAUDIT_APPROXIMATE_ABOVE): one switch for approximate
search on both backends, which a public-safety collection ignores (the guard refuses to search
one that is not exact).

That approximate search took place is read where it leaves traces outside the server: the
embedded store writes the collection's HNSW graph to DATA_DIR/index/*.hnsw, and PostgreSQL
counts the scans of the collection's HNSW index (pg_stat_user_indexes.idx_scan). The setting in
force is also what the server says at start, before its "listening on" line."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from faceaudit.accountability.policies import POLICY_TAG
from faceaudit.settings import NEVER_APPROXIMATE, Settings, parse_approximate_above
from faceaudit.storage import (
    DEFAULT_APPROXIMATE_THRESHOLD,
    EmbeddedStore,
    PostgresStore,
    open_store,
    search_mode_note,
)
from support.images import encode

FACES = 3  # above the switch's 2


def signed_purpose(client):
    def add(request, **kwargs):
        request.headers["x-faceaudit-purpose"] = "find the suspect of a burglary"
        request.headers["x-faceaudit-case"] = "CASE-2026-7"
    client.meta.events.register("before-sign.rekognition", add)
    return client


def fill(client, collection_id, astronaut_rgb, *, policy: str | None = None) -> None:
    client.create_collection(CollectionId=collection_id)
    if policy:
        arn = client.describe_collection(CollectionId=collection_id)["CollectionARN"]
        client.tag_resource(ResourceArn=arn, Tags={POLICY_TAG: policy})
    for quality in range(70, 70 + FACES):  # other bytes each time: FACES faces
        client.index_faces(CollectionId=collection_id, Image={"Bytes": encode(astronaut_rgb, quality=quality)},
                           MaxFaces=1, QualityFilter="NONE")


def search(client, collection_id, astronaut_jpeg):
    return client.search_faces_by_image(CollectionId=collection_id, Image={"Bytes": astronaut_jpeg},
                                        FaceMatchThreshold=99, MaxFaces=10)


def eventually(check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def assert_refused_for_its_mode(client, collection_id, astronaut_jpeg, mode: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        search(client, collection_id, astronaut_jpeg)
    error = refused.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert f"searched in mode {mode!r}" in error["Message"] and "requires exact search" in error["Message"]


def test_the_switch_is_read_from_the_environment_and_checked():
    assert Settings.from_env({}).approximate_above is None
    assert Settings.from_env({"FACEAUDIT_APPROXIMATE_ABOVE": "1000"}).approximate_above == 1000
    assert Settings.from_env({"FACEAUDIT_APPROXIMATE_ABOVE": "Never"}).approximate_above == NEVER_APPROXIMATE
    for bad in ("-1", "many", "1e5"):
        with pytest.raises(ValueError, match="FACEAUDIT_APPROXIMATE_ABOVE"):
            Settings.from_env({"FACEAUDIT_APPROXIMATE_ABOVE": bad})
    assert parse_approximate_above(None) is None


def test_open_store_gives_the_embedded_store_its_threshold(tmp_path):
    for value, threshold in ((None, DEFAULT_APPROXIMATE_THRESHOLD), (2, 3), (NEVER_APPROXIMATE, None)):
        store = open_store(None, tmp_path / str(value), approximate_above=value)
        assert isinstance(store, EmbeddedStore) and store._approximate.threshold == threshold
        store.close()


@pytest.mark.models
def test_embedded_server_searches_approximately_above_the_switch_but_never_a_public_safety_collection(
        start_faceaudit_server, tmp_path, astronaut_rgb, astronaut_jpeg):
    server = start_faceaudit_server(tmp_path / "data", extra_args=("--approximate-above", "2"))
    assert "approximate (HNSW) in a collection of more than 2 faces, exact up to it" in start_up_line(
        server, "embedded store")
    admin = server.client()
    fill(admin, "open", astronaut_rgb)
    fill(admin, "guarded", astronaut_rgb, policy="public-safety")
    graphs = server.data_dir / "index"

    search(admin, "open", astronaut_jpeg)
    eventually(lambda: graphs.is_dir() and len(list(graphs.glob("*.hnsw"))) == 1)  # the graph of "open"
    searcher = signed_purpose(server.client())
    for _ in range(2):
        search(searcher, "guarded", astronaut_jpeg)  # allowed: the policy made it exact
    time.sleep(2)
    assert len(list(graphs.glob("*.hnsw"))) == 1  # none for "guarded"

    # Put back in "auto" behind the guard's back (e.g. by a script on the data folder): refused.
    store = EmbeddedStore(server.data_dir)
    store.set_search_mode("guarded", "auto")
    store.close()
    assert_refused_for_its_mode(searcher, "guarded", astronaut_jpeg, "auto")


STAYS_EXACT = "Audits and public-safety collections stay exact."


def start_up_line(server, backend: str) -> str:
    """The server's line about its search mode, which comes before it accepts requests."""
    log = server.log()
    [line] = [line for line in log.splitlines() if line.startswith(f"faceaudit: search ({backend}): ")]
    assert log.index(line) < log.index("faceaudit: listening on")
    return line


def test_the_start_up_line_names_the_backends_default_when_nothing_is_set():
    embedded, postgres = search_mode_note(None, None), search_mode_note("postgresql://u:secret@db/faces", None)
    assert "approximate (HNSW) in a collection of 50,000 faces or more" in embedded and "embedded default" in embedded
    assert postgres.startswith("search (PostgreSQL): exact in every collection (the PostgreSQL default")
    assert "secret" not in postgres and "db/faces" not in postgres  # a URL may hold a password
    assert search_mode_note("embedded", "never").startswith("search (embedded store): exact in every collection")
    assert all(note.endswith(STAYS_EXACT) for note in (embedded, postgres))


@pytest.mark.models
def test_a_server_says_at_start_which_search_it_runs_by_default_and_from_the_environment(
        faceaudit_server, start_faceaudit_server, tmp_path, monkeypatch):
    line = start_up_line(faceaudit_server, "embedded store")  # the session's server: nothing set
    assert "approximate (HNSW) in a collection of 50,000 faces or more, exact below (the embedded default" in line
    assert line.endswith(STAYS_EXACT)
    monkeypatch.setenv("FACEAUDIT_APPROXIMATE_ABOVE", "never")
    line = start_up_line(start_faceaudit_server(tmp_path / "data"), "embedded store")
    assert "exact in every collection (--approximate-above / FACEAUDIT_APPROXIMATE_ABOVE: never)" in line


def hnsw_scans(database: str, collection_id: str) -> int:
    """idx_scan of the collection's HNSW index (PostgresStore names it by the collection's row id)."""
    import psycopg
    with psycopg.connect(database, autocommit=True) as conn:
        rowid = conn.execute("SELECT id FROM collections WHERE collection_id = %s", (collection_id,)).fetchone()[0]
        row = conn.execute("SELECT sum(idx_scan) FROM pg_stat_user_indexes "
                           "WHERE schemaname = current_schema() AND indexrelname = %s",
                           (f"faces_hnsw_{rowid}",)).fetchone()
    return int(row[0] or 0)


@pytest.mark.models
def test_postgres_server_searches_approximately_above_the_switch_but_never_a_public_safety_collection(
        start_faceaudit_server, postgres_database, tmp_path, astronaut_rgb, astronaut_jpeg):
    database = postgres_database()
    # one request thread: one database connection, whose statistics reach pg_stat in order
    server = start_faceaudit_server(tmp_path / "data", extra_args=(
        "--database", database, "--approximate-above", "2", "--threads", "1"))
    line = start_up_line(server, "PostgreSQL")
    assert "approximate (HNSW) in a collection of more than 2 faces" in line and database not in line
    admin = server.client()
    fill(admin, "open", astronaut_rgb)
    fill(admin, "guarded", astronaut_rgb, policy="public-safety")
    searcher = signed_purpose(server.client())
    for _ in range(2):
        search(searcher, "guarded", astronaut_jpeg)  # allowed: the policy made it exact
    [match, *_] = search(admin, "open", astronaut_jpeg)["FaceMatches"]
    assert match["Similarity"] > 99
    eventually(lambda: hnsw_scans(database, "open") > 0)
    assert hnsw_scans(database, "guarded") == 0

    store = PostgresStore(database, pool_size=1)
    store.set_search_mode("guarded", "auto")
    store.close()
    assert_refused_for_its_mode(searcher, "guarded", astronaut_jpeg, "approximate")
