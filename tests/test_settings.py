"""Settings.from_env: the one reader of faceaudit's environment."""

import pytest

from faceaudit.settings import (
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


def test_a_bad_number_names_its_variable():
    with pytest.raises(ValueError, match=SERVE_THREADS_ENV):
        Settings.from_env({SERVE_THREADS_ENV: "many"})
