"""Who may call what: the four roles and the role -> operation table, as data, in one place.

Every request's operation is checked against :data:`OPERATION_ROLES` once its signature
is verified (faceaudit.server.access.authorize). An operation missing from the table is
refused to every role, so a new operation is unreachable until someone decides who may
call it. docs/access.md shows this table exactly (``faceaudit keys roles --markdown``
prints it; a test keeps the two equal), and tests/server/test_http_access.py calls
every cell of it through boto3.
"""

from __future__ import annotations

ADMIN = "admin"
OPERATOR = "operator"
REVIEWER = "reviewer"
AUDITOR = "auditor"
ROLES: tuple[str, ...] = (ADMIN, OPERATOR, REVIEWER, AUDITOR)

# What each role is for (shown by `faceaudit keys roles` and in docs/access.md).
ROLE_DUTIES: dict[str, str] = {
    ADMIN: "keys, policies and collections (create, delete, delete faces and users); "
           "everything an operator may do",
    OPERATOR: "index, search, compare and detect; users and their faces; read collections",
    REVIEWER: "list, view (blind) and decide review items; never their own searches; nothing of "
              "Rekognition's",
    AUDITOR: "read the search log, reports and transparency figures, and which policy a collection "
             "is under (ListTagsForResource), nothing else",
}

_OPERATORS = frozenset({ADMIN, OPERATOR})
_ADMINS = frozenset({ADMIN})
_READERS = frozenset({ADMIN, OPERATOR, AUDITOR})
_REVIEWERS = frozenset({REVIEWER})
_AUDITORS = frozenset({ADMIN, AUDITOR})

# Operation -> the roles that may call it. Deleting stored people (collections, faces,
# users) is the admin's, who answers for what a collection holds; operators add to
# collections and search them. Reviewers call none of Rekognition's operations, auditors
# only ListTagsForResource (which policy a collection is under). Deciding review items
# (faceaudit's own FaceAuditService operations) is the
# reviewers' alone: the keys that search never also judge the searches. GetReviewResult and
# ListReviewResults are for those who search, and the review store lets only the searching key
# read or list its items.
OPERATION_ROLES: dict[str, frozenset[str]] = {
    "DetectFaces": _OPERATORS,
    "CompareFaces": _OPERATORS,
    "CreateCollection": _ADMINS,
    "DeleteCollection": _ADMINS,
    "DescribeCollection": _OPERATORS,
    "ListCollections": _OPERATORS,
    "IndexFaces": _OPERATORS,
    "ListFaces": _OPERATORS,
    "DeleteFaces": _ADMINS,
    "SearchFaces": _OPERATORS,
    "SearchFacesByImage": _OPERATORS,
    "CreateUser": _OPERATORS,
    "DeleteUser": _ADMINS,
    "ListUsers": _OPERATORS,
    "AssociateFaces": _OPERATORS,
    "DisassociateFaces": _OPERATORS,
    "SearchUsers": _OPERATORS,
    "SearchUsersByImage": _OPERATORS,
    # Collection tags. The faceaudit:policy tag among them is the admin's alone (checked by
    # faceaudit.accountability.guard); auditors read which policy a collection is under.
    "TagResource": _OPERATORS,
    "UntagResource": _OPERATORS,
    "ListTagsForResource": _READERS,
    # faceaudit's own operations (FaceAuditService.*: blind review, docs/accountability.md)
    "ListReviewItems": _REVIEWERS,
    "GetReviewItem": _REVIEWERS,
    "DecideReviewItem": _REVIEWERS,
    "GetReviewResult": _OPERATORS,
    "ListReviewResults": _OPERATORS,  # a searcher's own held searches, by key name, as GetReviewResult
    # Reading the search log and the transparency report over the wire (docs/accountability.md,
    # "Reading the log over the wire"): the auditors' work, and the admin's, who answers for the service.
    "ListSearchLogRecords": _AUDITORS,
    "VerifySearchLog": _AUDITORS,
    "GetTransparencyReport": _AUDITORS,
}


def allows(role: str, operation: str) -> bool:
    """True when ``role`` may call ``operation``; unknown roles and operations are refused."""
    return role in OPERATION_ROLES.get(operation, frozenset())


def roles_for(operation: str) -> tuple[str, ...]:
    """The roles that may call ``operation``, in :data:`ROLES` order (empty: nobody)."""
    allowed = OPERATION_ROLES.get(operation, frozenset())
    return tuple(role for role in ROLES if role in allowed)


def operations_for(role: str) -> tuple[str, ...]:
    return tuple(op for op in OPERATION_ROLES if role in OPERATION_ROLES[op])


def role_table_markdown() -> str:
    """The table as docs/access.md shows it: one row per operation, one column per role."""
    lines = ["| operation | " + " | ".join(ROLES) + " |",
             "|---|" + "---|" * len(ROLES)]
    for operation, allowed in OPERATION_ROLES.items():
        cells = ["yes" if role in allowed else "no" for role in ROLES]
        lines.append(f"| {operation} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
