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
