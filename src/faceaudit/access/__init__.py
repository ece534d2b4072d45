"""Access keys and roles: who may call which operation (issue 10, "Keys and roles").

* roles: the four roles and the role -> operation table, as data;
* keys: what a key is, and the KeyStore interface;
* sqlite: SQLiteKeyStore, the keys in ``DATA_DIR/access.db``;
* postgres: PostgresKeyStore, the keys in the PostgreSQL database of ``--database``.

The server checks every request against these (faceaudit.server.access); the
``faceaudit keys`` commands manage them. docs/access.md says what each role may do.
"""

from faceaudit.access.keys import (
    INITIAL_KEY_NAME,
    AccessKey,
    IssuedKey,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
    new_key_pair,
)
from faceaudit.access.roles import (
    ADMIN,
    AUDITOR,
    OPERATION_ROLES,
    OPERATOR,
    REVIEWER,
    ROLES,
    allows,
    roles_for,
)
from faceaudit.access.sqlite import SQLiteKeyStore

__all__ = [
    "ADMIN",
    "AUDITOR",
    "INITIAL_KEY_NAME",
    "OPERATION_ROLES",
    "OPERATOR",
    "REVIEWER",
    "ROLES",
    "AccessKey",
    "IssuedKey",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreUnavailable",
    "SQLiteKeyStore",
    "allows",
    "new_key_pair",
    "roles_for",
]
