"""Blind human review: a search under a review policy becomes an item that people decide before anything is released.

Why blind: a similarity score or a rank shown next to a face makes people agree with the
machine ("automation bias"). So a reviewer sees the probe and the candidates' face crops in
an order shuffled for that reviewer, with no score and no rank, decides each candidate
(confirm / reject / inconclusive, each with a reason), and only the answer to that
decision reveals the scores.

The flow (docs/accountability.md, "Blind review"):

1. the guard answers a search under a review policy with no matches and calls
   :meth:`ReviewStore.open_item`: the probe (sealed), the candidates (FaceId or UserId,
   Similarity, rank) and the number of reviewers the policy requires (2 for public-safety);
2. reviewers -- keys with role ``reviewer``, never the key that searched, each reviewer
   once per item -- list what waits for them (:meth:`~ReviewStore.pending`), look at it
   blind (:meth:`~ReviewStore.blind_view`) and decide (:meth:`~ReviewStore.decide`);
3. once the required number of reviewers decided, the item closes. **The release rule:
   a candidate is released when every required reviewer confirmed it.** A candidate some
   confirmed and others did not is *disputed*: not released, and the item is marked
   ``disputed``. Items end ``released`` (at least one candidate released, no dispute),
   ``disputed`` or ``not-confirmed`` (nobody confirmed anything; also a search with no
   candidate at all, which opens closed: there is nothing to review);
4. the searching key lists its own held searches and where each stands
   (:meth:`~ReviewStore.held_searches`: no candidate, no score) and fetches the released
   candidates with their Similarity (:meth:`~ReviewStore.result`), each labelled
   "investigative lead — not an identification".

Every decision is appended to the search log through the optional ``recorder`` (kind
"review"), inside the transaction that stores it: a decision the log refused is not stored.

Pictures: after IndexFaces into a review-policy collection the guard hands over the image
and the face records (:meth:`~ReviewStore.keep_face_crops`): each face is cropped with a
margin and kept as a sealed JPEG (faceaudit.accountability.sealed), for as long as the face
is in the collection. An item shows those crops (it keeps no copies: a copy per item would
cost a file and an fsync per candidate on every search, for nothing -- a deleted face's
picture must go from the items too). An item's rows and its probe go when it expires, the probe
possibly sooner (:meth:`~ReviewStore.purge_before`, called by faceaudit.accountability.retention,
which decides each collection's periods: every server purges at start and then hourly, and
``faceaudit retention purge`` on demand), and when the collection is deleted; a face's crop
goes when the face is deleted.

Storage: ``DATA_DIR/review.db`` (SQLite, mode 0600, WAL, ``synchronous=FULL``, every change
one BEGIN IMMEDIATE transaction) and the sealed blobs beside it. A blob is written before
the row that names it and deleted after the row is gone, so a killed process leaves at
worst an unreferenced blob (removed by :meth:`~ReviewStore.sweep_orphans`), never a row
whose picture is missing.

With ``database=postgresql://...`` (the server's ``--database``) the tables -- and the sealed
blobs, as ``bytea`` rows of ``review_blobs`` -- live in that database instead
(faceaudit.storage.sql_database): an item opened through one server is listed, viewed and
decided through any other. Each change is one transaction under the store's advisory lock;
the sealing key stays a file in each data directory (faceaudit.accountability.sealed says
why, and how several hosts share it).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from faceaudit.access import AccessKey
from faceaudit.access.roles import REVIEWER
from faceaudit.accountability.context import Caller, Facts, key_fields
from faceaudit.accountability.sealed import SealedBlobError, SealedBlobMissing, SealedBlobs
from faceaudit.errors import (
    AccessDeniedException,
    ConflictException,
    InternalServerError,
    InvalidParameterException,
    ResourceNotFoundException,
)
from faceaudit.images import LoadedImage, load_image
from faceaudit.storage.migrations import Step, latest_version
from faceaudit.storage.page_tokens import PageTokens, filter_digest
from faceaudit.storage.sql_database import POSTGRES, Connection, SqlStore, StoreSchema, open_database, postgres_ddl

__all__ = [
    "CONFIRM",
    "DB_FILENAME",
    "DECISIONS",
    "INCONCLUSIVE",
    "LEAD_LABEL",
    "REJECT",
    "REVIEWERS_REQUIRED",
    "Recorder",
    "ReviewQueue",
    "ReviewStore",
]

DB_FILENAME = "review.db"
DEFAULT_BUSY_TIMEOUT_S = 10.0
LEAD_LABEL = "investigative lead — not an identification"
CONFIRM, REJECT, INCONCLUSIVE = "confirm", "reject", "inconclusive"
DECISIONS = (CONFIRM, REJECT, INCONCLUSIVE)
OPEN, RELEASED, DISPUTED, NOT_CONFIRMED = "open", "released", "disputed", "not-confirmed"
# Independent reviewers each policy needs before anything is released (0: no review).
REVIEWERS_REQUIRED: dict[str, int] = {"public-safety": 2}
MAX_REASON_CHARS = 2000
MAX_PAGE = 100
MAX_RESULTS_PAGE = 1000  # ListReviewResults: rows without pictures or candidates, so larger pages
CROP_MARGIN = 0.3  # of the box's width/height, on each side: hair, ears and chin help a reviewer
CROP_MAX_SIDE = 480
CROP_JPEG_QUALITY = 90
log = logging.getLogger("faceaudit.review")
_PAGE_KIND = 16  # page_tokens kind for review listings (the face store uses 1-3, the log's 17)
_HELD_PAGE_KIND = 18  # page_tokens kind for a searcher's own held searches
_NO_SEQ_BOUND = (1 << 63) - 1  # above every seq (64-bit in both databases)
ORPHAN_AGE_S = 3600.0  # an unnamed blob this old is an orphan, not a picture whose row is on its way

_SCHEMA = [
    """CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)""",
    """CREATE TABLE items (
        seq             INTEGER PRIMARY KEY,          -- listing order
        item_id         TEXT    NOT NULL UNIQUE,
        created_ms      INTEGER NOT NULL,
        collection      TEXT    NOT NULL,
        policy          TEXT,
        operation       TEXT,
        purpose         TEXT,
        case_ref        TEXT,
        request_id      TEXT,
        searcher_key_id TEXT    NOT NULL,
        searcher_name   TEXT    NOT NULL,
        searcher_unit   TEXT,
        probe_blob      TEXT,                         -- sealed probe image (NULL: none kept)
        required        INTEGER NOT NULL,
        state           TEXT    NOT NULL,
        shuffle_seed    BLOB    NOT NULL
    )""",
    "CREATE INDEX items_collection ON items (collection)",
    """CREATE TABLE candidates (
        item_id      TEXT    NOT NULL REFERENCES items (item_id) ON DELETE CASCADE,
        candidate_id TEXT    NOT NULL,                -- FaceId or UserId
        kind         TEXT    NOT NULL,                -- 'face' or 'user'
        similarity   REAL    NOT NULL,
        rank         INTEGER NOT NULL,                -- 1 = the machine's best
        PRIMARY KEY (item_id, candidate_id)
    )""",
    """CREATE TABLE decisions (
        item_id         TEXT    NOT NULL REFERENCES items (item_id) ON DELETE CASCADE,
        reviewer_key_id TEXT    NOT NULL,
        reviewer_name   TEXT    NOT NULL,
        reviewer_unit   TEXT,
        decided_ms      INTEGER NOT NULL,
        PRIMARY KEY (item_id, reviewer_key_id)
    )""",
    """CREATE TABLE verdicts (
        item_id         TEXT NOT NULL,
        reviewer_key_id TEXT NOT NULL,
        candidate_id    TEXT NOT NULL,
        decision        TEXT NOT NULL,
        reason          TEXT NOT NULL,
        PRIMARY KEY (item_id, reviewer_key_id, candidate_id),
        FOREIGN KEY (item_id, reviewer_key_id) REFERENCES decisions (item_id, reviewer_key_id)
            ON DELETE CASCADE
    )""",
    """CREATE TABLE face_crops (
        collection TEXT    NOT NULL,
        face_id    TEXT    NOT NULL,
        crop_blob  TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (collection, face_id)
    )""",
    """CREATE TABLE retention (collection TEXT PRIMARY KEY, days INTEGER NOT NULL)""",
]


def _new_page_secret(conn: Connection) -> None:
    conn.execute("INSERT INTO meta (name, value) VALUES ('page_secret', ?)", (secrets.token_bytes(32),))


# faceaudit.storage.migrations, per database flavour: version 1 creates the schema; a change is
# a new version. SQLite 2: ``meta`` becomes ``review_meta`` (in PostgreSQL it shares the database
# with the faces' own ``meta``).
# SQLite 3 / PostgreSQL 2: an index for a searcher's own items, newest first (ListReviewResults), so
# the listing reads that key's rows only, not every item since.
_SEARCHER_INDEX = "CREATE INDEX items_searcher ON items (searcher_name, seq)"
MIGRATIONS: dict[int, list[Step]] = {1: [*_SCHEMA, _new_page_secret],
                                     2: ["ALTER TABLE meta RENAME TO review_meta"],
                                     3: [_SEARCHER_INDEX]}
POSTGRES_MIGRATIONS: dict[int, list[Step]] = {1: [
    *(postgres_ddl(statement).replace("CREATE TABLE meta ", "CREATE TABLE review_meta ")
      for statement in _SCHEMA),
    lambda conn: conn.execute("INSERT INTO review_meta (name, value) VALUES ('page_secret', ?)",
                              (secrets.token_bytes(32),)),
    # the sealed pictures (faceaudit.accountability.sealed): in the database, as the rows are
    "CREATE TABLE review_blobs (blob_id TEXT PRIMARY KEY, sealed BYTEA NOT NULL, "
    "sealed_at DOUBLE PRECISION NOT NULL)",
], 2: [_SEARCHER_INDEX]}
SCHEMA_VERSION = latest_version(MIGRATIONS)
POSTGRES_VERSION_TABLE = "review_schema_version"
_STORE_SCHEMA = StoreSchema(MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE)
_REVIEW_LOCK = 0x72657669  # "revi": the advisory lock of every change to the review tables


class Recorder(Protocol):
    """Where non-request events go (the search log implements it)."""

    def append(self, record: Mapping[str, Any]) -> Mapping[str, Any]: ...


class ReviewQueue(Protocol):
    """What the guard calls (PLAN.md); :class:`ReviewStore` implements it."""

    def requires_review(self, policy: str) -> int: ...

    def open_item(self, caller: Caller, collection_id: str, policy: str, probe: bytes,
                  response: dict, facts: Facts) -> str: ...

    def keep_face_crops(self, collection_id: str, image: bytes, faces: list[dict]) -> None: ...

    def forget_faces(self, collection_id: str, face_ids: list[str]) -> None: ...

    def forget_collection(self, collection_id: str) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as the log writes times."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def face_crop_jpeg(image: bytes | LoadedImage, box: Mapping[str, Any]) -> bytes:
    """The face in ``box`` (Rekognition's ratios of the upright image) with a margin, as a JPEG."""
    from PIL import Image

    loaded = load_image(image)
    width, height = loaded.width, loaded.height
    left, top = float(box.get("Left", 0.0)), float(box.get("Top", 0.0))
    box_w, box_h = float(box.get("Width", 0.0)), float(box.get("Height", 0.0))
    x0 = max(0, int((left - CROP_MARGIN * box_w) * width))
    y0 = max(0, int((top - CROP_MARGIN * box_h) * height))
    x1 = min(width, round((left + box_w * (1 + CROP_MARGIN)) * width))
    y1 = min(height, round((top + box_h * (1 + CROP_MARGIN)) * height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InvalidParameterException(f"BoundingBox {dict(box)} lies outside the image")
    crop = Image.fromarray(loaded.pixels[y0:y1, x0:x1])
    crop.thumbnail((CROP_MAX_SIDE, CROP_MAX_SIDE))
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=CROP_JPEG_QUALITY)
    return out.getvalue()


class ReviewStore(SqlStore):
    """The review queue of one data directory (implements :class:`ReviewQueue`).

    ``recorder``: where each decision is appended (the search log); ``reviewers_required``:
    policy -> reviewers (default :data:`REVIEWERS_REQUIRED`). How long items are kept is
    accountability.retention's (the collection's retention tags and the policy's defaults).

    No sealed blob is opened while a read connection is held (with PostgreSQL the blobs are rows:
    the pool must stay free for them).
    """

    def __init__(self, data_dir: str | os.PathLike, recorder: Recorder | None = None, *,
                 reviewers_required: Mapping[str, int] | None = None,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S, database: str | None = None):
        self.data_dir = Path(data_dir)
        self.recorder = recorder
        self.reviewers_required = dict(REVIEWERS_REQUIRED if reviewers_required is None else reviewers_required)
        self.path = self.data_dir / DB_FILENAME
        # secure_delete: purged SQLite rows leave no bytes behind (PostgreSQL's are vacuumed later;
        # the pictures in them are sealed, so their bytes are ciphertext either way)
        super().__init__(open_database(database, self.path, lock=_REVIEW_LOCK, name="review",
                                       unavailable=InternalServerError, busy_timeout=busy_timeout,
                                       pragmas=("foreign_keys = ON", "secure_delete = ON"), schema=_STORE_SCHEMA))
        # creates data_dir 0700 if absent; with PostgreSQL the blobs are rows beside the items
        self.blobs = SealedBlobs(self.data_dir, database=self._db if self._db.flavour == POSTGRES else None)
        secret = self._db.rows("SELECT value FROM review_meta WHERE name = 'page_secret'")[0][0]
        self._tokens = PageTokens(bytes(secret))

    # -- the guard's side (ReviewQueue) ---------------------------------------------------
    def requires_review(self, policy: str | None) -> int:
        return int(self.reviewers_required.get(policy or "", 0))

    def open_item(self, caller: Caller, collection_id: str, policy: str, probe: bytes,
                  response: dict, facts: Facts) -> str:
        """Store the probe and the candidates of one search; returns the new item's id."""
        required = self.requires_review(policy)
        if required < 1:
            raise ValueError(f"policy {policy!r} requires no review")
        candidates = _candidates(response)
        item_id = str(uuid.uuid4())
        probe_bytes = bytes(probe or b"")
        if not probe_bytes and response.get("SearchedFaceId"):  # SearchFaces: the stored face is the probe
            probe_bytes = self._collection_crop(collection_id, str(response["SearchedFaceId"])) or b""
        probe_blob = self.blobs.seal(probe_bytes) if probe_bytes else None  # durable before the row naming it
        try:
            key = caller.key
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO items (item_id, created_ms, collection, policy, operation, purpose, case_ref, "
                    "request_id, searcher_key_id, searcher_name, searcher_unit, probe_blob, required, state, "
                    "shuffle_seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (item_id, int(caller.at.timestamp() * 1000), collection_id, policy, facts.operation,
                     caller.purpose, caller.case, caller.request_id, key.access_key_id, key.name, key.unit,
                     probe_blob, required, OPEN if candidates else NOT_CONFIRMED, secrets.token_bytes(16)))
                conn.executemany(
                    "INSERT INTO candidates (item_id, candidate_id, kind, similarity, rank) VALUES (?, ?, ?, ?, ?)",
                    [(item_id, cid, kind, similarity, rank) for cid, kind, similarity, rank in candidates])
        except BaseException:
            self._delete_blobs([probe_blob])
            raise
        facts.review_item = item_id
        facts.review_outcome = OPEN if candidates else NOT_CONFIRMED  # nothing to review: closed at once
        return item_id

    def keep_face_crops(self, collection_id: str, image: bytes, faces: list[dict]) -> None:
        """Seal a crop of each indexed face (``faces``: IndexFaces' FaceRecords, or their Face dicts)."""
        sealed: list[tuple[str, str]] = []
        try:
            loaded = load_image(image) if faces else None  # decoded once for every face
            for record in faces:
                face = record.get("Face", record)
                face_id, box = face.get("FaceId"), face.get("BoundingBox")
                if not face_id or not box or loaded is None:
                    continue
                try:
                    crop = face_crop_jpeg(loaded, box)
                except InvalidParameterException:  # a box outside the picture: that face gets no crop
                    continue
                sealed.append((str(face_id), self.blobs.seal(crop, sync=False)))
            self.blobs.sync()
            with self._db.write() as conn:
                replaced = [row[0] for face_id, _ in sealed for row in conn.execute(
                    "SELECT crop_blob FROM face_crops WHERE collection = ? AND face_id = ?",
                    (collection_id, face_id))]
                conn.executemany(
                    "INSERT INTO face_crops (collection, face_id, crop_blob, created_ms) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (collection, face_id) DO UPDATE SET crop_blob = excluded.crop_blob, "
                    "created_ms = excluded.created_ms", [(collection_id, fid, blob, _now_ms()) for fid, blob in sealed])
        except BaseException:
            for _, blob in sealed:
                self.blobs.delete(blob)
            raise
        self._delete_blobs(replaced)

    def forget_faces(self, collection_id: str, face_ids: list[str]) -> None:
        """Deleted faces: their crops go (candidates of open items stay, without a picture)."""
        ids = [str(f) for f in face_ids]
        with self._db.write() as conn:
            blobs = []
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                blobs += [r[0] for r in conn.execute(
                    f"SELECT crop_blob FROM face_crops WHERE collection = ? AND face_id IN ({marks})",
                    (collection_id, *chunk))]
                conn.execute(f"DELETE FROM face_crops WHERE collection = ? AND face_id IN ({marks})",
                             (collection_id, *chunk))
        self._delete_blobs(blobs)

    def forget_collection(self, collection_id: str) -> None:
        """A deleted collection: its crops, and its review items with their blobs."""
        with self._db.write() as conn:
            blobs = [r[0] for r in conn.execute(
                "SELECT crop_blob FROM face_crops WHERE collection = ?", (collection_id,))]
            conn.execute("DELETE FROM face_crops WHERE collection = ?", (collection_id,))
            blobs += self._delete_items(conn, "collection = ?", (collection_id,))
            conn.execute("DELETE FROM retention WHERE collection = ?", (collection_id,))
        self._delete_blobs(blobs)

    # -- reviewers --------------------------------------------------------------------
    def pending(self, key: AccessKey, *, max_results: int = 50, next_token: str | None = None) -> dict[str, Any]:
        """Open items this reviewer may decide (not its own searches, not decided by it yet), oldest first."""
        _require_reviewer(key, "list review items")
        limit = max(1, min(int(max_results), MAX_PAGE))
        digest = filter_digest("pending:" + key.access_key_id)
        after = self._tokens.after(next_token, _PAGE_KIND, 0, digest)
        rows = self._db.rows(
            "SELECT i.seq, i.item_id, i.created_ms, i.collection, i.policy, i.purpose, i.case_ref, i.required, "
            "(SELECT COUNT(*) FROM candidates c WHERE c.item_id = i.item_id), "
            "(SELECT COUNT(*) FROM decisions d WHERE d.item_id = i.item_id) "
            "FROM items i WHERE i.state = ? AND i.seq > ? AND i.searcher_key_id != ? AND i.searcher_name != ? "
            "AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_id = i.item_id AND d.reviewer_key_id = ?) "
            "ORDER BY i.seq LIMIT ?",
            (OPEN, after, key.access_key_id, key.name, key.access_key_id, limit + 1))
        page = rows[:limit]
        answer: dict[str, Any] = {"ReviewItems": [
            {"ItemId": r[1], "CreatedAt": datetime.fromtimestamp(r[2] / 1000, UTC), "CollectionId": r[3],
             "Policy": r[4], "Purpose": r[5], "Case": r[6], "RequiredReviewers": r[7],
             "CandidateCount": r[8], "DecisionCount": r[9]} for r in page]}
        if len(rows) > limit:
            answer["NextToken"] = self._tokens.issue(_PAGE_KIND, 0, page[-1][0], digest)
        return answer

    def blind_view(self, key: AccessKey, item_id: str) -> dict[str, Any]:
        """What a reviewer decides from: the probe and each candidate's crop, shuffled for this
        reviewer, with no similarity, no rank and nothing about other reviewers' decisions."""
        with self._db.read() as conn:
            item = self._item_for_reviewer(conn, key, item_id)
            candidates = self._blind_order(conn, item, key)
        return {
            "ItemId": item_id, "CollectionId": item["collection"], "Policy": item["policy"],
            "Purpose": item["purpose"], "Case": item["case_ref"],
            "CreatedAt": datetime.fromtimestamp(item["created_ms"] / 1000, UTC),
            "RequiredReviewers": item["required"],
            "Probe": self._open_blob(item["probe_blob"]),
            "Candidates": [{"CandidateId": cid, "CandidateType": kind.upper(),
                            "Crop": self._open_blob(blob, missing_ok=True)}  # a face deleted meanwhile: no crop
                           for cid, kind, blob in candidates],
            "Instructions": ("Compare the probe with each candidate and decide confirm, reject or "
                             "inconclusive, with a reason, for every candidate. Scores are shown only "
                             "after your decision is recorded."),
        }

    def decide(self, caller: Caller, item_id: str, decisions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Record one reviewer's decision on every candidate; the answer reveals the scores."""
        key = caller.key
        given = [dict(d) for d in decisions]
        decided_ms = _now_ms()
        with self._db.write() as conn:
            item = self._item_for_reviewer(conn, key, item_id)
            pictured = dict(conn.execute(
                "SELECT c.candidate_id, f.crop_blob IS NOT NULL FROM candidates c LEFT JOIN face_crops f "
                "ON f.collection = ? AND f.face_id = c.candidate_id AND c.kind = 'face' WHERE c.item_id = ?",
                (item["collection"], item_id)).fetchall())
            verdicts = _checked_decisions(given, list(pictured))
            for cid, (decision, _) in verdicts.items():  # nothing is confirmed unseen
                if decision == CONFIRM and not (pictured[cid] and item["probe_blob"]):
                    raise InvalidParameterException(
                        f"Candidate '{cid}' cannot be confirmed: "
                        + ("no probe image was kept" if not item["probe_blob"] else "no picture of it was kept")
                        + "; decide reject or inconclusive")
            conn.execute("INSERT INTO decisions (item_id, reviewer_key_id, reviewer_name, reviewer_unit, "
                         "decided_ms) VALUES (?, ?, ?, ?, ?)",
                         (item_id, key.access_key_id, key.name, key.unit, decided_ms))
            conn.executemany(
                "INSERT INTO verdicts (item_id, reviewer_key_id, candidate_id, decision, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                [(item_id, key.access_key_id, cid, decision, reason) for cid, (decision, reason) in verdicts.items()])
            state, released = self._settle(conn, item_id, item["required"])
            conn.execute("UPDATE items SET state = ? WHERE item_id = ?", (state, item_id))
            kinds = dict(conn.execute("SELECT candidate_id, kind FROM candidates WHERE item_id = ?", (item_id,))
                         .fetchall())
            if self.recorder is not None:  # in the transaction: a decision the log refused is not stored
                self.recorder.append({
                    "kind": "review", "time": _iso(decided_ms), "request_id": caller.request_id,
                    "key": key_fields(key), "operation": "DecideReviewItem",
                    "collection": item["collection"], "policy": item["policy"],
                    "purpose": item["purpose"], "case": item["case_ref"],
                    "review": {"item": item_id, "outcome": state},
                    "details": {
                        "item": item_id, "reviewer": key.name,
                        "decisions": [{_id_member(kinds[cid]): cid, "decision": decision, "reason": reason}
                                      for cid, (decision, reason) in verdicts.items()],
                        "released": released if state != OPEN else []},
                })
            scores = conn.execute("SELECT candidate_id, kind, similarity, rank FROM candidates WHERE item_id = ? "
                                  "ORDER BY rank", (item_id,)).fetchall()
            count = conn.execute("SELECT COUNT(*) FROM decisions WHERE item_id = ?", (item_id,)).fetchone()[0]
        return {
            "ItemId": item_id, "CollectionId": item["collection"], "State": state.upper().replace("-", "_"),
            "RequiredReviewers": item["required"], "DecisionCount": count,
            "Revealed": [{"CandidateId": cid, "CandidateType": kind.upper(), "Similarity": similarity,
                          "Rank": rank, "YourDecision": verdicts[cid][0].upper()}
                         for cid, kind, similarity, rank in scores],
        }

    # -- the searcher -----------------------------------------------------------------
    def result(self, key: AccessKey, item_id: str) -> dict[str, Any]:
        """The released candidates of one of this key's searches, with Similarity and the lead label.

        The searcher is recognised by key name, so a rotated key (same name) still gets its results.
        """
        with self._db.snapshot() as conn:
            item = self._item(conn, item_id)
            if key.name != item["searcher_name"]:
                raise AccessDeniedException(
                    f"Review item {item_id} belongs to another key's search; only the key that searched "
                    "may fetch its result")
            state = item["state"]
            released = [] if state == OPEN else self._released(conn, item_id, item["required"])
            rows = {cid: (kind, similarity) for cid, kind, similarity in conn.execute(
                "SELECT candidate_id, kind, similarity FROM candidates WHERE item_id = ?", (item_id,))}
            count = conn.execute("SELECT COUNT(*) FROM decisions WHERE item_id = ?", (item_id,)).fetchone()[0]
        return {
            "ItemId": item_id, "CollectionId": item["collection"], "State": state.upper().replace("-", "_"),
            "RequiredReviewers": item["required"], "DecisionCount": count,
            "CandidateCount": len(rows),
            "ReleasedCandidates": [
                {"CandidateId": cid, "CandidateType": rows[cid][0].upper(), "Similarity": rows[cid][1],
                 "Label": LEAD_LABEL} for cid in sorted(released, key=lambda c: -rows[c][1])],
        }

    def held_searches(self, key: AccessKey, *, max_results: int = 100,
                      next_token: str | None = None) -> dict[str, Any]:
        """This key's searches held for review (by key name, as :meth:`result` recognises the
        searcher), newest first: where each stands, never a candidate, a score or how many
        candidates there are (that number alone says something before anyone has reviewed)."""
        limit = max(1, min(int(max_results), MAX_RESULTS_PAGE))
        digest = filter_digest("held:" + key.name)  # a token is good only for the name it was issued to
        # no token (0): from the newest. One query shape for both: a range of items_searcher, whatever the plan
        before = self._tokens.after(next_token, _HELD_PAGE_KIND, 0, digest) or _NO_SEQ_BOUND
        rows = self._db.rows(
            "SELECT i.seq, i.item_id, i.created_ms, i.collection, i.policy, i.purpose, i.case_ref, i.state, "
            "i.required, (SELECT COUNT(*) FROM decisions d WHERE d.item_id = i.item_id) "
            "FROM items i WHERE i.searcher_name = ? AND i.seq < ? ORDER BY i.seq DESC LIMIT ?",
            (key.name, before, limit + 1))
        page = rows[:limit]
        answer: dict[str, Any] = {"ReviewResults": [
            {"ItemId": r[1], "CreatedAt": datetime.fromtimestamp(r[2] / 1000, UTC), "CollectionId": r[3],
             "Policy": r[4], "Purpose": r[5], "Case": r[6], "State": r[7].upper().replace("-", "_"),
             "RequiredReviewers": r[8], "DecisionCount": r[9]} for r in page]}
        if len(rows) > limit:
            answer["NextToken"] = self._tokens.issue(_HELD_PAGE_KIND, 0, page[-1][0], digest)
        return answer

    # -- retention (faceaudit.accountability.retention decides the periods and purges) -----
    def set_retention(self, collection_id: str, days: int | None) -> None:
        """The older per-collection item retention (None: remove it); the ``faceaudit:retention:*``
        tags take precedence over it (faceaudit.accountability.retention)."""
        with self._db.write() as conn:
            if days is None:
                conn.execute("DELETE FROM retention WHERE collection = ?", (collection_id,))
                return
            if int(days) < 1:
                raise InvalidParameterException("Retention must be at least 1 day")
            conn.execute("INSERT INTO retention (collection, days) VALUES (?, ?) "
                         "ON CONFLICT (collection) DO UPDATE SET days = excluded.days", (collection_id, int(days)))

    def retention_override(self, collection_id: str) -> int | None:
        """The item retention set with the older `faceaudit review retention`, if any."""
        rows = self._db.rows("SELECT days FROM retention WHERE collection = ?", (collection_id,))
        return int(rows[0][0]) if rows else None

    def collections_with_items(self) -> list[str]:
        return [r[0] for r in self._db.rows("SELECT DISTINCT collection FROM items ORDER BY collection")]

    def purge_before(self, cutoffs: Mapping[str, tuple[int, int]],
                     on_purged: Callable[[list[str], list[str]], None] | None = None) -> tuple[list[str], list[str]]:
        """Per collection ``(items_ms, probes_ms)``: delete the items searched at or before
        ``items_ms`` and the probe pictures of those searched at or before ``probes_ms``
        (-1: none). One transaction; ``on_purged(item ids, ids of items whose probe went)``
        runs inside it, and what it raises undoes the purge. Returns the same two lists."""
        blobs: list[str] = []
        with self._db.write() as conn:
            items: list[str] = []
            probes: list[str] = []
            for collection_id, (items_ms, probes_ms) in sorted(cutoffs.items()):
                items += [r[0] for r in conn.execute(
                    "SELECT item_id FROM items WHERE collection = ? AND created_ms <= ? ORDER BY seq",
                    (collection_id, items_ms))]
                for item_id, blob in conn.execute(
                        "SELECT item_id, probe_blob FROM items WHERE collection = ? AND created_ms <= ? "
                        "AND created_ms > ? AND probe_blob IS NOT NULL ORDER BY seq",
                        (collection_id, probes_ms, items_ms)).fetchall():
                    probes.append(item_id)
                    blobs.append(blob)
            for chunk in _chunks(probes, 500):
                conn.execute(f"UPDATE items SET probe_blob = NULL WHERE item_id IN ({','.join('?' * len(chunk))})",
                             tuple(chunk))
            for chunk in _chunks(items, 500):
                blobs += self._delete_items(conn, f"item_id IN ({','.join('?' * len(chunk))})", tuple(chunk))
            if on_purged is not None:
                on_purged(items, probes)
        self._delete_blobs(blobs)
        return items, probes

    def sweep_orphans(self, older_than_s: float = ORPHAN_AGE_S) -> int:
        """Delete sealed blobs no row names (left by a process killed between the two); returns how many.

        Only blobs older than ``older_than_s``: a younger one may be a picture whose row another
        process is about to commit."""
        named = {r[0] for r in self._db.rows("SELECT probe_blob FROM items WHERE probe_blob IS NOT NULL UNION "
                                             "SELECT crop_blob FROM face_crops")}
        cutoff = time.time() - older_than_s
        orphans = [b for b in self.blobs.blob_ids() if b not in named and self.blobs.sealed_at(b) <= cutoff]
        self._delete_blobs(orphans)
        return len(orphans)

    # -- internals --------------------------------------------------------------------
    _ITEM_COLUMNS = ("item_id", "created_ms", "collection", "policy", "purpose", "case_ref", "searcher_key_id",
                     "searcher_name", "probe_blob", "required", "state", "shuffle_seed")

    def _item(self, conn: Connection, item_id: str) -> dict[str, Any]:
        row = conn.execute(f"SELECT {', '.join(self._ITEM_COLUMNS)} FROM items WHERE item_id = ?",
                           (str(item_id),)).fetchone()
        if row is None:
            raise ResourceNotFoundException(f"Review item {str(item_id)[:64]} does not exist (or was purged)")
        return dict(zip(self._ITEM_COLUMNS, row))

    def _item_for_reviewer(self, conn: Connection, key: AccessKey, item_id: str) -> dict[str, Any]:
        """The item, if this key may review it now; AccessDenied / Conflict explaining why not."""
        _require_reviewer(key, "review items")
        item = self._item(conn, item_id)
        if key.access_key_id == item["searcher_key_id"] or key.name == item["searcher_name"]:
            raise AccessDeniedException(f"Review item {item_id} comes from your own search; "
                                        "another reviewer must decide it")
        if conn.execute("SELECT 1 FROM decisions WHERE item_id = ? AND reviewer_key_id = ?",
                        (item_id, key.access_key_id)).fetchone():
            raise AccessDeniedException(f"You already decided review item {item_id}; each reviewer "
                                        "decides an item once, independently")
        if item["state"] != OPEN:
            raise ConflictException(f"Review item {item_id} is closed ({item['state']}): its "
                                    f"{item['required']} required reviewers have decided")
        return item

    def _blind_order(self, conn: Connection, item: dict[str, Any],
                     key: AccessKey) -> list[tuple[str, str, str | None]]:
        """Candidates in an order of their own for each reviewer (stable across views), rank hidden."""
        rows = conn.execute(
            "SELECT c.candidate_id, c.kind, f.crop_blob FROM candidates c LEFT JOIN face_crops f "
            "ON f.collection = ? AND f.face_id = c.candidate_id AND c.kind = 'face' WHERE c.item_id = ?",
            (item["collection"], item["item_id"])).fetchall()
        seed = bytes(item["shuffle_seed"]) + key.access_key_id.encode()
        return sorted(rows, key=lambda r: hmac.new(seed, r[0].encode(), hashlib.sha256).digest())

    @staticmethod
    def _verdicts(conn: Connection, item_id: str) -> dict[str, list[str]]:
        votes: dict[str, list[str]] = {}
        for cid, decision in conn.execute("SELECT candidate_id, decision FROM verdicts WHERE item_id = ?",
                                          (item_id,)):
            votes.setdefault(cid, []).append(decision)
        return votes

    def _released(self, conn: Connection, item_id: str, required: int) -> list[str]:
        """The release rule: every required reviewer confirmed the candidate."""
        return [cid for cid, votes in self._verdicts(conn, item_id).items()
                if len(votes) >= required and all(v == CONFIRM for v in votes)]

    def _settle(self, conn: Connection, item_id: str, required: int) -> tuple[str, list[str]]:
        count = conn.execute("SELECT COUNT(*) FROM decisions WHERE item_id = ?", (item_id,)).fetchone()[0]
        if count < required:
            return OPEN, []
        votes = self._verdicts(conn, item_id)
        released = self._released(conn, item_id, required)
        disputed = any(CONFIRM in v and any(d != CONFIRM for d in v) for v in votes.values())
        return (DISPUTED if disputed else RELEASED if released else NOT_CONFIRMED), released

    def _collection_crop(self, collection_id: str, face_id: str) -> bytes | None:
        rows = self._db.rows("SELECT crop_blob FROM face_crops WHERE collection = ? AND face_id = ?",
                             (collection_id, face_id))
        if not rows:
            return None
        try:
            return self.blobs.open(rows[0][0])
        except SealedBlobError:
            return None

    def _open_blob(self, blob_id: str | None, *, missing_ok: bool = False) -> bytes | None:
        if blob_id is None:
            return None
        try:
            return self.blobs.open(blob_id)
        except SealedBlobMissing:
            if missing_ok:
                return None
            raise InternalServerError(f"A review picture is missing ({blob_id})") from None
        except SealedBlobError as error:  # an altered picture: the operator must know
            raise InternalServerError(f"A review picture could not be read: {error}") from error

    @staticmethod
    def _delete_items(conn: Connection, where: str, parameters: tuple) -> list[str]:
        """Delete the items matching ``where`` (rows cascade); returns the blobs they named."""
        blobs = [r[0] for r in conn.execute(
            f"SELECT probe_blob FROM items WHERE {where} AND probe_blob IS NOT NULL", parameters)]
        conn.execute(f"DELETE FROM items WHERE {where}", parameters)
        return blobs

    def _delete_blobs(self, blobs: Iterable[str | None]) -> None:
        for blob in blobs:
            if blob:
                self.blobs.delete(blob)


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _id_member(kind: str) -> str:
    return "UserId" if kind == "user" else "FaceId"


def _require_reviewer(key: AccessKey, what: str) -> None:
    if key.role != REVIEWER:
        raise AccessDeniedException(f"The key '{key.name}' (role {key.role}) may not {what}: "
                                    "only reviewer keys review")


def _candidates(response: Mapping[str, Any]) -> list[tuple[str, str, float, int]]:
    """(id, kind, similarity, rank) from a search response's FaceMatches or UserMatches."""
    found: list[tuple[str, str, float]] = []
    for match in response.get("FaceMatches") or []:
        face_id = (match.get("Face") or {}).get("FaceId")
        if face_id:
            found.append((str(face_id), "face", float(match.get("Similarity", 0.0))))
    for match in response.get("UserMatches") or []:
        user_id = (match.get("User") or {}).get("UserId")
        if user_id:
            found.append((str(user_id), "user", float(match.get("Similarity", 0.0))))
    found.sort(key=lambda c: -c[2])  # rank 1 is the machine's best, whatever order the response had
    seen: set[str] = set()
    ranked: list[tuple[str, str, float, int]] = []
    for cid, kind, similarity in found:
        if cid not in seen:
            seen.add(cid)
            ranked.append((cid, kind, similarity, len(ranked) + 1))
    return ranked


def _checked_decisions(given: list[dict[str, Any]], candidate_ids: list[str]) -> dict[str, tuple[str, str]]:
    """candidate id -> (decision, reason); InvalidParameterException unless each candidate is decided once."""
    known = set(candidate_ids)
    out: dict[str, tuple[str, str]] = {}
    for entry in given:
        cid = str(entry.get("CandidateId") or "")
        decision = str(entry.get("Decision") or "").lower()
        reason = str(entry.get("Reason") or "").strip()
        if cid not in known:
            raise InvalidParameterException(f"Candidate '{cid[:64]}' is not a candidate of this item")
        if cid in out:
            raise InvalidParameterException(f"Candidate '{cid}' is decided twice")
        if decision not in DECISIONS:
            raise InvalidParameterException(
                f"Decision for candidate '{cid}' must be one of {', '.join(DECISIONS)}")
        if not reason:
            raise InvalidParameterException(f"A reason is required for the decision on candidate '{cid}'")
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidParameterException(f"The reason for candidate '{cid}' is longer than "
                                            f"{MAX_REASON_CHARS} characters")
        out[cid] = (decision, reason)
    missing = [cid for cid in candidate_ids if cid not in out]
    if missing:
        raise InvalidParameterException(
            f"Every candidate needs a decision; missing: {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    return out
