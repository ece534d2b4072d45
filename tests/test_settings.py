"""Settings.from_env: the one reader of faceaudit's environment."""

import pytest

from faceaudit.settings import (
    ENGINE_ENV,
    GENDER_HEAD_ENV,
    SCORE_NORMALIZATION_ENV,
    SERVE_THREADS_ENV,
    Settings,
)


def test_unset_and_empty_variables_mean_defaults():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({GENDER_HEAD_ENV: "", SCORE_NORMALIZATION_ENV: ""}).model_files() == {}


def test_values_are_read_by_their_documented_names():
    settings = Settings.from_env({GENDER_HEAD_ENV: "/m/head.json", SERVE_THREADS_ENV: "3",
                                  "AWS_REGION": "eu-west-1", "XDG_CACHE_HOME": "/c"})
    assert settings.gender_head == "/m/head.json"
    assert settings.serve_threads == 3
    assert settings.aws_region == "eu-west-1"
    assert settings.xdg_cache_home == "/c"
    assert settings.model_files() == {GENDER_HEAD_ENV: "/m/head.json"}
    # AWS_DEFAULT_REGION wins over AWS_REGION, as in the AWS SDKs' order here
    assert Settings.from_env({"AWS_DEFAULT_REGION": "us-west-2", "AWS_REGION": "eu-west-1"}).aws_region == "us-west-2"


def test_the_database_comes_from_faceaudit_database():
    assert Settings().database is None  # the embedded store
    url = "postgresql://faceaudit@db/faceaudit"
    assert Settings.from_env({"FACEAUDIT_DATABASE": url}).database == url


def test_a_bad_number_names_its_variable():
    with pytest.raises(ValueError, match=SERVE_THREADS_ENV):
        Settings.from_env({SERVE_THREADS_ENV: "many"})


def test_a_worker_environment_sets_and_clears_what_builds_the_engine(monkeypatch):
    """What a worker is handed makes it build the caller's engine: set variables set, unset ones
    cleared even where the worker's own environment (the forkserver's) still has them."""
    from faceaudit.settings import apply_environment

    handed = Settings.from_env({ENGINE_ENV: "sface"}).worker_environment()
    assert handed == {ENGINE_ENV: "sface", GENDER_HEAD_ENV: None, SCORE_NORMALIZATION_ENV: None}
    monkeypatch.setenv(GENDER_HEAD_ENV, "/stale/head.json")
    monkeypatch.setenv(ENGINE_ENV, "dlib")
    apply_environment(handed)
    assert Settings.from_env().engine == "sface" and Settings.from_env().gender_head is None
