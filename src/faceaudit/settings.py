"""Every environment variable faceaudit reads, in one place, as one frozen object.

``Settings.from_env()`` reads them once; code below the command line takes a
``Settings`` (or the values in it) instead of looking at ``os.environ`` itself,
so a test can pass ``Settings.from_env({...})`` and nothing else leaks in.

faceaudit's own variables (all optional):

=================================  ==========================================================
FACEAUDIT_ENGINE                   the face engine by name: ``sface`` (default) or ``dlib``
                                   (``faceaudit engines`` lists them; faceaudit.runtime builds them)
FACEAUDIT_GENDER_HEAD              an AttributeHead file (``faceaudit train attribute``) that
                                   replaces the shipped gender network
FACEAUDIT_SCORE_NORMALIZATION      a FairScoreNormalization file (``faceaudit train
                                   normalization``) applied to every comparison and search
FACEAUDIT_DATABASE                 where ``faceaudit serve`` keeps collections and faces: unset or
                                   ``embedded`` (SQLite in the data folder, the default), or a
                                   ``postgresql://`` URL (PostgreSQL with pgvector, docs/scale.md)
FACEAUDIT_APPROXIMATE_ABOVE        when a collection's face searches go through an approximate
                                   (HNSW) index, on either backend: above N faces, or ``never``;
                                   unset: the backend's default (embedded from 50,000 faces,
                                   PostgreSQL never). Public-safety collections and audits stay
                                   exact whatever it says (``faceaudit serve --approximate-above``)
FACEAUDIT_ACCESS_KEY_ID            a single-key start's pair (with the secret below), taken in as
FACEAUDIT_SECRET_ACCESS_KEY        the admin key "initial"; unset: DATA_DIR/credentials.json, generated
                                   on the first start (other keys: `faceaudit keys`, docs/access.md)
FACEAUDIT_SERVE_DATA_DIR           set by ``faceaudit serve`` for its worker processes:
FACEAUDIT_SERVE_BUCKET_DIR         the data folder, the S3Object folder, request threads per
FACEAUDIT_SERVE_THREADS            process and the only region accepted in signatures
FACEAUDIT_SERVE_REGION             ("" = any)
FACEAUDIT_SERVE_REPORTS_DIR        and the audit reports the web console lists (``--reports``)
FACEAUDIT_TEST_DATA                the faces-dev research photos (tests, benchmarks)
FACEAUDIT_CACHE_DIR                where converted models and audit answers are cached
                                   (default $XDG_CACHE_HOME/faceaudit, else ~/.cache/faceaudit)
=================================  ==========================================================

Read too, with their usual meanings: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_DEFAULT_REGION / AWS_REGION (an audit of
``rekognition://`` targets) and XDG_CACHE_HOME (the caches' default home).

The engine name and the optional model files are passed to worker processes through the
environment (``faceaudit serve --workers``, audits), which is why they are
variables at all: every process of one server or audit loads the same models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENGINE_ENV = "FACEAUDIT_ENGINE"
GENDER_HEAD_ENV = "FACEAUDIT_GENDER_HEAD"
SCORE_NORMALIZATION_ENV = "FACEAUDIT_SCORE_NORMALIZATION"
DATABASE_ENV = "FACEAUDIT_DATABASE"
APPROXIMATE_ABOVE_ENV = "FACEAUDIT_APPROXIMATE_ABOVE"
NEVER_APPROXIMATE = "never"
ACCESS_KEY_ENV = "FACEAUDIT_ACCESS_KEY_ID"
SECRET_KEY_ENV = "FACEAUDIT_SECRET_ACCESS_KEY"
SERVE_DATA_DIR_ENV = "FACEAUDIT_SERVE_DATA_DIR"
SERVE_BUCKET_DIR_ENV = "FACEAUDIT_SERVE_BUCKET_DIR"
SERVE_THREADS_ENV = "FACEAUDIT_SERVE_THREADS"
SERVE_REGION_ENV = "FACEAUDIT_SERVE_REGION"
SERVE_REPORTS_DIR_ENV = "FACEAUDIT_SERVE_REPORTS_DIR"
TEST_DATA_ENV = "FACEAUDIT_TEST_DATA"
CACHE_DIR_ENV = "FACEAUDIT_CACHE_DIR"
AWS_ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
AWS_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN_ENV = "AWS_SESSION_TOKEN"
AWS_REGION_ENVS = ("AWS_DEFAULT_REGION", "AWS_REGION")  # first set one wins
XDG_CACHE_HOME_ENV = "XDG_CACHE_HOME"

# Which engine runs when none is named: chosen by the four-configuration audit of issue 9
# (docs/engines.md, "Choosing the default"). Collections indexed under dlib (model 1.0) need
# `--engine dlib` or a re-index under this one.
DEFAULT_ENGINE = "sface"
DEFAULT_SERVE_THREADS = 8
DEFAULT_AWS_REGION = "us-east-1"


def _text(environ: Mapping[str, str], name: str) -> str | None:
    # An empty variable means unset: `FOO= faceaudit ...` is how people switch one off.
    return environ.get(name) or None


@dataclass(frozen=True)
class Settings:
    """faceaudit's environment, read once (see the module docstring for each variable)."""

    engine: str = DEFAULT_ENGINE
    gender_head: str | None = None
    score_normalization: str | None = None
    database: str | None = None
    approximate_above: int | str | None = None  # N faces, NEVER_APPROXIMATE, or None: the backend's default
    access_key_id: str | None = None
    secret_access_key: str | None = None
    serve_data_dir: str | None = None
    serve_bucket_dir: str | None = None
    serve_threads: int = DEFAULT_SERVE_THREADS
    serve_region: str | None = None
    serve_reports_dir: str | None = None
    test_data: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_region: str = DEFAULT_AWS_REGION
    xdg_cache_home: str | None = None
    cache_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default: this process's environment).

        ValueError names the variable when a value cannot be used.
        """
        env = os.environ if environ is None else environ
        threads_text = _text(env, SERVE_THREADS_ENV)
        try:
            threads = DEFAULT_SERVE_THREADS if threads_text is None else int(threads_text)
        except ValueError:
            raise ValueError(f"{SERVE_THREADS_ENV} must be a whole number, got {threads_text!r}") from None
        approximate_above = parse_approximate_above(_text(env, APPROXIMATE_ABOVE_ENV), APPROXIMATE_ABOVE_ENV)
        region = next((value for value in (_text(env, name) for name in AWS_REGION_ENVS) if value),
                      DEFAULT_AWS_REGION)
        return cls(
            engine=_text(env, ENGINE_ENV) or DEFAULT_ENGINE,
            gender_head=_text(env, GENDER_HEAD_ENV),
            score_normalization=_text(env, SCORE_NORMALIZATION_ENV),
            database=_text(env, DATABASE_ENV),
            approximate_above=approximate_above,
            access_key_id=_text(env, ACCESS_KEY_ENV),
            secret_access_key=_text(env, SECRET_KEY_ENV),
            serve_data_dir=_text(env, SERVE_DATA_DIR_ENV),
            serve_bucket_dir=_text(env, SERVE_BUCKET_DIR_ENV),
            serve_threads=threads,
            serve_region=_text(env, SERVE_REGION_ENV),
            serve_reports_dir=_text(env, SERVE_REPORTS_DIR_ENV),
            test_data=_text(env, TEST_DATA_ENV),
            aws_access_key_id=_text(env, AWS_ACCESS_KEY_ENV),
            aws_secret_access_key=_text(env, AWS_SECRET_KEY_ENV),
            aws_session_token=_text(env, AWS_SESSION_TOKEN_ENV),
            aws_region=region,
            xdg_cache_home=_text(env, XDG_CACHE_HOME_ENV),
            cache_dir=_text(env, CACHE_DIR_ENV),
        )

    def cache_root(self) -> Path:
        """$FACEAUDIT_CACHE_DIR, else $XDG_CACHE_HOME/faceaudit, else ~/.cache/faceaudit."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return Path(self.xdg_cache_home or Path.home() / ".cache") / "faceaudit"

    def model_files(self) -> dict[str, str]:
        """The optional model files in use, by environment variable (what worker processes must inherit)."""
        files = {GENDER_HEAD_ENV: self.gender_head, SCORE_NORMALIZATION_ENV: self.score_normalization}
        return {name: path for name, path in files.items() if path}

    def engine_environment(self) -> dict[str, str]:
        """The variables that decide which engine and models a process builds: the engine's
        name and the model files. Worker processes (server, audit) must be given all of them."""
        return {ENGINE_ENV: self.engine, **self.model_files()}

    def worker_environment(self) -> dict[str, str | None]:
        """engine_environment with every such variable present, None for unset: what a worker
        process must set or clear (apply_environment) to build the engine this process would."""
        return {ENGINE_ENV: self.engine, GENDER_HEAD_ENV: self.gender_head,
                SCORE_NORMALIZATION_ENV: self.score_normalization}


def parse_approximate_above(text: str | None, what: str = "--approximate-above") -> int | str | None:
    """A number of faces (0 or more), ``never``, or None (unset); ValueError naming ``what`` otherwise."""
    if text is None:
        return None
    if text.strip().lower() == NEVER_APPROXIMATE:
        return NEVER_APPROXIMATE
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{what} must be a number of faces (0 or more) or {NEVER_APPROXIMATE!r}, got {text!r}")
    return value


def apply_environment(environment: Mapping[str, str | None]) -> None:
    """Set each variable, or clear it where the value is None or empty, in this process.

    For worker processes: a forkserver worker has the environment of when the forkserver
    started, not of the call that needs it, so the caller's worker_environment is handed over."""
    for name, value in environment.items():
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
