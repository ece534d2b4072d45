"""``faceaudit storage migrate``: copy an embedded data folder into PostgreSQL (faces, keys, accountability).

Faces and keys go through the stores' own interfaces (FaceStore, KeyStore), so each row is
written by the code that writes it for a request: for every collection of the source, the
collection (its model version and creation time), its search mode, its faces in insertion
order (the same FaceIds, ImageIds, ExternalImageIds, bounding boxes, confidences, model
versions and vectors, a page of faces per transaction), its UserIDs and their associations;
then every access key, revoked ones included, with its id, secret, name, role, unit and dates.

The accountability data -- collection tags (use policies, retention tags), moratoria, search
budgets, review items with their sealed pictures, the search log with its checkpoints and
signing public keys, the retention ledger -- is copied row for row, by table and column name,
in one PostgreSQL transaction (faceaudit.batch.accountability_migration, which says how): the
same ids and sequence numbers, so the log's hash chain and its signed checkpoints verify there
with the same head, checked before the transaction commits and again through the log's own
reader after. ``review.key`` (which seals the pictures) goes to the PostgreSQL host's data
directory when that is another one.

The target must hold no collection and no accountability row (a half-migrated or live
database is refused, so nothing there is overwritten or merged); everything that refuses is
checked before the first row is written. The source is only read (an older accountability
file is brought to this code's schema first, as a server starting on it would). At the end the
counts of both are compared, collection by collection (faces, users, FaceIds, associations),
for the keys, and table by table for the accountability data (with the log's head hash); any
difference is reported and the command fails.

Not copied: console sign-in sessions (per data directory), the retention purge lease and the
schema-version rows (each database keeps its own), the audit caches; nor NextTokens of face
listings (a listing started on the old store must start again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from faceaudit.access import SQLiteKeyStore
from faceaudit.audit.targets.progress import progress_bar
from faceaudit.batch.accountability_migration import AccountabilityCopy, Prepared, carry
from faceaudit.storage import FaceStore, PostgresStore, StoredFace

PAGE = 1000  # faces read and written per transaction
ASSOCIATE_AT_ONCE = 100  # AssociateFaces' own limit


class MigrationRefused(RuntimeError):
    """The target cannot take the copy (it already holds collections)."""


@dataclass
class MigrationSummary:
    collections: dict[str, dict[str, int]] = field(default_factory=dict)  # id -> faces, users, associations
    keys: int = 0
    keys_already_there: int = 0
    search_modes: dict[str, str] = field(default_factory=dict)  # collections whose mode was changed, and why
    problems: list[str] = field(default_factory=list)  # what the final check found different
    accountability: AccountabilityCopy | None = None  # None: not asked for

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "collections": self.collections, "keys": self.keys,
                "keys_already_there": self.keys_already_there, "search_modes": self.search_modes,
                "problems": self.problems,
                "accountability": None if self.accountability is None else self.accountability.as_dict()}


def _collection_ids(store: FaceStore) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page, token = store.list_collections_detailed(token)
        ids += [c.collection_id for c in page]
        if not token:
            return ids


def _face_pages(store: FaceStore, collection_id: str) -> Iterator[list[StoredFace]]:
    """Every face with its vector and UserID, a page at a time, in insertion order."""
    token = None
    while True:
        page, token = store.list_faces(collection_id, token, PAGE)
        if page:
            by_id = {f.face_id: f for f in store.get_faces(collection_id, [f.face_id for f in page])}
            yield [by_id[f.face_id] for f in page if f.face_id in by_id]
        if not token:
            return


def _users(store: FaceStore, collection_id: str) -> list[str]:
    users: list[str] = []
    token = None
    while True:
        page, token = store.list_users(collection_id, token, 500)
        users += [u.user_id for u in page]
        if not token:
            return users


def _faces_by_user(store: FaceStore, collection_id: str) -> tuple[list[str], dict[str, list[str]]]:
    face_ids: list[str] = []
    by_user: dict[str, list[str]] = {}
    for page in _face_pages(store, collection_id):
        for face in page:
            face_ids.append(face.face_id)
            if face.user_id is not None:
                by_user.setdefault(face.user_id, []).append(face.face_id)
    return face_ids, by_user


def _target_mode(source_mode: str) -> tuple[str, str | None]:
    """The PostgreSQL mode for an embedded one, and why it differs (PostgreSQL has no forced
    "approximate": its collections are approximate above ``--approximate-above``)."""
    if source_mode == "exact":
        return "exact", None
    if source_mode == "approximate":
        return "auto", "approximate at any size in the data folder; on PostgreSQL above --approximate-above"
    return "auto", None


def refuse_unless_empty(target: FaceStore) -> None:
    """MigrationRefused if ``target`` holds a collection."""
    held = _collection_ids(target)
    if held:
        raise MigrationRefused(f"the target database already holds {len(held)} collection(s) "
                               f"({', '.join(held[:5])}{'...' if len(held) > 5 else ''}): migrate into an "
                               "empty database (or schema) only")


def migrate(source: FaceStore, source_keys: SQLiteKeyStore, target: PostgresStore, target_keys: SQLiteKeyStore,
            *, accountability: Prepared | None = None, progress: bool = True) -> MigrationSummary:
    """Copy every collection, face, UserID, association and key of ``source`` into ``target``
    (see the module docstring), then the accountability data ``accountability`` prepared
    (accountability_migration.prepare, which checks the target before anything is written).
    MigrationRefused if ``target`` holds a collection."""
    refuse_unless_empty(target)
    summary = MigrationSummary()
    collections = [source.describe_collection(cid) for cid in _collection_ids(source)]
    total = sum(c.face_count for c in collections)
    with progress_bar(progress, f"Copying {len(collections)} collections, {total} faces", total) as advance:
        for collection in collections:
            cid = collection.collection_id
            target.create_collection(cid, collection.face_model_version)
            target.restore_created(cid, collection.created)
            mode, why = _target_mode(source.search_mode(cid))
            if mode == "exact":
                target.set_search_mode(cid, "exact")
            if why:
                summary.search_modes[cid] = why
            by_user: dict[str, list[str]] = {}
            faces = 0
            for page in _face_pages(source, cid):
                for face in page:
                    if face.user_id is not None:
                        by_user.setdefault(face.user_id, []).append(face.face_id)
                target.add_faces(cid, [replace(face, user_id=None) for face in page])
                faces += len(page)
                for _ in page:
                    advance()
            users = _users(source, cid)
            associations = 0
            for user_id in users:
                target.create_user(cid, user_id)
                wanted = by_user.get(user_id, [])
                for start in range(0, len(wanted), ASSOCIATE_AT_ONCE):
                    result = target.associate_faces(cid, user_id, wanted[start:start + ASSOCIATE_AT_ONCE])
                    associations += len(result.changed)
                    for failed in result.unsuccessful:
                        summary.problems.append(f"{cid}: face {failed.face_id} not associated with {user_id}: "
                                                f"{', '.join(failed.reasons)}")
            summary.collections[cid] = {"faces": faces, "users": len(users), "associations": associations}
    for issued in _all_keys(source_keys):
        if target_keys.restore(issued):
            summary.keys += 1
        else:
            summary.keys_already_there += 1
    _verify(source, source_keys, target, target_keys, summary)
    if accountability is not None:
        summary.accountability = carry(accountability)
        summary.problems += summary.accountability.problems
    return summary


def _all_keys(store: SQLiteKeyStore) -> list[Any]:
    issued = []
    for key in store.keys(include_revoked=True):
        found = store.lookup(key.access_key_id)
        assert found is not None
        issued.append(found)
    return issued


def _verify(source: FaceStore, source_keys: SQLiteKeyStore, target: PostgresStore, target_keys: SQLiteKeyStore,
            summary: MigrationSummary) -> None:
    """Counts and identities on both sides, read back from the stores."""
    wanted, got = _collection_ids(source), _collection_ids(target)
    if sorted(wanted) != sorted(got):
        summary.problems.append(f"collections: {sorted(wanted)} in the data folder, {sorted(got)} in the database")
    for cid in set(wanted) & set(got):
        a, b = source.describe_collection(cid), target.describe_collection(cid)
        for what, x, y in (("faces", a.face_count, b.face_count), ("users", a.user_count, b.user_count),
                           ("model version", a.face_model_version, b.face_model_version),
                           ("created", a.created, b.created)):
            if x != y:
                summary.problems.append(f"{cid}: {what} {x} in the data folder, {y} in the database")
        source_faces, source_users = _faces_by_user(source, cid)
        target_faces, target_users = _faces_by_user(target, cid)
        if source_faces != target_faces:
            summary.problems.append(f"{cid}: the FaceIds (or their order) differ")
        if {u: sorted(f) for u, f in source_users.items()} != {u: sorted(f) for u, f in target_users.items()}:
            summary.problems.append(f"{cid}: the UserIDs' faces differ")
        if _users(source, cid) != _users(target, cid):
            summary.problems.append(f"{cid}: the UserIDs differ")
    source_ids = {k.access_key_id for k in source_keys.keys(include_revoked=True)}
    target_ids = {k.access_key_id for k in target_keys.keys(include_revoked=True)}
    if not source_ids <= target_ids:
        summary.problems.append(f"keys: {len(source_ids - target_ids)} of the data folder's are not in the database")
