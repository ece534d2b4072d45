"""Shared fixtures: the faces-dev data, one engine per run, and cached per-file results.

faces-dev is research-only and lives outside the repository
(../shared/data/faces-dev or $FACEAUDIT_TEST_DATA). Outside CI a missing folder
skips the tests that need it, with the reason; under CI=true it is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from faceaudit.datasets import faces_dev
from support.images import encode

# Fixtures that load the face models, in this process or in a server process they start.
# A test using one (directly or through another fixture) is marked ``models``; `make test-fast`
# runs the rest. Files that load models some other way say so with ``pytestmark``.
MODEL_FIXTURES = frozenset({"engine", "faces_dev_results", "faceaudit_server", "rekognition",
                            "start_faceaudit_server", "postgres_faceaudit_server"})
# Set by `make test-fast`: building an engine in-process then fails the test, so a test that
# needs models but is not marked cannot slip into the fast lane unnoticed.
NO_MODELS_ENV = "FACEAUDIT_TEST_NO_MODELS"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True, scope="session")
def _refuse_models_in_the_fast_lane():
    if os.environ.get(NO_MODELS_ENV) != "1":
        yield
        return
    from faceaudit.engine.base import FaceEngine


    def refuse(self, *args, **kwargs):
        pytest.fail(f"{type(self).__name__} was built in the fast lane: mark the test `models`", pytrace=False)

    patched = []
    for engine_class in _engine_classes(FaceEngine):
        patched.append((engine_class, engine_class.__init__))
        engine_class.__init__ = refuse
    yield
    for engine_class, init in patched:
        engine_class.__init__ = init


def _engine_classes(base):
    import importlib
    import pkgutil

    import faceaudit.engine
    for module in pkgutil.iter_modules(faceaudit.engine.__path__, "faceaudit.engine."):
        importlib.import_module(module.name)
    found, queue = [], list(base.__subclasses__())
    while queue:
        cls = queue.pop()
        queue.extend(cls.__subclasses__())
        # The shipped backends load models; wrappers (the cache) and tests' own engines do not.
        if cls.__module__.startswith("faceaudit.engine.") and cls.__module__ != "faceaudit.engine.cache":
            found.append(cls)
    return found


def _data_missing(what: str, hint: str) -> None:
    message = f"{what} not found ({hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def faces_dev_root() -> Path:
    root = faces_dev.locate()
    if root is None:
        _data_missing("faces-dev", "set FACEAUDIT_TEST_DATA or put it at ../shared/data/faces-dev")
    return root


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL with pgvector (pgserver wheel), one per test session: its libpq URL.

    Started only when a test asks for it; tests give themselves a schema each
    (support.postgres.fresh_schema) rather than a server each."""
    import shutil
    import sys
    import tempfile

    from support.postgres import check_pgvector, start_postgres
    try:
        import pgserver  # noqa: F401
    except ImportError as error:
        if sys.version_info >= (3, 13):  # pgserver has no wheel for it; the main Python runs these
            pytest.skip("pgserver (PostgreSQL for the tests) ships no wheel for Python 3.13")
        _data_missing("pgserver (PostgreSQL for the tests)", f"pip install pgserver==0.1.4: {error}")
    # Not under pytest's tmp folder: pgserver runs PostgreSQL as its own user when started
    # as root, and that user cannot enter /tmp/pytest-of-root (mode 0700).
    directory = Path(tempfile.mkdtemp(prefix="faceaudit-pg-"))
    server, url = start_postgres(directory)
    try:
        check_pgvector(url)
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def engine():
    from faceaudit.runtime import default_engine
    return default_engine()


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """NASA's public-domain portrait (via scikit-image): one frontal face."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut_rgb) -> bytes:
    return encode(astronaut_rgb, quality=92)


@pytest.fixture(scope="session")
def faces_dev_results(faces_dev_root):
    """The largest face of every faces-dev image, computed once per test run on all cores.

    Returned as {relative path: FileResult}. About two minutes on two cores.
    """
    from faceaudit.engine.batch import analyze_files
    labels = faces_dev.read_labels(faces_dev_root)
    results = analyze_files([faces_dev_root / label.path for label in labels],
                            description="faces-dev (once per test run)")
    return {label.path: result for label, result in zip(labels, results)}
