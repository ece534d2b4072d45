"""Pagination: every face exactly once, stable order, opaque tokens bound to their listing.

On both backends (``open_store``, tests/storage/conftest.py)."""

from __future__ import annotations

import base64
import uuid
from collections import Counter

import numpy as np
import pytest
from storage_helpers import make_face, make_faces, unit_vectors

from faceaudit.errors import InvalidParameterException
from faceaudit.storage import InvalidPaginationTokenException


@pytest.fixture
def store(open_store):
    # no HNSW index: listing never reads it, and it costs ~4 ms an inserted face
    return open_store(synchronous="NORMAL", hnsw=False)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def list_all(store, collection_id, page_size, between_pages=None, **filters):
    ids, pages, token = [], 0, None
    while True:
        page, token = store.list_faces(collection_id, next_token=token, max_results=page_size, **filters)
        assert len(page) <= page_size
        ids += [f.face_id for f in page]
        pages += 1
        if token is None:
            return ids, pages
        assert len(page) == page_size  # a token is only given when more may follow
        if between_pages:
            between_pages(pages)


def test_1050_faces_in_pages_of_100(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 1050)
    store.add_faces("c", faces)
    ids, pages = list_all(store, "c", 100)
    assert pages == 11
    assert ids == [f.face_id for f in faces]  # insertion order, each exactly once
    # a second listing gives the same order
    assert list_all(store, "c", 100)[0] == ids


def test_exact_multiple_has_no_empty_last_page(store, rng):
    store.create_collection("c", "m")
    store.add_faces("c", make_faces(rng, 300))
    ids, pages = list_all(store, "c", 100)
    assert len(ids) == 300 and pages == 3


def test_faces_added_and_deleted_between_pages(store, rng):
    store.create_collection("c", "m")
    original = make_faces(rng, 1050)
    store.add_faces("c", original)
    listed_so_far: list[str] = []
    added: list[str] = []
    deleted: set[str] = set()
    alive = [f.face_id for f in original]
    pick = np.random.default_rng(99)

    token = None
    while True:
        page, token = store.list_faces("c", next_token=token, max_results=100)
        listed_so_far += [f.face_id for f in page]
        if token is None:
            break
        # between pages: add 13 faces (one call each for some), delete 9 faces,
        # some already listed and some not yet listed
        new = make_faces(rng, 13)
        store.add_faces("c", new[:10])
        for face in new[10:]:
            store.add_faces("c", [face])
        added += [f.face_id for f in new]
        alive += [f.face_id for f in new]
        doomed = [alive.pop(int(pick.integers(len(alive)))) for _ in range(9)]
        assert store.delete_faces("c", doomed)[0] == doomed
        deleted.update(doomed)

    counts = Counter(listed_so_far)
    assert max(counts.values()) == 1, "a face was listed twice"
    never_deleted = [f.face_id for f in original if f.face_id not in deleted]
    assert all(counts[f] == 1 for f in never_deleted), "a face present throughout was skipped"
    added_kept = [f for f in added if f not in deleted]
    assert all(counts[f] == 1 for f in added_kept), "a face added during the listing was skipped"
    # nothing that was deleted before it could be listed shows up
    assert set(listed_so_far) <= {f.face_id for f in original} | set(added)
    assert store.describe_collection("c").face_count == len(alive)


def test_filters_paginate(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 250)
    store.add_faces("c", faces)
    store.create_user("c", "u")
    mine = [faces[i].face_id for i in range(0, 250, 3)][:100]
    store.associate_faces("c", "u", mine)
    ids, pages = list_all(store, "c", 30, user_id="u")
    assert len(mine) == 84 and ids == mine and pages == 3
    wanted = [faces[i].face_id for i in range(1, 250, 2)] + [str(uuid.uuid4())]
    ids, _ = list_all(store, "c", 40, face_ids=wanted)
    assert ids == wanted[:-1]
    ids, _ = list_all(store, "c", 10, user_id="u", face_ids=wanted)
    assert ids == [f for f in mine if f in set(wanted)]


def test_list_collections_pagination(store):
    names = [f"c{i:04d}" for i in range(37)]
    for name in names:
        store.create_collection(name, "m")
    seen, token = [], None
    while True:
        page, token = store.list_collections(next_token=token, max_results=10)
        seen += page
        if token is None:
            break
        store.delete_collection(page[0])  # deleting listed ones does not disturb the rest
    assert seen == names
    details, _ = store.list_collections_detailed(max_results=4096)
    assert all(c.face_model_version == "m" for c in details)


@pytest.mark.parametrize("bad", [0, -1, 4097, 1.5, "10", True])
def test_invalid_page_sizes(store, bad):
    store.create_collection("c", "m")
    with pytest.raises(InvalidParameterException):
        store.list_faces("c", max_results=bad)
    with pytest.raises(InvalidParameterException):
        store.list_collections(max_results=bad)


def test_max_page_size(store, rng):
    store.create_collection("c", "m")
    store.add_faces("c", make_faces(rng, 5))
    assert len(store.list_faces("c", max_results=4096)[0]) == 5


def test_tokens_are_bound_to_their_listing(store, rng):
    store.create_collection("c", "m")
    store.create_collection("d", "m")
    faces = make_faces(rng, 10)
    store.add_faces("c", faces)
    store.add_faces("d", make_faces(rng, 10))
    for name in ("c", "d"):
        store.create_user(name, "u1")
        store.create_user(name, "u2")
    store.associate_faces("c", "u1", [f.face_id for f in faces[:6]])
    _, token = store.list_faces("c", max_results=3)
    _, user_token = store.list_users("c", max_results=1)
    _, filtered_token = store.list_faces("c", max_results=2, user_id="u1")
    _, collections_token = store.list_collections(max_results=1)
    assert token and user_token and filtered_token and collections_token
    assert len(token) <= 255

    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    padded = base64.urlsafe_b64encode(b"x" * 38).decode()
    bad_calls = [
        lambda: store.list_faces("c", next_token="garbage!!"),
        lambda: store.list_faces("c", next_token=padded),
        lambda: store.list_faces("c", next_token=flipped),
        lambda: store.list_faces("c", next_token="x" * 300),
        lambda: store.list_faces("d", next_token=token),            # another collection
        lambda: store.list_faces("c", next_token=user_token),       # another listing
        lambda: store.list_faces("c", next_token=token, user_id="u1"),  # another filter
        lambda: store.list_faces("c", next_token=filtered_token),
        lambda: store.list_faces("c", next_token=filtered_token, user_id="u2"),
        lambda: store.list_users("c", next_token=token),
        lambda: store.list_users("d", next_token=user_token),
        lambda: store.list_collections(next_token=token),
        lambda: store.list_faces("c", next_token=collections_token),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidPaginationTokenException):
            call()
    # the right tokens work, and an empty token means "from the start"
    assert len(store.list_faces("c", next_token=token, max_results=100)[0]) == 7
    assert len(store.list_faces("c", next_token=filtered_token, user_id="u1", max_results=100)[0]) == 4
    assert len(store.list_faces("c", next_token="")[0]) == 10


def test_token_of_a_recreated_collection_is_refused(store, rng):
    store.create_collection("c", "m")
    store.add_faces("c", make_faces(rng, 5))
    _, token = store.list_faces("c", max_results=2)
    store.delete_collection("c")
    store.create_collection("c", "m")
    store.add_faces("c", make_faces(rng, 5))
    with pytest.raises(InvalidPaginationTokenException):
        store.list_faces("c", next_token=token)


def test_token_from_another_database_is_refused(open_store, rng):
    a = open_store("a")
    b = open_store("b")
    for s in (a, b):
        s.create_collection("c", "m")
        s.add_faces("c", [make_face(v) for v in unit_vectors(rng, 4)])
    _, token = a.list_faces("c", max_results=1)
    with pytest.raises(InvalidPaginationTokenException):
        b.list_faces("c", next_token=token)
    a.close()
    b.close()
