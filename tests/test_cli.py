"""The `faceaudit` command as a user runs it (a real subprocess of the installed console script)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.images import encode

pytestmark = pytest.mark.models  # runs the engine (in this process or a `faceaudit` subprocess)

FACEAUDIT = shutil.which("faceaudit", path=str(Path(sys.executable).parent)) or "faceaudit"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FACEAUDIT, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_rgb, astronaut_jpeg):
    folder = tmp_path_factory.mktemp("photos")
    (folder / "astronaut.jpg").write_bytes(astronaut_jpeg)
    (folder / "mirrored.png").write_bytes(encode(np.ascontiguousarray(astronaut_rgb[:, ::-1]), "PNG"))
    (folder / "sky.png").write_bytes(encode(np.full((120, 160, 3), 200, dtype=np.uint8), "PNG"))
    (folder / "broken.jpg").write_bytes(astronaut_jpeg[:500])
    for i in range(3):  # enough files for the progress bar
        (folder / f"copy{i}.jpg").write_bytes(astronaut_jpeg)
    return folder


def test_detect_prints_rekognition_json(photos):
    result = run("detect", str(photos / "astronaut.jpg"), "--attributes", "ALL")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert len(response["FaceDetails"]) == 1
    assert response["FaceDetails"][0]["Gender"]["Value"] == "Female"


def test_detect_folder_gives_json_lines_and_names_errors(photos):
    result = run("detect", str(photos))
    assert result.returncode == 1  # one file is broken
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(line["Image"]).name: line for line in lines}
    assert set(by_name) == {"astronaut.jpg", "mirrored.png", "sky.png", "broken.jpg",
                            "copy0.jpg", "copy1.jpg", "copy2.jpg"}
    assert by_name["broken.jpg"]["Error"]["Code"] == "InvalidImageFormatException"
    assert by_name["sky.png"]["FaceDetails"] == []
    assert len(by_name["mirrored.png"]["FaceDetails"]) == 1


def test_detect_pretty_table(photos):
    result = run("detect", str(photos / "astronaut.jpg"), "--attributes", "ALL", "--pretty")
    assert result.returncode == 0, result.stderr
    assert "DetectFaces" in result.stdout and "Female" in result.stdout


def test_compare_json_and_pretty(photos):
    result = run("compare", str(photos / "astronaut.jpg"), str(photos / "mirrored.png"))
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["FaceMatches"][0]["Similarity"] >= 95
    pretty = run("compare", str(photos / "astronaut.jpg"), str(photos / "mirrored.png"), "--pretty")
    assert pretty.returncode == 0 and "yes" in pretty.stdout


def test_compare_missing_file_names_the_error(photos):
    result = run("compare", str(photos / "astronaut.jpg"), str(photos / "nope.jpg"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["Error"]["Code"] == "InvalidParameterException"


def test_demo_runs():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "Female" in result.stdout and "yes" in result.stdout


def test_thresholds_show_false_match_rates_by_group():
    result = run("thresholds", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["thresholds"]) == {"80", "95", "99"}
    for groups in data["thresholds"].values():
        assert len(groups) == 10  # every gender x race cell of the reference set
        for rate in groups.values():
            assert rate["ci95"][0] <= rate["rate"] <= rate["ci95"][1] and rate["n"] > 1000
    # A stricter threshold never has a higher false match rate for any group.
    for group in data["thresholds"]["80"]:
        assert data["thresholds"]["99"][group]["rate"] <= data["thresholds"]["95"][group]["rate"] \
            <= data["thresholds"]["80"][group]["rate"]
    assert data["distances"]["99"] < data["distances"]["95"] < data["distances"]["80"]


def test_choosing_a_threshold_shows_what_it_means_by_group(photos):
    result = run("compare", str(photos / "astronaut.jpg"), str(photos / "mirrored.png"), "--threshold", "95",
                 "--pretty")
    assert result.returncode == 0
    worst = max(json.loads(run("thresholds", "--json").stdout)["thresholds"]["95"].items(),
                key=lambda item: item[1]["rate"])[0]  # the default engine's highest group at 95
    assert "At similarity 95" in result.stderr and worst in result.stderr


def test_engines_lists_both_with_their_measured_figures():
    result = run("engines", "--json")
    assert result.returncode == 0, result.stderr
    engines = {e["name"]: e for e in json.loads(result.stdout)["engines"]}
    assert set(engines) == {"dlib", "sface"}
    assert engines["sface"]["default"] and not engines["dlib"]["default"]
    assert (engines["dlib"]["model_version"], engines["sface"]["model_version"]) == ("1.0", "2.0")
    for engine in engines.values():
        assert engine["licence"] and engine["calibration"]["data"].startswith("faces-dev")
        table = engine["group_false_match_rates"]
        assert set(table["thresholds"]) == {"80", "95", "99"} and len(table["thresholds"]["80"]) == 10
        assert table["provenance"]["data"].startswith("faces-dev UTKFace check half")
    # Each engine's table is its own measurement, not the other's.
    assert engines["dlib"]["group_false_match_rates"]["thresholds"]["80"]["female Asian"]["rate"] != \
        engines["sface"]["group_false_match_rates"]["thresholds"]["80"]["female Asian"]["rate"]
    # The table shows each engine's highest group at 80 (rates are short enough never to wrap).
    table = run("engines")
    assert table.returncode == 0 and "sface" in table.stdout
    for engine in engines.values():
        highest = max(r["rate"] for r in engine["group_false_match_rates"]["thresholds"]["80"].values())
        assert f"{highest:.2%}" in table.stdout


def test_thresholds_and_the_compare_note_use_the_chosen_engines_table(photos):
    sface = json.loads(run("thresholds", "--json").stdout)  # the default engine
    dlib = json.loads(run("thresholds", "--engine", "dlib", "--json").stdout)
    assert (sface["engine"], sface["model_version"], dlib["model_version"]) == ("sface", "2.0", "1.0")
    assert sface["distances"]["80"] > 1.0 > dlib["distances"]["80"]  # each engine's own scale
    worst = max(sface["thresholds"]["80"].values(), key=lambda r: r["rate"])
    result = run("compare", str(photos / "astronaut.jpg"), str(photos / "mirrored.png"), "--pretty",
                 "--engine", "sface")
    assert result.returncode == 0, result.stderr
    assert f"{worst['rate']:.2%} [{worst['ci95'][0]:.2%}, {worst['ci95'][1]:.2%}]" in " ".join(result.stderr.split())


def test_an_unknown_engine_is_refused_with_the_known_names(photos):
    result = run("detect", str(photos / "astronaut.jpg"), "--engine", "nope")
    assert result.returncode != 0 and "unknown engine 'nope'" in result.stderr and "dlib, sface" in result.stderr


def test_audit_refuses_an_engine_for_a_remote_target(tmp_path):
    result = run("audit", "verification", "--data", str(tmp_path), "--target", "rekognition://127.0.0.1:9",
                 "--engine", "sface", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "runs its own" in result.stderr


def test_serve_refuses_a_gender_head_for_sface_before_starting(tmp_path):
    head = tmp_path / "head.json"
    head.write_text("{}")
    result = run("serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--engine", "sface",
                 "--gender-head", str(head))
    assert result.returncode != 0 and "sface engine takes no gender head" in result.stderr
    assert "listening" not in result.stderr


def test_serve_refuses_a_database_it_cannot_use_before_starting(tmp_path):
    result = run("serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--database", "mysql://x/y")
    assert result.returncode == 2 and "'embedded' or a postgresql://" in result.stderr
    assert "listening" not in result.stderr



def test_serve_refuses_a_store_written_by_a_newer_faceaudit_with_a_message(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with sqlite3.connect(data / "accountability.db") as conn:  # the state store's file, from "the future"
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (99)")
    (data / "accountability.db").chmod(0o600)
    result = run("serve", "--data-dir", str(data), "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "has schema version 99" in result.stderr and "Upgrade faceaudit" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stderr


def test_serve_refuses_an_approximate_switch_it_cannot_read_before_starting(tmp_path):
    result = run("serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--approximate-above", "lots")
    assert result.returncode != 0 and "--approximate-above must be a number of faces" in result.stderr
    assert "listening" not in result.stderr


def test_index_folder_refuses_a_database_it_cannot_use(tmp_path):
    result = run("index-folder", "c", str(tmp_path), "--data-dir", str(tmp_path / "data"), "--database", "mysql://x")
    assert result.returncode == 2 and "'embedded' or a postgresql://" in result.stderr


def test_the_batch_commands_refuse_a_listing_or_a_store_they_cannot_use_before_any_work(tmp_path):
    missing = str(tmp_path / "nowhere")
    for name, command in (("index-folder", ("index-folder", "c", missing, "--data-dir", str(tmp_path / "data"))),
                          ("batch extract", ("batch", "extract", missing, "--cache", str(tmp_path / "cache")))):
        result = run(*command)
        assert result.returncode == 2 and result.stderr.startswith(f"faceaudit {name}: ")
        assert "expected a folder of images or a CSV listing" in result.stderr
    # nothing listens on port 1: the store cannot be opened, and no cluster is started for it
    result = run("index-folder", "c", str(tmp_path), "--data-dir", str(tmp_path / "data"),
                 "--database", "postgresql://faceaudit@127.0.0.1:1/faces")
    assert result.returncode == 2 and result.stderr.startswith("faceaudit index-folder: ")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_index_folder_and_batch_extract_report_failed_images_and_index_folder_resumes(photos, tmp_path):
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    first = run("index-folder", "c", str(photos), "--data-dir", str(data_dir), "--workers", "1")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["total"], summary["processed"], summary["already_done"]) == (7, 7, 0)
    assert [(Path(f["file"]).name, f["error"]) for f in summary["failed"]] == [
        ("broken.jpg", "InvalidImageFormatException")]
    assert summary["faces"] == 5  # one astronaut in each of five photos; the sky has none
    assert f"failed: {photos / 'broken.jpg'}: InvalidImageFormatException" in first.stderr
    assert "index-folder c: 7 images this run, 0 done before, 1 failed, 7 in all" in first.stderr

    again = run("index-folder", "c", str(photos), "--data-dir", str(data_dir), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["processed"], json.loads(again.stdout)["already_done"]) == (0, 7)
    assert f"failed in an earlier run: {photos / 'broken.jpg'}" in again.stderr

    extracted = run("batch", "extract", str(photos), "--cache", str(cache), "--workers", "1")
    assert extracted.returncode == 0, extracted.stderr
    summary = json.loads(extracted.stdout)
    assert (summary["total"], summary["processed"]) == (7, 7)
    assert [Path(f["file"]).name for f in summary["failed"]] == ["broken.jpg"]
    assert "batch extract: 7 images this run, 0 done before, 1 failed, 7 in all" in extracted.stderr
